import { fork } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';

import Database from 'better-sqlite3';

/**
 * An application writer for replication tests, running in a child process of
 * its own. walship's critical sections are synchronous on the main thread, so
 * a writer on that thread could never meet walship's locks the way a real
 * application does. A separate process also takes its own POSIX locks. The
 * test sends commands over IPC, and the child reports its commits and every
 * SQLITE_BUSY it got.
 *
 * The child creates table `t (id INTEGER PRIMARY KEY, tag TEXT, payload BLOB)`.
 */

/** Options of the writer's connection. */
export interface WriterOptions {
  /** Journal mode set when the database is opened. Defaults to `wal`. */
  journalMode?: 'wal' | 'delete';
  /** Milliseconds SQLite waits for a lock before SQLITE_BUSY. Defaults to 5000. */
  busyTimeout?: number;
  /** Pages after which a commit runs SQLite's automatic PASSIVE checkpoint; 0 turns it off. Defaults to 1000, as SQLite. */
  autocheckpoint?: number;
}

/** Rows that one `insert` command writes. */
export interface InsertRequest {
  /** Transactions to commit. */
  transactions: number;
  /** Rows per transaction. */
  rows: number;
  /** Random payload bytes per row. */
  bytes: number;
  /** Milliseconds to pause after each transaction; 0 commits back to back. Defaults to 0. */
  pauseMs?: number;
  /** Text stored in the `tag` column. Defaults to `insert`. */
  tag?: string;
}

/** A write transaction kept open: BEGIN IMMEDIATE, rows inserted, a pause holding the write lock, COMMIT. */
export interface HoldRequest {
  /** Transactions of `rows` rows each committed back to back just before the held one. Defaults to 0. */
  transactionsBefore?: number;
  /** Rows of each transaction. */
  rows: number;
  /** Random payload bytes per row. */
  bytes: number;
  /** Milliseconds the write lock is held before COMMIT. */
  holdMs: number;
  /** Text stored in the `tag` column. Defaults to `hold`. */
  tag?: string;
}

/** Counts of one command, or of the writer's whole life in `stats`. */
export interface WriterCounts {
  /** Transactions committed. */
  commits: number;
  /** Statements that failed with SQLITE_BUSY or one of its extended codes. */
  busy: number;
  /** Messages of those failures, for assertion output. */
  busyErrors: string[];
}

/** Outcome of `PRAGMA wal_checkpoint`: its three columns, or the error it threw. */
export type CheckpointOutcome =
  | { ok: true; busy: number; log: number; checkpointed: number }
  | { ok: false; code: string; message: string };

// Commands and replies crossing the IPC channel.
type Command =
  | { op: 'open'; path: string; options: WriterOptions }
  | { op: 'insert'; request: InsertRequest }
  | { op: 'hold'; request: HoldRequest }
  | { op: 'checkpoint'; mode: string; busyTimeout?: number }
  | { op: 'exec'; sql: string }
  | { op: 'pragma'; text: string }
  | { op: 'stats' }
  | { op: 'close' };

interface Request {
  id: number;
  command: Command;
}

type Reply = { id: number; ok: true; result: unknown } | { id: number; ok: false; error: { message: string; code?: string } };

// Bound on waiting for one command, so that a hung child fails the test instead of stalling it.
const COMMAND_TIMEOUT_MS = 60_000;
const EXIT_TIMEOUT_MS = 5_000;

/** The test's handle of a writer child process. */
export class Writer {
  readonly pid: number;
  #child: ChildProcess;
  #nextId = 1;
  #pending = new Map<number, { resolve: (value: unknown) => void; reject: (err: Error) => void }>();
  #exited: Promise<void>;
  #stderr = '';

  private constructor(child: ChildProcess) {
    this.#child = child;
    this.pid = child.pid!;
    child.on('message', (message) => this.#onReply(message as Reply));
    child.stderr?.on('data', (chunk: Buffer) => (this.#stderr += chunk.toString()));
    this.#exited = new Promise((resolve) => {
      child.once('exit', (code, signal) => {
        for (const { reject } of this.#pending.values()) {
          reject(new Error(`writer ${this.pid} exited (code ${code}, signal ${signal}) with a command pending: ${this.#stderr}`));
        }
        this.#pending.clear();
        resolve();
      });
    });
  }

  /** Starts a writer child process and opens `dbPath` in it, creating the database and table `t` when missing. */
  static async open(dbPath: string, options: WriterOptions = {}): Promise<Writer> {
    const child = fork(fileURLToPath(import.meta.url), ['--walship-test-writer'], { stdio: ['ignore', 'ignore', 'pipe', 'ipc'] });
    const writer = new Writer(child);
    try {
      await writer.#send({ op: 'open', path: dbPath, options });
    } catch (err) {
      writer.kill();
      throw err;
    }
    return writer;
  }

  /** Commits `transactions` transactions of `rows` rows each and returns this command's counts. */
  insert(request: InsertRequest): Promise<WriterCounts> {
    return this.#send({ op: 'insert', request }) as Promise<WriterCounts>;
  }

  /** Commits one transaction that holds SQLite's write lock for `holdMs`, and returns its counts. */
  holdWrite(request: HoldRequest): Promise<WriterCounts> {
    return this.#send({ op: 'hold', request }) as Promise<WriterCounts>;
  }

  /** Runs `PRAGMA wal_checkpoint(mode)`, waiting up to `busyTimeout` ms for locks when given. */
  checkpoint(mode: 'PASSIVE' | 'FULL' | 'RESTART' | 'TRUNCATE', busyTimeout?: number): Promise<CheckpointOutcome> {
    return this.#send({ op: 'checkpoint', mode, busyTimeout }) as Promise<CheckpointOutcome>;
  }

  /** Runs SQL statements in autocommit mode. */
  async exec(sql: string): Promise<void> {
    await this.#send({ op: 'exec', sql });
  }

  /** Runs a PRAGMA and returns its first column of the first row, e.g. `pragma('journal_mode')`. */
  pragma(text: string): Promise<unknown> {
    return this.#send({ op: 'pragma', text });
  }

  /** Returns the counts over the writer's whole life. */
  stats(): Promise<WriterCounts> {
    return this.#send({ op: 'stats' }) as Promise<WriterCounts>;
  }

  /** Closes the connection, waits for the child to exit, and returns the counts over the writer's life. */
  async close(): Promise<WriterCounts> {
    const counts = (await this.#send({ op: 'close' })) as WriterCounts;
    const timeout = sleep(EXIT_TIMEOUT_MS, 'timeout' as const);
    if ((await Promise.race([this.#exited.then(() => 'exited' as const), timeout])) === 'timeout') this.kill();
    return counts;
  }

  /** Ends the child by its PID at once; does nothing when it has exited. Safe to call in `finally`. */
  kill(): void {
    if (this.#child.exitCode !== null || this.#child.signalCode !== null) return;
    try {
      process.kill(this.pid, 'SIGKILL');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ESRCH') throw err;
    }
  }

  #send(command: Command): Promise<unknown> {
    if (this.#child.exitCode !== null || this.#child.signalCode !== null) {
      return Promise.reject(new Error(`writer ${this.pid} has exited: ${this.#stderr}`));
    }
    const id = this.#nextId++;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#pending.delete(id);
        reject(new Error(`writer ${this.pid}: ${command.op} timed out after ${COMMAND_TIMEOUT_MS} ms`));
      }, COMMAND_TIMEOUT_MS);
      const settle = <T>(fn: (value: T) => void) => (value: T) => {
        clearTimeout(timer);
        fn(value);
      };
      this.#pending.set(id, { resolve: settle(resolve), reject: settle(reject) });
      this.#child.send({ id, command } satisfies Request);
    });
  }

  #onReply(reply: Reply): void {
    const pending = this.#pending.get(reply.id);
    if (!pending) return;
    this.#pending.delete(reply.id);
    if (reply.ok) pending.resolve(reply.result);
    else pending.reject(Object.assign(new Error(`writer ${this.pid}: ${reply.error.message}`), { code: reply.error.code }));
  }
}

// ---- Child process side ----

/** The writer's state inside the child process. */
class WriterChild {
  #db: Database.Database | undefined;
  #busyTimeout = 5000;
  #life: WriterCounts = { commits: 0, busy: 0, busyErrors: [] };

  async run(command: Command): Promise<unknown> {
    switch (command.op) {
      case 'open':
        return this.#open(command.path, command.options);
      case 'insert':
        return this.#insert(command.request);
      case 'hold':
        return this.#hold(command.request);
      case 'checkpoint':
        return this.#checkpoint(command.mode, command.busyTimeout);
      case 'exec':
        this.#connection().exec(command.sql);
        return null;
      case 'pragma':
        return this.#connection().pragma(command.text, { simple: true }) ?? null;
      case 'stats':
        return this.#life;
      case 'close':
        this.#db?.close();
        this.#db = undefined;
        return this.#life;
    }
  }

  #open(dbPath: string, options: WriterOptions): null {
    const db = new Database(dbPath);
    this.#busyTimeout = options.busyTimeout ?? 5000;
    db.pragma(`busy_timeout = ${this.#busyTimeout}`);
    db.pragma(`journal_mode = ${options.journalMode ?? 'wal'}`);
    db.pragma(`wal_autocheckpoint = ${options.autocheckpoint ?? 1000}`);
    db.exec('CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY, tag TEXT NOT NULL, payload BLOB NOT NULL)');
    this.#db = db;
    return null;
  }

  async #insert(request: InsertRequest): Promise<WriterCounts> {
    const db = this.#connection();
    const statement = db.prepare('INSERT INTO t (tag, payload) VALUES (?, ?)');
    const tag = request.tag ?? 'insert';
    const transaction = db.transaction(() => {
      for (let row = 0; row < request.rows; row++) statement.run(tag, randomBytes(request.bytes));
    });

    const counts: WriterCounts = { commits: 0, busy: 0, busyErrors: [] };
    for (let i = 0; i < request.transactions; i++) {
      try {
        transaction();
        counts.commits++;
      } catch (err) {
        // A busy transaction is rolled back and counted, not retried: the
        // test compares the restore with whatever the source holds.
        if (!isBusy(err)) throw err;
        counts.busy++;
        counts.busyErrors.push(`${(err as { code?: string }).code}: ${(err as Error).message}`);
      }
      if (request.pauseMs) await sleep(request.pauseMs);
    }

    this.#record(counts);
    return counts;
  }

  async #hold(request: HoldRequest): Promise<WriterCounts> {
    const beforeCounts = await this.#insert({ transactions: request.transactionsBefore ?? 0, rows: request.rows, bytes: request.bytes, tag: request.tag });

    const db = this.#connection();
    const statement = db.prepare('INSERT INTO t (tag, payload) VALUES (?, ?)');
    const heldCounts: WriterCounts = { commits: 0, busy: 0, busyErrors: [] };
    try {
      db.exec('BEGIN IMMEDIATE');
      try {
        for (let row = 0; row < request.rows; row++) statement.run(request.tag ?? 'hold', randomBytes(request.bytes));
        await sleep(request.holdMs);
        db.exec('COMMIT');
        heldCounts.commits++;
      } finally {
        if (db.inTransaction) db.exec('ROLLBACK');
      }
    } catch (err) {
      if (!isBusy(err)) throw err;
      heldCounts.busy++;
      heldCounts.busyErrors.push(`${(err as { code?: string }).code}: ${(err as Error).message}`);
    }
    this.#record(heldCounts);

    return { commits: beforeCounts.commits + heldCounts.commits, busy: beforeCounts.busy + heldCounts.busy, busyErrors: [...beforeCounts.busyErrors, ...heldCounts.busyErrors] };
  }

  #record(counts: WriterCounts): void {
    this.#life.commits += counts.commits;
    this.#life.busy += counts.busy;
    this.#life.busyErrors.push(...counts.busyErrors);
  }

  #checkpoint(mode: string, busyTimeout: number | undefined): CheckpointOutcome {
    const db = this.#connection();
    if (busyTimeout !== undefined) db.pragma(`busy_timeout = ${busyTimeout}`);
    try {
      const row = (db.pragma(`wal_checkpoint(${mode})`) as Array<{ busy: number; log: number; checkpointed: number }>)[0]!;
      return { ok: true, busy: row.busy, log: row.log, checkpointed: row.checkpointed };
    } catch (err) {
      const code = (err as { code?: string }).code ?? 'UNKNOWN';
      if (isBusy(err)) {
        this.#life.busy++;
        this.#life.busyErrors.push(`${code}: ${(err as Error).message}`);
      }
      return { ok: false, code, message: (err as Error).message };
    } finally {
      if (busyTimeout !== undefined) db.pragma(`busy_timeout = ${this.#busyTimeout}`);
    }
  }

  #connection(): Database.Database {
    if (!this.#db) throw new Error('the writer has no open database');
    return this.#db;
  }
}

/** Reports whether an error is SQLITE_BUSY or one of its extended codes (SQLITE_BUSY_SNAPSHOT, ...). */
function isBusy(err: unknown): boolean {
  const code = (err as { code?: unknown }).code;
  return typeof code === 'string' && code.startsWith('SQLITE_BUSY');
}

/** Serves commands one at a time, in the order they arrive, until `close`. */
function serveCommands(): void {
  const child = new WriterChild();
  let queue = Promise.resolve();
  process.on('message', (message) => {
    const { id, command } = message as Request;
    queue = queue.then(async () => {
      let reply: Reply;
      try {
        reply = { id, ok: true, result: await child.run(command) };
      } catch (err) {
        reply = { id, ok: false, error: { message: (err as Error).message, code: (err as { code?: string }).code } };
      }
      process.send!(reply, () => {
        if (command.op === 'close') process.disconnect();
      });
    });
  });
  // A test process that ends, or closes the channel, takes its writer with it.
  process.on('disconnect', () => process.exit(0));
}

// The module is both the test's handle and, when forked with the marker
// argument, the child's entry point.
if (process.argv[2] === '--walship-test-writer' && process.send) serveCommands();

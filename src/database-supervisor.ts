import fs from 'node:fs';

import type { DatabaseConfig } from './config.js';
import { DB } from './db.js';
import { describeError, hasCode } from './errors.js';
import { onFileEvent } from './file-events.js';
import type { Logger } from './logger.js';
import type { ShipPool } from './pool.js';
import { comparePos, formatPos } from './pos.js';
import { DatabaseLock } from './lock-file.js';
import { Semaphore } from './mutex.js';
import { Replica } from './replica.js';

/** A database with its replicas, as the replicator runs it. */
export interface ReplicatedDatabase {
  db: DB;
  replicas: Replica[];
}

/** Guard that keeps other writers off a database while walship replicates it, such as a lock file or a lease. */
export interface DatabaseGuard {
  /** Acquires the guard before the database opens; rejects when another process holds it. */
  acquire(config: DatabaseConfig): Promise<{ release(): Promise<void> }>;
}

/** Options of a DatabaseSupervisor. */
export interface SupervisorOptions {
  pool: ShipPool;
  logger: Logger;
  /** First wait after a failed open, in ms; it doubles after every failure. */
  retryMinMs: number;
  /** Maximum wait between open attempts, in ms. */
  retryMaxMs: number;
  guard?: DatabaseGuard;
  /** Limits how many databases open at once, shared by the supervisors of a replicator. */
  openSlots?: Semaphore;
  /** Called when the database is open and its replicas started. */
  onRunning(entry: ReplicatedDatabase): void;
  /** Called when the database has stopped after running. */
  onStopped(entry: ReplicatedDatabase): void;
}

/**
 * Modes of a supervised database: `waiting` until an open attempt succeeds
 * (retried with backoff), `running` while it replicates, `stopping` during
 * the final sync, then `stopped`.
 */
export type SupervisorState = 'waiting' | 'running' | 'stopping' | 'stopped';

/** A database's captured position and the replicas still behind it. */
export interface UnshippedReport {
  db: string;
  pos: string;
  replicas: { replica: string; pos: string }[];
}

// A file event burst (create, write, rename) triggers one open attempt after this delay.
const FILE_EVENT_DELAY_MS = 250;

/**
 * Runs one database apart from the others: opens it, and while it is missing,
 * locked, not a SQLite database or otherwise cannot be opened, logs the reason
 * and tries again with backoff. A missing file is also retried as soon as a
 * file event names it. Once open, its replicas ship on their own schedules
 * and retry their own failures.
 */
export class DatabaseSupervisor {
  readonly config: DatabaseConfig;
  readonly log: Logger;

  #options: SupervisorOptions;
  #state: SupervisorState = 'waiting';
  #entry: ReplicatedDatabase | undefined;
  #release: (() => Promise<void>) | undefined;
  #lastError: Error | undefined;
  #failures = 0;
  #timer: NodeJS.Timeout | undefined;
  #unwatch: (() => void) | undefined;
  #attempt: Promise<void> | undefined;
  #failFast = false;
  #fatal: Error | undefined;

  constructor(config: DatabaseConfig, options: SupervisorOptions) {
    this.config = config;
    this.#options = options;
    this.log = options.logger.child({ db: config.name });
  }

  get state(): SupervisorState {
    return this.#state;
  }

  /** The open database and its replicas while running. */
  get entry(): ReplicatedDatabase | undefined {
    return this.#entry;
  }

  /** Error of the last failed open attempt, while waiting. */
  get lastError(): Error | undefined {
    return this.#lastError;
  }

  /**
   * Runs the first open attempt; a failure schedules the next attempt rather
   * than rejecting. With `failFast`, a database that another walship
   * replicates (its lock file or a replica lease is taken) rejects instead,
   * so that a second instance refuses to start.
   */
  async start(options: { failFast?: boolean } = {}): Promise<void> {
    this.#failFast = options.failFast ?? false;
    try {
      await this.#tryOpen();
    } finally {
      this.#failFast = false;
    }
    if (this.#fatal !== undefined) throw this.#fatal;
  }

  /**
   * Stops retrying, then for a running database captures what is committed,
   * ships it to every replica and closes the database. Keeps the first error
   * and still closes the rest.
   */
  async stop(): Promise<void> {
    if (this.#state === 'stopping' || this.#state === 'stopped') return;
    this.#state = 'stopping';
    this.#cancelRetry();
    await this.#attempt;

    const entry = this.#entry;
    if (entry === undefined) {
      this.#state = 'stopped';
      return;
    }

    let first: unknown;
    // Capture stops first, so the replicas' final ship covers every frame
    // the database will capture in this run.
    try {
      await entry.db.stopCapture({ sync: fs.existsSync(this.config.path) });
    } catch (err) {
      first = err;
      this.log.error({ err: describeError(err) }, 'final sync failed');
    }

    // Each replica ships on its own, so a slow or failing one does not hold up the others.
    const results = await Promise.allSettled(entry.replicas.map((replica) => replica.stop()));
    for (const [i, result] of results.entries()) {
      if (result.status === 'fulfilled') continue;
      first ??= result.reason;
      const replica = entry.replicas[i]!;
      this.log.error({ replica: replica.name, pos: formatPos(replica.pos()), err: describeError(result.reason) }, 'final replica sync failed');
    }

    await entry.db.close().catch((err: unknown) => {
      first ??= err;
    });
    await this.#release?.().catch((err: unknown) => this.log.warn({ err: describeError(err) }, 'cannot release the database guard'));
    this.#release = undefined;
    this.#state = 'stopped';
    this.#options.onStopped(entry);
    if (first !== undefined) throw first;
  }

  /**
   * Returns the database's captured position and the replicas that do not
   * contain all of it, or undefined when every replica is caught up or the
   * database is not open.
   */
  unshipped(): UnshippedReport | undefined {
    const entry = this.#entry;
    if (entry === undefined) return undefined;

    const dbPos = entry.db.pos();
    if (!dbPos.generation) return undefined;
    const behind = entry.replicas.filter((r) => r.pos().generation !== dbPos.generation || comparePos(r.pos(), dbPos) < 0);
    if (behind.length === 0) return undefined;
    return { db: this.config.name, pos: formatPos(dbPos), replicas: behind.map((r) => ({ replica: r.name, pos: formatPos(r.pos()) || 'none' })) };
  }

  #tryOpen(): Promise<void> {
    this.#attempt = this.#open().finally(() => (this.#attempt = undefined));
    return this.#attempt;
  }

  async #open(): Promise<void> {
    if (this.#state !== 'waiting') return;
    const db = new DB(this.config, this.#options.logger);
    let lock: DatabaseLock | undefined;
    let replicas: Replica[] = [];
    const abandon = async (): Promise<void> => {
      await Promise.all(replicas.map((replica) => replica.close().catch(() => undefined)));
      await db.close().catch(() => undefined);
      await this.#release?.().catch(() => undefined);
      this.#release = undefined;
      await lock?.release().catch(() => undefined);
    };

    const open = async (): Promise<void> => {
      lock = await DatabaseLock.acquire(this.config.path, { logger: this.log });
      const guard = await this.#options.guard?.acquire(this.config);
      this.#release = guard ? () => guard.release() : undefined;
      await db.open();
      replicas = this.config.replicas.map((rc) => new Replica(db, rc, this.#options.pool, this.#options.logger));
      // Another walship writing to a replica stops the database. Any other
      // failure is that replica's own: it retries the lease before it ships.
      await Promise.all(
        replicas.map((replica) =>
          replica.acquireLease().catch((err: unknown) => {
            if (hasCode(err, 'LEASE_HELD')) throw err;
            replica.log.warn({ err: describeError(err) }, 'cannot take the replica lease yet, retrying before the first upload');
          }),
        ),
      );
    };

    try {
      if (this.#options.openSlots) await this.#options.openSlots.run(open);
      else await open();
    } catch (err) {
      await abandon();
      if (this.#failFast && (hasCode(err, 'LOCKED') || hasCode(err, 'LEASE_HELD'))) {
        this.#fatal = err as Error;
        this.#state = 'stopped';
        return;
      }
      this.#failed(err as Error);
      return;
    }

    // A stop that came during the attempt wins: the database closes again at once.
    if (this.#state !== 'waiting') {
      await abandon();
      return;
    }

    const heldLock = lock as DatabaseLock | undefined;
    const release = this.#release;
    this.#release = async () => {
      await release?.();
      await heldLock?.release();
    };
    const entry = { db, replicas };
    for (const replica of replicas) {
      replica.on('shipped', () => removeShippedShadows(entry));
      replica.start();
    }

    this.#unwatch?.();
    this.#unwatch = undefined;
    if (this.#failures > 0) this.log.info({ path: this.config.path, attempts: this.#failures + 1 }, 'database available again');
    this.#failures = 0;
    this.#lastError = undefined;
    this.#entry = entry;
    this.#state = 'running';
    this.log.info({ replicas: replicas.map((r) => `${r.name}=${r.client.location}`).join(',') }, 'replicating');
    this.#options.onRunning(entry);
  }

  // Logs the reason and schedules the next attempt with backoff.
  #failed(err: Error): void {
    this.#failures++;
    this.#lastError = err;
    const delay = Math.min(this.#options.retryMaxMs, this.#options.retryMinMs * 2 ** (this.#failures - 1));
    // Identical lines are rate-limited by the log destination, so each attempt may log.
    this.log.error({ path: this.config.path, err: describeError(err), retry: `${delay}ms` }, 'database unavailable, retrying');

    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      void this.#tryOpen();
    }, delay);
    // A missing file is opened as soon as it appears rather than at the next retry.
    if (hasCode(err, 'NOT_FOUND') && this.#unwatch === undefined) this.#watchForFile();
  }

  #watchForFile(): void {
    try {
      this.#unwatch = onFileEvent(this.config.path, () => {
        if (this.#state !== 'waiting' || this.#attempt !== undefined) return;
        this.#cancelRetry();
        this.#timer = setTimeout(() => {
          this.#timer = undefined;
          void this.#tryOpen();
        }, FILE_EVENT_DELAY_MS);
      });
    } catch {
      // The directory is missing too, or cannot be watched: the retry timer covers it.
    }
  }

  #cancelRetry(): void {
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = undefined;
    if (this.#state !== 'waiting') {
      this.#unwatch?.();
      this.#unwatch = undefined;
    }
  }
}

/** Deletes shadow WAL indexes that every replica of a database has shipped. */
function removeShippedShadows({ db, replicas }: ReplicatedDatabase): void {
  const generation = db.pos().generation;
  const minIndex = Math.min(...replicas.map((r) => (r.pos().generation === generation ? r.pos().index : 0)));
  if (minIndex > 0) db.removeShippedShadows(minIndex).catch((err: unknown) => db.log.warn({ err: describeError(err) }, 'cannot remove shipped shadow wal'));
}

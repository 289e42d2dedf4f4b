import { createHash } from 'node:crypto';
import fs from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';

import Database from 'better-sqlite3';

import type {
  BulkJob,
  FillJob,
  FlatJob,
  HashJob,
  HashResult,
  PacedJob,
  VerifyJob,
  VerifyResult,
  WalMark,
  WriteResult,
  WriterJob,
  WriterMessage,
} from './bench-jobs.js';
import { compareHashes } from './bench-jobs.js';
import { makeBodies } from './bench-rows.js';
import { WalByteCounter, WalIndexReader } from './bench-wal-position.js';
import type { WalIndexHeader } from './bench-wal-position.js';

/**
 * The benchmark's application process: it writes rows into table `t` of
 * SQLite databases while walship, another process, replicates them. It also
 * runs the content checks, so that no long synchronous SQLite call blocks the
 * benchmark process while walship's log lines must be read.
 *
 * Started with fork. The first IPC message is the job, and the process
 * replies with one `done` or `error` message. A `stop` message ends a
 * writing job early.
 */

// How long a commit waits for walship's checkpoint to release the write lock.
const BUSY_TIMEOUT_MS = 5000;
// The flat loop yields to the event loop this often, so a `stop` message gets through.
const YIELD_EVERY_MS = 100;
// Upper bound on the transactions of one job, so that a loop ends even if the clock misbehaves.
const MAX_TRANSACTIONS = 50_000_000;

let stopping = false;

/** Opens a database the way the benchmark's application does: WAL mode, synchronous=NORMAL. */
function openDatabase(dbPath: string): Database.Database {
  const db = new Database(dbPath, { timeout: BUSY_TIMEOUT_MS });
  db.pragma('journal_mode = wal');
  db.pragma('synchronous = normal');
  db.exec('CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY, at INTEGER NOT NULL, body BLOB NOT NULL)');
  return db;
}

/** One database under write: its connection, insert transaction and WAL bookkeeping. */
class Target {
  readonly path: string;
  readonly db: Database.Database;
  readonly pageSize: number;
  readonly marks: WalMark[] = [];
  readonly counter: WalByteCounter;
  /** Milliseconds each commit took, waits for locks included. */
  readonly commitTimes: number[] = [];
  transactions = 0;
  #index: WalIndexReader;
  #tx: (count: number) => void;

  constructor(dbPath: string, bodies: Buffer[]) {
    this.path = dbPath;
    this.db = openDatabase(dbPath);
    this.pageSize = Number(this.db.pragma('page_size', { simple: true }));
    // A read creates the -shm file, so the wal-index exists before the first commit.
    this.db.prepare('SELECT count(*) FROM sqlite_master').get();
    this.#index = new WalIndexReader(dbPath, this.pageSize);
    this.counter = new WalByteCounter(this.#index.read(), this.pageSize);

    const insert = this.db.prepare('INSERT INTO t (at, body) VALUES (?, ?)');
    let next = 0;
    this.#tx = this.db.transaction((count: number) => {
      const at = Date.now();
      for (let i = 0; i < count; i++) insert.run(at, bodies[next++ % bodies.length]);
    });
  }

  /** Commits one transaction of `rows` rows and returns where it ended in the WAL. */
  commit(rows: number): WalIndexHeader {
    const started = performance.now();
    this.#tx(rows);
    this.commitTimes.push(performance.now() - started);
    this.transactions++;
    const header = this.#index.read();
    this.counter.update(header);
    return header;
  }

  close(): void {
    this.#index.close();
    this.db.close();
  }
}

async function runFlat(job: FlatJob): Promise<WriteResult> {
  const target = new Target(job.db, makeBodies(job.rowBytes));
  const startedAt = Date.now();
  const deadline = startedAt + job.seconds * 1000;
  let lastSample = 0;
  let lastYield = startedAt;
  let header: WalIndexHeader | undefined;
  let now = startedAt;

  try {
    while (now < deadline && !stopping && target.transactions < MAX_TRANSACTIONS) {
      header = target.commit(job.rowsPerTx);
      now = Date.now();
      if (now - lastSample >= job.sampleMs) {
        target.marks.push({ t: now, salt: header.salt, end: header.end });
        lastSample = now;
      }
      if (now - lastYield >= YIELD_EVERY_MS) {
        await new Promise((resolve) => setImmediate(resolve));
        lastYield = Date.now();
      }
    }
    // The last commit is always kept: the catch-up time is measured from it.
    if (header !== undefined && target.marks.at(-1)?.t !== now) target.marks.push({ t: now, salt: header.salt, end: header.end });
    return writeResult([target], job.rowsPerTx, startedAt, now);
  } finally {
    target.close();
  }
}

async function runBulk(job: BulkJob): Promise<WriteResult> {
  const target = new Target(job.db, makeBodies(job.rowBytes));
  const transactions = Math.ceil(job.totalBytes / (job.rowsPerTx * job.rowBytes));
  const startedAt = Date.now();

  try {
    let header: WalIndexHeader | undefined;
    for (let i = 0; i < transactions && !stopping; i++) {
      header = target.commit(job.rowsPerTx);
      target.marks.push({ t: Date.now(), salt: header.salt, end: header.end });
      await new Promise((resolve) => setImmediate(resolve));
    }
    return writeResult([target], job.rowsPerTx, startedAt, Date.now());
  } finally {
    target.close();
  }
}

/**
 * Commits on a fixed schedule: database i of n starts i/n of a period after
 * the others, so that many databases spread their commits. A commit that
 * falls behind its schedule runs as soon as it can; none is skipped.
 */
async function runPaced(job: PacedJob): Promise<WriteResult> {
  const bodies = makeBodies(job.rowBytes);
  const targets = job.dbs.map((db) => new Target(db, bodies));
  const period = 1000 / job.ratePerDb;
  const startedAt = Date.now() + 20;
  const deadline = startedAt + job.seconds * 1000;
  const next = targets.map((_, i) => startedAt + (i * period) / targets.length);
  const lateness: number[] = [];

  try {
    let endedAt = startedAt;
    for (let step = 0; step < MAX_TRANSACTIONS && !stopping; step++) {
      let i = 0;
      for (let j = 1; j < next.length; j++) if (next[j]! < next[i]!) i = j;
      const due = next[i]!;
      if (due >= deadline) break;

      const wait = due - Date.now();
      if (wait >= 1) await sleep(wait);
      const started = Date.now();
      lateness.push(Math.max(0, started - due));

      const header = targets[i]!.commit(job.rowsPerTx);
      endedAt = Date.now();
      targets[i]!.marks.push({ t: endedAt, salt: header.salt, end: header.end });
      next[i] = due + period;
    }
    const result = writeResult(targets, job.rowsPerTx, startedAt, endedAt);
    lateness.sort((a, b) => a - b);
    result.lateness = { p50: percentile(lateness, 50), p99: percentile(lateness, 99), max: lateness.at(-1) ?? 0 };
    return result;
  } finally {
    for (const target of targets) target.close();
  }
}

/**
 * Fills a database as fast as SQLite can: with no journal and no fsync, as a
 * bulk import would, because the snapshot workload measures walship's
 * snapshot, not these writes. The database is in WAL mode again at the end.
 */
async function runFill(job: FillJob): Promise<WriteResult> {
  const db = new Database(job.db, { timeout: BUSY_TIMEOUT_MS });
  const startedAt = Date.now();

  try {
    db.pragma('journal_mode = off');
    db.pragma('synchronous = off');
    db.exec('CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY, at INTEGER NOT NULL, body BLOB NOT NULL)');
    const bodies = makeBodies(job.rowBytes);
    const insert = db.prepare('INSERT INTO t (at, body) VALUES (?, ?)');
    let next = 0;
    const tx = db.transaction(() => {
      const at = Date.now();
      for (let i = 0; i < job.rowsPerTx; i++) insert.run(at, bodies[next++ % bodies.length]);
    });
    const pageSize = Number(db.pragma('page_size', { simple: true }));

    let transactions = 0;
    while (transactions < MAX_TRANSACTIONS && !stopping) {
      tx();
      transactions++;
      if (transactions % 8 !== 0) continue;
      if (Number(db.pragma('page_count', { simple: true })) * pageSize >= job.bytes) break;
      await new Promise((resolve) => setImmediate(resolve));
    }
    db.pragma('journal_mode = wal');
    const endedAt = Date.now();
    const rows = transactions * job.rowsPerTx;
    const commitMs = { p50: 0, p99: 0, max: 0 };
    return { transactions, rows, walBytes: 0, startedAt, endedAt, pageSize, marks: {}, commitMs, dbBytes: fs.statSync(job.db).size };
  } finally {
    db.close();
  }
}

function writeResult(targets: Target[], rowsPerTx: number, startedAt: number, endedAt: number): WriteResult {
  let transactions = 0;
  let walBytes = 0;
  const marks: Record<string, WalMark[]> = {};
  const commitTimes: number[] = [];
  for (const target of targets) {
    transactions += target.transactions;
    walBytes += target.counter.bytes;
    marks[target.path] = target.marks;
    commitTimes.push(...target.commitTimes);
  }
  commitTimes.sort((a, b) => a - b);
  const commitMs = { p50: percentile(commitTimes, 50), p99: percentile(commitTimes, 99), max: commitTimes.at(-1) ?? 0 };
  return { transactions, rows: transactions * rowsPerTx, walBytes, startedAt, endedAt, pageSize: targets[0]?.pageSize ?? 0, marks, commitMs };
}

/** Hashes id, at and body of every row of `t` in id order, and runs SQLite's integrity check. */
function hashDatabase(job: HashJob): HashResult {
  const db = new Database(job.db, { fileMustExist: true, timeout: BUSY_TIMEOUT_MS });
  try {
    const integrityStarted = performance.now();
    const integrity = (db.pragma('integrity_check') as { integrity_check: string }[]).map((row) => row.integrity_check).join('\n');
    const integritySeconds = (performance.now() - integrityStarted) / 1000;
    const hash = createHash('sha256');
    const head = Buffer.alloc(16);
    let rows = 0;
    const iterator = db.prepare('SELECT id, at, body FROM t ORDER BY id').raw().iterate() as IterableIterator<[number, number, Buffer]>;
    for (const [id, at, body] of iterator) {
      head.writeDoubleLE(id, 0);
      head.writeDoubleLE(at, 8);
      hash.update(head);
      hash.update(body);
      rows++;
    }
    const pages = Number(db.pragma('page_count', { simple: true })) * Number(db.pragma('page_size', { simple: true }));
    return { rows, sha256: hash.digest('hex'), integrity, integritySeconds, bytes: pages };
  } finally {
    db.close();
  }
}

/** Restores each item with walship's library restore and compares it with its source, until the time is up. */
async function verifyDatabases(job: VerifyJob): Promise<VerifyResult> {
  const result: VerifyResult = { checked: 0, identical: 0, failures: [], restoreSeconds: 0, restoredBytes: 0 };
  const deadline = Date.now() + job.seconds * 1000;
  // Loaded here, so that writing jobs start without the AWS SDK in memory.
  const { restore } = await import('../src/restore.js');

  for (const item of job.items) {
    if (Date.now() >= deadline || stopping) break;
    result.checked++;
    try {
      const started = performance.now();
      const restored = await restore({ client: item.client, outputPath: item.output });
      result.restoreSeconds += (performance.now() - started) / 1000;
      result.restoredBytes += restored.bytes;

      const source = hashDatabase({ kind: 'hash', db: item.source });
      const copy = hashDatabase({ kind: 'hash', db: item.output });
      const differences = compareHashes(source, copy);
      if (differences === '') result.identical++;
      else if (result.failures.length < 10) result.failures.push(`${item.source}: ${differences}`);
    } catch (err) {
      if (result.failures.length < 10) result.failures.push(`${item.source}: restore failed: ${(err as Error).message}`);
    } finally {
      for (const suffix of ['', '-wal', '-shm']) fs.rmSync(`${item.output}${suffix}`, { force: true });
    }
  }
  return result;
}

function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return 0;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

async function runJob(job: WriterJob): Promise<WriteResult | HashResult | VerifyResult> {
  switch (job.kind) {
    case 'flat':
      return runFlat(job);
    case 'bulk':
      return runBulk(job);
    case 'paced':
      return runPaced(job);
    case 'fill':
      return runFill(job);
    case 'hash':
      return hashDatabase(job);
    case 'verify':
      return verifyDatabases(job);
  }
}

function send(message: WriterMessage): void {
  process.send!(message, () => process.exit(message.type === 'done' ? 0 : 1));
}

// The benchmark going away ends the job: a writer must not outlive it.
process.on('disconnect', () => process.exit(2));
process.on('message', (message: WriterJob | 'stop') => {
  if (message === 'stop') {
    stopping = true;
    return;
  }
  runJob(message).then(
    (result) => send({ type: 'done', result }),
    (err: unknown) => send({ type: 'error', message: err instanceof Error ? (err.stack ?? err.message) : String(err) }),
  );
});

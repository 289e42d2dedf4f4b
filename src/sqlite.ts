import Database from 'better-sqlite3';

import { WalshipError } from './errors.js';

/** SQLite checkpoint modes walship runs. */
export type CheckpointMode = 'PASSIVE' | 'RESTART' | 'TRUNCATE';

/** The three columns `PRAGMA wal_checkpoint` returns. */
export interface CheckpointResult {
  /** 1 when the checkpoint could not finish because of a lock. */
  busy: number;
  /** Frames in the WAL. */
  log: number;
  /** Frames backfilled into the database file. */
  checkpointed: number;
}

// SQLite before 3.51.3 can reset the WAL under a second checkpointer and lose
// frames; walship runs checkpoints next to the application's own.
const MIN_SQLITE_VERSION = [3, 51, 3];

/** Throws unless the SQLite linked into better-sqlite3 is 3.51.3 or newer. */
export function checkSqliteVersion(): void {
  const db = new Database(':memory:');
  try {
    const version = (db.prepare('SELECT sqlite_version() AS v').get() as { v: string }).v;
    const parts = version.split('.').map((p) => parseInt(p, 10));
    for (let i = 0; i < MIN_SQLITE_VERSION.length; i++) {
      const have = parts[i] ?? 0;
      const need = MIN_SQLITE_VERSION[i]!;
      if (have > need) return;
      if (have < need) {
        throw new WalshipError('INVALID_INPUT', `SQLite ${version} is older than 3.51.3, whose WAL reset bug can lose frames: upgrade better-sqlite3`);
      }
    }
  } finally {
    db.close();
  }
}

/**
 * walship's two connections to a database.
 *
 * - `ro`, opened read-only, keeps the long-running read transaction that stops
 *   anyone else from checkpointing past frames walship has not copied. It is
 *   closed last: SQLite deletes the WAL when the last connection closes after a
 *   full checkpoint, but a read-only connection cannot checkpoint, so its close
 *   leaves the WAL (and so the generation) in place. better-sqlite3 has no
 *   file-control call for SQLITE_FCNTL_PERSIST_WAL, which is what Litestream uses.
 * - `rw` runs checkpoints and takes the write lock with BEGIN IMMEDIATE. While
 *   `ro` is open, closing `rw` cannot delete the WAL either, since SQLite only
 *   deletes it when it gets an exclusive lock on the database file.
 *
 * walship never writes to the database: it adds no table, and its write lock
 * is always rolled back.
 */
export interface Connections {
  readonly pageSize: number;
  beginRead(): void;
  endRead(): void;
  /**
   * Runs `PRAGMA wal_checkpoint(mode)`. `busyTimeout` (ms) caps how long a
   * RESTART or TRUNCATE waits for the write lock and for readers, since the
   * application's writers wait behind it meanwhile.
   */
  checkpoint(mode: CheckpointMode, busyTimeout?: number): CheckpointResult;
  /**
   * Runs `fn` holding SQLite's write lock, then takes the read transaction
   * again before releasing it. `fn` is synchronous so that the lock is never
   * held while other code on this thread, perhaps the application, runs.
   */
  withWriteLock<T>(fn: () => T): T;
  close(): void;
}

/** Opens walship's connections, switches the database to WAL mode and takes the read transaction. */
export function openConnections(dbPath: string, busyTimeout: number): Connections {
  const rw = new Database(dbPath, { fileMustExist: true, timeout: busyTimeout });
  let ro: Database.Database | undefined;
  try {
    const mode = String(rw.pragma('journal_mode = wal', { simple: true }));
    if (mode !== 'wal') {
      throw new WalshipError('INVALID_INPUT', `database ${dbPath}: cannot switch to WAL mode (journal_mode is ${mode}); is it opened with locking_mode=EXCLUSIVE?`);
    }
    rw.pragma('wal_autocheckpoint = 0');
    const pageSize = Number(rw.pragma('page_size', { simple: true }));

    ro = new Database(dbPath, { readonly: true, fileMustExist: true, timeout: busyTimeout });
    const conns = new SqliteConnections(rw, ro, pageSize);
    conns.beginRead();
    return conns;
  } catch (err) {
    ro?.close();
    rw.close();
    if (err instanceof WalshipError) throw err;
    throw new WalshipError('INVALID_INPUT', `database ${dbPath}: cannot open: ${(err as Error).message}`, { cause: err });
  }
}

class SqliteConnections implements Connections {
  readonly pageSize: number;
  #rw: Database.Database;
  #ro: Database.Database;
  #probe: Database.Statement;

  constructor(rw: Database.Database, ro: Database.Database, pageSize: number) {
    this.#rw = rw;
    this.#ro = ro;
    this.pageSize = pageSize;
    this.#probe = ro.prepare('SELECT COUNT(*) FROM sqlite_master');
  }

  beginRead(): void {
    if (this.#ro.inTransaction) return;
    this.#ro.exec('BEGIN');
    // A deferred transaction takes its read lock at the first read.
    this.#probe.get();
  }

  endRead(): void {
    if (this.#ro.inTransaction) this.#ro.exec('COMMIT');
  }

  checkpoint(mode: CheckpointMode, busyTimeout?: number): CheckpointResult {
    if (busyTimeout === undefined) return (this.#rw.pragma(`wal_checkpoint(${mode})`) as CheckpointResult[])[0]!;

    const previous = Number(this.#rw.pragma('busy_timeout', { simple: true }));
    this.#rw.pragma(`busy_timeout = ${Math.floor(busyTimeout)}`);
    try {
      return (this.#rw.pragma(`wal_checkpoint(${mode})`) as CheckpointResult[])[0]!;
    } finally {
      this.#rw.pragma(`busy_timeout = ${previous}`);
    }
  }

  withWriteLock<T>(fn: () => T): T {
    try {
      this.#rw.exec('BEGIN IMMEDIATE');
    } catch (err) {
      this.beginRead();
      throw err;
    }
    try {
      return fn();
    } finally {
      // The read transaction is taken again before the write lock goes, so no
      // writer can restart the WAL in between.
      this.beginRead();
      this.#rw.exec('ROLLBACK');
    }
  }

  close(): void {
    this.#rw.close();
    this.endRead();
    this.#ro.close();
  }
}

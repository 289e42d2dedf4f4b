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
 * walship's connections to a database.
 *
 * - Two read-only connections take turns holding the long-running read
 *   transaction that stops anyone else from checkpointing past frames walship
 *   has not copied. To move that transaction to a newer snapshot without a
 *   moment in which walship has none, the idle connection begins its read
 *   before the busy one ends its own (`beginNextRead`, `endPreviousRead`).
 *   They are closed last: SQLite deletes the WAL when the last connection
 *   closes after a full checkpoint, but a read-only connection cannot
 *   checkpoint, so its close leaves the WAL (and so the generation) in place.
 *   better-sqlite3 has no file-control call for SQLITE_FCNTL_PERSIST_WAL,
 *   which is what Litestream uses.
 * - `rw` runs PASSIVE checkpoints. While a read-only connection is open,
 *   closing `rw` cannot delete the WAL either, since SQLite only deletes it
 *   when it gets an exclusive lock on the database file. The same holds for
 *   the short-lived connection that `withWriteLock` opens.
 *
 * walship never writes to the database: it adds no table, and its write lock
 * is always rolled back.
 */
export interface Connections {
  readonly pageSize: number;
  /** Takes a read transaction on the current read connection unless one is open there. */
  beginRead(): void;
  /** Ends every read transaction walship holds. */
  endRead(): void;
  /**
   * Takes a read transaction at the newest snapshot on the idle read
   * connection, which becomes the current one. The previous transaction stays
   * open until `endPreviousRead`.
   */
  beginNextRead(): void;
  /** Ends the read transaction of the previous read connection, if one is open there. */
  endPreviousRead(): void;
  /** Ends the newest read transaction and makes the previous connection, still reading, current again. */
  cancelNextRead(): void;
  /** Runs `PRAGMA wal_checkpoint(PASSIVE)` on the read-write connection. */
  checkpoint(): CheckpointResult;
  /**
   * Runs `fn` while a connection of its own holds SQLite's write lock, so no
   * writer can append to or restart the WAL meanwhile. The lock is waited for
   * at most `timeoutMs`, then the SQLITE_BUSY error is thrown. `fn` is
   * synchronous so that the lock is never held while other code on this
   * thread, perhaps the application, runs.
   */
  withWriteLock<T>(timeoutMs: number, fn: () => T): T;
  close(): void;
}

/** Opens walship's connections, switches the database to WAL mode and takes the read transaction. */
export function openConnections(dbPath: string, busyTimeout: number): Connections {
  const rw = new Database(dbPath, { fileMustExist: true, timeout: busyTimeout });
  const readers: Database.Database[] = [];
  try {
    const mode = String(rw.pragma('journal_mode = wal', { simple: true }));
    if (mode !== 'wal') {
      throw new WalshipError('INVALID_INPUT', `database ${dbPath}: cannot switch to WAL mode (journal_mode is ${mode}); is it opened with locking_mode=EXCLUSIVE?`);
    }
    rw.pragma('wal_autocheckpoint = 0');
    const pageSize = Number(rw.pragma('page_size', { simple: true }));

    for (let i = 0; i < 2; i++) readers.push(new Database(dbPath, { readonly: true, fileMustExist: true, timeout: busyTimeout }));
    const conns = new SqliteConnections(dbPath, rw, readers as [Database.Database, Database.Database], pageSize);
    conns.beginRead();
    return conns;
  } catch (err) {
    for (const reader of readers) reader.close();
    rw.close();
    if (err instanceof WalshipError) throw err;
    throw new WalshipError('INVALID_INPUT', `database ${dbPath}: cannot open: ${(err as Error).message}`, { cause: err });
  }
}

class SqliteConnections implements Connections {
  readonly pageSize: number;
  #path: string;
  #rw: Database.Database;
  #readers: [Reader, Reader];
  // Index in #readers of the connection holding the newest read transaction.
  #current = 0;

  constructor(dbPath: string, rw: Database.Database, readers: [Database.Database, Database.Database], pageSize: number) {
    this.#path = dbPath;
    this.#rw = rw;
    this.#readers = [new Reader(readers[0]), new Reader(readers[1])];
    this.pageSize = pageSize;
  }

  beginRead(): void {
    this.#readers[this.#current].begin();
  }

  endRead(): void {
    for (const reader of this.#readers) reader.end();
  }

  beginNextRead(): void {
    const next = 1 - this.#current;
    // A transaction left on the idle connection would pin an old snapshot.
    this.#readers[next].end();
    this.#readers[next].begin();
    this.#current = next;
  }

  endPreviousRead(): void {
    this.#readers[1 - this.#current].end();
  }

  cancelNextRead(): void {
    this.#readers[this.#current].end();
    this.#current = 1 - this.#current;
  }

  checkpoint(): CheckpointResult {
    return (this.#rw.pragma('wal_checkpoint(PASSIVE)') as CheckpointResult[])[0]!;
  }

  withWriteLock<T>(timeoutMs: number, fn: () => T): T {
    // A connection of its own, because `rw` must stay outside any transaction
    // to run the checkpoint while the lock is held.
    const locker = new Database(this.#path, { fileMustExist: true, timeout: Math.max(0, Math.floor(timeoutMs)) });
    try {
      locker.exec('BEGIN IMMEDIATE');
      try {
        return fn();
      } finally {
        locker.exec('ROLLBACK');
      }
    } finally {
      locker.close();
    }
  }

  close(): void {
    this.#rw.close();
    this.endRead();
    for (const reader of this.#readers) reader.close();
  }
}

/** A read-only connection and the statement that makes its transaction take the read lock. */
class Reader {
  #db: Database.Database;
  #probe: Database.Statement;

  constructor(db: Database.Database) {
    this.#db = db;
    this.#probe = db.prepare('SELECT COUNT(*) FROM sqlite_master');
  }

  begin(): void {
    if (this.#db.inTransaction) return;
    this.#db.exec('BEGIN');
    // A deferred transaction takes its read lock at the first read.
    this.#probe.get();
  }

  end(): void {
    if (this.#db.inTransaction) this.#db.exec('COMMIT');
  }

  close(): void {
    this.#db.close();
  }
}

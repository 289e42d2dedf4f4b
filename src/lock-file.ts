import { randomBytes } from 'node:crypto';
import { readFileSync, unlinkSync } from 'node:fs';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';

import { WalshipError } from './errors.js';
import { silentLogger, type Logger } from './logger.js';

/**
 * One walship process per database file on a host.
 *
 * The lock is the file `<database path>-walship.lock` beside the database,
 * created with `link(2)` from a complete temporary file, so it appears
 * atomically with its content or not at all. It records the holder's pid,
 * host name, start time and a random token. walship never opens the database
 * file itself for this: closing any descriptor of a file drops every POSIX lock
 * that the process holds on it, SQLite's included.
 *
 * A lock file of this host is stale when its process is not running or its
 * pid now belongs to another process. A lock file of another host is stale
 * when its holder has not refreshed its modification time for `staleAfter`.
 * A stale lock file is taken over with a warning. Hosts share a lock file only
 * on a shared filesystem. The lease object in the replica guards writers across hosts.
 */

/** Default interval between refreshes of the lock file's modification time, in milliseconds. */
export const DEFAULT_LOCK_REFRESH_INTERVAL = 60_000;

/** Default age after which a lock file of another host counts as stale, in milliseconds. */
export const DEFAULT_LOCK_STALE_AFTER = 5 * DEFAULT_LOCK_REFRESH_INTERVAL;

/** Attempts to create the lock file, each after removing one stale lock file. */
const MAX_ACQUIRE_ATTEMPTS = 5;

/** Contents of a lock file. */
export interface LockHolder {
  pid: number;
  hostname: string;
  /** ISO time at which the holder took the lock. */
  startedAt: string;
  /** Start time of the holding process in clock ticks since boot (Linux), to spot a reused pid. */
  processStart?: string;
  /** Canonical path of the database. */
  database: string;
  /** Random value that distinguishes this holder's file from a later one with the same pid. */
  token: string;
}

/** Options of DatabaseLock.acquire. */
export interface DatabaseLockOptions {
  logger?: Logger;
  /** Interval between refreshes of the lock file's modification time, in milliseconds. Defaults to 60 s. 0 turns refreshes off. */
  refreshInterval?: number;
  /** Age of the modification time after which another host's lock file is stale, in milliseconds. Defaults to 5 minutes. */
  staleAfter?: number;
}

/** Returns the path of the lock file of a database: `<database path>-walship.lock`. */
export function lockFilePath(dbPath: string): string {
  return `${dbPath}-walship.lock`;
}

/** Lock files this process holds, removed by the exit handler when the process exits without releasing them. */
const heldLocks = new Map<string, string>();
let exitHandlerInstalled = false;

/** A held lock file of one database. Release it with `release()`. */
export class DatabaseLock {
  /** Canonical path of the database. */
  readonly dbPath: string;
  /** Path of the lock file. */
  readonly path: string;
  readonly holder: LockHolder;
  readonly #content: string;
  readonly #log: Logger;
  #timer: NodeJS.Timeout | undefined;
  #held = true;

  private constructor(dbPath: string, file: string, holder: LockHolder, content: string, log: Logger) {
    this.dbPath = dbPath;
    this.path = file;
    this.holder = holder;
    this.#content = content;
    this.#log = log;
  }

  /**
   * Creates the lock file of a database, taking over a stale one. Rejects with
   * LOCKED, naming the pid and host of the lock's owner, when that process still runs.
   */
  static async acquire(dbPath: string, options: DatabaseLockOptions = {}): Promise<DatabaseLock> {
    const log = options.logger ?? silentLogger();
    const staleAfter = options.staleAfter ?? DEFAULT_LOCK_STALE_AFTER;
    const database = await canonicalPath(dbPath);
    const file = lockFilePath(database);
    const holder: LockHolder = {
      pid: process.pid,
      hostname: os.hostname(),
      startedAt: new Date().toISOString(),
      processStart: await readProcessStart(process.pid),
      database,
      token: randomBytes(8).toString('hex'),
    };
    const content = JSON.stringify(holder) + '\n';

    for (let attempt = 1; attempt <= MAX_ACQUIRE_ATTEMPTS; attempt++) {
      // Create the lock file, or find who holds it.
      const created = await createExclusive(file, content).catch((err: unknown) => {
        throw new Error(
          `database ${database}: create lock file ${file} failed: ${(err as Error).message}. ` +
            `Check that the directory exists and that walship may write to it`,
          { cause: err },
        );
      });
      if (created) {
        const lock = new DatabaseLock(database, file, holder, content, log);
        lock.#startRefresh(options.refreshInterval ?? DEFAULT_LOCK_REFRESH_INTERVAL);
        trackHeldLock(file, content);
        log.info({ lock: file }, 'lock file created');
        return lock;
      }
      const found = await readLockFile(file);
      if (found === undefined) continue;

      // A live holder keeps the lock, and this instance must not start.
      const reason = await staleReason(found, staleAfter);
      if (reason === undefined) throw lockedError(database, file, found.holder);

      // Move the stale file away, unless its holder replaced it in the meantime.
      if (await removeIfUnchanged(file, found.content)) {
        log.warn(
          { lock: file, holderPid: found.holder?.pid, holderHost: found.holder?.hostname, reason },
          'took over stale lock file',
        );
      }
    }
    throw new Error(
      `database ${database}: could not create lock file ${file} after ${MAX_ACQUIRE_ATTEMPTS} attempts, ` +
        `because other processes kept replacing it. Check which processes run walship on this database`,
    );
  }

  /** Reports whether this instance still holds the lock. */
  get held(): boolean {
    return this.#held;
  }

  /** Deletes the lock file if it is still this instance's. Calling it again does nothing. */
  async release(): Promise<void> {
    if (!this.#held) return;
    this.#held = false;
    clearInterval(this.#timer);
    heldLocks.delete(this.path);

    if (await removeIfUnchanged(this.path, this.#content)) {
      this.#log.info({ lock: this.path }, 'lock file released');
    } else {
      this.#log.warn({ lock: this.path }, 'lock file was replaced by another process, so it was left in place');
    }
  }

  #startRefresh(interval: number): void {
    if (interval <= 0) return;
    this.#timer = setInterval(() => void this.#refresh(), interval);
    // A lock must not keep the process alive on its own.
    this.#timer.unref();
  }

  /** Touches the lock file, so that another host on a shared filesystem finds it live. */
  async #refresh(): Promise<void> {
    const current = await fs.readFile(this.path, 'utf8').catch(() => undefined);
    if (!this.#held) return;
    if (current !== this.#content) {
      this.#log.error({ lock: this.path }, 'lock file was removed or replaced by another process');
      clearInterval(this.#timer);
      return;
    }
    const now = new Date();
    await fs.utimes(this.path, now, now).catch((err: unknown) => {
      this.#log.warn({ lock: this.path, err }, 'lock file refresh failed');
    });
  }
}

/**
 * Creates `file` with `content` only when no file of that name exists, and
 * reports whether it did. The content goes to a temporary file first, and
 * `link(2)` gives it the final name, so readers never see a partial file.
 */
export async function createExclusive(file: string, content: string): Promise<boolean> {
  const temp = `${file}.${randomBytes(6).toString('hex')}.tmp`;
  await fs.writeFile(temp, content, { flag: 'wx' });
  try {
    await fs.link(temp, file);
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EEXIST') return false;
    throw err;
  } finally {
    await fs.unlink(temp).catch(() => undefined);
  }
}

/**
 * Deletes `file` only if it still contains `expected`, and reports whether it
 * did. The file is first renamed aside, so that a process that replaced it
 * after `expected` was read keeps its file: the file goes back under its name.
 *
 * NOTE: while the file is aside, a third process may create a new one, so
 * the restored file is dropped then. That needs three processes racing on one
 * stale lock within the same few milliseconds.
 */
export async function removeIfUnchanged(file: string, expected: string): Promise<boolean> {
  const aside = `${file}.${randomBytes(6).toString('hex')}.aside.tmp`;
  try {
    await fs.rename(file, aside);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return false;
    throw err;
  }

  try {
    const moved = await fs.readFile(aside, 'utf8');
    if (moved === expected) return true;
    await fs.link(aside, file).catch(() => undefined);
    return false;
  } finally {
    await fs.unlink(aside).catch(() => undefined);
  }
}

/** Reads a lock file, or returns undefined when it vanished. `holder` is undefined for a file that is not a lock record. */
async function readLockFile(
  file: string,
): Promise<{ content: string; holder: LockHolder | undefined; mtime: Date } | undefined> {
  try {
    const [content, stat] = await Promise.all([fs.readFile(file, 'utf8'), fs.stat(file)]);
    return { content, holder: parseHolder(content), mtime: stat.mtime };
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw new Error(`read lock file ${file} failed: ${(err as Error).message}`, { cause: err });
  }
}

function parseHolder(content: string): LockHolder | undefined {
  try {
    const value = JSON.parse(content) as Partial<LockHolder>;
    if (typeof value.pid !== 'number' || typeof value.hostname !== 'string') return undefined;
    return value as LockHolder;
  } catch {
    return undefined;
  }
}

/** Returns why a found lock file is stale, or undefined while its holder is live. */
async function staleReason(
  found: { holder: LockHolder | undefined; mtime: Date },
  staleAfter: number,
): Promise<string | undefined> {
  const { holder } = found;
  // Lock files appear complete (see createExclusive), so an unreadable one is damaged, not half-written.
  if (holder === undefined) return 'the lock file is not a walship lock record';

  if (holder.hostname !== os.hostname()) {
    const age = Date.now() - found.mtime.getTime();
    if (age <= staleAfter) return undefined;
    return `host ${holder.hostname} last refreshed the lock file ${Math.round(age / 1000)} s ago`;
  }

  if (!isRunning(holder.pid)) return `process ${holder.pid} is not running`;
  if (holder.processStart !== undefined) {
    const start = await readProcessStart(holder.pid);
    if (start !== undefined && start !== holder.processStart) return `pid ${holder.pid} now belongs to another process`;
  }
  return undefined;
}

/** Reports whether a process with this pid exists on this host. */
export function isRunning(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    // EPERM: the process exists but belongs to another user.
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * Returns the start time of a process in clock ticks since boot (field 22 of
 * `/proc/<pid>/stat`), or undefined where `/proc` is missing. Two processes
 * that share a pid one after the other differ in it.
 */
async function readProcessStart(pid: number): Promise<string | undefined> {
  let stat: string;
  try {
    stat = await fs.readFile(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return undefined;
  }
  // The command name (field 2) may contain spaces and parentheses, so count fields after its closing parenthesis.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return fields[19];
}

/** Resolves symbolic links, so that two names of one database share one lock file. The file itself may not exist yet. */
async function canonicalPath(dbPath: string): Promise<string> {
  const absolute = path.resolve(dbPath);
  try {
    return await fs.realpath(absolute);
  } catch {
    try {
      return path.join(await fs.realpath(path.dirname(absolute)), path.basename(absolute));
    } catch {
      return absolute;
    }
  }
}

function lockedError(database: string, file: string, holder: LockHolder | undefined): WalshipError {
  const who = holder === undefined ? 'another process' : `walship process ${holder.pid} on host ${holder.hostname}`;
  const since = holder?.startedAt === undefined ? '' : ` since ${holder.startedAt}`;
  return new WalshipError(
    'LOCKED',
    `database ${database} is already replicated by ${who}${since} (lock file ${file}). ` +
      `Stop that process before starting another one. Once it no longer runs, walship takes the lock over by itself`,
  );
}

/** Registers a held lock for the exit handler, which deletes what `release()` did not. */
function trackHeldLock(file: string, content: string): void {
  heldLocks.set(file, content);
  if (exitHandlerInstalled) return;
  exitHandlerInstalled = true;

  // One listener for all locks, because a daemon may hold thousands.
  process.on('exit', () => {
    for (const [lockFile, expected] of heldLocks) {
      try {
        if (readFileSync(lockFile, 'utf8') === expected) unlinkSync(lockFile);
      } catch {
        // The file is gone or unreadable. Nothing is left to clean up.
      }
    }
  });
}

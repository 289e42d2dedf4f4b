import { EventEmitter } from 'node:events';

import { directoryDatabase } from './config-directory.js';
import type { Config, DatabaseConfig, DirectoryConfig } from './config.js';
import { DatabaseSupervisor } from './database-supervisor.js';
import type { DatabaseGuard, ReplicatedDatabase, UnshippedReport } from './database-supervisor.js';
import { DirectoryWatch } from './directory-watch.js';
import { WalshipError, describeError } from './errors.js';
import type { Logger } from './logger.js';
import { silentLogger } from './logger.js';
import { checkDistinctDatabases, checkDistinctPrefixes } from './naming.js';
import { Semaphore } from './mutex.js';
import { ShipPool } from './pool.js';
import { formatPos } from './pos.js';
import { listSegments } from './replica/listing.js';
import type { Replica } from './replica.js';

export type { DatabaseGuard, ReplicatedDatabase, UnshippedReport } from './database-supervisor.js';

/** Options of a Replicator. */
export interface ReplicatorOptions {
  logger?: Logger;
  /** Worker threads of the ship pool; see ShipPoolOptions. */
  threads?: number;
  /** First wait after a database failed to open, in ms; it doubles after each failure. Defaults to 1 s. */
  retryMinMs?: number;
  /** Maximum wait between open attempts of a database, in ms. Defaults to 30 s. */
  retryMaxMs?: number;
  /** Time between full rescans of `dir:` entries, in ms. Defaults to 10 s. */
  rescanIntervalMs?: number;
  /** Acquired before each database opens and released after it closes. */
  guard?: DatabaseGuard;
}

/** Events a Replicator emits. */
export interface ReplicatorEvents {
  /** A database is open and its replicas started. */
  added: [database: ReplicatedDatabase];
  /** A database stopped: removed from its directory, or the replicator stopped. */
  removed: [database: ReplicatedDatabase];
}

/** Outcome of a shutdown with a deadline. */
export interface ShutdownReport {
  /** True when every database's captured WAL is stored on every replica and nothing failed. */
  complete: boolean;
  /** True when the deadline passed before the final syncs finished. */
  timedOut: boolean;
  /** Databases whose replicas were behind when the shutdown ended. */
  unshipped: UnshippedReport[];
}

/** Result of one database in `syncAll`. */
export interface SyncResult {
  db: string;
  path: string;
  /** Undefined when the database was shipped to every replica. */
  error?: Error;
}

// Shadow WAL size past which walship warns that a replica is falling behind.
const SHADOW_WARN_BYTES = 256 * 1024 * 1024;
const SHADOW_CHECK_MS = 30_000;

// Databases opening at once.
const OPEN_SLOTS = 16;

// Share of a shutdown deadline kept for aborting multipart uploads, at most 2 s.
const ABORT_SHARE = 0.2;
const MAX_ABORT_MS = 2000;

/**
 * Runs replication for every database of a config in one process, each under
 * its own DatabaseSupervisor, with one shared pool of ship workers. A
 * database that cannot be opened is retried while the others replicate.
 * `dir:` entries are followed: new database files are picked up and removed
 * ones stop (their replicas stay).
 */
export class Replicator extends EventEmitter<ReplicatorEvents> {
  readonly config: Config;
  readonly log: Logger;
  /** Databases open and replicating now. */
  readonly databases: ReplicatedDatabase[] = [];

  #options: ReplicatorOptions;
  #pool: ShipPool | undefined;
  #supervisors = new Map<string, DatabaseSupervisor>();
  #watches: DirectoryWatch[] = [];
  // Files of a directory rejected for a name or location collision, retried when a database stops.
  #refused = new Map<string, DirectoryConfig>();
  #started = false;
  #stopping = false;
  #backlogTimer: NodeJS.Timeout | undefined;
  // Databases that open at once: a daemon that starts a thousand would
  // otherwise take every lock, connection and lease in the same moment.
  #openSlots = new Semaphore(OPEN_SLOTS);

  constructor(config: Config, options: ReplicatorOptions = {}) {
    super();
    this.config = config;
    this.log = options.logger ?? silentLogger();
    this.#options = options;
  }

  /** Tasks waiting for a free ship worker. */
  get poolQueueSize(): number {
    return this.#pool?.queueSize ?? 0;
  }

  /** Supervisors of every database, open or still waiting, in the order they were found. */
  get supervisors(): DatabaseSupervisor[] {
    return [...this.#supervisors.values()];
  }

  /**
   * Scans the `dir:` entries, checks that no two databases share a name or
   * a replica location (a start-up error naming both paths), then makes one
   * open attempt per database. Databases that fail keep retrying in the
   * background; start resolves once every first attempt is over.
   */
  async start(): Promise<void> {
    const found: DatabaseConfig[] = [...this.config.dbs];
    for (const directory of this.config.dirs ?? []) {
      const watch = this.#watchDirectory(directory, found);
      this.#watches.push(watch);
      await watch.start();
    }

    try {
      // Two databases writing to one prefix would interleave their generations.
      checkDistinctDatabases(found);
      checkDistinctPrefixes(found);
    } catch (err) {
      for (const watch of this.#watches) watch.stop();
      throw err;
    }

    this.#pool = new ShipPool({ threads: this.#options.threads });
    const supervisors = found.map((config) => this.#supervise(config));
    this.#started = true;
    const started = await Promise.allSettled(supervisors.map((supervisor) => supervisor.start({ failFast: true })));
    const refused = started.find((result): result is PromiseRejectedResult => result.status === 'rejected');
    if (refused) {
      await this.stop().catch(() => undefined);
      throw refused.reason;
    }

    this.#backlogTimer = setInterval(() => void this.#checkBacklog(), SHADOW_CHECK_MS);
    this.#backlogTimer.unref();
  }

  /**
   * Stops every database without a deadline: captures what is committed,
   * ships it and closes the connections. Throws the first error after
   * closing the rest.
   */
  async stop(): Promise<void> {
    const errors = await this.#stopAll();
    await this.#pool?.close();
    this.#pool = undefined;
    if (errors.length > 0) throw errors[0];
  }

  /**
   * Stops every database within `timeoutMs`: the final syncs run until most of
   * the deadline has passed. Then every database whose replicas are behind is
   * logged with both positions, the ship workers are ended and each replica's
   * open multipart uploads are aborted. Never rejects.
   */
  async shutdown(timeoutMs: number): Promise<ShutdownReport> {
    const abortMs = Math.min(MAX_ABORT_MS, timeoutMs * ABORT_SHARE);
    const supervisors = this.supervisors;
    const stopping = this.#stopAll();

    let timer: NodeJS.Timeout | undefined;
    const deadline = new Promise<'timeout'>((resolve) => (timer = setTimeout(() => resolve('timeout'), timeoutMs - abortMs)));
    const outcome = await Promise.race([stopping, deadline]);
    clearTimeout(timer);

    if (outcome !== 'timeout') {
      await this.#pool?.close();
      this.#pool = undefined;
      const unshipped = supervisors.map((s) => s.unshipped()).filter((u): u is UnshippedReport => u !== undefined);
      return { complete: outcome.length === 0 && unshipped.length === 0, timedOut: false, unshipped };
    }

    const unshipped = supervisors.map((s) => s.unshipped()).filter((u): u is UnshippedReport => u !== undefined);
    for (const report of unshipped) {
      this.log.warn({ db: report.db, pos: report.pos, replicas: report.replicas.map((r) => `${r.replica}@${r.pos}`).join(',') }, 'shutdown timed out, WAL left unshipped');
    }
    await withDeadline(this.#abortUploads(supervisors), abortMs);
    return { complete: false, timedOut: true, unshipped };
  }

  /**
   * Ships every open database's captured WAL now and resolves when the stores
   * have confirmed it. `name` limits it to one database (its name or path).
   * Rejects with the first failure.
   */
  async sync(name?: string): Promise<void> {
    const results = await this.syncAll(name);
    const failed = results.find((r) => r.error !== undefined);
    if (failed) throw failed.error;
  }

  /**
   * Ships every database (or the one named) now and reports each: a database
   * that is not open counts as failed with the reason it could not be opened.
   */
  async syncAll(name?: string): Promise<SyncResult[]> {
    const supervisors = this.#select(name);
    return Promise.all(
      supervisors.map(async (supervisor): Promise<SyncResult> => {
        const result: SyncResult = { db: supervisor.config.name, path: supervisor.config.path };
        const entry = supervisor.entry;
        if (supervisor.state !== 'running' || entry === undefined) {
          result.error = supervisor.lastError ?? new WalshipError('NOT_FOUND', `database ${supervisor.config.path} is not open`);
          return result;
        }
        try {
          await entry.db.sync();
          await Promise.all(entry.replicas.map((replica) => replica.sync()));
        } catch (err) {
          result.error = err as Error;
        }
        return result;
      }),
    );
  }

  /**
   * Writes a new snapshot of every open database (or the one named) to each
   * of its replicas, and returns how many were written. A replica whose
   * current WAL index has a snapshot already gets none: see Replica.snapshotNow.
   */
  async snapshot(name?: string): Promise<number> {
    let written = 0;
    for (const supervisor of this.#select(name)) {
      const entry = supervisor.entry;
      if (entry === undefined) throw new WalshipError('NOT_FOUND', `database ${supervisor.config.path} is not open: ${describeError(supervisor.lastError)}`);
      await entry.db.sync();
      for (const replica of entry.replicas) if (await replica.snapshotNow()) written++;
    }
    return written;
  }

  /** Reports whether every database is open and every replica's last sync succeeded. */
  allSynced(): boolean {
    if (this.#supervisors.size === 0) return false;
    for (const supervisor of this.#supervisors.values()) {
      const entry = supervisor.entry;
      if (supervisor.state !== 'running' || entry === undefined) return false;
      if (entry.replicas.some((r) => !r.synced || r.lastError !== undefined)) return false;
    }
    return true;
  }

  /** Describes every database for the control socket: state, positions and the last error. */
  status(): Record<string, unknown>[] {
    return this.supervisors.map((supervisor) => {
      const entry = supervisor.entry;
      return {
        db: supervisor.config.name,
        path: supervisor.config.path,
        state: supervisor.state,
        ...(entry ? { pos: formatPos(entry.db.pos()) } : {}),
        ...(supervisor.lastError ? { error: describeError(supervisor.lastError) } : {}),
        replicas: (entry?.replicas ?? []).map((r) => ({ replica: r.name, pos: formatPos(r.pos()), ...(r.lastError ? { error: describeError(r.lastError) } : {}) })),
      };
    });
  }

  // Supervisors matching a database name or path; all of them without one.
  #select(name: string | undefined): DatabaseSupervisor[] {
    if (name === undefined || name === '') return this.supervisors;
    const matches = this.supervisors.filter((s) => s.config.name === name || s.config.path === name);
    if (matches.length === 0) {
      const known = this.supervisors.map((s) => s.config.name).join(', ') || 'none';
      throw new WalshipError('NOT_FOUND', `no database named ${JSON.stringify(name)} is replicated; databases: ${known}`);
    }
    return matches;
  }

  #supervise(config: DatabaseConfig): DatabaseSupervisor {
    const supervisor = new DatabaseSupervisor(config, {
      pool: this.#pool!,
      openSlots: this.#openSlots,
      logger: this.log,
      retryMinMs: this.#options.retryMinMs ?? 1000,
      retryMaxMs: this.#options.retryMaxMs ?? 30_000,
      guard: this.#options.guard,
      onRunning: (entry) => {
        this.databases.push(entry);
        this.emit('added', entry);
      },
      onStopped: (entry) => {
        const i = this.databases.indexOf(entry);
        if (i >= 0) this.databases.splice(i, 1);
        this.emit('removed', entry);
      },
    });
    this.#supervisors.set(config.path, supervisor);
    return supervisor;
  }

  // Before start completes, found files join the start-up set; afterwards each is picked up alone.
  #watchDirectory(directory: DirectoryConfig, startup: DatabaseConfig[]): DirectoryWatch {
    return new DirectoryWatch(directory, {
      logger: this.log,
      rescanIntervalMs: this.#options.rescanIntervalMs ?? 10_000,
      onFound: (file) => {
        if (this.#started) this.#pickUp(directory, file);
        else startup.push(directoryDatabase(directory, file));
      },
      onGone: (file) => void this.#drop(file),
    });
  }

  // Starts replicating a file that appeared in a directory, unless it collides with a database already replicated.
  #pickUp(directory: DirectoryConfig, file: string): void {
    if (this.#stopping || this.#supervisors.has(file)) return;
    let config: DatabaseConfig;
    try {
      config = directoryDatabase(directory, file);
      for (const other of this.#supervisors.values()) {
        checkDistinctDatabases([other.config, config]);
        checkDistinctPrefixes([other.config, config]);
      }
    } catch (err) {
      if (!this.#refused.has(file)) this.log.error({ path: file, err: describeError(err) }, 'database found in directory rejected: its name or replica location collides with a replicated database, which goes on');
      this.#refused.set(file, directory);
      return;
    }

    this.#refused.delete(file);
    this.log.info({ db: config.name, path: file }, 'database found in directory');
    void this.#supervise(config).start();
  }

  // Stops replicating a file that left its directory; its replicas keep what they hold.
  async #drop(file: string): Promise<void> {
    this.#refused.delete(file);
    const supervisor = this.#supervisors.get(file);
    if (supervisor === undefined || this.#stopping) return;

    this.#supervisors.delete(file);
    this.log.info({ db: supervisor.config.name, path: file }, 'database removed from directory, replication stopped; its replicas stay');
    await supervisor.stop().catch((err: unknown) => supervisor.log.warn({ err: describeError(err) }, 'final sync of a removed database failed'));

    // A file rejected for colliding with this one may replicate now.
    for (const [other, directory] of [...this.#refused]) this.#pickUp(directory, other);
  }

  // Stops directory watches and every supervisor; returns the errors of their final syncs.
  async #stopAll(): Promise<unknown[]> {
    this.#stopping = true;
    for (const watch of this.#watches) watch.stop();
    this.#watches = [];
    if (this.#backlogTimer) clearInterval(this.#backlogTimer);
    this.#backlogTimer = undefined;

    const results = await Promise.allSettled(this.supervisors.map((s) => s.stop()));
    return results.filter((r): r is PromiseRejectedResult => r.status === 'rejected').map((r) => r.reason);
  }

  // Ends the ship workers, so that no upload starts or continues, aborts the
  // multipart uploads they left open on each replica, then deletes segments
  // stored past each replica's position.
  async #abortUploads(supervisors: DatabaseSupervisor[]): Promise<void> {
    const pool = this.#pool;
    this.#pool = undefined;
    await pool?.destroy().catch(() => undefined);

    const replicas = supervisors.flatMap((s) => s.entry?.replicas ?? []);
    await Promise.all(
      replicas.map(async (replica) => {
        try {
          const aborted = await replica.client.abortMultipartUploads('');
          if (aborted > 0) replica.log.warn({ aborted }, 'aborted multipart uploads left open by the shutdown');
        } catch (err) {
          replica.log.warn({ err: describeError(err) }, 'cannot abort open multipart uploads');
        }
        await trimPastPosition(replica);
      }),
    );
  }

  // Warns when the shadow WAL grows because a replica cannot keep up or is unreachable.
  async #checkBacklog(): Promise<void> {
    for (const { db, replicas } of this.databases) {
      const bytes = await db.shadowBytes().catch(() => 0);
      if (bytes < SHADOW_WARN_BYTES) continue;
      db.log.warn({ bytes, pos: formatPos(db.pos()), replicas: replicas.map((r) => formatPos(r.pos())).join(',') }, 'shadow wal is growing: a replica is behind or unreachable');
    }
  }
}

/**
 * Deletes the segments a replica stored past its position. Uploads run
 * several at once, so a shutdown that ends them can leave a later segment
 * stored behind a missing one, and restore would stop at that gap. The
 * segments are written again from the shadow WAL at the next start.
 */
async function trimPastPosition(replica: Replica): Promise<void> {
  const pos = replica.pos();
  if (!pos.generation) return;
  try {
    const segments = await listSegments(replica.client, pos.generation);
    const past = segments.filter((s) => s.index > pos.index || (s.index === pos.index && s.offset >= pos.offset));
    if (past.length === 0) return;
    await replica.client.delete(past.map((s) => s.key));
    replica.log.warn({ pos: formatPos(pos), keys: past.map((s) => s.key).join(',') }, 'deleted segments stored past the position at the shutdown timeout');
  } catch (err) {
    replica.log.warn({ pos: formatPos(pos), err: describeError(err) }, 'cannot delete segments stored past the position; the next start deletes them');
  }
}

/** Waits for `work`, but no longer than `ms`. */
async function withDeadline(work: Promise<unknown>, ms: number): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([work.catch(() => undefined), new Promise((resolve) => (timer = setTimeout(resolve, ms)))]);
  clearTimeout(timer);
}

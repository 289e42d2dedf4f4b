import { EventEmitter } from 'node:events';

import type { Config, DatabaseConfig } from './config.js';
import { DEFAULTS } from './config.js';
import type { ReplicatedDatabase } from './database-supervisor.js';
import { WalshipError } from './errors.js';
import type { Logger } from './logger.js';
import { silentLogger } from './logger.js';
import { ZERO_POS } from './pos.js';
import type { Pos } from './pos.js';
import type { Replica } from './replica.js';
import { Replicator } from './replicator.js';
import type { ShutdownReport } from './replicator.js';
import { resolveDatabaseOptions } from './walship-options.js';
import type { DatabaseOptions, DatabaseTarget } from './walship-options.js';
import type { ErrorContext, WalshipEvents } from './walship-events.js';
import { restoreDatabase } from './walship-restore.js';
import type { WalshipRestoreOptions, WalshipRestoreOutcome } from './walship-restore.js';

/** Options of a Walship: the database, its replicas and how the replicator runs. */
export interface WalshipOptions extends DatabaseTarget {
  /** Capture and checkpoint settings of the database; durations in milliseconds. */
  settings?: DatabaseOptions;
  /** Receives walship's log lines, among them `new transaction:` at info for every stored WAL segment. Defaults to a logger that drops everything. */
  logger?: Logger;
  /** Worker threads that compress and upload. Defaults to the number of CPUs, at least 2, at most 8. */
  threads?: number;
  /**
   * Behavior of `start` when the database cannot be opened because it is
   * missing, not SQLite or fails to open. False (the default) rejects with
   * the reason. True resolves and keeps retrying in the background, after
   * 1 s and doubling up to 30 s, as the daemon does. Another walship that
   * replicates the database makes `start` reject either way.
   */
  retry?: boolean;
}

/** Positions of a database and of each replica, by replica name. */
export interface PositionReport {
  /** End of the WAL captured from the database. */
  db: Pos;
  /** End of what each replica stores; the zero position until the replica's first sync. */
  replicas: Record<string, Pos>;
}

/** Options of Walship.close. */
export interface CloseOptions {
  /**
   * Bound of the final sync in ms. Unset waits for the final sync however
   * long it takes. With a bound, close rejects when WAL was left unshipped,
   * naming each replica and its position.
   */
  timeoutMs?: number;
}

/** Options of Walship#restore: those of Walship.restore, with the replica chosen by name among this database's replicas. */
export interface InstanceRestoreOptions extends Omit<WalshipRestoreOptions, 'replica' | 'dbName' | 'env'> {
  /** Name of the replica to read. Defaults to the first replica. */
  replica?: string;
}

/**
 * Replicates one SQLite database to one or more replicas from inside an
 * application. It runs the same Replicator, lock file and replica leases as
 * `walship replicate`, and restores as `walship restore` does.
 *
 * ```ts
 * const walship = await Walship.open({ path: '/data/app.db', replicas: [{ bucket: 'my-bucket' }] });
 * db.prepare('INSERT INTO views (at) VALUES (?)').run(Date.now());
 * await walship.sync();
 * await walship.close();
 * ```
 */
export class Walship extends EventEmitter<WalshipEvents> {
  /** The resolved settings of the database and its replicas. */
  readonly config: DatabaseConfig;
  readonly log: Logger;

  #replicator: Replicator;
  #options: WalshipOptions;
  #entry: ReplicatedDatabase | undefined;
  #state: 'new' | 'starting' | 'open' | 'closed' = 'new';
  #generation = '';

  /** Resolves and checks the options; throws WalshipError INVALID_INPUT naming the option at fault. Nothing runs before `start`. */
  constructor(options: WalshipOptions) {
    super();
    this.#options = options;
    this.config = resolveDatabaseOptions(options, options.settings);
    this.log = options.logger ?? silentLogger();

    const config: Config = { dbs: [this.config], logLevel: DEFAULTS.logLevel, logFormat: DEFAULTS.logFormat };
    this.#replicator = new Replicator(config, { logger: this.log, threads: options.threads });
    this.#replicator.on('added', (entry) => this.#attach(entry));
  }

  /**
   * Creates a Walship and starts it; see `start`. The first snapshot may be
   * stored before this resolves: to receive its event, call `new Walship`,
   * attach listeners, then `start`.
   */
  static async open(options: WalshipOptions): Promise<Walship> {
    const walship = new Walship(options);
    await walship.start();
    return walship;
  }

  /** Restores a database from a replica into a new file; see WalshipRestoreOptions for the forms and cases. */
  static restore(options: WalshipRestoreOptions): Promise<WalshipRestoreOutcome> {
    return restoreDatabase(options);
  }

  /** Sanitized database name, the folder `databases/<name>` of a bucket replica. */
  get name(): string {
    return this.config.name;
  }

  /** True between a successful `start` and `close`, while the database is open and replicating. */
  get isOpen(): boolean {
    return this.#state === 'open' && this.#replicator.supervisors[0]?.state === 'running';
  }

  /**
   * Opens the database, takes its lock file and each replica's lease, and
   * starts shipping. Rejects with LOCKED or LEASE_HELD when another walship
   * replicates the database, and, without `retry`, with the reason the
   * database cannot be opened (NOT_FOUND for a missing file).
   */
  async start(): Promise<void> {
    if (this.#state !== 'new') throw new WalshipError('INVALID_INPUT', `walship of database ${this.config.path} was started already; create a new Walship to start again`);
    this.#state = 'starting';

    try {
      await this.#replicator.start();
    } catch (err) {
      this.#state = 'closed';
      throw err;
    }

    const supervisor = this.#replicator.supervisors[0]!;
    if (supervisor.state !== 'running' && !this.#options.retry) {
      const reason = supervisor.lastError ?? new WalshipError('NOT_FOUND', `database ${this.config.path} could not be opened`);
      await this.#replicator.stop().catch(() => undefined);
      this.#state = 'closed';
      throw reason;
    }
    this.#state = 'open';
  }

  /**
   * Captures every committed transaction and ships it to every replica now,
   * without waiting for the sync interval. Resolves with the positions once
   * every replica's store has confirmed them; rejects with the first failure.
   */
  async sync(): Promise<PositionReport> {
    this.#checkOpen('sync');
    await this.#replicator.sync();
    return this.position();
  }

  /**
   * Ships what is captured, then stores a new snapshot of the database on
   * every replica whose current WAL index has none yet, and returns how many
   * were written. A replica that has one gets none, so that no point in time
   * is lost: the next write starts a new index for the next snapshot.
   */
  async snapshot(): Promise<number> {
    this.#checkOpen('snapshot');
    return this.#replicator.snapshot();
  }

  /**
   * Returns the position of the database and of each replica. After `close`
   * it returns the final positions; before the database first opened, zero
   * positions.
   */
  position(): PositionReport {
    const entry = this.#entry;
    const replicas: Record<string, Pos> = {};
    for (const config of this.config.replicas) {
      const replica = entry?.replicas.find((r) => r.name === config.name);
      replicas[config.name] = replica?.pos() ?? ZERO_POS;
    }
    return { db: entry?.db.pos() ?? ZERO_POS, replicas };
  }

  /**
   * Restores this database from one of its replicas into a new file, by
   * default the newest state the replica stores. Call `sync` first to include
   * the latest transactions.
   */
  restore(options: InstanceRestoreOptions): Promise<WalshipRestoreOutcome> {
    const { replica: name, ...rest } = options;
    const replica = name === undefined ? this.config.replicas[0] : this.config.replicas.find((r) => r.name === name);
    if (replica === undefined) {
      const names = this.config.replicas.map((r) => r.name).join(', ');
      throw new WalshipError('INVALID_INPUT', `database ${this.config.path} has no replica named "${name}"; its replicas: ${names}`);
    }
    return restoreDatabase({ ...rest, replica, dbName: this.config.name });
  }

  /**
   * Stops replication: captures what is committed, ships it to every
   * replica, releases the leases and the lock file, and closes walship's
   * connections. The application's own connections stay open. Rejects with
   * the first failure of the final sync, after closing the rest.
   */
  async close(options: CloseOptions = {}): Promise<void> {
    if (this.#state === 'closed') return;
    this.#state = 'closed';

    if (options.timeoutMs === undefined) {
      await this.#replicator.stop();
      return;
    }
    const report = await this.#replicator.shutdown(options.timeoutMs);
    if (!report.complete) throw unshippedError(this.config, report, options.timeoutMs);
  }

  #checkOpen(operation: string): void {
    if (this.#state === 'closed') {
      throw new WalshipError('NOT_FOUND', `cannot ${operation}: walship of database ${this.config.path} is closed; create a new Walship to replicate it again`);
    }
    if (this.#state !== 'open') {
      throw new WalshipError('NOT_FOUND', `cannot ${operation}: walship of database ${this.config.path} is not started; call start() first and wait for it`);
    }
  }

  // Forwards the events of the database and its replicas once the replicator has opened them.
  #attach(entry: ReplicatedDatabase): void {
    this.#entry = entry;
    const { db } = entry;
    this.#generation = db.pos().generation;

    db.on('generation', (generation, reason) => {
      const previous = this.#generation;
      this.#generation = generation;
      this.emit('generation', { db: db.name, generation, previous, reason });
    });
    db.on('sync', (_elapsedMs, err) => {
      if (err !== undefined) this.#emitError(err, { db: db.name });
    });
    for (const replica of entry.replicas) this.#attachReplica(replica);
  }

  #attachReplica(replica: Replica): void {
    const db = replica.db;
    replica.on('shipped', (pre: Pos, post: Pos, bytes: number, elapsedMs: number) => {
      const captured = db.capturedAt(pre);
      const lagMs = captured === undefined ? 0 : Math.max(0, Date.now() - captured);
      this.emit('transaction', { db: db.name, replica: replica.name, pre, post, bytes, elapsedMs, lagMs });
    });
    replica.on('snapshot', (generation, index, bytes) => {
      this.emit('snapshot', { db: db.name, replica: replica.name, generation, index, bytes });
    });
    replica.on('error', (err) => this.#emitError(err, { db: db.name, replica: replica.name }));
  }

  // An 'error' event without a listener would end the process, and these failures are retried and logged anyway.
  #emitError(err: Error, context: ErrorContext): void {
    if (this.listenerCount('error') > 0) this.emit('error', err, context);
  }
}

/** Builds the error of a close whose deadline passed with WAL left unshipped. */
function unshippedError(config: DatabaseConfig, report: ShutdownReport, timeoutMs: number): Error {
  const behind = report.unshipped.flatMap((u) => u.replicas.map((r) => `${r.replica} at ${r.pos} of ${u.pos}`));
  const failure = report.timedOut ? `the final sync did not finish within ${timeoutMs}ms` : 'the final sync failed';
  const detail = behind.length > 0 ? `; replicas behind: ${behind.join(', ')}` : '';
  return new Error(`closing walship of database ${config.name} (${config.path}): ${failure}${detail}; the WAL stays in ${config.metaPath} and ships at the next start`);
}

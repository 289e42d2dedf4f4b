import type { Config } from './config.js';
import { DB } from './db.js';
import { describeError } from './errors.js';
import { checkDistinctDatabases, checkDistinctPrefixes } from './naming.js';
import type { Logger } from './logger.js';
import { silentLogger } from './logger.js';
import { ShipPool } from './pool.js';
import { Replica } from './replica.js';

/** Options of a Replicator. */
export interface ReplicatorOptions {
  logger?: Logger;
  /** Worker threads of the ship pool; see ShipPoolOptions. */
  threads?: number;
}

// Shadow WAL size past which walship warns that a replica is falling behind.
const SHADOW_WARN_BYTES = 256 * 1024 * 1024;
const SHADOW_CHECK_MS = 30_000;

/** A database with its replicas, as the replicator runs it. */
export interface ReplicatedDatabase {
  db: DB;
  replicas: Replica[];
}

/**
 * Runs replication for every database of a config in one process: one DB per
 * database, one Replica per replica, and one shared pool of ship workers.
 */
export class Replicator {
  readonly config: Config;
  readonly log: Logger;
  readonly databases: ReplicatedDatabase[] = [];

  #pool: ShipPool | undefined;
  #threads: number | undefined;
  #watchTimer: NodeJS.Timeout | undefined;

  constructor(config: Config, options: ReplicatorOptions = {}) {
    this.config = config;
    this.log = options.logger ?? silentLogger();
    this.#threads = options.threads;
  }

  /**
   * Opens every database and starts shipping. A database that cannot be opened
   * (missing, not SQLite, locked) stops the start with its error, after closing
   * what was already opened.
   */
  async start(): Promise<void> {
    // Two databases writing to one prefix would interleave their generations.
    checkDistinctDatabases(this.config.dbs);
    checkDistinctPrefixes(this.config.dbs);

    this.#pool = new ShipPool({ threads: this.#threads });
    try {
      for (const dbConfig of this.config.dbs) {
        const db = new DB(dbConfig, this.log);
        await db.open();
        const replicas = dbConfig.replicas.map((rc) => new Replica(db, rc, this.#pool!, this.log));
        this.databases.push({ db, replicas });

        for (const replica of replicas) {
          replica.on('shipped', () => this.#removeShipped(db, replicas));
          replica.start();
        }
        this.log.info({ db: db.name, replicas: replicas.map((r) => `${r.name}=${r.client.location}`).join(',') }, 'replicating');
      }
    } catch (err) {
      await this.stop();
      throw err;
    }

    this.#watchTimer = setInterval(() => void this.#checkBacklog(), SHADOW_CHECK_MS);
    this.#watchTimer.unref();
  }

  /**
   * Stops every database: captures what is committed, ships it, and closes the
   * connections. Keeps the first error and still closes the rest.
   */
  async stop(): Promise<void> {
    if (this.#watchTimer) clearInterval(this.#watchTimer);
    this.#watchTimer = undefined;

    let first: unknown;
    for (const { db, replicas } of this.databases) {
      // Capture stops first, so the replicas' final ship covers every frame
      // the database will ever capture in this run.
      try {
        await db.stopCapture();
      } catch (err) {
        first ??= err;
        this.log.error({ db: db.name, err: describeError(err) }, 'final sync failed');
      }
      for (const replica of replicas) {
        try {
          await replica.stop();
        } catch (err) {
          first ??= err;
          this.log.error({ db: db.name, replica: replica.name, pos: replica.pos(), err: describeError(err) }, 'final replica sync failed');
        }
      }
      await db.close().catch((err: unknown) => {
        first ??= err;
      });
    }
    this.databases.length = 0;
    await this.#pool?.close();
    this.#pool = undefined;
    if (first) throw first;
  }

  /** Ships every database's captured WAL now, waiting for the stores to confirm it. */
  async sync(): Promise<void> {
    for (const { db, replicas } of this.databases) {
      await db.sync();
      for (const replica of replicas) await replica.sync();
    }
  }

  // Deletes shadow WAL indexes that every replica has shipped.
  #removeShipped(db: DB, replicas: Replica[]): void {
    const generation = db.pos().generation;
    const minIndex = Math.min(...replicas.map((r) => (r.pos().generation === generation ? r.pos().index : 0)));
    if (minIndex > 0) db.removeShippedShadows(minIndex).catch((err: unknown) => db.log.warn({ err: describeError(err) }, 'cannot remove shipped shadow wal'));
  }

  // Warns when the shadow WAL grows because a replica cannot keep up or is unreachable.
  async #checkBacklog(): Promise<void> {
    for (const { db, replicas } of this.databases) {
      const bytes = await db.shadowBytes().catch(() => 0);
      if (bytes < SHADOW_WARN_BYTES) continue;
      db.log.warn({ bytes, pos: db.pos(), replicas: replicas.map((r) => r.pos()) }, 'shadow wal is growing: a replica is behind or unreachable');
    }
  }
}

import type { DatabaseConfig } from './config.js';
import type { DB } from './db.js';
import { describeError } from './errors.js';
import type { ReplicatedDatabase } from './replicator.js';

/** Smallest default max-lag, in ms. */
export const MIN_DEFAULT_MAX_LAG_MS = 10_000;

/** Sync intervals of the slowest replica that make up the default max-lag. */
export const MAX_LAG_SYNC_INTERVALS = 5;

/**
 * Returns the default max-lag of a database in ms: 10 s or 5 sync intervals
 * of its slowest replica, whichever is longer.
 */
export function defaultMaxLag(dbConfig: Pick<DatabaseConfig, 'replicas'>): number {
  const slowest = Math.max(0, ...dbConfig.replicas.map((r) => r.syncInterval));
  return Math.max(MIN_DEFAULT_MAX_LAG_MS, MAX_LAG_SYNC_INTERVALS * slowest);
}

/** Returns a database's max-lag in ms: its `max-lag` setting when positive, else `defaultMaxLag`. */
export function maxLagOf(dbConfig: Pick<DatabaseConfig, 'replicas' | 'maxLag'>): number {
  const configured = dbConfig.maxLag;
  return typeof configured === 'number' && configured > 0 ? configured : defaultMaxLag(dbConfig);
}

/** One replica of a database past its max-lag, as /healthz reports it. */
export interface ReplicaHealth {
  db: string;
  replica: string;
  lagSeconds: number;
  maxLagSeconds: number;
  /** Message of the last failed replica sync or database capture; null when the last ones succeeded. */
  error: string | null;
}

/** One replica that has not completed a sync yet, as /readyz reports it. */
export interface ReplicaReadiness {
  db: string;
  replica: string;
  /** Message of the last failed sync; null when none failed. */
  error: string | null;
}

/** Outcome of a health or readiness check: ok, or the replicas that fail it. */
export interface CheckResult<T> {
  ok: boolean;
  failing: T[];
}

/** The part of a Replicator that health checks read: its current databases. */
export interface DatabaseSource {
  readonly databases: readonly ReplicatedDatabase[];
}

// Start of the current run of failed captures of a database, with the last error.
interface CaptureFailure {
  since: number;
  error: string;
}

/**
 * Liveness and readiness of replication, read from a Replicator's databases
 * at each check.
 *
 * A replica is healthy while its replication lag is within its database's
 * max-lag. The lag counts from the capture of the oldest frame the store has
 * not confirmed, so it grows while the store is unreachable and writes go on.
 * A database whose capture fails (for example a WAL that cannot be read) adds
 * the time since the first failure of that run to the lag of its replicas,
 * because frames committed meanwhile are not captured yet.
 */
export class Health {
  #source: DatabaseSource;
  #captureFailures = new WeakMap<DB, CaptureFailure | null>();

  constructor(source: DatabaseSource) {
    this.#source = source;
    for (const rd of source.databases) this.#track(rd);
  }

  /** Checks every replica of every database against its database's max-lag. */
  check(now = Date.now()): CheckResult<ReplicaHealth> {
    const failing: ReplicaHealth[] = [];
    for (const rd of this.#source.databases) {
      this.#track(rd);
      const maxLag = maxLagOf(rd.db.config);
      const capture = this.#captureFailures.get(rd.db) ?? null;
      const captureLag = capture ? now - capture.since : 0;

      for (const replica of rd.replicas) {
        const lag = Math.max(replica.lagMs(now), captureLag);
        if (lag <= maxLag) continue;
        const error = replica.lastError ? describeError(replica.lastError) : capture ? `capture failed: ${capture.error}` : null;
        failing.push({ db: rd.db.name, replica: replica.name, lagSeconds: lag / 1000, maxLagSeconds: maxLag / 1000, error });
      }
    }
    return { ok: failing.length === 0, failing };
  }

  /** Checks that every replica of every database has completed a sync. */
  readiness(): CheckResult<ReplicaReadiness> {
    const failing: ReplicaReadiness[] = [];
    for (const rd of this.#source.databases) {
      this.#track(rd);
      for (const replica of rd.replicas) {
        if (replica.synced) continue;
        failing.push({ db: rd.db.name, replica: replica.name, error: replica.lastError ? describeError(replica.lastError) : null });
      }
    }
    return { ok: failing.length === 0, failing };
  }

  // Starts following a database's captures and its replicas' confirmed positions, once.
  #track(rd: ReplicatedDatabase): void {
    const db = rd.db;
    if (this.#captureFailures.has(db)) return;
    this.#captureFailures.set(db, null);
    db.on('sync', (_elapsedMs, err) => {
      if (!err) this.#captureFailures.set(db, null);
      else this.#captureFailures.set(db, { since: this.#captureFailures.get(db)?.since ?? Date.now(), error: describeError(err) });
    });
  }
}

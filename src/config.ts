import type { ReplicaClientConfig } from './replica/client.js';

/**
 * Resolved settings of walship: defaults, then the config file, then flags.
 * Durations are in milliseconds. Keys of the YAML file keep Litestream's
 * spellings (`sync-interval`, `min-checkpoint-page-count`, ...).
 */
export interface Config {
  dbs: DatabaseConfig[];
  /** Address of the metrics and health server (`addr:` or `-addr`); unset means off. */
  addr?: string;
  logLevel: string;
  logFormat: 'text' | 'json';
}

/** Settings of one replicated database. */
export interface DatabaseConfig {
  /** Absolute path of the database file. */
  path: string;
  /** Sanitized name: folder `databases/<name>/` and the `db=` field of logs. */
  name: string;
  /** Directory of walship's local state; defaults to `<dir>/.<file>-walship`. */
  metaPath: string;
  /** How often the WAL is checked for new frames when no file event arrives. Default 1000 ms... see DEFAULTS. */
  monitorInterval: number;
  /** PASSIVE checkpoint when nothing was checkpointed for this long and the WAL holds frames. 0 turns it off. */
  checkpointInterval: number;
  /** PASSIVE checkpoint once the WAL holds this many pages. */
  minCheckpointPageCount: number;
  /** RESTART checkpoint once the WAL holds this many pages; 0 turns it off. */
  maxCheckpointPageCount: number;
  /** How long walship's own SQLite statements wait for a lock. */
  busyTimeout: number;
  replicas: ReplicaConfig[];
}

/** Settings of one replica of a database. */
export interface ReplicaConfig {
  /** Replica name, unique per database; defaults to the replica type (`s3`, `file`). */
  name: string;
  client: ReplicaClientConfig;
  /** How often new WAL is shipped. 0 ships as soon as a transaction commits. */
  syncInterval: number;
  /** How long snapshots and WAL are kept; 0 keeps everything. */
  retention: number;
  /** How often retention runs. */
  retentionCheckInterval: number;
  /** Time between periodic snapshots; 0 means only when a generation starts. */
  snapshotInterval: number;
}

/** Default values, as Litestream v0.3 defines them unless noted. */
export const DEFAULTS = Object.freeze({
  // walship watches the WAL file and polls as a fallback; Litestream polls every 1 s.
  monitorInterval: 100,
  checkpointInterval: 60_000,
  minCheckpointPageCount: 1000,
  maxCheckpointPageCount: 10000,
  busyTimeout: 1000,
  syncInterval: 1000,
  retention: 24 * 3600_000,
  retentionCheckInterval: 3600_000,
  snapshotInterval: 0,
  logLevel: 'info',
  logFormat: 'text' as const,
});

/**
 * walship's library API: replicate SQLite databases in the Litestream v0.3
 * replica format and restore them.
 *
 * Walship replicates one database from inside an application. Replicator
 * runs every database of a Config, as `walship replicate` does.
 */
export { Walship } from './walship.js';
export type { CloseOptions, InstanceRestoreOptions, PositionReport, WalshipOptions } from './walship.js';
export type { ErrorContext, GenerationEvent, SnapshotEvent, TransactionEvent, WalshipEvents } from './walship-events.js';
export { describeLocation, resolveDatabaseOptions } from './walship-options.js';
export type {
  BucketReplicaOptions,
  DatabaseOptions,
  DatabaseTarget,
  Duration,
  ReplicaSettings,
  ReplicaSpec,
  UrlReplicaOptions,
} from './walship-options.js';
export type { WalshipRestoreOptions, WalshipRestoreOutcome } from './walship-restore.js';
export { Replicator } from './replicator.js';
export type { ReplicatorOptions, ReplicatedDatabase, ShutdownReport, SyncResult } from './replicator.js';
export { DB } from './db.js';
export { Replica } from './replica.js';
export { restore, DEFAULT_RESTORE_PARALLELISM } from './restore.js';
export type { RestoreOptions, RestoreProgress, RestoreResult } from './restore.js';
export { DEFAULTS, loadConfigFile, parseConfig, resolveConfig } from './config.js';
export type { Config, DatabaseConfig, DatabaseSettings, ReplicaConfig, RetentionMode } from './config.js';
export type { ReplicaClient, ReplicaClientConfig, FileClientConfig, S3ClientConfig } from './replica/client.js';
export { createReplicaClient } from './replica/create.js';
export { sanitizeName, nameFromPath, databasePrefix } from './naming.js';
export { formatPos } from './pos.js';
export type { Pos } from './pos.js';
export { WalshipError } from './errors.js';
export type { WalshipErrorCode } from './errors.js';
export { createLogger } from './logger.js';
export type { Logger, LoggerOptions } from './logger.js';

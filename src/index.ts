/**
 * walship's library API: replicate SQLite databases in the Litestream v0.3
 * replica format and restore them.
 */
export { Replicator } from './replicator.js';
export type { ReplicatorOptions, ReplicatedDatabase } from './replicator.js';
export { DB } from './db.js';
export { Replica } from './replica.js';
export { restore, DEFAULT_RESTORE_PARALLELISM } from './restore.js';
export type { RestoreOptions, RestoreResult } from './restore.js';
export { DEFAULTS, loadConfigFile, parseConfig } from './config.js';
export type { Config, DatabaseConfig, ReplicaConfig } from './config.js';
export type { ReplicaClient, ReplicaClientConfig, FileClientConfig, S3ClientConfig } from './replica/client.js';
export { createReplicaClient } from './replica/create.js';
export { sanitizeName, nameFromPath, databasePrefix } from './naming.js';
export { formatPos } from './pos.js';
export type { Pos } from './pos.js';
export { WalshipError } from './errors.js';
export type { WalshipErrorCode } from './errors.js';
export { createLogger } from './logger.js';
export type { Logger, LoggerOptions } from './logger.js';

import path from 'node:path';

import { resolveConfig } from './config.js';
import type { DatabaseConfig, DatabaseSettings, ReplicaConfig, RetentionMode } from './config.js';
import type { Env } from './config-replica.js';
import { WalshipError } from './errors.js';
import { checkDistinctPrefixes, nameFromPath, sanitizeName } from './naming.js';
import { urlScheme } from './replica-url.js';
import type { ReplicaClientConfig } from './replica/client.js';

/**
 * Replica options of the library API and their resolution into the
 * DatabaseConfig that the Replicator runs. Everything goes through
 * resolveConfig, as the CLI's flags do, so defaults, credentials from the
 * environment and error messages are the same as on the command line.
 */

/** A duration in milliseconds, or as Go writes it: `500ms`, `1s`, `1h30m`. */
export type Duration = number | string;

/** Settings that every replica form accepts. Unset values take the defaults of the config file (see DEFAULTS). */
export interface ReplicaSettings {
  /** Replica name, unique per database. Defaults to its type (`s3`, `file`), with its position added for a second one of a type (`s32`). */
  name?: string;
  /** How often new WAL is shipped; 0 ships as soon as a transaction commits. Defaults to 1 s. */
  syncInterval?: Duration;
  /** How long snapshots and WAL are kept; 0 keeps everything. Defaults to 24 h. */
  retention?: Duration;
  /** How often retention runs. Defaults to 1 h. */
  retentionCheckInterval?: Duration;
  /** Time between periodic snapshots; 0 takes them only when a generation starts or retention needs one. Defaults to 0. */
  snapshotInterval?: Duration;
  /** `delete` removes expired objects, `lifecycle` only logs the bucket rule that would expire them. Defaults to `delete`. */
  retentionMode?: RetentionMode;
}

/** A replica given by URL: `s3://BUCKET/PATH?endpoint=URL`, `file:///DIR` or a directory path, used exactly as given. */
export interface UrlReplicaOptions extends ReplicaSettings {
  url: string;
}

/**
 * An S3 replica given as the CLI's `-bucket NAME` form: without `path` it
 * lives under `databases/<db name>/` of the bucket. Credentials default to
 * LITESTREAM_ACCESS_KEY_ID and LITESTREAM_SECRET_ACCESS_KEY, then
 * AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and AWS_SESSION_TOKEN, then the
 * AWS SDK's default chain.
 */
export interface BucketReplicaOptions extends ReplicaSettings {
  bucket: string;
  /** Key prefix inside the bucket. Defaults to `databases/<db name>`. */
  path?: string;
  /** URL of an S3-compatible store, e.g. `http://127.0.0.1:9000`. Unset means AWS S3. */
  endpoint?: string;
  /** Region. Defaults to the AWS SDK chain, or us-east-1 with an endpoint. */
  region?: string;
  /** Path-style URLs (`endpoint/bucket/key`). Defaults to true with an endpoint, false without. */
  forcePathStyle?: boolean;
  /** Accept any TLS certificate from the endpoint. */
  skipVerify?: boolean;
  /** Static credentials; set both or neither. */
  accessKeyId?: string;
  secretAccessKey?: string;
}

/**
 * One replica of a database: a replica URL, a bucket in the CLI's `-bucket`
 * form, or a fully resolved ReplicaConfig (taken as it is, without defaults).
 */
export type ReplicaSpec = string | UrlReplicaOptions | BucketReplicaOptions | ReplicaConfig;

/** Settings of the replicated database itself; durations in milliseconds, unset means DEFAULTS. */
export type DatabaseOptions = Partial<DatabaseSettings>;

/** Database file, name and replicas, as Walship's options give them. */
export interface DatabaseTarget {
  /** Path of the database file. */
  path: string;
  /** Database name: the folder `databases/<name>` and the `db=` field of log lines. Sanitized; defaults to the file's name without its extension. */
  dbName?: string;
  replicas: ReplicaSpec[];
  /** Directory of walship's local state. Defaults to `<dir>/.<file>-walship`. */
  metaPath?: string;
  /** Environment that credentials are read from. Defaults to process.env. */
  env?: Env;
}

/** Source named in the messages of invalid options. */
const SOURCE = 'walship options';

// Keys of DatabaseSettings that may be overridden, each a non-negative number.
const SETTING_KEYS = ['monitorInterval', 'checkpointInterval', 'minCheckpointPageCount', 'maxCheckpointPageCount', 'busyTimeout', 'maxLag'] as const;

/**
 * Resolves a database target into the DatabaseConfig that the Replicator
 * runs, with defaults applied and checked as the config file is. Throws
 * WalshipError INVALID_INPUT naming the option at fault.
 */
export function resolveDatabaseOptions(target: DatabaseTarget, settings: DatabaseOptions = {}): DatabaseConfig {
  if (typeof target.path !== 'string' || target.path === '') {
    throw new WalshipError('INVALID_INPUT', 'path is missing; give the database file to replicate, e.g. { path: "/data/app.db" }');
  }
  const dbPath = path.resolve(target.path);
  if (!Array.isArray(target.replicas) || target.replicas.length === 0) {
    throw new WalshipError('INVALID_INPUT', `database ${dbPath} has no replicas; give at least one, e.g. replicas: [{ bucket: "my-bucket" }] or ["file:///backups"]`);
  }

  // Entries in the config file's spelling go through resolveConfig; full ReplicaConfigs keep their place.
  const names = defaultNames(target.replicas);
  const entries = target.replicas.map((spec, i) => (isReplicaConfig(spec) ? undefined : replicaEntry(spec, names[i]!)));
  const raw = entries.filter((entry) => entry !== undefined);
  const dbEntry = { path: dbPath, name: target.dbName, 'meta-path': target.metaPath, replicas: raw };
  const db = resolveConfig({ dbs: [dbEntry] }, SOURCE, { env: target.env }).dbs[0]!;

  const resolved = [...db.replicas];
  db.replicas = target.replicas.map((spec) => (isReplicaConfig(spec) ? spec : resolved.shift()!));
  checkReplicaNames(db);
  checkDistinctPrefixes([db]);
  applySettings(db, settings);
  return db;
}

/**
 * Resolves one replica of a database that is not open, for a restore: a
 * bucket's prefix uses `dbName`, else the name of `dbPath`.
 */
export function resolveReplicaOptions(spec: ReplicaSpec, dbPath: string, dbName: string | undefined, env?: Env): { replica: ReplicaConfig; dbName: string } {
  const name = dbName === undefined ? nameFromPath(dbPath) : sanitizeName(dbName);
  if (isReplicaConfig(spec)) return { replica: spec, dbName: name };
  const db = resolveDatabaseOptions({ path: dbPath, dbName: name, replicas: [spec], env });
  return { replica: db.replicas[0]!, dbName: db.name };
}

/** Returns a replica client's location as logs and listings show it: `s3://bucket/prefix` or `file:///dir`. */
export function describeLocation(client: ReplicaClientConfig): string {
  return client.type === 's3' ? `s3://${client.bucket}/${client.prefix}` : `file://${client.root}`;
}

/** Reports whether a replica spec is a resolved ReplicaConfig. */
function isReplicaConfig(spec: ReplicaSpec): spec is ReplicaConfig {
  return typeof spec === 'object' && spec !== null && 'client' in spec;
}

/** Names each replica as the CLI does: its type, or the type and position for a second replica of that type. */
function defaultNames(specs: readonly ReplicaSpec[]): string[] {
  const types = specs.map((spec) => {
    if (isReplicaConfig(spec)) return spec.name;
    if (typeof spec === 'string') return urlScheme(spec) ?? 'file';
    if ('url' in spec) return urlScheme(spec.url) ?? 'file';
    return 's3';
  });
  return types.map((type, i) => (types.indexOf(type) === i ? type : `${type}${i + 1}`));
}

/** Turns a URL or bucket spec into a replica entry with the config file's keys. */
function replicaEntry(spec: string | UrlReplicaOptions | BucketReplicaOptions, defaultName: string): Record<string, unknown> {
  if (typeof spec === 'string') return { url: spec, name: defaultName };
  if (typeof spec !== 'object' || spec === null) {
    throw new WalshipError('INVALID_INPUT', `replica ${JSON.stringify(spec)} is not a replica; give a URL, { url }, { bucket } or a ReplicaConfig`);
  }

  const common = {
    name: spec.name ?? defaultName,
    'sync-interval': duration(spec.syncInterval),
    retention: duration(spec.retention),
    'retention-check-interval': duration(spec.retentionCheckInterval),
    'snapshot-interval': duration(spec.snapshotInterval),
    'retention-mode': spec.retentionMode,
  };
  if ('url' in spec) return { url: spec.url, ...common };
  return {
    type: 's3',
    bucket: spec.bucket,
    path: spec.path,
    endpoint: spec.endpoint,
    region: spec.region,
    'force-path-style': spec.forcePathStyle,
    'skip-verify': spec.skipVerify,
    'access-key-id': spec.accessKeyId,
    'secret-access-key': spec.secretAccessKey,
    ...common,
  };
}

/** Writes a duration as the config file's parser reads it: milliseconds get the `ms` unit. */
function duration(value: Duration | undefined): string | undefined {
  if (value === undefined) return undefined;
  return typeof value === 'number' ? `${value}ms` : value;
}

/** Rejects two replicas of one database with the same name. */
function checkReplicaNames(db: DatabaseConfig): void {
  const seen = new Set<string>();
  for (const replica of db.replicas) {
    if (seen.has(replica.name)) {
      throw new WalshipError('INVALID_INPUT', `database ${db.path} has two replicas named "${replica.name}"; give each replica a distinct name`);
    }
    seen.add(replica.name);
  }
}

/** Applies database settings over the defaults, each a finite number of at least 0 (1 for minCheckpointPageCount). */
function applySettings(db: DatabaseConfig, settings: DatabaseOptions): void {
  for (const key of SETTING_KEYS) {
    const value = settings[key];
    if (value === undefined) continue;
    // A threshold of 0 pages would checkpoint at every sync; the config file's min-checkpoint-page-count rejects it too.
    const min = key === 'minCheckpointPageCount' ? 1 : 0;
    if (typeof value !== 'number' || !Number.isFinite(value) || value < min) {
      throw new WalshipError('INVALID_INPUT', `${key} ${JSON.stringify(value)} of database ${db.path} is invalid; give a number of at least ${min}`);
    }
    db[key] = value;
  }
}

import os from 'node:os';

import { DEFAULTS, RETENTION_MODES } from './config.js';
import type { ReplicaConfig, RetentionMode } from './config.js';
import type { ConfigFields } from './config-fields.js';
import type { Logger } from './logger.js';
import { databasePrefix, validatePrefix } from './naming.js';
import { normalizeEndpoint, parseReplicaUrl, redactUrl, SUPPORTED_SCHEMES, urlScheme } from './replica-url.js';
import type { FileClientConfig, S3ClientConfig } from './replica/client.js';

/**
 * Resolution of one `replicas:` entry of the config file into a ReplicaConfig:
 * its type, client location, credentials and intervals.
 */

/** Environment variables read for credentials. */
export type Env = Readonly<Record<string, string | undefined>>;

/** Values a replica entry inherits from the top level of the config file. */
export interface ReplicaDefaults {
  accessKeyId?: string;
  secretAccessKey?: string;
  env: Env;
  logger?: Logger;
}

// Keys of every replica entry, and the keys of s3 replicas on top.
const COMMON_KEYS = ['type', 'name', 'url', 'path', 'sync-interval', 'retention', 'retention-check-interval', 'retention-mode', 'snapshot-interval', 'lease-ttl'];

// Shortest lease-ttl: a renewal every third of it must stay well above one request's time.
const MIN_LEASE_TTL = 3000;
const S3_KEYS = ['bucket', 'region', 'endpoint', 'force-path-style', 'skip-verify', 'access-key-id', 'secret-access-key'];

/**
 * Keys Litestream v0.3 defines that walship accepts without acting on them:
 * `validation-interval`, the period of a restore-and-compare check. A warning reports that the check is off.
 */
export const ACCEPTED_REPLICA_KEYS: readonly string[] = ['validation-interval'];

// Keys of Litestream's abs and sftp replicas, which walship does not write to.
const OTHER_TYPE_KEYS = ['account-name', 'account-key', 'host', 'user', 'password', 'key-path'];

/**
 * Resolves one replica entry of a database. `dbName` is the sanitized
 * database name, used for the `databases/<name>` prefix of an s3 replica
 * given a bucket without a path. It is undefined for a directory entry: a
 * bucket without a path is then the bucket root, and each database of the
 * directory adds `databases/<name>` itself.
 *
 * Throws WalshipError INVALID_INPUT naming the key, the replica and the database.
 */
export function resolveReplica(fields: ConfigFields, dbName: string | undefined, defaults: ReplicaDefaults): ReplicaConfig {
  const type = replicaType(fields);
  const name = fields.string('name') ?? type;

  rejectUnsupportedKeys(fields, type);
  const client = type === 's3' ? s3Client(fields, dbName, defaults) : fileClient(fields);

  const replica: ReplicaConfig = {
    name,
    client,
    syncInterval: fields.duration('sync-interval') ?? DEFAULTS.syncInterval,
    retention: fields.duration('retention') ?? DEFAULTS.retention,
    retentionCheckInterval: fields.duration('retention-check-interval') ?? DEFAULTS.retentionCheckInterval,
    snapshotInterval: fields.duration('snapshot-interval') ?? DEFAULTS.snapshotInterval,
    retentionMode: retentionMode(fields),
  };
  const leaseTtl = fields.duration('lease-ttl');
  if (leaseTtl !== undefined) {
    if (leaseTtl < MIN_LEASE_TTL) throw fields.error(`lease-ttl ${leaseTtl}ms is too short; use at least 3s`);
    replica.leaseTtl = leaseTtl;
  }
  // A zero check interval would run retention without pause, so it is rejected with the key named.
  if (replica.retention > 0 && replica.retentionCheckInterval === 0) {
    throw fields.error('retention-check-interval is 0 while retention is on; use a positive duration, or set retention: 0 to keep everything');
  }

  const validation = fields.duration('validation-interval');
  if (validation !== undefined && validation > 0) {
    defaults.logger?.warn({ replica: name }, `${fields.where}: validation-interval is accepted but walship does not validate replicas; the key has no effect`);
  }

  fields.rejectUnknown(ACCEPTED_REPLICA_KEYS, `; replica keys are ${[...COMMON_KEYS, ...S3_KEYS].join(', ')}`);
  return replica;
}

/** Reads `retention-mode`: `delete` (the default) or `lifecycle`. */
function retentionMode(fields: ConfigFields): RetentionMode {
  const mode = fields.string('retention-mode')?.toLowerCase();
  if (mode === undefined) return DEFAULTS.retentionMode;
  if (!(RETENTION_MODES as readonly string[]).includes(mode)) {
    throw fields.error(`retention-mode "${mode}" is not a retention mode; use delete, or lifecycle to leave deletion to a bucket lifecycle rule`);
  }
  return mode as RetentionMode;
}

/**
 * Returns the replica type: the URL scheme, else `type:`, else `file`, as
 * Litestream decides it. Rejects types other than s3 and file.
 */
function replicaType(fields: ConfigFields): 's3' | 'file' {
  const url = fields.string('url');
  const fromUrl = url === undefined ? undefined : (urlScheme(url) ?? 'file');
  const declared = fields.string('type')?.toLowerCase();

  if (fromUrl !== undefined && declared !== undefined && fromUrl !== declared) {
    throw fields.error(`type "${declared}" does not match the scheme of url ${redactUrl(url!)}; remove type or fix the url`);
  }

  const type = fromUrl ?? declared ?? 'file';
  if (type !== 's3' && type !== 'file') {
    throw fields.error(
      `replica type "${type}" is not supported; walship writes to ${SUPPORTED_SCHEMES.join(' and ')} replicas ` +
        '(s3 covers AWS S3 and S3-compatible stores such as MinIO, R2 and B2)',
    );
  }
  return type;
}

/** Rejects encryption and keys of replica types walship does not write to. */
function rejectUnsupportedKeys(fields: ConfigFields, type: string): void {
  if (fields.written('age')) {
    throw fields.error(
      'age encryption is not supported by walship; remove the age: section to replicate without encryption, ' +
        'or keep Litestream v0.3 for encrypted replicas',
    );
  }
  for (const key of OTHER_TYPE_KEYS) {
    if (fields.written(key)) throw fields.error(`key "${key}" belongs to abs or sftp replicas, not to a ${type} replica; remove it`);
  }
  if (type === 'file') {
    for (const key of S3_KEYS) {
      if (fields.written(key)) throw fields.error(`key "${key}" applies to s3 replicas, not to a file replica; remove it or set type: s3`);
    }
  }
}

/** Builds a file replica from `path:` (a directory) or `url: file:///dir`. */
function fileClient(fields: ConfigFields): FileClientConfig {
  const url = fields.string('url');
  const dir = fields.string('path');
  if (url !== undefined && dir !== undefined) throw fields.error('set either url or path, not both');
  if (url === undefined && dir === undefined) throw fields.error('a file replica needs path: DIRECTORY (or url: file:///DIRECTORY)');

  if (dir !== undefined && urlScheme(dir) !== undefined) {
    throw fields.error(`path ${redactUrl(dir)} looks like a URL; write it as url: instead`);
  }
  return fields.within(() => parseReplicaUrl(url ?? expandHome(dir!))) as FileClientConfig;
}

/**
 * Builds an s3 replica from `bucket:` and `path:`, or from `url:`; explicit
 * keys override what the URL gives, field by field. A bucket without a path
 * gets the prefix `databases/<name>`.
 */
function s3Client(fields: ConfigFields, dbName: string | undefined, defaults: ReplicaDefaults): S3ClientConfig {
  const url = fields.string('url');
  let client: S3ClientConfig;

  if (url !== undefined) {
    if (fields.has('path') || fields.has('bucket')) throw fields.error('set either url or bucket and path, not both');
    client = fields.within(() => parseReplicaUrl(url)) as S3ClientConfig;
  } else {
    const bucket = fields.string('bucket');
    if (bucket === undefined) throw fields.error('an s3 replica needs bucket: NAME (or url: s3://BUCKET/PATH)');

    // A trailing "/" adds nothing to a key prefix; any other irregular segment is rejected.
    const prefix = fields.string('path')?.replace(/\/+$/, '') ?? (dbName === undefined ? '' : databasePrefix(dbName));
    fields.within(() => validatePrefix(prefix, 'path'));
    client = { type: 's3', bucket, prefix };
  }

  applyS3Keys(fields, client);
  Object.assign(client, resolveCredentials(fields, defaults));
  return client;
}

/** Applies region, endpoint, force-path-style and skip-verify keys over URL-derived values. */
function applyS3Keys(fields: ConfigFields, client: S3ClientConfig): void {
  const region = fields.string('region');
  if (region !== undefined) client.region = region;

  const endpoint = fields.string('endpoint');
  if (endpoint !== undefined) {
    client.endpoint = fields.within(() => normalizeEndpoint(endpoint, 'endpoint'));
    // S3-compatible stores mostly serve path-style URLs only, so an endpoint turns it on.
    client.forcePathStyle = true;
  }

  const forcePathStyle = fields.boolean('force-path-style');
  if (forcePathStyle !== undefined) client.forcePathStyle = forcePathStyle;

  const skipVerify = fields.boolean('skip-verify');
  if (skipVerify !== undefined) client.skipVerify = skipVerify;
}

/**
 * Resolves static S3 credentials: the replica's keys, else the top-level
 * keys, else LITESTREAM_ACCESS_KEY_ID and LITESTREAM_SECRET_ACCESS_KEY, else
 * AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and AWS_SESSION_TOKEN. Nothing
 * found leaves them unset, so the AWS SDK's default chain (profiles,
 * instance roles) applies. Error messages name keys, never values.
 */
function resolveCredentials(fields: ConfigFields, defaults: ReplicaDefaults): Pick<S3ClientConfig, 'accessKeyId' | 'secretAccessKey' | 'sessionToken'> {
  const accessKeyId = fields.string('access-key-id') ?? defaults.accessKeyId;
  const secretAccessKey = fields.string('secret-access-key') ?? defaults.secretAccessKey;
  if (accessKeyId !== undefined || secretAccessKey !== undefined) {
    if (accessKeyId === undefined || secretAccessKey === undefined) {
      const missing = accessKeyId === undefined ? 'access-key-id' : 'secret-access-key';
      throw fields.error(`${missing} is missing while its pair is set; set both access-key-id and secret-access-key, or neither`);
    }
    return { accessKeyId, secretAccessKey };
  }

  for (const prefix of ['LITESTREAM_', 'AWS_']) {
    const id = nonEmpty(defaults.env[`${prefix}ACCESS_KEY_ID`]);
    const secret = nonEmpty(defaults.env[`${prefix}SECRET_ACCESS_KEY`]);
    if (id === undefined && secret === undefined) continue;
    if (id === undefined || secret === undefined) {
      const missing = id === undefined ? `${prefix}ACCESS_KEY_ID` : `${prefix}SECRET_ACCESS_KEY`;
      throw fields.error(`environment variable ${missing} is not set while its pair is; set both or neither`);
    }

    const sessionToken = prefix === 'AWS_' ? nonEmpty(defaults.env.AWS_SESSION_TOKEN) : undefined;
    return { accessKeyId: id, secretAccessKey: secret, ...(sessionToken ? { sessionToken } : {}) };
  }
  return {};
}

/** Replaces a leading `~` with the home directory, as Litestream does for paths. */
export function expandHome(value: string): string {
  if (value === '~') return os.homedir();
  if (value.startsWith('~/')) return os.homedir() + value.slice(1);
  return value;
}

/** Returns a value unless it is undefined or empty. */
function nonEmpty(value: string | undefined): string | undefined {
  return value === undefined || value === '' ? undefined : value;
}

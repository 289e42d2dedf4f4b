import fs from 'node:fs/promises';
import path from 'node:path';

import { parseDocument } from 'yaml';

import { ConfigFields } from './config-fields.js';
import { isDirectoryEntry, resolveDirectory } from './config-directory.js';
import { expandHome, resolveReplica } from './config-replica.js';
import type { Env, ReplicaDefaults } from './config-replica.js';
import { WalshipError } from './errors.js';
import type { Logger } from './logger.js';
import { checkDistinctDatabases, checkDistinctPrefixes, nameFromPath, sanitizeName } from './naming.js';
import type { ReplicaClientConfig } from './replica/client.js';

export { parseReplicaUrl } from './replica-url.js';
export { parseDuration } from './duration.js';

/**
 * Resolved settings of walship: defaults, then the config file, then flags.
 * Durations are in milliseconds. Keys of the YAML file keep Litestream's
 * spellings (`sync-interval`, `min-checkpoint-page-count`, ...).
 */
export interface Config {
  dbs: DatabaseConfig[];
  /** `dbs:` entries that name a directory: every matching database file is replicated. Unset means none. */
  dirs?: DirectoryConfig[];
  /** Address of the metrics and health server (`addr:` or `-addr`); unset means off. */
  addr?: string;
  /** Bound of a graceful shutdown in ms (`shutdown-timeout`); unset means DEFAULTS.shutdownTimeout. */
  shutdownTimeout?: number;
  /** Path of the control socket (`control-socket`); `off` turns it off, unset means the default path. */
  controlSocket?: string;
  /** URL requested with GET after every database synced (`heartbeat-url`); unset means off. */
  heartbeatUrl?: string;
  /** Minimum time between heartbeat requests in ms (`heartbeat-interval`, at least 1 minute). */
  heartbeatInterval?: number;
  /** Command run as a child process beside replication (`exec`, or `-exec`). */
  exec?: string;
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
  /**
   * Poll interval of the WAL in ms (`monitor-interval`, default 100). While
   * file events watch the WAL, walship polls at most once a second instead.
   */
  monitorInterval: number;
  /** PASSIVE checkpoint when nothing was checkpointed for this long and the WAL contains frames. 0 turns it off. */
  checkpointInterval: number;
  /** PASSIVE checkpoint once the WAL contains this many pages. */
  minCheckpointPageCount: number;
  /** RESTART checkpoint once the WAL contains this many pages. 0 turns it off. */
  maxCheckpointPageCount: number;
  /** How long walship's own SQLite statements wait for a lock. */
  busyTimeout: number;
  /** Replication lag in ms past which health checks report the database (`max-lag`); unset means the health default. */
  maxLag?: number;
  replicas: ReplicaConfig[];
}

/** Settings of every database of a `dbs:` entry, apart from its path, name, meta path and replicas. */
export type DatabaseSettings = Omit<DatabaseConfig, 'path' | 'name' | 'metaPath' | 'replicas'>;

/**
 * A `dbs:` entry that names a directory (`dir:` and `pattern:`). Every file
 * in it whose name matches the pattern and that starts with the SQLite header
 * is replicated under `databases/<name>/` of each replica location.
 */
export interface DirectoryConfig {
  /** Absolute path of the directory. */
  dir: string;
  /** Glob matched against file names, e.g. `*.db`. */
  pattern: string;
  /** Whether sub-directories are searched too. */
  recursive: boolean;
  /** Directory holding one meta directory per database (`<metaPath>/<name>`); unset puts each next to its file. */
  metaPath?: string;
  settings: DatabaseSettings;
  /** Replica locations; each database writes under `databases/<name>` of each. */
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
  /** Time between periodic snapshots; 0 means only when a generation starts and when retention needs one. */
  snapshotInterval: number;
  /**
   * Action of retention on objects it no longer needs: `delete` removes them,
   * and `lifecycle` only logs the bucket lifecycle rule that would expire them.
   * Unset means DEFAULTS.retentionMode.
   */
  retentionMode?: RetentionMode;
  /**
   * Lifetime of the replica's lease in ms (`lease-ttl`), renewed every third
   * of it. Unset means 30 s. A fleet can lengthen it to send fewer renewals,
   * at the cost of a slower takeover after a host stops without releasing it.
   */
  leaseTtl?: number;
}

/** Retention modes of a replica (`retention-mode`). */
export type RetentionMode = 'delete' | 'lifecycle';

/** Values `retention-mode` accepts. */
export const RETENTION_MODES: readonly RetentionMode[] = ['delete', 'lifecycle'];

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
  // walship's own key: Litestream v0.3 always deletes.
  retentionMode: 'delete' as RetentionMode,
  logLevel: 'info',
  logFormat: 'text' as const,
  // walship's own values: Litestream v0.3 has no shutdown bound, and v0.5 pings every 5 minutes.
  shutdownTimeout: 10_000,
  heartbeatInterval: 5 * 60_000,
});

/** Shortest `heartbeat-interval` accepted, so that a monitoring service is not flooded. */
export const MIN_HEARTBEAT_INTERVAL = 60_000;

/** Options of loadConfigFile and parseConfig. */
export interface LoadConfigOptions {
  /** Replace `$VAR` and `${VAR}` in the file text before parsing (unset variables become empty). Defaults to true. */
  expandEnv?: boolean;
  /** Environment for expansion and credentials. Defaults to process.env. */
  env?: Env;
  /** Receives warnings about accepted keys that have no effect. */
  logger?: Logger;
}

/** Log levels accepted by `logging.level` and `-log-level`. */
export const LOG_LEVELS: readonly string[] = ['trace', 'debug', 'info', 'warn', 'error'];

// Keys of the top level, of `logging:` and of a database entry.
const TOP_KEYS = [
  'dbs',
  'addr',
  'access-key-id',
  'secret-access-key',
  'logging',
  'exec',
  'shutdown-timeout',
  'control-socket',
  'heartbeat-url',
  'heartbeat-interval',
];
const LOGGING_KEYS = ['level', 'type', 'stderr'];
const DB_KEYS = [
  'path',
  'name',
  'meta-path',
  'monitor-interval',
  'checkpoint-interval',
  'min-checkpoint-page-count',
  'max-checkpoint-page-count',
  'busy-timeout',
  'max-lag',
  'replicas',
  'replica',
  'dir',
  'pattern',
  'recursive',
];

/**
 * Loads a config file: a Litestream v0.3 config is accepted unchanged, plus
 * walship's `name:` per database. Throws WalshipError INVALID_INPUT naming
 * the file (with line and column for malformed YAML), the database, the
 * replica and the key at fault.
 */
export async function loadConfigFile(file: string, options: LoadConfigOptions = {}): Promise<Config> {
  let text: string;
  try {
    text = await fs.readFile(file, 'utf8');
  } catch (err) {
    const reason = (err as NodeJS.ErrnoException).code === 'ENOENT' ? 'does not exist' : 'cannot be read';
    throw new WalshipError('INVALID_INPUT', `config file ${file} ${reason}; pass -config PATH with an existing file`, { cause: err });
  }
  return parseConfig(text, file, options);
}

/** Parses the text of a config file; `source` names the file in errors. */
export function parseConfig(text: string, source: string, options: LoadConfigOptions = {}): Config {
  const env = options.env ?? process.env;
  const expanded = options.expandEnv === false ? text : expandEnv(text, env);

  // The failsafe schema keeps every scalar as written (`bucket: 0123` stays a
  // string), and ConfigFields converts each key to its type.
  const doc = parseDocument(expanded, { schema: 'failsafe' });
  const first = doc.errors[0];
  if (first !== undefined) {
    const at = first.linePos?.[0];
    const where = at ? ` at line ${at.line}, column ${at.col}` : '';
    const reason = first.message.split(' at line ')[0];
    throw new WalshipError('INVALID_INPUT', `malformed YAML in ${source}${where}: ${reason}; fix the file and try again`, { cause: first });
  }

  return resolveConfig(doc.toJS(), source, { env, logger: options.logger });
}

/**
 * Resolves a parsed config (the YAML mapping, or one built from flags with
 * the same keys) into a Config with defaults applied, then checks that no two
 * databases share a path, a name or a replica location.
 */
export function resolveConfig(raw: unknown, source: string, options: Pick<LoadConfigOptions, 'env' | 'logger'> = {}): Config {
  const top = new ConfigFields(raw, source);

  const defaults = {
    accessKeyId: top.string('access-key-id'),
    secretAccessKey: top.string('secret-access-key'),
    env: options.env ?? process.env,
    logger: options.logger,
  };
  const dbs: DatabaseConfig[] = [];
  const dirs: DirectoryConfig[] = [];
  for (const [i, entry] of (top.list('dbs') ?? []).entries()) {
    if (isDirectoryEntry(entry)) dirs.push(resolveDirectory(entry, i, source, defaults));
    else dbs.push(resolveDatabase(entry, i, source, defaults));
  }

  const config: Config = { dbs, logLevel: DEFAULTS.logLevel, logFormat: DEFAULTS.logFormat };
  if (dirs.length > 0) config.dirs = dirs;
  applyTopLevel(top, config);
  applyLogging(top.fields('logging', `${source}, logging`), config);
  top.rejectUnknown([], `; top-level keys are ${TOP_KEYS.join(', ')}`);

  top.within(() => checkDistinctDatabases(dbs));
  top.within(() => checkDistinctPrefixes(dbs));
  return config;
}

/** Applies `addr`, `exec`, `shutdown-timeout`, `control-socket` and the heartbeat keys. */
function applyTopLevel(top: ConfigFields, config: Config): void {
  const addr = top.string('addr');
  if (addr !== undefined) config.addr = checkAddr(addr, top);

  const exec = top.string('exec');
  if (exec !== undefined) config.exec = exec;

  const shutdownTimeout = top.duration('shutdown-timeout');
  if (shutdownTimeout !== undefined) config.shutdownTimeout = shutdownTimeout;

  const controlSocket = top.string('control-socket');
  if (controlSocket !== undefined) config.controlSocket = controlSocket === 'off' ? controlSocket : path.resolve(expandHome(controlSocket));

  const heartbeatUrl = top.string('heartbeat-url');
  if (heartbeatUrl !== undefined) config.heartbeatUrl = checkHeartbeatUrl(heartbeatUrl, top);
  const heartbeatInterval = top.duration('heartbeat-interval');
  if (heartbeatInterval !== undefined) {
    if (heartbeatInterval < MIN_HEARTBEAT_INTERVAL) {
      throw top.error(`heartbeat-interval ${heartbeatInterval}ms is shorter than the minimum of 1m; use 1m or more`);
    }
    config.heartbeatInterval = heartbeatInterval;
  }
}

/** Checks that a heartbeat URL is an absolute http or https URL. */
function checkHeartbeatUrl(url: string, fields: ConfigFields): string {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw fields.error(`heartbeat-url ${JSON.stringify(url)} is not a URL; write it as https://host/path`);
  }
  if (parsed.protocol !== 'http:' && parsed.protocol !== 'https:') {
    throw fields.error(`heartbeat-url ${JSON.stringify(url)} must use http or https`);
  }
  return url;
}

/**
 * Replaces `$VAR` and `${VAR}` with environment values, as Litestream does to
 * the whole file text (comments included); unset variables become empty.
 * A `$` followed by anything else stays as written.
 */
export function expandEnv(text: string, env: Env = process.env): string {
  return text.replace(/\$(?:\{([^}]*)\}|([A-Za-z0-9_]+))/g, (_match, braced: string | undefined, bare: string | undefined) => {
    return env[braced ?? bare ?? ''] ?? '';
  });
}

/** Resolves one entry of `dbs:` that names a database file with `path:`. */
function resolveDatabase(entry: unknown, index: number, source: string, defaults: ReplicaDefaults): DatabaseConfig {
  const unnamed = new ConfigFields(entry, `${source}, database ${index + 1}`);
  const rawPath = unnamed.string('path');
  if (rawPath === undefined) throw unnamed.error('path is missing; give the database file as path: /data/app.db, or a directory as dir: /data with pattern: "*.db"');

  const dbPath = path.resolve(expandHome(rawPath));
  const fields = new ConfigFields(entry, `${source}, database ${dbPath}`);
  fields.string('path');
  for (const key of ['pattern', 'recursive']) {
    if (fields.written(key)) throw fields.error(`${key} applies only to a directory entry (dir:); remove it or replace path: with dir:`);
  }

  const givenName = fields.stringAllowEmpty('name');
  const name = fields.within(() => (givenName === undefined ? nameFromPath(dbPath) : sanitizeName(givenName)));
  const metaPath = fields.string('meta-path');

  const db: DatabaseConfig = {
    path: dbPath,
    name,
    metaPath: metaPath === undefined ? defaultMetaPath(dbPath) : path.resolve(expandHome(metaPath)),
    ...resolveDatabaseSettings(fields),
    replicas: resolveReplicas(fields, name, defaults),
  };
  fields.rejectUnknown([], `; database keys are ${DB_KEYS.join(', ')}`);

  if (db.replicas.length === 0) defaults.logger?.warn({ db: name }, `${fields.where}: no replicas configured; nothing will be shipped`);
  return db;
}

/** Reads the intervals, thresholds and `max-lag` of a `dbs:` entry, with defaults. */
export function resolveDatabaseSettings(fields: ConfigFields): DatabaseSettings {
  const settings: DatabaseSettings = {
    monitorInterval: fields.duration('monitor-interval') ?? DEFAULTS.monitorInterval,
    checkpointInterval: fields.duration('checkpoint-interval') ?? DEFAULTS.checkpointInterval,
    minCheckpointPageCount: fields.integer('min-checkpoint-page-count', 1) ?? DEFAULTS.minCheckpointPageCount,
    maxCheckpointPageCount: fields.integer('max-checkpoint-page-count', 0) ?? DEFAULTS.maxCheckpointPageCount,
    busyTimeout: fields.duration('busy-timeout') ?? DEFAULTS.busyTimeout,
  };
  const maxLag = fields.duration('max-lag');
  if (maxLag !== undefined) settings.maxLag = maxLag;
  return settings;
}

/**
 * Resolves `replicas:` (or Litestream v0.5's single `replica:`) and checks that
 * names are unique. `dbName` is undefined for a directory entry, whose replica
 * locations are roots that each database extends.
 */
export function resolveReplicas(fields: ConfigFields, dbName: string | undefined, defaults: ReplicaDefaults): ReplicaConfig[] {
  if (fields.has('replicas') && fields.has('replica')) throw fields.error('set either replicas: (a list) or replica: (one), not both');
  const single = fields.raw('replica');
  const entries = single === undefined ? (fields.list('replicas') ?? []) : [single];

  const replicas: ReplicaConfig[] = [];
  for (const [i, entry] of entries.entries()) {
    const label = replicaLabel(entry, i);
    const replica = resolveReplica(new ConfigFields(entry, `${fields.where}, ${label}`), dbName, defaults);

    if (replicas.some((r) => r.name === replica.name)) {
      throw fields.error(`two replicas are named "${replica.name}"; give each replica a distinct name:`);
    }
    replicas.push(replica);
  }
  return replicas;
}

/** Names a replica entry for messages: `replica 2 "backup"`, or `replica 2` before its name is known. */
function replicaLabel(entry: unknown, index: number): string {
  const name = entry !== null && typeof entry === 'object' ? (entry as Record<string, unknown>).name : undefined;
  return typeof name === 'string' && name !== '' ? `replica ${index + 1} "${name}"` : `replica ${index + 1}`;
}

/** Applies `logging.level` and `logging.type`; `logging.stderr` is accepted because walship always logs to stderr. */
function applyLogging(logging: ConfigFields | undefined, config: Config): void {
  if (logging === undefined) return;

  const level = logging.string('level')?.toLowerCase();
  if (level !== undefined) config.logLevel = checkLogLevel(level, logging);

  const type = logging.string('type')?.toLowerCase();
  if (type !== undefined && type !== 'text' && type !== 'json') {
    throw logging.error(`type "${type}" is not a log format; use text or json`);
  }
  if (type !== undefined) config.logFormat = type;

  logging.boolean('stderr');
  logging.rejectUnknown([], `; logging keys are ${LOGGING_KEYS.join(', ')}`);
}

/** Returns a log level, mapping Litestream's `warning` to `warn`. */
function checkLogLevel(level: string, fields: ConfigFields): string {
  const normalized = level === 'warning' ? 'warn' : level;
  if (!LOG_LEVELS.includes(normalized)) throw fields.error(`level "${level}" is not a log level; use ${LOG_LEVELS.join(', ')}`);
  return normalized;
}

/** Checks that `addr` has a port, as `:9090` or `127.0.0.1:9090`. */
function checkAddr(addr: string, fields: ConfigFields): string {
  const port = /:(\d+)$/.exec(addr)?.[1];
  if (port === undefined || Number(port) > 65535) {
    throw fields.error(`addr "${addr}" needs a port; write it as :9090 or 127.0.0.1:9090`);
  }
  return addr;
}

/** Returns the default directory of walship's local state: `<dir>/.<file>-walship`. */
export function defaultMetaPath(dbPath: string): string {
  return path.join(path.dirname(dbPath), `.${path.basename(dbPath)}-walship`);
}

import fs from 'node:fs/promises';
import path from 'node:path';

import type { Command } from 'commander';

import { directoryDatabase, patternMatcher } from '../config-directory.js';
import { ConfigFields } from '../config-fields.js';
import { resolveReplica } from '../config-replica.js';
import type { Config, DatabaseConfig } from '../config.js';
import { WalshipError } from '../errors.js';
import type { Logger } from '../logger.js';
import type { ReplicaClientConfig } from '../replica/client.js';
import { redactUrl, urlScheme } from '../replica-url.js';
import { addConfigFlags, addLogFlags, loadCliConfig, makeLogger, rejectFlags } from './common.js';
import type { ConfigFlags, LogFlags } from './common.js';

/**
 * The argument of the inspection commands, DB_PATH or REPLICA_URL, resolved
 * into the replicas to read. A URL is one replica named after its type, as
 * Litestream names it. A path is a database of the config file, with every
 * replica it lists, or only the one that -replica names.
 */

/** Flags shared by the inspection commands. */
export interface InspectFlags extends ConfigFlags, LogFlags {
  replica?: string;
  json?: boolean;
}

/** One replica to read, with the name printed in the `replica` column. */
export interface InspectReplica {
  name: string;
  client: ReplicaClientConfig;
}

/** The replicas of a DB_PATH or REPLICA_URL, and the database file when a path was given. */
export interface InspectTarget {
  replicas: InspectReplica[];
  /** Absolute path of the database file; unset for a replica URL. */
  dbPath?: string;
  config?: Config;
  logger: Logger;
}

/** Adds -config, -no-expand-env, -replica, -json, -log-level and -log-format. */
export function addInspectFlags(command: Command): Command {
  command
    .argument('<target>', 'DB_PATH, a database of the config file, or REPLICA_URL (s3://BUCKET/PATH, file:///DIR)')
    .allowExcessArguments(false)
    .option('--replica <name>', 'with DB_PATH: read only the replica with this name (default: every replica of the database)')
    .option('--json', 'print a JSON array of objects with the same fields as the table columns (default: off, a table)');
  addConfigFlags(command);
  return addLogFlags(command);
}

/**
 * Resolves DB_PATH or REPLICA_URL into the replicas to read. Throws
 * INVALID_INPUT naming the value when the path is not in the config file,
 * the replica name is unknown, or config flags come with a URL.
 */
export async function resolveInspectTarget(target: string, flags: InspectFlags): Promise<InspectTarget> {
  const logger = makeLogger(flags);

  if (urlScheme(target) !== undefined) {
    rejectFlags(flags, ['config', 'replica'], `apply only to a DB_PATH of the config file, not to the replica URL ${redactUrl(target)}`);
    return { replicas: [replicaFromUrl(target, logger)], logger };
  }

  const { config, file } = await loadCliConfig(flags, logger, 'give a REPLICA_URL such as s3://BUCKET/PATH or file:///DIR');
  const db = findDatabase(target, config, file);
  const replicas = db.replicas.filter((replica) => flags.replica === undefined || replica.name === flags.replica);
  if (flags.replica !== undefined && replicas.length === 0) {
    const names = db.replicas.map((r) => r.name).join(', ') || 'none';
    throw new WalshipError('INVALID_INPUT', `database ${db.path} in ${file} has no replica named "${flags.replica}"; its replicas: ${names}`);
  }
  return { replicas: replicas.map(({ name, client }) => ({ name, client })), dbPath: db.path, config, logger: makeLogger(flags, config) };
}

/**
 * Builds a replica from a URL, with credentials from the environment as a
 * config entry `url: URL` gets them. Its name is its type (`s3`, `file`).
 */
export function replicaFromUrl(url: string, logger: Logger): InspectReplica {
  const fields = new ConfigFields({ url }, `replica URL ${redactUrl(url)}`);
  const replica = resolveReplica(fields, undefined, { env: process.env, logger });
  return { name: replica.name, client: replica.client };
}

/**
 * Finds a database of the config by path (relative to the working
 * directory), by name, or as a file that a `dir:` entry covers.
 */
export function findDatabase(target: string, config: Config, file: string): DatabaseConfig {
  const dbPath = path.resolve(target);
  const db = config.dbs.find((d) => d.path === dbPath) ?? config.dbs.find((d) => d.name === target) ?? inDirectory(dbPath, config);
  if (db === undefined) {
    throw new WalshipError('INVALID_INPUT', `database ${dbPath} is not in ${file}; give a path listed under dbs: or a REPLICA_URL`);
  }
  return db;
}

/** Returns the database of a `dir:` entry whose directory and pattern cover `dbPath`, if any. */
function inDirectory(dbPath: string, config: Config): DatabaseConfig | undefined {
  for (const directory of config.dirs ?? []) {
    const relative = path.relative(directory.dir, dbPath);
    if (relative.startsWith('..') || path.isAbsolute(relative)) continue;
    if (!directory.recursive && relative.includes(path.sep)) continue;
    if (patternMatcher(directory)(path.basename(dbPath))) return directoryDatabase(directory, dbPath);
  }
  return undefined;
}

/**
 * Returns the last time a database changed: the modification time of its
 * file, or of its `-wal` file when that is newer. Undefined when the file
 * does not exist.
 */
export async function databaseUpdatedAt(dbPath: string): Promise<Date | undefined> {
  const main = await fs.stat(dbPath).catch(() => undefined);
  if (main === undefined) return undefined;

  const wal = await fs.stat(`${dbPath}-wal`).catch(() => undefined);
  return wal !== undefined && wal.mtimeMs > main.mtimeMs ? wal.mtime : main.mtime;
}

/** Sets the exit code to 1 when any replica failed, after every replica was tried. */
export function exitWithFailures(failures: number): void {
  if (failures > 0) process.exitCode = 1;
}

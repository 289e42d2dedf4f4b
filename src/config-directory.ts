import path from 'node:path';

import picomatch from 'picomatch';

import { defaultMetaPath, resolveDatabaseSettings, resolveReplicas } from './config.js';
import type { DatabaseConfig, DirectoryConfig, ReplicaConfig } from './config.js';
import { ConfigFields } from './config-fields.js';
import { expandHome } from './config-replica.js';
import type { ReplicaDefaults } from './config-replica.js';
import { DATABASES_FOLDER, sanitizeName } from './naming.js';

/**
 * `dbs:` entries that name a directory (`dir: /data`, `pattern: "*.db"`)
 * instead of one database file, and the DatabaseConfig of each file found
 * in such a directory.
 */

/** Reports whether a raw `dbs:` entry names a directory (`dir:`) rather than a file (`path:`). */
export function isDirectoryEntry(entry: unknown): boolean {
  if (entry === null || typeof entry !== 'object' || Array.isArray(entry)) return false;
  const dir = (entry as Record<string, unknown>).dir;
  return dir !== undefined && dir !== null && dir !== '';
}

/** Resolves a `dbs:` entry with `dir:`, `pattern:` and optionally `recursive:`. */
export function resolveDirectory(entry: unknown, index: number, source: string, defaults: ReplicaDefaults): DirectoryConfig {
  const unnamed = new ConfigFields(entry, `${source}, database ${index + 1}`);
  const dir = path.resolve(expandHome(unnamed.string('dir')!));
  const fields = new ConfigFields(entry, `${source}, directory ${dir}`);
  fields.string('dir');

  if (fields.written('path')) throw fields.error('set either path: (one database) or dir: (a directory of databases), not both');
  if (fields.written('name')) throw fields.error('name: does not apply to a directory; each database is named after its file');

  const pattern = fields.string('pattern');
  if (pattern === undefined) throw fields.error('pattern is missing; give the file names to replicate, e.g. pattern: "*.db"');
  if (pattern.includes('/')) throw fields.error(`pattern ${JSON.stringify(pattern)} contains "/"; it matches file names only, use recursive: true for sub-directories`);

  const metaPath = fields.string('meta-path');
  const directory: DirectoryConfig = {
    dir,
    pattern,
    recursive: fields.boolean('recursive') ?? false,
    settings: resolveDatabaseSettings(fields),
    replicas: resolveReplicas(fields, undefined, defaults),
  };
  if (metaPath !== undefined) directory.metaPath = path.resolve(expandHome(metaPath));
  fields.rejectUnknown([], '; directory keys are dir, pattern, recursive, meta-path, the database intervals and thresholds, and replicas');

  if (directory.replicas.length === 0) defaults.logger?.warn({ dir }, `${fields.where}: no replicas configured; nothing will be shipped`);
  return directory;
}

/** Returns a function that reports whether a file name matches a directory entry's pattern. */
export function patternMatcher(directory: DirectoryConfig): (fileName: string) => boolean {
  // As in a shell glob, names starting with "." never match, which also skips
  // walship's meta directories (`.app.db-walship`).
  return picomatch(directory.pattern, { dot: false });
}

/**
 * Builds the DatabaseConfig of a file found in a directory entry. The name is
 * the file's path relative to the directory, sanitized (`sub/app.db` gives
 * `sub_app`), and each replica location gets `databases/<name>` appended.
 *
 * Throws WalshipError INVALID_INPUT when the name sanitizes to nothing.
 */
export function directoryDatabase(directory: DirectoryConfig, filePath: string): DatabaseConfig {
  const name = sanitizeName(path.relative(directory.dir, filePath));
  return {
    path: filePath,
    name,
    metaPath: directory.metaPath === undefined ? defaultMetaPath(filePath) : path.join(directory.metaPath, name),
    ...directory.settings,
    replicas: directory.replicas.map((replica) => databaseReplica(replica, name)),
  };
}

/** Returns a replica of a directory entry moved to the folder `databases/<name>` of its location. */
function databaseReplica(replica: ReplicaConfig, name: string): ReplicaConfig {
  const client = replica.client;
  if (client.type === 'file') {
    return { ...replica, client: { ...client, root: path.join(client.root, DATABASES_FOLDER, name) } };
  }
  const prefix = [client.prefix, DATABASES_FOLDER, name].filter((segment) => segment !== '').join('/');
  return { ...replica, client: { ...client, prefix } };
}

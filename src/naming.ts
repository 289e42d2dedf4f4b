import path from 'node:path';

import type { DatabaseConfig } from './config.js';
import { WalshipError } from './errors.js';
import type { ReplicaClientConfig } from './replica/client.js';

/**
 * Database names and replica prefixes. A database replicated to a bucket
 * without an explicit path lives under `databases/<name>/`. The name is
 * `-db-name` (or `name:` in the config file), else the base name of the
 * database file, sanitized into one safe key segment.
 */

/** SQLite file extensions removed from the end of a name, compared case-insensitively. */
export const SQLITE_EXTENSIONS: readonly string[] = ['.db', '.sqlite', '.sqlite3', '.db3', '.s3db', '.sl3'];

/** Maximum length of a sanitized name, in bytes. */
export const MAX_NAME_BYTES = 128;

/** Name used when the given name is the empty string. */
export const DEFAULT_NAME = 'default';

/** Folder of a bucket that contains one prefix per database. */
export const DATABASES_FOLDER = 'databases';

/**
 * Sanitizes a database name into a single key segment of `a-z 0-9 - _ .`.
 * Removes a trailing SQLite extension, lowercases, drops accents, replaces
 * every other character with `_`, collapses `_` runs and trims `_ . -` at
 * both ends. The empty string gives `default`.
 *
 * Throws WalshipError INVALID_INPUT when a non-empty input sanitizes to
 * nothing (`..`, `///`, `日本語`) or to more than MAX_NAME_BYTES bytes.
 */
export function sanitizeName(input: string): string {
  if (input === '') return DEFAULT_NAME;

  let name = stripSqliteExtension(input);

  // NFD splits an accented letter into its base letter and combining marks,
  // so removing the marks turns `ç` into `c` and `ã` into `a`.
  name = name.toLowerCase().normalize('NFD').replace(/\p{M}/gu, '');

  name = name.replace(/[^a-z0-9._-]/g, '_');
  name = name.replace(/_+/g, '_');
  name = name.replace(/^[_.-]+/, '').replace(/[_.-]+$/, '');

  if (name === '') {
    throw new WalshipError(
      'INVALID_INPUT',
      `database name ${JSON.stringify(input)} has no letters or digits left after sanitizing; ` +
        'pass -db-name NAME (or name: in the config file) with letters a-z or digits',
    );
  }
  // Every remaining character is ASCII, so the length is the byte count.
  if (name.length > MAX_NAME_BYTES) {
    throw new WalshipError(
      'INVALID_INPUT',
      `database name ${JSON.stringify(input)} is ${name.length} bytes after sanitizing, ` +
        `more than the maximum of ${MAX_NAME_BYTES}; pass a shorter -db-name NAME`,
    );
  }
  return name;
}

/** Returns the sanitized base name of a database file: `/data/users.db` gives `users`. */
export function nameFromPath(dbPath: string): string {
  const base = path.basename(dbPath);
  if (base === '') {
    throw new WalshipError('INVALID_INPUT', `database path ${JSON.stringify(dbPath)} has no file name; pass the path of a file`);
  }
  return sanitizeName(base);
}

/** Returns the key prefix of a database in a bucket: `databases/<name>`. */
export function databasePrefix(name: string): string {
  return `${DATABASES_FOLDER}/${name}`;
}

/**
 * Checks that a relative key prefix has no leading `/`, no empty segment and
 * no `.` or `..` segment, so that it can neither escape a file replica's root
 * nor alias another prefix. The empty prefix (the bucket root) is valid.
 * `label` names the value in the error, e.g. `path`.
 */
export function validatePrefix(prefix: string, label = 'prefix'): void {
  if (prefix === '') return;

  if (prefix.startsWith('/')) {
    throw new WalshipError(
      'INVALID_INPUT',
      `${label} ${JSON.stringify(prefix)} starts with "/"; write the key prefix without it, e.g. databases/users`,
    );
  }
  for (const segment of prefix.split('/')) {
    if (segment === '' || segment === '.' || segment === '..') {
      throw new WalshipError(
        'INVALID_INPUT',
        `${label} ${JSON.stringify(prefix)} contains an empty, "." or ".." segment; ` +
          'write it as plain folder names separated by single "/"',
      );
    }
  }
}

/**
 * Checks that no two replicas share or nest a location: the same bucket (of
 * the same endpoint) with equal prefixes or one prefix inside the other, or
 * the same or nested file directories. Replicas of one database are checked
 * against each other too.
 *
 * Throws WalshipError INVALID_INPUT naming both database paths and both locations.
 */
export function checkDistinctPrefixes(dbs: readonly DatabaseConfig[]): void {
  const seen: { db: DatabaseConfig; replica: string; location: Location }[] = [];

  for (const db of dbs) {
    for (const replica of db.replicas) {
      const location = locationOf(replica.client);
      for (const other of seen) {
        if (!overlaps(location, other.location)) continue;

        const first = `database ${other.db.path} (replica "${other.replica}", ${other.location.display})`;
        const second = `database ${db.path} (replica "${replica.name}", ${location.display})`;
        throw new WalshipError(
          'INVALID_INPUT',
          `${first} and ${second} write to the same or nested replica location; ` +
            'give each database its own path or -db-name so their prefixes differ',
        );
      }
      seen.push({ db, replica: replica.name, location });
    }
  }
}

/**
 * Checks that no two databases share a path or a name. Two entries for one
 * file would replicate it twice, and a shared name merges their `db=` log
 * fields and metrics.
 */
export function checkDistinctDatabases(dbs: readonly DatabaseConfig[]): void {
  for (let i = 0; i < dbs.length; i++) {
    for (let j = 0; j < i; j++) {
      const a = dbs[j]!;
      const b = dbs[i]!;
      if (a.path === b.path) {
        throw new WalshipError('INVALID_INPUT', `database ${a.path} is listed twice; remove one of the entries`);
      }
      if (a.name === b.name) {
        throw new WalshipError(
          'INVALID_INPUT',
          `databases ${a.path} and ${b.path} both have the name "${a.name}"; set another name: on one of them`,
        );
      }
    }
  }
}

/** Removes one trailing SQLite extension, keeping the rest of the name. */
function stripSqliteExtension(input: string): string {
  const lower = input.toLowerCase();
  for (const ext of SQLITE_EXTENSIONS) {
    if (lower.endsWith(ext)) return input.slice(0, input.length - ext.length);
  }
  return input;
}

/** A replica location reduced to a store and a `/`-separated path inside it. */
interface Location {
  /** Identifies the store: the endpoint and bucket, or the local file system. */
  store: string;
  /** Segments of the prefix or directory, compared one by one. */
  segments: string[];
  display: string;
}

/** Reduces a replica client config to the store and path it writes to. */
function locationOf(client: ReplicaClientConfig): Location {
  if (client.type === 'file') {
    return { store: 'file', segments: splitPath(client.root), display: `file://${client.root}` };
  }

  // Bucket names are global on AWS, so the region does not matter; an
  // S3-compatible endpoint is a store of its own.
  const endpoint = (client.endpoint ?? '').replace(/\/+$/, '').toLowerCase();
  const display = `s3://${client.bucket}/${client.prefix}`;
  return { store: `s3 ${endpoint} ${client.bucket}`, segments: splitPath(client.prefix), display };
}

/** Splits a path into its non-empty segments. */
function splitPath(value: string): string[] {
  return value.split('/').filter((segment) => segment !== '');
}

/** Reports whether two locations are equal or one contains the other. */
function overlaps(a: Location, b: Location): boolean {
  if (a.store !== b.store) return false;
  const shorter = a.segments.length <= b.segments.length ? a.segments : b.segments;
  const longer = shorter === a.segments ? b.segments : a.segments;
  return shorter.every((segment, i) => longer[i] === segment);
}

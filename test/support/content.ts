import { createHash } from 'node:crypto';
import type { Hash } from 'node:crypto';

import Database from 'better-sqlite3';

/**
 * Content checks for restore tests: hashes of a database's rows and SQLite's
 * own integrity check. The helpers only read, but they open the database
 * read-write: a read-only connection to a WAL database leaves its -wal and
 * -shm files behind, while SQLite removes them when the last read-write
 * connection closes. So point them at test copies, not at files in the tree.
 */

// Tables that SQLite, Litestream or walship maintain themselves; their rows differ
// between a source and its restore without the user's data differing.
const HELPER_PREFIXES = ['sqlite_', '_litestream_', '_walship_'];

/**
 * Hashes every user table's rows with SHA-256, tables in name order and rows in
 * rowid order (primary key order for WITHOUT ROWID tables). Values are encoded
 * with their type, so 1, 1.0, '1' and x'31' hash differently. Virtual tables are
 * skipped; their shadow tables are ordinary tables and count.
 */
export function contentHash(dbPath: string): string {
  const db = openDatabase(dbPath);
  try {
    const hash = createHash('sha256');
    for (const { name, sql } of userTables(db)) {
      hash.update(`table ${name}\n`);
      hashRows(db, name, sql, hash);
    }
    return hash.digest('hex');
  } finally {
    db.close();
  }
}

/**
 * Computes the test vectors' digest: SHA-256 over the lines
 * `<id>|<body>|<lowercase hex of payload>\n` of table `t` in id order.
 */
export function fixtureDigest(dbPath: string): string {
  const db = openDatabase(dbPath);
  try {
    const hash = createHash('sha256');
    const rows = db.prepare('SELECT id, body, payload FROM t ORDER BY id').iterate() as IterableIterator<{
      id: number;
      body: string;
      payload: Buffer;
    }>;
    for (const row of rows) hash.update(`${row.id}|${row.body}|${row.payload.toString('hex')}\n`);
    return hash.digest('hex');
  } finally {
    db.close();
  }
}

/** Runs `PRAGMA integrity_check` and returns its rows joined by newlines: "ok" for a sound database. */
export function integrityCheck(dbPath: string): string {
  const db = openDatabase(dbPath);
  try {
    const rows = db.pragma('integrity_check') as Array<{ integrity_check: string }>;
    return rows.map((row) => row.integrity_check).join('\n');
  } finally {
    db.close();
  }
}

/** Opens an existing database file, rejecting a missing one instead of creating it. */
function openDatabase(dbPath: string): Database.Database {
  return new Database(dbPath, { fileMustExist: true });
}

/** Lists the ordinary tables that hold user data, in name order. */
function userTables(db: Database.Database): Array<{ name: string; sql: string }> {
  const tables = db.prepare("SELECT name, sql FROM sqlite_schema WHERE type = 'table' ORDER BY name").all() as Array<{
    name: string;
    sql: string | null;
  }>;
  return tables
    .filter((t) => !HELPER_PREFIXES.some((prefix) => t.name.startsWith(prefix)))
    .filter((t) => t.sql !== null && !/^CREATE\s+VIRTUAL\s+TABLE/i.test(t.sql))
    .map((t) => ({ name: t.name, sql: t.sql! }));
}

/** Feeds a table's rows into `hash`, one encoded line per row. */
function hashRows(db: Database.Database, table: string, sql: string, hash: Hash): void {
  const quoted = `"${table.replaceAll('"', '""')}"`;
  const order = /\bWITHOUT\s+ROWID\b/i.test(sql) ? primaryKeyOrder(db, quoted) : 'rowid';
  const select = /\bWITHOUT\s+ROWID\b/i.test(sql) ? `SELECT * FROM ${quoted}` : `SELECT rowid, * FROM ${quoted}`;

  const statement = db.prepare(`${select} ORDER BY ${order}`).raw(true).safeIntegers(true);
  for (const row of statement.iterate() as IterableIterator<unknown[]>) {
    hash.update(row.map(encodeValue).join(',') + '\n');
  }
}

/** Returns the ORDER BY list of a WITHOUT ROWID table: its primary key columns in key order. */
function primaryKeyOrder(db: Database.Database, quotedTable: string): string {
  const columns = db.prepare(`PRAGMA table_info(${quotedTable})`).all() as Array<{ name: string; pk: number }>;
  return columns
    .filter((c) => c.pk > 0)
    .sort((a, b) => a.pk - b.pk)
    .map((c) => `"${c.name.replaceAll('"', '""')}"`)
    .join(', ');
}

/** Encodes one SQLite value with its storage class; text and blobs carry their length. */
function encodeValue(value: unknown): string {
  if (value === null) return 'N';
  if (typeof value === 'bigint') return `I${value}`;
  if (typeof value === 'number') return `R${value}`;
  if (typeof value === 'string') return `T${Buffer.byteLength(value)}:${value}`;
  if (Buffer.isBuffer(value)) return `B${value.toString('hex')}`;
  throw new Error(`unexpected SQLite value of type ${typeof value}`);
}

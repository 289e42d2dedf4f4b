import { createHash } from 'node:crypto';
import type { Hash } from 'node:crypto';

import Database from 'better-sqlite3';

/** Summary of a database, compared between a source and its restored copy. */
export interface DatabaseSummary {
  /** Result of `PRAGMA integrity_check`: "ok" for a sound database. */
  integrity: string;
  /** Rows of every table, by table name. */
  rowCounts: Map<string, number>;
  totalRows: number;
  /** SHA-256 (hex) of every table's rows, tables in name order, rows in rowid or primary key order. */
  hash: string;
  /** Tables that Litestream or walship would have added to the schema (`_litestream_*`, `_walship_*`). */
  helperTables: string[];
}

// Tables a replicator could add to the user's schema. Litestream v0.3 adds
// _litestream_seq and _litestream_lock; walship must add none.
const HELPER_PREFIXES = ['_litestream_', '_walship_'];

/**
 * Summarizes a database for comparison: integrity check, row counts and a
 * hash of every table's rows. Values are hashed with their SQLite type, so
 * 1, 1.0, '1' and x'31' differ. Only reads, but opens the file read-write
 * when `writable` is set: a read-only connection to a WAL database leaves
 * empty -wal and -shm files behind, which SQLite deletes when the last
 * read-write connection closes.
 */
export function summarizeDatabase(dbPath: string, writable = false): DatabaseSummary {
  const db = new Database(dbPath, { readonly: !writable, fileMustExist: true });
  try {
    const integrity = (db.pragma('integrity_check') as Array<{ integrity_check: string }>).map((row) => row.integrity_check).join('\n');
    const hash = createHash('sha256');
    const rowCounts = new Map<string, number>();

    for (const table of listTables(db)) {
      hash.update(`table ${table.name}\n`);
      rowCounts.set(table.name, hashRows(db, table, hash));
    }

    const totalRows = [...rowCounts.values()].reduce((sum, n) => sum + n, 0);
    const helperTables = [...rowCounts.keys()].filter((name) => HELPER_PREFIXES.some((prefix) => name.startsWith(prefix)));
    return { integrity, rowCounts, totalRows, hash: hash.digest('hex'), helperTables };
  } finally {
    db.close();
  }
}

/**
 * Lists the differences between two summaries: integrity, tables, row counts
 * and hash. An empty list means the databases contain the same rows.
 */
export function compareSummaries(source: DatabaseSummary, restored: DatabaseSummary): string[] {
  const differences: string[] = [];
  if (source.integrity !== 'ok') differences.push(`source integrity_check: ${source.integrity}`);
  if (restored.integrity !== 'ok') differences.push(`restored integrity_check: ${restored.integrity}`);

  const tables = new Set([...source.rowCounts.keys(), ...restored.rowCounts.keys()]);
  for (const table of [...tables].sort()) {
    const expected = source.rowCounts.get(table);
    const actual = restored.rowCounts.get(table);
    if (expected !== actual) differences.push(`table ${table}: ${expected ?? 'missing'} rows in the source, ${actual ?? 'missing'} restored`);
  }

  if (source.hash !== restored.hash) differences.push(`content hash ${restored.hash} differs from the source's ${source.hash}`);
  return differences;
}

/** A table of the schema and how its rows are ordered for hashing. */
interface TableInfo {
  name: string;
  /** ORDER BY clause: rowid, or the primary key columns of a WITHOUT ROWID table. */
  orderBy: string;
}

/** Lists ordinary tables in name order; virtual tables are skipped because their content lives in shadow tables. */
function listTables(db: Database.Database): TableInfo[] {
  const rows = db.prepare("SELECT name, sql FROM sqlite_schema WHERE type = 'table' ORDER BY name").all() as Array<{ name: string; sql: string | null }>;
  const tables: TableInfo[] = [];

  for (const { name, sql } of rows) {
    if (sql !== null && /^\s*CREATE\s+VIRTUAL\s+TABLE/i.test(sql)) continue;
    tables.push({ name, orderBy: orderClause(db, name, sql ?? '') });
  }
  return tables;
}

/** Returns the ORDER BY clause that lists a table's rows in storage key order. */
function orderClause(db: Database.Database, table: string, sql: string): string {
  if (!/\bWITHOUT\s+ROWID\b/i.test(sql)) return 'rowid';

  const columns = db.prepare(`SELECT name, pk FROM pragma_table_info(?) WHERE pk > 0 ORDER BY pk`).all(table) as Array<{ name: string }>;
  return columns.map((column) => quoteIdentifier(column.name)).join(', ');
}

/** Feeds every row of a table into the hash and returns the row count. */
function hashRows(db: Database.Database, table: TableInfo, hash: Hash): number {
  // safeIntegers returns INTEGER values as bigint, so an integer and a real
  // with the same value (1 and 1.0) hash differently.
  const statement = db.prepare(`SELECT * FROM ${quoteIdentifier(table.name)} ORDER BY ${table.orderBy}`).raw(true).safeIntegers(true);

  let count = 0;
  for (const row of statement.iterate() as IterableIterator<unknown[]>) {
    hash.update(row.map(encodeValue).join('|'));
    hash.update('\n');
    count++;
  }
  return count;
}

/** Encodes one SQLite value with its type: `n`, `i:1`, `r:1.5`, `t:<length>:<text>`, `b:<hex>`. */
function encodeValue(value: unknown): string {
  if (value === null) return 'n';
  if (typeof value === 'bigint') return `i:${value}`;
  if (typeof value === 'number') return `r:${value}`;
  if (typeof value === 'string') return `t:${value.length}:${value}`;
  if (Buffer.isBuffer(value)) return `b:${value.toString('hex')}`;
  throw new Error(`unexpected SQLite value of type ${typeof value}`);
}

/** Quotes an identifier for SQL: `Order Details` becomes `"Order Details"`. */
function quoteIdentifier(name: string): string {
  return `"${name.replace(/"/g, '""')}"`;
}

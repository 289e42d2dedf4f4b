import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import type { DatabaseConfig } from '../src/config.js';
import { WalshipError } from '../src/errors.js';
import {
  checkDistinctDatabases,
  checkDistinctPrefixes,
  databasePrefix,
  MAX_NAME_BYTES,
  nameFromPath,
  sanitizeName,
  validatePrefix,
} from '../src/naming.js';
import type { ReplicaClientConfig } from '../src/replica/client.js';

/** Asserts that `fn` throws an INVALID_INPUT WalshipError whose message contains every string of `parts`. */
function assertInvalid(fn: () => unknown, ...parts: string[]): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(err instanceof WalshipError, `expected a WalshipError, got ${String(err)}`);
    assert.equal(err.code, 'INVALID_INPUT');
    for (const part of parts) assert.ok(err.message.includes(part), `message ${JSON.stringify(err.message)} lacks ${JSON.stringify(part)}`);
    return true;
  });
}

/** Builds a database config with one replica per client, with default intervals. */
function database(path: string, name: string, clients: ReplicaClientConfig[]): DatabaseConfig {
  return {
    path,
    name,
    metaPath: `${path}-meta`,
    monitorInterval: 100,
    checkpointInterval: 60_000,
    minCheckpointPageCount: 1000,
    maxCheckpointPageCount: 10000,
    busyTimeout: 1000,
    replicas: clients.map((client, i) => ({
      name: `r${i}`,
      client,
      syncInterval: 1000,
      retention: 0,
      retentionCheckInterval: 3_600_000,
      snapshotInterval: 0,
    })),
  };
}

function s3(bucket: string, prefix: string, endpoint?: string): ReplicaClientConfig {
  return endpoint === undefined ? { type: 's3', bucket, prefix } : { type: 's3', bucket, prefix, endpoint };
}

describe('sanitizeName', () => {
  // The users' table of names, row by row.
  const table: [string, string][] = [
    ['users.db', 'users'],
    ['User Database', 'user_database'],
    ['app/data/products', 'app_data_products'],
    ['My-App_DB.backup', 'my-app_db.backup'],
    ['2025-01-15', '2025-01-15'],
    ['', 'default'],
    ['Analytics Dashboard', 'analytics_dashboard'],
    ['Production Instance', 'production_instance'],
  ];
  for (const [input, expected] of table) {
    test(`users' table: ${JSON.stringify(input)}`, () => {
      assert.equal(sanitizeName(input), expected);
    });
  }

  test('accents removed', () => {
    assert.equal(sanitizeName('Produção'), 'producao');
    assert.equal(sanitizeName('São Paulo.db'), 'sao_paulo');
    assert.equal(sanitizeName('Ünïcödé Ñame'), 'unicode_name');
  });

  test('every SQLite extension removed', () => {
    for (const ext of ['.db', '.sqlite', '.sqlite3', '.db3', '.s3db', '.sl3', '.DB', '.SQLite3']) {
      assert.equal(sanitizeName(`orders${ext}`), 'orders', ext);
    }
  });

  test('only one extension removed', () => {
    assert.equal(sanitizeName('a.db.db'), 'a.db');
    assert.equal(sanitizeName('dump.sql'), 'dump.sql');
    assert.equal(sanitizeName('data.dbx'), 'data.dbx');
  });

  test('separators and runs collapse', () => {
    assert.equal(sanitizeName('a   b'), 'a_b');
    assert.equal(sanitizeName('a\\b:c'), 'a_b_c');
    assert.equal(sanitizeName('__a__b__'), 'a_b');
    assert.equal(sanitizeName('-.a.-'), 'a');
    assert.equal(sanitizeName('.hidden.db'), 'hidden');
  });

  test('nothing left is rejected', () => {
    for (const input of ['..', '///', '日本語', ' ', '.db', '_-.']) {
      assertInvalid(() => sanitizeName(input), JSON.stringify(input), '-db-name');
    }
  });

  test('length limit', () => {
    const longest = 'a'.repeat(MAX_NAME_BYTES);
    assert.equal(sanitizeName(longest), longest);
    assertInvalid(() => sanitizeName(`${longest}b`), `${MAX_NAME_BYTES + 1} bytes`, '-db-name');
  });
});

describe('nameFromPath', () => {
  test("users' table: file paths", () => {
    assert.equal(nameFromPath('/var/lib/products.sqlite'), 'products');
    assert.equal(nameFromPath('logs/2025-01-16.db'), '2025-01-16');
  });

  test('directories never count', () => {
    assert.equal(nameFromPath('/data/users.db'), 'users');
    assert.equal(nameFromPath('/srv/Produção/App Data.sqlite3'), 'app_data');
  });

  test('empty path rejected', () => {
    assertInvalid(() => nameFromPath(''), 'has no file name');
  });
});

describe('databasePrefix', () => {
  test('folder under databases/', () => {
    assert.equal(databasePrefix('users'), 'databases/users');
    assert.equal(databasePrefix(sanitizeName('Analytics Dashboard')), 'databases/analytics_dashboard');
  });
});

describe('validatePrefix', () => {
  test('plain prefixes accepted', () => {
    for (const prefix of ['', 'databases/users', 'a', 'a/b.c/d-e_f', 'x..y']) {
      assert.doesNotThrow(() => validatePrefix(prefix), prefix);
    }
  });

  test('leading slash rejected', () => {
    assertInvalid(() => validatePrefix('/databases/users', 'path'), 'path "/databases/users"', 'starts with "/"');
  });

  test('unsafe segments rejected', () => {
    for (const prefix of ['a//b', 'a/', '.', '..', './a', 'a/../b', 'a/./b', '../etc']) {
      assertInvalid(() => validatePrefix(prefix), JSON.stringify(prefix), 'segment');
    }
  });
});

describe('checkDistinctPrefixes', () => {
  test('distinct prefixes accepted', () => {
    const dbs = [
      database('/data/users.db', 'users', [s3('b', 'databases/users'), { type: 'file', root: '/backups/users' }]),
      database('/data/user.db', 'user', [s3('b', 'databases/user'), { type: 'file', root: '/backups/user' }]),
      database('/data/other.db', 'other', [s3('c', 'databases/users'), s3('b', 'databases/users', 'http://127.0.0.1:9000')]),
    ];
    assert.doesNotThrow(() => checkDistinctPrefixes(dbs));
  });

  test('same bucket and prefix rejected', () => {
    const dbs = [database('/data/a/users.db', 'users', [s3('b', 'databases/users')]), database('/data/b/users.db', 'users2', [s3('b', 'databases/users')])];
    assertInvalid(() => checkDistinctPrefixes(dbs), '/data/a/users.db', '/data/b/users.db', 's3://b/databases/users');
  });

  test('nested prefix rejected', () => {
    const dbs = [database('/data/a.db', 'a', [s3('b', 'databases')]), database('/data/b.db', 'b', [s3('b', 'databases/b')])];
    assertInvalid(() => checkDistinctPrefixes(dbs), '/data/a.db', '/data/b.db');
  });

  test('bucket root overlaps everything', () => {
    const dbs = [database('/data/a.db', 'a', [s3('b', 'databases/a')]), database('/data/b.db', 'b', [s3('b', '')])];
    assertInvalid(() => checkDistinctPrefixes(dbs), '/data/a.db', '/data/b.db');
  });

  test('endpoint spelling ignored', () => {
    const dbs = [
      database('/data/a.db', 'a', [s3('b', 'p', 'http://127.0.0.1:9000/')]),
      database('/data/b.db', 'b', [s3('b', 'p', 'HTTP://127.0.0.1:9000')]),
    ];
    assertInvalid(() => checkDistinctPrefixes(dbs), '/data/a.db', '/data/b.db');
  });

  test('nested file directories rejected', () => {
    const dbs = [
      database('/data/a.db', 'a', [{ type: 'file', root: '/backups' }]),
      database('/data/b.db', 'b', [{ type: 'file', root: '/backups/b' }]),
    ];
    assertInvalid(() => checkDistinctPrefixes(dbs), '/data/a.db', '/data/b.db', 'file:///backups');
  });

  test('two replicas of one database', () => {
    const dbs = [database('/data/a.db', 'a', [s3('b', 'x'), s3('b', 'x')])];
    assertInvalid(() => checkDistinctPrefixes(dbs), 'replica "r0"', 'replica "r1"');
  });
});

describe('checkDistinctDatabases', () => {
  test('same path rejected', () => {
    const dbs = [database('/data/a.db', 'a', []), database('/data/a.db', 'b', [])];
    assertInvalid(() => checkDistinctDatabases(dbs), '/data/a.db', 'listed twice');
  });

  test('same name rejected', () => {
    const dbs = [database('/x/users.db', 'users', []), database('/y/users.db', 'users', [])];
    assertInvalid(() => checkDistinctDatabases(dbs), '/x/users.db', '/y/users.db', '"users"');
  });
});

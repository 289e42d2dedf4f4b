import assert from 'node:assert/strict';
import { existsSync, renameSync } from 'node:fs';
import fs from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';

import Database from 'better-sqlite3';

import { DEFAULTS, defaultMetaPath } from '../src/config.js';
import type { Config, DatabaseConfig, DirectoryConfig, ReplicaConfig } from '../src/config.js';
import type { ReplicaClientConfig } from '../src/replica/client.js';
import { createLogger } from '../src/logger.js';
import { Replicator } from '../src/replicator.js';
import type { ReplicatedDatabase } from '../src/replicator.js';
import { restore } from '../src/restore.js';
import { contentHash, integrityCheck } from './support/content.js';

/** One log record as pino writes it in JSON. */
interface LogRecord {
  level: string;
  msg: string;
  [field: string]: unknown;
}

let scratch: string;

before(async () => {
  scratch = await fs.mkdtemp(path.join(os.tmpdir(), 'walship-replicator-'));
});

after(async () => {
  await fs.rm(scratch, { recursive: true, force: true });
});

/** Returns a fresh directory under the scratch directory. */
function freshDir(name: string): Promise<string> {
  return fs.mkdtemp(path.join(scratch, `${name}-`));
}

/** Creates a WAL-mode database with rows at `dbPath`, built beside it and renamed into place. */
function createDatabase(dbPath: string, rows: number): void {
  const building = `${dbPath}.building`;
  const db = new Database(building);
  db.pragma('journal_mode = wal');
  db.exec('CREATE TABLE t (id INTEGER PRIMARY KEY, body TEXT NOT NULL)');
  const insert = db.prepare('INSERT INTO t (body) VALUES (?)');
  db.transaction(() => {
    for (let i = 0; i < rows; i++) insert.run(`row ${i} of ${path.basename(dbPath)}`);
  })();
  db.close();
  // A rename makes the whole database appear at once, as a restore or a copy tool would.
  renameSync(building, dbPath);
}

/** Appends rows to a database in one transaction. */
function addRows(dbPath: string, rows: number): void {
  const db = new Database(dbPath);
  const insert = db.prepare('INSERT INTO t (body) VALUES (?)');
  db.transaction(() => {
    for (let i = 0; i < rows; i++) insert.run(`later ${i}`);
  })();
  db.close();
}

/** Builds a replica config with short intervals. */
function replica(name: string, client: ReplicaClientConfig): ReplicaConfig {
  return { name, client, syncInterval: 50, retention: 0, retentionCheckInterval: DEFAULTS.retentionCheckInterval, snapshotInterval: 0 };
}

/** Settings of a database with short intervals and no time-based checkpoint. */
const SETTINGS = {
  monitorInterval: 50,
  checkpointInterval: 0,
  minCheckpointPageCount: DEFAULTS.minCheckpointPageCount,
  maxCheckpointPageCount: DEFAULTS.maxCheckpointPageCount,
  busyTimeout: DEFAULTS.busyTimeout,
};

/** Builds the config of a database replicated to the given replicas. */
function database(dbPath: string, name: string, replicas: ReplicaConfig[]): DatabaseConfig {
  return { path: dbPath, name, metaPath: defaultMetaPath(dbPath), ...SETTINGS, replicas };
}

/** Creates a replicator with fast retries and rescans, keeping its log records. */
function replicatorOf(config: Config): { replicator: Replicator; logs: LogRecord[] } {
  const logs: LogRecord[] = [];
  const logger = createLogger({ format: 'json', level: 'info', destination: { write: (line: string) => logs.push(JSON.parse(line) as LogRecord) } });
  const replicator = new Replicator(config, { logger, threads: 2, retryMinMs: 100, retryMaxMs: 400, rescanIntervalMs: 300 });
  return { replicator, logs };
}

/** Polls `condition` every 50 ms for at most `timeoutMs`. */
async function waitFor(what: string, condition: () => boolean | Promise<boolean>, timeoutMs = 15_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await condition())) {
    if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

/** Restores a file replica into a new file and checks it against the source database. */
async function assertRestores(root: string, dbPath: string): Promise<void> {
  const output = path.join(await freshDir('restored'), 'out.db');
  await restore({ client: { type: 'file', root }, outputPath: output });
  assert.equal(integrityCheck(output), 'ok');
  assert.equal(contentHash(output), contentHash(dbPath));
}

/** Returns a port of 127.0.0.1 on which nothing listens. */
async function closedPort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as net.AddressInfo).port;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

describe('replicator databases', () => {
  test('broken database retried, others ship', async () => {
    const dir = await freshDir('broken');
    const good = path.join(dir, 'good.db');
    const missing = path.join(dir, 'late.db');
    const notSqlite = path.join(dir, 'notes.db');
    createDatabase(good, 100);
    await fs.writeFile(notSqlite, 'plain text\n');

    const config: Config = {
      dbs: [
        database(good, 'good', [replica('file', { type: 'file', root: path.join(dir, 'r-good') })]),
        database(missing, 'late', [replica('file', { type: 'file', root: path.join(dir, 'r-late') })]),
        database(notSqlite, 'notes', [replica('file', { type: 'file', root: path.join(dir, 'r-notes') })]),
      ],
      logLevel: 'info',
      logFormat: 'json',
    };
    const { replicator, logs } = replicatorOf(config);
    const added: string[] = [];
    replicator.on('added', (rd: ReplicatedDatabase) => added.push(rd.db.name));
    await replicator.start();
    try {
      assert.deepEqual(added, ['good']);
      const states = Object.fromEntries(replicator.supervisors.map((s) => [s.config.name, s.state]));
      assert.deepEqual(states, { good: 'running', late: 'waiting', notes: 'waiting' });

      const reported = logs.filter((r) => r.msg === 'database unavailable, retrying');
      assert.ok(reported.some((r) => r.db === 'late' && r.path === missing && String(r.err).includes('not found')), JSON.stringify(reported));
      assert.ok(reported.some((r) => r.db === 'notes' && String(r.err).includes('not a SQLite database')), JSON.stringify(reported));

      // The healthy database ships while the others wait.
      addRows(good, 20);
      await replicator.sync('good');
      await assertRestores(path.join(dir, 'r-good'), good);

      // The missing database is picked up once it appears.
      createDatabase(missing, 50);
      await waitFor('late.db to open', () => added.includes('late'));
      await replicator.sync('late');
      await assertRestores(path.join(dir, 'r-late'), missing);

      assert.equal(await fs.readFile(notSqlite, 'utf8'), 'plain text\n');
      assert.equal(replicator.supervisors.find((s) => s.config.name === 'notes')!.state, 'waiting');
      assert.equal(replicator.allSynced(), false);
    } finally {
      await replicator.stop();
    }
  });

  test('failing replica, other ships', async () => {
    const dir = await freshDir('replicas');
    const dbPath = path.join(dir, 'app.db');
    createDatabase(dbPath, 100);
    const port = await closedPort();
    const unreachable: ReplicaClientConfig = {
      type: 's3',
      bucket: 'nowhere',
      prefix: 'app',
      endpoint: `http://127.0.0.1:${port}`,
      region: 'us-east-1',
      forcePathStyle: true,
      accessKeyId: 'x',
      secretAccessKey: 'y',
    };
    const config: Config = {
      dbs: [database(dbPath, 'app', [replica('down', unreachable), replica('file', { type: 'file', root: path.join(dir, 'r') })])],
      logLevel: 'info',
      logFormat: 'json',
    };
    const { replicator } = replicatorOf(config);
    await replicator.start();
    try {
      const [down, file] = replicator.databases[0]!.replicas;
      addRows(dbPath, 30);
      await replicator.databases[0]!.db.sync();
      await file!.sync();
      await assertRestores(path.join(dir, 'r'), dbPath);

      await assert.rejects(down!.sync());
      assert.ok(down!.lastError !== undefined);
      assert.equal(file!.lastError, undefined);
      await assert.rejects(replicator.sync(), /nowhere|127\.0\.0\.1|ECONNREFUSED/);
    } finally {
      const report = await replicator.shutdown(2000);
      assert.equal(report.complete, false);
      assert.deepEqual(
        report.unshipped.map((u) => u.replicas.map((r) => r.replica)),
        [['down']],
      );
    }
  });

  test('shutdown report complete', async () => {
    const dir = await freshDir('shutdown');
    const dbPath = path.join(dir, 'app.db');
    createDatabase(dbPath, 50);
    const root = path.join(dir, 'r');
    const { replicator } = replicatorOf({ dbs: [database(dbPath, 'app', [replica('file', { type: 'file', root })])], logLevel: 'info', logFormat: 'json' });
    const removed: string[] = [];
    replicator.on('removed', (rd: ReplicatedDatabase) => removed.push(rd.db.name));
    await replicator.start();
    addRows(dbPath, 10);

    const report = await replicator.shutdown(10_000);
    assert.deepEqual(report, { complete: true, timedOut: false, unshipped: [] });
    assert.deepEqual(removed, ['app']);
    assert.deepEqual(replicator.databases, []);
    await assertRestores(root, dbPath);
  });
});

describe('replicator directories', () => {
  /** Builds a config with one directory entry for `dir`, replicated to a file replica at `root`. */
  function directoryConfig(dir: string, root: string): Config {
    const directory: DirectoryConfig = { dir, pattern: '*.db', recursive: false, settings: SETTINGS, replicas: [replica('file', { type: 'file', root })] };
    return { dbs: [], dirs: [directory], logLevel: 'info', logFormat: 'json' };
  }

  test('new file picked up, removed file stops', async () => {
    const dir = await freshDir('dir');
    const data = path.join(dir, 'data');
    await fs.mkdir(data);
    const root = path.join(dir, 'replica');
    createDatabase(path.join(data, 'first.db'), 40);
    await fs.writeFile(path.join(data, 'ignored.txt'), 'not matched\n');

    const { replicator, logs } = replicatorOf(directoryConfig(data, root));
    const added: string[] = [];
    const removed: string[] = [];
    replicator.on('added', (rd: ReplicatedDatabase) => added.push(rd.db.name));
    replicator.on('removed', (rd: ReplicatedDatabase) => removed.push(rd.db.name));
    await replicator.start();
    try {
      assert.deepEqual(added, ['first']);

      // A new file is found by the watch or the rescan and gets its own folder.
      const second = path.join(data, 'Second Tenant.db');
      createDatabase(second, 60);
      await waitFor('the second database', () => added.includes('second_tenant'));
      await replicator.sync('second_tenant');
      await assertRestores(path.join(root, 'databases', 'second_tenant'), second);

      // A name that collides with a running database is rejected; the running one goes on.
      const collision = path.join(data, 'FIRST.db');
      createDatabase(collision, 5);
      await waitFor('the rejection', () => logs.some((r) => r.msg.includes('rejected') && r.path === collision));
      assert.ok(String(logs.find((r) => r.path === collision)!.err).includes(path.join(data, 'first.db')));
      assert.equal(replicator.supervisors.length, 2);
      await fs.rm(collision);

      // A removed file stops; its replica stays restorable.
      const first = path.join(data, 'first.db');
      const expected = contentHash(first);
      await replicator.sync('first');
      for (const suffix of ['', '-wal', '-shm']) await fs.rm(first + suffix, { force: true });
      await waitFor('the removal', () => removed.includes('first'));
      assert.ok(logs.some((r) => r.msg.startsWith('database removed from directory') && r.db === 'first'));
      const output = path.join(await freshDir('restored'), 'first.db');
      await restore({ client: { type: 'file', root: path.join(root, 'databases', 'first') }, outputPath: output });
      assert.equal(contentHash(output), expected);
      assert.deepEqual(
        replicator.databases.map((rd) => rd.db.name),
        ['second_tenant'],
      );
    } finally {
      await replicator.stop();
    }
  });

  test('colliding names at start rejected', async () => {
    const dir = await freshDir('collide');
    createDatabase(path.join(dir, 'app.db'), 1);
    createDatabase(path.join(dir, 'APP.db'), 1);
    const { replicator } = replicatorOf(directoryConfig(dir, path.join(dir, '..', `${path.basename(dir)}-replica`)));
    await assert.rejects(replicator.start(), (err: Error) => {
      assert.ok(err.message.includes(path.join(dir, 'app.db')), err.message);
      assert.ok(err.message.includes(path.join(dir, 'APP.db')), err.message);
      return true;
    });
    assert.equal(existsSync(path.join(dir, '.app.db-walship')), false);
  });
});

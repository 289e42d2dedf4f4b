import assert from 'node:assert/strict';
import { existsSync, renameSync } from 'node:fs';
import fs from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';

import Database from 'better-sqlite3';

import { Walship, WalshipError, formatPos } from '../src/index.js';
import type { GenerationEvent, Pos, SnapshotEvent, TransactionEvent, WalshipOptions } from '../src/index.js';
import { contentHash, integrityCheck } from './support/content.js';
import { S3RVER_CREDENTIAL, startS3Server } from './support/s3-server.js';
import type { S3Server } from './support/s3-server.js';

let scratch: string;
let s3: S3Server;

before(async () => {
  scratch = await fs.mkdtemp(path.join(os.tmpdir(), 'walship-library-'));
  s3 = await startS3Server();
});

after(async () => {
  await s3.close();
  await fs.rm(scratch, { recursive: true, force: true });
});

/** Returns a fresh directory under the scratch directory. */
function freshDir(name: string): Promise<string> {
  return fs.mkdtemp(path.join(scratch, `${name}-`));
}

/** Creates a WAL-mode database with a table of `rows` rows. */
function createDatabase(dbPath: string, rows: number): void {
  const db = new Database(dbPath);
  db.pragma('journal_mode = wal');
  db.exec('CREATE TABLE t (id INTEGER PRIMARY KEY, body TEXT NOT NULL)');
  insertRows(db, rows, 'first');
  db.close();
}

/** Inserts rows in one transaction through the application's connection. */
function insertRows(db: Database.Database, rows: number, label: string): void {
  const insert = db.prepare('INSERT INTO t (body) VALUES (?)');
  db.transaction(() => {
    for (let i = 0; i < rows; i++) insert.run(`${label} ${i} ${'x'.repeat(100)}`);
  })();
}

/** Options with short intervals, so that tests do not wait for the defaults. */
function fastOptions(options: WalshipOptions): WalshipOptions {
  return { threads: 2, settings: { monitorInterval: 50, checkpointInterval: 0 }, ...options };
}

/** Returns the bucket replica of the test server, in the CLI's -bucket form. */
function bucketReplica(): { bucket: string; endpoint: string; syncInterval: number } {
  return { bucket: s3.bucket, endpoint: s3.endpoint, syncInterval: 50 };
}

/** Environment with the test server's credentials. */
const S3_ENV = { AWS_ACCESS_KEY_ID: S3RVER_CREDENTIAL, AWS_SECRET_ACCESS_KEY: S3RVER_CREDENTIAL };

/** Polls `condition` every 50 ms for at most `timeoutMs`. */
async function waitFor(what: string, condition: () => boolean, timeoutMs = 15_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

/** Compares positions as `generation/index:offset`, which names both in a failure. */
function assertPos(actual: Pos, expected: Pos, message?: string): void {
  assert.equal(formatPos(actual), formatPos(expected), message);
}

/** Returns a port of 127.0.0.1 on which nothing listens. */
async function closedPort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as net.AddressInfo).port;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

describe('Walship replication', () => {
  test('file replica: sync, positions, events, restore', async () => {
    const dir = await freshDir('file');
    const dbPath = path.join(dir, 'app.db');
    createDatabase(dbPath, 50);

    const walship = new Walship(fastOptions({ path: dbPath, replicas: [`file://${dir}/replica`] }));
    const transactions: TransactionEvent[] = [];
    const snapshots: SnapshotEvent[] = [];
    walship.on('transaction', (event) => transactions.push(event));
    walship.on('snapshot', (event) => snapshots.push(event));
    await walship.start();

    const app = new Database(dbPath);
    try {
      assert.equal(walship.name, 'app');
      assert.equal(walship.isOpen, true);
      const first = await walship.sync();
      assert.notEqual(first.db.generation, '');
      assertPos(first.replicas.file!, first.db, 'replica holds everything after sync');

      // Three transactions in two syncs: each sync stores at least one segment.
      insertRows(app, 200, 'second');
      await walship.sync();
      insertRows(app, 3, 'third');
      insertRows(app, 3, 'fourth');
      const second = await walship.sync();
      assert.equal(second.db.generation, first.db.generation);
      assert.ok(second.db.index > first.db.index || second.db.offset > first.db.offset, `position did not advance: ${formatPos(first.db)} to ${formatPos(second.db)}`);
      assertPos(second.replicas.file!, second.db);
      assertPos(walship.position().replicas.file!, second.db);

      // One snapshot starts the generation, then segments follow each other without a gap.
      assert.equal(snapshots.length, 1);
      assert.deepEqual({ ...snapshots[0]!, bytes: 0 }, { db: 'app', replica: 'file', generation: first.db.generation, index: 0, bytes: 0 });
      assert.ok(snapshots[0]!.bytes > 0);
      assert.ok(transactions.length >= 2, `expected at least 2 transaction events, got ${transactions.length}`);
      for (const [i, event] of transactions.entries()) {
        assert.equal(event.db, 'app');
        assert.equal(event.replica, 'file');
        assert.ok(event.elapsedMs >= 0, `elapsedMs ${event.elapsedMs}`);
        assert.ok(event.lagMs >= 0, `lagMs ${event.lagMs}`);
        if (event.pre.index === event.post.index) assert.equal(event.bytes, event.post.offset - event.pre.offset);
        if (i > 0) assertPos(event.pre, transactions[i - 1]!.post, `event ${i} does not start where event ${i - 1} ended`);
      }
      assertPos(transactions.at(-1)!.post, second.db, 'last event ends at the synced position');

      const output = path.join(dir, 'restored.db');
      const outcome = await walship.restore({ outputPath: output });
      assert.equal(outcome.status, 'restored');
      assert.ok(outcome.status === 'restored');
      assert.equal(outcome.location, `file://${dir}/replica`);
      assertPos(outcome.result.pos, second.db);
      assert.equal(integrityCheck(output), 'ok');
      assert.equal(contentHash(output), contentHash(dbPath));
    } finally {
      app.close();
      await walship.close();
    }

    assert.equal(walship.isOpen, false);
    assert.notEqual(walship.position().db.generation, '', 'final positions stay readable after close');
    await assert.rejects(walship.sync(), (err: unknown) => err instanceof WalshipError && /is closed/.test(err.message));
    assert.equal(existsSync(`${dbPath}-walship.lock`), false, 'lock file released');
  });

  test('bucket form and a second replica', async () => {
    const dir = await freshDir('bucket');
    const dbPath = path.join(dir, 'analytics.db');
    createDatabase(dbPath, 100);

    const walship = await Walship.open(
      fastOptions({ path: dbPath, dbName: 'Production App', replicas: [bucketReplica(), { url: path.join(dir, 'local'), name: 'local' }], env: S3_ENV }),
    );
    const app = new Database(dbPath);
    let synced: Pos;
    try {
      insertRows(app, 300, 'bucket');
      const positions = await walship.sync();
      synced = positions.db;
      assert.deepEqual(Object.keys(positions.replicas), ['s3', 'local']);
      assertPos(positions.replicas.s3!, synced);
      assertPos(positions.replicas.local!, synced);
    } finally {
      app.close();
      await walship.close({ timeoutMs: 10_000 });
    }

    // The bucket form puts the database under databases/<sanitized name>/.
    const output = path.join(dir, 'from-bucket.db');
    const outcome = await Walship.restore({ replica: bucketReplica(), outputPath: output, dbName: 'Production App', env: S3_ENV });
    assert.ok(outcome.status === 'restored', `unexpected outcome ${outcome.status}`);
    assert.equal(outcome.dbName, 'production_app');
    assert.equal(outcome.location, `s3://${s3.bucket}/databases/production_app`);
    assertPos(outcome.result.pos, synced);
    assert.equal(integrityCheck(output), 'ok');
    assert.equal(contentHash(output), contentHash(dbPath));
    assert.ok(existsSync(path.join(s3.directory, s3.bucket, 'databases', 'production_app', 'generations')));
  });

  test('replaced file starts a generation', async () => {
    const dir = await freshDir('generation');
    const dbPath = path.join(dir, 'app.db');
    createDatabase(dbPath, 20);

    const walship = new Walship(fastOptions({ path: dbPath, replicas: [{ url: `file://${dir}/replica`, syncInterval: 50 }] }));
    const generations: GenerationEvent[] = [];
    walship.on('generation', (event) => generations.push(event));
    await walship.start();
    try {
      const before = (await walship.sync()).db.generation;

      // An application that swaps in a new file, as after its own restore.
      const replacement = path.join(dir, 'replacement.db');
      createDatabase(replacement, 70);
      renameSync(replacement, dbPath);
      for (const suffix of ['-wal', '-shm']) await fs.rm(`${dbPath}${suffix}`, { force: true });
      await waitFor('a new generation', () => generations.length > 0);

      assert.equal(generations[0]!.previous, before);
      assert.equal(generations[0]!.reason, 'database file replaced');
      assert.notEqual(generations[0]!.generation, before);
      const after = await walship.sync();
      assert.equal(after.db.generation, generations.at(-1)!.generation);

      const output = path.join(dir, 'restored.db');
      const outcome = await walship.restore({ outputPath: output });
      assert.ok(outcome.status === 'restored');
      assert.equal(outcome.result.generation, after.db.generation);
      assert.equal(contentHash(output), contentHash(dbPath));
    } finally {
      await walship.close();
    }
  });

  test('unreachable replica: error event, close rejects', async () => {
    const dir = await freshDir('unreachable');
    const dbPath = path.join(dir, 'app.db');
    createDatabase(dbPath, 10);
    const endpoint = `http://127.0.0.1:${await closedPort()}`;

    const walship = new Walship(
      fastOptions({ path: dbPath, replicas: [{ bucket: 'nowhere', endpoint, syncInterval: 50, accessKeyId: 'id', secretAccessKey: 'secret' }] }),
    );
    const errors: { err: Error; replica?: string }[] = [];
    walship.on('error', (err, context) => errors.push({ err, replica: context.replica }));
    await walship.start();

    await waitFor('an error event', () => errors.length > 0, 20_000);
    assert.equal(errors[0]!.replica, 's3');
    await assert.rejects(walship.sync());
    await assert.rejects(walship.close({ timeoutMs: 2000 }), /closing walship of database app .*replicas behind: s3 at/);
    assert.equal(existsSync(`${dbPath}-walship.lock`), false, 'lock file released');
  });
});

describe('Walship start', () => {
  test('missing file rejects with NOT_FOUND', async () => {
    const dir = await freshDir('missing');
    const dbPath = path.join(dir, 'absent.db');
    await assert.rejects(Walship.open({ path: dbPath, replicas: [path.join(dir, 'replica')] }), (err: unknown) => err instanceof WalshipError && err.code === 'NOT_FOUND');
    assert.equal(existsSync(`${dbPath}-walship.lock`), false);
  });

  test('retry opens the file once created', async () => {
    const dir = await freshDir('retry');
    const dbPath = path.join(dir, 'late.db');
    const walship = await Walship.open(fastOptions({ path: dbPath, replicas: [path.join(dir, 'replica')], retry: true }));
    try {
      assert.equal(walship.isOpen, false);
      await assert.rejects(walship.sync(), (err: unknown) => err instanceof WalshipError && err.code === 'NOT_FOUND');

      const building = path.join(dir, 'building.db');
      createDatabase(building, 30);
      renameSync(building, dbPath);
      await waitFor('the database to open', () => walship.isOpen);
      const positions = await walship.sync();
      assertPos(positions.replicas.file!, positions.db);
    } finally {
      await walship.close();
    }
  });

  test('second instance rejects with LOCKED', async () => {
    const dir = await freshDir('locked');
    const dbPath = path.join(dir, 'app.db');
    createDatabase(dbPath, 5);
    const first = await Walship.open(fastOptions({ path: dbPath, replicas: [path.join(dir, 'one')] }));
    try {
      await assert.rejects(Walship.open(fastOptions({ path: dbPath, replicas: [path.join(dir, 'two')] })), (err: unknown) => err instanceof WalshipError && err.code === 'LOCKED');
      assert.equal(first.isOpen, true);
    } finally {
      await first.close();
    }
  });

  test('invalid options name the value', () => {
    const dbPath = path.join(scratch, 'options.db');
    const invalid = (options: WalshipOptions, pattern: RegExp) =>
      assert.throws(() => new Walship(options), (err: unknown) => err instanceof WalshipError && err.code === 'INVALID_INPUT' && pattern.test(err.message));

    invalid({ path: dbPath, replicas: [] }, /has no replicas/);
    invalid({ path: '', replicas: ['file:///tmp/x'] }, /path is missing/);
    invalid({ path: dbPath, replicas: ['ftp://host/x'] }, /replica type "ftp" is not supported/);
    invalid({ path: dbPath, replicas: [{ url: '/tmp/a', name: 'r' }, { url: '/tmp/b', name: 'r' }] }, /two replicas are named "r"/);
    const full = { name: 'file', client: { type: 'file' as const, root: '/tmp/full' }, syncInterval: 1000, retention: 0, retentionCheckInterval: 3600_000, snapshotInterval: 0 };
    invalid({ path: dbPath, replicas: ['/tmp/e', full] }, /has two replicas named "file"/);
    invalid({ path: dbPath, replicas: ['/tmp/same', '/tmp/same/inner'] }, /same or nested replica location/);
    invalid({ path: dbPath, replicas: [{ bucket: 'b', syncInterval: 'soon' }] }, /sync-interval "soon" is not a duration/);
    invalid({ path: dbPath, replicas: ['/tmp/c'], settings: { busyTimeout: -1 } }, /busyTimeout -1/);
    invalid({ path: dbPath, dbName: '///', replicas: ['/tmp/d'] }, /database name "\/\/\/"/);
  });

  test('two replicas of a type get numbered names', () => {
    const walship = new Walship({ path: path.join(scratch, 'names.db'), replicas: ['/tmp/names-a', '/tmp/names-b', { bucket: 'b', accessKeyId: 'i', secretAccessKey: 's' }] });
    assert.deepEqual(
      walship.config.replicas.map((r) => r.name),
      ['file', 'file2', 's3'],
    );
    assert.deepEqual(walship.config.replicas[2]!.client, { type: 's3', bucket: 'b', prefix: 'databases/names', accessKeyId: 'i', secretAccessKey: 's' });
  });
});

describe('Walship.restore', () => {
  test('outcomes of the if options', async () => {
    const dir = await freshDir('outcomes');
    const replica = { bucket: s3.bucket, endpoint: s3.endpoint };
    const output = path.join(dir, 'nothing.db');

    const empty = await Walship.restore({ replica, outputPath: output, ifReplicaExists: true, env: S3_ENV });
    assert.deepEqual(empty, { status: 'no-backup', dbName: 'nothing', location: `s3://${s3.bucket}/databases/nothing` });
    await assert.rejects(Walship.restore({ replica, outputPath: output, env: S3_ENV }), (err: unknown) => err instanceof WalshipError && err.code === 'NO_GENERATION');
    assert.equal(existsSync(output), false);

    await fs.writeFile(output, 'existing');
    assert.deepEqual(await Walship.restore({ replica, outputPath: output, ifDbNotExists: true, env: S3_ENV }), { status: 'exists', dbName: 'nothing' });
    await assert.rejects(Walship.restore({ replica, outputPath: output, env: S3_ENV }), /already exists/);
    assert.equal(await fs.readFile(output, 'utf8'), 'existing', 'the existing file is left as it was');
  });

  test('leftover WAL rejected', async () => {
    const dir = await freshDir('leftover');
    const output = path.join(dir, 'app.db');
    await fs.writeFile(`${output}-wal`, 'old wal');
    await assert.rejects(
      Walship.restore({ replica: `file://${dir}/replica`, outputPath: output }),
      (err: unknown) => err instanceof WalshipError && err.code === 'INVALID_INPUT' && err.message.includes(`${output}-wal exists`),
    );
    assert.equal(existsSync(output), false);
  });
});

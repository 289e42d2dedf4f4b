import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';

import Database from 'better-sqlite3';

import type { ReplicaClient } from '../src/replica/client.js';
import { createReplicaClient } from '../src/replica/create.js';
import { listGenerations, listSegments, listSnapshots } from '../src/replica/listing.js';
import { restore } from '../src/restore.js';
import { contentHash, integrityCheck } from './support/content.js';
import { s3ClientConfig, S3RVER_CREDENTIAL, startS3Server } from './support/s3-server.js';
import type { S3Server } from './support/s3-server.js';

/**
 * Direction "walship restores what Litestream writes". The real Litestream
 * v0.3.13 replicates a database that a writer changes, to a file replica and
 * an S3 replica on s3rver at once. Then walship restores both, and the tests
 * compare its restores with the source and with Litestream's own restores.
 */

const LITESTREAM = fileURLToPath(new URL('../../node_modules/@flydotio/litestream-linux-x64/litestream', import.meta.url));
const S3_PREFIX = 'interop/db';

// Bounds on waiting for Litestream, so that a hung process fails the test instead of stalling it.
const START_TIMEOUT_MS = 10_000;
const STOP_TIMEOUT_MS = 15_000;
const POLL_MS = 50;

let dir: string;
let s3: S3Server;
let litestream: ChildProcess | undefined;
let litestreamLog = '';
let sourcePath: string;
let fileRoot: string;
let checkpointResult: unknown;

before(async () => {
  dir = await fs.mkdtemp(path.join(os.tmpdir(), 'walship-interop-'));
  s3 = await startS3Server();
  sourcePath = path.join(dir, 'source.db');
  fileRoot = path.join(dir, 'file-replica');

  const writer = openWriter(sourcePath);
  try {
    await writeConfig();
    litestream = startLitestream();
    await waitForSnapshot();
    checkpointResult = await writeWorkload(writer);
    // Litestream polls every second. Giving it time to ship the last writes
    // leaves its final sync on SIGTERM nothing to upload: Litestream v0.3.13
    // can fail that sync when a poll writes the same segment at the same time
    // ("client write: stat ...wal.lz4.tmp: no such file or directory").
    await sleep(2500);
    await stopLitestream();
  } finally {
    writer.close();
  }
});

after(async () => {
  // Only reached with Litestream still running when setup failed half-way.
  if (litestream !== undefined && litestream.exitCode === null && litestream.signalCode === null) litestream.kill('SIGKILL');
  await s3?.close();
  await fs.rm(dir, { recursive: true, force: true });
});

/** Creates the source database in WAL mode with a rowid table and a WITHOUT ROWID table. */
function openWriter(dbPath: string): Database.Database {
  const db = new Database(dbPath);
  db.pragma('journal_mode = WAL');
  // While Litestream runs, only Litestream and the workload's one TRUNCATE checkpoint move pages out of the WAL.
  db.pragma('wal_autocheckpoint = 0');
  db.exec('CREATE TABLE t (id INTEGER PRIMARY KEY, body TEXT NOT NULL, payload BLOB NOT NULL)');
  db.exec('CREATE TABLE kv (k TEXT PRIMARY KEY, v INTEGER NOT NULL) WITHOUT ROWID');
  return db;
}

/**
 * Writes Litestream's config: polls every 100 ms, checkpoints once the WAL
 * reaches 16 pages so that the workload spans several WAL indexes, and sends to
 * a file replica and an S3 replica.
 */
async function writeConfig(): Promise<void> {
  const config = `
dbs:
  - path: ${sourcePath}
    monitor-interval: 100ms
    min-checkpoint-page-count: 16
    replicas:
      - name: file
        type: file
        path: ${fileRoot}
        sync-interval: 100ms
      - name: s3
        type: s3
        bucket: ${s3.bucket}
        path: ${S3_PREFIX}
        endpoint: ${s3.endpoint}
        region: us-east-1
        force-path-style: true
        access-key-id: ${S3RVER_CREDENTIAL}
        secret-access-key: ${S3RVER_CREDENTIAL}
        sync-interval: 100ms
`;
  await fs.writeFile(path.join(dir, 'litestream.yml'), config);
}

/** Starts `litestream replicate` and keeps its output for failure messages. */
function startLitestream(): ChildProcess {
  const child = spawn(LITESTREAM, ['replicate', '-config', path.join(dir, 'litestream.yml')], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: dir },
  });
  child.stdout!.on('data', (chunk: Buffer) => (litestreamLog += chunk.toString()));
  child.stderr!.on('data', (chunk: Buffer) => (litestreamLog += chunk.toString()));
  return child;
}

/** Waits until both replicas hold a snapshot, that is, until Litestream replicates. */
async function waitForSnapshot(): Promise<void> {
  const clients = replicaClients();
  try {
    const deadline = Date.now() + START_TIMEOUT_MS;
    while (Date.now() < deadline) {
      if (litestream?.exitCode !== null) throw new Error(`litestream exited early:\n${litestreamLog}`);
      const ready = await Promise.all(clients.map(hasSnapshot));
      if (ready.every(Boolean)) return;
      await sleep(POLL_MS);
    }
    throw new Error(`no snapshot after ${START_TIMEOUT_MS} ms:\n${litestreamLog}`);
  } finally {
    await Promise.all(clients.map((c) => c.close()));
  }
}

/** Reports whether a replica has a generation with a snapshot. */
async function hasSnapshot(client: ReplicaClient): Promise<boolean> {
  for (const generation of await listGenerations(client)) {
    if ((await listSnapshots(client, generation)).length > 0) return true;
  }
  return false;
}

/**
 * Changes the source in many transactions while Litestream runs: small
 * inserts with pauses between them, one large transaction, an application
 * TRUNCATE checkpoint, updates, deletes and upserts. Returns the checkpoint's result.
 */
async function writeWorkload(db: Database.Database): Promise<unknown> {
  const insert = db.prepare('INSERT INTO t (body, payload) VALUES (?, ?)');
  const upsert = db.prepare('INSERT INTO kv (k, v) VALUES (?, ?) ON CONFLICT (k) DO UPDATE SET v = v + excluded.v');
  const insertRows = db.transaction((count: number, tag: string) => {
    for (let i = 0; i < count; i++) insert.run(`${tag} row ${i}`, randomBytes(600));
  });

  for (let round = 0; round < 8; round++) {
    insertRows(20, `small ${round}`);
    upsert.run(`key ${round % 3}`, round);
    await sleep(120);
  }

  // About 3 MiB in one transaction, far past the checkpoint threshold.
  insertRows(5000, 'large');
  await sleep(300);

  // Litestream keeps a read transaction open, so a TRUNCATE checkpoint waits the
  // whole busy timeout for it and then reports busy; keep that wait short.
  db.pragma('busy_timeout = 200');
  const checkpoint = db.pragma('wal_checkpoint(TRUNCATE)');
  db.pragma('busy_timeout = 5000');
  db.exec(`UPDATE t SET body = body || ' updated' WHERE id % 7 = 0`);
  await sleep(150);
  db.exec('DELETE FROM t WHERE id % 11 = 0');

  for (let round = 0; round < 6; round++) {
    insertRows(15, `tail ${round}`);
    upsert.run(`key ${round % 4}`, round * 10);
    await sleep(120);
  }
  return checkpoint;
}

/** Sends SIGTERM to Litestream and waits, bounded, for it to exit. */
async function stopLitestream(): Promise<void> {
  const child = litestream!;
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  child.kill('SIGTERM');

  const timer = new AbortController();
  const timeout = sleep(STOP_TIMEOUT_MS, 'timeout' as const, { signal: timer.signal }).catch(() => 'cancelled' as const);
  const outcome = await Promise.race([exited, timeout]);
  timer.abort();
  if (outcome === 'timeout') {
    child.kill('SIGKILL');
    throw new Error(`litestream did not exit within ${STOP_TIMEOUT_MS} ms of SIGTERM:\n${litestreamLog}`);
  }
  assert.equal(outcome, 0, `litestream exited with ${outcome}:\n${litestreamLog}`);
}

/** Returns clients for the file replica and the S3 replica, in that order. */
function replicaClients(): ReplicaClient[] {
  return [createReplicaClient({ type: 'file', root: fileRoot }), createReplicaClient(s3ClientConfig(s3, s3.bucket, S3_PREFIX))];
}

/** Runs Litestream's own restore of the file replica up to one WAL index. */
function litestreamRestore(output: string, generation: string, index: number): void {
  const args = ['restore', '-o', output, '-generation', generation, '-index', String(index), `file://${fileRoot}`];
  const result = spawnSync(LITESTREAM, args, { encoding: 'utf8', timeout: 20_000, env: { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: dir } });
  assert.equal(result.status, 0, `litestream ${args.join(' ')} failed: ${result.error?.message ?? ''}${result.stderr}`);
}

describe('walship restores what Litestream writes', () => {
  test('workload spans several WAL indexes', async () => {
    const client = createReplicaClient({ type: 'file', root: fileRoot });
    try {
      const generations = await listGenerations(client);
      assert.ok(generations.length >= 1);
      const segments = await listSegments(client, generations.at(-1)!);
      const indexes = new Set(segments.map((s) => s.index));
      assert.ok(indexes.size >= 3, `expected 3 or more WAL indexes, found ${[...indexes].join(', ')}\n${litestreamLog}`);
      assert.ok(Array.isArray(checkpointResult), 'the application checkpoint ran');
    } finally {
      await client.close();
    }
  });

  for (const name of ['file', 's3'] as const) {
    test(`latest restore from ${name} replica matches source`, async () => {
      const config = name === 'file' ? ({ type: 'file', root: fileRoot } as const) : s3ClientConfig(s3, s3.bucket, S3_PREFIX);
      const output = path.join(dir, `restored-${name}.db`);

      const result = await restore({ client: config, outputPath: output });

      assert.equal(integrityCheck(output), 'ok');
      assert.equal(contentHash(output), contentHash(sourcePath));
      assert.ok(result.pos.index >= 2, `restore reached index ${result.pos.index}`);
    });
  }

  test('every WAL index restores as Litestream restores it', async () => {
    const [file, s3Client] = replicaClients();
    try {
      const generation = (await listGenerations(file!)).at(-1)!;
      const segments = await listSegments(file!, generation);
      const firstSnapshots = await Promise.all([file!, s3Client!].map(async (c) => (await listSnapshots(c, generation))[0]!.index));
      const lastIndex = segments.at(-1)!.index;

      for (let index = Math.max(...firstSnapshots); index <= lastIndex; index++) {
        const expected = path.join(dir, `litestream-${index}.db`);
        litestreamRestore(expected, generation, index);
        const expectedHash = contentHash(expected);

        for (const [name, client] of [['file', file!], ['s3', s3Client!]] as const) {
          const output = path.join(dir, `walship-${name}-${index}.db`);
          const result = await restore({ client, outputPath: output, generation, index });
          assert.equal(result.pos.index, index);
          assert.equal(integrityCheck(output), 'ok');
          assert.equal(contentHash(output), expectedHash, `${name} replica at index ${index}`);
        }
      }
    } finally {
      await Promise.all([file!.close(), s3Client!.close()]);
    }
  });
});

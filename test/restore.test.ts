import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';

import Database from 'better-sqlite3';

import { WalshipError } from '../src/errors.js';
import { FileReplicaClient } from '../src/replica/file-client.js';
import { listSegments } from '../src/replica/listing.js';
import { restore } from '../src/restore.js';
import { fetchSegmentsInOrder } from '../src/restore/download.js';
import { contentHash, fixtureDigest, integrityCheck } from './support/content.js';

const FIXTURE = fileURLToPath(new URL('../../test/fixtures/litestream-v0.3.11/', import.meta.url));
const RESTORE_MODULE = fileURLToPath(new URL('../src/restore.js', import.meta.url));

const GEN1 = '78eb93ce395367ad';
const GEN2 = 'bec662feba8af0f3';

interface Point {
  name: string;
  rows: number;
  max_id: number;
  sha256: string;
}

let points: Map<string, Point>;
let scratch: string;

before(async () => {
  const expected = JSON.parse(await fs.readFile(path.join(FIXTURE, 'expected.json'), 'utf8')) as { points: Point[] };
  points = new Map(expected.points.map((p) => [p.name, p]));
  scratch = await fs.mkdtemp(path.join(os.tmpdir(), 'walship-restore-'));
});

after(async () => {
  await fs.rm(scratch, { recursive: true, force: true });
});

/**
 * Copies the fixture replica into a fresh folder and sets each object's
 * modification time from the manifest, because the latest generation is the
 * one with the newest object and git does not keep file times.
 */
async function copyReplica(): Promise<{ root: string; out: string }> {
  const dir = await fs.mkdtemp(path.join(scratch, 'case-'));
  const root = path.join(dir, 'replica');
  await fs.cp(path.join(FIXTURE, 'file-replica'), root, { recursive: true });

  const manifest = JSON.parse(await fs.readFile(path.join(FIXTURE, 'file-replica.manifest.json'), 'utf8')) as Array<{
    key: string;
    mtime: string;
  }>;
  for (const { key, mtime } of manifest) {
    // Date parses at most millisecond precision, so drop the manifest's extra digits.
    const time = new Date(mtime.replace(/(\.\d{3})\d*Z$/, '$1Z'));
    await fs.utimes(path.join(root, key), time, time);
  }

  const out = path.join(dir, 'out');
  await fs.mkdir(out);
  return { root, out };
}

/** Counts the rows of table `t` and returns its lowest and highest id. */
function tableStats(dbPath: string): { rows: number; minId: number; maxId: number } {
  const db = new Database(dbPath, { fileMustExist: true });
  try {
    return db.prepare('SELECT count(*) AS rows, min(id) AS minId, max(id) AS maxId FROM t').get() as {
      rows: number;
      minId: number;
      maxId: number;
    };
  } finally {
    db.close();
  }
}

/** Checks a restored database against a named point of the fixture. */
function assertPoint(dbPath: string, name: string): void {
  const point = points.get(name)!;
  assert.equal(integrityCheck(dbPath), 'ok');
  assert.deepEqual(tableStats(dbPath), { rows: point.rows, minId: 1, maxId: point.max_id });
  assert.equal(fixtureDigest(dbPath), point.sha256);
}

/** Flips the bits of one byte of a file. */
async function flipByte(file: string, at: (size: number) => number): Promise<void> {
  const bytes = await fs.readFile(file);
  bytes[at(bytes.length)]! ^= 0xff;
  await fs.writeFile(file, bytes);
}

/** Asserts that a restore failed and left the output folder empty. */
async function assertRejected(promise: Promise<unknown>, code: string, ...fragments: string[]): Promise<void> {
  await assert.rejects(promise, (err: unknown) => {
    assert.ok(err instanceof WalshipError, `expected a WalshipError, got ${String(err)}`);
    assert.equal(err.code, code, err.message);
    for (const fragment of fragments) assert.ok(err.message.includes(fragment), `"${err.message}" lacks "${fragment}"`);
    return true;
  });
}

/** Returns the payload the fixture's writer stored for a row id. */
function expectedPayload(id: number): Buffer {
  const anchor = createHash('sha256').update(`anchor-fixture-${id}`).digest();
  const parts = [];
  for (let i = 0; i < 8; i++) parts.push(createHash('sha256').update(Buffer.concat([anchor, Buffer.from([i])])).digest());
  return Buffer.concat(parts);
}

describe('restore of Litestream v0.3.11 replica', () => {
  test('latest restores point final', async () => {
    const { root, out } = await copyReplica();
    const output = path.join(out, 'db.sqlite');

    const result = await restore({ client: { type: 'file', root }, outputPath: output });

    assert.equal(result.generation, GEN2);
    assert.equal(result.snapshotIndex, 0);
    assert.deepEqual(result.pos, { generation: GEN2, index: 1, offset: 4152 });
    assert.equal(result.bytes, (await fs.stat(output)).size);
    assertPoint(output, 'final');
    assert.deepEqual(await fs.readdir(out), ['db.sqlite']);
  });

  test('latest matches source database', async () => {
    const { root, out } = await copyReplica();
    const output = path.join(out, 'db.sqlite');
    const source = path.join(out, 'source.sqlite');
    await fs.copyFile(path.join(FIXTURE, 'source-final.sqlite3'), source);

    await restore({ client: { type: 'file', root }, outputPath: output });

    assert.equal(contentHash(output), contentHash(source));
  });

  test('generation restores point C', async () => {
    const { root, out } = await copyReplica();
    const output = path.join(out, 'db.sqlite');

    const result = await restore({ client: new FileReplicaClient({ type: 'file', root }), outputPath: output, generation: GEN1 });

    assert.equal(result.snapshotIndex, 3);
    assert.deepEqual(result.pos, { generation: GEN1, index: 3, offset: 4152 });
    assertPoint(output, 'C');
  });

  // The last segment of WAL index 1 was stored at 20:12:04.20 and point B was
  // taken at 20:12:06.45. The next write to table t is in index 2 at 20:12:08,
  // so index 1 ends exactly at point B.
  test('index 1 restores point B', async () => {
    const { root, out } = await copyReplica();
    const output = path.join(out, 'db.sqlite');

    const result = await restore({ client: { type: 'file', root }, outputPath: output, generation: GEN1, index: 1 });

    assert.equal(result.snapshotIndex, 1);
    assert.deepEqual(result.pos, { generation: GEN1, index: 1, offset: 300792 });
    assertPoint(output, 'B');
  });

  // Point A contains 290 rows from 6 transactions (40, then 5 of 50). The sixth
  // transaction's pages are in WAL index 1 (segment at offset 4152), so index 0
  // ends after 5 transactions: ids 1 to 240, unchanged since they were written.
  test('index 0 restores the first 5 transactions', async () => {
    const { root, out } = await copyReplica();
    const output = path.join(out, 'db.sqlite');

    const result = await restore({ client: { type: 'file', root }, outputPath: output, generation: GEN1, index: 0 });

    assert.equal(result.snapshotIndex, 0);
    assert.deepEqual(result.pos, { generation: GEN1, index: 0, offset: 152472 });
    assert.equal(integrityCheck(output), 'ok');
    assert.deepEqual(tableStats(output), { rows: 240, minId: 1, maxId: 240 });

    const db = new Database(output, { fileMustExist: true });
    try {
      const rows = db.prepare('SELECT id, body, payload FROM t ORDER BY id').all() as Array<{ id: number; body: string; payload: Buffer }>;
      for (const row of rows) {
        const tx = row.id <= 40 ? 1 : 2 + Math.floor((row.id - 41) / 50);
        assert.equal(row.body, `row ${row.id} tx ${tx}`);
        assert.ok(row.payload.equals(expectedPayload(row.id)), `payload of row ${row.id}`);
      }
    } finally {
      db.close();
    }
  });

  test('index past the end restores the last index', async () => {
    const { root, out } = await copyReplica();
    const output = path.join(out, 'db.sqlite');

    const result = await restore({ client: { type: 'file', root }, outputPath: output, generation: GEN1, index: 9 });

    assert.deepEqual(result.pos, { generation: GEN1, index: 3, offset: 4152 });
    assertPoint(output, 'C');
  });

  test('parallelism 1 restores point final', async () => {
    const { root, out } = await copyReplica();
    const output = path.join(out, 'db.sqlite');

    await restore({ client: { type: 'file', root }, outputPath: output, parallelism: 1 });

    assertPoint(output, 'final');
  });
});

describe('restore of damaged replica', () => {
  test('missing segment is rejected', async () => {
    const { root, out } = await copyReplica();
    await fs.rm(path.join(root, `generations/${GEN2}/wal/00000000_000070c8.wal.lz4`));

    const promise = restore({ client: { type: 'file', root }, outputPath: path.join(out, 'db.sqlite') });

    await assertRejected(promise, 'CORRUPT_REPLICA', `generations/${GEN2}/wal/00000000_0001a290.wal.lz4`, 'expected offset 28872');
    assert.deepEqual(await fs.readdir(out), []);
  });

  test('missing first segment is rejected', async () => {
    const { root, out } = await copyReplica();
    await fs.rm(path.join(root, `generations/${GEN2}/wal/00000000_00000000.wal.lz4`));

    const promise = restore({ client: { type: 'file', root }, outputPath: path.join(out, 'db.sqlite') });

    await assertRejected(promise, 'CORRUPT_REPLICA', `generations/${GEN2}/wal/00000000_00001038.wal.lz4`, 'expected offset 0');
    assert.deepEqual(await fs.readdir(out), []);
  });

  test('missing WAL index is rejected', async () => {
    // Without snapshot 3 the restore starts from snapshot 1 and needs indexes 1, 2 and 3.
    const { root, out } = await copyReplica();
    await fs.rm(path.join(root, `generations/${GEN1}/snapshots/00000003.snapshot.lz4`));
    for (const offset of ['00000000', '00001038', '000060b0', '0001a290']) {
      await fs.rm(path.join(root, `generations/${GEN1}/wal/00000002_${offset}.wal.lz4`));
    }

    const promise = restore({ client: { type: 'file', root }, outputPath: path.join(out, 'db.sqlite'), generation: GEN1 });

    await assertRejected(promise, 'CORRUPT_REPLICA', 'missing WAL index 00000002', `generations/${GEN1}/wal/00000003_00000000.wal.lz4`);
    assert.deepEqual(await fs.readdir(out), []);
  });

  test('hole at the newest index end', async () => {
    // Without snapshot 3 and WAL index 3, index 2 is the newest. A hole in it
    // is what an upload cut off by a crash leaves: the latest state ends there.
    const { root, out } = await copyReplica();
    await fs.rm(path.join(root, `generations/${GEN1}/snapshots/00000003.snapshot.lz4`));
    await fs.rm(path.join(root, `generations/${GEN1}/wal/00000003_00000000.wal.lz4`));
    await fs.rm(path.join(root, `generations/${GEN1}/wal/00000002_00001038.wal.lz4`));
    const output = path.join(out, 'db.sqlite');

    const result = await restore({ client: { type: 'file', root }, outputPath: output, generation: GEN1 });

    assert.deepEqual(result.pos, { generation: GEN1, index: 2, offset: 0x1038 });
    assert.equal(integrityCheck(output), 'ok');
  });

  test('hole with an index target is rejected', async () => {
    const { root, out } = await copyReplica();
    await fs.rm(path.join(root, `generations/${GEN1}/snapshots/00000003.snapshot.lz4`));
    await fs.rm(path.join(root, `generations/${GEN1}/wal/00000003_00000000.wal.lz4`));
    await fs.rm(path.join(root, `generations/${GEN1}/wal/00000002_00001038.wal.lz4`));

    const promise = restore({ client: { type: 'file', root }, outputPath: path.join(out, 'db.sqlite'), generation: GEN1, index: 2 });

    await assertRejected(promise, 'CORRUPT_REPLICA', `generations/${GEN1}/wal/00000002_000060b0.wal.lz4`, 'expected offset 4152');
    assert.deepEqual(await fs.readdir(out), []);
  });

  test('truncated segment is rejected', async () => {
    const { root, out } = await copyReplica();
    const key = `generations/${GEN2}/wal/00000000_000070c8.wal.lz4`;
    const file = path.join(root, key);
    await fs.truncate(file, Math.floor((await fs.stat(file)).size / 2));

    const promise = restore({ client: { type: 'file', root }, outputPath: path.join(out, 'db.sqlite') });

    await assertRejected(promise, 'CORRUPT_REPLICA', key, 'truncated');
    assert.deepEqual(await fs.readdir(out), []);
  });

  test('flipped checksum byte is rejected', async () => {
    const { root, out } = await copyReplica();
    const key = `generations/${GEN2}/wal/00000000_00001038.wal.lz4`;
    // The last 4 bytes of a frame are the xxh32 content checksum.
    await flipByte(path.join(root, key), (size) => size - 2);

    const promise = restore({ client: { type: 'file', root }, outputPath: path.join(out, 'db.sqlite') });

    await assertRejected(promise, 'CHECKSUM_MISMATCH', key, 'checksum');
    assert.deepEqual(await fs.readdir(out), []);
  });

  test('flipped snapshot byte is rejected', async () => {
    const { root, out } = await copyReplica();
    const key = `generations/${GEN2}/snapshots/00000000.snapshot.lz4`;
    await flipByte(path.join(root, key), (size) => Math.floor(size / 2));

    const promise = restore({ client: { type: 'file', root }, outputPath: path.join(out, 'db.sqlite') });

    await assert.rejects(promise, (err: unknown) => {
      assert.ok(err instanceof WalshipError);
      assert.ok(['CHECKSUM_MISMATCH', 'CORRUPT_REPLICA'].includes(err.code), err.message);
      assert.ok(err.message.includes(key), err.message);
      return true;
    });
    assert.deepEqual(await fs.readdir(out), []);
  });

  test('empty replica has no generation', async () => {
    const { out } = await copyReplica();
    const root = path.join(out, 'empty');
    await fs.mkdir(path.join(root, 'generations', 'not-a-generation'), { recursive: true });
    await fs.writeFile(path.join(root, 'generations', 'not-a-generation', 'x'), 'x');

    const promise = restore({ client: { type: 'file', root }, outputPath: path.join(out, 'db.sqlite') });

    await assertRejected(promise, 'NO_GENERATION', 'no backups found in file://');
  });
});

describe('restore input checks', () => {
  test('existing output is refused', async () => {
    const { root, out } = await copyReplica();
    const output = path.join(out, 'db.sqlite');
    await fs.writeFile(output, 'keep me');

    const promise = restore({ client: { type: 'file', root }, outputPath: output });

    await assertRejected(promise, 'INVALID_INPUT', output, 'already exists');
    assert.equal(await fs.readFile(output, 'utf8'), 'keep me');
    assert.deepEqual(await fs.readdir(out), ['db.sqlite']);
  });

  test('missing output directory is refused', async () => {
    const { root, out } = await copyReplica();
    const output = path.join(out, 'missing', 'db.sqlite');

    const promise = restore({ client: { type: 'file', root }, outputPath: output });

    await assertRejected(promise, 'INVALID_INPUT', path.join(out, 'missing'), 'does not exist');
  });

  test('unwritable output directory is refused', async (t) => {
    // Root may write anywhere, so the restore runs as uid 65534 (nobody) against a root-owned folder.
    const { root, out } = await copyReplica();
    await fs.chmod(scratch, 0o755);
    await fs.chmod(path.dirname(out), 0o755);
    const script = `
      import { restore } from ${JSON.stringify(RESTORE_MODULE)};
      try {
        await restore({ client: { type: 'file', root: ${JSON.stringify(root)} }, outputPath: ${JSON.stringify(path.join(out, 'db.sqlite'))} });
        console.log('restored');
      } catch (err) {
        console.log(err.code + ' ' + err.message);
      }`;
    const child = spawnSync('setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', process.execPath, '--input-type=module', '-e', script], {
      encoding: 'utf8',
      timeout: 30_000,
    });
    if (child.error !== undefined || child.stderr.includes('setpriv:')) {
      t.skip(`setpriv cannot drop privileges here: ${child.error?.message ?? child.stderr}`);
      return;
    }

    assert.match(child.stdout, /^INVALID_INPUT output directory .* is not writable/);
    assert.deepEqual(await fs.readdir(out), []);
  });

  test('invalid generation name is refused', async () => {
    const { root, out } = await copyReplica();

    const promise = restore({ client: { type: 'file', root }, outputPath: path.join(out, 'db.sqlite'), generation: 'ABC' });

    await assertRejected(promise, 'INVALID_INPUT', '"ABC"');
  });

  test('unknown generation is refused', async () => {
    const { root, out } = await copyReplica();

    const promise = restore({ client: { type: 'file', root }, outputPath: path.join(out, 'db.sqlite'), generation: '0123456789abcdef' });

    await assertRejected(promise, 'NOT_FOUND', '0123456789abcdef');
  });

  test('invalid parallelism is refused', async () => {
    const { root, out } = await copyReplica();

    const promise = restore({ client: { type: 'file', root }, outputPath: path.join(out, 'db.sqlite'), parallelism: 0 });

    await assertRejected(promise, 'INVALID_INPUT', 'parallelism 0');
  });
});

describe('segment download', () => {
  test('streamed segments match prefetched ones', async () => {
    const { root } = await copyReplica();
    const client = new FileReplicaClient({ type: 'file', root });
    const segments = await listSegments(client, GEN1);

    // A prefetch limit of 0 bytes opens every segment as a stream at its turn.
    for (const prefetchMaxBytes of [0, undefined]) {
      const keys: string[] = [];
      for await (const { segment, body } of fetchSegmentsInOrder(client, segments, 3, prefetchMaxBytes)) {
        const pieces: Buffer[] = [];
        for await (const piece of body) pieces.push(Buffer.from(piece));
        assert.ok(Buffer.concat(pieces).equals(await client.get(segment.key)), segment.key);
        keys.push(segment.key);
      }
      assert.deepEqual(keys, segments.map((s) => s.key));
    }
  });
});

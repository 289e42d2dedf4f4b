import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';

import { hasCode } from '../src/errors.js';
import { FileReplicaClient } from '../src/replica/file-client.js';
import { findLatestGeneration, generationBounds, listGenerations, listSegments, listSnapshots } from '../src/replica/listing.js';

const FIXTURE = fileURLToPath(new URL('../../test/fixtures/litestream-v0.3.11/', import.meta.url));
const GEN1 = '78eb93ce395367ad';
const GEN2 = 'bec662feba8af0f3';

let scratch: string;
let manifest: Array<{ key: string; size: number; mtime: string }>;

before(async () => {
  scratch = await fs.mkdtemp(path.join(os.tmpdir(), 'walship-listing-'));
  manifest = JSON.parse(await fs.readFile(path.join(FIXTURE, 'file-replica.manifest.json'), 'utf8')) as typeof manifest;
});

after(async () => {
  await fs.rm(scratch, { recursive: true, force: true });
});

/** Parses a manifest time, dropping digits past the millisecond that Date cannot hold. */
function manifestTime(mtime: string): Date {
  return new Date(mtime.replace(/(\.\d{3})\d*Z$/, '$1Z'));
}

/** Copies the fixture replica and sets object times from the manifest. */
async function copyReplica(): Promise<{ root: string; client: FileReplicaClient }> {
  const root = await fs.mkdtemp(path.join(scratch, 'replica-'));
  await fs.cp(path.join(FIXTURE, 'file-replica'), root, { recursive: true });
  for (const { key, mtime } of manifest) {
    await fs.utimes(path.join(root, key), manifestTime(mtime), manifestTime(mtime));
  }
  return { root, client: new FileReplicaClient({ type: 'file', root }) };
}

/** Writes an object file under a replica root, with its folders. */
async function writeObject(root: string, key: string, time?: Date): Promise<void> {
  const file = path.join(root, key);
  await fs.mkdir(path.dirname(file), { recursive: true });
  await fs.writeFile(file, 'x');
  if (time !== undefined) await fs.utimes(file, time, time);
}

describe('replica listing', () => {
  test('generations of fixture', async () => {
    const { client } = await copyReplica();

    assert.deepEqual(await listGenerations(client), [GEN1, GEN2]);
  });

  test('generations skip invalid names', async () => {
    const { root, client } = await copyReplica();
    await writeObject(root, 'generations/78EB93CE395367AD/snapshots/00000000.snapshot.lz4');
    await writeObject(root, 'generations/0123/snapshots/00000000.snapshot.lz4');
    await writeObject(root, 'generations/0123456789abcdef0/snapshots/00000000.snapshot.lz4');

    assert.deepEqual(await listGenerations(client), [GEN1, GEN2]);
  });

  test('generations of empty replica', async () => {
    const root = await fs.mkdtemp(path.join(scratch, 'empty-'));
    const client = new FileReplicaClient({ type: 'file', root });

    assert.deepEqual(await listGenerations(client), []);
    assert.equal(await findLatestGeneration(client), undefined);
  });

  test('snapshots of fixture', async () => {
    const { client } = await copyReplica();

    const snapshots = await listSnapshots(client, GEN1);

    assert.deepEqual(
      snapshots.map((s) => [s.index, s.key]),
      [0, 1, 3].map((i) => [i, `generations/${GEN1}/snapshots/0000000${i}.snapshot.lz4`]),
    );
    for (const snapshot of snapshots) {
      const entry = manifest.find((m) => m.key === snapshot.key)!;
      assert.equal(snapshot.generation, GEN1);
      assert.equal(snapshot.size, entry.size);
      assert.equal(snapshot.createdAt.getTime(), manifestTime(entry.mtime).getTime());
    }
  });

  test('snapshots skip other names', async () => {
    const { root, client } = await copyReplica();
    await writeObject(root, `generations/${GEN2}/snapshots/0000000A.snapshot.lz4`);
    await writeObject(root, `generations/${GEN2}/snapshots/00000002.snapshot`);
    await writeObject(root, `generations/${GEN2}/snapshots/nested/00000004.snapshot.lz4`);

    assert.deepEqual((await listSnapshots(client, GEN2)).map((s) => s.index), [0]);
  });

  test('segments of fixture', async () => {
    const { client } = await copyReplica();

    const segments = await listSegments(client, GEN2);

    assert.deepEqual(
      segments.map((s) => [s.index, s.offset]),
      [[0, 0], [0, 0x1038], [0, 0x70c8], [0, 0x1a290], [1, 0]],
    );
    assert.equal(segments[1]!.key, `generations/${GEN2}/wal/00000000_00001038.wal.lz4`);
    assert.equal(segments[1]!.size, 18378);
  });

  test('segments sort offsets numerically', async () => {
    // Key order puts a 9-digit offset before a smaller 8-digit one starting with a higher digit.
    const { root, client } = await copyReplica();
    await writeObject(root, `generations/${GEN2}/wal/00000002_ffffffe0.wal.lz4`);
    await writeObject(root, `generations/${GEN2}/wal/00000002_100000000.wal.lz4`);

    const tail = (await listSegments(client, GEN2)).filter((s) => s.index === 2);

    assert.deepEqual(tail.map((s) => s.offset), [0xffffffe0, 0x100000000]);
  });

  test('segments skip other names', async () => {
    const { root, client } = await copyReplica();
    await writeObject(root, `generations/${GEN2}/wal/00000002_0000000.wal.lz4`);
    await writeObject(root, `generations/${GEN2}/wal/00000002-00000000.wal.lz4`);
    await writeObject(root, `generations/${GEN2}/wal/00000002_00000000.wal`);

    assert.deepEqual((await listSegments(client, GEN2)).map((s) => s.index), [0, 0, 0, 0, 1]);
  });

  test('bounds of fixture generations', async () => {
    const { client } = await copyReplica();

    const bounds1 = await generationBounds(client, GEN1);
    const bounds2 = await generationBounds(client, GEN2);

    assert.equal(bounds1.createdAt.toISOString(), '2026-12-04T20:11:50.211Z');
    assert.equal(bounds1.updatedAt.toISOString(), '2026-12-04T20:12:20.203Z');
    assert.equal(bounds2.createdAt.toISOString(), '2026-12-04T20:12:22.827Z');
    assert.equal(bounds2.updatedAt.toISOString(), '2026-12-04T20:12:30.819Z');
  });

  test('bounds of empty generation', async () => {
    const { client } = await copyReplica();

    await assert.rejects(generationBounds(client, '0123456789abcdef'), (err) => hasCode(err, 'NOT_FOUND'));
  });

  test('latest generation by newest object', async () => {
    const { root, client } = await copyReplica();
    assert.equal(await findLatestGeneration(client), GEN2);

    // An upload to the older generation after the newer one's last object makes it the latest.
    await writeObject(root, `generations/${GEN1}/wal/00000004_00000000.wal.lz4`, new Date('2026-12-04T20:13:00Z'));
    assert.equal(await findLatestGeneration(client), GEN1);
  });

  test('latest generation tie keeps first', async () => {
    const root = await fs.mkdtemp(path.join(scratch, 'tie-'));
    const time = new Date('2026-12-04T20:00:00Z');
    await writeObject(root, 'generations/bbbbbbbbbbbbbbbb/snapshots/00000000.snapshot.lz4', time);
    await writeObject(root, 'generations/aaaaaaaaaaaaaaaa/snapshots/00000000.snapshot.lz4', time);

    assert.equal(await findLatestGeneration(new FileReplicaClient({ type: 'file', root })), 'aaaaaaaaaaaaaaaa');
  });
});

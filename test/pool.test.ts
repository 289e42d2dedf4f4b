import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';

import { BLOCK_SIZE, decodeFrame, encodeFrame } from '../src/lz4.js';
import { ShipPool } from '../src/pool.js';
import { createReplicaClient } from '../src/replica/create.js';
import type { ReplicaClientConfig } from '../src/replica/client.js';
import { decodeObjectInto } from '../src/restore/download.js';
import { s3ClientConfig, startS3Server } from './support/s3-server.js';
import type { S3Server } from './support/s3-server.js';

// Half random, half repeated bytes, so blocks both compress and do not.
function sample(size: number): Buffer {
  const data = crypto.randomBytes(size);
  for (let at = 0; at < size; at += 2 * 65536) data.fill(at % 251, at, Math.min(size, at + 65536));
  return data;
}

let dir: string;
let server: S3Server;
let pool: ShipPool;

before(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'walship-pool-'));
  server = await startS3Server();
  // Four threads: the parallel snapshot path needs one to upload and several to compress.
  pool = new ShipPool({ threads: 4 });
});

after(async () => {
  await pool.close();
  await server.close();
  fs.rmSync(dir, { recursive: true, force: true });
});

const kinds: Array<[string, () => ReplicaClientConfig]> = [
  ['file', () => ({ type: 'file', root: path.join(dir, 'replica') })],
  ['s3', () => s3ClientConfig(server, server.bucket, 'pool-test')],
];

for (const [kind, config] of kinds) {
  test(`parallel snapshot is one frame: ${kind}`, async () => {
    // Three and a half blocks: the parallel path, with a short last block.
    const input = sample(3 * BLOCK_SIZE + BLOCK_SIZE / 2 + 123);
    const source = path.join(dir, `${kind}.db`);
    fs.writeFileSync(source, input);
    const fd = fs.openSync(source, 'r');
    const client = createReplicaClient(config());
    try {
      const stats = await pool.putSnapshot({ client: config(), key: 'snap.lz4', fd, size: input.length });
      assert.equal(stats.rawBytes, input.length);

      const stored = await client.get('snap.lz4');
      assert.equal(stats.storedBytes, stored.length);
      const decoded = await decodeFrame(stored);
      assert.equal(decoded.length, input.length);
      assert.ok(decoded.equals(input), 'walship decodes the frame');

      // The reference lz4 tool must read it as one standard frame.
      const framePath = path.join(dir, `${kind}.lz4`);
      fs.writeFileSync(framePath, stored);
      const lz4 = spawnSync('lz4', ['-d', '-c', framePath], { maxBuffer: 64 * 1024 * 1024 });
      if (lz4.error === undefined) {
        assert.equal(lz4.status, 0, String(lz4.stderr));
        assert.ok(lz4.stdout.equals(input), 'lz4 -d decodes the frame');
      }
    } finally {
      fs.closeSync(fd);
      await client.close();
    }
  });
}

test('pool decode matches in-thread decode', async () => {
  const input = sample(2 * BLOCK_SIZE + 999);
  const frame = await encodeFrame(input);
  const out = path.join(dir, 'decoded.bin');
  const file = await fs.promises.open(out, 'w');
  try {
    const body = (async function* () {
      for (let at = 0; at < frame.length; at += 300_000) yield frame.subarray(at, at + 300_000);
    })();
    const length = await decodeObjectInto(body, file, 'frame.lz4', 'memory', pool);
    assert.equal(length, input.length);
  } finally {
    await file.close();
  }
  assert.ok(fs.readFileSync(out).equals(input));
});

test('pool decode names the key of a corrupt block', async () => {
  const input = sample(2 * BLOCK_SIZE);
  const frame = await encodeFrame(input);
  // Damage the middle of the first block's compressed data.
  frame[7 + 4 + 1000] ^= 0xff;
  const file = await fs.promises.open(path.join(dir, 'corrupt.bin'), 'w');
  try {
    await assert.rejects(
      decodeObjectInto(
        (async function* () {
          yield frame;
        })(),
        file,
        'generations/x/snapshots/00000000.snapshot.lz4',
        'memory',
        pool,
      ),
      (err: Error) => err.message.includes('generations/x/snapshots/00000000.snapshot.lz4'),
    );
  } finally {
    await file.close();
  }
});

test('parallel snapshot upload error names the key', async () => {
  const input = sample(2 * BLOCK_SIZE + 1);
  const source = path.join(dir, 'err.db');
  fs.writeFileSync(source, input);
  const fd = fs.openSync(source, 'r');
  try {
    // A missing bucket makes every upload request fail.
    const config = s3ClientConfig(server, 'no-such-bucket-walship', 'x');
    await assert.rejects(pool.putSnapshot({ client: config, key: 'gen/snap.lz4', fd, size: input.length }), (err: Error) => err.message.includes('gen/snap.lz4'));
  } finally {
    fs.closeSync(fd);
  }
});


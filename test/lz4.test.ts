import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';

import { compressFrameSync } from 'lz4-napi';

import { BLOCK_SIZE, LZ4FrameDecoder, LZ4FrameEncoder, decodeFrame, encodeFrame, loadHasher } from '../src/lz4.js';

const fixtures = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../test/fixtures/litestream-v0.3.11/file-replica');

test('lz4 frame round trip', async () => {
  for (const size of [0, 1, 4096, BLOCK_SIZE - 1, BLOCK_SIZE, 2 * BLOCK_SIZE + 17]) {
    const input = crypto.randomBytes(size);
    input.fill(7, 0, Math.floor(size / 2));
    const frame = await encodeFrame(input);
    assert.deepEqual(frame.subarray(0, 7), Buffer.from([0x04, 0x22, 0x4d, 0x18, 0x64, 0x70, 0xb9]));
    assert.ok((await decodeFrame(frame)).equals(input), `size ${size}`);
  }
});

test('lz4 frame streams in pieces', async () => {
  const hasher = await loadHasher();
  const input = crypto.randomBytes(3 * BLOCK_SIZE + 1000);
  const enc = new LZ4FrameEncoder(hasher);
  const parts: Buffer[] = [];
  for (let off = 0; off < input.length; off += 1_000_003) parts.push(...enc.push(input.subarray(off, off + 1_000_003)));
  parts.push(...enc.finish());
  const frame = Buffer.concat(parts);

  const dec = new LZ4FrameDecoder(hasher);
  const out: Buffer[] = [];
  for (let off = 0; off < frame.length; off += 65_537) out.push(...dec.push(frame.subarray(off, off + 65_537)));
  dec.finish();
  assert.ok(Buffer.concat(out).equals(input));
});

test('lz4 decodes other encoders', async () => {
  const input = Buffer.from('walship '.repeat(10_000));
  assert.ok((await decodeFrame(compressFrameSync(input))).equals(input));

  // A snapshot written by Litestream v0.3.11 decodes to a SQLite file.
  const snapshot = path.join(fixtures, 'generations/78eb93ce395367ad/snapshots/00000000.snapshot.lz4');
  const db = await decodeFrame(fs.readFileSync(snapshot));
  assert.equal(db.subarray(0, 15).toString('latin1'), 'SQLite format 3');
});

test('lz4 command decodes walship frames', async (t) => {
  const probe = spawnSync('lz4', ['--version']);
  if (probe.error) {
    t.skip('lz4 command not installed');
    return;
  }
  const input = crypto.randomBytes(BLOCK_SIZE + 5);
  const result = spawnSync('lz4', ['-d', '-c'], { input: await encodeFrame(input), maxBuffer: 64 << 20 });
  assert.equal(result.status, 0, String(result.stderr));
  assert.ok(Buffer.from(result.stdout).equals(input));
});

test('lz4 rejects damaged frames', async () => {
  const frame = await encodeFrame(Buffer.from('x'.repeat(100_000)));
  await assert.rejects(decodeFrame(frame.subarray(0, frame.length - 3)), /truncated/);

  const flipped = Buffer.from(frame);
  flipped[flipped.length - 1] ^= 0xff;
  await assert.rejects(decodeFrame(flipped), /checksum/);

  await assert.rejects(decodeFrame(Buffer.from('not lz4 at all')), /not an LZ4 frame/);
});

import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';

import Database from 'better-sqlite3';

import { ShadowWal } from '../src/shadow-wal.js';
import { WAL_HEADER_SIZE, alignToFrame, frameSize, parseFrameHeader, parseWalHeader, verifyFrame, walChecksum } from '../src/wal.js';

// Writes a few transactions and returns the raw WAL bytes SQLite produced.
function makeWal(dir: string): { wal: Buffer; commits: number } {
  const dbPath = path.join(dir, 'w.db');
  const db = new Database(dbPath);
  db.pragma('journal_mode = wal');
  db.pragma('wal_autocheckpoint = 0');
  db.exec('CREATE TABLE t (id INTEGER PRIMARY KEY, body TEXT)');
  const insert = db.prepare('INSERT INTO t (body) VALUES (?)');
  for (let i = 0; i < 5; i++) db.transaction(() => insert.run('x'.repeat(3000 + i)))();
  const wal = fs.readFileSync(`${dbPath}-wal`);
  db.close();
  return { wal, commits: 6 };
}

test('wal header parses SQLite output', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'walship-wal-'));
  try {
    const { wal } = makeWal(dir);
    const header = parseWalHeader(wal);
    assert.ok(header);
    assert.equal(header.pageSize, 4096);

    const corrupt = Buffer.from(wal);
    corrupt[16] ^= 0xff;
    assert.equal(parseWalHeader(corrupt), undefined);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('wal frames chain checksums', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'walship-wal-'));
  try {
    const { wal, commits } = makeWal(dir);
    const header = parseWalHeader(wal)!;
    const fsz = frameSize(header.pageSize);
    let sums: [number, number] = [header.checksum1, header.checksum2];
    let seenCommits = 0;
    for (let off = WAL_HEADER_SIZE; off + fsz <= wal.length; off += fsz) {
      const frame = wal.subarray(off, off + fsz);
      const next = verifyFrame(header, frame, sums[0], sums[1]);
      assert.ok(next, `frame at ${off} verifies`);
      sums = next;
      if (parseFrameHeader(frame).commit > 0) seenCommits++;
    }
    assert.equal(seenCommits, commits);

    // A flipped page byte breaks the chain at that frame.
    const frame = Buffer.from(wal.subarray(WAL_HEADER_SIZE, WAL_HEADER_SIZE + fsz));
    frame[100] ^= 1;
    assert.equal(verifyFrame(header, frame, header.checksum1, header.checksum2), undefined);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('alignToFrame rounds down', () => {
  assert.equal(alignToFrame(0, 4096), 0);
  assert.equal(alignToFrame(31, 4096), 0);
  assert.equal(alignToFrame(32, 4096), 32);
  assert.equal(alignToFrame(32 + 4120 + 100, 4096), 32 + 4120);
});

test('shadow wal open cuts torn tail', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'walship-wal-'));
  try {
    const { wal } = makeWal(dir);
    const header = parseWalHeader(wal)!;
    const fsz = frameSize(header.pageSize);
    const committedEnd = alignToFrame(wal.length, header.pageSize);

    // A crash left half a frame after the last commit.
    const shadowDir = path.join(dir, 'shadow');
    fs.mkdirSync(shadowDir);
    fs.writeFileSync(ShadowWal.pathFor(shadowDir, 3), Buffer.concat([wal.subarray(0, committedEnd), wal.subarray(WAL_HEADER_SIZE, WAL_HEADER_SIZE + fsz / 2)]));

    const shadow = ShadowWal.open(shadowDir, 3);
    assert.equal(shadow.size, committedEnd);
    assert.equal(fs.statSync(shadow.path).size, committedEnd);
    assert.equal(shadow.frameCount, (committedEnd - WAL_HEADER_SIZE) / fsz);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('wal checksum aligned and unaligned agree', () => {
  const bytes = Buffer.alloc(4096 + 8);
  for (let i = 0; i < bytes.length; i++) bytes[i] = (i * 131 + 7) & 0xff;
  const aligned = new Uint8Array(bytes.buffer, bytes.byteOffset, 4096);
  const copy = Buffer.alloc(4096 + 1);
  bytes.copy(copy, 1, 0, 4096);
  const unaligned = copy.subarray(1);
  assert.equal(unaligned.byteOffset % 4, (copy.byteOffset + 1) % 4);
  assert.deepEqual(walChecksum(false, aligned, 1, 2), walChecksum(false, unaligned, 1, 2));
  assert.notDeepEqual(walChecksum(false, aligned, 1, 2), walChecksum(true, aligned, 1, 2));
});

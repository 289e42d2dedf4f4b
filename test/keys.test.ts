import assert from 'node:assert/strict';
import { test } from 'node:test';

import { isGeneration, parseSegmentName, parseSnapshotName, segmentKey, snapshotKey } from '../src/keys.js';
import { formatPos } from '../src/pos.js';

test('keys follow the v0.3 layout', () => {
  assert.equal(snapshotKey('databases/users', 'a1b2c3d4e5f60718', 3), 'databases/users/generations/a1b2c3d4e5f60718/snapshots/00000003.snapshot.lz4');
  assert.equal(segmentKey('', 'a1b2c3d4e5f60718', 0, 4152), 'generations/a1b2c3d4e5f60718/wal/00000000_00001038.wal.lz4');
  assert.equal(segmentKey('p', 'a1b2c3d4e5f60718', 0x7fffffff, 0xffffffff), 'p/generations/a1b2c3d4e5f60718/wal/7fffffff_ffffffff.wal.lz4');
});

test('keys parse names', () => {
  assert.equal(parseSnapshotName('0000000a.snapshot.lz4'), 10);
  assert.equal(parseSnapshotName('0000000A.snapshot.lz4'), undefined);
  assert.equal(parseSnapshotName('0000000a.snapshot.lz4.tmp'), undefined);
  assert.deepEqual(parseSegmentName('00000001_00001038.wal.lz4'), { index: 1, offset: 4152 });
  assert.deepEqual(parseSegmentName('00000001_100000000.wal.lz4'), { index: 1, offset: 0x100000000 });
  assert.equal(parseSegmentName('00000001_1038.wal.lz4'), undefined);
  assert.ok(isGeneration('78eb93ce395367ad'));
  assert.ok(!isGeneration('78EB93CE395367AD'));
  assert.ok(!isGeneration('78eb93ce395367a'));
});

test('pos prints like Litestream', () => {
  assert.equal(formatPos({ generation: 'a1b2c3d4e5f60718', index: 3, offset: 4152 }), 'a1b2c3d4e5f60718/00000003:4152');
  assert.equal(formatPos({ generation: '', index: 0, offset: 0 }), '');
});

import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, before, describe, test } from 'node:test';

import { MAX_SEGMENT_BYTES } from '../src/replica.js';
import { restore } from '../src/restore.js';
import type { RestoreResult } from '../src/restore.js';
import { contentHash, integrityCheck } from './support/content.js';
import { Harness } from './support/replicate-harness.js';
import type { DecodedSegment, HarnessOptions, ReplicaKind } from './support/replicate-harness.js';
import { startS3Server } from './support/s3-server.js';
import type { S3Server } from './support/s3-server.js';

/**
 * End-to-end replication: an application writer in a child process, walship's
 * Replicator in this process, a file replica or an S3 replica on s3rver, and
 * restores compared with the source by content hash and integrity check.
 */

const KINDS: readonly ReplicaKind[] = ['file', 's3'];

// First 4 bytes of a WAL header: the magic number, big-endian or little-endian checksums.
const WAL_MAGICS = [0x377f0682, 0x377f0683];

// Thresholds under which walship never checkpoints, for cases that need the WAL to only grow.
const NO_CHECKPOINTS: HarnessOptions['database'] = { minCheckpointPageCount: 1_000_000, maxCheckpointPageCount: 0, checkpointInterval: 0 };

// Bounded wait for the asynchronous removal of shipped shadow WAL files.
const SHADOW_REMOVAL_TIMEOUT_MS = 5_000;

let s3: S3Server;

before(async () => {
  s3 = await startS3Server();
});

after(async () => {
  await s3?.close();
});

/** Runs `body` with a fresh harness on one replica kind and removes everything afterwards. */
async function withHarness(kind: ReplicaKind, options: Omit<HarnessOptions, 'kinds' | 's3'>, body: (h: Harness) => Promise<void>): Promise<void> {
  const h = await Harness.create({ ...options, kinds: [kind], s3 });
  try {
    await body(h);
  } finally {
    await h.cleanup();
  }
}

/** Restores the latest backup (or `target`) of one replica into a new file and checks it against `expectedHash`. */
async function assertRestoreEquals(
  h: Harness,
  kind: ReplicaKind,
  expectedHash: string,
  target: { generation?: string; index?: number } = {},
): Promise<RestoreResult> {
  const output = path.join(h.dir, `restored-${kind}-${randomBytes(4).toString('hex')}.db`);
  const result = await restore({ client: h.replicaConfig(kind), outputPath: output, ...target });
  assert.equal(integrityCheck(output), 'ok', `integrity of the ${kind} restore\n${h.logText()}`);
  assert.equal(contentHash(output), expectedHash, `${kind} restore differs from the source\n${h.logText()}`);
  return result;
}

/** Checks that a generation's WAL indexes follow one another, each opening with a WAL header at offset 0 and with contiguous offsets. */
function assertContiguous(segments: DecodedSegment[], firstIndex: number): void {
  let expectedIndex = firstIndex;
  let expectedOffset = 0;
  for (const segment of segments) {
    if (segment.index !== expectedIndex) {
      assert.equal(segment.index, expectedIndex + 1, `index after ${expectedIndex} at ${segment.key}`);
      expectedIndex = segment.index;
      expectedOffset = 0;
    }
    assert.equal(segment.offset, expectedOffset, `offset of ${segment.key}`);
    if (segment.offset === 0) assert.ok(WAL_MAGICS.includes(segment.head.readUInt32BE(0)), `${segment.key} opens with a WAL header`);
    expectedOffset += segment.length;
  }
}

/** Groups segments by WAL index. */
function byIndex(segments: DecodedSegment[]): Map<number, DecodedSegment[]> {
  const groups = new Map<number, DecodedSegment[]>();
  for (const segment of segments) groups.set(segment.index, [...(groups.get(segment.index) ?? []), segment]);
  return groups;
}

/** Lists the shadow WAL indexes and the generations in walship's meta directory. */
async function readMeta(h: Harness): Promise<{ generations: string[]; current: string; shadowIndexes: number[] }> {
  const generations = (await fs.readdir(path.join(h.metaPath, 'generations'))).sort();
  const current = (await fs.readFile(path.join(h.metaPath, 'generation'), 'utf8')).trim();
  const names = await fs.readdir(path.join(h.metaPath, 'generations', current, 'wal')).catch(() => [] as string[]);
  const shadowIndexes = names.filter((n) => /^[0-9a-f]{8}\.wal$/.test(n)).map((n) => parseInt(n.slice(0, 8), 16));
  return { generations, current, shadowIndexes: shadowIndexes.sort((a, b) => a - b) };
}

describe('replicate', () => {
  for (const kind of KINDS) {
    test(`small transactions, two writers: ${kind}`, async () => {
      await withHarness(kind, { syncInterval: 100 }, async (h) => {
        const first = await h.openWriter();
        const second = await h.openWriter();
        const replicator = await h.startReplicator();

        // Two application processes write at once while walship ships.
        const counts = await Promise.all([
          first.insert({ transactions: 150, rows: 5, bytes: 200, pauseMs: 1, tag: 'first' }),
          second.insert({ transactions: 150, rows: 5, bytes: 200, pauseMs: 1, tag: 'second' }),
        ]);
        assert.deepEqual(
          counts.map((c) => c.busy),
          [0, 0],
          counts.flatMap((c) => c.busyErrors).join('\n'),
        );
        await replicator.sync();
        const sourceHash = contentHash(h.dbPath);
        await h.stopReplicator(replicator);

        assert.equal((await h.generations(kind)).length, 1, h.logText());
        assert.ok(h.logsWith('new transaction:').length > 1, 'walship shipped several WAL segments');
        await assertRestoreEquals(h, kind, sourceHash);
        await first.close();
        await second.close();
      });
    });
  }

  for (const kind of KINDS) {
    test(`transaction past max segment size: ${kind}`, async () => {
      await withHarness(kind, {}, async (h) => {
        const writer = await h.openWriter();
        const replicator = await h.startReplicator();

        await writer.insert({ transactions: 3, rows: 5, bytes: 500, tag: 'before' });
        // About 24 MiB of frames in one commit: one row of 4000 bytes fills a 4096-byte page.
        await writer.insert({ transactions: 1, rows: 6000, bytes: 4000, tag: 'large' });
        await writer.insert({ transactions: 3, rows: 5, bytes: 500, tag: 'after' });
        await replicator.sync();
        const sourceHash = contentHash(h.dbPath);
        await h.stopReplicator(replicator);

        const [generation, ...others] = await h.generations(kind);
        assert.deepEqual(others, [], h.logText());
        const segments = await h.decodedSegments(kind, generation!);
        const snapshots = await h.snapshotIndexes(kind, generation!);
        assertContiguous(segments, snapshots[0]!);

        const largest = Math.max(...segments.map((s) => s.length));
        assert.ok(largest <= MAX_SEGMENT_BYTES, `largest segment is ${largest} bytes`);
        const split = [...byIndex(segments).values()].find((group) => group.reduce((sum, s) => sum + s.length, 0) > 20 * 1024 * 1024);
        assert.ok(split, `no WAL index holds the large transaction: ${segments.map((s) => `${s.key}=${s.length}`).join(', ')}`);
        assert.ok(split.length >= 2, `the large transaction is in ${split.length} segment(s)`);

        await assertRestoreEquals(h, kind, sourceHash);
        await writer.close();
      });
    });
  }

  for (const kind of KINDS) {
    test(`WAL restarts after walship checkpoints: ${kind}`, async () => {
      await withHarness(kind, {}, async (h) => {
        const writer = await h.openWriter();
        const replicator = await h.startReplicator();

        // Four bursts with pauses, so that walship's throttled checkpoints run between them.
        for (let burst = 0; burst < 4; burst++) {
          await writer.insert({ transactions: 50, rows: 5, bytes: 1000, pauseMs: 1, tag: `burst ${burst}` });
          await sleep(300);
        }
        await replicator.sync();
        const sourceHash = contentHash(h.dbPath);
        await h.stopReplicator(replicator);

        const generations = await h.generations(kind);
        assert.equal(generations.length, 1, `walship's own checkpoints started a new generation\n${h.logText()}`);
        const segments = await h.decodedSegments(kind, generations[0]!);
        const snapshots = await h.snapshotIndexes(kind, generations[0]!);
        assert.ok(byIndex(segments).size >= 3, `WAL indexes: ${[...byIndex(segments).keys()].join(', ')}\n${h.logText()}`);
        assertContiguous(segments, snapshots[0]!);
        assert.ok(h.logsWith('checkpoint').length >= 2, 'walship checkpointed');

        await assertRestoreEquals(h, kind, sourceHash);
        await writer.close();
      });
    });
  }

  for (const kind of KINDS) {
    test(`app TRUNCATE while stopped: ${kind}`, async () => {
      await withHarness(kind, {}, async (h) => {
        const writer = await h.openWriter();
        let replicator = await h.startReplicator();
        await writer.insert({ transactions: 40, rows: 5, bytes: 500, tag: 'first run' });
        await replicator.sync();
        await h.stopReplicator(replicator);
        const firstHash = contentHash(h.dbPath);
        const [firstGeneration] = await h.generations(kind);

        // With walship stopped nothing holds a read transaction, so TRUNCATE empties the WAL.
        await writer.insert({ transactions: 20, rows: 5, bytes: 500, tag: 'stopped' });
        const checkpoint = await writer.checkpoint('TRUNCATE');
        assert.deepEqual(checkpoint.ok && checkpoint.busy, 0, JSON.stringify(checkpoint));
        await writer.insert({ transactions: 20, rows: 5, bytes: 500, tag: 'after truncate' });

        replicator = await h.startReplicator();
        await writer.insert({ transactions: 10, rows: 5, bytes: 500, tag: 'second run' });
        await replicator.sync();
        const sourceHash = contentHash(h.dbPath);
        await h.stopReplicator(replicator);

        const generations = await h.generations(kind);
        assert.equal(generations.length, 2, h.logText());
        assert.ok(generations.includes(firstGeneration!));
        assert.equal(h.logsWith('new generation').length, 2, h.logText());
        await assertRestoreEquals(h, kind, sourceHash);
        await assertRestoreEquals(h, kind, firstHash, { generation: firstGeneration! });
        await writer.close();
      });
    });
  }

  for (const kind of KINDS) {
    test(`restart continues the generation: ${kind}`, async () => {
      // walship must not checkpoint here: a complete checkpoint at stop would
      // let the application's next write restart the WAL, which ends the generation.
      await withHarness(kind, { database: NO_CHECKPOINTS }, async (h) => {
        const writer = await h.openWriter();
        let replicator = await h.startReplicator();
        await writer.insert({ transactions: 40, rows: 5, bytes: 300, tag: 'first run' });
        await replicator.sync();
        await h.stopReplicator(replicator);

        await writer.insert({ transactions: 40, rows: 5, bytes: 300, tag: 'stopped' });

        replicator = await h.startReplicator();
        await writer.insert({ transactions: 40, rows: 5, bytes: 300, tag: 'second run' });
        await replicator.sync();
        const sourceHash = contentHash(h.dbPath);
        await h.stopReplicator(replicator);

        assert.equal((await h.generations(kind)).length, 1, h.logText());
        assert.equal(h.logsWith('new generation').length, 1, h.logText());
        await assertRestoreEquals(h, kind, sourceHash);
        await writer.close();
      });
    });
  }

  for (const kind of KINDS) {
    test(`app checkpoints, walship idle: ${kind}`, async () => {
      await withHarness(kind, { database: NO_CHECKPOINTS }, async (h) => {
        const writer = await h.openWriter();
        const replicator = await h.startReplicator();

        const truncates = [];
        for (let round = 0; round < 3; round++) {
          await writer.insert({ transactions: 20, rows: 5, bytes: 500, pauseMs: 1, tag: `round ${round}` });
          const passive = await writer.checkpoint('PASSIVE');
          assert.ok(passive.ok, JSON.stringify(passive));
          await writer.insert({ transactions: 20, rows: 5, bytes: 500, pauseMs: 1, tag: `round ${round} after passive` });
          // walship's read transaction makes TRUNCATE wait for its busy timeout, then report busy.
          truncates.push(await writer.checkpoint('TRUNCATE', 200));
        }
        await replicator.sync();
        const sourceHash = contentHash(h.dbPath);
        await h.stopReplicator(replicator);

        assert.deepEqual(
          truncates.map((t) => t.ok && t.busy),
          [1, 1, 1],
          JSON.stringify(truncates),
        );
        assert.equal((await h.generations(kind)).length, 1, h.logText());
        await assertRestoreEquals(h, kind, sourceHash);
        await writer.close();
      });
    });
  }

  for (const kind of KINDS) {
    test(`app checkpoints, walship checkpointing: ${kind}`, async () => {
      await withHarness(kind, {}, async (h) => {
        const writer = await h.openWriter();
        const replicator = await h.startReplicator();

        // Here an application TRUNCATE may succeed in the moment walship
        // releases its read transaction for its own checkpoint; then walship
        // starts a new generation. Either way nothing may be lost.
        const results = [];
        for (let round = 0; round < 4; round++) {
          await writer.insert({ transactions: 30, rows: 5, bytes: 800, pauseMs: 1, tag: `round ${round}` });
          results.push(await writer.checkpoint('PASSIVE'));
          await writer.insert({ transactions: 30, rows: 5, bytes: 800, pauseMs: 1, tag: `round ${round} after passive` });
          results.push(await writer.checkpoint('TRUNCATE', 200));
        }
        await replicator.sync();
        const sourceHash = contentHash(h.dbPath);
        await h.stopReplicator(replicator);

        assert.ok(
          results.every((r) => r.ok),
          JSON.stringify(results),
        );
        await assertRestoreEquals(h, kind, sourceHash);
        await writer.close();
      });
    });
  }

  for (const kind of KINDS) {
    test(`no SQLITE_BUSY with RESTART: ${kind}`, async () => {
      await withHarness(kind, {}, async (h) => {
        const writer = await h.openWriter({ busyTimeout: 5000 });
        const replicator = await h.startReplicator();

        // Bursts of about 500 pages each, more than maxCheckpointPageCount
        // (400) between two of walship's throttled checkpoints, so some are RESTART.
        for (let burst = 0; burst < 5; burst++) {
          await writer.insert({ transactions: 100, rows: 5, bytes: 1000, tag: `burst ${burst}` });
          await sleep(250);
        }
        await replicator.sync();
        const sourceHash = contentHash(h.dbPath);
        await h.stopReplicator(replicator);

        const stats = await writer.close();
        const modes = h.logsWith('checkpoint').map((r) => r.mode);
        assert.ok(modes.includes('RESTART'), `checkpoint modes: ${modes.join(', ')}`);
        assert.equal(stats.busy, 0, stats.busyErrors.join('\n'));
        assert.equal(stats.commits, 500);
        await assertRestoreEquals(h, kind, sourceHash);
      });
    });
  }

  for (const kind of KINDS) {
    test(`rollback journal database: ${kind}`, async () => {
      await withHarness(kind, {}, async (h) => {
        const writer = await h.openWriter({ journalMode: 'delete' });
        await writer.insert({ transactions: 20, rows: 5, bytes: 500, tag: 'rollback journal' });
        assert.equal(await writer.pragma('journal_mode'), 'delete');

        // walship switches the database to WAL mode; the open writer follows.
        const replicator = await h.startReplicator();
        assert.equal(await writer.pragma('journal_mode'), 'wal');
        await writer.insert({ transactions: 100, rows: 5, bytes: 500, pauseMs: 1, tag: 'wal' });
        await replicator.sync();
        const sourceHash = contentHash(h.dbPath);
        await h.stopReplicator(replicator);

        assert.equal((await h.generations(kind)).length, 1, h.logText());
        await assertRestoreEquals(h, kind, sourceHash);
        await writer.close();
      });
    });
  }

  // Runs with both replicas at once, because removal waits for every replica.
  test('meta dir keeps current shadow only', async () => {
    const h = await Harness.create({ kinds: ['file', 's3'], s3 });
    try {
      const writer = await h.openWriter();
      let replicator = await h.startReplicator();
      for (let burst = 0; burst < 4; burst++) {
        await writer.insert({ transactions: 50, rows: 5, bytes: 1000, pauseMs: 1, tag: `burst ${burst}` });
        await sleep(300);
      }
      await replicator.sync();

      // Removal runs after each shipped segment without being awaited: poll, bounded.
      const replicas = replicator.databases[0]!.replicas;
      const minShipped = Math.min(...replicas.map((r) => r.pos().index));
      let meta = await readMeta(h);
      for (const deadline = Date.now() + SHADOW_REMOVAL_TIMEOUT_MS; meta.shadowIndexes.some((i) => i < minShipped) && Date.now() < deadline; ) {
        await sleep(50);
        meta = await readMeta(h);
      }
      assert.ok(minShipped >= 2, `replicas shipped up to index ${minShipped}\n${h.logText()}`);
      assert.deepEqual(
        meta.shadowIndexes.filter((i) => i < minShipped),
        [],
        `shadow WAL of shipped indexes kept: ${meta.shadowIndexes.join(', ')}`,
      );
      await h.stopReplicator(replicator);
      const firstGeneration = meta.current;

      // A TRUNCATE while walship is stopped forces a new generation at the next start.
      await writer.insert({ transactions: 10, rows: 5, bytes: 500, tag: 'stopped' });
      const checkpoint = await writer.checkpoint('TRUNCATE');
      assert.ok(checkpoint.ok && checkpoint.busy === 0, JSON.stringify(checkpoint));
      await writer.insert({ transactions: 10, rows: 5, bytes: 500, tag: 'after truncate' });
      replicator = await h.startReplicator();
      await writer.insert({ transactions: 10, rows: 5, bytes: 500, tag: 'second run' });
      await replicator.sync();
      const sourceHash = contentHash(h.dbPath);
      await h.stopReplicator(replicator);

      meta = await readMeta(h);
      assert.notEqual(meta.current, firstGeneration);
      assert.deepEqual(meta.generations, [meta.current], 'meta dir holds only the current generation');
      for (const kind of ['file', 's3'] as const) {
        assert.equal((await h.generations(kind)).length, 2, h.logText());
        await assertRestoreEquals(h, kind, sourceHash);
      }
      await writer.close();
    } finally {
      await h.cleanup();
    }
  });
});

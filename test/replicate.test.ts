import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, before, describe, test } from 'node:test';

import { formatPos } from '../src/pos.js';
import { MAX_SEGMENT_BYTES } from '../src/replica.js';
import { generationBounds } from '../src/replica/listing.js';
import { restore } from '../src/restore.js';
import type { RestoreResult } from '../src/restore.js';
import { contentHash, integrityCheck } from './support/content.js';
import { Harness } from './support/replicate-harness.js';
import type { DecodedSegment, HarnessOptions, ReplicaKind, WalshipProcess } from './support/replicate-harness.js';
import { startS3Server } from './support/s3-server.js';
import type { S3Server } from './support/s3-server.js';
import type { CheckpointOutcome, Writer } from './support/writer.js';

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

// Pause between write bursts: longer than walship's one-second spacing of checkpoints.
const BURST_GAP_MS = 1_100;

// Bounded wait for a walship process to write its first snapshot.
const START_TIMEOUT_MS = 10_000;

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
  const restored = `${kind} restore of ${formatPos(result.pos)}`;
  assert.equal(integrityCheck(output), 'ok', `integrity of the ${restored}\n${h.logText()}`);
  assert.equal(contentHash(output), expectedHash, `${restored} differs from the source\n${h.logText()}`);
  return result;
}

/**
 * Checks that a generation's WAL segments start at the snapshot's index and
 * that its indexes follow one another, each opening with a WAL header at
 * offset 0, each segment starting where the one before it ends.
 */
function assertContiguous(segments: DecodedSegment[], snapshotIndex: number): void {
  assert.equal(segments[0]?.index, snapshotIndex, `first WAL segment ${segments[0]?.key} of snapshot index ${snapshotIndex}`);
  let expectedIndex = snapshotIndex;
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

/**
 * Writes bursts of about 200 WAL frames, one a little over a second apart: walship
 * checkpoints at most once a second, and each complete checkpoint lets the
 * next burst restart the WAL into a new index.
 */
async function writeBursts(writer: Writer, bursts: number): Promise<void> {
  for (let burst = 0; burst < bursts; burst++) {
    if (burst > 0) await sleep(BURST_GAP_MS);
    await writer.insert({ transactions: 50, rows: 5, bytes: 1000, pauseMs: 1, tag: `burst ${burst}` });
  }
}

/** Waits, bounded, until the replica contains a snapshot, which shows that the walship process replicates. */
async function waitForSnapshot(h: Harness, kind: ReplicaKind, walship: WalshipProcess): Promise<void> {
  for (const deadline = Date.now() + START_TIMEOUT_MS; Date.now() < deadline; ) {
    const generations = await h.generations(kind);
    if (generations.length > 0 && (await h.snapshotIndexes(kind, generations[0]!)).length > 0) return;
    if (walship.child.exitCode !== null) break;
    await sleep(50);
  }
  throw new Error(`walship wrote no snapshot within ${START_TIMEOUT_MS} ms:\n${walship.output()}`);
}

/** Waits, bounded, until the clock is within the first 50 ms of a second. */
async function untilStartOfSecond(): Promise<void> {
  for (let i = 0; i < 100 && Date.now() % 1000 > 50; i++) await sleep(Math.min(20, 1000 - (Date.now() % 1000)));
}

/** Checks that an application checkpoint ran to the end: no error and no busy reader. */
function assertCheckpointDone(outcome: CheckpointOutcome): void {
  assert.ok(outcome.ok, `checkpoint failed: ${JSON.stringify(outcome)}`);
  assert.equal(outcome.busy, 0, `checkpoint was busy: ${JSON.stringify(outcome)}`);
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
        // The first snapshot is stored before the writers start, so the
        // writes below overlap shipping even on a loaded machine.
        await replicator.sync();

        // Two application processes write at once while walship ships.
        const counts = await Promise.all([
          first.insert({ transactions: 150, rows: 5, bytes: 200, pauseMs: 4, tag: 'first' }),
          second.insert({ transactions: 150, rows: 5, bytes: 200, pauseMs: 4, tag: 'second' }),
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
        assert.ok(h.logsWith('new transaction:').length > 1, `walship shipped several WAL segments\n${h.logText()}`);
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

        await writeBursts(writer, 3);
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
        assertCheckpointDone(await writer.checkpoint('TRUNCATE'));
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

  // S3 only: S3 keeps LastModified in whole seconds, file modification times are finer.
  test('new generation in the same second: s3', async () => {
    await withHarness('s3', {}, async (h) => {
      const writer = await h.openWriter();
      let replicator = await h.startReplicator();
      await writer.insert({ transactions: 10, rows: 5, bytes: 500, tag: 'first run' });
      await replicator.sync();
      const older = replicator.databases[0]!.db.pos().generation;

      // From the start of a second, the last upload of this generation and
      // the first uploads of the next take about 600 ms on 2 cores.
      await untilStartOfSecond();
      await writer.insert({ transactions: 1, rows: 5, bytes: 500, tag: 'end of first run' });
      await replicator.sync();
      await h.stopReplicator(replicator);
      assertCheckpointDone(await writer.checkpoint('TRUNCATE'));
      await writer.insert({ transactions: 5, rows: 5, bytes: 500, tag: 'after truncate' });
      replicator = await h.startReplicator();
      await replicator.sync();
      const newer = replicator.databases[0]!.db.pos().generation;
      const sourceHash = contentHash(h.dbPath);
      await h.stopReplicator(replicator);

      // Restores take the generation with the newest object, breaking equal
      // times by name, so the newer generation must end in a later second.
      const [olderTime, newerTime] = await h.withClient('s3', (client) =>
        Promise.all([older, newer].map(async (generation) => (await generationBounds(client, generation)).updatedAt.getTime())),
      );
      const times = `${older} ends at ${new Date(olderTime!).toISOString()}, ${newer} at ${new Date(newerTime!).toISOString()}`;
      assert.ok(newerTime! > olderTime!, times);
      await assertRestoreEquals(h, 's3', sourceHash);
      await writer.close();
    });
  });

  for (const kind of KINDS) {
    test(`walship killed mid-run: ${kind}`, async () => {
      await withHarness(kind, { syncInterval: 100 }, async (h) => {
        const writer = await h.openWriter();
        const walship = h.spawnWalship(['replicate', '-config', await h.writeConfigFile()]);
        await waitForSnapshot(h, kind, walship);

        // SIGKILL while the writer commits and walship copies, checkpoints and ships.
        const writing = writer.insert({ transactions: 200, rows: 5, bytes: 1000, pauseMs: 2, tag: 'killed run' });
        await sleep(500);
        process.kill(walship.child.pid!, 'SIGKILL');
        assert.equal(await walship.exited, 'SIGKILL', walship.output());
        await writing;
        await writer.insert({ transactions: 20, rows: 5, bytes: 1000, tag: 'walship down' });

        const replicator = await h.startReplicator();
        await writer.insert({ transactions: 20, rows: 5, bytes: 1000, tag: 'second run' });
        await replicator.sync();
        const sourceHash = contentHash(h.dbPath);
        await h.stopReplicator(replicator);

        for (const generation of await h.generations(kind)) {
          const snapshots = await h.snapshotIndexes(kind, generation);
          assertContiguous(await h.decodedSegments(kind, generation), snapshots[0]!);
        }
        await assertRestoreEquals(h, kind, sourceHash);
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

        // Each burst starts with one transaction of about 500 WAL frames: when
        // it commits, walship copies more than maxCheckpointPageCount (400)
        // frames at once and runs a RESTART checkpoint. Small transactions follow.
        for (let burst = 0; burst < 5; burst++) {
          await writer.insert({ transactions: 1, rows: 2000, bytes: 1000, tag: `large ${burst}` });
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
        assert.equal(stats.commits, 505);
        await assertRestoreEquals(h, kind, sourceHash);
      });
    });
  }

  for (const kind of KINDS) {
    test(`app holds the write lock: ${kind}`, async (t) => {
      // walship waits 200 ms for SQLite's write lock, far less than the application holds it.
      await withHarness(kind, { database: { busyTimeout: 200 } }, async (h) => {
        const writer = await h.openWriter();
        const other = await h.openWriter();
        const replicator = await h.startReplicator();

        // About 80 WAL frames are committed right before the write lock is
        // taken, so walship's next checkpoint (at most a second away) falls
        // inside the 1.5 s that the lock is held. The checkpoint runs, but
        // walship cannot take the write lock after it. The other writer's
        // commits wait behind the lock.
        const [held, waited] = await Promise.all([
          writer.holdWrite({ transactionsBefore: 20, rows: 5, bytes: 1000, holdMs: 1500, tag: 'held' }),
          sleep(300).then(() => other.insert({ transactions: 5, rows: 5, bytes: 1000, tag: 'waiting' })),
        ]);
        assert.equal(held.commits, 21, held.busyErrors.join('\n'));
        assert.equal(waited.busy, 0, waited.busyErrors.join('\n'));
        await writer.insert({ transactions: 20, rows: 5, bytes: 1000, pauseMs: 1, tag: 'after' });
        await replicator.sync();
        const sourceHash = contentHash(h.dbPath);
        await h.stopReplicator(replicator);

        t.diagnostic(`walship errors: ${h.logs.filter((r) => r.level === 'error' || r.level === 'warn').map((r) => r.msg).join(', ')}`);
        await assertRestoreEquals(h, kind, sourceHash);
        await writer.close();
        await other.close();
      });
    });
  }

  for (const kind of KINDS) {
    test(`rollback journal database: ${kind}`, async () => {
      await withHarness(kind, {}, async (h) => {
        const writer = await h.openWriter({ journalMode: 'delete' });
        await writer.insert({ transactions: 20, rows: 5, bytes: 500, tag: 'rollback journal' });
        assert.equal(await writer.pragma('journal_mode'), 'delete');

        // walship switches the database to WAL mode. The open writer follows
        // at its next transaction, when it reads the database header again.
        const replicator = await h.startReplicator();
        await writer.insert({ transactions: 100, rows: 5, bytes: 500, pauseMs: 1, tag: 'wal' });
        assert.equal(await writer.pragma('journal_mode'), 'wal');
        await replicator.sync();
        const sourceHash = contentHash(h.dbPath);
        await h.stopReplicator(replicator);

        assert.equal((await h.generations(kind)).length, 1, h.logText());
        await assertRestoreEquals(h, kind, sourceHash);
        await writer.close();
      });
    });
  }

  for (const kind of KINDS) {
    test(`VACUUM shrinks the database: ${kind}`, async () => {
      await withHarness(kind, {}, async (h) => {
        const writer = await h.openWriter();
        const replicator = await h.startReplicator();
        await writer.insert({ transactions: 20, rows: 20, bytes: 1000, pauseMs: 1, tag: 'before vacuum' });
        await writer.exec('DELETE FROM t WHERE id % 10 != 0');

        // VACUUM rewrites every page into the WAL, and its commit frame gives
        // the smaller database size that a checkpoint truncates the file to.
        await writer.exec('VACUUM');
        await writer.insert({ transactions: 10, rows: 5, bytes: 500, pauseMs: 1, tag: 'after vacuum' });
        await replicator.sync();
        const sourceHash = contentHash(h.dbPath);
        await h.stopReplicator(replicator);

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
      await writeBursts(writer, 3);
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
      assertCheckpointDone(await writer.checkpoint('TRUNCATE'));
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

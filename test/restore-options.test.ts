import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { PassThrough } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';

import { parseTimestamp } from '../src/cli/restore.js';
import {
  COMMIT_TIMES_MAGIC,
  SNAPSHOT_TIME_MAGIC,
  decodeCommitTimes,
  decodeSnapshotHeader,
  encodeCommitTimes,
  encodeSnapshotHeader,
  findCommitEnds,
} from '../src/commit-times.js';
import { WalshipError } from '../src/errors.js';
import { createLogger } from '../src/logger.js';
import { LZ4FrameReader, decodeFrame, loadHasher } from '../src/lz4.js';
import type { FileClientConfig } from '../src/replica/client.js';
import { listSegments, listSnapshots } from '../src/replica/listing.js';
import { restore } from '../src/restore.js';
import type { RestoreProgress } from '../src/restore.js';
import { PROGRESS_LINE_INTERVAL_MS, progressDisplay } from '../src/restore/progress-bar.js';
import { contentHash, fixtureDigest, integrityCheck } from './support/content.js';
import { Harness } from './support/replicate-harness.js';
import type { ReplicaKind } from './support/replicate-harness.js';
import { startS3Server } from './support/s3-server.js';
import type { S3Server } from './support/s3-server.js';

/**
 * Restore options on real replicas: walship replicates a writer whose commits
 * are spread over a few seconds, with their wall times and content hashes
 * recorded, to a file replica and an S3 replica on s3rver. Restores to points
 * in time must reproduce the source exactly as it was then. The Litestream
 * v0.3.11 fixture covers the fallback to object times, and the real
 * Litestream v0.3.13 binary and `lz4 -d` read the segments walship writes.
 */

const LITESTREAM = fileURLToPath(new URL('../../node_modules/@flydotio/litestream-linux-x64/litestream', import.meta.url));
const FIXTURE = fileURLToPath(new URL('../../test/fixtures/litestream-v0.3.11/', import.meta.url));
const CLI = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));
const KINDS: readonly ReplicaKind[] = ['file', 's3'];

// Pause between commits. A commit is captured within one monitor interval
// (50 ms in the harness) of its COMMIT, far less than half of this pause, so
// a time half-way between two commits separates them exactly.
const COMMIT_GAP_MS = 400;

/** The source's state after one commit. */
interface Checkpoint {
  /** Wall time just after the commit returned. */
  after: number;
  hash: string;
}

let s3: S3Server;
let h: Harness;
let scratch: string;
let history: Checkpoint[] = [];
let latestHash: string;

before(async () => {
  s3 = await startS3Server();
  scratch = await fs.mkdtemp(path.join(os.tmpdir(), 'walship-restore-options-'));
  // A sync interval longer than the commit gap puts several commits in one segment.
  h = await Harness.create({ kinds: ['file', 's3'], s3, syncInterval: 1000 });

  const writer = await h.openWriter();
  try {
    const replicator = await h.startReplicator();
    await replicator.sync();
    await sleep(50);
    history.push({ after: Date.now(), hash: contentHash(h.dbPath) });
    for (let i = 0; i < 10; i++) {
      await sleep(COMMIT_GAP_MS);
      if (i === 4) await writer.exec(`UPDATE t SET tag = 'updated' WHERE id % 3 = 0`);
      else if (i === 7) await writer.exec('DELETE FROM t WHERE id % 5 = 0');
      // About 10 pages a commit, so walship's checkpoints start new WAL indexes on the way.
      else await writer.insert({ transactions: 1, rows: 30, bytes: 1000, tag: `commit ${i}` });
      history.push({ after: Date.now(), hash: contentHash(h.dbPath) });
    }
    await replicator.sync();
    latestHash = contentHash(h.dbPath);
    await h.stopReplicator(replicator);
    await writer.close();
  } finally {
    writer.kill();
  }
});

after(async () => {
  await h?.cleanup();
  await s3?.close();
  if (scratch) await fs.rm(scratch, { recursive: true, force: true });
});

/** Returns a fresh output path in the scratch folder. */
async function outputPath(name: string): Promise<string> {
  const dir = await fs.mkdtemp(path.join(scratch, 'out-'));
  return path.join(dir, `${name}.db`);
}

/** Checks a restored file's integrity and returns its content hash. */
function checkedHash(file: string): string {
  assert.equal(integrityCheck(file), 'ok', `integrity of ${path.basename(file)}`);
  return contentHash(file);
}

/** Runs the walship CLI and returns its exit code and output. */
function walship(args: string[], env: Record<string, string> = {}): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [CLI, ...args], { stdio: ['ignore', 'pipe', 'pipe'], env: { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: scratch, ...env } });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    child.once('close', (code) => resolve({ code, stdout, stderr }));
  });
}

/** Returns the CLI replica URL of one harness replica. */
function replicaUrl(kind: ReplicaKind): string {
  if (kind === 'file') return `file://${(h.replicaConfig('file') as FileClientConfig).root}`;
  const config = h.replicaConfig('s3');
  if (config.type !== 's3') throw new Error('not s3');
  return `s3://${config.bucket}/${config.prefix}?endpoint=${encodeURIComponent(config.endpoint!)}&region=us-east-1`;
}

/** Environment with the s3rver credentials for CLI runs against S3. */
function s3Env(): Record<string, string> {
  const config = h.replicaConfig('s3');
  if (config.type !== 's3') throw new Error('not s3');
  return { AWS_ACCESS_KEY_ID: config.accessKeyId!, AWS_SECRET_ACCESS_KEY: config.secretAccessKey! };
}

describe('commit times', () => {
  test('encode and decode round trip', () => {
    const times = [
      { end: 4152, at: 1_700_000_000_000 },
      { end: 8272, at: 1_700_000_000_250 },
      { end: 12392, at: 1_700_000_003_000 },
    ];
    const frame = encodeCommitTimes(times);
    assert.equal(frame.readUInt32LE(0), COMMIT_TIMES_MAGIC);
    assert.equal(frame.readUInt32LE(4), frame.length - 8);
    assert.deepEqual(decodeCommitTimes(frame.subarray(8)), times);
    assert.deepEqual(decodeCommitTimes(encodeCommitTimes([]).subarray(8)), []);
    // A foreign payload under the same magic is ignored.
    assert.equal(decodeCommitTimes(Buffer.from('something else entirely')), undefined);
  });

  test('commit frames are found by their commit field', () => {
    const pageSize = 512;
    const frame = 24 + pageSize;
    const segment = Buffer.alloc(32 + 3 * frame);
    segment.writeUInt32BE(7, 32 + 4 + frame); // the second frame commits
    segment.writeUInt32BE(9, 32 + 4 + 2 * frame); // and the third
    assert.deepEqual(findCommitEnds(segment, 0, pageSize), [32 + 2 * frame, 32 + 3 * frame]);
    assert.deepEqual(findCommitEnds(segment.subarray(32), 4096, pageSize), [2 * frame, 3 * frame]);
  });

  test('every walship segment starts with a commit-time frame that lz4 -d skips', async () => {
    const generation = (await h.generations('file'))[0]!;
    const root = (h.replicaConfig('file') as FileClientConfig).root;
    await h.withClient('file', async (client) => {
      const segments = await listSegments(client, generation);
      assert.ok(segments.length >= 3, `expected several segments, got ${segments.length}`);
      let commits = 0;
      for (const segment of segments) {
        const body = await client.get(segment.key);
        assert.equal(body.readUInt32LE(0), COMMIT_TIMES_MAGIC, segment.key);

        const reader = new LZ4FrameReader(await loadHasher());
        const items = reader.push(body);
        const skippable = items.find((item) => item.kind === 'skippable');
        assert.ok(skippable?.kind === 'skippable', segment.key);
        const times = decodeCommitTimes(skippable.payload);
        assert.ok(times !== undefined, segment.key);
        commits += times.length;

        // The lz4 tool decodes the same bytes as walship's decoder.
        const viaTool = execFileSync('lz4', ['-d', '-c', path.join(root, segment.key)], { maxBuffer: 64 << 20 });
        assert.ok(viaTool.equals(await decodeFrame(body)), segment.key);
      }
      // The initial snapshot's commit, 10 writer commits, and walship's own bookkeeping at most.
      assert.ok(commits >= 10, `expected at least 10 commits, got ${commits}`);
    });
  });

  test('Litestream v0.3.13 restores segments with commit-time frames', async () => {
    const out = await outputPath('litestream');
    execFileSync(LITESTREAM, ['restore', '-o', out, replicaUrl('file')], { env: { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: scratch }, stdio: 'pipe', timeout: 20_000 });
    assert.equal(checkedHash(out), latestHash);
  });
});

describe('snapshot header', () => {
  test('version 2 round trip', () => {
    const frame = encodeSnapshotHeader({ takenAt: 1_700_000_000_123, walOffset: 32 + 10 * 4120 });
    assert.equal(frame.readUInt32LE(0), SNAPSHOT_TIME_MAGIC);
    assert.equal(frame.readUInt32LE(4), frame.length - 8);
    assert.deepEqual(decodeSnapshotHeader(frame), { takenAt: 1_700_000_000_123, walOffset: 32 + 10 * 4120 });
    // A cut frame is no header.
    assert.equal(decodeSnapshotHeader(frame.subarray(0, frame.length - 1)), undefined);
  });

  test('version 1 has the time only', () => {
    // The frame of earlier walship releases: tag, version 1, time.
    const payload = Buffer.alloc(13);
    payload.write('WSST', 0, 'latin1');
    payload.writeUInt8(1, 4);
    payload.writeBigUInt64LE(1_700_000_000_456n, 5);
    const frame = Buffer.alloc(8 + payload.length);
    frame.writeUInt32LE(SNAPSHOT_TIME_MAGIC, 0);
    frame.writeUInt32LE(payload.length, 4);
    payload.copy(frame, 8);
    assert.deepEqual(decodeSnapshotHeader(frame), { takenAt: 1_700_000_000_456 });
  });

  test('restore rejects snapshot without its WAL', { timeout: 60_000 }, async () => {
    // The WAL contains frames when walship starts, so the first snapshot records
    // that its index must be applied past them. Without the segments, as after
    // a crash between the snapshot's upload and theirs, the restore must refuse.
    const local = await Harness.create({ kinds: ['file'] });
    try {
      const writer = await local.openWriter();
      await writer.insert({ transactions: 20, rows: 5, bytes: 1000, tag: 'before walship' });
      const replicator = await local.startReplicator();
      await replicator.sync();
      await local.stopReplicator(replicator);
      await writer.close();

      const generation = (await local.generations('file'))[0]!;
      const snapshotKey = await local.withClient('file', async (client) => {
        const [snapshot] = await listSnapshots(client, generation);
        const header = decodeSnapshotHeader((await client.get(snapshot!.key)).subarray(0, 64));
        assert.ok(header?.walOffset !== undefined, `snapshot header ${JSON.stringify(header)}`);
        assert.ok(header.walOffset > 32, `snapshot header ${JSON.stringify(header)}`);
        await client.delete((await listSegments(client, generation)).map((s) => s.key));
        return snapshot!.key;
      });

      const out = path.join(local.dir, 'restored.db');
      await assert.rejects(restore({ client: local.replicaConfig('file'), outputPath: out }), (err: unknown) => {
        assert.ok(err instanceof WalshipError, String(err));
        assert.equal(err.code, 'CORRUPT_REPLICA');
        assert.match(err.message, new RegExp(`snapshot ${snapshotKey} needs WAL index 00000000 applied up to offset \\d+`));
        assert.match(err.message, /start walship on this database again/);
        return true;
      });
      await assert.rejects(fs.access(out), 'no output file after the refused restore');
    } finally {
      await local.cleanup();
    }
  });
});

describe('point-in-time restore of walship replicas', () => {
  for (const kind of KINDS) {
    test(`${kind}: every time between commits restores the state then`, async () => {
      // Half-way between commit i and commit i + 1, for every recorded commit.
      for (let i = 0; i < history.length; i++) {
        const at = new Date(history[i]!.after + COMMIT_GAP_MS / 2);
        const out = await outputPath(`${kind}-${i}`);
        const result = await restore({ client: h.replicaConfig(kind), outputPath: out, timestamp: at });
        assert.equal(checkedHash(out), history[i]!.hash, `${kind} at ${at.toISOString()} (after commit ${i}, pos ${JSON.stringify(result.pos)})`);
        if (result.lastCommitAt !== undefined) assert.ok(result.lastCommitAt.getTime() <= at.getTime());
      }
    });
  }

  test('a time after the newest object restores the latest state', async () => {
    const out = await outputPath('future');
    await restore({ client: h.replicaConfig('s3'), outputPath: out, timestamp: new Date(Date.now() + 3_600_000) });
    assert.equal(checkedHash(out), latestHash);
  });

  test('a time before the first snapshot names the earliest restorable time', async () => {
    const out = await outputPath('past');
    await assert.rejects(restore({ client: h.replicaConfig('file'), outputPath: out, timestamp: new Date('2001-01-01T00:00:00Z') }), (err: unknown) => {
      assert.ok(err instanceof WalshipError, String(err));
      assert.equal(err.code, 'NOT_FOUND');
      assert.match(err.message, /earliest restorable time is \d{4}-\d\d-\d\dT/);
      return true;
    });
    await assert.rejects(fs.access(out));
  });

  test('CLI -timestamp with an offset restores the same state as UTC', async () => {
    const i = 5;
    const at = new Date(history[i]!.after + COMMIT_GAP_MS / 2);
    // The same instant written with a +02:00 offset.
    const shifted = new Date(at.getTime() + 2 * 3_600_000).toISOString().replace('Z', '+02:00');
    const out = await outputPath('cli-timestamp');
    const run = await walship(['restore', '-timestamp', shifted, '-o', out, replicaUrl('s3')], s3Env());
    assert.equal(run.code, 0, run.stderr);
    assert.equal(checkedHash(out), history[i]!.hash);
  });

  test('RFC 3339 parsing', () => {
    assert.equal(parseTimestamp('2026-12-04T20:12:20.203259023Z').toISOString(), '2026-12-04T20:12:20.203Z');
    assert.equal(parseTimestamp('2026-12-04T22:12:20+02:00').toISOString(), '2026-12-04T20:12:20.000Z');
    for (const bad of ['2026-12-04', '2026-02-30T00:00:00Z', '2026-12-04T20:12:20', 'yesterday', '2026-12-04T25:00:00Z']) {
      assert.throws(() => parseTimestamp(bad), /is not an RFC 3339 time/, bad);
    }
  });
});

describe('restore flags on walship replicas', () => {
  test('-generation and -index (hex) match the library restore of that index', async () => {
    const generation = (await h.generations('file'))[0]!;
    const segments = await h.withClient('file', (client) => listSegments(client, generation));
    const last = segments.at(-1)!.index;
    assert.ok(last >= 1, `expected several WAL indexes, got ${last + 1}`);

    const viaCli = await outputPath('cli-index');
    const run = await walship(['restore', '-generation', generation, '-index', (last - 1).toString(16), '-o', viaCli, replicaUrl('file')]);
    assert.equal(run.code, 0, run.stderr);

    const viaLitestream = await outputPath('litestream-index');
    execFileSync(LITESTREAM, ['restore', '-generation', generation, '-index', String(last - 1), '-o', viaLitestream, replicaUrl('file')], {
      env: { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: scratch },
      stdio: 'pipe',
      timeout: 20_000,
    });
    assert.equal(checkedHash(viaCli), checkedHash(viaLitestream));
    assert.notEqual(checkedHash(viaCli), latestHash);
  });

  test('-parallelism 1 and 3 restore the same content', async () => {
    for (const parallelism of ['1', '3']) {
      const out = await outputPath(`parallel-${parallelism}`);
      const run = await walship(['restore', '-parallelism', parallelism, '-o', out, replicaUrl('file')]);
      assert.equal(run.code, 0, run.stderr);
      assert.equal(checkedHash(out), latestHash);
    }
  });

  test('-if-db-not-exists leaves an existing file untouched', async () => {
    const out = await outputPath('existing');
    await fs.writeFile(out, 'not a database');
    const run = await walship(['restore', '-if-db-not-exists', '-o', out, replicaUrl('file')]);
    assert.equal(run.code, 0, run.stderr);
    assert.equal(await fs.readFile(out, 'utf8'), 'not a database');

    const refused = await walship(['restore', '-o', out, replicaUrl('file')]);
    assert.equal(refused.code, 1);
    assert.match(refused.stderr, /already exists/);
  });

  test('-if-replica-exists exits 0 when there is no backup', async () => {
    const empty = await fs.mkdtemp(path.join(scratch, 'empty-replica-'));
    const out = await outputPath('none');
    const run = await walship(['restore', '-if-replica-exists', '-o', out, `file://${empty}`]);
    assert.equal(run.code, 0, run.stderr);
    await assert.rejects(fs.access(out));

    const refused = await walship(['restore', '-o', out, `file://${empty}`]);
    assert.equal(refused.code, 1);
    assert.match(refused.stderr, /no backups found/);
  });

  test('-replica picks one of several replicas of a config database', async () => {
    const config = await h.writeConfigFile();
    for (const name of ['file', 's3']) {
      const out = await outputPath(`replica-${name}`);
      const run = await walship(['restore', '-config', config, '-replica', name, '-o', out, h.dbPath]);
      assert.equal(run.code, 0, run.stderr);
      assert.equal(checkedHash(out), latestHash);
    }

    const out = await outputPath('replica-none');
    const run = await walship(['restore', '-config', config, '-replica', 'gcs', '-o', out, h.dbPath]);
    assert.equal(run.code, 1);
    assert.match(run.stderr, /no replica named "gcs".*file, s3/);
  });

  test('several replicas: the newest backup wins', async () => {
    // The config's first replica is a stale copy of the file replica: its
    // newest segment is gone and its objects are an hour older.
    const root = (h.replicaConfig('file') as FileClientConfig).root;
    const stale = await fs.mkdtemp(path.join(scratch, 'stale-replica-'));
    await fs.cp(root, stale, { recursive: true });
    const files = (await fs.readdir(stale, { recursive: true })).map((f) => path.join(stale, String(f)));
    const segments = files.filter((f) => f.endsWith('.wal.lz4')).sort();
    await fs.rm(segments.at(-1)!);
    const hourAgo = new Date(Date.now() - 3_600_000);
    for (const file of files.filter((f) => f !== segments.at(-1))) await fs.utimes(file, hourAgo, hourAgo);

    const config = await h.writeConfigFile();
    const text = await fs.readFile(config, 'utf8');
    const staleConfig = path.join(scratch, 'stale.yml');
    await fs.writeFile(staleConfig, text.replace(`path: ${root}`, `path: ${stale}`));

    const out = await outputPath('newest-replica');
    const run = await walship(['restore', '-config', staleConfig, '-o', out, h.dbPath]);
    assert.equal(run.code, 0, run.stderr);
    assert.match(run.stderr, /restoring from the replica with the newest backup .*replica=s3/);
    assert.equal(checkedHash(out), latestHash);

    // Named, the stale replica is still the one read.
    const named = await outputPath('stale-replica');
    const staleRun = await walship(['restore', '-config', staleConfig, '-replica', 'file', '-o', named, h.dbPath]);
    assert.equal(staleRun.code, 0, staleRun.stderr);
    assert.notEqual(checkedHash(named), latestHash);
  });

  test('plain progress lines go to the log when stderr is not a terminal', async () => {
    const out = await outputPath('progress');
    const run = await walship(['restore', '-o', out, replicaUrl('file')]);
    assert.equal(run.code, 0, run.stderr);
    // The bar's carriage returns never reach a pipe.
    assert.ok(!run.stderr.includes('\r'), run.stderr);
  });
});

describe('progress display', () => {
  const step = (done: number, objects: number, finished = false): RestoreProgress => ({
    bytesDone: done,
    bytesTotal: 10 << 20,
    objectsDone: objects,
    objectsTotal: 20,
    done: finished,
  });

  test('plain lines every few seconds with rate and ETA', () => {
    const lines: Array<Record<string, unknown>> = [];
    const logger = createLogger({ format: 'json', level: 'info', destination: { write: (line: string) => lines.push(JSON.parse(line) as Record<string, unknown>) } });
    let now = 1_000_000;
    const display = progressDisplay({ isTTY: false } as NodeJS.WriteStream, logger, () => now);
    display.update(step(0, 0));
    now += 1000;
    display.update(step(1 << 20, 2));
    assert.equal(lines.length, 0, 'no line before the interval');
    now += PROGRESS_LINE_INTERVAL_MS;
    display.update(step(5 << 20, 10));
    assert.equal(lines.length, 1);
    assert.equal(lines[0]!.objects, '10/20');
    assert.equal(lines[0]!.bytes, 5 << 20);
    assert.equal(lines[0]!.eta, '6s');
    assert.match(String(lines[0]!.msg), /restore progress 50%: 5\.0 MiB of 10\.0 MiB/);
    display.update(step(10 << 20, 20, true));
    display.stop();
    display.stop();
    assert.equal(lines.length, 2);
  });

  test('a bar on a terminal', async () => {
    const stream = new PassThrough() as PassThrough & { isTTY: boolean; columns: number };
    stream.isTTY = true;
    stream.columns = 120;
    let written = '';
    stream.on('data', (chunk: Buffer) => (written += chunk.toString()));
    const display = progressDisplay(stream as unknown as NodeJS.WriteStream, createLogger({ level: 'silent' }));
    display.update(step(0, 0));
    display.update(step(3 << 20, 6));
    display.update(step(10 << 20, 20, true));
    display.stop();
    await sleep(10);
    assert.match(written, /restore .*100% \| 10\.0 MiB of 10\.0 MiB \| 20\/20 objects \| .*\/s \| ETA/);
  });
});

describe('point-in-time restore of the Litestream v0.3.11 fixture', () => {
  interface Point {
    name: string;
    sha256: string;
  }
  let points: Map<string, Point>;
  let root: string;

  before(async () => {
    const expected = JSON.parse(await fs.readFile(path.join(FIXTURE, 'expected.json'), 'utf8')) as { points: Point[] };
    points = new Map(expected.points.map((p) => [p.name, p]));
    root = await copyFixture('fixture');
  });

  /** Copies the fixture replica and sets object times from its manifest, optionally shifted per generation. */
  async function copyFixture(name: string, shiftMs: Record<string, number> = {}): Promise<string> {
    const dir = path.join(scratch, name);
    await fs.cp(path.join(FIXTURE, 'file-replica'), dir, { recursive: true });
    const manifest = JSON.parse(await fs.readFile(path.join(FIXTURE, 'file-replica.manifest.json'), 'utf8')) as Array<{ key: string; mtime: string }>;
    for (const { key, mtime } of manifest) {
      const generation = key.split('/')[1]!;
      const time = new Date(new Date(mtime.replace(/(\.\d{3})\d*Z$/, '$1Z')).getTime() + (shiftMs[generation] ?? 0));
      await fs.utimes(path.join(dir, key), time, time);
    }
    return dir;
  }

  /** Restores the fixture at `time` and returns the fixture digest of the result. */
  async function digestAt(time: string, replicaRoot = root): Promise<string> {
    const out = await outputPath('fixture');
    await restore({ client: { type: 'file', root: replicaRoot }, outputPath: out, timestamp: parseTimestamp(time) });
    assert.equal(integrityCheck(out), 'ok');
    return fixtureDigest(out);
  }

  test('object times restore each named point', async () => {
    assert.equal(await digestAt('2026-12-04T20:11:56.215Z'), points.get('A')!.sha256);
    assert.equal(await digestAt('2026-12-04T20:12:06.452Z'), points.get('B')!.sha256);
    assert.equal(await digestAt('2026-12-04T20:12:20.203259023Z'), points.get('C')!.sha256);
    assert.equal(await digestAt('2026-12-04T20:12:28.525Z'), points.get('D')!.sha256);
  });

  test('times Litestream v0.3.11 refuses restore the newest state before them', async () => {
    // Between the generations: the first generation's last state.
    assert.equal(await digestAt('2026-12-04T20:12:21.784Z'), points.get('C')!.sha256);
    // After the newest object: the latest state.
    assert.equal(await digestAt('2026-12-04T20:12:33.442Z'), points.get('final')!.sha256);
  });

  test('a time before the first snapshot is refused with the earliest restorable time', async () => {
    await assert.rejects(digestAt('2026-12-04T20:11:49Z'), /earliest restorable time is 2026-12-04T20:11:50\.211Z/);
  });

  test('latest generation by newest activity', async () => {
    // Moving the first generation's objects an hour later makes it the most recently active.
    const shifted = await copyFixture('shifted', { '78eb93ce395367ad': 3_600_000 });
    const out = await outputPath('shifted');
    const result = await restore({ client: { type: 'file', root: shifted }, outputPath: out });
    assert.equal(result.generation, '78eb93ce395367ad');
    assert.equal(fixtureDigest(out), points.get('C')!.sha256);
  });
});

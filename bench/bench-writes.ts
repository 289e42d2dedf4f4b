import path from 'node:path';

import { MB, RESTORE_PARALLELISM } from './bench-calibrate.js';
import type { WriteResult, WriterJob } from './bench-jobs.js';
import { formatGiB } from './bench-options.js';
import { runJob } from './bench-process.js';
import { lagStats } from './bench-report.js';
import type { WorkloadResult } from './bench-report.js';
import {
  appRate,
  checkReplica,
  checkRestore,
  checkTarget,
  cleanUp,
  createDatabase,
  recordStoreCpu,
  removeDatabase,
  SMALL_TX,
  startWalship,
  storeCpuSeconds,
  usageBetween,
  waitForAnchor,
  workloadLimits,
  waitStored,
} from './bench-scenario.js';
import type { BenchContext } from './bench-scenario.js';
import { lagOf } from './bench-wal-position.js';
import type { ReplicatedDb } from './bench-walship.js';

/**
 * The workloads with one writer and one database: small-tx (flat out),
 * bulk (256 MiB in 4 MiB transactions) and paced (200 transactions a second
 * at two sync intervals).
 */

const BULK_BYTES = 256 * 1024 * 1024;
const BULK_TX_BYTES = 4 * 1024 * 1024;
const PACED_RATE = 200;
// Disk use per second of small-tx at full speed, an estimate above what 2
// cores write (about 60 MB/s of database growth): the database, its replica
// and the restored copy.
const SMALL_TX_BYTES_PER_SECOND = 3 * 100 * MB;

/** Settings of a replicated write: its walship run, its job and its waits. */
interface ReplicatedWrite {
  label: string;
  syncInterval: string;
  job: (dbPath: string) => WriterJob;
  jobTimeoutMs: number;
  /** How long to wait after the last commit for the replica to store it. */
  catchUpTimeoutMs: number;
}

/**
 * Runs a job against a database that walship replicates. Then it measures
 * the application's rate, the time the last commit was stored, and the lag
 * of every commit the writer recorded. It also records walship's CPU and
 * memory, checks the replica, and compares a restore with the source.
 */
async function replicatedWrite(ctx: BenchContext, result: WorkloadResult, spec: ReplicatedWrite): Promise<WriteResult> {
  const db: ReplicatedDb = { path: path.join(ctx.workDir, `${spec.label}.db`), name: spec.label, prefix: `${ctx.store.runPrefix}/${spec.label}` };
  createDatabase(db.path);
  const walship = await startWalship(ctx, spec.label, [db], spec.syncInterval);

  try {
    const before = walship.usage();
    const shippedBefore = walship.walBytes;
    const segmentsBefore = walship.segments;
    const storeBefore = storeCpuSeconds(ctx);
    const write = await runJob<WriteResult>(spec.job(db.path), spec.jobTimeoutMs);
    result.with = appRate(write);
    const marks = write.marks[db.path] ?? [];
    const last = marks.at(-1);

    const anchor = await waitForAnchor(ctx, db.prefix);
    if (anchor === undefined) throw new Error(`walship stored no WAL segment of ${db.name} within the wait`);
    const storedAt = last === undefined ? undefined : await waitStored(walship, db, anchor, last, spec.catchUpTimeoutMs);
    const after = walship.usage();
    const shippedBytes = walship.walBytes - shippedBefore;
    const shipSeconds = ((storedAt ?? Date.now()) - write.startedAt) / 1000;
    recordStoreCpu(ctx, result.extra, storeBefore, shipSeconds);

    result.catchUpSeconds = storedAt === undefined || last === undefined ? null : (storedAt - last.t) / 1000;
    const mbps = shippedBytes / MB / shipSeconds;
    // The ratio to the limit is set once the replica's size gives the compression ratio.
    result.shipped = { bytes: shippedBytes, seconds: shipSeconds, mbps, ratio: 0, segments: walship.segments - segmentsBefore };
    result.walship = usageBetween(walship, before, after, shippedBytes);
    const timeline = walship.timelines.get(db.name)!;
    result.lag = lagStats(marks.map((mark) => lagOf(mark, anchor, timeline)));
    result.extra.walBytesWritten = write.walBytes;
    result.extra.commitMs = write.commitMs;
    result.extra.checkpoints = walship.checkpointSummary();
    if (write.lateness !== undefined) result.extra.commitLatenessMs = write.lateness;
    if (storedAt === undefined) {
      result.notes.push(`the last commit was not stored within ${spec.catchUpTimeoutMs / 1000} s; walship had shipped ${formatGiB(shippedBytes)} of ${formatGiB(write.walBytes)} of WAL`);
    }

    ctx.progress(`${result.name}: stopping walship (it ships what it captured first)`);
    const stop = await walship.stop();
    result.extra.stopSeconds = stop.stopSeconds;
    result.walship.peakRssMiB = Math.max(result.walship.peakRssMiB, walship.usage().peakRssBytes / 1024 / 1024);
    result.walship.warnings = walship.warnings;
    result.walship.errors = walship.errors;

    await checkReplica(ctx, walship, db, result);
    const limits = workloadLimits(ctx, walship.walBytes + walship.snapshotBytes, result.stored!.bytes, RESTORE_PARALLELISM);
    result.limits = limits;
    result.shipped.ratio = mbps / limits.shipLimitMBps;
    await checkRestore(ctx, walship, db, result, 600_000, limits.restoreLimitMBps);
    checkTarget(ctx, result.name, 'restored database identical to the source', result.restore!.detail, result.restore!.identical, 'content differs');
    return write;
  } finally {
    if (walship.running) await walship.stop();
    await cleanUp(ctx, [db]);
  }
}

/** Runs a writing job on a fresh database with no replicator, for the rate to compare with. */
async function baseline(ctx: BenchContext, label: string, job: (dbPath: string) => WriterJob, timeoutMs: number): Promise<WriteResult> {
  const dbPath = path.join(ctx.workDir, `${label}.db`);
  createDatabase(dbPath);
  try {
    return await runJob<WriteResult>(job(dbPath), timeoutMs);
  } finally {
    removeDatabase(dbPath);
  }
}

/** small-tx: one writer commits 10 rows of 1 KiB per transaction as fast as it can. */
export async function runSmallTx(ctx: BenchContext): Promise<WorkloadResult> {
  const result: WorkloadResult = {
    name: 'small-tx',
    description: 'one writer, WAL mode, synchronous=NORMAL, 10 rows of 1 KiB per transaction, as fast as possible',
    notes: [],
    extra: {},
  };
  let seconds = ctx.options.seconds;
  const share = ctx.disk.share(seconds * SMALL_TX_BYTES_PER_SECOND, 0.25);
  if (share === 0) return { ...result, skipped: `not enough free disk for ${seconds} s of small-tx (about ${formatGiB(seconds * SMALL_TX_BYTES_PER_SECOND)})` };
  if (share < 1) {
    seconds = Math.max(5, Math.floor(seconds * share));
    result.notes.push(`shortened to ${seconds} s to fit the free disk`);
  }

  const job = (db: string): WriterJob => ({ kind: 'flat', db, seconds, sampleMs: 50, ...SMALL_TX });
  ctx.progress(`small-tx: ${seconds} s without a replicator`);
  const alone = await baseline(ctx, 'small-tx-alone', job, (seconds + 120) * 1000);
  result.without = appRate(alone);
  result.extra.commitMsWithout = alone.commitMs;

  ctx.progress(`small-tx: ${seconds} s with walship (sync-interval 1s)`);
  const catchUpLimit = Math.max(30, 3 * seconds);
  await replicatedWrite(ctx, result, { label: 'small-tx', syncInterval: '1s', job, jobTimeoutMs: (seconds + 120) * 1000, catchUpTimeoutMs: catchUpLimit * 1000 });
  result.extra.seconds = seconds;

  const txRatio = result.with!.txPerSec / result.without.txPerSec;
  checkTarget(ctx, 'small-tx', 'app keeps >= 95% of its tx/s', `${(txRatio * 100).toFixed(1)}%`, txRatio >= 0.95, `${((0.95 - txRatio) * 100).toFixed(1)} points`);
  const catchUp = result.catchUpSeconds;
  checkTarget(
    ctx,
    'small-tx',
    `last commit stored <= 10 s after a ${seconds} s run (target stated for 20 s)`,
    catchUp === null || catchUp === undefined ? `not within ${catchUpLimit} s` : `${catchUp.toFixed(2)} s`,
    catchUp !== null && catchUp !== undefined && catchUp <= 10,
    catchUp === null || catchUp === undefined ? `more than ${catchUpLimit - 10} s` : `${(catchUp - 10).toFixed(2)} s`,
  );
  return result;
}

/** bulk: 256 MiB (times BENCH_SCALE) written in 4 MiB transactions. */
export async function runBulk(ctx: BenchContext): Promise<WorkloadResult> {
  const totalBytes = Math.max(BULK_TX_BYTES, Math.round((BULK_BYTES * ctx.options.scale) / BULK_TX_BYTES) * BULK_TX_BYTES);
  const result: WorkloadResult = {
    name: 'bulk',
    description: `${formatGiB(totalBytes)} written in 4 MiB transactions (4096 rows of 1 KiB each)`,
    notes: [],
    extra: { totalBytes },
  };
  // The database, its WAL, the shadow WAL, the replica and the restored copy.
  if (ctx.disk.share(5 * totalBytes, 1) === 0) return { ...result, skipped: `not enough free disk for ${formatGiB(5 * totalBytes)}` };

  const job = (db: string): WriterJob => ({ kind: 'bulk', db, totalBytes, rowsPerTx: BULK_TX_BYTES / 1024, rowBytes: 1024 });
  ctx.progress(`bulk: ${formatGiB(totalBytes)} without a replicator`);
  const alone = await baseline(ctx, 'bulk-alone', job, 600_000);
  result.without = appRate(alone);
  result.extra.commitMsWithout = alone.commitMs;
  ctx.progress(`bulk: ${formatGiB(totalBytes)} with walship (sync-interval 1s)`);
  await replicatedWrite(ctx, result, { label: 'bulk', syncInterval: '1s', job, jobTimeoutMs: 600_000, catchUpTimeoutMs: 300_000 });

  const txRatio = result.with!.txPerSec / result.without.txPerSec;
  checkTarget(ctx, 'bulk', 'app keeps >= 95% of its tx/s', `${(txRatio * 100).toFixed(1)}%`, txRatio >= 0.95, `${((0.95 - txRatio) * 100).toFixed(1)} points`);
  const shipRatio = result.shipped!.ratio;
  checkTarget(
    ctx,
    'bulk',
    'shipping >= 80% of the calibrated limit',
    `${result.shipped!.mbps.toFixed(0)} of ${result.limits!.shipLimitMBps.toFixed(0)} MB/s = ${(shipRatio * 100).toFixed(0)}%`,
    shipRatio >= 0.8,
    `${((0.8 - shipRatio) * 100).toFixed(0)} points`,
  );
  const rss = result.walship!.peakRssMiB;
  checkTarget(ctx, 'bulk', 'walship peak RSS < 300 MiB', `${rss.toFixed(0)} MiB`, rss < 300, `${(rss - 300).toFixed(0)} MiB`);
  return result;
}

/** paced: 200 transactions a second, every commit's lag recorded, at sync-interval `syncInterval`. */
export async function runPaced(ctx: BenchContext, syncInterval: '1s' | '0s'): Promise<WorkloadResult> {
  const seconds = Math.max(5, Math.round(ctx.options.seconds * 0.4));
  const syncMs = syncInterval === '1s' ? 1000 : 0;
  const result: WorkloadResult = {
    name: `paced ${syncInterval}`,
    description: `${PACED_RATE} transactions/s of 10 rows of 1 KiB for ${seconds} s, sync-interval ${syncInterval}`,
    notes: [],
    nominalTxPerSec: PACED_RATE,
    extra: { seconds },
  };

  ctx.progress(`paced: ${seconds} s at ${PACED_RATE} tx/s with walship (sync-interval ${syncInterval})`);
  const label = `paced-${syncMs}ms`;
  const job = (db: string): WriterJob => ({ kind: 'paced', dbs: [db], ratePerDb: PACED_RATE, seconds, ...SMALL_TX });
  await replicatedWrite(ctx, result, { label, syncInterval, job, jobTimeoutMs: (seconds + 120) * 1000, catchUpTimeoutMs: 60_000 });

  const lag = result.lag!;
  const limit = syncMs + 100;
  const targetText = syncMs === 0 ? 'lag p99 <= 100 ms' : `lag p99 <= sync-interval + 100 ms = ${limit} ms`;
  const unstored = lag.unstored > 0 ? ` (${lag.unstored} commits never stored)` : '';
  checkTarget(ctx, result.name, targetText, `${lag.p99.toFixed(0)} ms${unstored}`, lag.p99 <= limit && lag.unstored === 0, `${(lag.p99 - limit).toFixed(0)} ms`);
  return result;
}

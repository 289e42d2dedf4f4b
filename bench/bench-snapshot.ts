import path from 'node:path';

import { MB } from './bench-calibrate.js';
import type { WriteResult } from './bench-jobs.js';
import { formatGiB, GIB } from './bench-options.js';
import { runJob } from './bench-process.js';
import { firstSnapshotKey } from './bench-replica.js';
import type { WorkloadResult } from './bench-report.js';
import { checkReplica, checkRestore, checkTarget, cleanUp, createDatabase, usageBetween, workloadLimits } from './bench-scenario.js';
import type { BenchContext } from './bench-scenario.js';
import { getAndDecode } from './bench-verify.js';
import { WalshipProcess } from './bench-walship.js';
import type { ReplicatedDb } from './bench-walship.js';

/**
 * snapshot: walship's first snapshot of a 1 GiB database (times BENCH_SCALE,
 * less when the disk is short), then a restore of it compared with the source.
 * The restore is compared with the higher of two GET+decompress limits: the
 * calibration's, from 8 MiB objects, and a GET of the snapshot object itself
 * decoded to nowhere.
 */

// Disk use as multiples of the database: the database, its snapshot object
// (about half after LZ4) and the restored copy, with room to spare.
const DISK_FACTOR = 3;
// The smallest share of the planned size the workload runs with.
const MIN_SHARE = 0.05;
// Slowest snapshot and restore speed the waits allow for.
const SLOWEST_BYTES_PER_SECOND = 5 * MB;

/** Fills a database to the target size, lets walship snapshot it, and restores it. */
export async function runSnapshot(ctx: BenchContext): Promise<WorkloadResult> {
  const planned = Math.round(GIB * ctx.options.scale);
  const result: WorkloadResult = { name: 'snapshot', description: '', notes: [], extra: {} };
  const share = ctx.disk.share(DISK_FACTOR * planned, MIN_SHARE);
  if (share === 0) {
    return { ...result, description: `snapshot and restore of a ${formatGiB(planned)} database`, skipped: `not enough free disk for ${formatGiB(DISK_FACTOR * planned)}` };
  }
  const target = Math.floor(planned * share);
  if (share < 1) result.notes.push(`database scaled down from ${formatGiB(planned)} to ${formatGiB(target)} to fit the free disk`);
  if (ctx.options.scale !== 1) result.notes.push(`BENCH_SCALE=${ctx.options.scale}: a ${formatGiB(planned)} database`);

  const db: ReplicatedDb = { path: path.join(ctx.workDir, 'snapshot.db'), name: 'snapshot', prefix: `${ctx.store.runPrefix}/snapshot` };
  const waitMs = Math.max(120_000, (target / SLOWEST_BYTES_PER_SECOND) * 1000);
  let restoreLimit = ctx.calibration.restoreLimitMBps;
  try {
    ctx.progress(`snapshot: filling a ${formatGiB(target)} database`);
    createDatabase(db.path);
    const fill = await runJob<WriteResult>({ kind: 'fill', db: db.path, bytes: target, rowsPerTx: 4096, rowBytes: 1024 }, waitMs);
    const dbBytes = fill.dbBytes ?? target;
    result.description = `first snapshot and restore of a ${formatGiB(dbBytes)} database (1 KiB rows)`;
    result.extra.dbBytes = dbBytes;
    result.extra.fillMBps = dbBytes / MB / ((fill.endedAt - fill.startedAt) / 1000);

    ctx.progress(`snapshot: walship's first snapshot of ${formatGiB(dbBytes)}`);
    const walship = await WalshipProcess.start({ workDir: ctx.workDir, label: 'snapshot', store: ctx.store, dbs: [db], syncInterval: '1s' }, waitMs);
    try {
      const before = { cpuSeconds: 0, peakRssBytes: 0, rssBytes: 0 };
      const written = await walship.waitFor(() => walship.snapshotsOf(db.name).length > 0, waitMs);
      const after = walship.usage();
      if (!written) throw new Error(`walship wrote no snapshot of ${formatGiB(dbBytes)} within ${Math.round(waitMs / 1000)} s`);

      const snapshot = walship.snapshotsOf(db.name)[0]!;
      const seconds = snapshot.elapsedMs / 1000;
      // A snapshot is one stream: one GET restores it.
      const limits = workloadLimits(ctx, snapshot.bytes, snapshot.stored, 1);
      result.limits = limits;
      const mbps = snapshot.bytes / MB / seconds;
      result.shipped = { bytes: snapshot.bytes, seconds, mbps, ratio: mbps / limits.shipLimitMBps };
      // CPU counts from the process start: Node.js start-up and module loading are included.
      result.walship = usageBetween(walship, before, after, snapshot.bytes);
      result.extra.snapshotStoredBytes = snapshot.stored;
      await walship.stop();
      result.walship.peakRssMiB = Math.max(result.walship.peakRssMiB, walship.usage().peakRssBytes / 1024 / 1024);
      result.walship.warnings = walship.warnings;
      result.walship.errors = walship.errors;

      const state = await checkReplica(ctx, walship, db, result);
      const object = await firstSnapshotKey(ctx.store, db.prefix, state.generation);
      if (object !== undefined) {
        const reference = await getAndDecode(ctx.store, object.key);
        result.extra.getAndDecodeMBps = reference.rawBytes / MB / reference.seconds;
      }
      // The calibration's 8 MiB objects may understate what one long GET
      // reaches, so the limit is the higher of the two measurements.
      const reference = result.extra.getAndDecodeMBps as number | undefined;
      restoreLimit = Math.max(limits.restoreLimitMBps, reference ?? 0);
      limits.restoreLimitMBps = restoreLimit;
      await checkRestore(ctx, walship, db, result, waitMs * 2, restoreLimit);
    } finally {
      if (walship.running) await walship.stop();
    }
  } finally {
    await cleanUp(ctx, [db]);
  }

  const restore = result.restore!;
  checkTarget(
    ctx,
    'snapshot',
    'restore >= 80% of the calibrated GET+decompress limit',
    `${restore.mbps.toFixed(0)} of ${restoreLimit.toFixed(0)} MB/s = ${(restore.ratio * 100).toFixed(0)}%`,
    restore.ratio >= 0.8,
    `${((0.8 - restore.ratio) * 100).toFixed(0)} points`,
  );
  const rss = result.walship!.peakRssMiB;
  checkTarget(ctx, 'snapshot', 'walship peak RSS < 300 MiB during the snapshot', `${rss.toFixed(0)} MiB`, rss < 300, `${(rss - 300).toFixed(0)} MiB`);
  checkTarget(ctx, 'snapshot', 'restored database identical to the source', restore.detail, restore.identical, 'content differs');
  return result;
}

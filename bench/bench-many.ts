import path from 'node:path';

import { MB, RESTORE_PARALLELISM } from './bench-calibrate.js';
import type { VerifyResult, WriteResult } from './bench-jobs.js';
import { runJob } from './bench-process.js';
import { inspectReplica } from './bench-replica.js';
import { lagStats } from './bench-report.js';
import type { WorkloadResult } from './bench-report.js';
import {
  appRate,
  checkTarget,
  cleanUp,
  createDatabase,
  recordStoreCpu,
  SMALL_TX,
  startWalship,
  storeCpuSeconds,
  usageBetween,
  workloadLimits,
} from './bench-scenario.js';
import type { BenchContext } from './bench-scenario.js';
import { prefixUsage, replicaClientConfig } from './bench-store.js';
import { lagOf } from './bench-wal-position.js';
import type { IndexAnchor } from './bench-wal-position.js';
import type { ReplicatedDb } from './bench-walship.js';

/**
 * many: 200 databases in one walship process, each with its own writer
 * connection that commits 5 transactions a second. Then the same databases
 * stay idle, which shows what walship costs when nothing changes.
 */

const RATE_PER_DB = 5;
// Writer processes. Each one opens one connection to each of its databases.
const WRITER_PROCESSES = 4;
// Processes that restore and compare the databases at the end, and the time they get.
const VERIFY_PROCESSES = 2;
const VERIFY_SECONDS = 120;
// Concurrent replica reads while the anchors are fetched.
const INSPECT_CONCURRENCY = 8;
// Time for the last commits to be stored after the writers stop.
const CATCH_UP_MS = 60_000;
// Rounds of replica reads for databases whose first WAL index is not stored yet.
const ANCHOR_ATTEMPTS = 20;
// Pause between the end of the writes and the idle measurement, so that the last ships are over.
const SETTLE_MS = 2000;

/** Runs the many workload. */
export async function runMany(ctx: BenchContext): Promise<WorkloadResult> {
  const count = ctx.options.manyDatabases;
  const seconds = Math.max(5, Math.round(ctx.options.seconds * 0.4));
  const idleSeconds = Math.max(5, Math.round(ctx.options.seconds * 0.4));
  const result: WorkloadResult = {
    name: 'many',
    description: `${count} databases, one writer connection each at ${RATE_PER_DB} transactions/s of 10 rows of 1 KiB for ${seconds} s, then ${idleSeconds} s idle`,
    notes: [],
    nominalTxPerSec: count * RATE_PER_DB,
    extra: { databases: count, seconds, idleSeconds },
  };

  const dbs: ReplicatedDb[] = Array.from({ length: count }, (_, i) => {
    const name = `many-${String(i).padStart(3, '0')}`;
    return { path: path.join(ctx.workDir, `${name}.db`), name, prefix: `${ctx.store.runPrefix}/many/${name}` };
  });
  for (const db of dbs) createDatabase(db.path);
  let shippedTotal = 0;

  try {
    ctx.progress(`many: starting walship on ${count} databases`);
    const startedAt = Date.now();
    const walship = await startWalship(ctx, 'many', dbs, '1s');
    result.extra.startSeconds = (Date.now() - startedAt) / 1000;

    try {
      ctx.progress(`many: ${count} writers at ${RATE_PER_DB} tx/s for ${seconds} s`);
      const before = walship.usage();
      const shippedBefore = walship.walBytes;
      const segmentsBefore = walship.segments;
      const storeBefore = storeCpuSeconds(ctx);
      const writes = await Promise.all(
        chunk(dbs, WRITER_PROCESSES).map((group) =>
          runJob<WriteResult>({ kind: 'paced', dbs: group.map((db) => db.path), ratePerDb: RATE_PER_DB, seconds, ...SMALL_TX }, (seconds + 120) * 1000),
        ),
      );
      result.with = combinedRate(writes);
      result.extra.commitMsMax = Math.max(...writes.map((w) => w.commitMs.max));

      const anchors = new Map<string, IndexAnchor>();
      for (let attempt = 0; attempt < ANCHOR_ATTEMPTS && anchors.size < dbs.length; attempt++) {
        if (attempt > 0) await new Promise((resolve) => setTimeout(resolve, 500));
        await readAnchors(ctx, dbs, anchors);
      }
      if (anchors.size < dbs.length) result.notes.push(`${dbs.length - anchors.size} databases had no stored WAL segment, so their commits count as never stored`);
      const lastMarks = dbs.map((db) => writes.map((w) => w.marks[db.path]).find((m) => m !== undefined)?.at(-1));
      const allStored = (): boolean =>
        dbs.every((db, i) => {
          const mark = lastMarks[i];
          const anchor = anchors.get(db.name);
          return mark === undefined || (anchor !== undefined && lagOf(mark, anchor, walship.timelines.get(db.name)!) !== undefined);
        });
      const stored = await walship.waitFor(allStored, CATCH_UP_MS);
      if (!stored) result.notes.push(`some databases' last commits were not stored within ${CATCH_UP_MS / 1000} s of the end`);
      const active = walship.usage();
      const shipped = walship.walBytes - shippedBefore;
      const activeSeconds = (Date.now() - Math.min(...writes.map((w) => w.startedAt))) / 1000;
      const mbps = shipped / MB / activeSeconds;
      // The ratio to the limit is set once the replicas' size gives the compression ratio.
      result.shipped = { bytes: shipped, seconds: activeSeconds, mbps, ratio: 0, segments: walship.segments - segmentsBefore };
      result.walship = usageBetween(walship, before, active, shipped);
      recordStoreCpu(ctx, result.extra, storeBefore, activeSeconds);
      result.extra.activeCorePercent = ((active.cpuSeconds - before.cpuSeconds) / activeSeconds) * 100;

      const lags: (number | undefined)[] = [];
      for (const db of dbs) {
        const anchor = anchors.get(db.name);
        const marks = writes.map((w) => w.marks[db.path]).find((m) => m !== undefined) ?? [];
        for (const mark of marks) lags.push(anchor === undefined ? undefined : lagOf(mark, anchor, walship.timelines.get(db.name)!));
      }
      result.lag = lagStats(lags);

      ctx.progress(`many: ${idleSeconds} s with every database idle`);
      await new Promise((resolve) => setTimeout(resolve, SETTLE_MS));
      const idleStart = walship.usage();
      const idleStarted = performance.now();
      await new Promise((resolve) => setTimeout(resolve, idleSeconds * 1000));
      const idleEnd = walship.usage();
      result.idleCorePercent = ((idleEnd.cpuSeconds - idleStart.cpuSeconds) / ((performance.now() - idleStarted) / 1000)) * 100;
      result.extra.idleRssMiB = idleEnd.rssBytes / 1024 / 1024;

      result.extra.checkpoints = walship.checkpointSummary();
      await walship.stop();
      result.walship.peakRssMiB = Math.max(result.walship.peakRssMiB, walship.usage().peakRssBytes / 1024 / 1024);
      result.walship.warnings = walship.warnings;
      result.walship.errors = walship.errors;
      result.walship.problems = walship.problems;
      shippedTotal = walship.walBytes + walship.snapshotBytes;
    } finally {
      if (walship.running) await walship.stop();
    }

    result.stored = await prefixUsage(ctx.store, `${ctx.store.runPrefix}/many`);
    result.limits = workloadLimits(ctx, shippedTotal, result.stored.bytes, RESTORE_PARALLELISM);
    result.shipped!.ratio = result.shipped!.mbps / result.limits.shipLimitMBps;
    await verifyAll(ctx, dbs, result);
  } finally {
    await cleanUp(ctx, dbs);
  }

  const idle = result.idleCorePercent!;
  checkTarget(ctx, 'many', `${count} idle databases cost < 2% of one core`, `${idle.toFixed(2)}%`, idle < 2, `${(idle - 2).toFixed(2)} points`);
  return result;
}

/**
 * Restores every database with walship's library restore and compares it
 * with its source, in one writer process per core.
 */
async function verifyAll(ctx: BenchContext, dbs: ReplicatedDb[], result: WorkloadResult): Promise<void> {
  ctx.progress(`many: restoring and comparing ${dbs.length} databases`);
  const items = dbs.map((db) => ({ source: db.path, output: `${db.path}.restored`, client: replicaClientConfig(ctx.store, db.prefix) }));
  const started = performance.now();
  const parts = await Promise.all(
    chunk(items, VERIFY_PROCESSES).map((group) => runJob<VerifyResult>({ kind: 'verify', items: group, seconds: VERIFY_SECONDS }, (VERIFY_SECONDS + 180) * 1000)),
  );
  const seconds = (performance.now() - started) / 1000;

  const checked = parts.reduce((sum, part) => sum + part.checked, 0);
  const identical = parts.reduce((sum, part) => sum + part.identical, 0);
  const bytes = parts.reduce((sum, part) => sum + part.restoredBytes, 0);
  const failures = parts.flatMap((part) => part.failures).slice(0, 10);
  // Restore time summed over the processes, so the rate is that of one restore at a time.
  const restoreSeconds = parts.reduce((sum, part) => sum + part.restoreSeconds, 0);
  const mbps = bytes / MB / restoreSeconds;
  result.restore = {
    seconds: restoreSeconds,
    bytes,
    mbps,
    ratio: mbps / result.limits!.restoreLimitMBps,
    identical: identical === dbs.length,
    detail: `${identical} of ${dbs.length} identical${checked < dbs.length ? ` (${checked} checked in the time allowed)` : ''}${failures.length > 0 ? `: ${failures.join('; ')}` : ''}`,
  };
  result.extra.verifySeconds = seconds;
  checkTarget(ctx, 'many', 'restored databases identical to their sources', result.restore.detail, result.restore.identical, 'content differs');
}

/** Reads the index anchor of every replica that has none in `anchors` yet, a few at a time. */
async function readAnchors(ctx: BenchContext, dbs: ReplicatedDb[], anchors: Map<string, IndexAnchor>): Promise<void> {
  const missing = dbs.filter((db) => !anchors.has(db.name));
  let next = 0;
  await Promise.all(
    Array.from({ length: INSPECT_CONCURRENCY }, async () => {
      while (next < missing.length) {
        const db = missing[next++]!;
        const state = await inspectReplica(ctx.store, db.prefix, false);
        if (state.anchor !== undefined) anchors.set(db.name, state.anchor);
      }
    }),
  );
}

/** Adds up the writers' transactions over the span from the first start to the last end. */
function combinedRate(writes: WriteResult[]): ReturnType<typeof appRate> {
  const merged: WriteResult = {
    transactions: writes.reduce((sum, w) => sum + w.transactions, 0),
    rows: writes.reduce((sum, w) => sum + w.rows, 0),
    walBytes: writes.reduce((sum, w) => sum + w.walBytes, 0),
    startedAt: Math.min(...writes.map((w) => w.startedAt)),
    endedAt: Math.max(...writes.map((w) => w.endedAt)),
    pageSize: writes[0]?.pageSize ?? 0,
    marks: {},
    commitMs: { p50: 0, p99: 0, max: Math.max(...writes.map((w) => w.commitMs.max)) },
  };
  return appRate(merged);
}

/** Splits items into `parts` groups of nearly equal size. */
function chunk<T>(items: T[], parts: number): T[][] {
  const groups: T[][] = Array.from({ length: parts }, () => []);
  items.forEach((item, i) => groups[i % parts]!.push(item));
  return groups.filter((group) => group.length > 0);
}

import fs from 'node:fs';
import path from 'node:path';

import type { VerifyResult, WriteResult } from './bench-jobs.js';
import { MB } from './bench-calibrate.js';
import { metricDelta, FleetDaemon, sumByLabel } from './bench-fleet-daemon.js';
import type { MetricsPage } from './bench-fleet-daemon.js';
import { formatGiB } from './bench-options.js';
import { runJob } from './bench-process.js';
import { inspectReplica } from './bench-replica.js';
import { lagStats } from './bench-report.js';
import type { WorkloadResult } from './bench-report.js';
import { appRate, checkTarget, createDatabase, recordStoreCpu, storeCpuSeconds } from './bench-scenario.js';
import type { BenchContext } from './bench-scenario.js';
import { deletePrefix, replicaClientConfig, replicaYaml } from './bench-store.js';
import { lagOf } from './bench-wal-position.js';
import type { IndexAnchor } from './bench-wal-position.js';

/**
 * fleet: many databases (BENCH_FLEET_DBS, default 1,000) in one walship
 * process, configured as a fleet operator would: one `dbs:` entry with
 * `dir:` and `pattern:`, so that each database goes to `databases/<name>/`
 * under one prefix. Each database gets one small transaction every 7.5 s,
 * spread evenly over the period, from a few writer processes that each hold
 * a connection to many databases. Then every database stays idle.
 *
 * It reports walship's CPU per database, its peak RSS and open descriptors,
 * the commit-to-stored lag of every commit, the requests walship sent to the
 * store per second (from its /metrics), and its CPU with every database
 * idle. Run it with `BENCH_ONLY=fleet npm run bench`; it is not part of the
 * default run.
 */

// One transaction per database every PERIOD_SECONDS, of one 1 KiB row.
const PERIOD_SECONDS = 7.5;
const ROW = { rowsPerTx: 1, rowBytes: 1024 };
// Writer processes. Each opens one connection to each database of its share.
const WRITER_PROCESSES = 4;
// Estimated disk use per database at its peak: the database, its WAL, walship's
// shadow WAL and s3rver's object files (three small files per object). The
// run measures the real use and reports it.
const BYTES_PER_DB = 1024 * 1024;
// The smallest share of the databases that is worth running when the disk is short.
const MIN_DISK_SHARE = 0.05;
// Estimated descriptors walship keeps open per database: the database file,
// -wal and -shm of its SQLite connections, its own read descriptor and the
// shadow WAL. A run with 1,000 databases peaked at about 9 per database.
const FDS_PER_DB = 10;
// Descriptors of the process itself: Node.js, the worker threads, sockets to the store.
const FDS_BASE = 512;
// How long walship may take to start, and to write the first snapshot of every database.
const START_TIMEOUT_MS = 180_000;
// Time for the last commits to be stored after the writers stop.
const CATCH_UP_MS = 60_000;
// Concurrent replica reads while the anchors are fetched, and rounds of them.
const INSPECT_CONCURRENCY = 16;
const ANCHOR_ATTEMPTS = 10;
// Pause between the end of the writes and the idle measurement, so that the last ships are over.
const SETTLE_MS = 3000;
// Databases restored and compared at the end, spread over the fleet, and the time they get.
const VERIFY_SAMPLE = 20;
const VERIFY_SECONDS = 90;
// Length of the windows in which the idle CPU is also reported, to show bursts such as lease renewals.
const IDLE_WINDOW_MS = 10_000;

const REQUESTS = 'walship_replica_requests_total';
const LATENCY_BUCKETS = 'walship_replication_latency_seconds_bucket';
// prom-client's event-loop delay gauges, reset at every scrape, so each covers the time since the previous one.
const LOOP_DELAY_MAX = 'nodejs_eventloop_lag_max_seconds';
const LOOP_DELAY_P99 = 'nodejs_eventloop_lag_p99_seconds';

/** One database of the fleet. */
interface FleetDb {
  path: string;
  /** The name walship derives from the file name: the `db=` field of its log lines. */
  name: string;
  /** Key prefix of its replica: `<fleet prefix>/databases/<name>`. */
  prefix: string;
}

/** Runs the fleet workload. */
export async function runFleet(ctx: BenchContext): Promise<WorkloadResult> {
  const activeSeconds = Math.max(30, Math.round(ctx.options.seconds * 3));
  const idleSeconds = Math.max(30, Math.round(ctx.options.seconds * 2));
  const count = fleetSize(ctx);
  const result: WorkloadResult = {
    name: 'fleet',
    description:
      `${count} databases in one walship process (one dir: entry), one transaction of ${ROW.rowsPerTx} row of ${ROW.rowBytes} B ` +
      `per database every ${PERIOD_SECONDS} s for ${activeSeconds} s, then ${idleSeconds} s idle`,
    notes: [],
    nominalTxPerSec: count / PERIOD_SECONDS,
    extra: { databases: count, requestedDatabases: ctx.options.fleetDatabases, periodSeconds: PERIOD_SECONDS, activeSeconds, idleSeconds },
  };
  if (count < ctx.options.fleetDatabases) {
    result.notes.push(`ran ${count} of ${ctx.options.fleetDatabases} databases: the disk has room for an estimated ${count} at ${BYTES_PER_DB / 1024} KiB each`);
  }
  if (count === 0) {
    result.skipped = `not enough free disk for ${Math.ceil(MIN_DISK_SHARE * ctx.options.fleetDatabases)} databases; free some space or set BENCH_DIR to a larger disk`;
    return result;
  }

  const dir = path.join(ctx.workDir, 'fleet');
  const fleetPrefix = `${ctx.store.runPrefix}/fleet`;
  fs.mkdirSync(dir, { recursive: true });
  const dbs: FleetDb[] = Array.from({ length: count }, (_, i) => {
    const name = `fleet-${String(i).padStart(4, '0')}`;
    return { path: path.join(dir, `${name}.db`), name, prefix: `${fleetPrefix}/databases/${name}` };
  });

  try {
    ctx.progress(`fleet: creating ${count} databases in ${dir}`);
    for (const db of dbs) createDatabase(db.path);

    const daemon = await startFleet(ctx, dir, fleetPrefix, dbs, result);
    const phaseStarts: Record<string, number> = {};
    const mark = (phase: string): void => {
      phaseStarts[phase] = Number(((Date.now() - daemon.spawnedAt) / 1000).toFixed(1));
    };
    try {
      mark('writes');
      await activePhase(ctx, daemon, dbs, activeSeconds, result);
      mark('idle');
      await idlePhase(ctx, daemon, idleSeconds, result);
      result.extra.diskBytes = directoryBytes(dir) + (ctx.store.directory === undefined ? 0 : directoryBytes(ctx.store.directory));
    } finally {
      ctx.progress('fleet: stopping walship (it ships what it captured, then releases the leases)');
      mark('stop');
      const stopped = await daemon.stop();
      result.extra.stop = stopped;
      if (stopped.exitCode !== 0) result.notes.push(`walship exited with status ${stopped.exitCode} after SIGTERM, ${stopped.stopSeconds.toFixed(1)} s after the signal`);
      recordDaemon(daemon, result, phaseStarts);
    }

    await verifySample(ctx, dbs, result);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
    if (ctx.store.kind === 's3') await deletePrefix(ctx.store, fleetPrefix).catch((err: unknown) => ctx.progress(`cannot delete ${fleetPrefix}: ${(err as Error).message}`));
  }

  const idle = result.idleCorePercent;
  if (idle !== undefined) checkTarget(ctx, 'fleet', `${count} idle databases cost < 2% of one core`, `${idle.toFixed(2)}%`, idle < 2, `${(idle - 2).toFixed(2)} points`);
  return result;
}

/** Returns how many databases fit on the disk: BENCH_FLEET_DBS, or fewer with a message, or 0. */
function fleetSize(ctx: BenchContext): number {
  const requested = ctx.options.fleetDatabases;
  const share = ctx.disk.share(requested * BYTES_PER_DB, MIN_DISK_SHARE);
  const count = Math.floor(requested * share);
  if (count < requested) {
    ctx.progress(
      `fleet: only ${formatGiB(ctx.disk.available())} free beyond the reserve, ${formatGiB(requested * BYTES_PER_DB)} needed (estimate) for ` +
        `${requested} databases: ${count === 0 ? 'skipping the workload' : `running ${count}`}`,
    );
  }
  return count;
}

/**
 * Writes the config, starts walship with its status server on a free port
 * of 127.0.0.1, and waits until every database has its first snapshot.
 * Records the start-up time, CPU and requests.
 */
async function startFleet(ctx: BenchContext, dir: string, fleetPrefix: string, dbs: FleetDb[], result: WorkloadResult): Promise<FleetDaemon> {
  const configPath = path.join(ctx.workDir, 'fleet.yml');
  const config = [
    'logging:',
    '  level: info',
    '  type: json',
    'dbs:',
    `  - dir: ${JSON.stringify(dir)}`,
    '    pattern: "fleet-*.db"',
    '    replicas:',
    replicaYaml(ctx.store, fleetPrefix, '1s', '      '),
  ];
  // BENCH_FLEET_LEASE_TTL sets the replicas' lease-ttl, to measure fewer renewals.
  const leaseTtl = process.env.BENCH_FLEET_LEASE_TTL?.trim();
  if (leaseTtl) config.push(`        lease-ttl: ${leaseTtl}`);
  fs.writeFileSync(configPath, `${config.join('\n')}\n`);

  const openFilesLimit = checkOpenFiles(dbs.length, result);
  ctx.progress(`fleet: starting walship on ${dbs.length} databases (dir: entry, metrics on 127.0.0.1)`);
  const started = performance.now();
  const flags = ['-control-socket', 'off', '-addr', '127.0.0.1:0'];
  const daemon = await FleetDaemon.start(
    {
      configPath,
      flags,
      ...(openFilesLimit !== undefined ? { openFilesLimit } : {}),
      ...(ctx.options.fleetLogPath !== undefined ? { logPath: ctx.options.fleetLogPath } : {}),
    },
    START_TIMEOUT_MS,
  );
  result.extra.replicationStartedSeconds = (performance.now() - started) / 1000;

  const ready = await daemon.waitFor(() => daemon.snapshotted.size >= dbs.length, START_TIMEOUT_MS);
  result.extra.allSnapshotsSeconds = (performance.now() - started) / 1000;
  const startUsage = daemon.sample();
  result.extra.startCpuSeconds = startUsage.cpuSeconds;
  if (!ready) {
    const missing = dbs.filter((db) => !daemon.snapshotted.has(db.name)).slice(0, 5);
    await daemon.stop();
    throw new Error(
      `walship wrote the first snapshot of ${daemon.snapshotted.size} of ${dbs.length} databases within ${START_TIMEOUT_MS / 1000} s ` +
        `(missing e.g. ${missing.map((db) => db.name).join(', ')}): ${daemon.problems.slice(0, 3).join(' | ') || 'no warning logged'}`,
    );
  }

  const scrape = await daemon.scrape();
  // Requests sent before the metrics existed (the leases taken while the databases open) are not counted.
  result.extra.startRequests = Object.fromEntries(sumByLabel(scrape.text, REQUESTS, 'operation'));
  result.extra.startLoopDelay = loopDelay(scrape);
  result.extra.metricsPage = { bytes: scrape.bytes, seconds: scrape.seconds };
  ctx.progress(
    `fleet: every database has its first snapshot after ${(result.extra.allSnapshotsSeconds as number).toFixed(1)} s, ` +
      `${startUsage.cpuSeconds.toFixed(1)} CPU s, ${daemon.peakOpenFiles()} open files; /metrics is ${(scrape.bytes / MB).toFixed(1)} MB`,
  );
  return daemon;
}

/**
 * Returns the open-files limit to set for walship, or undefined when the
 * inherited one suffices. Node.js raises its soft limit to the hard limit at
 * start, so only a hard limit below the estimate needs the shell wrapper.
 */
function checkOpenFiles(count: number, result: WorkloadResult): number | undefined {
  const needed = count * FDS_PER_DB + FDS_BASE;
  const limits = /^Max open files\s+(\d+|unlimited)\s+(\d+|unlimited)/m.exec(fs.readFileSync('/proc/self/limits', 'utf8'));
  const hard = limits === null || limits[2] === 'unlimited' ? Infinity : Number(limits[2]);
  const soft = limits === null || limits[1] === 'unlimited' ? Infinity : Number(limits[1]);
  result.extra.openFiles = { estimateNeeded: needed, inheritedSoft: soft, inheritedHard: hard };
  if (hard >= needed) return undefined;
  result.notes.push(`walship ran with ulimit -n ${needed}: the inherited hard limit ${hard} is below the estimate of ${FDS_PER_DB} per database`);
  return needed;
}

/**
 * Writes one transaction per database every PERIOD_SECONDS for `seconds`,
 * waits for the replica to store the last commit of every database, and
 * records CPU, memory, requests and the lag of every commit.
 */
async function activePhase(ctx: BenchContext, daemon: FleetDaemon, dbs: FleetDb[], seconds: number, result: WorkloadResult): Promise<void> {
  ctx.progress(`fleet: ${WRITER_PROCESSES} writer processes, one transaction per database every ${PERIOD_SECONDS} s, for ${seconds} s`);
  const pageBefore = await daemon.scrape();
  const before = daemon.sample();
  const segmentsBefore = daemon.segments;
  const shippedBefore = daemon.walBytes;
  const storeBefore = storeCpuSeconds(ctx);

  const writes = await Promise.all(
    chunk(dbs, WRITER_PROCESSES).map((group) =>
      runJob<WriteResult>({ kind: 'paced', dbs: group.map((db) => db.path), ratePerDb: 1 / PERIOD_SECONDS, seconds, ...ROW }, (seconds + 180) * 1000),
    ),
  );
  const after = daemon.sample();
  const writesEnded = Date.now();
  result.extra.writesEndedAfterSpawnSeconds = (writesEnded - daemon.spawnedAt) / 1000;
  const shipped = daemon.walBytes - shippedBefore;
  const segments = daemon.segments - segmentsBefore;
  const writeSeconds = (Math.max(...writes.map((w) => w.endedAt)) - Math.min(...writes.map((w) => w.startedAt))) / 1000;
  const pageAfter = await daemon.scrape();

  // CPU and requests over the writes alone: the steady state of a fleet with a trickle of writes.
  const cpuSeconds = after.cpuSeconds - before.cpuSeconds;
  const wallSeconds = (after.time - before.time) / 1000;
  recordStoreCpu(ctx, result.extra, storeBefore, wallSeconds);
  result.with = combinedRate(writes);
  result.extra.commitMs = { max: Math.max(...writes.map((w) => w.commitMs.max)), p99: Math.max(...writes.map((w) => w.commitMs.p99)) };
  result.extra.writerLatenessMs = { max: Math.max(...writes.map((w) => w.lateness?.max ?? 0)) };
  const corePercent = (cpuSeconds / wallSeconds) * 100;
  result.extra.activeCpuSeconds = cpuSeconds;
  result.extra.activeCorePercent = corePercent;
  result.extra.activeCpuMsPerDbPerMinute = ((cpuSeconds * 1000) / dbs.length) * (60 / wallSeconds);
  result.extra.activeCorePercentPer100Dbs = corePercent * (100 / dbs.length);
  result.extra.activeRequestsPerSecond = perSecond(metricDelta(sumByLabel(pageBefore.text, REQUESTS, 'operation'), sumByLabel(pageAfter.text, REQUESTS, 'operation')), wallSeconds);
  result.extra.daemonLatency = histogramSummary(metricDelta(sumByLabel(pageBefore.text, LATENCY_BUCKETS, 'le'), sumByLabel(pageAfter.text, LATENCY_BUCKETS, 'le')));
  result.extra.activeLoopDelay = loopDelay(pageAfter);
  result.extra.activeRssMiB = after.rssBytes / 1024 / 1024;

  // The lag of every commit needs each replica's anchor and its last commit stored.
  const anchors = new Map<string, IndexAnchor>();
  for (let attempt = 0; attempt < ANCHOR_ATTEMPTS && anchors.size < dbs.length; attempt++) {
    if (attempt > 0) await new Promise((resolve) => setTimeout(resolve, 1000));
    await readAnchors(ctx, dbs, anchors);
  }
  if (anchors.size < dbs.length) result.notes.push(`${dbs.length - anchors.size} databases had no stored WAL segment at offset 0, so their commits count as never stored`);
  result.extra.anchorSeconds = (Date.now() - writesEnded) / 1000;

  const marksOf = (db: FleetDb) => writes.map((w) => w.marks[db.path]).find((m) => m !== undefined) ?? [];
  const stored = (db: FleetDb, mark: Parameters<typeof lagOf>[0]): number | undefined => {
    const anchor = anchors.get(db.name);
    const timeline = daemon.timelines.get(db.name);
    return anchor === undefined || timeline === undefined ? undefined : lagOf(mark, anchor, timeline);
  };
  const allStored = (): boolean =>
    dbs.every((db) => {
      const last = marksOf(db).at(-1);
      return last === undefined || stored(db, last) !== undefined;
    });
  if (!(await daemon.waitFor(allStored, CATCH_UP_MS))) result.notes.push(`some databases' last commits were not stored within ${CATCH_UP_MS / 1000} s after the anchors were read`);
  // The last commit of the run: the time from the end of the writes until every database's last commit was stored.
  const lastStoredAt = Math.max(...dbs.map((db) => {
    const last = marksOf(db).at(-1);
    const lag = last === undefined ? 0 : stored(db, last);
    return last === undefined || lag === undefined ? 0 : last.t + lag;
  }));
  result.catchUpSeconds = allStored() ? Math.max(0, (lastStoredAt - Math.max(...writes.map((w) => w.endedAt))) / 1000) : null;

  const lags: (number | undefined)[] = [];
  for (const db of dbs) for (const mark of marksOf(db)) lags.push(stored(db, mark));
  result.lag = lagStats(lags);
  const written = dbs.filter((db) => marksOf(db).length > 0).length;
  result.extra.writeSeconds = writeSeconds;

  result.shipped = { bytes: shipped, seconds: wallSeconds, mbps: shipped / MB / wallSeconds, ratio: 0, segments };
  result.walship = { cpuSeconds, peakRssMiB: after.peakRssBytes / 1024 / 1024, warnings: daemon.warnings, errors: daemon.errors, problems: daemon.problems };
  ctx.progress(
    `fleet: walship used ${corePercent.toFixed(1)}% of a core for ${dbs.length} databases; ` +
      `lag p50 ${result.lag.p50.toFixed(0)} ms, p99 ${result.lag.p99.toFixed(0)} ms over ${lags.length} commits to ${written} databases`,
  );
}

/** Measures walship's CPU and requests with every database idle, over the whole phase and in windows. */
async function idlePhase(ctx: BenchContext, daemon: FleetDaemon, seconds: number, result: WorkloadResult): Promise<void> {
  ctx.progress(`fleet: ${seconds} s with every database idle`);
  await new Promise((resolve) => setTimeout(resolve, SETTLE_MS));
  const pageBefore = await daemon.scrape();
  // The scrape's own CPU must not fall into the window.
  await new Promise((resolve) => setTimeout(resolve, 1000));

  const start = daemon.sample();
  const windows: number[] = [];
  let windowStart = start;
  const end = start.time + seconds * 1000;
  for (let i = 0; i < 10_000 && Date.now() < end; i++) {
    await new Promise((resolve) => setTimeout(resolve, Math.min(IDLE_WINDOW_MS, end - Date.now())));
    const now = daemon.sample();
    if (now.time > windowStart.time) windows.push(((now.cpuSeconds - windowStart.cpuSeconds) / ((now.time - windowStart.time) / 1000)) * 100);
    windowStart = now;
  }
  const finish = daemon.sample();
  const pageAfter = await daemon.scrape();

  const wallSeconds = (finish.time - start.time) / 1000;
  const cpuSeconds = finish.cpuSeconds - start.cpuSeconds;
  result.idleCorePercent = (cpuSeconds / wallSeconds) * 100;
  result.extra.idleCpuSeconds = cpuSeconds;
  result.extra.idleCpuMsPerDbPerMinute = ((cpuSeconds * 1000) / (result.extra.databases as number)) * (60 / wallSeconds);
  result.extra.idleCorePercentWindows = windows.map((value) => Number(value.toFixed(2)));
  result.extra.idleRequestsPerSecond = perSecond(metricDelta(sumByLabel(pageBefore.text, REQUESTS, 'operation'), sumByLabel(pageAfter.text, REQUESTS, 'operation')), wallSeconds);
  result.extra.idleLoopDelay = loopDelay(pageAfter);
  result.extra.idleRssMiB = finish.rssBytes / 1024 / 1024;
  ctx.progress(`fleet: idle walship used ${result.idleCorePercent.toFixed(2)}% of a core (10 s windows: ${windows.map((w) => w.toFixed(1)).join(', ')})`);
}

/** Copies the daemon's totals into the result once it has exited, with the phases' start times after the spawn. */
function recordDaemon(daemon: FleetDaemon, result: WorkloadResult, phaseStarts: Record<string, number>): void {
  result.extra.peakRssMiB = daemon.peakRssBytes() / 1024 / 1024;
  result.extra.peakOpenFiles = daemon.peakOpenFiles();
  // Seconds after the spawn of the first and last line of each message, to place them in the phases.
  const since = (time: number): number => Number(((time - daemon.spawnedAt) / 1000).toFixed(1));
  result.extra.phaseStartSeconds = phaseStarts;
  result.extra.messages = Object.fromEntries([...daemon.messages].map(([key, times]) => [key, { count: times.count, first: since(times.first), last: since(times.last) }]));
  if (result.walship !== undefined) {
    result.walship.peakRssMiB = Math.max(result.walship.peakRssMiB, result.extra.peakRssMiB as number);
    result.walship.warnings = daemon.warnings;
    result.walship.errors = daemon.errors;
    result.walship.problems = daemon.problems;
  }
}

/** Restores a sample of the databases spread over the fleet and compares each with its source. */
async function verifySample(ctx: BenchContext, dbs: FleetDb[], result: WorkloadResult): Promise<void> {
  const step = Math.max(1, Math.floor(dbs.length / VERIFY_SAMPLE));
  const sample = dbs.filter((_, i) => i % step === 0).slice(0, VERIFY_SAMPLE);
  ctx.progress(`fleet: restoring and comparing ${sample.length} of ${dbs.length} databases`);
  const items = sample.map((db) => ({ source: db.path, output: `${db.path}.restored`, client: replicaClientConfig(ctx.store, db.prefix) }));
  const verified = await runJob<VerifyResult>({ kind: 'verify', items, seconds: VERIFY_SECONDS }, (VERIFY_SECONDS + 120) * 1000);

  const mbps = verified.restoredBytes / MB / verified.restoreSeconds;
  const detail =
    `${verified.identical} of ${sample.length} sampled databases identical` +
    `${verified.checked < sample.length ? ` (${verified.checked} checked in the time allowed)` : ''}` +
    `${verified.failures.length > 0 ? `: ${verified.failures.join('; ')}` : ''}`;
  result.restore = { seconds: verified.restoreSeconds, bytes: verified.restoredBytes, mbps, ratio: Number.NaN, identical: verified.identical === sample.length, detail };
  checkTarget(ctx, 'fleet', 'restored sample identical to its sources', detail, result.restore.identical, 'content differs');
}

/** Reads the index anchor of every replica that has none in `anchors` yet, a few at a time. */
async function readAnchors(ctx: BenchContext, dbs: FleetDb[], anchors: Map<string, IndexAnchor>): Promise<void> {
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

/**
 * Summarizes a cumulative histogram given as counts by `le`: the count and
 * the upper bounds of the buckets that hold the median and the 99th
 * percentile. The bounds are the histogram's resolution, not exact values.
 */
function histogramSummary(buckets: Record<string, number>): { count: number; p50UpperBoundSeconds: number; p99UpperBoundSeconds: number } {
  const bounds = Object.entries(buckets)
    .map(([le, count]) => ({ le: le === '+Inf' ? Infinity : Number(le), count }))
    .sort((a, b) => a.le - b.le);
  const total = bounds.at(-1)?.count ?? 0;
  const bound = (p: number): number => bounds.find((b) => b.count >= (p / 100) * total)?.le ?? Number.NaN;
  return { count: total, p50UpperBoundSeconds: bound(50), p99UpperBoundSeconds: bound(99) };
}

/** Returns the maximum and 99th percentile of the event-loop delay in ms since the previous scrape. */
function loopDelay(page: MetricsPage): { maxMs: number; p99Ms: number } {
  const value = (family: string): number => Number(((sumByLabel(page.text, family, 'none').get('') ?? Number.NaN) * 1000).toFixed(1));
  return { maxMs: value(LOOP_DELAY_MAX), p99Ms: value(LOOP_DELAY_P99) };
}

/** Divides each count by `seconds`, rounded to two decimals. */
function perSecond(counts: Record<string, number>, seconds: number): Record<string, number> {
  return Object.fromEntries(Object.entries(counts).map(([key, value]) => [key, Number((value / seconds).toFixed(2))]));
}

/** Returns the bytes of the files under a directory, counted by allocated blocks. */
function directoryBytes(dir: string): number {
  let bytes = 0;
  for (const entry of fs.readdirSync(dir, { recursive: true, withFileTypes: true })) {
    if (!entry.isFile()) continue;
    try {
      bytes += fs.statSync(path.join(entry.parentPath, entry.name)).blocks * 512;
    } catch {
      // Removed since the listing, for example a file walship just replaced.
    }
  }
  return bytes;
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
    commitMs: { p50: 0, p99: 0, max: 0 },
  };
  return appRate(merged);
}

/** Splits items into `parts` groups of nearly equal size. */
function chunk<T>(items: T[], parts: number): T[][] {
  const groups: T[][] = Array.from({ length: parts }, () => []);
  items.forEach((item, i) => groups[i % parts]!.push(item));
  return groups.filter((group) => group.length > 0);
}

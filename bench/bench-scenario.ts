import fs from 'node:fs';
import path from 'node:path';

import Database from 'better-sqlite3';

import type { Calibration } from './bench-calibrate.js';
import { MB } from './bench-calibrate.js';
import type { WalMark, WriteResult } from './bench-jobs.js';
import type { BenchOptions, DiskGuard } from './bench-options.js';
import { GIB } from './bench-options.js';
import { inspectReplica } from './bench-replica.js';
import type { ReplicaState } from './bench-replica.js';
import type { AppRate, TargetResult, WalshipUsage, WorkloadResult } from './bench-report.js';
import { deletePrefix, prefixUsage } from './bench-store.js';
import type { Store } from './bench-store.js';
import { restoreAndCompare } from './bench-verify.js';
import { lagOf } from './bench-wal-position.js';
import type { IndexAnchor } from './bench-wal-position.js';
import { processUsage, WalshipProcess } from './bench-walship.js';
import type { ProcessUsage, ReplicatedDb } from './bench-walship.js';

/**
 * Steps the workloads share: databases, walship runs, the wait for a commit
 * to be stored, and the restore check.
 */

/** Everything a workload needs. */
export interface BenchContext {
  options: BenchOptions;
  store: Store;
  calibration: Calibration;
  /** Temporary directory of the run. */
  workDir: string;
  disk: DiskGuard;
  targets: TargetResult[];
  progress(line: string): void;
}

/** Row shape of every workload but bulk: 10 rows of 1 KiB per transaction. */
export const SMALL_TX = { rowsPerTx: 10, rowBytes: 1024 };

// How long walship may take to start and write its first snapshots.
const START_TIMEOUT_MS = 120_000;
// How long the benchmark looks for the first stored WAL index of a replica.
const ANCHOR_TIMEOUT_MS = 30_000;

/** Creates an empty database with table `t` in WAL mode; any leftover files of the path are removed first. */
export function createDatabase(dbPath: string): void {
  removeDatabase(dbPath);
  const db = new Database(dbPath);
  try {
    db.pragma('journal_mode = wal');
    db.exec('CREATE TABLE t (id INTEGER PRIMARY KEY, at INTEGER NOT NULL, body BLOB NOT NULL)');
  } finally {
    db.close();
  }
}

/** Deletes a database file, its -wal and -shm files and walship's meta directory beside it. */
export function removeDatabase(dbPath: string): void {
  for (const suffix of ['', '-wal', '-shm']) fs.rmSync(`${dbPath}${suffix}`, { force: true });
  fs.rmSync(path.join(path.dirname(dbPath), `.${path.basename(dbPath)}-walship`), { recursive: true, force: true });
}

/** Returns the application's rate of one writing job. */
export function appRate(result: WriteResult): AppRate {
  const seconds = (result.endedAt - result.startedAt) / 1000;
  return { transactions: result.transactions, seconds, txPerSec: result.transactions / seconds, walMBps: result.walBytes / MB / seconds };
}

/** Starts walship on `dbs` and waits until every database has its first snapshot. */
export async function startWalship(ctx: BenchContext, label: string, dbs: ReplicatedDb[], syncInterval: string): Promise<WalshipProcess> {
  const walship = await WalshipProcess.start({ workDir: ctx.workDir, label, store: ctx.store, dbs, syncInterval }, START_TIMEOUT_MS);
  const ready = await walship.waitFor(() => dbs.every((db) => walship.snapshotsOf(db.name).length > 0), START_TIMEOUT_MS);
  if (!ready) {
    const missing = dbs.filter((db) => walship.snapshotsOf(db.name).length === 0).length;
    await walship.stop();
    throw new Error(`walship wrote no snapshot for ${missing} of ${dbs.length} databases within ${START_TIMEOUT_MS / 1000} s: ${walship.problems.slice(0, 3).join(' | ')}`);
  }
  return walship;
}

/**
 * Returns the index anchor of a replica, polling until walship stored a
 * segment at offset 0 of some WAL index, or undefined after the timeout.
 */
export async function waitForAnchor(ctx: BenchContext, prefix: string): Promise<IndexAnchor | undefined> {
  const deadline = Date.now() + ANCHOR_TIMEOUT_MS;
  for (let attempt = 0; attempt < 1000 && Date.now() < deadline; attempt++) {
    const state = await inspectReplica(ctx.store, prefix, false);
    if (state.anchor !== undefined) return state.anchor;
    await new Promise((resolve) => setTimeout(resolve, 250));
  }
  return undefined;
}

/**
 * Waits until the replica stored the commit `mark`, and returns the log time
 * of that, or undefined after `timeoutMs`.
 */
export async function waitStored(walship: WalshipProcess, db: ReplicatedDb, anchor: IndexAnchor, mark: WalMark, timeoutMs: number): Promise<number | undefined> {
  const timeline = walship.timelines.get(db.name)!;
  const stored = (): boolean => lagOf(mark, anchor, timeline) !== undefined;
  await walship.waitFor(stored, timeoutMs);
  const lag = lagOf(mark, anchor, timeline);
  return lag === undefined ? undefined : mark.t + lag;
}

/** Returns the CPU seconds the local s3rver process has used so far, or undefined for a remote store. */
export function storeCpuSeconds(ctx: BenchContext): number | undefined {
  if (ctx.store.pid === undefined) return undefined;
  try {
    return processUsage(ctx.store.pid).cpuSeconds;
  } catch {
    return undefined;
  }
}

/** Records in `extra` the share of one core the local s3rver used since `before` (CPU seconds) over `seconds`. */
export function recordStoreCpu(ctx: BenchContext, extra: Record<string, unknown>, before: number | undefined, seconds: number): void {
  const after = storeCpuSeconds(ctx);
  if (before === undefined || after === undefined) return;
  extra.storeCpuSeconds = after - before;
  extra.storeCorePercent = ((after - before) / seconds) * 100;
}

/** Returns walship's usage between two readings, per GiB of `shippedBytes`. */
export function usageBetween(walship: WalshipProcess, before: ProcessUsage, after: ProcessUsage, shippedBytes: number): WalshipUsage {
  const cpuSeconds = after.cpuSeconds - before.cpuSeconds;
  return {
    cpuSeconds,
    ...(shippedBytes > 0 ? { cpuSecondsPerGiB: cpuSeconds / (shippedBytes / GIB) } : {}),
    peakRssMiB: after.peakRssBytes / 1024 / 1024,
    warnings: walship.warnings,
    errors: walship.errors,
    problems: walship.problems,
  };
}

/**
 * Reads the replica after walship stopped: anchor consistency, end of the
 * stored WAL against the last logged position, and the bytes stored. Adds
 * what disagrees to the workload's notes.
 */
export async function checkReplica(ctx: BenchContext, walship: WalshipProcess, db: ReplicatedDb, result: WorkloadResult): Promise<ReplicaState> {
  const state = await inspectReplica(ctx.store, db.prefix, true);
  result.stored = await prefixUsage(ctx.store, db.prefix);
  if (state.generations.length !== 1) result.notes.push(`${db.name}: the replica has ${state.generations.length} generations, expected 1`);
  if (state.anchorProblem !== '') result.notes.push(`${db.name}: ${state.anchorProblem}`);

  const last = walship.timelines.get(db.name)?.last();
  if (state.end !== undefined && last !== undefined && (state.end.index !== last.index || state.end.offset !== last.offset)) {
    result.notes.push(
      `${db.name}: the stored WAL ends at index ${state.end.index} offset ${state.end.offset}, ` +
        `but walship's last log line reported index ${last.index} offset ${last.offset}`,
    );
  }
  return state;
}

/** This machine's limits for one workload's data, at the compression ratio walship reached on it. */
export interface WorkloadLimits {
  /** Raw bytes shipped over bytes stored. */
  compressionRatio: number;
  /** Raw MB/s this machine can compress and PUT at that ratio. */
  shipLimitMBps: number;
  /** Raw MB/s this machine can GET and decompress at that ratio, with walship's restore parallelism. */
  restoreLimitMBps: number;
}

/**
 * Returns the limits for a workload from the calibration, at the compression
 * ratio of its own data. A WAL compresses better than the calibration's row
 * sample because it repeats page headers and rewrites pages. The sample's
 * ratio would understate how many raw bytes a PUT of 1 MB carries.
 */
export function workloadLimits(ctx: BenchContext, rawBytes: number, storedBytes: number, getConcurrency: number): WorkloadLimits {
  const c = ctx.calibration;
  const compressionRatio = storedBytes > 0 && rawBytes > 0 ? rawBytes / storedBytes : c.lz4.ratio;
  const put = c.s3.put[c.poolThreads] ?? 0;
  const get = c.s3.get[getConcurrency] ?? 0;
  return {
    compressionRatio,
    shipLimitMBps: Math.min(c.lz4.compressAllMBps, put * compressionRatio),
    restoreLimitMBps: Math.min(c.lz4.decompressOneMBps, get * compressionRatio),
  };
}

/** Restores the database from its replica with the CLI and records speed and equality in the result. */
export async function checkRestore(
  ctx: BenchContext,
  walship: WalshipProcess,
  db: ReplicatedDb,
  result: WorkloadResult,
  timeoutMs: number,
  restoreLimitMBps: number,
): Promise<void> {
  ctx.progress(`${result.name}: restoring and comparing rows`);
  const output = path.join(ctx.workDir, `${db.name}-restored.db`);
  const check = await restoreAndCompare(walship.configPath, db.path, output, timeoutMs);
  const mbps = check.bytes / MB / check.seconds;
  result.restore = {
    seconds: check.seconds,
    bytes: check.bytes,
    mbps,
    ratio: mbps / restoreLimitMBps,
    identical: check.identical,
    detail: check.detail,
  };
  result.extra.restoreLoggedSeconds = check.loggedSeconds;
  result.extra.integrityCheckSeconds = check.integritySeconds;
}

/** Deletes a workload's replica objects and database files. */
export async function cleanUp(ctx: BenchContext, dbs: ReplicatedDb[]): Promise<void> {
  for (const db of dbs) {
    removeDatabase(db.path);
    await deletePrefix(ctx.store, db.prefix).catch((err: unknown) => ctx.progress(`cannot delete ${db.prefix}: ${(err as Error).message}`));
  }
}

/** Adds a target to the run's list and returns whether it was met. */
export function checkTarget(
  ctx: BenchContext,
  workload: string,
  target: string,
  measured: string,
  met: boolean,
  shortfall: string,
): boolean {
  ctx.targets.push({ workload, target, measured, met, ...(met ? {} : { shortfall }) });
  return met;
}

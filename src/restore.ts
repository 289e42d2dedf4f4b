import { randomBytes } from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';

import { WalshipError } from './errors.js';
import { silentLogger } from './logger.js';
import type { Logger } from './logger.js';
import { formatIndex, formatPos } from './pos.js';
import type { Pos } from './pos.js';
import type { ReplicaClient, ReplicaClientConfig } from './replica/client.js';
import { createReplicaClient } from './replica/create.js';
import { ShipPool } from './pool.js';
import { applyWalIndexes, checkIntegrity, publish, removeTempFiles, writeSnapshot } from './restore/apply.js';
import type { ApplyResult, DecodeProgress } from './restore/apply.js';
import { planRestore } from './restore/plan.js';
import type { RestorePlan } from './restore/plan.js';

/** Segment downloads in flight at once when `parallelism` is unset. */
export const DEFAULT_RESTORE_PARALLELISM = 8;

/** Options of restore. */
export interface RestoreOptions {
  /** Replica to read: a client, or the settings to build one (then closed when the restore ends). */
  client: ReplicaClient | ReplicaClientConfig;
  /** Path of the database file to create; it must not exist yet. */
  outputPath: string;
  /** Generation to restore. Defaults to the generation with the newest object. */
  generation?: string;
  /** Last WAL index to apply. Defaults to the last index of the generation. */
  index?: number;
  /**
   * Point in time: restore the state after the last transaction committed at
   * or before it. A time after the newest object restores the latest state;
   * one before the first snapshot rejects with NOT_FOUND naming the earliest
   * restorable time. Cannot be combined with `index`.
   */
  timestamp?: Date;
  /** Called as downloads progress; see RestoreProgress. */
  onProgress?: (progress: RestoreProgress) => void;
  /** WAL segment downloads in flight at once. Defaults to 8. */
  parallelism?: number;
  /** Defaults to a logger that drops everything. */
  logger?: Logger;
  /** Database name for log lines and messages. Defaults to the output path. */
  dbName?: string;
  /**
   * Worker pool that decompresses large blocks. Defaults to a pool of its own,
   * started for this restore and closed when it ends.
   */
  pool?: ShipPool;
}

/** Download progress of a restore, in stored (compressed) bytes and objects. */
export interface RestoreProgress {
  bytesDone: number;
  /** Stored size of the snapshot and every planned segment; a point-in-time restore may stop short of it. */
  bytesTotal: number;
  objectsDone: number;
  objectsTotal: number;
  /** True once the restore has finished downloading. */
  done: boolean;
}

/** Outcome of a restore. */
export interface RestoreResult {
  generation: string;
  /** Index of the snapshot the restore started from. */
  snapshotIndex: number;
  /** Position reached: the last WAL index applied and its length, or the snapshot's index at offset 0. */
  pos: Pos;
  /** Size of the restored database file in bytes. */
  bytes: number;
  /** Capture time of the last transaction applied, when its segment recorded one. */
  lastCommitAt?: Date;
}

/**
 * Restores a database from a replica in the Litestream v0.3 layout into a new
 * file. The snapshot and WAL are assembled in a temporary file beside the
 * output, checked with `PRAGMA integrity_check`, then moved into place, so
 * the output is either absent or complete. On failure every temporary file is
 * removed and the error names the object key or value at fault.
 */
export async function restore(options: RestoreOptions): Promise<RestoreResult> {
  const outputPath = path.resolve(options.outputPath);
  const parallelism = checkParallelism(options.parallelism);
  const logger = (options.logger ?? silentLogger()).child({ db: options.dbName ?? outputPath });

  await checkOutput(outputPath);
  const owned = !isClient(options.client);
  const client = isClient(options.client) ? options.client : createReplicaClient(options.client);

  const pool = options.pool ?? new ShipPool();

  try {
    return await restoreFrom(client, outputPath, { ...options, parallelism, logger, pool });
  } finally {
    if (owned) await client.close();
    if (!options.pool) await pool.close();
  }
}

/** Runs a restore with resolved options against an open client. */
async function restoreFrom(
  client: ReplicaClient,
  outputPath: string,
  options: RestoreOptions & { parallelism: number; logger: Logger; pool: ShipPool },
): Promise<RestoreResult> {
  const started = Date.now();
  const logger = options.logger;

  const plan = await planRestore(client, { generation: options.generation, index: options.index, timestamp: options.timestamp });
  const { generation, snapshot } = plan;
  logger.info(
    { location: client.location, generation, snapshot: formatIndex(snapshot.index), key: snapshot.key, indexes: plan.indexes.length, timestamp: options.timestamp?.toISOString() },
    'restore started',
  );
  warnIfIndexBeyondEnd(plan, options.index, logger);
  if (plan.skippedIndex) {
    const first = plan.skippedIndex.segments[0]!;
    logger.warn(
      { generation, index: formatIndex(plan.skippedIndex.index), key: first.key },
      'restoring up to the WAL index before the newest: its first segment is missing, and the segments stored after it come from an upload that did not finish',
    );
  }

  const tmpPath = `${outputPath}.tmp-${randomBytes(4).toString('hex')}`;
  const progress = trackProgress(plan, options.onProgress);
  let applied: ApplyResult;
  try {
    const written = await writeSnapshot(client, snapshot, tmpPath, options.pool, progress);
    const walOffset = written.header?.walOffset;
    applied = await applyWalIndexes(client, tmpPath, generation, plan.indexes, {
      ...options,
      ...(walOffset !== undefined ? { required: { key: snapshot.key, index: snapshot.index, offset: walOffset } } : {}),
      until: options.timestamp,
      progress,
      ...(options.index === undefined && options.timestamp === undefined ? { latestIndex: plan.lastIndex, snapshotIndex: snapshot.index } : {}),
    });
    progress.finish();
    checkIntegrity(tmpPath, generation);
    await publish(tmpPath, outputPath);
    // The output is in place; this only clears -wal or -shm files that SQLite left behind.
    await removeTempFiles(tmpPath);
  } catch (err) {
    await removeTempFiles(tmpPath);
    throw err;
  }

  // A snapshot-only restore ends at the start of the snapshot's index.
  const pos = applied.pos ?? { generation, index: snapshot.index, offset: 0 };
  const bytes = (await fs.stat(outputPath)).size;
  const lastCommitAt = applied.lastCommitAt;
  logger.info({ generation, pos: formatPos(pos), bytes, lastCommitAt: lastCommitAt?.toISOString(), elapsed: `${Date.now() - started}ms` }, 'restore finished');
  return { generation, snapshotIndex: snapshot.index, pos, bytes, ...(lastCommitAt ? { lastCommitAt } : {}) };
}

/**
 * Counts downloaded bytes and objects against the plan's totals and reports
 * them through `onProgress`. Without a callback it costs nothing.
 */
function trackProgress(plan: RestorePlan, onProgress: ((progress: RestoreProgress) => void) | undefined): DecodeProgress & { finish(): void } {
  const segments = plan.indexes.flatMap((i) => i.segments);
  const state: RestoreProgress = {
    bytesDone: 0,
    bytesTotal: plan.snapshot.size + segments.reduce((sum, s) => sum + s.size, 0),
    objectsDone: 0,
    objectsTotal: 1 + segments.length,
    done: false,
  };
  const report = (): void => onProgress?.({ ...state });
  report();
  return {
    bytes(count: number): void {
      state.bytesDone += count;
      report();
    },
    object(): void {
      state.objectsDone++;
      report();
    },
    finish(): void {
      state.done = true;
      report();
    },
  };
}

/**
 * Rejects an output path that exists, and one whose directory cannot take a
 * new file, before anything is downloaded. The probe file is created and
 * removed at once.
 */
async function checkOutput(outputPath: string): Promise<void> {
  const existing = await fs.lstat(outputPath).catch(() => undefined);
  if (existing !== undefined) {
    throw new WalshipError('INVALID_INPUT', `output ${outputPath} already exists; remove it or choose another path`);
  }

  const dir = path.dirname(outputPath);
  const probe = path.join(dir, `.${path.basename(outputPath)}.probe-${randomBytes(4).toString('hex')}`);
  try {
    const handle = await fs.open(probe, 'wx');
    await handle.close();
    await fs.unlink(probe);
  } catch (err) {
    const reason = (err as NodeJS.ErrnoException).code === 'ENOENT' ? 'does not exist' : `is not writable (${(err as Error).message})`;
    throw new WalshipError('INVALID_INPUT', `output directory ${dir} ${reason}; choose an output path in a writable directory`, {
      cause: err,
    });
  }
}

/** Returns the parallelism to use, rejecting anything but a positive integer. */
function checkParallelism(parallelism: number | undefined): number {
  if (parallelism === undefined) return DEFAULT_RESTORE_PARALLELISM;
  if (!Number.isInteger(parallelism) || parallelism < 1) {
    throw new WalshipError('INVALID_INPUT', `invalid parallelism ${parallelism}: expected an integer of at least 1`);
  }
  return parallelism;
}

/** Logs a warning when the requested index lies past the last one the generation holds. */
function warnIfIndexBeyondEnd(plan: RestorePlan, index: number | undefined, logger: Logger): void {
  if (index === undefined || index <= plan.lastIndex) return;
  logger.warn(
    { generation: plan.generation, index: formatIndex(index), last: formatIndex(plan.lastIndex) },
    'requested WAL index is past the end of the generation; restoring to its last index',
  );
}

/** Reports whether a value is a client rather than client settings. */
function isClient(value: ReplicaClient | ReplicaClientConfig): value is ReplicaClient {
  return typeof (value as ReplicaClient).list === 'function';
}

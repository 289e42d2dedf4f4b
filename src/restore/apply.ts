import fs from 'node:fs/promises';
import path from 'node:path';

import Database from 'better-sqlite3';
import type { Logger } from 'pino';

import { WalshipError, hasSqliteCode } from '../errors.js';
import { formatIndex, formatPos } from '../pos.js';
import type { Pos } from '../pos.js';
import type { ShipPool } from '../pool.js';
import type { ReplicaClient } from '../replica/client.js';
import type { SnapshotInfo } from '../replica/listing.js';
import { COMMIT_TIMES_MAGIC, SNAPSHOT_TIME_MAGIC, decodeCommitTimes, decodeSnapshotHeaderPayload } from '../commit-times.js';
import type { CommitTime, SnapshotHeader } from '../commit-times.js';
import { parseWalHeader, WAL_HEADER_SIZE } from '../wal.js';
import { decodeObjectInto, fetchSegmentsInOrder, openObject } from './download.js';
import type { FetchedSegment } from './download.js';
import type { WalIndexPlan } from './plan.js';

/**
 * Materialising a restore in a temporary database file. The snapshot is
 * decoded into it, then each WAL index is written beside it as its `-wal` file
 * and checkpointed by SQLite. SQLite's WAL recovery validates the header, salts
 * and frame checksums, and keeps only the committed frames.
 */

/** A snapshot decoded into the restore's file. */
export interface WrittenSnapshot {
  /** Bytes written. */
  length: number;
  /** walship's header frame of the snapshot; undefined for a snapshot Litestream wrote. */
  header?: SnapshotHeader;
}

/** Decodes a snapshot into a new file at `dbPath`. */
export async function writeSnapshot(
  client: ReplicaClient,
  snapshot: SnapshotInfo,
  dbPath: string,
  pool?: ShipPool,
  progress?: DecodeProgress,
): Promise<WrittenSnapshot> {
  const file = await fs.open(dbPath, 'wx');
  try {
    let header: SnapshotHeader | undefined;
    const hooks = {
      onSkippable: (magic: number, payload: Buffer) => {
        if (magic === SNAPSHOT_TIME_MAGIC) header = decodeSnapshotHeaderPayload(payload) ?? header;
      },
      ...(progress ? { onBytes: progress.bytes } : {}),
    };
    const length = await decodeObjectInto(openObject(client, snapshot.key), file, snapshot.key, client.location, pool, hooks);
    progress?.object();
    return { length, ...(header ? { header } : {}) };
  } finally {
    await file.close();
  }
}

/** Options for applyWalIndexes. */
export interface ApplyOptions {
  /** Segment downloads in flight at once. */
  parallelism: number;
  logger: Logger;
  /** Worker pool for large blocks; without one, every block decompresses in this thread. */
  pool?: ShipPool;
  /**
   * Stop after the last transaction committed at or before this time. Segments
   * with commit times (see commit-times.ts) are cut at a commit frame; others,
   * as Litestream writes them, count whole by their store time.
   */
  until?: Date;
  /**
   * Last WAL index of the generation, when the restore is for the latest
   * state. A hole in that index then ends the restore: see writeWalFile.
   */
  latestIndex?: number;
  /**
   * Index of the snapshot the restore starts from. A hole is tolerated only
   * in a later index: the snapshot may contain pages of its own index's
   * transactions, which only a whole replay of that index makes consistent.
   */
  snapshotIndex?: number;
  /** Called with stored bytes as they arrive, and once per finished segment. */
  progress?: DecodeProgress;
  /**
   * How far the snapshot's own index must be applied, from the snapshot's
   * header: SQLite may have checkpointed frames up to there into the database
   * file while walship read it. A restore that ends short of it is rejected.
   */
  required?: { key: string; index: number; offset: number };
}

/** Progress callbacks of a restore's downloads. */
export interface DecodeProgress {
  bytes(count: number): void;
  object(): void;
}

/** End point of applying the WAL. */
export interface ApplyResult {
  /** Last WAL index applied and the length applied of it; undefined when no index was applied. */
  pos: Pos | undefined;
  /** Capture time of the last transaction applied, when its segment recorded one. */
  lastCommitAt?: Date;
}

/**
 * Applies WAL indexes to the database at `dbPath` strictly in order and
 * returns the position reached: the last index and its decompressed length,
 * or with `until` the end of the last transaction at or before it. Each
 * segment's offset must equal the decompressed length of the segments before
 * it in its index; a gap rejects with CORRUPT_REPLICA naming the key.
 */
export async function applyWalIndexes(
  client: ReplicaClient,
  dbPath: string,
  generation: string,
  indexes: WalIndexPlan[],
  options: ApplyOptions,
): Promise<ApplyResult> {
  const segments = indexes.flatMap((plan) => plan.segments);
  const fetched = fetchSegmentsInOrder(client, segments, options.parallelism);

  const result: ApplyResult = { pos: undefined };
  const required = options.required !== undefined && options.required.offset > WAL_HEADER_SIZE ? options.required : undefined;
  let requiredReached = required === undefined;
  try {
    for (const plan of indexes) {
      const written = await writeWalFile(`${dbPath}-wal`, plan, fetched, client.location, options);
      if (required !== undefined && plan.index === required.index) {
        if (written.length < required.offset) throw incompleteSnapshotIndex(required, written.length, options.until !== undefined);
        requiredReached = true;
      }
      checkpointWal(dbPath, plan);
      result.pos = { generation, index: plan.index, offset: written.length };
      if (written.lastCommitAt !== undefined) result.lastCommitAt = written.lastCommitAt;
      options.logger.debug({ generation, pos: formatPos(result.pos), bytes: written.length }, 'WAL index applied');
      if (written.stopped) break;
    }
  } finally {
    await fetched.return(undefined);
  }
  if (!requiredReached) throw incompleteSnapshotIndex(required!, 0, options.until !== undefined);
  return result;
}

/**
 * Builds the error for a snapshot whose own WAL index is not stored (or, at a
 * point in time, not applied) as far as the snapshot requires. walship stores
 * those segments before the snapshot, so this takes segments lost or deleted
 * since, or a snapshot written by a walship release that stored them after.
 */
function incompleteSnapshotIndex(required: { key: string; index: number; offset: number }, reached: number, atTime: boolean): WalshipError {
  const advice = atTime
    ? 'choose a later -timestamp, or an earlier snapshot with -index'
    : 'start walship on this database again so that it stores them, or restore the previous generation with -generation';
  return new WalshipError(
    'CORRUPT_REPLICA',
    `snapshot ${required.key} needs WAL index ${formatIndex(required.index)} applied up to offset ${required.offset}, ` +
      `but the restore reaches offset ${reached} of it: ${advice}`,
  );
}

/** Outcome of writing one WAL index. */
interface WrittenIndex {
  /** Bytes of the -wal file that SQLite applies. */
  length: number;
  /** True when a transaction after the target time was found, so later indexes are not applied. */
  stopped: boolean;
  lastCommitAt?: Date;
}

/**
 * Writes the decoded segments of one WAL index as the `-wal` file. With a
 * target time, the file is truncated just past the last commit frame at or
 * before it, so SQLite's checkpoint applies nothing later.
 */
async function writeWalFile(
  walPath: string,
  plan: WalIndexPlan,
  fetched: AsyncGenerator<FetchedSegment>,
  location: string,
  options: ApplyOptions,
): Promise<WrittenIndex> {
  const file = await fs.open(walPath, 'w+');
  const until = options.until?.getTime();
  try {
    let length = 0;
    // End of the applied part: a commit boundary when cutting at a time.
    let cut = 0;
    let lastCommitAt: number | undefined;
    let stopped = false;

    for (const expected of plan.segments) {
      const next = await fetched.next();
      if (next.done) throw new Error(`segment download ended before ${expected.key}`);
      const { segment, body } = next.value;

      // Segments upload several at once, and walship starts an index only once
      // the one before it is stored whole. So a segment that failed, or whose
      // upload a crash cut off, can leave later ones stored behind a hole in
      // the newest index only, until walship deletes them. The replica's
      // position never passed the hole: the latest state ends there.
      if (segment.offset > length && plan.index === options.latestIndex && plan.index > (options.snapshotIndex ?? Infinity)) {
        options.logger.warn(
          { generation: segment.generation, index: formatIndex(segment.index), offset: length, key: segment.key },
          'restoring up to a missing segment at the end of the newest WAL index; the segments after it were stored past an upload that did not finish',
        );
        stopped = true;
        break;
      }
      if (segment.offset !== length) {
        // A live replica can hold segments past one that is still uploading or
        // being retried, because several upload at once. So the message advises
        // a retry before it calls the replica damaged.
        throw new WalshipError(
          'CORRUPT_REPLICA',
          `missing WAL segment in generation ${segment.generation}: ${segment.key} starts at offset ${segment.offset}, ` +
            `expected offset ${length} of index ${formatIndex(segment.index)}. If walship is replicating this database now, ` +
            `the segment may still be uploading: try again in a minute, or restore an earlier point with -timestamp or -index`,
        );
      }
      let times: CommitTime[] | undefined;
      const hooks = {
        onSkippable: (magic: number, payload: Buffer) => {
          if (magic === COMMIT_TIMES_MAGIC) times = decodeCommitTimes(payload) ?? times;
        },
        ...(options.progress ? { onBytes: options.progress.bytes } : {}),
      };
      const decoded = await decodeObjectInto(body, file, segment.key, location, options.pool, hooks);
      options.progress?.object();
      if (segment.offset === 0) await checkWalHeader(file, segment.key);
      length += decoded;

      if (until === undefined) {
        cut = length;
        continue;
      }
      if (times === undefined) {
        // A segment without commit times: its store time is after all its
        // commits, so it counts whole or not at all.
        if (segment.createdAt.getTime() > until) stopped = true;
        else cut = length;
      } else {
        for (const time of times) {
          if (time.end > decoded) {
            throw new WalshipError('CORRUPT_REPLICA', `commit time entry of ${segment.key} points to offset ${time.end}, past its ${decoded} bytes`);
          }
          if (time.at > until) {
            stopped = true;
            break;
          }
          cut = segment.offset + time.end;
          lastCommitAt = time.at;
        }
      }
      if (stopped) break;
    }

    // Truncating at a commit boundary, before SQLite reads the file, keeps
    // every later transaction out of the checkpoint.
    if (cut < length) await file.truncate(cut);
    return { length: cut, stopped, ...(lastCommitAt !== undefined ? { lastCommitAt: new Date(lastCommitAt) } : {}) };
  } finally {
    await file.close();
  }
}

/**
 * Rejects an index whose first segment does not begin with a valid WAL header.
 * SQLite would ignore such a WAL without an error, and the restore would go on
 * without the whole index.
 */
async function checkWalHeader(file: fs.FileHandle, key: string): Promise<void> {
  const header = Buffer.alloc(WAL_HEADER_SIZE);
  const { bytesRead } = await file.read(header, 0, WAL_HEADER_SIZE, 0);
  if (bytesRead < WAL_HEADER_SIZE || parseWalHeader(header) === undefined) {
    throw new WalshipError('CORRUPT_REPLICA', `WAL segment ${key} does not start with a valid WAL header`);
  }
}

/** Checkpoints the `-wal` file beside `dbPath` into the database and truncates it. */
function checkpointWal(dbPath: string, plan: WalIndexPlan): void {
  const db = new Database(dbPath, { fileMustExist: true });
  try {
    // SQLite reads a -wal file only for a database whose header says WAL mode.
    const mode = db.pragma('journal_mode', { simple: true });
    if (mode !== 'wal') {
      throw new WalshipError('CORRUPT_REPLICA', `snapshot is in journal mode "${String(mode)}", so WAL index ${formatIndex(plan.index)} cannot be applied`);
    }

    let result: { busy: number; log: number; checkpointed: number } | undefined;
    try {
      [result] = db.pragma('wal_checkpoint(TRUNCATE)') as Array<{ busy: number; log: number; checkpointed: number }>;
    } catch (err) {
      if (!hasSqliteCode(err, 'SQLITE_CORRUPT', 'SQLITE_NOTADB')) throw err;
      throw new WalshipError('CORRUPT_REPLICA', `WAL index ${formatIndex(plan.index)} does not apply to the database restored so far: ${(err as Error).message}`, { cause: err });
    }
    if (result === undefined || result.busy !== 0) {
      throw new Error(`checkpoint of WAL index ${formatIndex(plan.index)} did not complete (busy=${result?.busy}); is another process using ${dbPath}?`);
    }
  } finally {
    db.close();
  }
}

/** Runs `PRAGMA integrity_check` and rejects with CORRUPT_REPLICA unless it returns "ok". */
export function checkIntegrity(dbPath: string, generation: string): void {
  // Read-write, because a read-only connection to a WAL database leaves its -wal and -shm files behind.
  const db = new Database(dbPath, { fileMustExist: true });
  let problems: string[];
  try {
    problems = (db.pragma('integrity_check', { simple: false }) as Array<{ integrity_check: string }>).map((row) => row.integrity_check);
  } catch (err) {
    // A file damaged badly enough makes the check itself fail instead of listing problems.
    if (!hasSqliteCode(err, 'SQLITE_CORRUPT', 'SQLITE_NOTADB')) throw err;
    problems = [(err as Error).message];
  } finally {
    db.close();
  }
  if (problems.length !== 1 || problems[0] !== 'ok') {
    throw new WalshipError(
      'CORRUPT_REPLICA',
      `integrity check failed for the database restored from generation ${generation}: ${problems.slice(0, 5).join('; ')}`,
    );
  }
}

/**
 * Makes the restored file durable and moves it to `outputPath`. It links, then
 * unlinks, because a link fails on an output that appeared during the restore
 * where a rename would replace it. Filesystems without hard links get a rename.
 */
export async function publish(tmpPath: string, outputPath: string): Promise<void> {
  await fsyncPath(tmpPath, 'r+');
  try {
    await fs.link(tmpPath, outputPath);
    await fs.unlink(tmpPath);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'EEXIST') {
      throw new WalshipError('INVALID_INPUT', `output ${outputPath} was created during the restore; remove it or choose another path`, { cause: err });
    }
    if (code !== 'EPERM' && code !== 'ENOTSUP' && code !== 'EOPNOTSUPP' && code !== 'ENOSYS') throw err;
    await fs.rename(tmpPath, outputPath);
  }
  await fsyncPath(path.dirname(outputPath), 'r');
}

/** Removes a temporary database and every SQLite file beside it; missing files are fine. */
export async function removeTempFiles(tmpPath: string): Promise<void> {
  const paths = [tmpPath, `${tmpPath}-wal`, `${tmpPath}-shm`, `${tmpPath}-journal`];
  await Promise.all(paths.map((p) => fs.rm(p, { force: true })));
}

/** Flushes a file or directory to stable storage. */
async function fsyncPath(target: string, flags: string): Promise<void> {
  const handle = await fs.open(target, flags);
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

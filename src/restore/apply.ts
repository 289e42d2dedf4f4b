import fs from 'node:fs/promises';
import path from 'node:path';

import Database from 'better-sqlite3';
import type { Logger } from 'pino';

import { WalshipError } from '../errors.js';
import { formatIndex, formatPos } from '../pos.js';
import type { Pos } from '../pos.js';
import type { ShipPool } from '../pool.js';
import type { ReplicaClient } from '../replica/client.js';
import type { SnapshotInfo } from '../replica/listing.js';
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

/** Decodes a snapshot into a new file at `dbPath` and returns the file's length. */
export async function writeSnapshot(client: ReplicaClient, snapshot: SnapshotInfo, dbPath: string, pool?: ShipPool): Promise<number> {
  const file = await fs.open(dbPath, 'wx');
  try {
    return await decodeObjectInto(openObject(client, snapshot.key), file, snapshot.key, client.location, pool);
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
}

/**
 * Applies WAL indexes to the database at `dbPath` strictly in order and
 * returns the position reached: the last index and its decompressed length.
 * Each segment's offset must equal the decompressed length of the segments
 * before it in its index; a gap rejects with CORRUPT_REPLICA naming the key.
 */
export async function applyWalIndexes(
  client: ReplicaClient,
  dbPath: string,
  generation: string,
  indexes: WalIndexPlan[],
  options: ApplyOptions,
): Promise<Pos | undefined> {
  const segments = indexes.flatMap((plan) => plan.segments);
  const fetched = fetchSegmentsInOrder(client, segments, options.parallelism);

  let pos: Pos | undefined;
  try {
    for (const plan of indexes) {
      const length = await writeWalFile(`${dbPath}-wal`, plan, fetched, client.location, options.pool);
      checkpointWal(dbPath, plan);
      pos = { generation, index: plan.index, offset: length };
      options.logger.debug({ generation, pos: formatPos(pos), bytes: length }, 'WAL index applied');
    }
  } finally {
    await fetched.return(undefined);
  }
  return pos;
}

/** Writes the decoded segments of one WAL index as the `-wal` file and returns its length. */
async function writeWalFile(
  walPath: string,
  plan: WalIndexPlan,
  fetched: AsyncGenerator<FetchedSegment>,
  location: string,
  pool: ShipPool | undefined,
): Promise<number> {
  const file = await fs.open(walPath, 'w+');
  try {
    let length = 0;
    for (const expected of plan.segments) {
      const next = await fetched.next();
      if (next.done) throw new Error(`segment download ended before ${expected.key}`);
      const { segment, body } = next.value;

      if (segment.offset !== length) {
        throw new WalshipError(
          'CORRUPT_REPLICA',
          `missing WAL segment in generation ${segment.generation}: ${segment.key} starts at offset ${segment.offset}, ` +
            `expected offset ${length} of index ${formatIndex(segment.index)}`,
        );
      }
      length += await decodeObjectInto(body, file, segment.key, location, pool);
      if (segment.offset === 0) await checkWalHeader(file, segment.key);
    }
    return length;
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

    const [result] = db.pragma('wal_checkpoint(TRUNCATE)') as Array<{ busy: number; log: number; checkpointed: number }>;
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

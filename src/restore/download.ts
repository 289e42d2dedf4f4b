import type { FileHandle } from 'node:fs/promises';

import { WalshipError } from '../errors.js';
import { ContentChecksum, LZ4FrameError, LZ4FrameReader, decodeBlock, loadHasher } from '../lz4.js';
import type { ShipPool } from '../pool.js';
import type { ReplicaClient } from '../replica/client.js';
import type { SegmentInfo } from '../replica/listing.js';

/** Compressed size above which a WAL segment streams at its turn instead of being fetched ahead into memory. */
export const PREFETCH_MAX_BYTES = 8 * 1024 * 1024;

// Bytes handed to the decoder at once: prefetched bodies are cut into slices of
// this size, so that one push never inflates more than a few blocks, and small
// stream chunks are gathered up to it.
const FEED_SLICE = 1024 * 1024;

/** Object bytes as they arrive: a stream's chunks, or one prefetched buffer. */
export type ObjectBody = AsyncIterable<Uint8Array>;

/** One WAL segment handed out in order, with its body ready to read. */
export interface FetchedSegment {
  segment: SegmentInfo;
  body: ObjectBody;
}

type Prefetch = { ok: true; body: Buffer } | { ok: false; error: unknown };

/** Callbacks of decodeObjectInto. */
export interface DecodeHooks {
  /** Called with each skippable frame in front of the data frame. */
  onSkippable?: (magic: number, payload: Buffer) => void;
  /** Called with the count of stored (compressed) bytes as they arrive, for progress. */
  onBytes?: (bytes: number) => void;
}

/**
 * Decodes one LZ4-framed object into `file`, appending at the file's current
 * end, and returns the decoded length. With a pool, large blocks decompress in
 * its worker threads while the next ones download, and the output is written
 * in frame order. Errors name the object key: a bad content checksum rejects
 * with CHECKSUM_MISMATCH, a truncated or malformed frame with CORRUPT_REPLICA.
 */
export async function decodeObjectInto(
  body: ObjectBody,
  file: FileHandle,
  key: string,
  location: string,
  pool?: ShipPool,
  hooks: DecodeHooks = {},
): Promise<number> {
  const hasher = await loadHasher();
  const reader = new LZ4FrameReader(hasher);
  const checksum = new ContentChecksum(hasher);
  // Blocks decoding or decoded, oldest first. The window bounds memory to a
  // few blocks per worker.
  const pending: Promise<Buffer>[] = [];
  const window = pool ? pool.threads * 2 : 0;
  let stored: number | undefined;
  let written = 0;

  const writeOldest = async (): Promise<void> => {
    const decoded = await pending.shift()!;
    checksum.update(decoded);
    await file.write(decoded);
    written += decoded.length;
  };

  const push = async (input: Uint8Array): Promise<void> => {
    for (const item of reader.push(input)) {
      if (item.kind === 'skippable') {
        hooks.onSkippable?.(item.magic, item.payload);
        continue;
      }
      if (item.kind === 'end') {
        stored = item.checksum;
        continue;
      }
      const decoded = decodeLater(item.data, item.uncompressed, reader.blockMax, pool);
      // A rejection is raised when the block's turn comes, not as unhandled.
      decoded.catch(() => undefined);
      pending.push(decoded);
      while (pending.length > window) await writeOldest();
    }
  };

  try {
    // The reader copies its unfinished block on every push, so small stream
    // chunks are gathered into FEED_SLICE pieces to keep that copying linear.
    let batch: Uint8Array[] = [];
    let batchBytes = 0;
    for await (const piece of body) {
      hooks.onBytes?.(piece.length);
      batch.push(piece);
      batchBytes += piece.length;
      if (batchBytes < FEED_SLICE) continue;
      await push(batch.length === 1 ? batch[0]! : Buffer.concat(batch, batchBytes));
      batch = [];
      batchBytes = 0;
    }
    if (batchBytes > 0) await push(Buffer.concat(batch, batchBytes));
    while (pending.length > 0) await writeOldest();
    reader.finish(written);
    checksum.check(stored);
  } catch (err) {
    await Promise.allSettled(pending);
    throw objectError(err, key, location);
  }
  return written;
}

// Blocks smaller than this decompress in this thread: a worker round trip
// costs more than they take.
const POOL_MIN_BLOCK = 64 * 1024;

/** Decompresses a block in the pool when it is large enough, else here. */
function decodeLater(data: Buffer, uncompressed: boolean, maxSize: number, pool: ShipPool | undefined): Promise<Buffer> {
  if (uncompressed) return Promise.resolve(Buffer.from(data));
  if (!pool || data.length < POOL_MIN_BLOCK) {
    try {
      return Promise.resolve(decodeBlock(data, maxSize));
    } catch (err) {
      return Promise.reject(err);
    }
  }
  // The block is a view into the reader's buffer, so the worker gets a copy of its own.
  return pool.decodeBlock(new Uint8Array(data), maxSize);
}

/**
 * Downloads WAL segments with up to `parallelism` requests in flight and
 * yields them strictly in list order. Segments whose stored size exceeds
 * `prefetchMaxBytes` are opened as a stream only when their turn comes, which
 * bounds memory to about `parallelism × prefetchMaxBytes` whatever the size of
 * the WAL.
 */
export async function* fetchSegmentsInOrder(
  client: ReplicaClient,
  segments: SegmentInfo[],
  parallelism: number,
  prefetchMaxBytes = PREFETCH_MAX_BYTES,
): AsyncGenerator<FetchedSegment> {
  const prefetches: Array<Promise<Prefetch> | undefined> = [];

  for (let i = 0; i < segments.length; i++) {
    // Keep the window [i, i + parallelism) requested before waiting on segment i.
    for (let j = prefetches.length; j < Math.min(segments.length, i + parallelism); j++) {
      prefetches.push(segments[j]!.size <= prefetchMaxBytes ? prefetch(client, segments[j]!.key) : undefined);
    }

    const segment = segments[i]!;
    const pending = prefetches[i];
    prefetches[i] = undefined;
    yield { segment, body: pending === undefined ? openObject(client, segment.key) : prefetchedBody(pending) };
  }
}

/**
 * Starts one download. The promise never rejects: a failure is kept as a value
 * and raised when the segment's turn comes, so that a download that fails
 * while the restore is stopping on another error is not an unhandled rejection.
 */
function prefetch(client: ReplicaClient, key: string): Promise<Prefetch> {
  return getWithRetry(client, key).then(
    (body): Prefetch => ({ ok: true, body }),
    (error: unknown): Prefetch => ({ ok: false, error }),
  );
}

/** Downloads a whole object, downloading it again after a connection failure. */
async function getWithRetry(client: ReplicaClient, key: string): Promise<Buffer> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await client.get(key);
    } catch (err) {
      if (attempt >= OBJECT_ATTEMPTS || !isTransient(err)) throw err;
      await sleep(retryDelay(attempt));
    }
  }
}

/** Yields a prefetched body in slices, or raises its download error. */
async function* prefetchedBody(pending: Promise<Prefetch>): ObjectBody {
  const result = await pending;
  if (!result.ok) throw result.error;
  for (let at = 0; at < result.body.length; at += FEED_SLICE) {
    yield result.body.subarray(at, at + FEED_SLICE);
  }
}

/**
 * Opens an object as a stream on first read and yields its chunks. When the
 * connection fails mid-body, the object is requested again and the bytes
 * already yielded are skipped, so the reader sees one unbroken body and only
 * this object is downloaded again, up to OBJECT_ATTEMPTS times.
 */
export async function* openObject(client: ReplicaClient, key: string): ObjectBody {
  let received = 0;
  for (let attempt = 1; ; attempt++) {
    let skip = received;
    try {
      const stream = await client.getStream(key);
      try {
        for await (const chunk of stream) {
          let bytes = chunk as Uint8Array;
          if (skip >= bytes.length) {
            skip -= bytes.length;
            continue;
          }
          bytes = bytes.subarray(skip);
          skip = 0;
          received += bytes.length;
          yield bytes;
        }
      } finally {
        stream.destroy();
      }
    } catch (err) {
      if (attempt >= OBJECT_ATTEMPTS || !isTransient(err)) throw err;
      await sleep(retryDelay(attempt));
      continue;
    }

    // Objects of the replica layout never change under their key, so a
    // shorter body on a later attempt means the object was replaced.
    if (skip > 0) throw new Error(`object ${key} changed during the download: attempt ${attempt} ended before byte ${received}, which an earlier attempt had read`);
    return;
  }
}

/**
 * Attempts per object download, the first included. The S3 client's SDK
 * already retries a request that fails before the body starts, and these
 * attempts cover a failure while the body arrives.
 */
const OBJECT_ATTEMPTS = 5;

/** Milliseconds before the next attempt: a random time up to 100 ms × 2^attempt (full jitter), at most 5 s. */
function retryDelay(attempt: number): number {
  return Math.floor(Math.random() * Math.min(5000, 100 * 2 ** attempt));
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

// Node.js and SDK errors that a new connection can fix.
const TRANSIENT_CODES = new Set(['ECONNRESET', 'ECONNREFUSED', 'EPIPE', 'ETIMEDOUT', 'ERR_STREAM_PREMATURE_CLOSE', 'UND_ERR_SOCKET']);

/** Reports whether a download failed on the connection or with a 5xx, walking the `cause` chain; a missing object or bad data is not. */
function isTransient(err: unknown): boolean {
  for (let current = err, depth = 0; current !== undefined && current !== null && depth < 10; depth++) {
    if (current instanceof WalshipError) return false;
    const fields = current as { code?: unknown; name?: unknown; message?: unknown; $metadata?: { httpStatusCode?: number }; cause?: unknown };
    if (typeof fields.code === 'string' && TRANSIENT_CODES.has(fields.code)) return true;
    if (fields.name === 'TimeoutError' || fields.message === 'aborted') return true;
    const status = fields.$metadata?.httpStatusCode;
    if (status !== undefined && (status >= 500 || status === 429)) return true;
    current = fields.cause;
  }
  return false;
}

/** Wraps a download or decoding failure so that it names the object key. */
function objectError(err: unknown, key: string, location: string): Error {
  if (err instanceof LZ4FrameError) {
    // lz4.ts raises one error class; only a checksum failure mentions "checksum".
    const code = /checksum/i.test(err.message) ? 'CHECKSUM_MISMATCH' : 'CORRUPT_REPLICA';
    return new WalshipError(code, `invalid object ${key} in ${location}: ${err.message}`, { cause: err });
  }
  if (err instanceof WalshipError) {
    if (err.message.includes(key)) return err;
    return new WalshipError(err.code, `failed to read ${key} from ${location}: ${err.message}`, { cause: err });
  }
  const message = err instanceof Error ? err.message : String(err);
  return new Error(`failed to read ${key} from ${location}: ${message}`, { cause: err });
}

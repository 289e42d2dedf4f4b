import type { FileHandle } from 'node:fs/promises';

import { WalshipError } from '../errors.js';
import { LZ4FrameDecoder, LZ4FrameError, loadHasher } from '../lz4.js';
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

/**
 * Decodes one LZ4-framed object into `file`, appending at the file's current
 * end, and returns the decoded length. Errors name the object key: a bad
 * content checksum rejects with CHECKSUM_MISMATCH, a truncated or malformed
 * frame with CORRUPT_REPLICA.
 */
export async function decodeObjectInto(body: ObjectBody, file: FileHandle, key: string, location: string): Promise<number> {
  const decoder = new LZ4FrameDecoder(await loadHasher());
  let written = 0;
  const push = async (input: Uint8Array): Promise<void> => {
    for (const out of decoder.push(input)) {
      await file.write(out);
      written += out.length;
    }
  };

  try {
    // The decoder copies its unfinished block on every push, so small stream
    // chunks are gathered into FEED_SLICE pieces to keep that copying linear.
    let batch: Uint8Array[] = [];
    let batchBytes = 0;
    for await (const piece of body) {
      batch.push(piece);
      batchBytes += piece.length;
      if (batchBytes < FEED_SLICE) continue;
      await push(batch.length === 1 ? batch[0]! : Buffer.concat(batch, batchBytes));
      batch = [];
      batchBytes = 0;
    }
    if (batchBytes > 0) await push(Buffer.concat(batch, batchBytes));
    decoder.finish();
  } catch (err) {
    throw objectError(err, key, location);
  }
  return written;
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
  return client.get(key).then(
    (body): Prefetch => ({ ok: true, body }),
    (error: unknown): Prefetch => ({ ok: false, error }),
  );
}

/** Yields a prefetched body in slices, or raises its download error. */
async function* prefetchedBody(pending: Promise<Prefetch>): ObjectBody {
  const result = await pending;
  if (!result.ok) throw result.error;
  for (let at = 0; at < result.body.length; at += FEED_SLICE) {
    yield result.body.subarray(at, at + FEED_SLICE);
  }
}

/** Opens an object as a stream on first read and yields its chunks. */
export async function* openObject(client: ReplicaClient, key: string): ObjectBody {
  const stream = await client.getStream(key);
  try {
    for await (const chunk of stream) yield chunk as Uint8Array;
  } finally {
    stream.destroy();
  }
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

import fs from 'node:fs';
import { MessageChannel } from 'node:worker_threads';
import type { MessagePort } from 'node:worker_threads';

import { encodeSnapshotHeader } from './commit-times.js';
import type { SnapshotHeader } from './commit-times.js';
import { BLOCK_SIZE, frameHeader, frameTrailer, loadHasher } from './lz4.js';

/**
 * The main thread's half of a parallel snapshot. The database file is read
 * in 4 MiB blocks, and pool workers compress several blocks at once. The
 * compressed blocks then go in file order through a MessagePort to the worker
 * that uploads the single LZ4 frame. The content checksum is computed here,
 * over the blocks in order, because xxh32 cannot be combined from parts.
 */

/** Messages from the main thread to the upload worker. */
export type SnapshotStreamMessage = { chunk: Uint8Array } | { end: true } | { abort: string };

/** Messages from the upload worker back: one credit per chunk it consumed. */
export interface SnapshotStreamAck {
  consumed: number;
}

/** Pool operations the pipeline needs. */
export interface SnapshotStreamPool {
  /** Worker threads at most; the pipeline keeps twice as many blocks in flight. */
  readonly threads: number;
  /** Compresses one raw block into its size word and data, in a worker. */
  compressBlock(data: Uint8Array): Promise<Uint8Array>;
}

// Compressed blocks posted to the upload worker and not yet consumed by it.
// When the store is slow, reading waits instead of queueing more.
const MAX_UNCONSUMED = 4;

/**
 * Reads `size` bytes of `fd` and sends them as one LZ4 frame to `port`.
 * `upload` is the upload task, started with the other end of the channel;
 * its result is returned. A read or compression error aborts the upload.
 */
export async function streamSnapshot<T>(
  pool: SnapshotStreamPool,
  fd: number,
  size: number,
  startUpload: (port: MessagePort) => Promise<T>,
  snapshotHeader?: SnapshotHeader,
): Promise<{ result: T; storedBytes: number }> {
  const { port1, port2 } = new MessageChannel();
  const upload = startUpload(port2);
  // The upload's rejection is raised after the pipeline stops.
  upload.catch(() => undefined);

  let unconsumed = 0;
  let wake: (() => void) | undefined;
  port1.on('message', (ack: SnapshotStreamAck) => {
    unconsumed -= ack.consumed;
    wake?.();
  });
  let uploadEnded = false;
  void upload.finally(() => {
    uploadEnded = true;
    wake?.();
  });

  const send = async (chunk: Uint8Array): Promise<void> => {
    while (unconsumed >= MAX_UNCONSUMED && !uploadEnded) await new Promise<void>((resolve) => (wake = resolve));
    if (uploadEnded) throw new Error('snapshot upload ended before the frame was complete');
    unconsumed++;
    port1.postMessage({ chunk } satisfies SnapshotStreamMessage, [chunk.buffer as ArrayBuffer]);
  };

  let storedBytes = 0;
  try {
    const hash = (await loadHasher()).create32(0);
    if (snapshotHeader !== undefined) {
      const time = new Uint8Array(encodeSnapshotHeader(snapshotHeader));
      storedBytes += time.length;
      await send(time);
    }
    const header = new Uint8Array(frameHeader());
    storedBytes += header.length;
    await send(header);

    const pending: Promise<Uint8Array>[] = [];
    const sendOldest = async (): Promise<void> => {
      const block = await pending.shift()!;
      storedBytes += block.length;
      await send(block);
    };

    // Blocks are read into shared memory that workers compress in place, and
    // a slot is reused once its block is sent, so no raw block is allocated
    // or moved per block.
    const window = pool.threads * 2;
    const slots = Array.from({ length: window }, () => new Uint8Array(new SharedArrayBuffer(BLOCK_SIZE)));
    let block = 0;
    for (let offset = 0; offset < size; offset += BLOCK_SIZE, block++) {
      const raw = await readBlock(fd, offset, Math.min(BLOCK_SIZE, size - offset), slots[block % window]!);
      hash.update(raw);
      const compressed = pool.compressBlock(raw);
      compressed.catch(() => undefined);
      pending.push(compressed);
      // The oldest block is sent before its slot is read into again.
      while (pending.length >= window) await sendOldest();
      if (raw.length < BLOCK_SIZE) break;
    }
    while (pending.length > 0) await sendOldest();

    const trailer = new Uint8Array(frameTrailer(hash.digest() >>> 0));
    storedBytes += trailer.length;
    await send(trailer);
    port1.postMessage({ end: true } satisfies SnapshotStreamMessage);
  } catch (err) {
    port1.postMessage({ abort: (err as Error).message } satisfies SnapshotStreamMessage);
    await upload.catch(() => undefined);
    port1.close();
    throw err;
  }

  try {
    return { result: await upload, storedBytes };
  } finally {
    port1.close();
  }
}

/**
 * Reads up to `length` bytes at `offset` into `slot` and returns the part
 * read. A short result means the file ended.
 */
function readBlock(fd: number, offset: number, length: number, slot: Uint8Array): Promise<Uint8Array> {
  return new Promise((resolve, reject) => {
    let total = 0;
    const step = (): void => {
      fs.read(fd, slot, total, length - total, offset + total, (err, n) => {
        if (err) return reject(err);
        total += n;
        if (n === 0 || total === length) resolve(slot.subarray(0, total));
        else step();
      });
    };
    step();
  });
}

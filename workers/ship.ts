import fs from 'node:fs';
import { Readable } from 'node:stream';

import { move } from 'piscina';

import { encodeCommitTimes, encodeSnapshotHeader } from '../src/commit-times.js';
import { LZ4FrameEncoder, decodeBlock as decodeLz4Block, encodeBlock, encodeFrame, loadHasher } from '../src/lz4.js';
import type { ReplicaClient, ReplicaClientConfig } from '../src/replica/client.js';
import { createReplicaClient } from '../src/replica/create.js';
import type { BlockResult, CompressBlockTask, DecodeBlockTask, PutSegmentTask, PutSnapshotTask, PutStreamTask, ShipResult } from '../src/ship-task.js';
import type { SnapshotStreamAck, SnapshotStreamMessage } from '../src/snapshot-stream.js';

// One client per replica configuration and worker, reused across tasks so
// connections stay open.
const clients = new Map<string, ReplicaClient>();

// Bytes read from the database file per step of a snapshot.
const SNAPSHOT_READ_SIZE = 4 * 1024 * 1024;

function clientFor(config: ReplicaClientConfig): ReplicaClient {
  const id = JSON.stringify(config);
  let client = clients.get(id);
  if (!client) {
    client = createReplicaClient(config);
    clients.set(id, client);
  }
  return client;
}

/**
 * Compresses a WAL segment into one LZ4 frame and stores it, behind a
 * skippable frame with its commit times when the task has them.
 */
export async function putSegment(task: PutSegmentTask): Promise<ShipResult> {
  const started = Date.now();
  try {
    const frame = await encodeFrame(task.data);
    const body = task.commitTimes === undefined ? frame : Buffer.concat([encodeCommitTimes(task.commitTimes), frame]);
    await clientFor(task.client).put(task.key, body);
    return { ok: true, rawBytes: task.data.length, storedBytes: body.length, elapsedMs: Date.now() - started };
  } catch (err) {
    return failure(err);
  }
}

/**
 * Streams the database file into one LZ4 frame and stores it. Memory stays at
 * a few blocks: the file is read 4 MiB at a time and the store consumes the
 * compressed stream as it is produced.
 */
export async function putSnapshot(task: PutSnapshotTask): Promise<ShipResult> {
  const started = Date.now();
  try {
    const encoder = new LZ4FrameEncoder(await loadHasher());
    let stored = 0;
    const body = Readable.from(
      (async function* () {
        if (task.header !== undefined) {
          const frame = encodeSnapshotHeader(task.header);
          stored += frame.length;
          yield frame;
        }
        for (let offset = 0; offset < task.size; offset += SNAPSHOT_READ_SIZE) {
          const length = Math.min(SNAPSHOT_READ_SIZE, task.size - offset);
          const chunk = Buffer.allocUnsafe(length);
          const read = await readAt(task.fd, chunk, offset);
          for (const part of encoder.push(chunk.subarray(0, read))) {
            stored += part.length;
            yield part;
          }
          if (read < length) break;
        }
        for (const part of encoder.finish()) {
          stored += part.length;
          yield part;
        }
      })(),
    );
    await clientFor(task.client).put(task.key, body);
    return { ok: true, rawBytes: task.size, storedBytes: stored, elapsedMs: Date.now() - started };
  } catch (err) {
    return failure(err);
  }
}

/**
 * Decompresses one LZ4 block of a frame. The output moves back to the caller
 * without a copy. Piscina moves only a top-level result, so success returns
 * the bytes themselves and failure an error record.
 */
export function decodeBlock(task: DecodeBlockTask): BlockResult {
  try {
    const decoded = decodeLz4Block(Buffer.from(task.data.buffer, task.data.byteOffset, task.data.byteLength), task.maxSize);
    return move(ownBuffer(decoded)) as Uint8Array;
  } catch (err) {
    return failure(err);
  }
}

// A buffer that owns its whole ArrayBuffer can move between threads. Node's
// small buffers share a pool, so those are copied first.
function ownBuffer(buf: Buffer): Uint8Array {
  if (buf.byteOffset === 0 && buf.byteLength === buf.buffer.byteLength) return buf;
  return new Uint8Array(buf);
}

/** Compresses one block of a frame into its size word and data, returned without a copy. */
export function compressBlock(task: CompressBlockTask): BlockResult {
  try {
    const parts = encodeBlock(Buffer.from(task.data.buffer, task.data.byteOffset, task.data.byteLength));
    const out = new Uint8Array(new ArrayBuffer(parts[0]!.length + parts[1]!.length));
    out.set(parts[0]!, 0);
    out.set(parts[1]!, parts[0]!.length);
    return move(out) as Uint8Array;
  } catch (err) {
    return failure(err);
  }
}

/**
 * Stores the frame that the main thread sends through `task.port`, chunk by
 * chunk, as one object. Each chunk consumed by the upload is acknowledged, so
 * the sender keeps only a few chunks in flight.
 */
export async function putStream(task: PutStreamTask): Promise<ShipResult> {
  const started = Date.now();
  const port = task.port;
  const queue: SnapshotStreamMessage[] = [];
  let wake: (() => void) | undefined;
  port.on('message', (message: SnapshotStreamMessage) => {
    queue.push(message);
    wake?.();
  });

  let stored = 0;
  const body = Readable.from(
    (async function* () {
      for (;;) {
        while (queue.length === 0) await new Promise<void>((resolve) => (wake = resolve));
        const message = queue.shift()!;
        if ('end' in message) return;
        if ('abort' in message) throw new Error(`snapshot stream aborted: ${message.abort}`);
        stored += message.chunk.length;
        yield Buffer.from(message.chunk.buffer, message.chunk.byteOffset, message.chunk.byteLength);
        port.postMessage({ consumed: 1 } satisfies SnapshotStreamAck);
      }
    })(),
  );

  try {
    await clientFor(task.client).put(task.key, body);
    return { ok: true, rawBytes: 0, storedBytes: stored, elapsedMs: Date.now() - started };
  } catch (err) {
    return failure(err);
  } finally {
    port.close();
  }
}

/** Reads into `buf` from `offset` until full or end of file; returns the bytes read. */
function readAt(fd: number, buf: Buffer, offset: number): Promise<number> {
  return new Promise((resolve, reject) => {
    let total = 0;
    const step = () => {
      fs.read(fd, buf, total, buf.length - total, offset + total, (err, n) => {
        if (err) return reject(err);
        total += n;
        if (n === 0 || total === buf.length) resolve(total);
        else step();
      });
    };
    step();
  });
}

function failure(err: unknown): { ok: false; error: { name: string; message: string; code?: string } } {
  const e = err as { name?: string; message?: string; code?: string };
  return { ok: false, error: { name: e?.name ?? 'Error', message: e?.message ?? String(err), code: e?.code } };
}

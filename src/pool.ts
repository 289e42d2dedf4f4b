import os from 'node:os';

import { Piscina } from 'piscina';

import { WalshipError } from './errors.js';
import { BLOCK_SIZE, LZ4FrameError } from './lz4.js';
import type { WalshipErrorCode } from './errors.js';
import { Mutex, Semaphore } from './mutex.js';
import type { BlockResult, PutSegmentTask, PutSnapshotTask, PutStreamTask, ShipResult } from './ship-task.js';
import { streamSnapshot } from './snapshot-stream.js';

// Replicas establishing their position at once; see ShipPool.startSlots.
const START_SLOTS = 16;

// Snapshots of at least this many bytes are compressed by several workers.
const PARALLEL_SNAPSHOT_MIN = 2 * BLOCK_SIZE;

// Threads a pool needs for a parallel snapshot: one uploads, the rest compress.
// With 2 threads only one is left to compress. There the parallel path was no
// faster than one worker that reads, compresses and uploads (96 against
// 185 MB/s in one run on a busy 2-core machine). It also used more memory:
// 700 against 250 MiB RSS for a 768 MiB file.
// NOTE: on 3 threads the parallel path still peaked at 755 MiB RSS for that
// file. Each thread's allocator keeps the freed 4 MiB blocks, so memory is
// bounded by the database size there, not by the blocks in flight.
const PARALLEL_SNAPSHOT_THREADS = 4;

/** Options of the ship pool. */
export interface ShipPoolOptions {
  /** Worker threads; defaults to the number of CPUs, at least 2, at most 8. */
  threads?: number;
}

/** Successful outcome of a ship task. */
export interface ShipStats {
  rawBytes: number;
  storedBytes: number;
  elapsedMs: number;
}

/**
 * The piscina worker pool that compresses and uploads segments and snapshots.
 * Segment buffers move to the worker in the transfer list, not copied.
 */
export class ShipPool {
  /** Worker threads at most. */
  readonly threads: number;
  /**
   * Replicas that may find their position or write their first snapshot at
   * once. A daemon that starts a thousand databases would otherwise list
   * every replica and queue every snapshot in the same moment, and delay
   * everything else on the main thread, lease renewals included.
   */
  readonly startSlots = new Semaphore(START_SLOTS);
  #piscina: Piscina | undefined;
  #snapshotSlot = new Mutex();

  constructor(options: ShipPoolOptions = {}) {
    const threads = options.threads ?? Math.min(8, Math.max(2, os.availableParallelism()));
    this.threads = threads;
  }

  // The workers start with the first task. A restore of a small database
  // then starts none, and no worker is torn down while it still loads.
  get #pool(): Piscina {
    this.#piscina ??= new Piscina({
      filename: new URL('../workers/ship.js', import.meta.url).href,
      minThreads: 1,
      maxThreads: this.threads,
      idleTimeout: 30_000,
    });
    return this.#piscina;
  }

  /** Tasks waiting for a free worker. */
  get queueSize(): number {
    return this.#piscina?.queueSize ?? 0;
  }

  /** Compresses and stores a WAL segment; `task.data` is unusable afterwards. */
  async putSegment(task: PutSegmentTask): Promise<ShipStats> {
    // Transfer needs a buffer of its own: copy when the bytes share one.
    let data = task.data;
    if (data.byteOffset !== 0 || data.byteLength !== data.buffer.byteLength) data = new Uint8Array(data);
    const result: ShipResult = await this.#pool.run({ ...task, data }, { name: 'putSegment', transferList: [data.buffer as ArrayBuffer] });
    return unwrap(result, task.key);
  }

  /**
   * Streams the database file into a snapshot object. A file of several
   * blocks is compressed by several workers at once while another uploads;
   * a small one goes to one worker that does both.
   */
  async putSnapshot(task: PutSnapshotTask): Promise<ShipStats> {
    if (this.threads < PARALLEL_SNAPSHOT_THREADS || task.size < PARALLEL_SNAPSHOT_MIN) {
      const result: ShipResult = await this.#pool.run(task, { name: 'putSnapshot' });
      return unwrap(result, task.key);
    }

    // An upload task keeps its worker busy until the frame is complete, and
    // the compression tasks need the others, so one parallel snapshot runs at a time.
    return this.#snapshotSlot.run(async () => {
      const started = Date.now();
      const { result, storedBytes } = await streamSnapshot(this, task.fd, task.size, (port) =>
        this.#pool.run({ client: task.client, key: task.key, port } satisfies PutStreamTask, { name: 'putStream', transferList: [port] }) as Promise<ShipResult>,
        task.header,
      );
      unwrap(result, task.key);
      return { rawBytes: task.size, storedBytes, elapsedMs: Date.now() - started };
    });
  }

  /**
   * Compresses one raw block of a frame in a worker. A block in shared memory
   * is read there in place; any other moves there and is unusable afterwards.
   */
  async compressBlock(data: Uint8Array): Promise<Uint8Array> {
    let transferList: ArrayBuffer[] = [];
    if (!(data.buffer instanceof SharedArrayBuffer)) {
      if (data.byteOffset !== 0 || data.byteLength !== data.buffer.byteLength) data = new Uint8Array(data);
      transferList = [data.buffer as ArrayBuffer];
    }
    const result: BlockResult = await this.#pool.run({ data }, { name: 'compressBlock', transferList });
    if (result instanceof Uint8Array) return result;
    throw new Error(result.error.message);
  }

  /**
   * Decompresses one LZ4 block in a worker. `data` moves to the worker and is
   * unusable afterwards. A corrupt block rejects with LZ4FrameError.
   */
  async decodeBlock(data: Uint8Array, maxSize: number): Promise<Buffer> {
    if (data.byteOffset !== 0 || data.byteLength !== data.buffer.byteLength) data = new Uint8Array(data);
    const result: BlockResult = await this.#pool.run({ data, maxSize }, { name: 'decodeBlock', transferList: [data.buffer as ArrayBuffer] });
    if (result instanceof Uint8Array) return Buffer.from(result.buffer, result.byteOffset, result.byteLength);
    if (result.error.name === 'LZ4FrameError') throw new LZ4FrameError(result.error.message);
    throw new Error(result.error.message);
  }

  /** Ends the worker threads at once; running uploads are cut off. */
  async destroy(): Promise<void> {
    await this.#piscina?.destroy();
  }

  /** Waits for running tasks and stops the workers. */
  async close(): Promise<void> {
    await this.#piscina?.close();
  }
}

function unwrap(result: ShipResult, key: string): ShipStats {
  if (result.ok) return { rawBytes: result.rawBytes, storedBytes: result.storedBytes, elapsedMs: result.elapsedMs };
  const code = result.error.code as WalshipErrorCode | undefined;
  const message = result.error.message.includes(key) ? result.error.message : `${result.error.message} (key ${key})`;
  if (result.error.name === 'WalshipError' && code) throw new WalshipError(code, message);
  const err = new Error(message);
  err.name = result.error.name;
  throw err;
}

import os from 'node:os';

import { Piscina } from 'piscina';

import { WalshipError } from './errors.js';
import { LZ4FrameError } from './lz4.js';
import type { WalshipErrorCode } from './errors.js';
import type { BlockResult, PutSegmentTask, PutSnapshotTask, ShipResult } from './ship-task.js';

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
  #pool: Piscina;

  constructor(options: ShipPoolOptions = {}) {
    const threads = options.threads ?? Math.min(8, Math.max(2, os.availableParallelism()));
    this.threads = threads;
    this.#pool = new Piscina({
      filename: new URL('../workers/ship.js', import.meta.url).href,
      minThreads: 1,
      maxThreads: threads,
      idleTimeout: 30_000,
    });
  }

  /** Tasks waiting for a free worker. */
  get queueSize(): number {
    return this.#pool.queueSize;
  }

  /** Compresses and stores a WAL segment; `task.data` is unusable afterwards. */
  async putSegment(task: PutSegmentTask): Promise<ShipStats> {
    // Transfer needs a buffer of its own: copy when the bytes share one.
    let data = task.data;
    if (data.byteOffset !== 0 || data.byteLength !== data.buffer.byteLength) data = new Uint8Array(data);
    const result: ShipResult = await this.#pool.run({ ...task, data }, { name: 'putSegment', transferList: [data.buffer as ArrayBuffer] });
    return unwrap(result, task.key);
  }

  /** Streams the database file into a snapshot object. */
  async putSnapshot(task: PutSnapshotTask): Promise<ShipStats> {
    const result: ShipResult = await this.#pool.run(task, { name: 'putSnapshot' });
    return unwrap(result, task.key);
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

  /** Waits for running tasks and stops the workers. */
  async close(): Promise<void> {
    await this.#pool.close();
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

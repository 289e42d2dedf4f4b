import type { MessagePort } from 'node:worker_threads';

import type { CommitTime, SnapshotHeader } from './commit-times.js';
import type { ReplicaClientConfig } from './replica/client.js';

/**
 * Messages between the main thread and the ship workers. Errors lose their
 * class crossing a worker boundary on Node 20, so a task returns a plain
 * result or error record and the main thread rebuilds the error.
 */

/** Compress a WAL segment and store it under `key`. */
export interface PutSegmentTask {
  client: ReplicaClientConfig;
  key: string;
  /** Raw segment bytes; the buffer is transferred, not copied. */
  data: Uint8Array;
  /**
   * Commit times of the segment's transactions, stored in a skippable frame
   * in front of the data frame (see commit-times.ts). Unset stores the data
   * frame alone, as Litestream does.
   */
  commitTimes?: CommitTime[];
}

/** Read the database file through `fd`, compress it as one frame and store it under `key`. */
export interface PutSnapshotTask {
  client: ReplicaClientConfig;
  key: string;
  /** Descriptor of the database file, owned by the main thread. */
  fd: number;
  /** Bytes to read from offset 0. */
  size: number;
  /** Start time and required WAL offset, stored in a skippable frame in front of the data frame. */
  header?: SnapshotHeader;
}

/** Result of a ship task. */
export type ShipResult =
  | { ok: true; rawBytes: number; storedBytes: number; elapsedMs: number }
  | { ok: false; error: { name: string; message: string; code?: string } };

/** Store the frame that arrives through `port` under `key`; see snapshot-stream.ts. */
export interface PutStreamTask {
  client: ReplicaClientConfig;
  key: string;
  /** Transferred to the worker. */
  port: MessagePort;
}

/** Compress one block of an LZ4 frame. */
export interface CompressBlockTask {
  /** Raw block bytes, at most 4 MiB; transferred, not copied. */
  data: Uint8Array;
}

/** Decompress one LZ4 block whose decoded size is at most `maxSize`. */
export interface DecodeBlockTask {
  /** The compressed block; transferred, not copied. */
  data: Uint8Array;
  maxSize: number;
}

/** Result of a block task: the output bytes, or the error record. */
export type BlockResult = Uint8Array | { ok: false; error: { name: string; message: string; code?: string } };

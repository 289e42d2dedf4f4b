import fs from 'node:fs';
import os from 'node:os';

import { FRAME_HEADER_SIZE, WAL_HEADER_SIZE } from '../src/wal.js';
import type { WalMark } from './bench-jobs.js';

/**
 * WAL positions on both sides of replication: where a commit ends in the
 * application's WAL, and when walship reported a replica position past it.
 *
 * The writer reads the end of its commit from the wal-index header at the
 * start of the `-shm` file right after COMMIT returns. That header holds
 * mxFrame (the last committed frame) and the salts of the WAL header, so the
 * commit ends at 32 + mxFrame * (24 + page size) in the WAL incarnation named
 * by salt-1. SQLite adds one to salt-1 at every WAL restart, and walship
 * starts the next WAL index at every restart, so within one generation
 * `index - salt-1` is constant. The benchmark reads that constant from the
 * replica: the segment at offset 0 of an index begins with the WAL header.
 */

// Layout of the wal-index header (SQLite's WalIndexHdr, two copies of 48
// bytes each, in native byte order except the salts, which are kept as the
// big-endian bytes of the WAL header).
const HEADER_COPY = 48;
const WAL_INDEX_VERSION = 3007000;
const OFFSET_PAGE_SIZE = 14;
const OFFSET_MX_FRAME = 16;
const OFFSET_SALT1 = 32;

/** The wal-index header fields the benchmark uses. */
export interface WalIndexHeader {
  /** Salt-1 of the current WAL incarnation. */
  salt: number;
  /** Frames committed in the current incarnation. */
  mxFrame: number;
  /** Byte offset just past the last committed frame. */
  end: number;
}

/** Reads the wal-index header of one database from its `-shm` file. */
export class WalIndexReader {
  readonly pageSize: number;
  #fd: number;
  #buf = Buffer.alloc(2 * HEADER_COPY);
  #littleEndian = os.endianness() === 'LE';

  /** Opens `<dbPath>-shm`, which exists once any connection has read the database in WAL mode. */
  constructor(dbPath: string, pageSize: number) {
    this.#fd = fs.openSync(`${dbPath}-shm`, 'r');
    this.pageSize = pageSize;
  }

  /** Returns the header as SQLite last published it; throws when the file is not a wal-index. */
  read(): WalIndexHeader {
    for (let attempt = 0; attempt < 3; attempt++) {
      fs.readSync(this.#fd, this.#buf, 0, this.#buf.length, 0);
      // SQLite writes the two copies one after the other: equal copies are a finished header.
      if (!this.#buf.subarray(0, HEADER_COPY).equals(this.#buf.subarray(HEADER_COPY))) continue;

      const version = this.#littleEndian ? this.#buf.readUInt32LE(0) : this.#buf.readUInt32BE(0);
      if (version !== WAL_INDEX_VERSION) throw new Error(`wal-index version ${version} is not ${WAL_INDEX_VERSION}: not a SQLite -shm file of a WAL database`);
      const rawPageSize = this.#littleEndian ? this.#buf.readUInt16LE(OFFSET_PAGE_SIZE) : this.#buf.readUInt16BE(OFFSET_PAGE_SIZE);
      // A 65536-byte page is stored as 1, because it does not fit in 16 bits.
      const pageSize = rawPageSize === 1 ? 65536 : rawPageSize;
      if (pageSize !== 0 && pageSize !== this.pageSize) throw new Error(`wal-index page size ${pageSize} differs from the database's ${this.pageSize}`);

      const mxFrame = this.#littleEndian ? this.#buf.readUInt32LE(OFFSET_MX_FRAME) : this.#buf.readUInt32BE(OFFSET_MX_FRAME);
      const salt = this.#buf.readUInt32BE(OFFSET_SALT1);
      return { salt, mxFrame, end: walOffset(mxFrame, this.pageSize) };
    }
    throw new Error('the two copies of the wal-index header differ after three reads; another process is writing the database');
  }

  close(): void {
    fs.closeSync(this.#fd);
  }
}

/** Returns the byte offset just past frame `frames` of a WAL with `pageSize`-byte pages. */
export function walOffset(frames: number, pageSize: number): number {
  return frames === 0 ? 0 : WAL_HEADER_SIZE + frames * (FRAME_HEADER_SIZE + pageSize);
}

/**
 * Counts the WAL bytes that commits append, across WAL restarts: frames,
 * plus the 32-byte header each time a new incarnation starts.
 */
export class WalByteCounter {
  bytes = 0;
  #salt: number;
  #mxFrame: number;
  #pageSize: number;

  constructor(start: WalIndexHeader, pageSize: number) {
    this.#salt = start.salt;
    this.#mxFrame = start.mxFrame;
    this.#pageSize = pageSize;
  }

  /** Adds the bytes between the previous header and `next`. */
  update(next: WalIndexHeader): void {
    if (next.salt === this.#salt) {
      this.bytes += Math.max(0, next.mxFrame - this.#mxFrame) * (FRAME_HEADER_SIZE + this.#pageSize);
    } else {
      this.bytes += walOffset(next.mxFrame, this.#pageSize);
    }
    this.#salt = next.salt;
    this.#mxFrame = next.mxFrame;
  }
}

/** The constant that turns a salt-1 into a WAL index of one generation. */
export interface IndexAnchor {
  generation: string;
  /** A WAL index of the generation... */
  index: number;
  /** ...and salt-1 of the WAL header stored at its offset 0. */
  salt: number;
}

/** Returns the WAL index of a salt-1, counting restarts from the anchor (salt-1 wraps at 2^32). */
export function indexOfSalt(anchor: IndexAnchor, salt: number): number {
  const restarts = (salt - anchor.salt) | 0;
  return anchor.index + restarts;
}

/** Replica positions walship reported as stored, in the order of its log, with their log times. */
export class ShipTimeline {
  readonly times: number[] = [];
  readonly indexes: number[] = [];
  readonly offsets: number[] = [];
  generation = '';
  /** Time of the first snapshot written, which covers every position before its index. */
  snapshotAt: number | undefined;
  snapshotIndex = 0;

  /** Adds one `new transaction:` line; positions of another generation start the timeline over. */
  add(time: number, generation: string, index: number, offset: number): void {
    if (generation !== this.generation) {
      this.generation = generation;
      this.times.length = 0;
      this.indexes.length = 0;
      this.offsets.length = 0;
    }
    this.times.push(time);
    this.indexes.push(index);
    this.offsets.push(offset);
  }

  /** Returns the log time at which the replica first held (index, end), or undefined if it never did. */
  storedAt(index: number, end: number): number | undefined {
    if (this.snapshotAt !== undefined && index < this.snapshotIndex) return this.snapshotAt;

    // Positions only grow along the timeline, so the first entry at or past
    // the position is found by binary search.
    let lo = 0;
    let hi = this.times.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      const before = this.indexes[mid]! < index || (this.indexes[mid] === index && this.offsets[mid]! < end);
      if (before) lo = mid + 1;
      else hi = mid;
    }
    return lo < this.times.length ? this.times[lo] : undefined;
  }

  /** Returns the last position reported, or undefined before any. */
  last(): { index: number; offset: number; time: number } | undefined {
    const n = this.times.length;
    if (n === 0) return undefined;
    return { index: this.indexes[n - 1]!, offset: this.offsets[n - 1]!, time: this.times[n - 1]! };
  }
}

/** Lag of one commit: milliseconds from COMMIT until stored, or undefined when it was never stored. */
export function lagOf(mark: WalMark, anchor: IndexAnchor, timeline: ShipTimeline): number | undefined {
  const stored = timeline.storedAt(indexOfSalt(anchor, mark.salt), mark.end);
  return stored === undefined ? undefined : Math.max(0, stored - mark.t);
}

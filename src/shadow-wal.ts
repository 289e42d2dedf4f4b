import fs from 'node:fs';
import path from 'node:path';

import { WalshipError } from './errors.js';
import { formatIndex } from './pos.js';
import { WAL_HEADER_SIZE, frameSize, parseWalHeader, verifyFrame } from './wal.js';
import type { WalHeader } from './wal.js';

/**
 * The shadow WAL of one WAL index: SQLite's WAL header of that incarnation
 * followed by the committed, checksum-valid frames walship copied from the
 * real `-wal` file, at the same byte offsets. It only grows by whole
 * transactions and is fsynced before walship lets a checkpoint overwrite the
 * frames it holds, so uploads can resume from it after a crash.
 *
 * All file I/O here is synchronous on purpose: walship calls it while holding
 * SQLite's write lock, and an application writing from the same thread must
 * never find that lock held across an await.
 *
 * A shadow file that is still empty stands for an index whose WAL header has
 * not appeared yet (the generation started while the WAL was missing or empty).
 */
export class ShadowWal {
  readonly index: number;
  readonly path: string;
  /** Raw 32-byte WAL header, or undefined while the file is empty. */
  headerBytes: Buffer | undefined;
  header: WalHeader | undefined;
  /** Bytes in the file; always 0 or the end of a commit frame. */
  size = 0;
  /** Running checksum after the last frame, the value the next frame chains from. */
  checksum: [number, number] = [0, 0];

  private constructor(index: number, filePath: string) {
    this.index = index;
    this.path = filePath;
  }

  /** Returns the path of the shadow file of `index` inside a generation's shadow directory. */
  static pathFor(dir: string, index: number): string {
    return path.join(dir, `${formatIndex(index)}.wal`);
  }

  /** Creates an empty shadow file for `index`, replacing any file of that name. */
  static create(dir: string, index: number): ShadowWal {
    const shadow = new ShadowWal(index, ShadowWal.pathFor(dir, index));
    fs.mkdirSync(dir, { recursive: true });
    fs.writeFileSync(shadow.path, Buffer.alloc(0));
    fsyncPath(dir);
    return shadow;
  }

  /**
   * Opens an existing shadow file and scans it to its last commit frame. A
   * tail torn by a crash (part of a frame, or frames without their commit)
   * is cut off, since it was never reported as copied.
   */
  static open(dir: string, index: number): ShadowWal {
    const shadow = new ShadowWal(index, ShadowWal.pathFor(dir, index));
    const data = fs.readFileSync(shadow.path);
    if (data.length < WAL_HEADER_SIZE) {
      if (data.length > 0) fs.truncateSync(shadow.path, 0);
      return shadow;
    }

    const header = parseWalHeader(data);
    if (!header) throw new Error(`shadow WAL ${shadow.path} has an invalid header`);
    shadow.setHeader(data.subarray(0, WAL_HEADER_SIZE), header);

    // Walk the frames and keep everything up to the last valid commit frame.
    const size = frameSize(header.pageSize);
    let sums: [number, number] = [header.checksum1, header.checksum2];
    let committedEnd = WAL_HEADER_SIZE;
    let committedSums = sums;
    for (let off = WAL_HEADER_SIZE; off + size <= data.length; off += size) {
      const frame = data.subarray(off, off + size);
      const next = verifyFrame(header, frame, sums[0], sums[1]);
      if (!next) break;
      sums = next;
      if (frame.readUInt32BE(4) !== 0) {
        committedEnd = off + size;
        committedSums = sums;
      }
    }
    if (committedEnd < data.length) fs.truncateSync(shadow.path, committedEnd);
    shadow.size = committedEnd;
    shadow.checksum = committedSums;
    return shadow;
  }

  /** Number of frames in the file. */
  get frameCount(): number {
    if (!this.header || this.size <= WAL_HEADER_SIZE) return 0;
    return (this.size - WAL_HEADER_SIZE) / frameSize(this.header.pageSize);
  }

  /** Writes the WAL header into an empty shadow file. */
  writeHeader(bytes: Buffer, header: WalHeader): void {
    if (this.size !== 0) throw new Error(`shadow WAL ${this.path} already has a header`);
    this.append(bytes.subarray(0, WAL_HEADER_SIZE));
    this.setHeader(bytes.subarray(0, WAL_HEADER_SIZE), header);
  }

  /** Appends whole committed frames and records the checksum they end with. */
  appendFrames(frames: Buffer, checksum: [number, number]): void {
    this.append(frames);
    this.checksum = checksum;
  }

  /** Reads the last frame in the file, or undefined when it contains none. */
  readLastFrame(): Buffer | undefined {
    if (!this.header || this.frameCount === 0) return undefined;
    const size = frameSize(this.header.pageSize);
    return readRange(this.path, this.size - size, size);
  }

  /** Reads up to `length` bytes from `offset`. */
  read(offset: number, length: number): Buffer {
    return readRange(this.path, offset, length);
  }

  private setHeader(bytes: Buffer, header: WalHeader): void {
    this.headerBytes = Buffer.from(bytes);
    this.header = header;
    this.size = Math.max(this.size, WAL_HEADER_SIZE);
    this.checksum = [header.checksum1, header.checksum2];
  }

  // Appends at the recorded size and fsyncs, so the file never contains bytes
  // that the in-memory state does not account for.
  private append(data: Buffer): void {
    try {
      const fd = fs.openSync(this.path, 'r+');
      try {
        let written = 0;
        while (written < data.length) {
          written += fs.writeSync(fd, data, written, data.length - written, this.size + written);
        }
        fs.fsyncSync(fd);
      } finally {
        fs.closeSync(fd);
      }
    } catch (err) {
      throw localStateError(err, this.path);
    }
    this.size += data.length;
  }
}

/**
 * Wraps a write error of walship's local state so that its message names the
 * file and what to do. The shadow WAL lives in the database's meta directory.
 */
export function localStateError(err: unknown, filePath: string): Error {
  const code = (err as NodeJS.ErrnoException).code;
  const dir = path.dirname(filePath);
  let advice = 'check the meta directory';
  if (code === 'ENOSPC' || code === 'EDQUOT') advice = `free space on the disk of ${dir}, or set meta-path to a directory on another disk`;
  else if (code === 'EROFS') advice = `${dir} is on a read-only file system: set meta-path to a writable directory`;
  else if (code === 'EACCES' || code === 'EPERM') advice = `walship may not write to ${dir}: fix its permissions, or set meta-path to a writable directory`;
  const message = err instanceof Error ? err.message : String(err);
  return new WalshipError('IO_ERROR', `cannot write walship's local state ${filePath}: ${message}; ${advice}`, { cause: err });
}

/** Reads `length` bytes at `offset` of a file; fewer when the file ends first. */
export function readRange(filePath: string, offset: number, length: number): Buffer {
  const fd = fs.openSync(filePath, 'r');
  try {
    const buf = Buffer.allocUnsafeSlow(length);
    let total = 0;
    while (total < length) {
      const bytesRead = fs.readSync(fd, buf, total, length - total, offset + total);
      if (bytesRead === 0) break;
      total += bytesRead;
    }
    return total === length ? buf : buf.subarray(0, total);
  } finally {
    fs.closeSync(fd);
  }
}

/** Fsyncs a directory so that a file created or renamed in it survives a crash. */
export function fsyncPath(dir: string): void {
  const fd = fs.openSync(dir, 'r');
  try {
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
}


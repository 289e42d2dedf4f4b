import fs from 'node:fs';

import { ShadowWal, readRange } from './shadow-wal.js';
import { WAL_HEADER_SIZE, alignToFrame, frameSize, parseWalHeader, sameWalHeader, verifyFrame } from './wal.js';
import type { WalHeader } from './wal.js';

/** State of the real WAL: its header (when valid) and size. */
export interface WalState {
  headerBytes: Buffer | undefined;
  header: WalHeader | undefined;
  size: number;
}

/**
 * Outcome of comparing the real WAL with the current shadow WAL:
 * - `continue`: same incarnation; copy any new frames.
 * - `wait`: nothing usable yet (no WAL header, or a WAL truncated after walship
 *   had copied all of it).
 * - `restart`: SQLite restarted the WAL and nothing walship needed was lost;
 *   finish the current index and start the next one.
 * - `new-generation`: continuity cannot be proven, and `reason` names the cause.
 */
export type Verdict =
  | { kind: 'continue' }
  | { kind: 'wait' }
  | { kind: 'restart' }
  | { kind: 'new-generation'; reason: string };

// Frames read from the WAL per read call while copying.
const READ_FRAMES = 256;
// Committed bytes collected before they are appended to the shadow file.
const APPEND_BYTES = 8 * 1024 * 1024;

/** Reads the real WAL's header and size. A missing WAL reads as size 0. */
export function readWalState(walPath: string): WalState {
  let size: number;
  try {
    size = fs.statSync(walPath).size;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return { headerBytes: undefined, header: undefined, size: 0 };
    throw err;
  }
  if (size < WAL_HEADER_SIZE) return { headerBytes: undefined, header: undefined, size };

  const headerBytes = readRange(walPath, 0, WAL_HEADER_SIZE);
  return { headerBytes, header: parseWalHeader(headerBytes), size };
}

/**
 * Decides whether the real WAL still continues the shadow WAL. `complete`
 * means that the shadow contains the whole incarnation and that SQLite had
 * checkpointed all of it, so a restart or truncation afterwards loses nothing.
 */
export function verifyWal(walPath: string, wal: WalState, shadow: ShadowWal, complete: boolean): Verdict {
  // An empty shadow waits for the first header of its index. Walship's read
  // transaction kept anyone from checkpointing frames it has not seen, so the
  // first header that appears starts the index.
  if (!shadow.header) return { kind: wal.header ? 'continue' : 'wait' };

  const headerChanged = !wal.header || !sameWalHeader(wal.header, shadow.header);
  if (complete && headerChanged) return { kind: wal.header ? 'restart' : 'wait' };

  if (!wal.header) return { kind: 'new-generation', reason: 'wal truncated by another process' };
  if (alignToFrame(wal.size, shadow.header.pageSize) < shadow.size && !headerChanged) {
    return { kind: 'new-generation', reason: 'wal truncated by another process' };
  }
  if (headerChanged && shadow.frameCount === 0) {
    return { kind: 'new-generation', reason: 'wal header only, mismatched' };
  }

  // The last copied frame must still sit at its offset: if it was overwritten,
  // frames after it may be gone too, and the copy cannot be proven whole.
  const last = shadow.readLastFrame();
  if (last) {
    const offset = shadow.size - last.length;
    const real = offset + last.length <= wal.size ? readRange(walPath, offset, last.length) : Buffer.alloc(0);
    if (!real.equals(last)) return { kind: 'new-generation', reason: 'wal overwritten by another process' };
  }

  return { kind: headerChanged ? 'restart' : 'continue' };
}

/**
 * Copies the committed, checksum-valid frames that follow the shadow's end in
 * the real WAL into the shadow file. Copying stops at the first frame whose
 * salts or checksum do not chain (a frame being written, or one left from an
 * earlier incarnation). That is the normal end, not an error. Returns the bytes
 * appended.
 */
export function copyFrames(walPath: string, shadow: ShadowWal): number {
  const header = shadow.header;
  if (!header) return 0;

  const fsz = frameSize(header.pageSize);
  const walSize = alignToFrame(statSize(walPath) ?? 0, header.pageSize);
  const start = shadow.size;
  let offset = start;
  let sums = shadow.checksum;
  let pending: Buffer[] = [];
  let pendingBytes = 0;
  let uncommitted: Buffer[] = [];
  let uncommittedBytes = 0;
  let appended = 0;

  while (offset + fsz <= walSize) {
    const count = Math.min(READ_FRAMES, (walSize - offset) / fsz);
    const batch = readRange(walPath, offset, count * fsz);
    let stopped = false;

    for (let at = 0; at + fsz <= batch.length; at += fsz) {
      const frame = batch.subarray(at, at + fsz);
      const next = verifyFrame(header, frame, sums[0], sums[1]);
      if (!next) {
        stopped = true;
        break;
      }
      sums = next;
      uncommitted.push(frame);
      uncommittedBytes += fsz;
      offset += fsz;

      // A commit frame makes everything collected so far safe to append.
      if (frame.readUInt32BE(4) !== 0) {
        pending.push(...uncommitted);
        pendingBytes += uncommittedBytes;
        uncommitted = [];
        uncommittedBytes = 0;
        if (pendingBytes >= APPEND_BYTES) {
          shadow.appendFrames(Buffer.concat(pending, pendingBytes), sums);
          appended += pendingBytes;
          pending = [];
          pendingBytes = 0;
        }
      }
    }
    if (stopped || batch.length < count * fsz) break;
  }

  if (pendingBytes > 0) {
    const end = shadow.size + pendingBytes;
    // The checksum to continue from is the one at the last commit frame.
    const commitSums = checksumAt(pending[pending.length - 1]!);
    shadow.appendFrames(Buffer.concat(pending, pendingBytes), commitSums);
    appended += pendingBytes;
    if (shadow.size !== end) throw new Error(`shadow WAL ${shadow.path} size ${shadow.size} after append, expected ${end}`);
  }
  return appended;
}

/** Returns the cumulative checksum stored in a frame's header. */
function checksumAt(frame: Buffer): [number, number] {
  return [frame.readUInt32BE(16), frame.readUInt32BE(20)];
}

function statSize(filePath: string): number | undefined {
  try {
    return fs.statSync(filePath).size;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
}

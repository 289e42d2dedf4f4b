import { skippableFrame } from './lz4.js';
import type { Pos } from './pos.js';
import { FRAME_HEADER_SIZE, WAL_HEADER_SIZE, frameSize } from './wal.js';

/**
 * Commit times of the transactions in one WAL segment, stored where
 * Litestream does not look: a skippable LZ4 frame in front of the segment's
 * data frame. The LZ4 frame format lets readers skip such frames, and both
 * Litestream v0.3 (pierrec/lz4 v4) and the `lz4` command line tool do, so a
 * segment with commit times restores with either.
 *
 * A commit time is the wall-clock time at which walship captured the commit
 * frame into its shadow WAL. A file event wakes that sync at once, and the
 * monitor interval bounds the wait when events are lost. So a recorded time
 * is never earlier than the real commit, and later by at most one sync. A point-in-time restore
 * to T therefore never includes a transaction committed after T, and can
 * miss one committed in that last moment before T.
 *
 * Payload layout, little-endian:
 *
 *   "WSCT"   4 bytes   tag
 *   version  1 byte    1
 *   count    4 bytes   number of entries
 *   base     8 bytes   time of the first entry, ms since the Unix epoch
 *   count × (end 4 bytes, delta 4 bytes)
 *
 * `end` is the byte offset within the decompressed segment just past a commit
 * frame. `delta` is the time in ms since the previous entry (0 for the first).
 * An empty list is valid: the segment ends inside a long transaction.
 */

/** Magic number of walship's commit-time skippable frame (one of the 16 skippable magics). */
export const COMMIT_TIMES_MAGIC = 0x184d2a57;

const TAG = Buffer.from('WSCT', 'latin1');
const VERSION = 1;
const HEAD_SIZE = TAG.length + 1 + 4 + 8;
const ENTRY_SIZE = 8;
const MAX_DELTA = 0xffffffff;

/** One committed transaction of a segment. */
export interface CommitTime {
  /** Byte offset within the decompressed segment just past the commit frame. */
  end: number;
  /** Capture time in ms since the Unix epoch. */
  at: number;
}

/**
 * Finds the commit frames of a WAL segment and returns the offset just past
 * each one within the segment. A segment at offset 0 of its index starts with
 * the WAL header. A frame commits when its "database size after commit"
 * header field is not 0.
 */
export function findCommitEnds(data: Uint8Array, segmentOffset: number, pageSize: number): number[] {
  const buf = Buffer.from(data.buffer, data.byteOffset, data.byteLength);
  const size = frameSize(pageSize);
  const ends: number[] = [];
  for (let at = segmentOffset === 0 ? WAL_HEADER_SIZE : 0; at + size <= buf.length; at += size) {
    if (at + FRAME_HEADER_SIZE > buf.length) break;
    if (buf.readUInt32BE(at + 4) !== 0) ends.push(at + size);
  }
  return ends;
}

/**
 * Returns the commit times of the segment `data` that starts at `pre`.
 * `capturedAt(pos)` returns when the first byte past `pos` was captured, as
 * DB.capturedAt does. A commit without a recorded time (captured by an
 * earlier process, for instance) gets `now`, the upload time, which is later
 * than its capture. Times never decrease along
 * the segment, so a clock step back cannot reorder transactions.
 */
export function segmentCommitTimes(
  data: Uint8Array,
  pre: Pos,
  pageSize: number,
  capturedAt: (pos: Pos) => number | undefined,
  now = Date.now(),
): CommitTime[] {
  const times: CommitTime[] = [];
  let last = -Infinity;
  for (const end of findCommitEnds(data, pre.offset, pageSize)) {
    // The commit frame's last byte is the one whose capture time counts.
    const captured = capturedAt({ generation: pre.generation, index: pre.index, offset: pre.offset + end - 1 });
    const at = Math.max(last, Math.min(captured ?? now, now));
    times.push({ end, at });
    last = at;
  }
  return times;
}

/** Encodes commit times as a complete skippable LZ4 frame. */
export function encodeCommitTimes(times: readonly CommitTime[]): Buffer {
  const payload = Buffer.alloc(HEAD_SIZE + times.length * ENTRY_SIZE);
  TAG.copy(payload, 0);
  payload.writeUInt8(VERSION, 4);
  payload.writeUInt32LE(times.length, 5);
  const base = times[0]?.at ?? 0;
  payload.writeBigUInt64LE(BigInt(Math.max(0, Math.round(base))), 9);

  let previous = base;
  let at = HEAD_SIZE;
  for (const time of times) {
    // Entries are in segment order with non-decreasing times. A delta that
    // breaks this is clamped to the u32 range rather than wrapped.
    const delta = Math.min(MAX_DELTA, Math.max(0, Math.round(time.at - previous)));
    payload.writeUInt32LE(time.end, at);
    payload.writeUInt32LE(delta, at + 4);
    previous += delta;
    at += ENTRY_SIZE;
  }
  return skippableFrame(COMMIT_TIMES_MAGIC, payload);
}

/**
 * Decodes the payload of a skippable frame with COMMIT_TIMES_MAGIC. Returns
 * undefined for a payload that is not walship's (another tag or version, or
 * a length that does not match its count), so that a foreign skippable frame
 * with the same magic is ignored rather than misread.
 */
export function decodeCommitTimes(payload: Buffer): CommitTime[] | undefined {
  if (payload.length < HEAD_SIZE || !payload.subarray(0, TAG.length).equals(TAG)) return undefined;
  if (payload.readUInt8(4) !== VERSION) return undefined;
  const count = payload.readUInt32LE(5);
  if (payload.length !== HEAD_SIZE + count * ENTRY_SIZE) return undefined;

  let time = Number(payload.readBigUInt64LE(9));
  const times: CommitTime[] = [];
  for (let i = 0, at = HEAD_SIZE; i < count; i++, at += ENTRY_SIZE) {
    time += payload.readUInt32LE(at + 4);
    times.push({ end: payload.readUInt32LE(at), at: time });
  }
  return times;
}

/**
 * Magic number of walship's snapshot skippable frame, in front of a
 * snapshot's data frame. It records when the snapshot began, to the
 * millisecond, where S3 lists object times in whole seconds, and how much of
 * its WAL index a restore must apply on top of it.
 */
export const SNAPSHOT_TIME_MAGIC = 0x184d2a58;

const SNAPSHOT_TAG = Buffer.from('WSST', 'latin1');
// Version 1 has the time only; version 2 adds the WAL offset.
const SNAPSHOT_V1_PAYLOAD_SIZE = SNAPSHOT_TAG.length + 1 + 8;
const SNAPSHOT_V2_PAYLOAD_SIZE = SNAPSHOT_V1_PAYLOAD_SIZE + 8;

/** Fields walship records in front of a snapshot. */
export interface SnapshotHeader {
  /** When the snapshot began, in ms since the Unix epoch. Every transaction in it committed before then. */
  takenAt: number;
  /**
   * Byte offset in the snapshot's WAL index up to which a restore must apply
   * segments. SQLite may have checkpointed frames up to there into the
   * database file while the snapshot read it, so the snapshot alone can mix
   * pages of different transactions. Undefined for a version 1 frame.
   */
  walOffset?: number;
}

/** Encodes a snapshot's start time and required WAL offset as a skippable frame. */
export function encodeSnapshotHeader(info: SnapshotHeader): Buffer {
  const payload = Buffer.alloc(SNAPSHOT_V2_PAYLOAD_SIZE);
  SNAPSHOT_TAG.copy(payload, 0);
  payload.writeUInt8(2, 4);
  payload.writeBigUInt64LE(BigInt(Math.max(0, Math.round(info.takenAt))), 5);
  payload.writeBigUInt64LE(BigInt(Math.max(0, info.walOffset ?? 0)), 13);
  return skippableFrame(SNAPSHOT_TIME_MAGIC, payload);
}

/**
 * Decodes a frame written by encodeSnapshotHeader, or the version 1 frame of
 * earlier walship releases, from the first bytes of a snapshot object.
 * Returns undefined when they contain no such frame.
 */
export function decodeSnapshotHeader(head: Uint8Array): SnapshotHeader | undefined {
  const buf = Buffer.from(head.buffer, head.byteOffset, head.byteLength);
  if (buf.length < 8 || buf.readUInt32LE(0) !== SNAPSHOT_TIME_MAGIC) return undefined;
  const size = buf.readUInt32LE(4);
  if (buf.length < 8 + size) return undefined;
  return decodeSnapshotHeaderPayload(buf.subarray(8, 8 + size));
}

/** Decodes the payload of a snapshot skippable frame (without its magic and size). */
export function decodeSnapshotHeaderPayload(payload: Buffer): SnapshotHeader | undefined {
  const size = payload.length;
  if (size !== SNAPSHOT_V1_PAYLOAD_SIZE && size !== SNAPSHOT_V2_PAYLOAD_SIZE) return undefined;
  if (!payload.subarray(0, SNAPSHOT_TAG.length).equals(SNAPSHOT_TAG)) return undefined;
  const version = payload.readUInt8(4);
  const takenAt = Number(payload.readBigUInt64LE(5));
  if (version === 1 && size === SNAPSHOT_V1_PAYLOAD_SIZE) return { takenAt };
  if (version === 2 && size === SNAPSHOT_V2_PAYLOAD_SIZE) return { takenAt, walOffset: Number(payload.readBigUInt64LE(13)) };
  return undefined;
}

/** Bytes at the start of a snapshot object that contain its header frame, when it has one. */
export const SNAPSHOT_HEADER_FRAME_SIZE = 8 + SNAPSHOT_V2_PAYLOAD_SIZE;

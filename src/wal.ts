/**
 * SQLite WAL file layout: the 32-byte header, 24-byte frame headers and the
 * cumulative checksum that chains every frame to the one before it.
 * All fields are big-endian; the magic chooses the byte order of the words
 * the checksum reads.
 */

/** Size of the WAL header in bytes. */
export const WAL_HEADER_SIZE = 32;

/** Size of a frame header in bytes; the page image follows it. */
export const FRAME_HEADER_SIZE = 24;

const MAGIC_LE = 0x377f0682;
const LITTLE_ENDIAN_HOST = new Uint8Array(new Uint32Array([1]).buffer)[0] === 1;
const MAGIC_BE = 0x377f0683;
const WAL_FORMAT_VERSION = 3007000;

/** A parsed WAL header. */
export interface WalHeader {
  bigEndianChecksum: boolean;
  pageSize: number;
  checkpointSeq: number;
  salt1: number;
  salt2: number;
  checksum1: number;
  checksum2: number;
}

/** A parsed frame header. */
export interface FrameHeader {
  pgno: number;
  /** Database size in pages after this frame's commit; 0 for a frame that does not commit. */
  commit: number;
  salt1: number;
  salt2: number;
  checksum1: number;
  checksum2: number;
}

/** Returns the size of one frame (header and page) for a page size. */
export function frameSize(pageSize: number): number {
  return FRAME_HEADER_SIZE + pageSize;
}

/** Rounds a WAL byte length down to the end of its last whole frame. */
export function alignToFrame(length: number, pageSize: number): number {
  if (length < WAL_HEADER_SIZE) return 0;
  const frames = Math.floor((length - WAL_HEADER_SIZE) / frameSize(pageSize));
  return WAL_HEADER_SIZE + frames * frameSize(pageSize);
}

/**
 * Parses and verifies a WAL header. Returns undefined when the bytes are not a
 * valid header: wrong magic or version, an impossible page size, or a header
 * checksum that does not match.
 */
export function parseWalHeader(buf: Uint8Array): WalHeader | undefined {
  if (buf.length < WAL_HEADER_SIZE) return undefined;
  const view = new DataView(buf.buffer, buf.byteOffset, WAL_HEADER_SIZE);

  const magic = view.getUint32(0);
  if (magic !== MAGIC_LE && magic !== MAGIC_BE) return undefined;
  if (view.getUint32(4) !== WAL_FORMAT_VERSION) return undefined;

  const pageSize = view.getUint32(8);
  if (pageSize < 512 || pageSize > 65536 || (pageSize & (pageSize - 1)) !== 0) return undefined;

  const header: WalHeader = {
    bigEndianChecksum: magic === MAGIC_BE,
    pageSize,
    checkpointSeq: view.getUint32(12),
    salt1: view.getUint32(16),
    salt2: view.getUint32(20),
    checksum1: view.getUint32(24),
    checksum2: view.getUint32(28),
  };

  // The header checksum covers bytes 0..23 and starts from zero.
  const [s1, s2] = walChecksum(header.bigEndianChecksum, buf.subarray(0, 24), 0, 0);
  if (s1 !== header.checksum1 || s2 !== header.checksum2) return undefined;
  return header;
}

/** Parses a 24-byte frame header without validating it. */
export function parseFrameHeader(buf: Uint8Array): FrameHeader {
  const view = new DataView(buf.buffer, buf.byteOffset, FRAME_HEADER_SIZE);
  return {
    pgno: view.getUint32(0),
    commit: view.getUint32(4),
    salt1: view.getUint32(8),
    salt2: view.getUint32(12),
    checksum1: view.getUint32(16),
    checksum2: view.getUint32(20),
  };
}

/**
 * Computes SQLite's WAL checksum over `data` (a multiple of 8 bytes), starting
 * from `(s1, s2)`. Words are read in the byte order the WAL magic selects.
 */
export function walChecksum(bigEndian: boolean, data: Uint8Array, s1: number, s2: number): [number, number] {
  if (data.length % 8 !== 0) throw new Error(`WAL checksum input length ${data.length} is not a multiple of 8`);

  // Little-endian words on a little-endian host read fastest through a typed
  // array, which needs a 4-byte aligned offset.
  if (!bigEndian && LITTLE_ENDIAN_HOST && data.byteOffset % 4 === 0) {
    const words = new Uint32Array(data.buffer, data.byteOffset, data.length / 4);
    for (let i = 0; i < words.length; i += 2) {
      s1 = (s1 + words[i]! + s2) >>> 0;
      s2 = (s2 + words[i + 1]! + s1) >>> 0;
    }
    return [s1, s2];
  }

  const view = new DataView(data.buffer, data.byteOffset, data.length);
  const littleEndian = !bigEndian;

  for (let i = 0; i < data.length; i += 8) {
    s1 = (s1 + view.getUint32(i, littleEndian) + s2) >>> 0;
    s2 = (s2 + view.getUint32(i + 4, littleEndian) + s1) >>> 0;
  }
  return [s1, s2];
}

/**
 * Checks one frame against the header salts and the running checksum, and
 * returns the checksum to continue from, or undefined when the frame is not
 * valid. `frame` contains the frame header followed by the page image.
 */
export function verifyFrame(header: WalHeader, frame: Uint8Array, s1: number, s2: number): [number, number] | undefined {
  const fh = parseFrameHeader(frame);
  if (fh.salt1 !== header.salt1 || fh.salt2 !== header.salt2) return undefined;
  if (fh.pgno === 0) return undefined;

  // The checksum covers frame-header bytes 0..7, then the page, never the salts.
  let sums = walChecksum(header.bigEndianChecksum, frame.subarray(0, 8), s1, s2);
  sums = walChecksum(header.bigEndianChecksum, frame.subarray(FRAME_HEADER_SIZE), sums[0], sums[1]);
  if (sums[0] !== fh.checksum1 || sums[1] !== fh.checksum2) return undefined;
  return sums;
}

/** Reports whether two WAL headers are byte-identical in their identifying fields. */
export function sameWalHeader(a: WalHeader, b: WalHeader): boolean {
  return (
    a.salt1 === b.salt1 &&
    a.salt2 === b.salt2 &&
    a.checkpointSeq === b.checkpointSeq &&
    a.checksum1 === b.checksum1 &&
    a.checksum2 === b.checksum2 &&
    a.pageSize === b.pageSize
  );
}

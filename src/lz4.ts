import { compressSync, uncompressSync } from 'lz4-napi';
import xxhash from 'xxhash-wasm';

/**
 * LZ4 frame format (lz4 spec v1.6.1) written and read one block at a time, so
 * a multi-GiB snapshot streams through bounded memory. lz4-napi compresses
 * single blocks; the frame around them is assembled here.
 *
 * Frames carry the same descriptor the Go library behind Litestream writes by
 * default: independent 4 MiB blocks, no block checksums, a content checksum
 * (xxh32, seed 0) after the end mark. Every object walship stores is one such frame.
 */

/** Bytes of input that go into one block. */
export const BLOCK_SIZE = 4 * 1024 * 1024;

const MAGIC = 0x184d2204;
const SKIPPABLE_MIN = 0x184d2a50;
const SKIPPABLE_MAX = 0x184d2a5f;
const UNCOMPRESSED_BIT = 0x80000000;

/** Largest skippable frame payload LZ4FrameReader hands out; larger ones are skipped unread. */
export const SKIPPABLE_PAYLOAD_MAX = 1024 * 1024;
const BLOCK_MAX_SIZES: Record<number, number> = { 4: 64 << 10, 5: 256 << 10, 6: 1 << 20, 7: 4 << 20 };

// FLG 0x64: version 01, independent blocks, content checksum. BD 0x70: 4 MiB blocks.
// The third byte is the header checksum, (xxh32(FLG, BD) >> 8) & 0xff.
const FRAME_HEADER = Buffer.from([0x04, 0x22, 0x4d, 0x18, 0x64, 0x70, 0xb9]);

type Hasher = Awaited<ReturnType<typeof xxhash>>;
let hasherPromise: Promise<Hasher> | undefined;

/** Loads the xxHash WebAssembly module once per thread. */
export function loadHasher(): Promise<Hasher> {
  hasherPromise ??= xxhash();
  return hasherPromise;
}

/** An error in an LZ4 frame: truncated, malformed, or failing its checksum. */
export class LZ4FrameError extends Error {
  override name = 'LZ4FrameError';
}

/**
 * Encodes input as one LZ4 frame, block by block. Call `push` for every piece
 * of input in order, then `finish`; each call returns the frame bytes that are
 * ready. Input is cut into 4 MiB blocks whatever the size of the pieces.
 */
export class LZ4FrameEncoder {
  #hash: ReturnType<Hasher['create32']>;
  #pending: Buffer[] = [];
  #pendingBytes = 0;
  #started = false;

  constructor(hasher: Hasher) {
    this.#hash = hasher.create32(0);
  }

  /**
   * Adds input and returns the encoded blocks that are complete. The encoder
   * keeps references to input it has not encoded yet, so callers must not
   * change a buffer after passing it.
   */
  push(input: Uint8Array): Buffer[] {
    const out: Buffer[] = [];
    if (!this.#started) {
      out.push(FRAME_HEADER);
      this.#started = true;
    }
    if (input.length === 0) return out;
    this.#hash.update(input);
    let data = Buffer.from(input.buffer, input.byteOffset, input.length);

    // Complete a block started by earlier input.
    if (this.#pendingBytes > 0) {
      const take = data.subarray(0, BLOCK_SIZE - this.#pendingBytes);
      this.#pending.push(take);
      this.#pendingBytes += take.length;
      data = data.subarray(take.length);
      if (this.#pendingBytes < BLOCK_SIZE) return out;
      out.push(...encodeBlock(Buffer.concat(this.#pending, this.#pendingBytes)));
      this.#pending = [];
      this.#pendingBytes = 0;
    }

    // Whole blocks straight from the input, without copying.
    while (data.length >= BLOCK_SIZE) {
      out.push(...encodeBlock(data.subarray(0, BLOCK_SIZE)));
      data = data.subarray(BLOCK_SIZE);
    }
    if (data.length > 0) {
      this.#pending.push(data);
      this.#pendingBytes = data.length;
    }
    return out;
  }

  /** Flushes the last block, the end mark and the content checksum. */
  finish(): Buffer[] {
    const out: Buffer[] = [];
    if (!this.#started) {
      out.push(FRAME_HEADER);
      this.#started = true;
    }
    if (this.#pendingBytes > 0) {
      out.push(...encodeBlock(Buffer.concat(this.#pending, this.#pendingBytes)));
      this.#pending = [];
      this.#pendingBytes = 0;
    }
    out.push(frameTrailer(this.#hash.digest()));
    return out;
  }
}

/** Returns a copy of the frame header walship writes: magic and descriptor. */
export function frameHeader(): Buffer {
  return Buffer.from(FRAME_HEADER);
}

/** Returns the end of a frame: the end mark and the content checksum `checksum`. */
export function frameTrailer(checksum: number): Buffer {
  const trailer = Buffer.alloc(8);
  trailer.writeUInt32LE(checksum >>> 0, 4);
  return trailer;
}

/**
 * Compresses one block and returns its size word and data; the data is the
 * input itself when compression would not shrink it.
 */
export function encodeBlock(block: Buffer): Buffer[] {
  // lz4-napi prepends the uncompressed size as 4 bytes; the frame format does not use it.
  const compressed = compressSync(block).subarray(4);
  const size = Buffer.alloc(4);
  if (compressed.length < block.length) {
    size.writeUInt32LE(compressed.length);
    return [size, compressed];
  }
  size.writeUInt32LE((block.length | UNCOMPRESSED_BIT) >>> 0);
  return [size, block];
}

/** Encodes a whole buffer as one LZ4 frame. */
export async function encodeFrame(input: Uint8Array): Promise<Buffer> {
  const enc = new LZ4FrameEncoder(await loadHasher());
  return Buffer.concat([...enc.push(input), ...enc.finish()]);
}

/** One section of an LZ4 frame, as LZ4FrameReader returns it. */
export type FrameItem =
  /** A data block: LZ4-compressed, or stored as is when `uncompressed`. */
  | { kind: 'block'; data: Buffer; uncompressed: boolean }
  /** The end of the frame, with its stored content checksum when it has one. */
  | { kind: 'end'; checksum: number | undefined }
  /** A skippable frame before the data frame: its magic number and payload, when at most SKIPPABLE_PAYLOAD_MAX bytes. */
  | { kind: 'skippable'; magic: number; payload: Buffer };

/**
 * Splits one LZ4 frame fed in arbitrary pieces into its blocks without
 * decompressing them, so that callers can decompress blocks elsewhere, in
 * worker threads for instance. Bytes after the first frame are ignored, as
 * Litestream's reader does. Skippable frames before it are returned as
 * `skippable` items (or skipped unread when large), never decoded as data.
 */
export class LZ4FrameReader {
  #hasher: Hasher;
  #buf: Buffer = Buffer.alloc(0);
  #chunks: Buffer[] = [];
  #chunkBytes = 0;
  #state: 'magic' | 'skip' | 'descriptor' | 'block' | 'checksum' | 'done' = 'magic';
  #skip = 0;
  #skipMagic = 0;
  #skipParts: Buffer[] | undefined;
  #blockChecksum = false;
  #contentChecksum = false;
  #blockMax = BLOCK_SIZE;
  #sawInput = false;

  constructor(hasher: Hasher) {
    this.#hasher = hasher;
  }

  /** Largest decoded size of one block, from the frame descriptor. */
  get blockMax(): number {
    return this.#blockMax;
  }

  /** Adds frame bytes and returns the sections they complete. */
  push(input: Uint8Array): FrameItem[] {
    if (input.length > 0) this.#sawInput = true;
    if (this.#state === 'done' || input.length === 0) return [];
    // Pieces wait in a list until a section needs them, so many small pieces
    // cost one copy each rather than a copy of everything buffered per piece.
    this.#chunks.push(Buffer.from(input));
    this.#chunkBytes += input.length;
    const out: FrameItem[] = [];
    while (this.#step(out));
    return out;
  }

  /**
   * Checks that the frame is complete. `decoded` is the decoded length so
   * far, for the message. An empty input is an empty frame.
   */
  finish(decoded: number): void {
    if (this.#state === 'done') return;
    if (!this.#sawInput) return;
    throw new LZ4FrameError(`truncated LZ4 frame: input ended in the ${this.#state} section after ${decoded} decoded bytes`);
  }

  // Makes at least `n` bytes contiguous in #buf, if that many have arrived.
  #need(n: number): boolean {
    if (this.#buf.length >= n) return true;
    if (this.#buf.length + this.#chunkBytes < n) return false;
    this.#buf = Buffer.concat([this.#buf, ...this.#chunks]);
    this.#chunks = [];
    this.#chunkBytes = 0;
    return true;
  }

  #step(out: FrameItem[]): boolean {
    switch (this.#state) {
      case 'magic': {
        if (!this.#need(4)) return false;
        const magic = this.#buf.readUInt32LE(0);
        if (magic >= SKIPPABLE_MIN && magic <= SKIPPABLE_MAX) {
          if (!this.#need(8)) return false;
          this.#skip = this.#buf.readUInt32LE(4);
          this.#skipMagic = magic;
          this.#skipParts = this.#skip <= SKIPPABLE_PAYLOAD_MAX ? [] : undefined;
          this.#consume(8);
          this.#state = 'skip';
          return true;
        }
        if (magic !== MAGIC) throw new LZ4FrameError(`not an LZ4 frame: magic 0x${magic.toString(16)}`);
        this.#consume(4);
        this.#state = 'descriptor';
        return true;
      }
      case 'skip': {
        this.#need(Math.min(this.#skip, this.#buf.length + this.#chunkBytes));
        const n = Math.min(this.#skip, this.#buf.length);
        // A copy, because #buf is a view of pieces that later pushes release.
        this.#skipParts?.push(Buffer.from(this.#buf.subarray(0, n)));
        this.#consume(n);
        this.#skip -= n;
        if (this.#skip > 0) return false;
        if (this.#skipParts !== undefined) out.push({ kind: 'skippable', magic: this.#skipMagic, payload: Buffer.concat(this.#skipParts) });
        this.#skipParts = undefined;
        this.#state = 'magic';
        return true;
      }
      case 'descriptor':
        return this.#readDescriptor();
      case 'block':
        return this.#readBlock(out);
      case 'checksum': {
        if (!this.#need(4)) return false;
        out.push({ kind: 'end', checksum: this.#buf.readUInt32LE(0) });
        this.#consume(4);
        this.#state = 'done';
        return false;
      }
      case 'done':
        return false;
    }
  }

  #readDescriptor(): boolean {
    if (!this.#need(2)) return false;
    const flg = this.#buf[0]!;
    const bd = this.#buf[1]!;
    if (flg >> 6 !== 1) throw new LZ4FrameError(`unsupported LZ4 frame version ${flg >> 6}`);
    const hasContentSize = (flg & 0x08) !== 0;
    const hasDictId = (flg & 0x01) !== 0;
    const length = 2 + (hasContentSize ? 8 : 0) + (hasDictId ? 4 : 0) + 1;
    if (!this.#need(length)) return false;
    const buf = this.#buf;
    if (hasDictId) throw new LZ4FrameError('LZ4 frames with a dictionary id are not supported');

    const hc = (this.#hasher.h32Raw(buf.subarray(0, length - 1), 0) >>> 8) & 0xff;
    if (hc !== buf[length - 1]) throw new LZ4FrameError('LZ4 frame header checksum mismatch');

    const blockMax = BLOCK_MAX_SIZES[(bd >> 4) & 0x7];
    if (blockMax === undefined) throw new LZ4FrameError(`invalid LZ4 block size code ${(bd >> 4) & 0x7}`);
    this.#blockMax = blockMax;
    this.#blockChecksum = (flg & 0x10) !== 0;
    this.#contentChecksum = (flg & 0x04) !== 0;
    this.#consume(length);
    this.#state = 'block';
    return true;
  }

  #readBlock(out: FrameItem[]): boolean {
    if (!this.#need(4)) return false;
    const word = this.#buf.readUInt32LE(0);

    // The end mark: a zero size, then the content checksum when the frame has one.
    if (word === 0) {
      this.#consume(4);
      if (this.#contentChecksum) {
        this.#state = 'checksum';
        return true;
      }
      out.push({ kind: 'end', checksum: undefined });
      this.#state = 'done';
      return false;
    }

    const size = word & ~UNCOMPRESSED_BIT & 0xffffffff;
    if (size > this.#blockMax) throw new LZ4FrameError(`LZ4 block of ${size} bytes exceeds the frame's ${this.#blockMax}-byte maximum`);
    const total = 4 + size + (this.#blockChecksum ? 4 : 0);
    if (!this.#need(total)) return false;

    out.push({ kind: 'block', data: this.#buf.subarray(4, 4 + size), uncompressed: (word & UNCOMPRESSED_BIT) !== 0 });
    this.#consume(total);
    return true;
  }

  #consume(n: number): void {
    this.#buf = this.#buf.subarray(n);
  }
}

/**
 * Verifies the content checksum of a frame whose decoded bytes are passed to
 * `update` in order. Shared by the in-thread and the worker-pool decoders.
 */
export class ContentChecksum {
  #hash: ReturnType<Hasher['create32']>;

  constructor(hasher: Hasher) {
    this.#hash = hasher.create32(0);
  }

  /** Adds decoded bytes, in frame order. */
  update(decoded: Uint8Array): void {
    this.#hash.update(decoded);
  }

  /** Throws LZ4FrameError when the stored checksum differs from the decoded bytes' one. */
  check(stored: number | undefined): void {
    if (stored === undefined) return;
    const actual = this.#hash.digest() >>> 0;
    if (stored !== actual) {
      throw new LZ4FrameError(`LZ4 content checksum mismatch: stored 0x${stored.toString(16)}, computed 0x${actual.toString(16)}`);
    }
  }
}

/**
 * Decodes one LZ4 frame fed in arbitrary pieces, in this thread. `push`
 * returns decoded output as it becomes available; `finish` throws unless the
 * frame ended with a valid end mark and content checksum.
 */
export class LZ4FrameDecoder {
  #reader: LZ4FrameReader;
  #checksum: ContentChecksum;
  #total = 0;

  constructor(hasher: Hasher) {
    this.#reader = new LZ4FrameReader(hasher);
    this.#checksum = new ContentChecksum(hasher);
  }

  /** Total decoded bytes so far. */
  get decodedBytes(): number {
    return this.#total;
  }

  /** Adds frame bytes and returns the decoded data they complete. */
  push(input: Uint8Array): Buffer[] {
    const out: Buffer[] = [];
    for (const item of this.#reader.push(input)) {
      if (item.kind === 'skippable') continue;
      if (item.kind === 'end') {
        this.#checksum.check(item.checksum);
        continue;
      }
      const decoded = item.uncompressed ? Buffer.from(item.data) : decodeBlock(item.data, this.#reader.blockMax);
      this.#checksum.update(decoded);
      this.#total += decoded.length;
      out.push(decoded);
    }
    return out;
  }

  /** Checks that the frame is complete; an empty input decodes as empty. */
  finish(): void {
    this.#reader.finish(this.#total);
  }
}

/** Decompresses one raw LZ4 block whose output is at most `maxSize` bytes. */
export function decodeBlock(data: Buffer, maxSize: number): Buffer {
  // lz4-napi reads the output size from a 4-byte prefix; the maximum block size
  // serves as an upper bound and the result has the real length.
  const prefixed = Buffer.alloc(4 + data.length);
  prefixed.writeUInt32LE(maxSize, 0);
  data.copy(prefixed, 4);
  try {
    return uncompressSync(prefixed);
  } catch (err) {
    throw new LZ4FrameError(`corrupt LZ4 block: ${(err as Error).message}`, { cause: err });
  }
}

/** Returns a skippable frame with magic `magic` (0x184d2a50 to 0x184d2a5f) around `payload`. */
export function skippableFrame(magic: number, payload: Uint8Array): Buffer {
  if (magic < SKIPPABLE_MIN || magic > SKIPPABLE_MAX) throw new RangeError(`0x${magic.toString(16)} is not a skippable frame magic number`);
  const header = Buffer.alloc(8);
  header.writeUInt32LE(magic, 0);
  header.writeUInt32LE(payload.length, 4);
  return Buffer.concat([header, payload]);
}

/** Decodes a whole LZ4 frame held in memory. */
export async function decodeFrame(input: Uint8Array): Promise<Buffer> {
  const dec = new LZ4FrameDecoder(await loadHasher());
  const out = dec.push(input);
  dec.finish();
  return Buffer.concat(out);
}

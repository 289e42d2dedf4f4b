import { randomFillSync } from 'node:crypto';

// Distinct row bodies, cycled. Bodies repeat only every 4 MiB, far beyond
// LZ4's 64 KiB match window, so repetition cannot inflate the compression ratio.
const BODY_POOL_SIZE = 4096;

/**
 * Builds the row bodies: half random bytes, half a repeated line of text
 * that starts with the body's number. LZ4 compresses them about 2 to 1; the
 * benchmark reports the ratio it measures.
 */
export function makeBodies(rowBytes: number): Buffer[] {
  const bodies: Buffer[] = [];
  const randomBytes = Math.floor(rowBytes / 2);
  for (let i = 0; i < BODY_POOL_SIZE; i++) {
    const body = Buffer.alloc(rowBytes);
    randomFillSync(body, 0, randomBytes);
    body.fill(`row ${i} status=active region=eu-west note=lorem ipsum dolor sit amet; `, randomBytes);
    bodies.push(body);
  }
  return bodies;
}

/** Returns `bytes` of row bodies laid end to end: the sample the LZ4 calibration compresses. */
export function rowSample(bytes: number, rowBytes: number): Buffer {
  const bodies = makeBodies(rowBytes);
  const sample = Buffer.alloc(bytes);
  for (let offset = 0, i = 0; offset < bytes; offset += rowBytes, i++) bodies[i % bodies.length]!.copy(sample, offset);
  return sample;
}

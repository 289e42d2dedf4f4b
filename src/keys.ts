import path from 'node:path/posix';

import { formatIndex } from './pos.js';

/**
 * Object keys of the Litestream v0.3 replica layout, built and parsed in one place:
 *
 *   <prefix>/generations/<16 hex>/snapshots/<8 hex index>.snapshot.lz4
 *   <prefix>/generations/<16 hex>/wal/<8 hex index>_<8 hex offset>.wal.lz4
 *
 * Litestream's listings match base names against these exact patterns, so any
 * other file in the tree (temporary files, uppercase hex) stays invisible.
 *
 * walship's own state beside the replica lives under `<prefix>/walship/`. Litestream
 * v0.3 lists only `generations/`, and v0.5 only `generations/` and `ltx/`, so neither
 * lists it, and `walship` is no 16-hex-digit generation name.
 */

const GENERATION_RE = /^[0-9a-f]{16}$/;
const SNAPSHOT_RE = /^([0-9a-f]{8})\.snapshot\.lz4$/;
// Litestream v0.3.11 and v0.5.16 accept exactly 8 offset digits. walship reads
// up to 16, so an incarnation past 4 GiB written by Litestream still restores.
const SEGMENT_RE = /^([0-9a-f]{8})_([0-9a-f]{8,16})\.wal\.lz4$/;

/** Largest WAL index of a generation; Litestream starts a new generation at it. */
export const MAX_INDEX = 0x7fffffff;

/** Reports whether a name is a generation name: exactly 16 lowercase hex digits. */
export function isGeneration(name: string): boolean {
  return GENERATION_RE.test(name);
}

/** Returns the key of the `generations/` folder under a replica prefix. */
export function generationsKey(prefix: string): string {
  return joinKey(prefix, 'generations');
}

/** Returns the key of one generation's folder. */
export function generationKey(prefix: string, generation: string): string {
  return joinKey(prefix, 'generations', generation);
}

/** Returns the key of a generation's `snapshots/` folder. */
export function snapshotsKey(prefix: string, generation: string): string {
  return joinKey(generationKey(prefix, generation), 'snapshots');
}

/** Returns the key of a generation's `wal/` folder. */
export function segmentsKey(prefix: string, generation: string): string {
  return joinKey(generationKey(prefix, generation), 'wal');
}

/** Returns the key of the snapshot taken at `index`. */
export function snapshotKey(prefix: string, generation: string, index: number): string {
  return joinKey(snapshotsKey(prefix, generation), `${formatIndex(index)}.snapshot.lz4`);
}

/** Returns the key of the WAL segment starting at byte `offset` of WAL index `index`. */
export function segmentKey(prefix: string, generation: string, index: number, offset: number): string {
  const name = `${formatIndex(index)}_${offset.toString(16).padStart(8, '0')}.wal.lz4`;
  return joinKey(segmentsKey(prefix, generation), name);
}

/**
 * Returns the key of the lease object that names the one process allowed to
 * write under `prefix`. Litestream v0.5's own lease object is `<prefix>/lock.json`
 * with another format, so walship uses a different key.
 */
export function leaseKey(prefix: string): string {
  return joinKey(prefix, 'walship', 'lease.json');
}

/** Parses a snapshot base name into its index, or returns undefined for any other name. */
export function parseSnapshotName(name: string): number | undefined {
  const m = SNAPSHOT_RE.exec(name);
  return m ? parseInt(m[1]!, 16) : undefined;
}

/** Parses a WAL segment base name into its index and offset, or returns undefined. */
export function parseSegmentName(name: string): { index: number; offset: number } | undefined {
  const m = SEGMENT_RE.exec(name);
  if (!m) return undefined;
  return { index: parseInt(m[1]!, 16), offset: parseInt(m[2]!, 16) };
}

/** Joins key parts with `/`, dropping empty parts so that an empty prefix yields `generations/...`. */
export function joinKey(...parts: string[]): string {
  const kept = parts.filter((p) => p !== '');
  if (kept.length === 0) return '';
  return path.join(...kept);
}

import path from 'node:path/posix';

import { WalshipError } from '../errors.js';
import {
  generationsKey,
  isGeneration,
  parseSegmentName,
  parseSnapshotName,
  segmentKey,
  segmentsKey,
  snapshotKey,
  snapshotsKey,
} from '../keys.js';
import type { ReplicaClient } from './client.js';

/**
 * Listings of a replica in the Litestream v0.3 layout: generations, and the
 * snapshots and WAL segments of one generation. Keys are relative to the
 * client's root, so every key built here uses an empty prefix.
 */

/** One snapshot object of a generation. */
export interface SnapshotInfo {
  generation: string;
  /** WAL index current when the snapshot was taken. */
  index: number;
  /** Stored (compressed) size in bytes. */
  size: number;
  /** Store timestamp of the object. */
  createdAt: Date;
  key: string;
}

/** One WAL segment object of a generation. */
export interface SegmentInfo {
  generation: string;
  /** WAL index the segment belongs to. */
  index: number;
  /** Byte offset of the segment's first byte inside its WAL index. */
  offset: number;
  /** Stored (compressed) size in bytes. */
  size: number;
  /** Store timestamp of the object. */
  createdAt: Date;
  key: string;
}

/** Oldest and newest object time of a generation. */
export interface GenerationBounds {
  createdAt: Date;
  updatedAt: Date;
}

/**
 * Lists the generations of a replica, sorted by name. Only folders under
 * `generations/` named with exactly 16 lowercase hex digits count.
 */
export async function listGenerations(client: ReplicaClient): Promise<string[]> {
  const listing = await client.list(folder(generationsKey('')), { delimiter: true });

  const names = listing.prefixes.map((prefix) => path.basename(prefix));
  return names.filter(isGeneration).sort();
}

/** Lists the snapshots of a generation, sorted by index. */
export async function listSnapshots(client: ReplicaClient, generation: string): Promise<SnapshotInfo[]> {
  const listing = await client.list(folder(snapshotsKey('', generation)));

  const snapshots: SnapshotInfo[] = [];
  for (const object of listing.objects) {
    const index = parseSnapshotName(path.basename(object.key));
    // Matching the whole key drops objects in nested folders that share a base name.
    if (index === undefined || object.key !== snapshotKey('', generation, index)) continue;
    snapshots.push({ generation, index, size: object.size, createdAt: object.lastModified, key: object.key });
  }
  return snapshots.sort((a, b) => a.index - b.index);
}

/**
 * Lists the WAL segments of a generation, sorted by index, then offset.
 * The sort is numeric, because key order stops matching numeric order once an
 * offset needs more than 8 hex digits.
 */
export async function listSegments(client: ReplicaClient, generation: string): Promise<SegmentInfo[]> {
  const listing = await client.list(folder(segmentsKey('', generation)));

  const segments: SegmentInfo[] = [];
  for (const object of listing.objects) {
    const parsed = parseSegmentName(path.basename(object.key));
    if (parsed === undefined || object.key !== segmentKey('', generation, parsed.index, parsed.offset)) continue;
    segments.push({ generation, ...parsed, size: object.size, createdAt: object.lastModified, key: object.key });
  }
  return segments.sort((a, b) => a.index - b.index || a.offset - b.offset);
}

/**
 * Returns the oldest and newest object time over a generation's snapshots and
 * WAL segments. Rejects with NOT_FOUND when the generation has neither.
 */
export async function generationBounds(client: ReplicaClient, generation: string): Promise<GenerationBounds> {
  const bounds = await findBounds(client, generation);
  if (bounds === undefined) {
    throw new WalshipError('NOT_FOUND', `generation ${generation} has no snapshots or WAL segments in ${client.location}`);
  }
  return bounds;
}

/**
 * Returns the generation whose newest object is the most recent, or undefined
 * when the replica has no generation with objects. On equal times the first
 * generation in name order wins.
 */
export async function findLatestGeneration(client: ReplicaClient): Promise<string | undefined> {
  const generations = await listGenerations(client);
  const bounds = await Promise.all(generations.map((generation) => findBounds(client, generation)));

  let latest: string | undefined;
  let latestTime = -Infinity;
  for (let i = 0; i < generations.length; i++) {
    const updatedAt = bounds[i]?.updatedAt.getTime();
    if (updatedAt === undefined || updatedAt <= latestTime) continue;
    latest = generations[i];
    latestTime = updatedAt;
  }
  return latest;
}

/** Computes a generation's bounds, or undefined when it contains no objects. */
async function findBounds(client: ReplicaClient, generation: string): Promise<GenerationBounds | undefined> {
  const [snapshots, segments] = await Promise.all([listSnapshots(client, generation), listSegments(client, generation)]);
  const times = [...snapshots, ...segments].map((object) => object.createdAt.getTime());
  if (times.length === 0) return undefined;

  // A loop instead of Math.min(...times), which overflows the stack on very long listings.
  let min = Infinity;
  let max = -Infinity;
  for (const time of times) {
    min = Math.min(min, time);
    max = Math.max(max, time);
  }
  return { createdAt: new Date(min), updatedAt: new Date(max) };
}

/** Storage use and newest activity of one database folder, `<name>/` under a client's root. */
export interface DatabaseFolderInfo {
  /** Folder name, without the trailing `/`. */
  name: string;
  /** Generation whose newest snapshot or WAL segment is the most recent; undefined when the folder has none. */
  generation?: string;
  /** Store time of that newest snapshot or WAL segment. */
  updatedAt?: Date;
  /** Objects under the folder at any depth, walship's own objects and unknown files included. */
  objects: number;
  /** Sum of the stored sizes of those objects, in bytes. */
  bytes: number;
}

// Database folders whose contents are listed at once.
const FOLDER_LISTINGS_IN_FLIGHT = 8;

/**
 * Lists the database folders directly under a client's root: each folder
 * `<name>/` that contains `<name>/generations/`, sorted by name. Only
 * delimiter listings are used, one for the root and one per folder.
 */
export async function listDatabaseFolders(client: ReplicaClient): Promise<string[]> {
  const root = await client.list('', { delimiter: true });
  const names = root.prefixes.map((prefix) => prefix.replace(/\/$/, ''));

  const isDatabase = await mapLimited(names, FOLDER_LISTINGS_IN_FLIGHT, async (name) => {
    const children = await client.list(folder(name), { delimiter: true });
    return children.prefixes.includes(folder(generationsKey(name)));
  });
  return names.filter((_name, i) => isDatabase[i]).sort();
}

/**
 * Lists every object under the folder `<name>/` and sums them up: object
 * count, bytes stored, and the generation with the newest snapshot or WAL
 * segment. On equal times the first generation in name order wins, as in
 * findLatestGeneration.
 */
export async function describeDatabaseFolder(client: ReplicaClient, name: string): Promise<DatabaseFolderInfo> {
  const listing = await client.list(folder(name));

  const info: DatabaseFolderInfo = { name, objects: 0, bytes: 0 };
  const newest = new Map<string, number>();
  for (const object of listing.objects) {
    info.objects++;
    info.bytes += object.size;

    const generation = generationOfKey(name, object.key);
    if (generation !== undefined) newest.set(generation, Math.max(newest.get(generation) ?? -Infinity, object.lastModified.getTime()));
  }

  for (const generation of [...newest.keys()].sort()) {
    const time = newest.get(generation)!;
    if (info.updatedAt !== undefined && time <= info.updatedAt.getTime()) continue;
    info.generation = generation;
    info.updatedAt = new Date(time);
  }
  return info;
}

/** Returns the generation of a snapshot or WAL segment key under `prefix`, or undefined for any other key. */
function generationOfKey(prefix: string, key: string): string | undefined {
  const parts = key.split('/');
  const generation = parts.at(-3);
  const base = parts.at(-1)!;
  if (generation === undefined || !isGeneration(generation)) return undefined;

  // Rebuilding the key from its parsed parts rejects names in other places or with other spellings.
  const index = parseSnapshotName(base);
  if (index !== undefined && key === snapshotKey(prefix, generation, index)) return generation;
  const segment = parseSegmentName(base);
  if (segment !== undefined && key === segmentKey(prefix, generation, segment.index, segment.offset)) return generation;
  return undefined;
}

/** Maps items with at most `limit` calls in flight, keeping the input order. */
async function mapLimited<T, R>(items: readonly T[], limit: number, fn: (item: T) => Promise<R>): Promise<R[]> {
  const results: R[] = new Array<R>(items.length);
  let next = 0;
  const workers = Array.from({ length: Math.min(limit, items.length) }, async () => {
    while (next < items.length) {
      const i = next++;
      results[i] = await fn(items[i]!);
    }
  });
  await Promise.all(workers);
  return results;
}

/** Turns a folder key into a listing prefix, so that `wal` does not also match `wal-old/`. */
function folder(key: string): string {
  return `${key}/`;
}

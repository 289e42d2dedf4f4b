import { SNAPSHOT_HEADER_FRAME_SIZE, decodeSnapshotHeader } from '../commit-times.js';
import { WalshipError } from '../errors.js';
import { isGeneration, MAX_INDEX } from '../keys.js';
import { formatIndex } from '../pos.js';
import type { ReplicaClient } from '../replica/client.js';
import { listGenerations, listSegments, listSnapshots } from '../replica/listing.js';
import type { SegmentInfo, SnapshotInfo } from '../replica/listing.js';

/** The WAL segments of one WAL index, in offset order. */
export interface WalIndexPlan {
  index: number;
  segments: SegmentInfo[];
}

/** Objects a restore downloads: one snapshot, then whole WAL indexes in order. */
export interface RestorePlan {
  generation: string;
  snapshot: SnapshotInfo;
  /**
   * Consecutive WAL indexes starting at the snapshot's index; empty for a
   * snapshot-only restore. With a timestamp, these run to the end of the
   * generation: where to stop is only known once the segments' commit times
   * are read.
   */
  indexes: WalIndexPlan[];
  /** Highest WAL index the generation holds, whether or not the plan reaches it. */
  lastIndex: number;
  /** Newest object time of the generation: its latest activity. */
  updatedAt: Date;
  /** Point in time to restore, when one was requested. */
  timestamp?: Date;
  /** The newest index, left out of a latest-state restore because its first segment is missing. */
  skippedIndex?: WalIndexPlan;
}

/** Backup to restore. An unset field means "the latest". */
export interface PlanTarget {
  generation?: string;
  /** Last WAL index to apply; the snapshot is the one with the highest index at or below it. */
  index?: number;
  /** Restore the state after the last transaction committed at or before this time. */
  timestamp?: Date;
}

/** The listing of one generation, taken once per restore. */
interface GenerationListing {
  generation: string;
  snapshots: SnapshotInfo[];
  segments: SegmentInfo[];
  /** Oldest and newest object time, or undefined for an empty generation. */
  createdAt?: Date;
  updatedAt?: Date;
}

/**
 * Chooses the generation, snapshot and WAL segments of a restore and checks
 * that the segments form an unbroken chain from the snapshot: indexes follow
 * one another without a gap and each index has a segment at offset 0.
 * Offsets within an index are checked while decoding, because each one must
 * equal the decompressed length of the segments before it. Each generation's
 * snapshots and segments are listed once.
 */
export async function planRestore(client: ReplicaClient, target: PlanTarget): Promise<RestorePlan> {
  checkTarget(target);
  const listing = await chooseGeneration(client, target);
  const { generation, snapshots, segments } = listing;

  const snapshot =
    target.timestamp === undefined
      ? chooseSnapshot(snapshots, generation, target.index, client.location)
      : await chooseSnapshotAt(client, snapshots, generation, target.timestamp);

  const chosen = segments.filter((s) => s.index >= snapshot.index && (target.index === undefined || s.index <= target.index));
  const indexes = groupByIndex(chosen);

  // For the latest state, a newest index without its first segment holds
  // only segments stored past an upload that did not finish (see
  // applyWalIndexes): the latest state ends before that index. Not so for
  // the snapshot's own index: the snapshot may contain pages of that index's
  // transactions, which only a replay of the index from its start makes whole.
  let skippedIndex: WalIndexPlan | undefined;
  const newest = indexes.at(-1);
  const latest = target.index === undefined && target.timestamp === undefined;
  if (latest && newest !== undefined && newest.index > snapshot.index && newest.segments[0]!.offset !== 0) {
    skippedIndex = indexes.pop();
  }
  checkChain(indexes, snapshot);

  const lastIndex = segments.reduce((max, s) => Math.max(max, s.index), snapshot.index);
  return {
    generation,
    snapshot,
    indexes,
    lastIndex,
    updatedAt: listing.updatedAt ?? snapshot.createdAt,
    ...(target.timestamp ? { timestamp: target.timestamp } : {}),
    ...(skippedIndex ? { skippedIndex } : {}),
  };
}

/** Rejects a malformed generation name, index or timestamp before anything is listed. */
function checkTarget(target: PlanTarget): void {
  if (target.generation !== undefined && !isGeneration(target.generation)) {
    throw new WalshipError(
      'INVALID_INPUT',
      `invalid generation "${target.generation}": a generation name is 16 lowercase hex digits`,
    );
  }
  const index = target.index;
  if (index !== undefined && (!Number.isInteger(index) || index < 0 || index > MAX_INDEX)) {
    throw new WalshipError('INVALID_INPUT', `invalid WAL index ${index}: expected an integer from 0 to ${MAX_INDEX}`);
  }
  if (target.timestamp !== undefined && Number.isNaN(target.timestamp.getTime())) {
    throw new WalshipError('INVALID_INPUT', 'invalid timestamp: expected a valid date');
  }
  if (target.timestamp !== undefined && index !== undefined) {
    throw new WalshipError('INVALID_INPUT', 'a timestamp and a WAL index cannot both be the target of one restore; give one of them');
  }
}

/**
 * Returns the listing of the generation to restore: the requested one once it
 * is known to exist, else the one with the latest activity (see pickLatest),
 * considering only generations that hold a snapshot, since nothing else can
 * be restored. With a timestamp, see chooseGenerationAt.
 */
async function chooseGeneration(client: ReplicaClient, target: PlanTarget): Promise<GenerationListing> {
  const names = await listGenerations(client);

  if (target.generation !== undefined) {
    if (!names.includes(target.generation)) {
      throw new WalshipError('NOT_FOUND', `generation ${target.generation} not found in ${client.location}; check the name, or leave out -generation to restore the newest generation`);
    }
    const listing = await listGeneration(client, target.generation);
    if (target.timestamp !== undefined) checkRestorableAt([listing], target.timestamp, client.location);
    return listing;
  }

  const listings = await listAll(client, names);
  const nonEmpty = listings.filter((l) => l.updatedAt !== undefined);
  if (nonEmpty.length === 0) throw new WalshipError('NO_GENERATION', `no backups found in ${client.location}`);

  const restorable = nonEmpty.filter((l) => l.snapshots.length > 0);
  if (restorable.length === 0) {
    const latest = pickLatest(nonEmpty);
    // walship stores a generation's first segments before its first snapshot,
    // so such a generation may still be starting: no backup exists yet.
    throw new WalshipError(
      'NO_GENERATION',
      `no backups found in ${client.location}: generation ${latest.generation} has WAL segments but no snapshot yet, so nothing can be restored from it`,
    );
  }
  if (target.timestamp !== undefined) return chooseGenerationAt(restorable, target.timestamp, client.location);
  return pickLatest(restorable);
}

/**
 * Chooses the generation to restore at time `at` among generations with a
 * snapshot. Restorable at `at` are those whose oldest snapshot was stored at
 * or before it. Of those, the ones still active at `at` (newest object at or
 * after it) compete by latest activity, as in Litestream v0.3. When none was
 * active, `at` falls after every generation or between two. Then the one with
 * the latest activity contains the newest state before `at`. Litestream
 * v0.3.11 rejects such a time, but walship restores it.
 */
function chooseGenerationAt(listings: GenerationListing[], at: Date, location: string): GenerationListing {
  checkRestorableAt(listings, at, location);
  const restorable = listings.filter((l) => l.snapshots[0]!.createdAt.getTime() <= at.getTime());
  const active = restorable.filter((l) => l.updatedAt!.getTime() >= at.getTime());
  return pickLatest(active.length > 0 ? active : restorable);
}

/**
 * Rejects a time before the oldest snapshot of every listed generation, with
 * an error that names the earliest restorable time.
 */
function checkRestorableAt(listings: GenerationListing[], at: Date, location: string): void {
  let earliest: SnapshotInfo | undefined;
  for (const listing of listings) {
    for (const snapshot of listing.snapshots) {
      if (earliest === undefined || snapshot.createdAt < earliest.createdAt) earliest = snapshot;
    }
  }
  if (earliest === undefined) {
    const generation = listings.length === 1 ? ` in generation ${listings[0]!.generation}` : '';
    throw new WalshipError('NOT_FOUND', `no snapshots available${generation} of ${location}`);
  }
  if (earliest.createdAt.getTime() > at.getTime()) {
    throw new WalshipError(
      'NOT_FOUND',
      `timestamp ${at.toISOString()} is before the first snapshot in ${location}; ` +
        `the earliest restorable time is ${earliest.createdAt.toISOString()} (generation ${earliest.generation})`,
    );
  }
}

/**
 * Returns the generation with the latest activity: the newest object time.
 * Stores that keep whole seconds make ties likely. A tie goes to the
 * generation whose oldest object is newer, because the generation started
 * later replaced the other. A remaining tie goes to the higher name, so the
 * choice never depends on listing order.
 */
function pickLatest(listings: GenerationListing[]): GenerationListing {
  let best = listings[0]!;
  for (const listing of listings.slice(1)) {
    const order =
      listing.updatedAt!.getTime() - best.updatedAt!.getTime() ||
      listing.createdAt!.getTime() - best.createdAt!.getTime() ||
      (listing.generation > best.generation ? 1 : -1);
    if (order > 0) best = listing;
  }
  return best;
}

// Generations listed at once when choosing among them.
const LIST_CONCURRENCY = 8;

/** Lists every generation's snapshots and segments, a few generations at a time. */
async function listAll(client: ReplicaClient, names: string[]): Promise<GenerationListing[]> {
  const listings: GenerationListing[] = new Array(names.length);
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < names.length) {
      const i = next++;
      listings[i] = await listGeneration(client, names[i]!);
    }
  };
  await Promise.all(Array.from({ length: Math.min(LIST_CONCURRENCY, names.length) }, worker));
  return listings;
}

/** Lists one generation's snapshots and segments and computes its time bounds. */
async function listGeneration(client: ReplicaClient, generation: string): Promise<GenerationListing> {
  const [snapshots, segments] = await Promise.all([listSnapshots(client, generation), listSegments(client, generation)]);

  // A loop instead of Math.min(...times), which overflows the stack on very long listings.
  let min = Infinity;
  let max = -Infinity;
  for (const object of [...snapshots, ...segments]) {
    const time = object.createdAt.getTime();
    min = Math.min(min, time);
    max = Math.max(max, time);
  }
  const bounds = max === -Infinity ? {} : { createdAt: new Date(min), updatedAt: new Date(max) };
  return { generation, snapshots, segments, ...bounds };
}

/**
 * Returns the snapshot with the highest index, or the highest at or below
 * `index`. Within a generation a later snapshot never has a lower index, so
 * the highest index is also the newest, and the choice does not depend on
 * store timestamps, which a copied replica may lose.
 */
function chooseSnapshot(snapshots: SnapshotInfo[], generation: string, index: number | undefined, location: string): SnapshotInfo {
  const eligible = index === undefined ? snapshots : snapshots.filter((s) => s.index <= index);
  const snapshot = eligible.at(-1);
  if (snapshot !== undefined) return snapshot;

  const bound = index === undefined ? '' : ` at or below index ${formatIndex(index)}`;
  throw new WalshipError('NOT_FOUND', `no snapshots available${bound} in generation ${generation} of ${location}`);
}

/**
 * Returns the snapshot with the highest index among those taken at or before
 * `at`. A snapshot contains only transactions committed before it was taken,
 * so applying the WAL up to the cut never leaves a later change in the file.
 *
 * walship writes the time a snapshot began in front of its data. S3 lists
 * times in whole seconds, rounded down, so that time is read for a snapshot
 * listed in the same second as `at`. A snapshot without it (one Litestream
 * wrote) counts as taken at the end of its listed second.
 *
 * NOTE: a Litestream snapshot's time comes from the store's clock and commit
 * times from the host's, so a skew larger than one sync can mix states.
 */
async function chooseSnapshotAt(client: ReplicaClient, snapshots: SnapshotInfo[], generation: string, at: Date): Promise<SnapshotInfo> {
  const target = at.getTime();
  for (let i = snapshots.length - 1; i >= 0; i--) {
    const snapshot = snapshots[i]!;
    const listed = snapshot.createdAt.getTime();
    if (listed > target) continue;
    if (latestStoreTime(snapshot.createdAt) <= target) return snapshot;
    const exact = await readSnapshotTime(client, snapshot.key);
    if (exact !== undefined && exact <= target) return snapshot;
  }

  const earliest = snapshots.reduce<SnapshotInfo | undefined>((a, s) => (a === undefined || s.createdAt < a.createdAt ? s : a), undefined);
  let hint = '';
  if (earliest !== undefined) {
    const exact = await readSnapshotTime(client, earliest.key);
    hint = `; the earliest restorable time is ${new Date(exact ?? latestStoreTime(earliest.createdAt)).toISOString()}`;
  }
  throw new WalshipError('NOT_FOUND', `no snapshot of generation ${generation} in ${client.location} was taken at or before ${at.toISOString()}${hint}`);
}

/**
 * Reads the time a walship snapshot began from the first bytes of the object,
 * or undefined for a snapshot without it (one that Litestream wrote).
 */
async function readSnapshotTime(client: ReplicaClient, key: string): Promise<number | undefined> {
  const stream = await client.getStream(key);
  try {
    const parts: Buffer[] = [];
    let length = 0;
    for await (const chunk of stream) {
      parts.push(chunk as Buffer);
      length += (chunk as Buffer).length;
      if (length >= SNAPSHOT_HEADER_FRAME_SIZE) break;
    }
    return decodeSnapshotHeader(Buffer.concat(parts, length))?.takenAt;
  } finally {
    stream.destroy();
  }
}

/**
 * Returns the latest moment an object could have been stored, in ms: a time
 * on a whole second may stand for any moment up to 999 ms later.
 */
function latestStoreTime(createdAt: Date): number {
  const ms = createdAt.getTime();
  return ms % 1000 === 0 ? ms + 999 : ms;
}

/** Groups segments that are sorted by index and offset into one entry per index. */
function groupByIndex(segments: SegmentInfo[]): WalIndexPlan[] {
  const groups: WalIndexPlan[] = [];
  for (const segment of segments) {
    const last = groups.at(-1);
    if (last !== undefined && last.index === segment.index) last.segments.push(segment);
    else groups.push({ index: segment.index, segments: [segment] });
  }
  return groups;
}

/** Checks that indexes run on from the snapshot's index and that each starts at offset 0. */
function checkChain(indexes: WalIndexPlan[], snapshot: SnapshotInfo): void {
  let expected = snapshot.index;
  for (const { index, segments } of indexes) {
    const first = segments[0]!;
    if (index !== expected) {
      throw new WalshipError(
        'CORRUPT_REPLICA',
        `missing WAL index ${formatIndex(expected)} in generation ${snapshot.generation}: ` +
          `expected a segment at offset 0 of it before ${first.key}`,
      );
    }
    if (first.offset !== 0) {
      throw new WalshipError(
        'CORRUPT_REPLICA',
        `missing WAL segment in generation ${snapshot.generation}: ${first.key} starts at offset ${first.offset}, ` +
          `expected offset 0 of index ${formatIndex(index)}`,
      );
    }
    expected++;
  }
}

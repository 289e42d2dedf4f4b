import { WalshipError } from '../errors.js';
import { isGeneration, MAX_INDEX } from '../keys.js';
import { formatIndex } from '../pos.js';
import type { ReplicaClient } from '../replica/client.js';
import { findLatestGeneration, listGenerations, listSegments, listSnapshots } from '../replica/listing.js';
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
  /** Consecutive WAL indexes starting at the snapshot's index; empty for a snapshot-only restore. */
  indexes: WalIndexPlan[];
  /** Highest WAL index the generation holds, whether or not the plan reaches it. */
  lastIndex: number;
}

/** Backup to restore. An unset field means "the latest". */
export interface PlanTarget {
  generation?: string;
  /** Last WAL index to apply; the snapshot is the one with the highest index at or below it. */
  index?: number;
}

/**
 * Chooses the generation, snapshot and WAL segments of a restore and checks
 * that the segments form an unbroken chain from the snapshot: indexes follow
 * one another without a gap and each index has a segment at offset 0.
 * Offsets within an index are checked while decoding, because each one must
 * equal the decompressed length of the segments before it.
 */
export async function planRestore(client: ReplicaClient, target: PlanTarget): Promise<RestorePlan> {
  checkTarget(target);
  const generation = await chooseGeneration(client, target.generation);

  const [snapshots, segments] = await Promise.all([listSnapshots(client, generation), listSegments(client, generation)]);
  const snapshot = chooseSnapshot(snapshots, generation, target.index, client.location);

  const chosen = segments.filter((s) => s.index >= snapshot.index && (target.index === undefined || s.index <= target.index));
  const indexes = groupByIndex(chosen);
  checkChain(indexes, snapshot);

  const lastIndex = segments.reduce((max, s) => Math.max(max, s.index), snapshot.index);
  return { generation, snapshot, indexes, lastIndex };
}

/** Rejects a malformed generation name or index before anything is listed. */
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
}

/** Returns the requested generation once it is known to exist, else the one with the newest object. */
async function chooseGeneration(client: ReplicaClient, requested: string | undefined): Promise<string> {
  if (requested !== undefined) {
    const generations = await listGenerations(client);
    if (!generations.includes(requested)) {
      throw new WalshipError('NOT_FOUND', `generation ${requested} not found in ${client.location}; check the name, or leave out -generation to restore the newest generation`);
    }
    return requested;
  }

  const latest = await findLatestGeneration(client);
  if (latest === undefined) throw new WalshipError('NO_GENERATION', `no backups found in ${client.location}`);
  return latest;
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

import { decodeFrame } from '../src/lz4.js';
import { createReplicaClient } from '../src/replica/create.js';
import { listGenerations, listSegments, listSnapshots } from '../src/replica/listing.js';
import type { SegmentInfo } from '../src/replica/listing.js';
import { replicaClientConfig } from './bench-store.js';
import type { Store } from './bench-store.js';
import type { IndexAnchor } from './bench-wal-position.js';

/**
 * Inspection of a replica in the store itself: its generations, the end of
 * its WAL, and the salt-1 of WAL indexes. Salt-1 ties the writer's commit
 * positions to walship's indexes (see bench-wal-position.ts).
 */

// First bytes of a WAL header: magic (big- or little-endian checksums), then salt-1 at byte 16.
const WAL_MAGICS = [0x377f0682, 0x377f0683];
const SALT1_OFFSET = 16;

/** State of one replica prefix. */
export interface ReplicaState {
  generations: string[];
  /** The generation with the highest name among those with segments; '' when none. */
  generation: string;
  snapshots: number;
  segments: number;
  /** Anchor read from the first WAL index that has a segment at offset 0. */
  anchor?: IndexAnchor;
  /** Empty when the anchor agrees with the last index's salt-1; otherwise what differs. */
  anchorProblem: string;
  /** End of the stored WAL: the last segment's index, and its offset plus decoded length. */
  end?: { index: number; offset: number };
}

/**
 * Reads a replica's generations and segments, and salt-1 of its first and
 * last WAL index. With `withEnd` it also downloads the last segment to find
 * where the stored WAL ends.
 */
export async function inspectReplica(store: Store, prefix: string, withEnd: boolean): Promise<ReplicaState> {
  const client = createReplicaClient(replicaClientConfig(store, prefix));
  try {
    const generations = await listGenerations(client);
    const state: ReplicaState = { generations, generation: '', snapshots: 0, segments: 0, anchorProblem: '' };
    if (generations.length === 0) return state;

    // walship starts one generation per run here; with several, the newest segments decide.
    let segments: SegmentInfo[] = [];
    for (const generation of generations) {
      const found = await listSegments(client, generation);
      if (found.length > 0 && (segments.length === 0 || newest(found) >= newest(segments))) {
        segments = found;
        state.generation = generation;
      }
    }
    if (state.generation === '') state.generation = generations.at(-1)!;
    state.snapshots = (await listSnapshots(client, state.generation)).length;
    state.segments = segments.length;

    const starts = segments.filter((segment) => segment.offset === 0);
    const first = starts[0];
    const last = starts.at(-1);
    if (first !== undefined) {
      const firstSalt = saltOf(await decodeFrame(await client.get(first.key)), first.key);
      state.anchor = { generation: state.generation, index: first.index, salt: firstSalt };
      if (last !== undefined && last.index !== first.index) {
        const lastSalt = saltOf(await decodeFrame(await client.get(last.key)), last.key);
        const restarts = (lastSalt - firstSalt) | 0;
        if (restarts !== last.index - first.index) {
          state.anchorProblem =
            `WAL index ${first.index} has salt-1 ${firstSalt} and index ${last.index} has salt-1 ${lastSalt}: ` +
            `${restarts} WAL restarts for ${last.index - first.index} indexes`;
        }
      }
    }

    const tail = segments.at(-1);
    if (withEnd && tail !== undefined) {
      const body = await decodeFrame(await client.get(tail.key));
      state.end = { index: tail.index, offset: tail.offset + body.length };
    }
    return state;
  } finally {
    await client.close();
  }
}

/** Returns the key of the first snapshot of a generation, or undefined. */
export async function firstSnapshotKey(store: Store, prefix: string, generation: string): Promise<{ key: string; size: number } | undefined> {
  const client = createReplicaClient(replicaClientConfig(store, prefix));
  try {
    const snapshot = (await listSnapshots(client, generation))[0];
    return snapshot === undefined ? undefined : { key: `${prefix}/${snapshot.key}`, size: snapshot.size };
  } finally {
    await client.close();
  }
}

function newest(segments: SegmentInfo[]): number {
  let max = 0;
  for (const segment of segments) max = Math.max(max, segment.createdAt.getTime());
  return max;
}

/** Returns salt-1 of the WAL header at the start of a decoded segment. */
function saltOf(body: Buffer, key: string): number {
  if (body.length < 32 || !WAL_MAGICS.includes(body.readUInt32BE(0))) {
    throw new Error(`segment ${key} at offset 0 does not start with a WAL header`);
  }
  return body.readUInt32BE(SALT1_OFFSET);
}

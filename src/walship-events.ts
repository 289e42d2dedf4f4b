import type { Pos } from './pos.js';

/**
 * Events of a Walship. Each names the database (`db`, its sanitized name)
 * and, for what happens on one replica, the replica's name.
 */

/** A WAL segment stored on a replica: the transactions between `pre` and `post`. */
export interface TransactionEvent {
  db: string;
  replica: string;
  /** Position before the segment: where the replica ended. */
  pre: Pos;
  /** Position after the segment: the new end of what the replica stores. */
  post: Pos;
  /** Bytes of WAL in the segment, before compression. */
  bytes: number;
  /** Time in ms from the start of the segment's upload until the store confirmed it. */
  elapsedMs: number;
  /** Time in ms from the capture of the segment's first transaction until the store confirmed it. */
  lagMs: number;
}

/** A snapshot of the database stored on a replica. */
export interface SnapshotEvent {
  db: string;
  replica: string;
  generation: string;
  /** WAL index the snapshot starts; the segments of this index apply on top of it. */
  index: number;
  /** Size of the database file in the snapshot, before compression. */
  bytes: number;
}

/** A new generation: walship could not prove continuity with what it captured, so the replicas restart from a snapshot. */
export interface GenerationEvent {
  db: string;
  generation: string;
  /** Generation before this one; empty when the database had none while open. */
  previous: string;
  /** Cause of the new generation, e.g. `no generation exists` or `database file replaced`. */
  reason: string;
}

/** Source of a background failure: the database, and the replica when a replica's sync failed. */
export interface ErrorContext {
  db: string;
  /** Replica whose sync failed; unset for a failure capturing the database's WAL. */
  replica?: string;
}

/** Events a Walship emits. */
export interface WalshipEvents {
  /** A WAL segment was stored on a replica. walship logs the same as `new transaction:` at info. */
  transaction: [event: TransactionEvent];
  /** A snapshot was stored on a replica. */
  snapshot: [event: SnapshotEvent];
  /** The database started a new generation while open. */
  generation: [event: GenerationEvent];
  /**
   * Background work failed and will be retried: a replica's sync (with
   * backoff from 1 s to 30 s) or a capture of the WAL. Emitted only while a
   * listener is attached, so that a retried failure never ends the process.
   */
  error: [err: Error, context: ErrorContext];
}

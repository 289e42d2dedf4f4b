import type { ReplicaConfig } from './config.js';
import type { DB } from './db.js';
import { describeError } from './errors.js';
import type { Logger } from './logger.js';
import { formatIndex, formatPos } from './pos.js';
import type { Pos } from './pos.js';
import type { ReplicaClient } from './replica/client.js';
import { listSnapshots } from './replica/listing.js';
import type { CheckpointResult } from './sqlite.js';

/**
 * Periodic snapshots of one replica (`snapshot-interval`), and the snapshots
 * retention needs when the newest one is older than the window (as
 * Litestream v0.3 takes one when no snapshot is inside the window).
 *
 * A snapshot is due once the newest snapshot of the current generation in
 * the replica is one period old, so a process that restarts neither
 * postpones a due snapshot nor writes an extra one.
 *
 * Litestream v0.3.11 writes the snapshot at the current WAL index, which
 * replaces an older snapshot of the same index. The points between the two
 * then restore from the newer file, which may already contain pages of later
 * transactions of that index. walship writes each new snapshot at a WAL index
 * above the newest snapshot's. When the index has not moved since, it
 * checkpoints with RESTART, so that SQLite starts the WAL over at the next
 * write and walship a new index, and takes the snapshot once that happened.
 * A database without writes gets no new snapshot, and needs none: the newest
 * snapshot and the WAL after it still restore its state.
 */

/** Replica operations that a snapshot schedule uses. */
export interface SnapshotTarget {
  readonly db: DB;
  readonly config: ReplicaConfig;
  readonly client: ReplicaClient;
  readonly log: Logger;
  /** Ships what is captured, then writes a snapshot at the database's current WAL index. */
  snapshotNow(): Promise<unknown>;
}

/** Setting that made a snapshot due. */
export type SnapshotReason = 'snapshot-interval' | 'retention';

/**
 * Returns the age in ms at which the newest snapshot is due for a successor,
 * with the setting that decides it, or undefined when neither
 * `snapshot-interval` nor `retention` is set.
 */
export function snapshotPeriod(config: Pick<ReplicaConfig, 'snapshotInterval' | 'retention'>): { ms: number; reason: SnapshotReason } | undefined {
  const interval = config.snapshotInterval > 0 ? config.snapshotInterval : Infinity;
  const retention = config.retention > 0 ? config.retention : Infinity;
  if (interval === Infinity && retention === Infinity) return undefined;
  return interval <= retention ? { ms: interval, reason: 'snapshot-interval' } : { ms: retention, reason: 'retention' };
}

// Bounds of the wait before a RESTART checkpoint that could not finish (a
// reader still used the WAL) is tried again: a tenth of the period.
const MIN_RETRY_MS = 1000;
const MAX_RETRY_MS = 60_000;

/** A due snapshot waiting for the WAL to move to an index above the newest snapshot's. */
interface WaitingSnapshot {
  generation: string;
  /** Index of the newest snapshot. */
  index: number;
  /** Database position right after the RESTART checkpoint. */
  pos: Pos;
  /** True when the checkpoint copied every frame, so the next write starts a new WAL index. */
  restarted: boolean;
  /** Time of the checkpoint, in ms. */
  at: number;
}

/** Takes a replica's periodic snapshots; see the file comment for the schedule. */
export class SnapshotSchedule {
  #target: SnapshotTarget;
  #timer: NodeJS.Timeout | undefined;
  #running: Promise<void> | undefined;
  #again = false;
  #stopped = true;
  #waiting: WaitingSnapshot | undefined;
  #onChange = (): void => this.#changed();

  constructor(target: SnapshotTarget) {
    this.#target = target;
  }

  /** Starts the schedule; does nothing when neither `snapshot-interval` nor `retention` is set. */
  start(): void {
    if (snapshotPeriod(this.#target.config) === undefined) return;
    this.#stopped = false;
    this.#schedule(0);
  }

  /** Stops the schedule and waits for a snapshot in progress. */
  async stop(): Promise<void> {
    this.#stopped = true;
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = undefined;
    await this.#running;
    this.#setWaiting(undefined);
  }

  // Runs a check now, or right after the one in progress.
  #trigger(): void {
    if (this.#stopped) return;
    if (this.#running) {
      this.#again = true;
      return;
    }
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = undefined;

    this.#running = this.#check()
      .catch((err: unknown) => {
        this.#target.log.warn({ err: describeError(err) }, 'periodic snapshot failed, retrying');
        this.#schedule(this.#retryMs());
      })
      .finally(() => {
        this.#running = undefined;
        if (this.#again) {
          this.#again = false;
          this.#trigger();
        }
      });
  }

  #schedule(ms: number): void {
    if (this.#stopped) return;
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      this.#trigger();
    }, ms);
    // The database's own timers keep the process alive; this one alone should not.
    this.#timer.unref();
  }

  // While a due snapshot waits, a new WAL index, a new generation, or WAL
  // growth that shows the restart did not happen wakes the check.
  #changed(): void {
    const waiting = this.#waiting;
    if (waiting === undefined) return;

    const pos = this.#target.db.pos();
    if (pos.generation !== waiting.generation || pos.index > waiting.index) this.#trigger();
    else if (pos.index === waiting.pos.index && pos.offset > waiting.pos.offset && Date.now() - waiting.at >= this.#retryMs()) this.#trigger();
  }

  async #check(): Promise<void> {
    const { db, client, log } = this.#target;
    const period = snapshotPeriod(this.#target.config)!;

    // A generation's first snapshot comes from the replica when it starts shipping it.
    const generation = db.pos().generation;
    const newest = generation ? (await listSnapshots(client, generation)).at(-1) : undefined;
    if (newest === undefined) {
      this.#setWaiting(undefined);
      this.#schedule(Math.min(period.ms, this.#retryMs()));
      return;
    }

    const dueAt = newest.createdAt.getTime() + period.ms;
    if (Date.now() < dueAt) {
      this.#setWaiting(undefined);
      this.#schedule(dueAt - Date.now());
      return;
    }

    // The WAL moved to a later index since the newest snapshot: take it there.
    const pos = db.pos();
    if (pos.generation === newest.generation && pos.index > newest.index) {
      this.#setWaiting(undefined);
      await this.#target.snapshotNow();
      log.info({ generation, reason: period.reason, previous: formatIndex(newest.index) }, 'periodic snapshot written');
      this.#schedule(period.ms);
      return;
    }

    // Same index: ask SQLite to start the WAL over at the next write.
    const waiting = this.#waiting;
    const stale = waiting === undefined || waiting.generation !== generation || waiting.index !== newest.index;
    if (stale || !waiting.restarted || pos.offset > waiting.pos.offset) {
      const result = await requestWalRestart(db);
      const restarted = result !== undefined && result.busy === 0 && result.log === result.checkpointed;
      this.#setWaiting({ generation, index: newest.index, pos: db.pos(), restarted, at: Date.now() });
      log.info(
        { generation, reason: period.reason, index: formatIndex(newest.index), pos: formatPos(db.pos()), restarted },
        restarted ? 'snapshot due: waiting for the next write to start a new WAL index' : 'snapshot due: the WAL could not be restarted yet, retrying',
      );
    }

    // The change listener wakes the check at the next index; the timer covers a failed restart.
    this.#schedule(this.#waiting!.restarted ? period.ms : this.#retryMs());
  }

  // Database events matter only while a snapshot waits, so the listeners are
  // attached only then, which keeps the database's listener count low.
  #setWaiting(waiting: WaitingSnapshot | undefined): void {
    const { db } = this.#target;
    if (waiting !== undefined && this.#waiting === undefined) {
      db.on('change', this.#onChange);
      db.on('generation', this.#onChange);
    } else if (waiting === undefined && this.#waiting !== undefined) {
      db.off('change', this.#onChange);
      db.off('generation', this.#onChange);
    }
    this.#waiting = waiting;
  }

  #retryMs(): number {
    const period = snapshotPeriod(this.#target.config)?.ms ?? MAX_RETRY_MS;
    return Math.min(MAX_RETRY_MS, Math.max(MIN_RETRY_MS, period / 10));
  }
}

/** Checkpoints with RESTART, so that the next write starts a new WAL index. */
async function requestWalRestart(db: DB): Promise<CheckpointResult | undefined> {
  return db.checkpointNow('RESTART');
}

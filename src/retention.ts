import path from 'node:path/posix';

import type { ReplicaConfig, RetentionMode } from './config.js';
import { DEFAULTS } from './config.js';
import { describeError } from './errors.js';
import { generationsKey, isGeneration, joinKey, parseSegmentName, parseSnapshotName, segmentKey, snapshotKey } from './keys.js';
import type { Logger } from './logger.js';
import { formatIndex } from './pos.js';
import type { ObjectInfo, ReplicaClient } from './replica/client.js';

/**
 * Retention of a replica: which snapshots, WAL segments and generations are
 * no longer needed to restore any point of the retention window, and their
 * deletion.
 *
 * Litestream v0.3 keeps the snapshots created inside the window and deletes
 * everything older than the oldest of them, so the stretch between the start
 * of the window and that snapshot cannot be restored. walship keeps the newest
 * snapshot created at or before the start of the window, and every WAL
 * segment from its index on, so every point inside the window restores.
 */

/** The objects of one generation, as one listing of `generations/` found them. */
export interface GenerationObjects {
  generation: string;
  /** Snapshots in index order. */
  snapshots: StoredObject[];
  /** WAL segments in index, then offset order. */
  segments: StoredObject[];
  /** Other objects under the generation's folder, such as files of other tools. */
  others: ObjectInfo[];
  /** Oldest and newest object time in ms, undefined for an empty generation. */
  firstAt?: number;
  lastAt?: number;
}

/** A snapshot or WAL segment with its index. */
export interface StoredObject extends ObjectInfo {
  index: number;
  /** Byte offset inside the WAL index; 0 for a snapshot. */
  offset: number;
}

/** Objects one retention pass deletes, and what it keeps. */
export interface RetentionPlan {
  /** Start of the retention window, in ms since the epoch. */
  windowStart: number;
  /** Keys to delete: snapshots first, then WAL segments in index order, so a pass cut short never leaves a snapshot without its WAL. */
  keys: string[];
  /** Stored bytes of those objects. */
  bytes: number;
  /** Generations deleted as a whole. */
  generations: string[];
  /** Index of the oldest snapshot kept, per generation that is not deleted whole. */
  baseIndexes: Map<string, number>;
}

/** Outcome of one retention pass. */
export interface RetentionReport extends RetentionPlan {
  /** False in lifecycle mode, where nothing is deleted. */
  deleted: boolean;
}

/** Options of enforceRetention. */
export interface RetentionOptions {
  /** Window length in ms; points newer than now minus this stay restorable. */
  retention: number;
  /** Generations never deleted as a whole: the database's current one. */
  protect: string[];
  /** `lifecycle` plans and logs but deletes nothing. Defaults to `delete`. */
  mode?: RetentionMode;
  /** Current time in ms; defaults to Date.now(). */
  now?: number;
  logger: Logger;
}

/**
 * Lists every object under `generations/` with one listing, grouped by
 * generation. Generations are sorted by their first object time, oldest first.
 */
export async function listGenerationObjects(client: ReplicaClient): Promise<GenerationObjects[]> {
  const root = generationsKey('');
  const listing = await client.list(`${root}/`);

  const byGeneration = new Map<string, GenerationObjects>();
  for (const object of listing.objects) {
    const generation = object.key.slice(root.length + 1).split('/')[0] ?? '';
    if (!isGeneration(generation)) continue;

    let entry = byGeneration.get(generation);
    if (entry === undefined) {
      entry = { generation, snapshots: [], segments: [], others: [] };
      byGeneration.set(generation, entry);
    }
    classify(entry, object);

    const time = object.lastModified.getTime();
    entry.firstAt = Math.min(entry.firstAt ?? time, time);
    entry.lastAt = Math.max(entry.lastAt ?? time, time);
  }

  const generations = [...byGeneration.values()];
  for (const entry of generations) {
    entry.snapshots.sort((a, b) => a.index - b.index);
    entry.segments.sort((a, b) => a.index - b.index || a.offset - b.offset);
  }
  return generations.sort((a, b) => (a.firstAt ?? 0) - (b.firstAt ?? 0) || a.generation.localeCompare(b.generation));
}

// Files the layout does not name (a snapshot or segment in a nested folder,
// another tool's file) count as others: they go only with their whole generation.
function classify(entry: GenerationObjects, object: ObjectInfo): void {
  const name = path.basename(object.key);
  const snapshot = parseSnapshotName(name);
  if (snapshot !== undefined && object.key === snapshotKey('', entry.generation, snapshot)) {
    entry.snapshots.push({ ...object, index: snapshot, offset: 0 });
    return;
  }
  const segment = parseSegmentName(name);
  if (segment !== undefined && object.key === segmentKey('', entry.generation, segment.index, segment.offset)) {
    entry.segments.push({ ...object, ...segment });
    return;
  }
  entry.others.push(object);
}

/**
 * Decides what a retention pass deletes. For each generation, the base is the
 * newest snapshot created at or before `windowStart` (or its oldest snapshot
 * when all are newer): snapshots and WAL segments of lower indexes go.
 *
 * A whole generation goes when it is neither protected nor the one with the
 * newest object, and either a generation
 * that started later has a snapshot created at or before `windowStart` (that
 * one then restores every point of the window), or it has no snapshot at all
 * and nothing in it is newer than `windowStart`. A generation that ended
 * inside the window is kept, because the database's state between its end
 * and the next generation's first snapshot is its last state.
 */
export function planRetention(generations: GenerationObjects[], windowStart: number, protect: ReadonlySet<string>): RetentionPlan {
  const plan: RetentionPlan = { windowStart, keys: [], bytes: 0, generations: [], baseIndexes: new Map() };
  const snapshotKeys: ObjectInfo[] = [];
  const otherKeys: ObjectInfo[] = [];

  // The generation with the newest object is the one restore picks by default.
  const latest = generations.reduce<GenerationObjects | undefined>((a, b) => (a === undefined || (b.lastAt ?? 0) > (a.lastAt ?? 0) ? b : a), undefined);

  for (const entry of generations) {
    if (!protect.has(entry.generation) && entry !== latest && isSuperseded(entry, generations, windowStart)) {
      plan.generations.push(entry.generation);
      snapshotKeys.push(...entry.snapshots);
      otherKeys.push(...entry.segments, ...entry.others);
      continue;
    }

    // A generation without snapshots is being started, or its objects are
    // newer than the window start: it stays whole.
    const base = baseSnapshot(entry.snapshots, windowStart);
    if (base === undefined) continue;
    plan.baseIndexes.set(entry.generation, base.index);
    snapshotKeys.push(...entry.snapshots.filter((s) => s.index < base.index));
    otherKeys.push(...entry.segments.filter((s) => s.index < base.index));
  }

  for (const object of [...snapshotKeys, ...otherKeys]) {
    plan.keys.push(object.key);
    plan.bytes += object.size;
  }
  return plan;
}

/**
 * Returns the snapshot every point of the window can start from: the newest
 * created at or before `windowStart`, else the oldest.
 */
function baseSnapshot(snapshots: StoredObject[], windowStart: number): StoredObject | undefined {
  let base: StoredObject | undefined;
  for (const snapshot of snapshots) {
    if (latestCreation(snapshot) <= windowStart) base = snapshot;
  }
  return base ?? snapshots[0];
}

/**
 * Returns the latest time at which an object may have been stored. S3 lists
 * LastModified in whole seconds, rounded down, so a time on a whole second
 * may stand for any moment of that second. A file mtime rarely falls on one.
 */
function latestCreation(object: ObjectInfo): number {
  const time = object.lastModified.getTime();
  return time % 1000 === 0 ? time + 999 : time;
}

/** Reports whether a generation is no longer needed for any point of the window. */
function isSuperseded(entry: GenerationObjects, generations: GenerationObjects[], windowStart: number): boolean {
  if (entry.snapshots.length === 0 && (entry.lastAt ?? 0) <= windowStart) return true;

  const started = entry.firstAt ?? 0;
  return generations.some(
    (other) =>
      other !== entry &&
      (other.firstAt ?? 0) > started &&
      other.snapshots.some((s) => latestCreation(s) <= windowStart),
  );
}

/**
 * Runs one retention pass on a replica: lists it once, plans, then deletes
 * with the client's batch delete, unless the mode is `lifecycle`. Logs the
 * pass with the deleted count, bytes, the kept snapshot index of the first
 * protected generation and the window start.
 */
export async function enforceRetention(client: ReplicaClient, options: RetentionOptions): Promise<RetentionReport> {
  const now = options.now ?? Date.now();
  const windowStart = now - options.retention;
  const mode = options.mode ?? DEFAULTS.retentionMode;
  const started = Date.now();

  const generations = await listGenerationObjects(client);
  const plan = planRetention(generations, windowStart, new Set(options.protect));

  const deleting = mode === 'delete' && plan.keys.length > 0;
  if (deleting) await client.delete(plan.keys);

  const current = options.protect.find((g) => plan.baseIndexes.has(g));
  options.logger.info(
    {
      mode,
      deleted: deleting ? plan.keys.length : 0,
      ...(mode === 'lifecycle' ? { expirable: plan.keys.length } : {}),
      bytes: deleting ? plan.bytes : 0,
      generations: plan.generations.length,
      ...(current === undefined ? {} : { generation: current, index: formatIndex(plan.baseIndexes.get(current)!) }),
      window: new Date(windowStart).toISOString(),
      elapsed: `${Date.now() - started}ms`,
    },
    'retention enforced',
  );
  return { ...plan, deleted: mode === 'delete' };
}

/** Inputs of a lifecycle rule. */
export interface LifecycleRuleOptions {
  /** Key prefix of the replica inside its bucket, without leading or trailing `/`; may be empty. */
  prefix: string;
  /** Retention window in ms. */
  retention: number;
  /** Time between periodic snapshots in ms; 0 means snapshots come from retention only. */
  snapshotInterval: number;
  /** Time between retention checks in ms. */
  retentionCheckInterval: number;
  /** Rule ID. Defaults to `walship-retention`. */
  id?: string;
}

const DAY_MS = 24 * 3600_000;

/**
 * Builds the S3 bucket lifecycle configuration that approximates walship's
 * retention, in the JSON that `aws s3api put-bucket-lifecycle-configuration
 * --lifecycle-configuration` takes. Objects under the replica's
 * `generations/` expire once they are older than the window plus the longest
 * gap between two snapshots plus one retention check, rounded up to whole
 * days: by then a newer snapshot created before the window start exists.
 *
 * A lifecycle rule only compares object ages. It keeps restores working while
 * walship writes a new snapshot at least once per snapshot period, which
 * needs writes to the database: the WAL of a database left idle for longer
 * than the rule's days expires under its newest snapshot.
 */
export function lifecycleRule(options: LifecycleRuleOptions): { Rules: Record<string, unknown>[] } {
  const period = options.snapshotInterval > 0 ? Math.min(options.snapshotInterval, options.retention) : options.retention;
  const days = Math.max(1, Math.ceil((options.retention + period + options.retentionCheckInterval) / DAY_MS));

  return {
    Rules: [
      {
        ID: options.id ?? 'walship-retention',
        Filter: { Prefix: `${joinKey(options.prefix, generationsKey(''))}/` },
        Status: 'Enabled',
        Expiration: { Days: days },
        // Multipart uploads cut off by a crash hold storage until aborted.
        AbortIncompleteMultipartUpload: { DaysAfterInitiation: 1 },
      },
    ],
  };
}

/** Returns the lifecycle rule of a replica's settings; the prefix is empty for a file replica. */
export function replicaLifecycleRule(config: ReplicaConfig): { Rules: Record<string, unknown>[] } {
  return lifecycleRule({
    prefix: config.client.type === 's3' ? config.client.prefix : '',
    retention: config.retention,
    snapshotInterval: config.snapshotInterval,
    retentionCheckInterval: config.retentionCheckInterval,
  });
}

/** Replica state that a retention schedule reads. */
export interface RetentionTarget {
  readonly config: ReplicaConfig;
  readonly client: ReplicaClient;
  readonly log: Logger;
  /** Generations the pass must keep: the database's current one. */
  protectedGenerations(): string[];
  /** True while this process may write to the replica. */
  readonly leaseHeld: boolean;
}

// The first pass runs soon after start, so a process restarted more often
// than the check interval still enforces retention.
const FIRST_PASS_MAX_MS = 30_000;

/**
 * Runs retention on a replica every `retention-check-interval` (at most every
 * `retention`, as Litestream does), while the replica holds its lease. In
 * lifecycle mode the first pass logs the lifecycle rule once.
 */
export class RetentionSchedule {
  #target: RetentionTarget;
  #timer: NodeJS.Timeout | undefined;
  #running: Promise<void> | undefined;
  #stopped = true;
  #ruleLogged = false;

  constructor(target: RetentionTarget) {
    this.#target = target;
  }

  /** Check interval in ms: the smaller of `retention-check-interval` and `retention`. */
  get interval(): number {
    const { retention, retentionCheckInterval } = this.#target.config;
    return retentionCheckInterval > 0 ? Math.min(retentionCheckInterval, retention) : retention;
  }

  /** Starts the passes; does nothing when retention is 0. */
  start(): void {
    if (this.#target.config.retention <= 0) return;
    this.#stopped = false;
    this.#schedule(Math.min(this.interval, FIRST_PASS_MAX_MS));
  }

  /** Stops the passes and waits for one in progress. */
  async stop(): Promise<void> {
    this.#stopped = true;
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = undefined;
    await this.#running;
  }

  /** Runs one pass now, unless the lease is not held. Returns the report, or undefined when skipped. */
  async runOnce(): Promise<RetentionReport | undefined> {
    const target = this.#target;
    const mode = target.config.retentionMode ?? DEFAULTS.retentionMode;
    if (mode === 'lifecycle') this.#logRule();

    // Without the lease another process may be writing: its objects are not this process's to judge.
    if (!target.leaseHeld) {
      target.log.debug('retention skipped: the replica lease is not held');
      return undefined;
    }
    return enforceRetention(target.client, {
      retention: target.config.retention,
      protect: target.protectedGenerations(),
      mode,
      logger: target.log,
    });
  }

  #schedule(ms: number): void {
    if (this.#stopped) return;
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      this.#running = this.runOnce()
        .then(() => undefined)
        .catch((err: unknown) => {
          this.#target.log.warn({ err: describeError(err) }, 'retention pass failed, retrying at the next check');
        })
        .finally(() => {
          this.#running = undefined;
          this.#schedule(this.interval);
        });
    }, ms);
    // The database's own timers keep the process alive; this one alone should not.
    this.#timer.unref();
  }

  #logRule(): void {
    if (this.#ruleLogged) return;
    this.#ruleLogged = true;
    const config = this.#target.config;
    const rule = JSON.stringify(replicaLifecycleRule(config));
    if (config.client.type !== 's3') {
      this.#target.log.warn({ rule }, 'retention-mode is lifecycle: walship deletes nothing, and a file replica has no lifecycle rules, so old objects stay until removed by hand');
      return;
    }
    this.#target.log.warn(
      { bucket: config.client.bucket, rule },
      'retention-mode is lifecycle: walship deletes nothing; apply this rule with aws s3api put-bucket-lifecycle-configuration --bucket BUCKET --lifecycle-configuration RULE',
    );
  }
}

import { EventEmitter } from 'node:events';
import fs from 'node:fs';
import path from 'node:path';

import { segmentCommitTimes } from './commit-times.js';
import type { ReplicaConfig } from './config.js';
import type { DB } from './db.js';
import { WalshipError, describeError, hasCode } from './errors.js';
import { segmentKey, snapshotKey } from './keys.js';
import type { Logger } from './logger.js';
import { decodeFrame } from './lz4.js';
import { Mutex } from './mutex.js';
import type { ShipPool, ShipStats } from './pool.js';
import { ZERO_POS, comparePos, formatIndex, formatPos } from './pos.js';
import type { Pos } from './pos.js';
import type { ReplicaClient } from './replica/client.js';
import { Lease } from './lease.js';
import { createReplicaClient } from './replica/create.js';
import { instrumentClient } from './replica/instrumented-client.js';
import type { ClientOperationReport } from './replica/instrumented-client.js';
import { generationBounds, listGenerations, listSegments, listSnapshots } from './replica/listing.js';
import { RetentionSchedule } from './retention.js';
import { SnapshotSchedule } from './snapshot-schedule.js';

/** Largest WAL segment walship uploads; a longer run of frames becomes several segments. */
export const MAX_SEGMENT_BYTES = 8 * 1024 * 1024;

/**
 * Segment uploads of one replica that run at once, per ship worker thread.
 * When all are busy, frames wait in the shadow WAL and the next segment takes
 * more of them, so memory stays at this many segments whatever the write rate.
 */
export const UPLOADS_PER_THREAD = 2;

// Backoff after a failed sync: doubles from 1 s up to 30 s.
const MIN_BACKOFF_MS = 1000;
const MAX_BACKOFF_MS = 30_000;

/** Events a Replica emits. */
export interface ReplicaEvents {
  /** A WAL segment is stored; `pos` is the new end of what the replica holds. */
  shipped: [pre: Pos, pos: Pos, bytes: number, elapsedMs: number];
  snapshot: [generation: string, index: number, bytes: number];
  /** An object was stored: a WAL segment or a snapshot, with its sizes before and after compression. */
  upload: [kind: 'segment' | 'snapshot', rawBytes: number, storedBytes: number, elapsedMs: number];
  /** A sync failed; it is retried with backoff. */
  error: [err: Error];
  /** A sync finished, with its error when it failed. */
  sync: [elapsedMs: number, err: Error | undefined];
  /** A main-thread request to the store settled: listings, downloads, deletes, lease writes. */
  request: [report: ClientOperationReport];
}

/**
 * Ships one database's shadow WAL to one replica location: a snapshot when the
 * replica has none for the current generation, then WAL segments in order.
 *
 * The position only moves past an object once the store has confirmed it.
 * After any failure it is derived again from the replica's own listing, so a
 * crash or an error never leaves a gap that restore would read past.
 */
export class Replica extends EventEmitter<ReplicaEvents> {
  readonly name: string;
  readonly config: ReplicaConfig;
  readonly db: DB;
  readonly client: ReplicaClient;
  readonly log: Logger;

  #pool: ShipPool;
  #txLog: Logger;
  #pos: Pos = ZERO_POS;
  // Last position the store confirmed. Unlike #pos, it survives a failed sync,
  // so lag keeps counting from what is really stored.
  #confirmed: Pos = ZERO_POS;
  // Segments stored before their generation's first snapshot, reported once it is stored.
  #unreportedUploads: Upload[] | undefined;
  #mutex = new Mutex();
  #timer: NodeJS.Timeout | undefined;
  #dirty = false;
  #lastSync = 0;
  #failures = 0;
  // Set when uploads failed while later ones were in flight: objects past the
  // position may be stored with a gap before them, and must go before more are written.
  #trimNeeded = false;
  #stopped = true;
  #synced = false;
  #lastError: Error | undefined;
  #onChange = () => this.#wake();
  #lease: Lease;
  #snapshots: SnapshotSchedule;
  #retention: RetentionSchedule;

  constructor(db: DB, config: ReplicaConfig, pool: ShipPool, logger: Logger) {
    super();
    this.db = db;
    this.config = config;
    this.name = config.name;
    this.#pool = pool;
    this.client = instrumentClient(createReplicaClient(config.client), (report) => this.emit('request', report));
    this.log = logger.child({ db: db.name, replica: config.name });
    // The shipped-transaction line starts with db=, pre=, post= and elapsed=,
    // the fields operators grep for, so its replica field comes after them.
    this.#txLog = logger.child({ db: db.name });

    // The lease keeps a second walship, on this host or another, from writing
    // to the same replica location.
    this.#lease = new Lease({ client: this.client, database: db.config.path, logger: this.log, ...(config.leaseTtl ? { ttl: config.leaseTtl } : {}) });
    this.#lease.on('lost', (err: Error) => {
      this.log.error({ err: describeError(err), pos: formatPos(this.#pos) }, 'replica lease lost: another process may be writing to this replica, shipping stopped until the lease is back');
      // The other writer may have changed the replica: read the position again.
      this.#pos = ZERO_POS;
    });

    this.#snapshots = new SnapshotSchedule(this);
    this.#retention = new RetentionSchedule(this);
  }

  /**
   * Takes this replica's lease. Rejects with LEASE_HELD, naming the other
   * owner, when another walship has it.
   */
  async acquireLease(): Promise<void> {
    await this.#lease.acquire();
  }

  /** True while this process holds the replica's lease. */
  get leaseHeld(): boolean {
    return this.#lease.state === 'held';
  }

  /** Generations retention must keep: the database's current one. */
  protectedGenerations(): string[] {
    return [this.db.pos().generation, this.#pos.generation].filter((g) => g !== '');
  }

  /** End of what this replica has stored; the zero position until known. */
  pos(): Pos {
    return this.#pos;
  }

  /** True once a sync has completed without error. */
  get synced(): boolean {
    return this.#synced;
  }

  /** Error of the last sync, or undefined when the last sync succeeded. */
  get lastError(): Error | undefined {
    return this.#lastError;
  }

  /**
   * Replication lag in ms: 0 when the replica contains everything the database
   * captured, else the time since walship captured the oldest frame the
   * replica does not contain yet.
   */
  lagMs(now = Date.now()): number {
    const dbPos = this.db.pos();
    if (!dbPos.generation) return 0;
    const stored = this.#pos.generation ? this.#pos : this.#confirmed;
    if (stored.generation === dbPos.generation && comparePos(stored, dbPos) >= 0) return 0;
    const from = stored.generation === dbPos.generation ? stored : { generation: dbPos.generation, index: 0, offset: 0 };
    const at = this.db.capturedAt(from);
    return at === undefined ? 0 : Math.max(0, now - at);
  }

  /**
   * Starts shipping on every captured change, at most once per sync interval,
   * and the snapshot and retention schedules.
   */
  start(): void {
    this.#stopped = false;
    this.db.on('change', this.#onChange);
    this.db.on('generation', this.#onChange);
    this.#wake();
    this.#snapshots.start();
    this.#retention.start();
  }

  /** Stops the schedules and ships what is captured one last time. */
  async stop(): Promise<void> {
    this.#stopped = true;
    this.db.off('change', this.#onChange);
    this.db.off('generation', this.#onChange);
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = undefined;
    try {
      await Promise.all([this.#snapshots.stop(), this.#retention.stop()]);
      await this.sync();
    } finally {
      await this.#lease.release();
      await this.client.close();
    }
  }

  /** Releases the lease and the client without shipping; for a replica that never started. */
  async close(): Promise<void> {
    this.#stopped = true;
    await Promise.all([this.#snapshots.stop(), this.#retention.stop()]);
    await this.#lease.release();
    await this.client.close();
  }

  /** Ships everything captured so far. Throws the first error. */
  sync(): Promise<void> {
    return this.#mutex.run(async () => {
      this.#lastSync = Date.now();
      this.#dirty = false;
      const started = performance.now();
      try {
        await this.#ship();
        this.#failures = 0;
        this.#synced = true;
        this.#lastError = undefined;
        this.emit('sync', performance.now() - started, undefined);
      } catch (err) {
        this.#lastError = err as Error;
        this.emit('sync', performance.now() - started, err as Error);
        // Forget the position, so the next attempt reads it from the replica
        // again, unless objects past it must be trimmed from that position.
        if (!this.#trimNeeded) this.#pos = ZERO_POS;
        this.#failures++;
        throw err;
      }
    });
  }

  /**
   * Ships everything captured, then stores a new snapshot of the database at
   * the current WAL index, and returns true. The replica position stays where
   * it is, because the segments of that index are stored already and apply on
   * top of it. When that index has a snapshot already, nothing is written and
   * it returns false: replacing it would lose the points in time between the
   * two. SQLite is then asked to start a new index at the next write, where
   * the next request writes its snapshot.
   */
  snapshotNow(): Promise<boolean> {
    return this.#mutex.run(async () => {
      await this.#ship();
      const pos = this.db.pos();
      if (!pos.generation) return false;

      const newest = (await listSnapshots(this.client, pos.generation)).at(-1);
      if (newest !== undefined && newest.index >= pos.index) {
        const result = await this.db.checkpointNow('RESTART');
        const restarted = result !== undefined && result.busy === 0 && result.log === result.checkpointed;
        this.log.info(
          { generation: pos.generation, index: formatIndex(pos.index), restarted },
          'snapshot not written: this WAL index has one already; the next write starts a new index, for the next snapshot',
        );
        return false;
      }
      await this.#snapshot();
      return true;
    });
  }

  // Marks new data and runs a sync now, or when the sync interval allows.
  #wake(): void {
    this.#dirty = true;
    if (this.#stopped || this.#timer || this.#mutex.held) return;

    const backoff = this.#failures === 0 ? 0 : Math.min(MAX_BACKOFF_MS, MIN_BACKOFF_MS * 2 ** (this.#failures - 1));
    const wait = Math.max(0, this.#lastSync + Math.max(this.config.syncInterval, backoff) - Date.now());
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      this.sync()
        .catch((err: Error) => {
          this.log.error({ err: describeError(err), pos: formatPos(this.#confirmed) || undefined, attempt: this.#failures }, 'replica sync failed, retrying');
          // An 'error' event without a listener would end the process, and a
          // failed sync is retried anyway.
          if (this.listenerCount('error') > 0) this.emit('error', err);
          this.#dirty = true;
        })
        .finally(() => {
          if (this.#dirty || this.#failures > 0) this.#wake();
        });
    }, wait);
  }

  async #ship(): Promise<void> {
    for (;;) {
      const dbPos = this.db.pos();
      if (!dbPos.generation) return;
      // Shipping without the lease could interleave with another writer's objects.
      if (this.#lease.state !== 'held') await this.#lease.acquire();
      if (this.#pos.generation !== dbPos.generation) await this.#pool.startSlots.run(() => this.#establish(dbPos.generation));
      if (this.#pos.generation !== this.db.pos().generation) continue;
      if (this.#trimNeeded) await this.#trimAfter(this.#pos);
      if (comparePos(this.#pos, this.db.pos()) >= 0) return;
      if (!(await this.#shipSegments())) return;
    }
  }

  /**
   * Uploads segments from the position onward, several at once, and moves the
   * position over each one in order as the store confirms it. Returns true
   * when there may be more to ship, false once caught up.
   */
  async #shipSegments(): Promise<boolean> {
    const inFlight: Upload[] = [];
    let next = this.#pos;
    let caughtUp = false;
    let readError: unknown;

    for (;;) {
      // Start uploads until the window is full or the shadow WAL is exhausted.
      while (!caughtUp && readError === undefined && inFlight.length < this.#pool.threads * UPLOADS_PER_THREAD) {
        let data: Buffer;
        try {
          data = this.db.readShadow(next, MAX_SEGMENT_BYTES);
        } catch (err) {
          readError = err;
          break;
        }
        if (data.length === 0) {
          if (!this.db.isIndexFinished(next)) {
            caughtUp = true;
            continue;
          }
          // The next index starts only once this one is stored whole. A
          // restore cannot see a missing segment at the end of an index, so
          // a later index must never be stored before it.
          if (inFlight.length > 0) break;
          next = { generation: next.generation, index: next.index + 1, offset: 0 };
          continue;
        }
        inFlight.push(this.#startUpload(next, data));
        next = inFlight[inFlight.length - 1]!.post;
      }
      if (inFlight.length === 0) break;

      // Advance over the oldest upload; a failure stops the window.
      const upload = inFlight.shift()!;
      try {
        await upload.done;
      } catch (err) {
        await Promise.allSettled(inFlight.map((u) => u.done));
        this.#trimNeeded = inFlight.length > 0;
        throw err;
      }
      this.#advance(upload);
    }

    if (readError !== undefined) {
      if (!hasCode(readError, 'WAL_TRUNCATED')) throw readError;
      // The generation moved on: start again from what the database has now.
      this.log.warn({ pos: formatPos(this.#pos), err: describeError(readError) }, 'shadow wal unavailable, re-reading replica position');
      this.#pos = ZERO_POS;
      return true;
    }
    if (this.#pos.index < next.index && next.offset === 0) this.#pos = next;
    return !caughtUp;
  }

  #startUpload(pre: Pos, data: Buffer): Upload {
    const key = segmentKey('', pre.generation, pre.index, pre.offset);
    const bytes = data.length;
    const post = { generation: pre.generation, index: pre.index, offset: pre.offset + bytes };
    // Computed before the data moves to the worker thread.
    const commitTimes = segmentCommitTimes(data, pre, this.db.pageSize, (pos) => this.db.capturedAt(pos));
    const done = this.#pool.putSegment({ client: this.config.client, key, data, commitTimes }).then((stats) => {
      this.emit('upload', 'segment', stats.rawBytes, stats.storedBytes, stats.elapsedMs);
    });
    // The rejection is handled when the upload's turn comes.
    done.catch(() => undefined);
    return { pre, post, key, bytes, started: Date.now(), done };
  }

  #advance(upload: Upload): void {
    this.#pos = upload.post;
    this.#confirmed = upload.post;
    this.#savePosition();
    if (this.#unreportedUploads !== undefined) this.#unreportedUploads.push(upload);
    else this.#report(upload);
  }

  // Logs a stored segment as a shipped transaction and emits `shipped`.
  #report(upload: Upload): void {
    this.#txLog.info(
      { pre: formatPos(upload.pre), post: formatPos(upload.post), elapsed: `${Date.now() - upload.started}ms`, replica: this.name, bytes: upload.bytes, key: upload.key },
      'new transaction:',
    );
    this.emit('shipped', upload.pre, upload.post, upload.bytes, Date.now() - upload.started);
  }

  // Deletes the segments stored past `pos` in its generation. They are written
  // again from the shadow WAL, so the replica never contains a gap.
  async #trimAfter(pos: Pos): Promise<void> {
    const segments = await listSegments(this.client, pos.generation);
    const past = segments.filter((s) => s.index > pos.index || (s.index === pos.index && s.offset >= pos.offset));
    if (past.length > 0) {
      await this.client.delete(past.map((s) => s.key));
      this.log.warn({ pos: formatPos(pos), keys: past.map((s) => s.key).join(',') }, 'deleted segments stored past the position after a failed upload');
    }
    this.#trimNeeded = false;
  }

  // The position file records how far this replica is known to be contiguous.
  // After a crash with uploads in flight, objects past it may follow a gap.
  #positionFile(): string {
    return path.join(this.db.config.metaPath, 'replicas', `${this.name}.position`);
  }

  #savePosition(): void {
    const file = this.#positionFile();
    try {
      fs.mkdirSync(path.dirname(file), { recursive: true });
      fs.writeFileSync(`${file}.tmp`, `${formatPos(this.#pos)}\n`);
      fs.renameSync(`${file}.tmp`, file);
    } catch (err) {
      this.log.warn({ err: describeError(err), file }, 'cannot record the replica position');
    }
  }

  #loadPosition(): Pos | undefined {
    try {
      const text = fs.readFileSync(this.#positionFile(), 'utf8').trim();
      const m = /^([0-9a-f]{16})\/([0-9a-f]{8}):(\d+)$/.exec(text);
      if (!m) return undefined;
      return { generation: m[1]!, index: parseInt(m[2]!, 16), offset: Number(m[3]) };
    } catch {
      return undefined;
    }
  }

  // Finds the position of this replica in `generation`: after the newest stored
  // segment, or at the start of the newest snapshot's index. Takes a snapshot
  // when the generation has none on this replica.
  async #establish(generation: string): Promise<void> {
    const snapshots = await listSnapshots(this.client, generation);
    if (snapshots.length === 0) {
      await this.#startGeneration(generation);
      return;
    }

    const newestSnapshot = snapshots[snapshots.length - 1]!.index;
    const segments = await listSegments(this.client, generation);
    let pos: Pos = { generation, index: newestSnapshot, offset: 0 };
    const last = segments[segments.length - 1];
    if (last && last.index >= newestSnapshot) {
      const body = await decodeFrame(await this.client.get(last.key)).catch((err: unknown) => {
        throw new WalshipError('CORRUPT_REPLICA', `replica ${this.name} of database ${this.db.name}: cannot read ${last.key}: ${describeError(err)}`, { cause: err });
      });
      pos = { generation, index: last.index, offset: last.offset + body.length };
    }

    // Objects past the recorded contiguous position may follow a gap left by a
    // crash while uploads were in flight: trim them and write them again.
    const recorded = this.#loadPosition();
    if (recorded && recorded.generation === generation && recorded.index >= newestSnapshot && comparePos(recorded, pos) < 0) {
      await this.#trimAfter(recorded);
      pos = recorded;
    }

    // A replica ahead of the local shadow WAL was written by someone else, or
    // the meta directory was restored from an old copy: never splice onto it.
    if (comparePos(pos, this.db.pos()) > 0) {
      throw new WalshipError(
        'WAL_TRUNCATED',
        `replica ${this.name} of database ${this.db.name} is at ${formatPos(pos)}, ahead of the local position ${formatPos(this.db.pos())}: another process may be writing to ${this.client.location}`,
      );
    }
    this.#pos = pos;
    this.#confirmed = pos;
    this.log.info({ generation, pos: formatPos(pos) }, 'replica position restored');
  }

  // Restores pick the generation with the newest object time, and S3 keeps
  // that time in whole seconds. A new generation's first object must land in
  // a later second than every object of the others, or Litestream and walship
  // could restore an older generation.
  // The local clock only estimates the store's, so after the upload the
  // snapshot's stored time is checked, and the snapshot is written again a
  // second later while it does not stand after the other generations.
  async #startGeneration(generation: string): Promise<void> {
    const newest = await this.#newestOtherObject(generation);
    // A store with sub-second times (file mtimes) needs no wait.
    const wholeSeconds = newest % 1000 === 0;
    const wait = wholeSeconds ? newest + 1000 - Date.now() : 0;
    if (wait > 0) {
      this.log.info({ generation, wait: `${wait}ms` }, 'waiting for the next second before the first snapshot of a new generation');
      await sleep(wait);
    }

    for (let attempt = 0; ; attempt++) {
      await this.#snapshot();
      const stored = (await listSnapshots(this.client, this.#pos.generation)).at(-1)?.createdAt.getTime() ?? Infinity;
      const later = wholeSeconds ? Math.floor(stored / 1000) > Math.floor(newest / 1000) : stored > newest;
      if (later || attempt >= 3) return;
      this.log.warn({ generation, stored: new Date(stored).toISOString(), newest: new Date(newest).toISOString() }, 'snapshot stored in the same second as an older generation, writing it again');
      await sleep(1000);
    }
  }

  // Returns the newest object time of every generation but `generation`, in ms.
  async #newestOtherObject(generation: string): Promise<number> {
    let newest = 0;
    for (const other of await listGenerations(this.client)) {
      if (other === generation) continue;
      const bounds = await generationBounds(this.client, other).catch(() => undefined);
      if (bounds) newest = Math.max(newest, bounds.updatedAt.getTime());
    }
    return newest;
  }

  // Uploads a snapshot of the database at the current index; the WAL of that
  // index is shipped from offset 0. The snapshot records how far its index
  // must be applied (source.walOffset), and goes up only once the segments
  // are stored that far, so no restore finds it without them. For a new
  // generation this stores segments before the generation has a snapshot:
  // restores pass over such a generation (Litestream v0.3.13 fails on it
  // with "no snapshots available"), and its segments are reported as shipped
  // only once the snapshot is stored.
  async #snapshot(): Promise<void> {
    await this.db.withSnapshot(async (source) => {
      const key = snapshotKey('', source.generation, source.index);
      if (this.#pos.generation !== source.generation) {
        this.#pos = { generation: source.generation, index: source.index, offset: 0 };
        this.#confirmed = this.#pos;
        // Segments an earlier attempt stored may be cut at other offsets.
        await this.#trimAfter(this.#pos);
        this.#unreportedUploads = [];
      }

      let stats: ShipStats;
      const started = Date.now();
      try {
        await this.#ship();
        const header = { takenAt: Date.now(), walOffset: source.walOffset };
        stats = await this.#pool.putSnapshot({ client: this.config.client, key, fd: source.fd, size: source.size, header });
      } catch (err) {
        this.#unreportedUploads = undefined;
        throw err;
      }

      this.log.info(
        { generation: source.generation, index: source.index, key, bytes: stats.rawBytes, stored: stats.storedBytes, elapsed: `${Date.now() - started}ms` },
        'snapshot written',
      );
      this.emit('upload', 'snapshot', stats.rawBytes, stats.storedBytes, stats.elapsedMs);
      this.emit('snapshot', source.generation, source.index, stats.rawBytes);
      const unreported = this.#unreportedUploads ?? [];
      this.#unreportedUploads = undefined;
      for (const upload of unreported) this.#report(upload);
    });
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** A segment upload in flight. */
interface Upload {
  pre: Pos;
  post: Pos;
  key: string;
  bytes: number;
  started: number;
  done: Promise<void>;
}

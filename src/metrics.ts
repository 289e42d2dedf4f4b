import type { EventEmitter } from 'node:events';
import fsp from 'node:fs/promises';

import { Registry, collectDefaultMetrics } from 'prom-client';
import type { Gauge } from 'prom-client';

import { readVersion } from './cli/version.js';
import type { DB, DBEvents } from './db.js';
import { CHECKPOINT_MODES, ERROR_KINDS, REQUEST_OPERATIONS, REQUEST_RESULTS, UPLOAD_KINDS, createFamilies } from './metrics-families.js';
import type { ErrorKind, MetricFamilies, RequestOperation, ScrapeGauge } from './metrics-families.js';
import type { Pos } from './pos.js';
import type { Replica } from './replica.js';
import type { ClientOperationReport } from './replica/instrumented-client.js';
import type { ReplicatedDatabase } from './replicator.js';
import { ShadowWal } from './shadow-wal.js';
import { countCommits, countFrames } from './wal-commits.js';

/** Options of Metrics. */
export interface MetricsOptions {
  /** Version in `walship_build_info`. Defaults to the version in walship's package.json. */
  version?: string;
  /** Collects prom-client's default process and Node.js metrics (`process_*`, `nodejs_*`). Defaults to true. */
  defaultMetrics?: boolean;
  /** Returns the ship pool's waiting tasks at scrape time. `attach` sets it from the replicator when unset. */
  poolQueueSize?: () => number;
}

/** The part of a Replicator that `attach` requires. Its `added`/`removed` events and `poolQueueSize` are used when present. */
export interface ReplicatorSource {
  readonly databases: readonly ReplicatedDatabase[];
}

// Listeners attached to one watched database, kept to remove them again.
interface Watched {
  rd: ReplicatedDatabase;
  replicas: Replica[];
  detach: (() => void)[];
}

/**
 * Prometheus metrics of a running walship, on a registry of their own (never
 * prom-client's global one). Databases are watched one by one, or through
 * `attach` for every database of a Replicator. Sizes, positions, generation
 * and lag are read at scrape time. Counts, bytes and durations come from the
 * events of DB and Replica, and from `clientObserver` for main-thread client
 * operations.
 */
export class Metrics {
  /** Registry of every walship metric. `registry.metrics()` renders the text format. */
  readonly registry = new Registry();

  #families: MetricFamilies;
  #watched = new Map<DB, Watched>();
  #poolQueueSize: (() => number) | undefined;
  #detachReplicator: (() => void) | undefined;

  constructor(options: MetricsOptions = {}) {
    this.#poolQueueSize = options.poolQueueSize;
    this.#families = createFamilies(this.registry, (name, gauge) => this.#collect(name, gauge));
    this.#families.buildInfo.set({ version: options.version ?? readVersion() }, 1);
    if (options.defaultMetrics !== false) collectDefaultMetrics({ register: this.registry });
  }

  /** Content type of `registry.metrics()` output, for the HTTP response. */
  get contentType(): string {
    return this.registry.contentType;
  }

  /**
   * Watches every database of a replicator now and, when the replicator emits
   * `added` and `removed`, each database it adds or removes later. Also reads
   * the ship pool's queue size from its `poolQueueSize` when the options did
   * not give one.
   */
  attach(replicator: ReplicatorSource): void {
    this.detach();
    for (const rd of replicator.databases) this.watchDatabase(rd);

    if (this.#poolQueueSize === undefined && 'poolQueueSize' in replicator) {
      this.#poolQueueSize = () => Number((replicator as { poolQueueSize?: unknown }).poolQueueSize ?? 0);
    }

    // A Replicator without events leaves the set of databases as it was at attach.
    const emitter = replicator as Partial<EventEmitter>;
    if (typeof emitter.on !== 'function' || typeof emitter.off !== 'function') return;
    const added = (rd: ReplicatedDatabase) => this.watchDatabase(rd);
    const removed = (rd: ReplicatedDatabase) => this.unwatchDatabase(rd);
    emitter.on('added', added);
    emitter.on('removed', removed);
    this.#detachReplicator = () => {
      emitter.off!('added', added);
      emitter.off!('removed', removed);
    };
  }

  /** Stops following a replicator's `added` and `removed` events. Databases watched so far stay watched. */
  detach(): void {
    this.#detachReplicator?.();
    this.#detachReplicator = undefined;
  }

  /** Starts exporting one database and its replicas. Watching a database twice does nothing. */
  watchDatabase(rd: ReplicatedDatabase): void {
    if (this.#watched.has(rd.db)) return;
    const watched: Watched = { rd, replicas: [...rd.replicas], detach: [] };
    this.#watched.set(rd.db, watched);

    this.#watchDB(watched);
    for (const replica of watched.replicas) this.#watchReplica(watched, replica);
  }

  /** Stops exporting a database: removes its listeners and every label set that names it. */
  unwatchDatabase(rd: ReplicatedDatabase): void {
    const watched = this.#watched.get(rd.db);
    if (!watched) return;
    this.#watched.delete(rd.db);
    for (const detach of watched.detach) detach();
    this.#removeLabelSets(rd.db.name, watched.replicas.map((r) => r.name));
  }

  /**
   * Returns the `onOperation` callback for `instrumentClient` that counts the
   * main-thread client operations of replica `replica` of database `db`.
   * `unwatchDatabase` removes these label sets with the database's others.
   */
  clientObserver(db: string, replica: string): (report: ClientOperationReport) => void {
    return (report) => this.#recordRequest(db, replica, report.operation, report.ok, report.bytes, report.elapsedMs);
  }

  // Counts generations, syncs, checkpoints and their failures of one database.
  #watchDB(watched: Watched): void {
    const db = watched.rd.db;
    const families = this.#families;
    const labels = { db: db.name };

    const onGeneration = () => families.generations.inc(labels);
    const onSync = (elapsedMs: number, err: Error | undefined) => {
      families.dbSyncDuration.observe(labels, elapsedMs / 1000);
      if (err) this.#countError(db.name, '', 'db_sync');
    };
    const onCheckpoint = (...[mode, elapsedMs, result]: DBEvents['checkpoint']) => {
      families.checkpointDuration.observe({ db: db.name, mode }, elapsedMs / 1000);
      // DB reports a checkpoint that SQLite failed with an undefined result.
      if (result === undefined) this.#countError(db.name, '', 'checkpoint');
    };

    db.on('generation', onGeneration);
    db.on('sync', onSync);
    db.on('checkpoint', onCheckpoint);
    watched.detach.push(() => {
      db.off('generation', onGeneration);
      db.off('sync', onSync);
      db.off('checkpoint', onCheckpoint);
    });
  }

  // Counts what one replica shipped, uploaded and failed.
  #watchReplica(watched: Watched, replica: Replica): void {
    const db = watched.rd.db;
    const families = this.#families;
    const labels = { db: db.name, replica: replica.name };

    const onShipped = (pre: Pos, post: Pos, bytes: number) => {
      families.segmentsShipped.inc(labels);
      families.bytesShipped.inc(labels, bytes);
      families.framesShipped.inc(labels, countFrames(pre.offset, post.offset, db.pageSize));
      families.transactionsShipped.inc(labels, this.#commitsIn(db, pre, post));
      const capturedAt = db.capturedAt(pre);
      if (capturedAt !== undefined) families.replicationLatency.observe(labels, Math.max(0, Date.now() - capturedAt) / 1000);
    };
    const onUpload = (kind: 'segment' | 'snapshot', rawBytes: number, storedBytes: number, elapsedMs: number) => {
      families.uploadBytes.inc({ ...labels, kind }, storedBytes);
      families.uploadUncompressedBytes.inc({ ...labels, kind }, rawBytes);
      if (kind === 'snapshot') families.snapshotDuration.observe(labels, elapsedMs / 1000);
      this.#recordRequest(db.name, replica.name, kind === 'segment' ? 'put_segment' : 'put_snapshot', true, storedBytes, elapsedMs);
    };
    const onError = () => {
      families.retries.inc(labels);
      this.#countError(db.name, replica.name, 'replica_sync');
    };
    const onSync = (elapsedMs: number) => families.replicaSyncDuration.observe(labels, elapsedMs / 1000);
    const onRequest = (report: ClientOperationReport) =>
      this.#recordRequest(db.name, replica.name, report.operation, report.ok, report.bytes, report.elapsedMs);

    replica.on('shipped', onShipped);
    replica.on('upload', onUpload);
    replica.on('error', onError);
    replica.on('sync', onSync);
    replica.on('request', onRequest);
    watched.detach.push(() => {
      replica.off('shipped', onShipped);
      replica.off('upload', onUpload);
      replica.off('error', onError);
      replica.off('sync', onSync);
      replica.off('request', onRequest);
    });
  }

  // Counts the transactions of a shipped segment from its frame headers in
  // the shadow WAL. The file is gone when a new generation started while the
  // segment was uploading, and then the segment's transactions go uncounted.
  #commitsIn(db: DB, pre: Pos, post: Pos): number {
    try {
      return countCommits(ShadowWal.pathFor(db.shadowDir(pre.generation), pre.index), pre.offset, post.offset, db.pageSize);
    } catch {
      return 0;
    }
  }

  #countError(db: string, replica: string, kind: ErrorKind): void {
    this.#families.errors.inc({ db, replica, kind });
  }

  #recordRequest(db: string, replica: string, operation: RequestOperation, ok: boolean, bytes: number, elapsedMs: number): void {
    const families = this.#families;
    families.requests.inc({ db, replica, operation, result: ok ? 'ok' : 'error' });
    families.requestDuration.observe({ db, replica, operation }, elapsedMs / 1000);
    if (bytes > 0) families.requestBytes.inc({ db, replica, operation }, bytes);
  }

  // Sets one scrape-time gauge from the watched databases.
  async #collect(name: ScrapeGauge, gauge: Gauge<string>): Promise<void> {
    const all = [...this.#watched.values()];
    switch (name) {
      case 'databases':
        gauge.set(all.length);
        return;
      case 'poolQueue':
        gauge.set(this.#poolQueueSize?.() ?? 0);
        return;
      case 'dbSize':
        await Promise.all(all.map(async ({ rd }) => gauge.set({ db: rd.db.name }, await fileSize(rd.db.config.path))));
        return;
      case 'walSize':
        await Promise.all(all.map(async ({ rd }) => gauge.set({ db: rd.db.name }, await fileSize(rd.db.walPath))));
        return;
      case 'generationInfo':
        for (const { rd } of all) {
          const generation = rd.db.pos().generation;
          if (generation !== '') gauge.set({ db: rd.db.name, generation }, 1);
        }
        return;
      case 'dbPositionIndex':
      case 'dbPositionOffset':
        for (const { rd } of all) {
          const pos = rd.db.pos();
          gauge.set({ db: rd.db.name }, name === 'dbPositionIndex' ? pos.index : pos.offset);
        }
        return;
      case 'replicaPositionIndex':
      case 'replicaPositionOffset':
      case 'lag':
        for (const { rd, replicas } of all) {
          for (const replica of replicas) gauge.set({ db: rd.db.name, replica: replica.name }, replicaValue(name, replica));
        }
        return;
    }
  }

  // Removes every label set of a database. The label values of each family
  // come from fixed lists, so every combination is removed. Removing a label
  // set that was never used does nothing.
  #removeLabelSets(db: string, replicas: string[]): void {
    const families = this.#families;
    families.generations.remove({ db });
    families.dbSyncDuration.remove({ db });
    for (const mode of CHECKPOINT_MODES) families.checkpointDuration.remove({ db, mode });
    for (const kind of ERROR_KINDS) families.errors.remove({ db, replica: '', kind });

    for (const replica of replicas) {
      const labels = { db, replica };
      for (const family of [families.segmentsShipped, families.framesShipped, families.bytesShipped, families.transactionsShipped, families.retries]) family.remove(labels);
      for (const family of [families.replicationLatency, families.snapshotDuration, families.replicaSyncDuration]) family.remove(labels);
      for (const kind of ERROR_KINDS) families.errors.remove({ ...labels, kind });
      for (const kind of UPLOAD_KINDS) {
        families.uploadBytes.remove({ ...labels, kind });
        families.uploadUncompressedBytes.remove({ ...labels, kind });
      }
      for (const operation of REQUEST_OPERATIONS) {
        families.requestDuration.remove({ ...labels, operation });
        families.requestBytes.remove({ ...labels, operation });
        for (const result of REQUEST_RESULTS) families.requests.remove({ ...labels, operation, result });
      }
    }
  }
}

function replicaValue(name: 'replicaPositionIndex' | 'replicaPositionOffset' | 'lag', replica: Replica): number {
  if (name === 'lag') return replica.lagMs() / 1000;
  const pos = replica.pos();
  return name === 'replicaPositionIndex' ? pos.index : pos.offset;
}

// Size of a file, or 0 when it does not exist or cannot be read: a missing
// WAL is normal after SQLite removed it, and a scrape must not fail on it.
async function fileSize(file: string): Promise<number> {
  try {
    return (await fsp.stat(file)).size;
  } catch {
    return 0;
  }
}

import { Counter, Gauge, Histogram } from 'prom-client';
import type { Registry } from 'prom-client';

import { CLIENT_OPERATIONS } from './replica/instrumented-client.js';

/** Kinds of `walship_errors_total`. */
export const ERROR_KINDS = ['db_sync', 'checkpoint', 'replica_sync'] as const;
export type ErrorKind = (typeof ERROR_KINDS)[number];

/** Checkpoint modes walship runs. */
export const CHECKPOINT_MODES = ['PASSIVE', 'RESTART', 'TRUNCATE'] as const;

/** Kinds of objects a ship worker uploads. */
export const UPLOAD_KINDS = ['segment', 'snapshot'] as const;

/** Operations of `walship_replica_requests_total`: worker uploads, then main-thread client operations. */
export const REQUEST_OPERATIONS = ['put_segment', 'put_snapshot', ...CLIENT_OPERATIONS] as const;
export type RequestOperation = (typeof REQUEST_OPERATIONS)[number];

/** Results of `walship_replica_requests_total`. */
export const REQUEST_RESULTS = ['ok', 'error'] as const;

// Buckets in seconds. A capture or a small request takes milliseconds, and a
// snapshot of a large database minutes. Latency grows up to the retry backoff.
const FAST_BUCKETS = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5];
const REQUEST_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10, 30];
const SNAPSHOT_BUCKETS = [0.1, 0.5, 1, 5, 10, 30, 60, 300, 900];
const LATENCY_BUCKETS = [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300];

/**
 * Every walship metric family, registered on one registry. Gauges with a
 * `collect` callback read their value at scrape time, and the other families
 * are fed by events.
 */
export interface MetricFamilies {
  buildInfo: Gauge<'version'>;
  databases: Gauge;
  poolQueue: Gauge;
  dbSize: Gauge<'db'>;
  walSize: Gauge<'db'>;
  generationInfo: Gauge<'db' | 'generation'>;
  dbPositionIndex: Gauge<'db'>;
  dbPositionOffset: Gauge<'db'>;
  generations: Counter<'db'>;
  dbSyncDuration: Histogram<'db'>;
  checkpointDuration: Histogram<'db' | 'mode'>;
  errors: Counter<'db' | 'replica' | 'kind'>;
  replicaPositionIndex: Gauge<'db' | 'replica'>;
  replicaPositionOffset: Gauge<'db' | 'replica'>;
  lag: Gauge<'db' | 'replica'>;
  segmentsShipped: Counter<'db' | 'replica'>;
  framesShipped: Counter<'db' | 'replica'>;
  bytesShipped: Counter<'db' | 'replica'>;
  transactionsShipped: Counter<'db' | 'replica'>;
  replicationLatency: Histogram<'db' | 'replica'>;
  snapshotDuration: Histogram<'db' | 'replica'>;
  replicaSyncDuration: Histogram<'db' | 'replica'>;
  retries: Counter<'db' | 'replica'>;
  uploadBytes: Counter<'db' | 'replica' | 'kind'>;
  uploadUncompressedBytes: Counter<'db' | 'replica' | 'kind'>;
  requests: Counter<'db' | 'replica' | 'operation' | 'result'>;
  requestDuration: Histogram<'db' | 'replica' | 'operation'>;
  requestBytes: Counter<'db' | 'replica' | 'operation'>;
}

/** Gauges whose values are read at scrape time. */
export type ScrapeGauge = 'databases' | 'poolQueue' | 'dbSize' | 'walSize' | 'generationInfo' | 'dbPositionIndex' | 'dbPositionOffset' | 'replicaPositionIndex' | 'replicaPositionOffset' | 'lag';

/** Sets the values of one scrape-time gauge, which has been reset just before. */
export type CollectGauge = (name: ScrapeGauge, gauge: Gauge<string>) => void | Promise<void>;

/**
 * Creates walship's metric families on `registry`. Each scrape-time gauge is
 * reset and then filled by `collect`, so label sets of databases that are gone,
 * and of a generation that was replaced, disappear at the next scrape.
 */
export function createFamilies(registry: Registry, collect: CollectGauge): MetricFamilies {
  const registers = [registry];
  const db = ['db'] as const;
  const replica = ['db', 'replica'] as const;
  const scrape = (name: ScrapeGauge) => ({
    registers,
    collect(this: Gauge<string>) {
      this.reset();
      return collect(name, this);
    },
  });

  return {
    buildInfo: new Gauge({ name: 'walship_build_info', help: 'Always 1. The version label is the running walship version.', labelNames: ['version'], registers }),
    databases: new Gauge({ name: 'walship_databases', help: 'Databases being replicated.', ...scrape('databases') }),
    poolQueue: new Gauge({ name: 'walship_ship_pool_queued_tasks', help: 'Segment and snapshot uploads waiting for a free ship worker.', ...scrape('poolQueue') }),

    // Per database.
    dbSize: new Gauge({ name: 'walship_db_size_bytes', help: 'Size of the database file, read at scrape time, or 0 when the file is missing.', labelNames: db, ...scrape('dbSize') }),
    walSize: new Gauge({ name: 'walship_wal_size_bytes', help: 'Size of the database\'s -wal file, read at scrape time, or 0 when the file is missing.', labelNames: db, ...scrape('walSize') }),
    generationInfo: new Gauge({ name: 'walship_generation_info', help: 'Always 1. The generation label is the database\'s current generation.', labelNames: ['db', 'generation'], ...scrape('generationInfo') }),
    dbPositionIndex: new Gauge({ name: 'walship_db_position_index', help: 'WAL index of the end of what walship captured into the shadow WAL.', labelNames: db, ...scrape('dbPositionIndex') }),
    dbPositionOffset: new Gauge({ name: 'walship_db_position_offset', help: 'Byte offset, within its WAL index, of the end of what walship captured.', labelNames: db, ...scrape('dbPositionOffset') }),
    generations: new Counter({ name: 'walship_generations_total', help: 'New generations started.', labelNames: db, registers }),
    dbSyncDuration: new Histogram({ name: 'walship_db_sync_duration_seconds', help: 'Duration of a database sync: copying new WAL frames into the shadow WAL and checkpointing by thresholds.', labelNames: db, buckets: FAST_BUCKETS, registers }),
    checkpointDuration: new Histogram({ name: 'walship_checkpoint_duration_seconds', help: 'Duration of a checkpoint walship ran, by mode.', labelNames: ['db', 'mode'], buckets: FAST_BUCKETS, registers }),
    errors: new Counter({ name: 'walship_errors_total', help: 'Errors by kind: db_sync (capture failed), checkpoint (checkpoint failed), replica_sync (replica sync failed, with the replica label set).', labelNames: ['db', 'replica', 'kind'], registers }),

    // Per replica.
    replicaPositionIndex: new Gauge({ name: 'walship_replica_position_index', help: 'WAL index of the end of what the replica stores, or 0 while unknown.', labelNames: replica, ...scrape('replicaPositionIndex') }),
    replicaPositionOffset: new Gauge({ name: 'walship_replica_position_offset', help: 'Byte offset, within its WAL index, of the end of what the replica stores, or 0 while unknown.', labelNames: replica, ...scrape('replicaPositionOffset') }),
    lag: new Gauge({ name: 'walship_replication_lag_seconds', help: 'Time since walship captured the oldest frame the replica has not stored, or 0 when caught up.', labelNames: replica, ...scrape('lag') }),
    segmentsShipped: new Counter({ name: 'walship_wal_segments_shipped_total', help: 'WAL segments stored. A segment contains one or more transactions, or part of one above 16 MiB.', labelNames: replica, registers }),
    framesShipped: new Counter({ name: 'walship_wal_frames_shipped_total', help: 'WAL frames stored in WAL segments.', labelNames: replica, registers }),
    bytesShipped: new Counter({ name: 'walship_wal_bytes_shipped_total', help: 'WAL bytes stored in WAL segments, before compression, WAL headers included.', labelNames: replica, registers }),
    transactionsShipped: new Counter({ name: 'walship_transactions_shipped_total', help: 'Commit frames (transactions) stored in WAL segments.', labelNames: replica, registers }),
    replicationLatency: new Histogram({ name: 'walship_replication_latency_seconds', help: 'Time from capture of a WAL segment\'s first frame until the store confirmed the segment.', labelNames: replica, buckets: LATENCY_BUCKETS, registers }),
    snapshotDuration: new Histogram({ name: 'walship_snapshot_duration_seconds', help: 'Duration of a snapshot upload. The count is the number of snapshots stored.', labelNames: replica, buckets: SNAPSHOT_BUCKETS, registers }),
    replicaSyncDuration: new Histogram({ name: 'walship_replica_sync_duration_seconds', help: 'Duration of a replica sync, failed ones included.', labelNames: replica, buckets: REQUEST_BUCKETS, registers }),
    retries: new Counter({ name: 'walship_replica_sync_retries_total', help: 'Failed replica syncs that are retried with backoff.', labelNames: replica, registers }),
    uploadBytes: new Counter({ name: 'walship_upload_bytes_total', help: 'Bytes stored by segment and snapshot uploads, after LZ4 compression.', labelNames: ['db', 'replica', 'kind'], registers }),
    uploadUncompressedBytes: new Counter({ name: 'walship_upload_uncompressed_bytes_total', help: 'Bytes of segment and snapshot uploads before LZ4 compression.', labelNames: ['db', 'replica', 'kind'], registers }),
    requests: new Counter({ name: 'walship_replica_requests_total', help: 'Replica client operations by operation and result. A list counts once however many pages it read. Failed worker uploads count in walship_errors_total only.', labelNames: ['db', 'replica', 'operation', 'result'], registers }),
    requestDuration: new Histogram({ name: 'walship_replica_request_duration_seconds', help: 'Duration of replica client operations, failed ones included.', labelNames: ['db', 'replica', 'operation'], buckets: REQUEST_BUCKETS, registers }),
    requestBytes: new Counter({ name: 'walship_replica_request_bytes_total', help: 'Body bytes sent (put, put_segment and put_snapshot, as stored) or received (get) by replica client operations.', labelNames: ['db', 'replica', 'operation'], registers }),
  };
}

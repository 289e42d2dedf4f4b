import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { EventEmitter } from 'node:events';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, before, test } from 'node:test';

import parsePrometheusTextFormat from 'parse-prometheus-text-format';
import type { ParsedFamily, ParsedSample } from 'parse-prometheus-text-format';

import { DEFAULTS, defaultMetaPath } from '../src/config.js';
import type { DatabaseConfig, ReplicaConfig } from '../src/config.js';
import { DB } from '../src/db.js';
import { Health, defaultMaxLag } from '../src/health.js';
import { createLogger } from '../src/logger.js';
import { decodeFrame } from '../src/lz4.js';
import { Metrics } from '../src/metrics.js';
import { ShipPool } from '../src/pool.js';
import { formatPos, posEqual } from '../src/pos.js';
import { Replica } from '../src/replica.js';
import type { ReplicaClientConfig } from '../src/replica/client.js';
import { createReplicaClient } from '../src/replica/create.js';
import { instrumentClient } from '../src/replica/instrumented-client.js';
import { listGenerations, listSegments } from '../src/replica/listing.js';
import type { ReplicatedDatabase } from '../src/replicator.js';
import { parseAddr, startStatusServer } from '../src/status-server.js';
import type { StatusServer } from '../src/status-server.js';
import { FRAME_HEADER_SIZE, WAL_HEADER_SIZE, frameSize, parseFrameHeader } from '../src/wal.js';
import { s3ClientConfig, startS3Server } from './support/s3-server.js';
import type { S3Server } from './support/s3-server.js';
import { TcpProxy } from './support/tcp-proxy.js';
import { Writer } from './support/writer.js';

/**
 * Metrics and health endpoints over HTTP. A child process writes a real
 * database, and DB and Replica ship it to s3rver and to a file replica. The
 * scraped text is parsed with a Prometheus text parser and compared with what
 * the replicas stored.
 */

// Bounded waits: for replicas to catch up, and for /healthz to change state.
const CATCH_UP_TIMEOUT_MS = 20_000;
const HEALTH_TIMEOUT_MS = 15_000;
// Replica retries back off up to 30 s; a short outage needs a few seconds to recover.
const RECOVERY_TIMEOUT_MS = 45_000;

let s3: S3Server;

before(async () => {
  s3 = await startS3Server();
});

after(async () => {
  await s3?.close();
});

/** A database with its replicas, metrics and status server, as the daemon wires them. */
interface Setup {
  dir: string;
  dbPath: string;
  db: DB;
  replicas: Replica[];
  rd: ReplicatedDatabase;
  metrics: Metrics;
  server: StatusServer;
  writer: Writer;
  logs: string[];
  close(): Promise<void>;
}

interface SetupOptions {
  replicas: { name: string; client: ReplicaClientConfig }[];
  /** `max-lag` of the database in ms; unset means the default. */
  maxLag?: number;
  /** Start the replicas' schedules before returning. Defaults to true. */
  start?: boolean;
  /** Pages after which walship runs a PASSIVE checkpoint. */
  minCheckpointPageCount?: number;
}

/** Creates a database (table `t` in WAL mode), opens it for replication and serves its metrics on 127.0.0.1. */
async function setUp(options: SetupOptions): Promise<Setup> {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'walship-metrics-'));
  const dbPath = path.join(dir, 'source.db');
  const writer = await Writer.open(dbPath, { autocheckpoint: 0 });
  const logs: string[] = [];
  const logger = createLogger({ format: 'json', level: 'info', destination: { write: (line: string) => logs.push(line) } });

  const replicaConfigs: ReplicaConfig[] = options.replicas.map(({ name, client }) => ({
    name,
    client,
    syncInterval: 0,
    retention: 0,
    retentionCheckInterval: DEFAULTS.retentionCheckInterval,
    snapshotInterval: 0,
  }));
  const config: DatabaseConfig = {
    path: dbPath,
    name: 'source',
    metaPath: defaultMetaPath(dbPath),
    monitorInterval: 50,
    checkpointInterval: 0,
    minCheckpointPageCount: options.minCheckpointPageCount ?? 1_000_000,
    maxCheckpointPageCount: 0,
    busyTimeout: DEFAULTS.busyTimeout,
    maxLag: options.maxLag,
    replicas: replicaConfigs,
  };

  const db = new DB(config, logger);
  await db.open();
  const pool = new ShipPool({ threads: 2 });
  const replicas = replicaConfigs.map((rc) => new Replica(db, rc, pool, logger));
  const rd: ReplicatedDatabase = { db, replicas };

  const metrics = new Metrics({ poolQueueSize: () => pool.queueSize });
  metrics.watchDatabase(rd);
  const health = new Health({ databases: [rd] });
  const server = await startStatusServer({ addr: '127.0.0.1:0', metrics, health });
  if (options.start !== false) for (const replica of replicas) replica.start();

  return {
    dir,
    dbPath,
    db,
    replicas,
    rd,
    metrics,
    server,
    writer,
    logs,
    async close() {
      writer.kill();
      for (const replica of replicas) await replica.stop().catch(() => undefined);
      await db.close().catch(() => undefined);
      await pool.close();
      await server.close();
      await fs.rm(dir, { recursive: true, force: true });
    },
  };
}

/** Captures what is committed and waits until every replica stores it. */
async function waitCaughtUp(setup: Setup, timeoutMs = CATCH_UP_TIMEOUT_MS): Promise<void> {
  await setup.db.sync();
  const deadline = Date.now() + timeoutMs;
  while (!setup.replicas.every((r) => r.synced && posEqual(r.pos(), setup.db.pos()))) {
    if (Date.now() > deadline) {
      const positions = setup.replicas.map((r) => `${r.name}=${formatPos(r.pos())}`).join(' ');
      assert.fail(`replicas did not reach ${formatPos(setup.db.pos())} within ${timeoutMs} ms: ${positions}\n${setup.logs.slice(-20).join('')}`);
    }
    await sleep(50);
  }
}

/** Requests a path of the status server. */
async function get(server: StatusServer, urlPath: string): Promise<{ status: number; type: string; body: string }> {
  const res = await fetch(`${server.url}${urlPath}`);
  return { status: res.status, type: res.headers.get('content-type') ?? '', body: await res.text() };
}

/**
 * Scrapes /metrics and parses it. parse-prometheus-text-format 1.1.1 folds
 * every label set of a histogram into one unlabelled entry, so histograms are
 * declared untyped before parsing. Their `_bucket`, `_sum` and `_count` lines
 * then parse as families of their own, each sample with its labels, and the
 * parser starts such a family again at each label set: those are merged.
 */
async function scrape(server: StatusServer): Promise<ParsedFamily[]> {
  const res = await get(server, '/metrics');
  assert.equal(res.status, 200);
  assert.match(res.type, /^text\/plain; version=0\.0\.4/);
  return parseRegistry(res.body);
}

/** Parses text-format metrics as `scrape` describes. */
function parseRegistry(text: string): ParsedFamily[] {
  const merged = new Map<string, ParsedFamily>();
  for (const parsed of parsePrometheusTextFormat(text.replace(/^# TYPE (\S+) histogram$/gm, '# TYPE $1 untyped'))) {
    const seen = merged.get(parsed.name);
    if (seen) seen.metrics.push(...parsed.metrics);
    else merged.set(parsed.name, parsed);
  }
  return [...merged.values()];
}

/** Returns the family named `name`, failing when it is absent. */
function family(families: ParsedFamily[], name: string): ParsedFamily {
  const found = families.find((f) => f.name === name);
  assert.ok(found, `metric family ${name} is missing`);
  return found;
}

/** Returns the samples of a family whose labels include `labels`. */
function matching<T extends { labels?: Record<string, string> }>(samples: T[], labels: Record<string, string>): T[] {
  return samples.filter((s) => Object.entries(labels).every(([k, v]) => s.labels?.[k] === v));
}

/** Returns the value of the one sample of `name` with `labels`, or undefined when there is none. */
function value(families: ParsedFamily[], name: string, labels: Record<string, string> = {}): number | undefined {
  const samples = matching(family(families, name).metrics as ParsedSample[], labels);
  assert.ok(samples.length <= 1, `${name} ${JSON.stringify(labels)} matches ${samples.length} samples`);
  return samples[0] === undefined ? undefined : Number(samples[0].value);
}

/** Returns the observation count of histogram `name` with `labels`, or 0 when it has no such label set. */
function histogramCount(families: ParsedFamily[], name: string, labels: Record<string, string>): number {
  family(families, `${name}_bucket`);
  if (!families.some((f) => f.name === `${name}_count`)) return 0;
  return value(families, `${name}_count`, labels) ?? 0;
}

/** What a replica's store contains: its WAL segments decoded, counted frame by frame. */
interface StoredWal {
  segments: number;
  rawBytes: number;
  storedBytes: number;
  frames: number;
  commits: number;
}

/** Lists and decodes every WAL segment of every generation in a replica, and counts its frames and commit frames. */
async function readStoredWal(client: ReplicaClientConfig, pageSize: number): Promise<StoredWal> {
  const reader = createReplicaClient(client);
  const stored: StoredWal = { segments: 0, rawBytes: 0, storedBytes: 0, frames: 0, commits: 0 };
  try {
    for (const generation of await listGenerations(reader)) {
      for (const segment of await listSegments(reader, generation)) {
        const body = await decodeFrame(await reader.get(segment.key));
        stored.segments++;
        stored.rawBytes += body.length;
        stored.storedBytes += segment.size;
        for (let at = segment.offset === 0 ? WAL_HEADER_SIZE : 0; at + frameSize(pageSize) <= body.length; at += frameSize(pageSize)) {
          stored.frames++;
          if (parseFrameHeader(body.subarray(at, at + FRAME_HEADER_SIZE)).commit !== 0) stored.commits++;
        }
      }
    }
  } finally {
    await reader.close();
  }
  return stored;
}

/** Polls /healthz until `done` accepts the response, failing after `timeoutMs`. */
async function pollHealth(
  server: StatusServer,
  done: (res: { status: number; body: string }) => boolean,
  timeoutMs: number,
  what: string,
): Promise<{ status: number; body: string }> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const res = await get(server, '/healthz');
    if (done(res)) return res;
    if (Date.now() > deadline) assert.fail(`/healthz did not ${what} within ${timeoutMs} ms; last response ${res.status} ${res.body}`);
    await sleep(100);
  }
}

test('metrics match shipped data', async () => {
  const s3Client = s3ClientConfig(s3, s3.bucket, `t-${randomBytes(6).toString('hex')}/source`);
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'walship-metrics-file-'));
  const fileClient: ReplicaClientConfig = { type: 'file', root: dir };
  const setup = await setUp({
    replicas: [
      { name: 's3', client: s3Client },
      { name: 'file', client: fileClient },
    ],
    minCheckpointPageCount: 50,
    start: false,
  });
  try {
    const { db, replicas, server, writer } = setup;

    // Independent counts from the same events the metrics use.
    const shippedBytes = new Map<string, number>();
    const snapshotBytes = new Map<string, number>();
    for (const replica of replicas) {
      replica.on('shipped', (_pre, _post, bytes) => shippedBytes.set(replica.name, (shippedBytes.get(replica.name) ?? 0) + bytes));
      replica.on('snapshot', (_generation, _index, bytes) => snapshotBytes.set(replica.name, (snapshotBytes.get(replica.name) ?? 0) + bytes));
      replica.start();
    }
    const checkpoints = new Map<string, number>();
    db.on('checkpoint', (mode) => checkpoints.set(mode, (checkpoints.get(mode) ?? 0) + 1));

    // Two bursts of transactions, more pages than the PASSIVE threshold.
    await writer.insert({ transactions: 30, rows: 4, bytes: 700 });
    await waitCaughtUp(setup);
    await writer.insert({ transactions: 30, rows: 4, bytes: 700, pauseMs: 5 });
    await waitCaughtUp(setup);

    const families = await scrape(server);
    const pageSize = db.pageSize;
    for (const replica of replicas) {
      const labels = { db: 'source', replica: replica.name };
      const stored = await readStoredWal(replica.config.client, pageSize);

      assert.ok(stored.segments > 1, `${replica.name}: expected several segments, found ${stored.segments}`);
      assert.equal(value(families, 'walship_wal_segments_shipped_total', labels), stored.segments, `${replica.name} segments`);
      assert.equal(value(families, 'walship_wal_bytes_shipped_total', labels), stored.rawBytes, `${replica.name} bytes`);
      assert.equal(value(families, 'walship_wal_bytes_shipped_total', labels), shippedBytes.get(replica.name), `${replica.name} shipped event bytes`);
      assert.equal(value(families, 'walship_wal_frames_shipped_total', labels), stored.frames, `${replica.name} frames`);
      assert.equal(value(families, 'walship_transactions_shipped_total', labels), stored.commits, `${replica.name} transactions`);
      assert.ok(stored.commits >= 60, `${replica.name}: ${stored.commits} commit frames stored, 60 written`);

      const segment = { ...labels, kind: 'segment' };
      const snapshot = { ...labels, kind: 'snapshot' };
      assert.equal(value(families, 'walship_upload_uncompressed_bytes_total', segment), stored.rawBytes, `${replica.name} uncompressed segment bytes`);
      assert.equal(value(families, 'walship_upload_bytes_total', segment), stored.storedBytes, `${replica.name} stored segment bytes`);
      assert.equal(value(families, 'walship_upload_uncompressed_bytes_total', snapshot), snapshotBytes.get(replica.name), `${replica.name} snapshot bytes`);
      assert.equal(value(families, 'walship_replica_requests_total', { ...labels, operation: 'put_segment', result: 'ok' }), stored.segments);
      assert.equal(value(families, 'walship_replica_requests_total', { ...labels, operation: 'put_snapshot', result: 'ok' }), 1);
      assert.equal(histogramCount(families, 'walship_snapshot_duration_seconds', labels), 1);
      assert.equal(histogramCount(families, 'walship_replication_latency_seconds', labels), stored.segments);

      assert.equal(value(families, 'walship_replica_position_index', labels), replica.pos().index, `${replica.name} position index`);
      assert.equal(value(families, 'walship_replica_position_offset', labels), replica.pos().offset, `${replica.name} position offset`);
      assert.equal(value(families, 'walship_replication_lag_seconds', labels), 0, `${replica.name} lag`);
      assert.equal(value(families, 'walship_replica_sync_retries_total', labels), undefined, `${replica.name} retries`);
    }

    // Database state read at scrape time.
    const generations = matching(family(families, 'walship_generation_info').metrics as ParsedSample[], { db: 'source' });
    assert.deepEqual(
      generations.map((s) => [s.labels?.generation, Number(s.value)]),
      [[db.pos().generation, 1]],
    );
    assert.equal(value(families, 'walship_db_position_index', { db: 'source' }), db.pos().index);
    assert.equal(value(families, 'walship_db_position_offset', { db: 'source' }), db.pos().offset);
    assert.equal(value(families, 'walship_db_size_bytes', { db: 'source' }), (await fs.stat(setup.dbPath)).size);
    assert.equal(value(families, 'walship_wal_size_bytes', { db: 'source' }), (await fs.stat(db.walPath)).size);
    assert.ok(histogramCount(families, 'walship_db_sync_duration_seconds', { db: 'source' }) > 0, 'database syncs counted');
    assert.ok((checkpoints.get('PASSIVE') ?? 0) > 0, 'the workload ran a PASSIVE checkpoint');
    assert.equal(histogramCount(families, 'walship_checkpoint_duration_seconds', { db: 'source', mode: 'PASSIVE' }), checkpoints.get('PASSIVE'));
    assert.deepEqual(family(families, 'walship_errors_total').metrics, []);

    // Process-wide series.
    assert.equal(value(families, 'walship_databases'), 1);
    assert.equal(value(families, 'walship_ship_pool_queued_tasks'), 0);
    const build = family(families, 'walship_build_info').metrics as ParsedSample[];
    assert.equal(build.length, 1);
    assert.ok(build[0]!.labels?.version, 'build info has a version label');
    assert.equal(build[0]!.value, '1');
    family(families, 'process_cpu_user_seconds_total');
    family(families, 'nodejs_heap_size_total_bytes');
  } finally {
    await setup.close();
    await fs.rm(dir, { recursive: true, force: true });
  }
});

test('unwatch removes database series', async () => {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'walship-metrics-file-'));
  const setup = await setUp({ replicas: [{ name: 'file', client: { type: 'file', root: dir } }] });
  try {
    await setup.writer.insert({ transactions: 3, rows: 1, bytes: 100 });
    await waitCaughtUp(setup);
    const observe = setup.metrics.clientObserver('source', 'file');
    observe({ operation: 'list', bytes: 0, ok: true, elapsedMs: 1 });

    const before = await scrape(setup.server);
    assert.ok(value(before, 'walship_wal_segments_shipped_total', { db: 'source', replica: 'file' })! > 0, 'segments counted before unwatch');
    // The replica's own listings count too, so at least the reported one is there.
    assert.ok(value(before, 'walship_replica_requests_total', { db: 'source', replica: 'file', operation: 'list', result: 'ok' })! >= 1);

    setup.metrics.unwatchDatabase(setup.rd);
    await setup.writer.insert({ transactions: 2, rows: 1, bytes: 100 });
    await waitCaughtUp(setup);

    const remaining = (await scrape(setup.server)).flatMap((f) =>
      (f.metrics as { labels?: Record<string, string> }[]).filter((s) => s.labels?.db === 'source').map((s) => `${f.name} ${JSON.stringify(s.labels)}`),
    );
    assert.deepEqual(remaining, []);
    assert.equal(value(await scrape(setup.server), 'walship_databases'), 0);

    // The same through a replicator's added and removed events.
    const viaEvents = new Metrics({ defaultMetrics: false });
    const replicator = Object.assign(new EventEmitter(), { databases: [] as ReplicatedDatabase[], poolQueueSize: 3 });
    viaEvents.attach(replicator);
    replicator.emit('added', setup.rd);
    const added = parseRegistry(await viaEvents.registry.metrics());
    assert.equal(value(added, 'walship_databases'), 1);
    assert.equal(value(added, 'walship_ship_pool_queued_tasks'), 3);
    assert.equal(value(added, 'walship_replica_position_offset', { db: 'source', replica: 'file' }), setup.replicas[0]!.pos().offset);
    replicator.emit('removed', setup.rd);
    const removed = parseRegistry(await viaEvents.registry.metrics());
    assert.equal(value(removed, 'walship_databases'), 0);
    assert.equal(value(removed, 'walship_replica_position_offset', { db: 'source', replica: 'file' }), undefined);
    viaEvents.detach();
  } finally {
    await setup.close();
    await fs.rm(dir, { recursive: true, force: true });
  }
});

test('client operations counted by operation', async () => {
  const metrics = new Metrics({ defaultMetrics: false, version: 'test' });
  const health = new Health({ databases: [] });
  const server = await startStatusServer({ addr: '127.0.0.1:0', metrics, health });
  const raw = createReplicaClient(s3ClientConfig(s3, s3.bucket, `t-${randomBytes(6).toString('hex')}/ops`));
  const client = instrumentClient(raw, metrics.clientObserver('ops', 's3'));
  try {
    await client.put('a/one', Buffer.from('hello'));
    assert.deepEqual(await client.get('a/one'), Buffer.from('hello'));
    assert.equal((await client.list('a/')).objects.length, 1);
    await assert.rejects(client.get('a/missing'), { code: 'NOT_FOUND' });
    await client.delete(['a/one']);

    const families = await scrape(server);
    const labels = { db: 'ops', replica: 's3' };
    for (const [operation, result, count] of [
      ['put', 'ok', 1],
      ['get', 'ok', 1],
      ['get', 'error', 1],
      ['list', 'ok', 1],
      ['delete', 'ok', 1],
    ] as const) {
      assert.equal(value(families, 'walship_replica_requests_total', { ...labels, operation, result }), count, `${operation} ${result}`);
    }
    assert.equal(value(families, 'walship_replica_request_bytes_total', { ...labels, operation: 'put' }), 5);
    assert.equal(value(families, 'walship_replica_request_bytes_total', { ...labels, operation: 'get' }), 5);
    assert.equal(histogramCount(families, 'walship_replica_request_duration_seconds', { ...labels, operation: 'get' }), 2);
    assert.equal(value(families, 'walship_build_info', { version: 'test' }), 1);
  } finally {
    await client.close();
    await server.close();
  }
});

test('readyz and healthz follow the store', async () => {
  const proxy = await TcpProxy.start(s3.endpoint);
  const client = { ...s3ClientConfig(s3, s3.bucket, `t-${randomBytes(6).toString('hex')}/source`), endpoint: proxy.endpoint };
  const setup = await setUp({ replicas: [{ name: 's3', client }], maxLag: 1000, start: false });
  try {
    const { server, writer } = setup;

    // Not ready before the first sync.
    const early = await get(server, '/readyz');
    assert.equal(early.status, 503);
    assert.match(early.type, /^application\/json/);
    assert.deepEqual(JSON.parse(early.body), { status: 'not ready', databases: [{ db: 'source', replica: 's3', error: null }] });

    setup.replicas[0]!.start();
    await waitCaughtUp(setup);
    assert.equal((await get(server, '/readyz')).status, 200);
    assert.equal((await get(server, '/healthz')).status, 200);

    // Store down while writes go on: unhealthy once the lag passes 1 s. The
    // generation is older than max-lag by then, so a lag counted from its
    // start instead of from the first write not stored would show here.
    await sleep(1500);
    await proxy.stop();
    // One transaction makes one upload. Its failure leaves no upload in
    // flight, so the replica resets its position to be read from the store again.
    const writeStart = Date.now();
    await writer.insert({ transactions: 1, rows: 1, bytes: 100 });
    await setup.db.sync();
    const forgotten = (res: { status: number; body: string }) =>
      res.status === 503 && JSON.parse(res.body).databases[0]?.error !== null && setup.replicas[0]!.pos().generation === '';
    const down = await pollHealth(server, forgotten, HEALTH_TIMEOUT_MS, 'turn 503 with an error and the replica position forgotten');
    const report = JSON.parse(down.body) as { status: string; databases: { db: string; replica: string; lagSeconds: number; maxLagSeconds: number; error: string }[] };
    assert.equal(report.status, 'lagging');
    assert.equal(report.databases.length, 1);
    assert.equal(report.databases[0]!.db, 'source');
    assert.equal(report.databases[0]!.replica, 's3');
    assert.equal(report.databases[0]!.maxLagSeconds, 1);
    assert.ok(report.databases[0]!.lagSeconds > 1, `lag ${report.databases[0]!.lagSeconds} s`);
    assert.ok(report.databases[0]!.lagSeconds * 1000 <= Date.now() - writeStart, `lag ${report.databases[0]!.lagSeconds} s counts from before the first write not stored`);
    assert.equal(typeof report.databases[0]!.error, 'string');

    const failing = await scrape(server);
    const labels = { db: 'source', replica: 's3' };
    assert.ok(value(failing, 'walship_replication_lag_seconds', labels)! > 1, 'lag gauge past max-lag');
    assert.ok(value(failing, 'walship_replica_sync_retries_total', labels)! >= 1, 'retries counted');
    assert.ok(value(failing, 'walship_errors_total', { ...labels, kind: 'replica_sync' })! >= 1, 'replica sync errors counted');
    // Readiness stays: the replica did sync once.
    assert.equal((await get(server, '/readyz')).status, 200);

    // Store back: healthy again once the retry ships the backlog.
    await proxy.resume();
    await pollHealth(server, (res) => res.status === 200, RECOVERY_TIMEOUT_MS, 'return to 200');
    await waitCaughtUp(setup, RECOVERY_TIMEOUT_MS);
    assert.equal(value(await scrape(server), 'walship_replication_lag_seconds', labels), 0);
  } finally {
    await setup.close();
    await proxy.stop();
  }
});

test('status server routes and addr', async () => {
  const metrics = new Metrics({ defaultMetrics: false });
  const server = await startStatusServer({ addr: '127.0.0.1:0', metrics, health: new Health({ databases: [] }) });
  try {
    assert.equal((await get(server, '/nope')).status, 404);
    assert.equal((await fetch(`${server.url}/metrics`, { method: 'POST' })).status, 405);
    const healthz = await get(server, '/healthz');
    assert.equal(healthz.status, 200);
    assert.deepEqual(JSON.parse(healthz.body), { status: 'ok', databases: [] });
    assert.equal((await get(server, '/readyz?verbose=1')).status, 200);
  } finally {
    await server.close();
  }

  assert.deepEqual(parseAddr(':9090'), { host: '127.0.0.1', port: 9090 });
  assert.deepEqual(parseAddr('0.0.0.0:9090'), { host: '0.0.0.0', port: 9090 });
  assert.deepEqual(parseAddr('[::1]:9090'), { host: '::1', port: 9090 });
  assert.deepEqual(parseAddr('localhost:0'), { host: 'localhost', port: 0 });
  for (const bad of ['9090', 'host:', ':99999', '::1:9090', 'http://x:1']) {
    assert.throws(() => parseAddr(bad), { code: 'INVALID_INPUT', message: new RegExp(`invalid addr "${bad.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}"`) });
  }

  // A port in use is rejected with the address named.
  const first = await startStatusServer({ addr: '127.0.0.1:0', metrics, health: new Health({ databases: [] }) });
  try {
    const addr = `127.0.0.1:${first.port}`;
    await assert.rejects(startStatusServer({ addr, metrics, health: new Health({ databases: [] }) }), { code: 'INVALID_INPUT', message: new RegExp(`cannot listen on addr ${addr}`) });
  } finally {
    await first.close();
  }
});

test('dashboard uses exported names', async () => {
  const dashboard = JSON.parse(await fs.readFile(new URL('../../docs/grafana-dashboard.json', import.meta.url), 'utf8')) as {
    panels: { targets?: { expr: string }[] }[];
    templating: { list: { definition?: string }[] };
  };
  const texts = [...dashboard.panels.flatMap((p) => (p.targets ?? []).map((t) => t.expr)), ...dashboard.templating.list.map((v) => v.definition ?? '')];
  const used = new Set(texts.flatMap((text) => text.match(/\b(?:walship|process|nodejs)_[a-z_]+/g) ?? []));
  assert.ok(used.size >= 10, `dashboard queries ${used.size} metric names`);

  const exported = new Set((new Metrics().registry.getMetricsAsArray() as { name: string }[]).map((m) => m.name));
  const unknown = [...used].filter((name) => !exported.has(name) && !exported.has(name.replace(/_(bucket|count|sum)$/, '')));
  assert.deepEqual(unknown, []);
});

test('default max-lag', () => {
  const replica = (syncInterval: number) => ({ syncInterval }) as ReplicaConfig;
  assert.equal(defaultMaxLag({ replicas: [] }), 10_000);
  assert.equal(defaultMaxLag({ replicas: [replica(1000)] }), 10_000);
  assert.equal(defaultMaxLag({ replicas: [replica(1000), replica(3000)] }), 15_000);
});

import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import type { Config, DatabaseConfig, ReplicaConfig } from '../../src/config.js';
import { DEFAULTS, defaultMetaPath } from '../../src/config.js';
import { decodeFrame } from '../../src/lz4.js';
import { createLogger } from '../../src/logger.js';
import type { Logger } from '../../src/logger.js';
import type { ReplicaClient, ReplicaClientConfig } from '../../src/replica/client.js';
import { createReplicaClient } from '../../src/replica/create.js';
import { listGenerations, listSegments, listSnapshots } from '../../src/replica/listing.js';
import { Replicator } from '../../src/replicator.js';
import { s3ClientConfig } from './s3-server.js';
import type { S3Server } from './s3-server.js';
import { Writer } from './writer.js';
import type { WriterOptions } from './writer.js';

/**
 * A temporary database with one file replica or one S3 replica on s3rver (or
 * both), a Config with small thresholds so that short workloads span several
 * WAL indexes, and a logger that keeps every record for assertions.
 */

/** Replica types the replication tests run against. */
export type ReplicaKind = 'file' | 's3';

/** Options of a harness. */
export interface HarnessOptions {
  /** Replicas of the database, one per kind. */
  kinds: ReplicaKind[];
  /** Server for the `s3` kind; each harness writes under a fresh prefix of its default bucket. */
  s3?: S3Server;
  /** Database settings that replace the harness's small thresholds. */
  database?: Partial<Omit<DatabaseConfig, 'path' | 'name' | 'metaPath' | 'replicas'>>;
  /** Milliseconds between replica syncs; 0 ships every commit at once. Defaults to 0. */
  syncInterval?: number;
}

/** One log record as pino writes it in JSON. */
export interface LogRecord {
  level: string;
  msg: string;
  [field: string]: unknown;
}

/** One WAL segment of a replica listing with its decompressed length. */
export interface DecodedSegment {
  index: number;
  offset: number;
  /** Bytes after LZ4 decompression. */
  length: number;
  /** First 32 decompressed bytes: the WAL header in a segment at offset 0. */
  head: Buffer;
  key: string;
}

const CLI = fileURLToPath(new URL('../../src/cli/main.js', import.meta.url));

/** A walship CLI process started by a harness. */
export interface WalshipProcess {
  child: ChildProcess;
  /** Standard output and standard error so far. */
  output(): string;
  /** Resolves with the exit code, or the signal name, once the process has exited. */
  exited: Promise<number | string | null>;
}

// Thresholds that make a few hundred small transactions span several WAL indexes.
const SMALL_THRESHOLDS = {
  monitorInterval: 50,
  checkpointInterval: 0,
  minCheckpointPageCount: 50,
  maxCheckpointPageCount: 400,
  busyTimeout: DEFAULTS.busyTimeout,
};

/** A temporary database, its replicas and the replicators started on it. */
export class Harness {
  readonly dir: string;
  readonly dbPath: string;
  readonly metaPath: string;
  readonly config: Config;
  /** Every record logged by replicators of this harness, in order. */
  readonly logs: LogRecord[] = [];
  readonly logger: Logger;
  #replicas: Map<ReplicaKind, ReplicaClientConfig>;
  #running = new Set<Replicator>();
  #writers = new Set<Writer>();
  #processes = new Set<ChildProcess>();

  private constructor(dir: string, replicas: Map<ReplicaKind, ReplicaClientConfig>, options: HarnessOptions) {
    this.dir = dir;
    this.dbPath = path.join(dir, 'source.db');
    this.metaPath = defaultMetaPath(this.dbPath);
    this.#replicas = replicas;
    this.logger = createLogger({ format: 'json', level: 'info', destination: { write: (line: string) => this.logs.push(JSON.parse(line) as LogRecord) } });

    const replicaConfigs: ReplicaConfig[] = [...replicas].map(([kind, client]) => ({
      name: kind,
      client,
      syncInterval: options.syncInterval ?? 0,
      retention: 0,
      retentionCheckInterval: DEFAULTS.retentionCheckInterval,
      snapshotInterval: 0,
    }));
    const database: DatabaseConfig = {
      path: this.dbPath,
      name: 'source',
      metaPath: this.metaPath,
      ...SMALL_THRESHOLDS,
      ...options.database,
      replicas: replicaConfigs,
    };
    this.config = { dbs: [database], logLevel: 'info', logFormat: 'json' };
  }

  /** Creates a fresh temporary directory and the config of a database in it; the database file itself is not created. */
  static async create(options: HarnessOptions): Promise<Harness> {
    const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'walship-replicate-'));
    const replicas = new Map<ReplicaKind, ReplicaClientConfig>();
    for (const kind of options.kinds) {
      if (kind === 'file') replicas.set(kind, { type: 'file', root: path.join(dir, 'replica') });
      else {
        if (!options.s3) throw new Error('an s3 replica needs options.s3');
        replicas.set(kind, s3ClientConfig(options.s3, options.s3.bucket, `t-${randomBytes(6).toString('hex')}/source`));
      }
    }
    return new Harness(dir, replicas, options);
  }

  /** Returns the client settings of one replica. */
  replicaConfig(kind: ReplicaKind): ReplicaClientConfig {
    const config = this.#replicas.get(kind);
    if (!config) throw new Error(`the harness has no ${kind} replica`);
    return config;
  }

  /** Runs `fn` with a new client of one replica and closes the client afterwards. */
  async withClient<T>(kind: ReplicaKind, fn: (client: ReplicaClient) => Promise<T>): Promise<T> {
    const client = createReplicaClient(this.replicaConfig(kind));
    try {
      return await fn(client);
    } finally {
      await client.close();
    }
  }

  /** Starts a writer child process on the harness's database; cleanup ends it by PID if the test did not close it. */
  async openWriter(options: WriterOptions = {}): Promise<Writer> {
    const writer = await Writer.open(this.dbPath, options);
    this.#writers.add(writer);
    return writer;
  }

  /** Starts a Replicator on the harness's config with two ship workers. */
  async startReplicator(): Promise<Replicator> {
    const replicator = new Replicator(this.config, { logger: this.logger, threads: 2 });
    this.#running.add(replicator);
    await replicator.start();
    return replicator;
  }

  /** Stops a Replicator started by this harness: final capture, final ship, connections closed. */
  async stopReplicator(replicator: Replicator): Promise<void> {
    this.#running.delete(replicator);
    await replicator.stop();
  }

  /**
   * Writes the harness's config as a config file with Litestream's keys and
   * returns its path. Only file replicas and S3 replicas with static
   * credentials are written, as the harness creates them.
   */
  async writeConfigFile(): Promise<string> {
    const db = this.config.dbs[0]!;
    const lines = [
      'dbs:',
      `  - path: ${db.path}`,
      `    meta-path: ${db.metaPath}`,
      `    monitor-interval: ${db.monitorInterval}ms`,
      `    checkpoint-interval: ${db.checkpointInterval}ms`,
      `    min-checkpoint-page-count: ${db.minCheckpointPageCount}`,
      `    max-checkpoint-page-count: ${db.maxCheckpointPageCount}`,
      `    busy-timeout: ${db.busyTimeout}ms`,
      '    replicas:',
    ];
    for (const replica of db.replicas) {
      lines.push(`      - name: ${replica.name}`, `        sync-interval: ${replica.syncInterval}ms`);
      const client = replica.client;
      if (client.type === 'file') lines.push('        type: file', `        path: ${client.root}`);
      else {
        lines.push(
          '        type: s3',
          `        bucket: ${client.bucket}`,
          `        path: ${client.prefix}`,
          `        endpoint: ${client.endpoint}`,
          `        region: ${client.region}`,
          '        force-path-style: true',
          `        access-key-id: ${client.accessKeyId}`,
          `        secret-access-key: ${client.secretAccessKey}`,
        );
      }
    }
    const file = path.join(this.dir, 'walship.yml');
    await fs.writeFile(file, lines.join('\n') + '\n');
    return file;
  }

  /** Starts the walship CLI (`dist/src/cli/main.js`) with `args`; cleanup ends it by PID if it still runs. */
  spawnWalship(args: string[]): WalshipProcess {
    const child = spawn(process.execPath, [CLI, ...args], { stdio: ['ignore', 'pipe', 'pipe'], env: { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: this.dir } });
    this.#processes.add(child);
    let output = '';
    child.stdout!.on('data', (chunk: Buffer) => (output += chunk.toString()));
    child.stderr!.on('data', (chunk: Buffer) => (output += chunk.toString()));
    const exited = new Promise<number | string | null>((resolve) => child.once('close', (code, signal) => resolve(code ?? signal)));
    return { child, output: () => output, exited };
  }

  /** Lists the replica's generations. */
  generations(kind: ReplicaKind): Promise<string[]> {
    return this.withClient(kind, (client) => listGenerations(client));
  }

  /** Lists the snapshot indexes of a generation. */
  snapshotIndexes(kind: ReplicaKind, generation: string): Promise<number[]> {
    return this.withClient(kind, async (client) => (await listSnapshots(client, generation)).map((s) => s.index));
  }

  /** Lists a generation's WAL segments in index and offset order, each downloaded to learn its decompressed length. */
  decodedSegments(kind: ReplicaKind, generation: string): Promise<DecodedSegment[]> {
    return this.withClient(kind, async (client) => {
      const decoded: DecodedSegment[] = [];
      for (const segment of await listSegments(client, generation)) {
        const body = await decodeFrame(await client.get(segment.key));
        decoded.push({ index: segment.index, offset: segment.offset, length: body.length, head: Buffer.from(body.subarray(0, 32)), key: segment.key });
      }
      return decoded;
    });
  }

  /** Returns the log records whose message is `msg`. */
  logsWith(msg: string): LogRecord[] {
    return this.logs.filter((record) => record.msg === msg);
  }

  /**
   * Formats log records for an assertion message: every warning and error,
   * then the last 40 records, or every record when WALSHIP_TEST_FULL_LOG=1.
   */
  logText(): string {
    if (process.env.WALSHIP_TEST_FULL_LOG === '1') return this.logs.map((r) => JSON.stringify(r)).join('\n');
    const important = this.logs.filter((r) => r.level === 'warn' || r.level === 'error');
    const lines = [...important, { level: '', msg: '...' }, ...this.logs.slice(-40)];
    return lines.map((r) => JSON.stringify(r)).join('\n');
  }

  /**
   * Ends writers and walship processes by PID, stops replicators still running (errors ignored,
   * because the test has failed already) and removes the directory.
   */
  async cleanup(): Promise<void> {
    for (const writer of this.#writers) writer.kill();
    this.#writers.clear();
    for (const child of this.#processes) {
      if (child.exitCode === null && child.signalCode === null && child.pid !== undefined) process.kill(child.pid, 'SIGKILL');
    }
    this.#processes.clear();
    for (const replicator of this.#running) await replicator.stop().catch(() => undefined);
    this.#running.clear();
    await fs.rm(this.dir, { recursive: true, force: true });
  }
}

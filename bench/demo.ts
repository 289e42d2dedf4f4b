import { fork } from 'node:child_process';
import { randomInt } from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { resolveConfig } from '../src/config.js';
import type { Config, DatabaseConfig } from '../src/config.js';
import { describeError } from '../src/errors.js';
import { createLogger } from '../src/logger.js';
import type { Logger } from '../src/logger.js';
import { databasePrefix, nameFromPath } from '../src/naming.js';
import type { ReplicaClientConfig } from '../src/replica/client.js';
import { createReplicaClient } from '../src/replica/create.js';
import { Replicator } from '../src/replicator.js';
import { restore } from '../src/restore.js';
import { compareSummaries, summarizeDatabase } from './demo-content.js';
import type { DatabaseSummary } from './demo-content.js';
import { litestreamAvailable, restoreFileReplica, restoreS3Replica } from './demo-litestream.js';
import { formatCount, formatTable, plural, shortHash } from './demo-report.js';
import { prepareWorkDir } from './demo-setup.js';
import type { DemoSources } from './demo-setup.js';
import type { WriterMessage, WriterOptions, WriterStats } from './demo-writer.js';

/**
 * `npm run demo`: walship's main job on real data, with no network and no
 * config. It builds Northwind and Chinook in ./demo-run, replicates both
 * with walship while a separate writer process changes them, restores each
 * replica, and compares the restored rows with the source. It exits with
 * status 1 when any database differs.
 *
 * Usage: node dist/bench/demo.js [--s3]
 * Environment: DEMO_SECONDS (default 15), DEMO_SEED, DEMO_S3=1 (same as --s3),
 * WALSHIP_DEMO_DIR (default ./demo-run).
 */

const DEFAULT_SECONDS = 15;
const MAX_SECONDS = 3600;
// Shorter than walship's 1m default so that a 15 s run checkpoints a few
// times and the restore replays more than one WAL index.
const CHECKPOINT_INTERVAL = '5s';
const S3_BUCKET = 'walship-demo';
// Time the writer process gets past its deadline before it is killed.
const WRITER_GRACE_MS = 60_000;

/** Settings of one demo run. */
interface DemoOptions {
  workDir: string;
  seconds: number;
  seed: number;
  s3: boolean;
}

/** Replica destination of the demo: a directory, or a bucket of a local S3 server. */
type Target = { type: 'file'; root: string } | { type: 's3'; endpoint: string; bucket: string; credential: string };

/** Outcome of restoring and comparing one database. */
interface Verification {
  db: DatabaseConfig;
  source?: DatabaseSummary;
  restored?: DatabaseSummary;
  litestream?: DatabaseSummary;
  replica: string;
  differences: string[];
}

const USAGE = `Usage: npm run demo [-- --s3]

Replicates Northwind and Chinook with walship while a writer process changes
them, restores both replicas and compares every table's rows with the source.

  --s3   replicate to an s3rver bucket on 127.0.0.1 instead of a directory

Environment: DEMO_SECONDS (default ${DEFAULT_SECONDS}), DEMO_SEED (integer, default random),
DEMO_S3=1 (same as --s3), WALSHIP_DEMO_DIR (default ./demo-run).`;

/** Reads the flags and environment variables of the demo. */
function parseOptions(argv: readonly string[], env: NodeJS.ProcessEnv): DemoOptions {
  let s3 = env.DEMO_S3 === '1';
  for (const arg of argv) {
    if (arg === '--s3' || arg === '-s3') s3 = true;
    else if (arg === '--help' || arg === '-h') {
      console.log(USAGE);
      process.exit(0);
    } else throw new Error(`unknown argument ${arg}; the demo accepts --s3 and --help`);
  }

  const seconds = Number(env.DEMO_SECONDS ?? DEFAULT_SECONDS);
  if (!Number.isFinite(seconds) || seconds <= 0 || seconds > MAX_SECONDS) {
    throw new Error(`DEMO_SECONDS=${env.DEMO_SECONDS} is not a number of seconds between 0 and ${MAX_SECONDS}; unset it for ${DEFAULT_SECONDS}`);
  }
  const seed = env.DEMO_SEED === undefined ? randomInt(2 ** 31) : Number(env.DEMO_SEED);
  if (!Number.isSafeInteger(seed)) throw new Error(`DEMO_SEED=${env.DEMO_SEED} is not an integer`);

  const workDir = path.resolve(env.WALSHIP_DEMO_DIR || 'demo-run');
  return { workDir, seconds, seed, s3 };
}

/** Builds the config as `walship replicate -config` would from a file: one replica per database, defaults elsewhere. */
function buildConfig(sources: DemoSources, target: Target, logger: Logger): Config {
  const dbs = [sources.northwind, sources.chinook].map((dbPath) => ({
    path: dbPath,
    'checkpoint-interval': CHECKPOINT_INTERVAL,
    replicas: [replicaEntry(dbPath, target)],
  }));
  return resolveConfig({ dbs }, 'demo', { logger });
}

/** Returns a replica entry with Litestream's config keys: a bucket without path gets `databases/<name>`. */
function replicaEntry(dbPath: string, target: Target): Record<string, unknown> {
  if (target.type === 'file') return { type: 'file', path: path.join(target.root, databasePrefix(nameFromPath(dbPath))) };
  return {
    type: 's3',
    bucket: target.bucket,
    endpoint: target.endpoint,
    region: 'us-east-1',
    'force-path-style': true,
    'access-key-id': target.credential,
    'secret-access-key': target.credential,
  };
}

/**
 * Runs the writer process until its deadline. The first SIGINT requests an
 * early stop (the demo then verifies what was written); a second one exits.
 */
function runWriter(options: WriterOptions): Promise<{ northwind: WriterStats; chinook: WriterStats }> {
  const script = fileURLToPath(new URL('./demo-writer.js', import.meta.url));
  const child = fork(script, [JSON.stringify(options)], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });

  let interrupted = false;
  const onSignal = (): void => {
    if (interrupted) process.exit(130);
    interrupted = true;
    console.error('interrupted: stopping the writer, then verifying what was written (Ctrl-C again to quit at once)');
    if (child.connected) child.send('stop');
  };
  process.on('SIGINT', onSignal);

  return new Promise((resolve, reject) => {
    let stats: { northwind: WriterStats; chinook: WriterStats } | undefined;
    let failure: string | undefined;
    const timer = setTimeout(() => {
      failure = `writer process ${child.pid} did not stop within ${WRITER_GRACE_MS / 1000} s of its deadline; killed it`;
      child.kill('SIGKILL');
    }, options.seconds * 1000 + WRITER_GRACE_MS);

    child.on('message', (message: WriterMessage) => {
      if (message.type === 'done') stats = message.stats;
      else failure = `writer process failed: ${message.message}`;
    });
    child.on('error', (err) => {
      failure ??= `cannot run writer process ${script}: ${err.message}`;
    });
    child.on('exit', (code, signal) => {
      clearTimeout(timer);
      process.off('SIGINT', onSignal);
      if (stats !== undefined && code === 0) resolve(stats);
      else reject(new Error(failure ?? `writer process exited with ${signal ?? `status ${code}`} before reporting`));
    });
  });
}

/** Restores one database with walship (and Litestream when installed) and compares each copy with the source. */
async function verifyDatabase(db: DatabaseConfig, restoredDir: string, workDir: string, logger: Logger): Promise<Verification> {
  const client = db.replicas[0]!.client;
  const verification: Verification = { db, replica: await describeReplica(client), differences: [] };
  const differences = verification.differences;

  verification.source = summarizeDatabase(db.path);
  if (verification.source.helperTables.length > 0) {
    differences.push(`the source has tables walship must not add: ${verification.source.helperTables.join(', ')}`);
  }

  const output = path.join(restoredDir, `${db.name}.db`);
  try {
    await restore({ client, outputPath: output, logger, dbName: db.name });
    verification.restored = summarizeDatabase(output, true);
    differences.push(...compareSummaries(verification.source, verification.restored));
  } catch (err) {
    differences.push(`walship restore failed: ${describeError(err)}`);
  }

  if (!litestreamAvailable()) return verification;
  const litestreamOutput = path.join(restoredDir, `${db.name}.litestream.db`);
  const run =
    client.type === 'file'
      ? await restoreFileReplica(litestreamOutput, client.root, workDir)
      : await restoreS3Replica(litestreamOutput, db.path, client, workDir);
  if (run.error !== '') {
    differences.push(`${run.command} failed: ${run.error}`);
    return verification;
  }
  // Litestream v0.3.13 leaves the -shm and -wal files of its temporary output behind.
  await fs.rm(`${litestreamOutput}.tmp-shm`, { force: true });
  await fs.rm(`${litestreamOutput}.tmp-wal`, { force: true });
  verification.litestream = summarizeDatabase(litestreamOutput, true);
  differences.push(...compareSummaries(verification.source, verification.litestream).map((d) => `Litestream's restore: ${d}`));
  return verification;
}

/** Counts the generations, snapshots and WAL segments of a replica. */
async function describeReplica(config: ReplicaClientConfig): Promise<string> {
  const client = createReplicaClient(config);
  try {
    const { objects } = await client.list('generations/');
    const generations = new Set(objects.map((o) => o.key.split('/')[1]));
    const snapshots = objects.filter((o) => o.key.includes('/snapshots/')).length;
    const segments = objects.filter((o) => o.key.includes('/wal/')).length;
    const bytes = objects.reduce((sum, o) => sum + o.size, 0);
    const counts = [plural(generations.size, 'generation'), plural(snapshots, 'snapshot'), plural(segments, 'WAL segment')];
    return `${client.location}: ${counts.join(', ')}, ${formatCount(bytes)} bytes stored`;
  } finally {
    await client.close();
  }
}

/** Prints the comparison table, what the writer did and where the files are. */
function printReport(results: Verification[], stats: { northwind: WriterStats; chinook: WriterStats }, options: DemoOptions, target: Target, elapsedMs: number): void {
  const withLitestream = litestreamAvailable();
  const lines = ['', comparisonTable(results, stats, withLitestream), ''];
  lines.push("Hashes are the first 16 hex digits of a SHA-256 over every table's rows in rowid order. Rows are counted over all tables.");
  for (const [name, written] of Object.entries(stats)) {
    const operations = Object.entries(written.operations).map(([op, n]) => `${op} ${n}`).join(', ');
    lines.push(`Writer, ${name}: ${operations}; ${formatCount(written.rowsWritten)} rows written, largest transaction ${formatCount(written.largestTransaction)} rows.`);
  }

  // Paths inside the current directory print relative to it, others in full.
  const relative = (p: string): string => {
    const shown = path.relative(process.cwd(), p);
    return shown === '' || shown.startsWith('..') ? p : shown;
  };
  lines.push('');
  if (target.type === 'file') lines.push(`Replica (laid out as in a bucket): ${relative(target.root)}`);
  else lines.push(`Replica: bucket ${target.bucket} on s3rver at ${target.endpoint} (stopped; its files were temporary)`);
  for (const r of results) lines.push(`  ${r.replica}`);

  const restoredDir = relative(path.join(options.workDir, 'restored'));
  if (withLitestream) lines.push(`Restored copies: ${restoredDir}/ (<name>.litestream.db: restored by Litestream v0.3.13)`);
  else lines.push(`Restored copies: ${restoredDir}/ (Litestream is not installed, so only walship restored the replicas)`);
  if (target.type === 'file') {
    lines.push(`Restore it yourself: node dist/src/cli/main.js restore -o /tmp/northwind.db file://${path.join(target.root, databasePrefix('northwind'))}`);
  }

  for (const r of results) {
    for (const difference of r.differences) lines.push(`MISMATCH ${r.db.name}: ${difference}`);
  }
  const allMatch = results.every((r) => r.differences.length === 0);
  lines.push('', `${allMatch ? 'All databases match' : 'Some databases DO NOT match'} (seed ${options.seed}, ${(elapsedMs / 1000).toFixed(1)} s).`);
  console.log(lines.join('\n'));
}

/** Formats one row per database: transactions written, rows, hashes of the source and each restored copy, and the verdict. */
function comparisonTable(results: Verification[], stats: { northwind: WriterStats; chinook: WriterStats }, withLitestream: boolean): string {
  const header = ['database', 'transactions', 'rows', 'source sha256', 'restored sha256'];
  if (withLitestream) header.push('litestream sha256');
  header.push('match');

  const rows = results.map((r) => {
    const written = r.db.name === 'northwind' ? stats.northwind : stats.chinook;
    const row = [
      r.db.name,
      formatCount(written.transactions),
      r.source ? formatCount(r.source.totalRows) : '-',
      r.source ? shortHash(r.source.hash) : '-',
      r.restored ? shortHash(r.restored.hash) : '-',
    ];
    if (withLitestream) row.push(r.litestream ? shortHash(r.litestream.hash) : '-');
    row.push(r.differences.length === 0 ? 'yes' : 'NO');
    return row;
  });
  return formatTable(header, rows);
}

/** Starts s3rver on 127.0.0.1 with the demo bucket; s3rver is a dev dependency, so it loads only with --s3. */
async function startS3(): Promise<{ target: Target; close: () => Promise<void> }> {
  let support: typeof import('../test/support/s3-server.js');
  try {
    support = await import('../test/support/s3-server.js');
  } catch (err) {
    throw new Error(`--s3 needs the test helper dist/test/support/s3-server.js and the dev dependency s3rver; run npm ci and npm run build first`, { cause: err });
  }
  const { startS3Server, S3RVER_CREDENTIAL } = support;
  const server = await startS3Server();
  await server.createBucket(S3_BUCKET);
  return { target: { type: 's3', endpoint: server.endpoint, bucket: S3_BUCKET, credential: S3RVER_CREDENTIAL }, close: () => server.close() };
}

async function main(): Promise<number> {
  const started = Date.now();
  // The demo runs on Node.js 20 as walship does, so the AWS SDK's notice that
  // later SDK versions need Node.js 22 would only repeat in every worker thread.
  process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';
  const options = parseOptions(process.argv.slice(2), process.env);
  const logger = createLogger({ level: 'info' });

  const sources = await prepareWorkDir(options.workDir);
  const s3 = options.s3 ? await startS3() : undefined;
  const target: Target = s3?.target ?? { type: 'file', root: path.join(options.workDir, 'replica') };

  try {
    const config = buildConfig(sources, target, logger);
    const where = target.type === 'file' ? `${target.root}/databases/<name>` : `s3://${target.bucket}/databases/<name> at ${target.endpoint}`;
    console.log(
      `walship demo: replicating ${config.dbs.map((db) => db.name).join(' and ')} to ${where} ` +
        `while a writer process changes them for ${options.seconds} s (seed ${options.seed}, checkpoint-interval ${CHECKPOINT_INTERVAL}).`,
    );

    const replicator = new Replicator(config, { logger });
    await replicator.start();
    let stats: { northwind: WriterStats; chinook: WriterStats };
    try {
      stats = await runWriter({ northwind: sources.northwind, chinook: sources.chinook, seconds: options.seconds, seed: options.seed });
      await replicator.sync();
    } finally {
      await replicator.stop();
    }

    const restoredDir = path.join(options.workDir, 'restored');
    await fs.mkdir(restoredDir, { recursive: true });
    const results: Verification[] = [];
    for (const db of config.dbs) results.push(await verifyDatabase(db, restoredDir, options.workDir, logger));

    printReport(results, stats, options, target, Date.now() - started);
    return results.every((r) => r.differences.length === 0) ? 0 : 1;
  } finally {
    await s3?.close();
  }
}

try {
  process.exitCode = await main();
} catch (err) {
  console.error(`demo failed: ${describeError(err)}`);
  process.exitCode = 1;
}

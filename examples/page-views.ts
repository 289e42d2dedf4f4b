#!/usr/bin/env node
import http from 'node:http';
import type { AddressInfo } from 'node:net';

import Database from 'better-sqlite3';
import { Command } from 'commander';

import { Walship, createLogger, formatPos } from '../src/index.js';
import type { BucketReplicaOptions, Logger } from '../src/index.js';

/**
 * An application that embeds walship: it counts page views in a SQLite
 * database replicated to s3://BUCKET/databases/<db-name>/.
 *
 *   npm run example -- -dsn /tmp/app.db -bucket my-bucket [-db-name "Production App"] [-endpoint URL] [-addr 127.0.0.1:8080]
 *
 * At start, a missing database file is restored from the newest backup in
 * the bucket, or created empty when the bucket contains none. Every request
 * records a page view, waits until walship has stored it in the bucket, and
 * responds with the count. SIGTERM or SIGINT stops it after a final sync.
 * Credentials come from the environment, as for the walship command:
 * LITESTREAM_ACCESS_KEY_ID and LITESTREAM_SECRET_ACCESS_KEY, or the AWS SDK's
 * variables and profiles.
 */

/** Flags of the example, spelled as the walship command spells them. */
interface Flags {
  dsn: string;
  bucket: string;
  dbName?: string;
  endpoint?: string;
  region?: string;
  addr: string;
  logLevel: string;
}

/** Bound of the final sync at shutdown, in ms. */
const SHUTDOWN_TIMEOUT_MS = 10_000;

/** Parses the flags; `-dsn` and `--dsn` both work, as for the walship command. */
function parseFlags(argv: string[]): Flags {
  const program = new Command('page-views')
    .description('Count page views in a SQLite database replicated to S3 by walship.')
    .requiredOption('--dsn <path>', 'database file; restored from the bucket when it does not exist')
    .requiredOption('--bucket <name>', 'S3 bucket; the replica is s3://NAME/databases/<db-name>')
    .option('--db-name <name>', "database name, the folder databases/<name> (default: the database file's name without its extension)")
    .option('--endpoint <url>', 'URL of an S3-compatible store, e.g. http://127.0.0.1:9000 (default: AWS S3)')
    .option('--region <region>', 'S3 region (default: the AWS SDK chain, or us-east-1 with -endpoint)')
    .option('--addr <host:port>', 'address of the HTTP server; port 0 picks a free port', '127.0.0.1:8080')
    .option('--log-level <level>', 'minimum level of log lines: debug, info, warn or error', 'info')
    .allowExcessArguments(false);

  // Go-style flags have one dash; commander reads `-dsn` as `-d -s -n`, so long names get a second dash.
  const normalized = argv.map((arg) => (/^-[a-z][a-z-]+(=.*)?$/s.test(arg) ? `-${arg}` : arg));
  program.parse(normalized, { from: 'user' });
  return program.opts<Flags>();
}

/** Splits `host:port` (or `:port` for 127.0.0.1) into its parts. */
function parseAddr(addr: string): { host: string; port: number } {
  const colon = addr.lastIndexOf(':');
  const port = Number(addr.slice(colon + 1));
  if (colon < 0 || !Number.isInteger(port) || port < 0 || port > 65535) {
    throw new Error(`-addr ${addr} is not host:port; write it as 127.0.0.1:8080, or :8080`);
  }
  return { host: addr.slice(0, colon) || '127.0.0.1', port };
}

/** Restores the database from the bucket unless the file exists; logs which case applied. */
async function restoreIfMissing(flags: Flags, replica: BucketReplicaOptions, log: Logger): Promise<void> {
  const outcome = await Walship.restore({ replica, outputPath: flags.dsn, dbName: flags.dbName, ifDbNotExists: true, ifReplicaExists: true, logger: log });
  switch (outcome.status) {
    case 'exists':
      log.info({ db: outcome.dbName, path: flags.dsn }, 'database file exists, not restoring');
      break;
    case 'no-backup':
      log.info({ db: outcome.dbName, location: outcome.location }, 'no backup found in the bucket, starting with an empty database');
      break;
    case 'restored':
      log.info({ db: outcome.dbName, location: outcome.location, pos: formatPos(outcome.result.pos), bytes: outcome.result.bytes }, 'restored the newest backup');
      break;
  }
}

/** Opens the application's own connection and creates the page view table. */
function openDatabase(dsn: string): Database.Database {
  const db = new Database(dsn);
  // walship replicates the WAL, so the database must be in WAL mode.
  db.pragma('journal_mode = wal');
  db.pragma('busy_timeout = 5000');
  db.exec('CREATE TABLE IF NOT EXISTS page_views (id INTEGER PRIMARY KEY, path TEXT NOT NULL, viewed_at TEXT NOT NULL)');
  return db;
}

async function main(): Promise<void> {
  // The AWS SDK's notice that later versions need Node.js 22 would only be noise; set the variable to false to see it.
  process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';
  const flags = parseFlags(process.argv.slice(2));
  const { host, port } = parseAddr(flags.addr);
  const log = createLogger({ level: flags.logLevel });
  const replica: BucketReplicaOptions = { bucket: flags.bucket, endpoint: flags.endpoint, region: flags.region };

  await restoreIfMissing(flags, replica, log);
  const db = openDatabase(flags.dsn);
  // walship logs `new transaction: db=... pre=... post=... elapsed=...` at info for every WAL segment it stores.
  const walship = await Walship.open({ path: flags.dsn, dbName: flags.dbName, replicas: [replica], logger: log });
  const insert = db.prepare('INSERT INTO page_views (path, viewed_at) VALUES (?, ?)');
  const count = db.prepare('SELECT COUNT(*) AS views FROM page_views');

  const server = http.createServer((req, res) => {
    void handle(req, res);
  });
  async function handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    // Browsers ask for an icon on every visit; it is not a page view.
    if (req.url === '/favicon.ico') {
      res.writeHead(404).end();
      return;
    }
    insert.run(req.url ?? '/', new Date().toISOString());
    try {
      // The response waits until the page view is stored in the bucket.
      const positions = await walship.sync();
      const { views } = count.get() as { views: number };
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(`${JSON.stringify({ views, db: walship.name, pos: formatPos(positions.db) })}\n`);
    } catch (err) {
      log.error({ db: walship.name, err: (err as Error).message }, 'page view recorded but not replicated yet');
      res.writeHead(503, { 'content-type': 'text/plain' }).end(`page view recorded but not replicated yet: ${(err as Error).message}\n`);
    }
  }

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, resolve);
  });
  const bound = server.address() as AddressInfo;
  log.info({ db: walship.name, url: `http://${bound.address}:${bound.port}/` }, 'serving page views');

  let stopping = false;
  const stop = async (signal: NodeJS.Signals): Promise<void> => {
    if (stopping) return;
    stopping = true;
    log.info({ signal }, 'signal received, stopping');

    // No request may write after the final sync.
    await new Promise<void>((resolve) => {
      server.close(() => resolve());
      server.closeIdleConnections();
    });
    // walship's connections close last, so that SQLite keeps the WAL and the next start continues the generation.
    db.close();
    try {
      await walship.close({ timeoutMs: SHUTDOWN_TIMEOUT_MS });
    } catch (err) {
      log.error({ err: (err as Error).message }, 'final sync failed');
      process.exit(1);
    }
    log.info({ db: walship.name, pos: formatPos(walship.position().db) }, 'stopped, everything is stored in the bucket');
    // Open sockets of the S3 client's connection pool would keep the process alive.
    process.exit(0);
  };
  process.on('SIGTERM', (signal) => void stop(signal));
  process.on('SIGINT', (signal) => void stop(signal));
}

main().catch((err: unknown) => {
  process.stderr.write(`error: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});

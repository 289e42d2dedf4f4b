import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

import Database from 'better-sqlite3';

import { DEFAULTS, defaultMetaPath } from '../src/config.js';
import type { Config } from '../src/config.js';
import { createLogger } from '../src/logger.js';
import { Replicator } from '../src/replicator.js';

/**
 * Measures replication lag: the time from a transaction's COMMIT until the
 * replica has stored the segment holding it, for a file replica, at the sync
 * interval given by LAG_SYNC_MS (default 0: ship on every commit).
 *
 *   npm run build && node dist/bench/lag.js
 */
async function main(): Promise<void> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'walship-lag-'));
  const dbPath = path.join(dir, 'lag.db');
  const syncInterval = Number(process.env.LAG_SYNC_MS ?? 0);
  const count = Number(process.env.LAG_TX ?? 200);

  const app = new Database(dbPath);
  app.pragma('journal_mode = wal');
  // Truncating the WAL on restart makes its file size the end of the last commit.
  app.pragma('journal_size_limit = 0');
  app.exec('CREATE TABLE t (id INTEGER PRIMARY KEY, body BLOB)');

  const config: Config = {
    dbs: [
      {
        path: dbPath,
        name: 'lag',
        metaPath: defaultMetaPath(dbPath),
        monitorInterval: DEFAULTS.monitorInterval,
        checkpointInterval: 0,
        minCheckpointPageCount: 1_000_000,
        maxCheckpointPageCount: 0,
        busyTimeout: DEFAULTS.busyTimeout,
        replicas: [
          { name: 'file', client: { type: 'file', root: path.join(dir, 'replica') }, syncInterval, retention: 0, retentionCheckInterval: DEFAULTS.retentionCheckInterval, snapshotInterval: 0 },
        ],
      },
    ],
    logLevel: process.env.LAG_LOG ?? 'warn',
    logFormat: 'text',
  };
  const replicator = new Replicator(config, { logger: createLogger({ level: process.env.LAG_LOG ?? 'warn' }) });
  await replicator.start();
  const replica = replicator.databases[0]!.replicas[0]!;

  // Each commit waits for the segment holding it, so the lag is not queueing.
  const insert = app.prepare('INSERT INTO t (body) VALUES (randomblob(1024))');
  const lags: number[] = [];
  for (let i = 0; i < count; i++) {
    insert.run();
    const walEnd = fs.statSync(`${dbPath}-wal`).size;
    const committed = performance.now();
    await new Promise<void>((resolve) => {
      const check = () => {
        if (replica.pos().offset >= walEnd) {
          replica.off('shipped', check);
          resolve();
        }
      };
      replica.on('shipped', check);
      check();
    });
    lags.push(performance.now() - committed);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }

  await replicator.stop();
  app.close();
  fs.rmSync(dir, { recursive: true, force: true });

  lags.sort((a, b) => a - b);
  const pct = (p: number) => lags[Math.min(lags.length - 1, Math.floor((p / 100) * lags.length))]!.toFixed(1);
  console.log(`transactions=${count} sync-interval=${syncInterval}ms lag p50=${pct(50)}ms p99=${pct(99)}ms max=${lags[lags.length - 1]!.toFixed(1)}ms`);
}

await main();

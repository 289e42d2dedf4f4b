import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';

import Database from 'better-sqlite3';

import { createLogger } from '../src/logger.js';
import { Replicator } from '../src/replicator.js';
import { restore } from '../src/restore.js';
import { contentHash, integrityCheck } from './support/content.js';
import { fileReplicaConfig } from './support/file-config.js';

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

test('replica error retries, then recovers', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'walship-errors-'));
  const dbPath = path.join(dir, 'app.db');
  const root = path.join(dir, 'replica');
  const lines: string[] = [];

  try {
    const app = new Database(dbPath);
    app.pragma('journal_mode = wal');
    app.exec('CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)');

    // A file where the replica directory should be makes every write fail.
    fs.writeFileSync(root, 'not a directory');

    const config = fileReplicaConfig(dbPath, 'app', root);
    const logger = createLogger({ destination: { write: (line: string) => lines.push(line) } });
    const replicator = new Replicator(config, { logger });
    await replicator.start();

    const insert = app.prepare('INSERT INTO t (v) VALUES (?)');
    for (let i = 0; i < 20; i++) insert.run(`row ${i}`);
    await sleep(1500);
    assert.ok(lines.some((line) => line.includes('replica sync failed, retrying')), lines.join(''));

    // The operator fixes the replica location; shipping resumes by itself.
    fs.rmSync(root);
    for (let i = 20; i < 40; i++) insert.run(`row ${i}`);
    for (let waited = 0; waited < 10_000 && !fs.existsSync(path.join(root, 'generations')); waited += 100) await sleep(100);
    await replicator.sync();
    await replicator.stop();

    const output = path.join(dir, 'restored.db');
    await restore({ client: { type: 'file', root }, outputPath: output });
    assert.equal(integrityCheck(output), 'ok');
    assert.equal(contentHash(output), contentHash(dbPath));
    app.close();
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

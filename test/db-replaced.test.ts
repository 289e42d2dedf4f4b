import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';

import Database from 'better-sqlite3';

import { createLogger } from '../src/logger.js';
import { listGenerations } from '../src/replica/listing.js';
import { createReplicaClient } from '../src/replica/create.js';
import { Replicator } from '../src/replicator.js';
import { restore } from '../src/restore.js';
import { contentHash, integrityCheck } from './support/content.js';
import { fileReplicaConfig } from './support/file-config.js';

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

test('database file replaced starts a generation', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'walship-replaced-'));
  const dbPath = path.join(dir, 'app.db');
  const root = path.join(dir, 'replica');
  const lines: string[] = [];

  try {
    const first = new Database(dbPath);
    first.pragma('journal_mode = wal');
    first.exec("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT); INSERT INTO t (v) VALUES ('old')");
    first.close();

    const config = fileReplicaConfig(dbPath, 'app', root);
    const logger = createLogger({ destination: { write: (line: string) => lines.push(line) } });
    const replicator = new Replicator(config, { logger });
    await replicator.start();
    await sleep(300);

    // The application swaps in another database file by rename, then writes to it.
    const other = path.join(dir, 'other.db');
    const replacement = new Database(other);
    replacement.pragma('journal_mode = wal');
    replacement.exec("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT); INSERT INTO t (v) VALUES ('new1'), ('new2')");
    replacement.close();
    fs.renameSync(other, dbPath);
    await sleep(300);

    const app = new Database(dbPath);
    app.prepare("INSERT INTO t (v) VALUES ('new3')").run();
    await sleep(300);
    await replicator.sync();
    await replicator.stop();
    app.close();

    assert.ok(lines.some((line) => line.includes('reason="database file replaced"')), lines.join(''));
    const client = createReplicaClient({ type: 'file', root });
    assert.equal((await listGenerations(client)).length, 2);
    await client.close();

    const output = path.join(dir, 'restored.db');
    await restore({ client: { type: 'file', root }, outputPath: output });
    assert.equal(integrityCheck(output), 'ok');
    assert.equal(contentHash(output), contentHash(dbPath));
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';

import Database from 'better-sqlite3';

import { restore } from '../src/restore.js';
import { contentHash, integrityCheck } from './support/content.js';
import { S3RVER_CREDENTIAL, startS3Server } from './support/s3-server.js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const cli = path.join(root, 'dist/src/cli/main.js');
const sqliteModule = path.join(root, 'node_modules/better-sqlite3');

// The application: one row per transaction and now and then a transaction of
// several MiB, so that kills land in the middle of multipart uploads too.
const WRITER = `
const Database = require(${JSON.stringify(sqliteModule)});
const db = new Database(process.argv[2]);
db.pragma('journal_mode = wal');
db.pragma('busy_timeout = 5000');
const insert = db.prepare('INSERT INTO t (body) VALUES (randomblob(?))');
const big = db.transaction((n) => { for (let i = 0; i < n; i++) insert.run(4096); });
let n = 0;
let busy = 0;
const timer = setInterval(() => {
  try {
    if (++n % 40 === 0) big(2000); else insert.run(200);
  } catch (err) {
    if (err.code && err.code.startsWith('SQLITE_BUSY')) busy++; else throw err;
  }
}, 5);
process.on('SIGTERM', () => { clearInterval(timer); db.close(); console.log(JSON.stringify({ n, busy })); process.exit(0); });
`;

// A small deterministic generator, so a failing run can be repeated by its seed.
function random(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state * 1664525 + 1013904223) >>> 0;
    return state / 2 ** 32;
  };
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function waitExit(child: ChildProcess, ms: number): Promise<number | null> {
  return new Promise((resolve, reject) => {
    if (child.exitCode !== null) return resolve(child.exitCode);
    const timer = setTimeout(() => reject(new Error(`process ${child.pid} did not exit within ${ms} ms`)), ms);
    child.once('exit', (code) => {
      clearTimeout(timer);
      resolve(code);
    });
  });
}

// `make soak` sets SOAK=1 for a longer run.
const ROUNDS = process.env.SOAK === '1' ? 25 : 4;

test('replicate survives SIGKILL rounds', { timeout: 60_000 + ROUNDS * 15_000 }, async () => {
  const seed = Number(process.env.WALSHIP_SEED ?? Date.now() % 100_000);
  const next = random(seed);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'walship-crash-'));
  const server = await startS3Server();
  const dbPath = path.join(dir, 'crash.db');
  const children: ChildProcess[] = [];

  try {
    const setup = new Database(dbPath);
    setup.pragma('journal_mode = wal');
    setup.exec('CREATE TABLE t (id INTEGER PRIMARY KEY, body BLOB NOT NULL)');
    setup.close();

    const configPath = path.join(dir, 'walship.yml');
    fs.writeFileSync(
      configPath,
      [
        `access-key-id: ${S3RVER_CREDENTIAL}`,
        `secret-access-key: ${S3RVER_CREDENTIAL}`,
        'dbs:',
        `  - path: ${dbPath}`,
        '    min-checkpoint-page-count: 200',
        '    max-checkpoint-page-count: 3000',
        '    replicas:',
        '      - type: s3',
        `        bucket: ${server.bucket}`,
        '        path: databases/crash',
        `        endpoint: ${server.endpoint}`,
        '        region: us-east-1',
        '        force-path-style: true',
        '        sync-interval: 100ms',
      ].join('\n'),
    );

    const writerPath = path.join(dir, 'writer.cjs');
    fs.writeFileSync(writerPath, WRITER);
    const writer = spawn(process.execPath, [writerPath, dbPath], { stdio: ['ignore', 'pipe', 'inherit'] });
    children.push(writer);
    let writerOutput = '';
    writer.stdout!.on('data', (chunk: Buffer) => (writerOutput += chunk.toString()));

    const start = () => {
      const child = spawn(process.execPath, [cli, 'replicate', '-config', configPath, '-log-level', 'warn'], { stdio: ['ignore', 'ignore', 'pipe'] });
      children.push(child);
      let stderr = '';
      child.stderr!.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
      return { child, stderr: () => stderr };
    };

    // Kill walship at random moments; sometimes let the application truncate
    // the WAL while walship is down, which must start a new generation.
    for (let round = 0; round < ROUNDS; round++) {
      const { child } = start();
      await sleep(400 + Math.floor(next() * 1200));
      child.kill('SIGKILL');
      await waitExit(child, 10_000);
      if (next() < 0.5) {
        const app = new Database(dbPath);
        app.pragma('busy_timeout = 5000');
        app.pragma('wal_checkpoint(TRUNCATE)');
        app.close();
      }
    }

    // A last run that stops cleanly after the writer has stopped.
    const last = start();
    await sleep(1000);
    writer.kill('SIGTERM');
    await waitExit(writer, 10_000);
    await sleep(1500);
    last.child.kill('SIGTERM');
    const code = await waitExit(last.child, 30_000);
    assert.equal(code, 0, `seed ${seed}: walship exited ${code}: ${last.stderr()}`);

    const written = JSON.parse(writerOutput.trim().split('\n').pop()!) as { n: number; busy: number };
    assert.equal(written.busy, 0, `seed ${seed}: the writer saw SQLITE_BUSY`);

    const output = path.join(dir, 'restored.db');
    await restore({
      client: { type: 's3', bucket: server.bucket, prefix: 'databases/crash', endpoint: server.endpoint, region: 'us-east-1', forcePathStyle: true, accessKeyId: S3RVER_CREDENTIAL, secretAccessKey: S3RVER_CREDENTIAL },
      outputPath: output,
    });
    assert.equal(integrityCheck(output), 'ok', `seed ${seed}`);
    assert.equal(contentHash(output), contentHash(dbPath), `seed ${seed}: restored content differs from the source`);
  } finally {
    for (const child of children) if (child.exitCode === null) child.kill('SIGKILL');
    await server.close();
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

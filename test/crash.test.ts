import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';

import Database from 'better-sqlite3';

import { comparePos, formatPos } from '../src/pos.js';
import type { Pos } from '../src/pos.js';
import type { S3ClientConfig } from '../src/replica/client.js';
import { hasCode } from '../src/errors.js';
import { restore } from '../src/restore.js';
import { contentHash, integrityCheck } from './support/content.js';
import { FaultProxy, mulberry32 } from './support/fault-proxy.js';
import { S3RVER_CREDENTIAL, startS3Server } from './support/s3-server.js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const cli = path.join(root, 'dist/src/cli/main.js');
const sqliteModule = path.join(root, 'node_modules/better-sqlite3');

// The application: one transaction every few milliseconds, mostly one row and
// now and then 2000 rows of 4 KiB, so that kills land in the middle of
// multipart uploads too. Row bodies are a function of (transaction, row), so
// the test can recompute them. After each commit the writer appends
// "<transaction> <rows>" to a side file: that file lists every committed
// transaction in commit order.
const WRITER = `
const crypto = require('node:crypto');
const fs = require('node:fs');
const Database = require(${JSON.stringify(sqliteModule)});
const [dbPath, logPath] = process.argv.slice(2);
const db = new Database(dbPath);
db.pragma('journal_mode = wal');
db.pragma('busy_timeout = 5000');
const log = fs.openSync(logPath, 'a');
const insert = db.prepare('INSERT INTO t (tx, body) VALUES (?, ?)');
const body = (tx, row, bytes) => {
  const seed = crypto.createHash('sha256').update(tx + ':' + row).digest();
  return Buffer.alloc(bytes, seed);
};
const commit = db.transaction((tx, rows, bytes) => { for (let i = 0; i < rows; i++) insert.run(tx, body(tx, i, bytes)); });
let tx = 0;
let busy = 0;
const timer = setInterval(() => {
  const next = tx + 1;
  const [rows, bytes] = next % 160 === 0 ? [2000, 4096] : [1, 200];
  try {
    commit(next, rows, bytes);
  } catch (err) {
    if (err.code && err.code.startsWith('SQLITE_BUSY')) { busy++; return; }
    throw err;
  }
  tx = next;
  fs.writeSync(log, next + ' ' + rows + '\\n');
}, 5);
process.on('SIGTERM', () => { clearInterval(timer); db.close(); console.log(JSON.stringify({ n: tx, busy })); process.exit(0); });
`;

/** Recomputes the body of one row as the writer wrote it. */
function rowBody(tx: number, row: number, bytes: number): Buffer {
  const seed = createHash('sha256').update(`${tx}:${row}`).digest();
  return Buffer.alloc(bytes, seed);
}

/** Reads the writer's side file: transaction ids and row counts in commit order. */
function committedTransactions(logPath: string): Array<{ tx: number; rows: number }> {
  const text = fs.readFileSync(logPath, 'utf8');
  return text
    .split('\n')
    .filter((line) => line !== '')
    .map((line) => {
      const [tx, rows] = line.split(' ').map(Number);
      return { tx: tx!, rows: rows! };
    });
}

/**
 * Checks that a restored database contains exactly the first k committed
 * transactions, each whole and with the bodies the writer wrote, and returns k.
 */
function assertCommittedPrefix(dbPath: string, committed: Array<{ tx: number; rows: number }>, context: string): number {
  const db = new Database(dbPath, { readonly: true, fileMustExist: true });
  try {
    const rows = db.prepare('SELECT tx, body FROM t ORDER BY id').iterate() as IterableIterator<{ tx: number; body: Buffer }>;
    let k = 0;
    let row = 0;
    for (const { tx, body } of rows) {
      if (row === 0) {
        const expected = committed[k];
        assert.ok(expected !== undefined, `${context}: restored transaction ${tx} was never committed (${committed.length} committed)`);
        assert.equal(tx, expected.tx, `${context}: restored transaction ${tx} where transaction ${expected.tx} comes next in commit order`);
      }
      const expected = committed[k]!;
      assert.equal(tx, expected.tx, `${context}: transaction ${expected.tx} is restored with ${row} of its ${expected.rows} rows`);
      assert.ok(body.equals(rowBody(tx, row, body.length)), `${context}: row ${row} of transaction ${tx} has other content`);
      row++;
      if (row === expected.rows) {
        k++;
        row = 0;
      }
    }
    assert.equal(row, 0, `${context}: transaction ${committed[k]?.tx} is restored with ${row} of its ${committed[k]?.rows} rows`);
    return k;
  } finally {
    db.close();
  }
}

/** Parses the post position of each 'new transaction:' line in walship's JSON log output. */
function shippedPositions(output: string): Pos[] {
  const positions: Pos[] = [];
  for (const line of output.split('\n')) {
    if (!line.includes('new transaction:')) continue;
    let record: { post?: string };
    try {
      record = JSON.parse(line) as { post?: string };
    } catch {
      continue;
    }
    const m = /^([0-9a-f]{16})\/([0-9a-f]{8}):(\d+)$/.exec(record.post ?? '');
    if (m) positions.push({ generation: m[1]!, index: parseInt(m[2]!, 16), offset: Number(m[3]) });
  }
  return positions;
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function waitExit(child: ChildProcess, ms: number): Promise<number | null> {
  return new Promise((resolve, reject) => {
    if (child.exitCode !== null || child.signalCode !== null) return resolve(child.exitCode);
    const timer = setTimeout(() => reject(new Error(`process ${child.pid} did not exit within ${ms} ms`)), ms);
    child.once('exit', (code) => {
      clearTimeout(timer);
      resolve(code);
    });
  });
}

// `make soak` sets SOAK=1 for a longer run.
const ROUNDS = process.env.SOAK === '1' ? 30 : 5;

test('replicate survives SIGKILL rounds', { timeout: 60_000 + ROUNDS * 15_000 }, async () => {
  // SEED=<n> (or WALSHIP_SEED) replays a run: kill times, checkpoints and injected delays.
  const seed = Number(process.env.SEED ?? process.env.WALSHIP_SEED ?? Date.now() % 1_000_000);
  const next = mulberry32(seed);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'walship-crash-'));
  const server = await startS3Server();
  const proxy = await FaultProxy.start(server.endpoint, { seed });
  const dbPath = path.join(dir, 'crash.db');
  const txLog = path.join(dir, 'committed.txt');
  const children: ChildProcess[] = [];
  const summary = { rounds: 0, truncates: 0, restores: 0, refused: 0, refusedHole: 0, refusedSnapshotWal: 0, verified: 0, shippedLines: 0 };
  // The newest position walship logged as shipped, in any round.
  let lastShipped: Pos | undefined;
  const context = () => `seed ${seed} (replay with SEED=${seed}), ${JSON.stringify(summary)}, ${proxy.describe()}`;

  try {
    const setup = new Database(dbPath);
    setup.pragma('journal_mode = wal');
    setup.exec('CREATE TABLE t (id INTEGER PRIMARY KEY, tx INTEGER NOT NULL, body BLOB NOT NULL)');
    setup.close();

    const prefix = 'databases/crash';
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
        `        path: ${prefix}`,
        `        endpoint: ${proxy.endpoint}`,
        '        region: us-east-1',
        '        force-path-style: true',
        '        sync-interval: 100ms',
      ].join('\n'),
    );
    const direct: S3ClientConfig = {
      type: 's3',
      bucket: server.bucket,
      prefix,
      endpoint: server.endpoint,
      region: 'us-east-1',
      forcePathStyle: true,
      accessKeyId: S3RVER_CREDENTIAL,
      secretAccessKey: S3RVER_CREDENTIAL,
    };

    // Slow uploads make the kills land inside them: segment and snapshot
    // PUTs, multipart parts and their completion.
    proxy.addRule({ fault: 'delay', operation: ['PutObject', 'UploadPart', 'CompleteMultipartUpload'], probability: 0.4, delayMs: 150 });

    const writerPath = path.join(dir, 'writer.cjs');
    fs.writeFileSync(writerPath, WRITER);
    const writer = spawn(process.execPath, [writerPath, dbPath, txLog], { stdio: ['ignore', 'pipe', 'inherit'] });
    children.push(writer);
    let writerOutput = '';
    writer.stdout!.on('data', (chunk: Buffer) => (writerOutput += chunk.toString()));

    const start = () => {
      const child = spawn(process.execPath, [cli, 'replicate', '-config', configPath, '-log-level', 'info', '-log-format', 'json'], {
        stdio: ['ignore', 'ignore', 'pipe'],
      });
      children.push(child);
      let stderr = '';
      child.stderr!.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
      return { child, stderr: () => stderr };
    };

    // Kill walship at random moments. While it is down, sometimes let the
    // application truncate the WAL, which must start a new generation, and
    // sometimes restore: the restore must hold a prefix of the committed
    // transactions that reaches every position walship logged as shipped.
    for (let round = 0; round < ROUNDS; round++) {
      const run = start();
      // walship needs about a second to start and take its lease before it
      // ships; shorter rounds would rarely see a snapshot and its WAL stored.
      await sleep(1500 + Math.floor(next() * 4000));
      // On a busy machine walship may not have shipped yet. The last round
      // with nothing shipped so far waits for a first segment (bounded), so
      // that the rounds always cover a kill after shipping.
      if (round === ROUNDS - 1 && summary.shippedLines === 0) {
        for (let waited = 0; waited < 20_000 && shippedPositions(run.stderr()).length === 0; waited += 100) await sleep(100);
      }
      run.child.kill('SIGKILL');
      await waitExit(run.child, 10_000);
      summary.rounds++;

      const shipped = shippedPositions(run.stderr());
      summary.shippedLines += shipped.length;
      if (shipped.length > 0) lastShipped = shipped.at(-1);
      const lastChance = round === ROUNDS - 1 && summary.restores === 0;
      const output = path.join(dir, `round-${round}.db`);
      let result: Awaited<ReturnType<typeof restore>> | undefined;
      // A restore runs whether or not this round shipped: a kill around the
      // first snapshot of a new generation is one of the moments to cover.
      if (next() < 0.6 || lastChance) {
        const label = `round ${round}, ${context()}\n${run.stderr().split('\n').filter((l) => /"level":"(warn|error)"/.test(l)).join('\n')}`;
        try {
          result = await restore({ client: direct, outputPath: output });
        } catch (err) {
          // A kill during parallel uploads can leave a segment stored behind
          // one that never was, in the snapshot's own index. A snapshot whose
          // segments are missing would be refused too, although walship stores
          // them first. The restore then refuses until walship's next start
          // ships them; nothing is lost, and the final restore below must succeed.
          const refused = hasCode(err, 'CORRUPT_REPLICA') && /missing WAL segment|needs WAL index/.test((err as Error).message);
          // Before the first snapshot is stored there is nothing to restore.
          const empty = hasCode(err, 'NO_GENERATION') && summary.shippedLines === 0;
          if (!refused && !empty) throw new Error(`restore failed: ${(err as Error).message}\n${label}`, { cause: err });
          assert.ok(!fs.existsSync(output), `a failed restore left ${output}, ${label}`);
          if (refused) {
            summary.refused++;
            if (/needs WAL index/.test((err as Error).message)) summary.refusedSnapshotWal++;
            else summary.refusedHole++;
            if (process.env.CRASH_VERBOSE === '1') console.error(`round ${round} refused: ${(err as Error).message}`);
          }
        }
      }
      if (result !== undefined) {
        const label = `round ${round}, ${context()}\n${run.stderr().split('\n').filter((l) => /"level":"(warn|error)"/.test(l)).join('\n')}`;
        const last = lastShipped;
        assert.equal(integrityCheck(output), 'ok', label);
        if (last !== undefined && result.generation === last.generation) {
          assert.ok(comparePos(result.pos, last) >= 0, `restore reached ${formatPos(result.pos)}, short of the shipped ${formatPos(last)}, ${label}`);
        }
        summary.verified += assertCommittedPrefix(output, committedTransactions(txLog), label);
        summary.restores++;
        fs.rmSync(output);
      }

      if (next() < 0.5) {
        const app = new Database(dbPath);
        app.pragma('busy_timeout = 5000');
        app.pragma('wal_checkpoint(TRUNCATE)');
        app.close();
        summary.truncates++;
      }
    }

    // A last run that stops cleanly after the writer has stopped: every committed transaction is restored.
    proxy.clearRules();
    const last = start();
    await sleep(1000);
    writer.kill('SIGTERM');
    await waitExit(writer, 10_000);
    await sleep(1500);
    last.child.kill('SIGTERM');
    const code = await waitExit(last.child, 30_000);
    assert.equal(code, 0, `walship exited ${code}, ${context()}: ${last.stderr()}`);

    const written = JSON.parse(writerOutput.trim().split('\n').pop()!) as { n: number; busy: number };
    assert.equal(written.busy, 0, `the writer saw SQLITE_BUSY, ${context()}`);

    const output = path.join(dir, 'restored.db');
    await restore({ client: direct, outputPath: output });
    assert.equal(integrityCheck(output), 'ok', context());
    assert.equal(contentHash(output), contentHash(dbPath), `restored content differs from the source, ${context()}`);
    const committed = committedTransactions(txLog);
    assert.equal(committed.length, written.n, `the side file lists ${committed.length} of ${written.n} transactions, ${context()}`);
    assert.equal(assertCommittedPrefix(output, committed, context()), committed.length, `final restore, ${context()}`);
    summary.verified += committed.length;
    assert.ok(summary.shippedLines > 0, `no round shipped a WAL segment before its kill, ${context()}`);
    console.log(`crash rounds: ${context()}`);
  } finally {
    for (const child of children) if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    await proxy.close();
    await server.close();
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';

import Database from 'better-sqlite3';

import { contentHash, fixtureDigest, integrityCheck } from './support/content.js';
import { S3RVER_CREDENTIAL, startS3Server } from './support/s3-server.js';
import type { S3Server } from './support/s3-server.js';

const MAIN = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));
const PACKAGE_JSON = fileURLToPath(new URL('../../package.json', import.meta.url));
const FIXTURE = fileURLToPath(new URL('../../test/fixtures/litestream-v0.3.11/', import.meta.url));

// Replication and restore live in modules written alongside the CLI; their
// tests run once the modules are built.
const NO_REPLICATOR = !existsSync(fileURLToPath(new URL('../src/replicator.js', import.meta.url))) && 'replicator not built';
const NO_RESTORE = !existsSync(fileURLToPath(new URL('../src/restore.js', import.meta.url))) && 'restore not built';

const GEN1 = '78eb93ce395367ad';

interface RunResult {
  status: number | null;
  stdout: string;
  stderr: string;
}

let scratch: string;

before(async () => {
  scratch = await fs.mkdtemp(path.join(os.tmpdir(), 'walship-cli-'));
});

after(async () => {
  await fs.rm(scratch, { recursive: true, force: true });
});

/** Environment of the CLI without settings of the machine running the tests. */
function cleanEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [key, value] of Object.entries(process.env)) {
    if (!/^(AWS_|LITESTREAM_|WALSHIP_)/.test(key)) env[key] = value;
  }
  return { ...env, ...extra };
}

/** Starts the CLI with arguments. */
function start(args: string[], env: Record<string, string> = {}): ChildProcess {
  return spawn(process.execPath, [MAIN, ...args], { env: cleanEnv(env), stdio: ['ignore', 'pipe', 'pipe'] });
}

/** Runs the CLI to completion (at most 60 s) and returns its exit status and output. */
function run(args: string[], env: Record<string, string> = {}): Promise<RunResult> {
  const child = start(args, env);
  return finished(child);
}

/** Collects a child's output and resolves when it exits; kills it after `timeoutMs`. */
function finished(child: ChildProcess, timeoutMs = 60_000): Promise<RunResult> {
  let stdout = '';
  let stderr = '';
  child.stdout!.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
  child.stderr!.on('data', (chunk: Buffer) => (stderr += chunk.toString()));

  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`walship ${child.spawnargs.slice(2).join(' ')} did not exit within ${timeoutMs} ms; stderr: ${stderr}`));
    }, timeoutMs);
    child.on('exit', (status) => {
      clearTimeout(timer);
      resolve({ status, stdout, stderr });
    });
  });
}

/** Waits until a child's stderr contains `text`, polling for at most `timeoutMs`. */
async function waitForStderr(child: ChildProcess, text: string, timeoutMs = 20_000): Promise<void> {
  let stderr = '';
  child.stderr!.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  const deadline = Date.now() + timeoutMs;
  while (!stderr.includes(text)) {
    if (Date.now() > deadline || child.exitCode !== null) assert.fail(`stderr never showed ${JSON.stringify(text)}: ${stderr}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

/** Asserts a failed run whose stderr contains every part. */
function assertFailed(result: RunResult, ...parts: string[]): void {
  assert.notEqual(result.status, 0, `expected a non-zero exit; stderr: ${result.stderr}`);
  for (const part of parts) assert.ok(result.stderr.includes(part), `stderr ${JSON.stringify(result.stderr)} lacks ${JSON.stringify(part)}`);
}

/** Creates a WAL-mode database with rows. */
function createDatabase(dbPath: string, rows: number): void {
  const db = new Database(dbPath);
  db.pragma('journal_mode = wal');
  db.exec('CREATE TABLE t (id INTEGER PRIMARY KEY, body TEXT NOT NULL)');
  const insert = db.prepare('INSERT INTO t (body) VALUES (?)');
  for (let i = 0; i < rows; i++) insert.run(`row ${i} ${'x'.repeat(i % 200)}`);
  db.close();
}

/** Appends rows to a database. */
function addRows(dbPath: string, rows: number): void {
  const db = new Database(dbPath);
  const insert = db.prepare('INSERT INTO t (body) VALUES (?)');
  db.transaction(() => {
    for (let i = 0; i < rows; i++) insert.run(`later ${i}`);
  })();
  db.close();
}

/** Returns a fresh directory under the scratch directory. */
async function freshDir(name: string): Promise<string> {
  return fs.mkdtemp(path.join(scratch, `${name}-`));
}

/** Writes a config file and returns its path. */
async function writeConfig(text: string): Promise<string> {
  const dir = await freshDir('config');
  const file = path.join(dir, 'walship.yml');
  await fs.writeFile(file, text);
  return file;
}

describe('cli basics', () => {
  test('version', async () => {
    const pkg = JSON.parse(await fs.readFile(PACKAGE_JSON, 'utf8')) as { version: string };
    const result = await run(['version']);
    assert.equal(result.status, 0);
    assert.equal(result.stdout, `walship ${pkg.version}\n`);
  });

  test('help lists flags', async () => {
    const replicate = await run(['replicate', '--help']);
    assert.equal(replicate.status, 0);
    for (const flag of ['--dsn', '--bucket', '--db-name', '--endpoint', '--region', '--force-path-style', '--sync-interval', '--config', '--no-expand-env', '--log-level', '--log-format']) {
      assert.ok(replicate.stdout.includes(flag), `replicate help lacks ${flag}`);
    }
    assert.match(replicate.stdout.replace(/\s+/g, ' '), /\(default: 1s\)/);

    const restore = await run(['restore', '-h']);
    assert.equal(restore.status, 0);
    for (const flag of ['-o, --output', '--generation', '--index', '--parallelism', '--replica', '--bucket', '--config']) {
      assert.ok(restore.stdout.includes(flag), `restore help lacks ${flag}`);
    }
    assert.match(restore.stdout.replace(/\s+/g, ' '), /\(default: 8\)/);
  });

  test('unknown flag named', async () => {
    assertFailed(await run(['replicate', '-bogus', 'x']), "'-bogus'");
    assertFailed(await run(['restore', '--nope', 'file:///x']), "'--nope'");
  });

  test('unknown command named', async () => {
    assertFailed(await run(['compact']), "'compact'");
  });
});

describe('cli config errors', () => {
  test('malformed config names line', async () => {
    const file = await writeConfig('dbs:\n  - path: /data/a.db\n    replicas: [\n  - x\n');
    const result = await run(['replicate', `-config=${file}`]);
    assertFailed(result, file, 'line 4');
  });

  test('gcs replica rejected', async () => {
    const file = await writeConfig('dbs:\n  - path: /data/a.db\n    replicas:\n      - type: gcs\n        bucket: b\n');
    assertFailed(await run(['replicate', '-config', file]), '"gcs"', '/data/a.db', 'not supported');
  });

  test('missing config file named', async () => {
    assertFailed(await run(['replicate', '-config', '/nonexistent/walship.yml']), '/nonexistent/walship.yml');
  });

  test('empty config rejected', async () => {
    const file = await writeConfig('dbs: []\n');
    assertFailed(await run(['replicate', '-config', file]), file, 'no databases');
  });

  test('environment expansion switch', async () => {
    const file = await writeConfig('dbs:\n  - path: /data/a.db\n    replicas:\n      - type: $TYPE\n        bucket: b\n');
    assertFailed(await run(['replicate', '-config', file], { TYPE: 'gcs' }), '"gcs"');
    assertFailed(await run(['replicate', '-no-expand-env', '-config', file], { TYPE: 'gcs' }), '"$type"');
  });
});

describe('cli replicate arguments', () => {
  test('dsn without bucket', async () => {
    assertFailed(await run(['replicate', '-dsn', '/data/a.db']), '-bucket NAME');
  });

  test('database without replica URL', async () => {
    assertFailed(await run(['replicate', '/data/a.db']), '/data/a.db', 'REPLICA_URL');
  });

  test('config with dsn rejected', async () => {
    assertFailed(await run(['replicate', '-config', '/x.yml', '-dsn', '/data/a.db', '-bucket', 'b']), '-config');
  });

  test('bad sync interval named', async () => {
    assertFailed(await run(['replicate', '-dsn', '/data/a.db', '-bucket', 'b', '-sync-interval', '5']), 'sync-interval "5"');
  });

  test('missing database named', { skip: NO_REPLICATOR }, async () => {
    const dir = await freshDir('missing');
    const dbPath = path.join(dir, 'absent.db');
    const result = await run(['replicate', '-once', dbPath, `file://${dir}/replica`]);
    assertFailed(result, dbPath, 'database not shipped');
    assert.equal(existsSync(dbPath), false);
  });

  test('non-SQLite file named', { skip: NO_REPLICATOR }, async () => {
    const dir = await freshDir('notsqlite');
    const dbPath = path.join(dir, 'notes.db');
    await fs.writeFile(dbPath, 'just some text\n');
    const result = await run(['replicate', '-once', '-dsn', dbPath, '-bucket', 'b', '-endpoint', 'http://127.0.0.1:9']);
    assertFailed(result, dbPath, 'SQLite');
    assert.equal(await fs.readFile(dbPath, 'utf8'), 'just some text\n');
  });
});

describe('cli restore arguments', () => {
  test('missing -o', async () => {
    assertFailed(await run(['restore', 'file:///tmp/walship-none']), '-o OUTPUT');
  });

  test('-index needs -generation', async () => {
    assertFailed(await run(['restore', '-o', '/tmp/x.db', '-index', '1', 'file:///tmp/walship-none']), '-index', '-generation');
  });

  test('bad generation named', async () => {
    assertFailed(await run(['restore', '-o', '/tmp/x.db', '-generation', 'XYZ', 'file:///tmp/walship-none']), '-generation XYZ');
  });

  test('database not in config', async () => {
    const file = await writeConfig('dbs:\n  - path: /data/a.db\n    replicas:\n      - path: /backups/a\n');
    assertFailed(await run(['restore', '-config', file, '/data/b.db']), '/data/b.db', file);
    assertFailed(await run(['restore', '-config', file, '-replica', 'nope', '/data/a.db']), '"nope"', 'file');
  });
});

describe('cli restore', () => {
  test('Litestream replica by generation', { skip: NO_RESTORE }, async () => {
    const expected = JSON.parse(await fs.readFile(path.join(FIXTURE, 'expected.json'), 'utf8')) as {
      points: { name: string; rows: number; sha256: string }[];
    };
    const point = (name: string) => expected.points.find((p) => p.name === name)!;
    const dir = await freshDir('fixture');

    const outC = path.join(dir, 'c.db');
    const c = await run(['restore', '-o', outC, '-generation', GEN1, `file://${FIXTURE}file-replica`]);
    assert.equal(c.status, 0, c.stderr);
    assert.equal(integrityCheck(outC), 'ok');
    assert.equal(fixtureDigest(outC), point('C').sha256);

    const outB = path.join(dir, 'b.db');
    const b = await run(['restore', '-o', outB, '-generation', GEN1, '-index', '1', '-parallelism', '2', `file://${FIXTURE}file-replica`]);
    assert.equal(b.status, 0, b.stderr);
    assert.equal(integrityCheck(outB), 'ok');
    assert.equal(fixtureDigest(outB), point('B').sha256);
  });

  test('existing output refused', { skip: NO_RESTORE }, async () => {
    const dir = await freshDir('existing');
    const output = path.join(dir, 'out.db');
    await fs.writeFile(output, 'keep me');

    const result = await run(['restore', '-o', output, '-generation', GEN1, `file://${FIXTURE}file-replica`]);
    assertFailed(result, output);
    assert.equal(await fs.readFile(output, 'utf8'), 'keep me');
    assert.deepEqual(await fs.readdir(dir), ['out.db']);

    const skipped = await run(['restore', '-if-db-not-exists', '-o', output, `file://${FIXTURE}file-replica`]);
    assert.equal(skipped.status, 0, skipped.stderr);
    assert.match(skipped.stdout, /already exists/);
    assert.equal(await fs.readFile(output, 'utf8'), 'keep me');
  });

  test('unwritable output directory', { skip: NO_RESTORE }, async (t) => {
    const dir = await freshDir('readonly');
    try {
      execFileSync('mount', ['--bind', '-o', 'ro', dir, dir], { stdio: 'pipe' });
    } catch (err) {
      t.skip(`read-only bind mount unavailable: ${String(err)}`);
      return;
    }

    try {
      const output = path.join(dir, 'out.db');
      const result = await run(['restore', '-o', output, '-generation', GEN1, `file://${FIXTURE}file-replica`]);
      assertFailed(result, dir);
      assert.doesNotMatch(result.stderr, /restore started/);
      assert.deepEqual(await fs.readdir(dir), []);
    } finally {
      execFileSync('umount', [dir]);
    }
  });

  test('empty replica has no backups', { skip: NO_RESTORE }, async () => {
    const replica = await freshDir('empty-replica');
    const dir = await freshDir('empty-out');
    const output = path.join(dir, 'out.db');

    const result = await run(['restore', '-o', output, `file://${replica}`]);
    assertFailed(result, 'no backups', replica);
    assert.equal(existsSync(output), false);

    const tolerated = await run(['restore', '-if-replica-exists', '-o', output, `file://${replica}`]);
    assert.equal(tolerated.status, 0, tolerated.stderr);
    assert.match(tolerated.stdout, /no matching backups found/);
    assert.equal(existsSync(output), false);
    assert.deepEqual(await fs.readdir(dir), []);
  });
});

describe('cli replicate and restore', () => {
  let server: S3Server | undefined;
  const s3Env = { AWS_ACCESS_KEY_ID: S3RVER_CREDENTIAL, AWS_SECRET_ACCESS_KEY: S3RVER_CREDENTIAL };

  before(async () => {
    if (!NO_REPLICATOR && !NO_RESTORE) server = await startS3Server();
  });

  after(async () => {
    await server?.close();
  });

  test('file replica through SIGTERM', { skip: NO_REPLICATOR || NO_RESTORE }, async () => {
    const dir = await freshDir('e2e-file');
    const dbPath = path.join(dir, 'app.db');
    createDatabase(dbPath, 300);

    const child = start(['replicate', '-sync-interval', '100ms', dbPath, `file://${dir}/replica`]);
    const done = finished(child);
    await waitForStderr(child, 'replication started');
    addRows(dbPath, 50);
    child.kill('SIGTERM');

    const result = await done;
    assert.equal(result.status, 0, result.stderr);
    assert.match(result.stderr, /replication stopped/);

    const output = path.join(dir, 'restored.db');
    const restored = await run(['restore', '-o', output, `file://${dir}/replica`]);
    assert.equal(restored.status, 0, restored.stderr);
    assert.equal(integrityCheck(output), 'ok');
    assert.equal(contentHash(output), contentHash(dbPath));
  });

  test('-dsn and -bucket through s3', { skip: NO_REPLICATOR || NO_RESTORE }, async () => {
    const dir = await freshDir('e2e-s3');
    const dbPath = path.join(dir, 'Orders Produção.sqlite');
    createDatabase(dbPath, 200);
    const endpoint = server!.endpoint;

    const child = start(['replicate', '-dsn', dbPath, '-bucket', server!.bucket, '-endpoint', endpoint, '-sync-interval', '100ms'], s3Env);
    const done = finished(child);
    await waitForStderr(child, 'replication started');
    addRows(dbPath, 20);
    child.kill('SIGINT');
    const result = await done;
    assert.equal(result.status, 0, result.stderr);

    // The database name comes from the file name, so the restore finds it under databases/orders_producao.
    const output = path.join(dir, 'restored.db');
    const restored = await run(['restore', '-o', output, '-bucket', server!.bucket, '-endpoint', endpoint, '-db-name', 'orders_producao'], s3Env);
    assert.equal(restored.status, 0, restored.stderr);
    assert.equal(integrityCheck(output), 'ok');
    assert.equal(contentHash(output), contentHash(dbPath));

    const byUrl = path.join(dir, 'by-url.db');
    const url = `s3://${server!.bucket}/databases/orders_producao?endpoint=${endpoint}`;
    const restoredByUrl = await run(['restore', '-o', byUrl, url], s3Env);
    assert.equal(restoredByUrl.status, 0, restoredByUrl.stderr);
    assert.equal(contentHash(byUrl), contentHash(dbPath));
  });

  test('wrong -db-name has no backups', { skip: NO_RESTORE }, async () => {
    const started = server ?? (await startS3Server());
    try {
      const output = path.join(await freshDir('s3-none'), 'nothing.db');
      const result = await run(['restore', '-o', output, '-bucket', started.bucket, '-endpoint', started.endpoint], s3Env);
      assertFailed(result, 'no backups', `s3://${started.bucket}/databases/nothing`);
      assert.equal(existsSync(output), false);
    } finally {
      if (server === undefined) await started.close();
    }
  });
});

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { renameSync } from 'node:fs';
import fs from 'node:fs/promises';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';

import Database from 'better-sqlite3';

import { createReplicaClient } from '../src/replica/create.js';
import { contentHash, integrityCheck } from './support/content.js';
import { S3RVER_CREDENTIAL, s3ClientConfig, startS3Server } from './support/s3-server.js';
import type { S3Server } from './support/s3-server.js';

const MAIN = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));

/** A walship process with its output so far and its exit. */
interface Walship {
  child: ChildProcess;
  output(): string;
  /** Resolves with the exit status, or 128 + signal number when a signal ended it. */
  exited: Promise<number>;
}

let scratch: string;
const running = new Set<ChildProcess>();

before(async () => {
  scratch = await fs.mkdtemp(path.join(os.tmpdir(), 'walship-daemon-'));
});

after(async () => {
  for (const child of running) if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  await fs.rm(scratch, { recursive: true, force: true });
});

/** Starts the CLI without credentials or settings of the machine running the tests. */
function walship(args: string[], env: Record<string, string> = {}): Walship {
  const clean: NodeJS.ProcessEnv = {};
  for (const [key, value] of Object.entries(process.env)) if (!/^(AWS_|LITESTREAM_|WALSHIP_|XDG_RUNTIME_DIR)/.test(key)) clean[key] = value;
  const child = spawn(process.execPath, [MAIN, ...args], { env: { ...clean, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  running.add(child);

  let output = '';
  child.stdout!.on('data', (chunk: Buffer) => (output += chunk.toString()));
  child.stderr!.on('data', (chunk: Buffer) => (output += chunk.toString()));
  const exited = new Promise<number>((resolve) => {
    child.once('close', (code, signal) => {
      running.delete(child);
      resolve(code ?? 128 + os.constants.signals[signal!]);
    });
  });
  // A test that fails leaves no process behind: each run is bounded to 60 s.
  const timer = setTimeout(() => child.kill('SIGKILL'), 60_000);
  void exited.then(() => clearTimeout(timer));
  return { child, output: () => output, exited };
}

/** Waits until the output contains `text`, for at most `timeoutMs`. */
async function waitForOutput(process: Walship, text: string, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!process.output().includes(text)) {
    if (Date.now() > deadline || process.child.exitCode !== null) assert.fail(`output never showed ${JSON.stringify(text)}:\n${process.output()}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

/** Returns a fresh directory under the scratch directory. */
function freshDir(name: string): Promise<string> {
  return fs.mkdtemp(path.join(scratch, `${name}-`));
}

/** Creates a WAL-mode database with rows, built beside `dbPath` and renamed into place. */
function createDatabase(dbPath: string, rows: number): void {
  const db = new Database(`${dbPath}.building`);
  db.pragma('journal_mode = wal');
  db.exec('CREATE TABLE t (id INTEGER PRIMARY KEY, body BLOB NOT NULL)');
  const insert = db.prepare('INSERT INTO t (body) VALUES (?)');
  db.transaction(() => {
    for (let i = 0; i < rows; i++) insert.run(Buffer.from(`row ${i}`));
  })();
  db.close();
  renameSync(`${dbPath}.building`, dbPath);
}

/** Appends `rows` rows of `bytes` random bytes each in one transaction. */
function addRows(dbPath: string, rows: number, bytes = 100): void {
  const db = new Database(dbPath);
  const insert = db.prepare('INSERT INTO t (body) VALUES (?)');
  db.transaction(() => {
    for (let i = 0; i < rows; i++) insert.run(randomBytes(bytes));
  })();
  db.close();
}

/** Restores a replica URL with the CLI and returns the restored file's content hash after an integrity check. */
async function restoredHash(url: string, env: Record<string, string> = {}): Promise<string> {
  const output = path.join(await freshDir('restored'), 'out.db');
  const restore = walship(['restore', '-o', output, url], env);
  assert.equal(await restore.exited, 0, restore.output());
  assert.equal(integrityCheck(output), 'ok');
  return contentHash(output);
}

/** Writes a config file of file-replicated databases and returns its path. */
async function writeConfig(dir: string, dbs: string[], extra = ''): Promise<string> {
  const lines = [extra, 'dbs:'];
  for (const db of dbs) {
    lines.push(`  - path: ${db}`, '    monitor-interval: 50ms', '    replicas:', `      - path: ${db}-replica`, '        sync-interval: 50ms');
  }
  const file = path.join(dir, 'walship.yml');
  await fs.writeFile(file, lines.join('\n') + '\n');
  return file;
}

describe('replicate -once', () => {
  test('exit 0 when all shipped', async () => {
    const dir = await freshDir('once-ok');
    const dbPath = path.join(dir, 'app.db');
    createDatabase(dbPath, 200);
    const run = walship(['replicate', '-once', '-config', await writeConfig(dir, [dbPath])]);
    assert.equal(await run.exited, 0, run.output());
    assert.equal(await restoredHash(`file://${dbPath}-replica`), contentHash(dbPath));
  });

  test('exit 1 when one is missing', async () => {
    const dir = await freshDir('once-missing');
    const dbPath = path.join(dir, 'app.db');
    const missing = path.join(dir, 'absent.db');
    createDatabase(dbPath, 50);
    const run = walship(['replicate', '-once', '-config', await writeConfig(dir, [dbPath, missing])]);
    assert.equal(await run.exited, 1, run.output());
    assert.match(run.output(), /database not shipped.*db=absent/);
    // The database that exists was shipped anyway.
    assert.equal(await restoredHash(`file://${dbPath}-replica`), contentHash(dbPath));
  });
});

describe('directory entry', () => {
  test('once and restore by path', async () => {
    const dir = await freshDir('dir-once');
    const data = path.join(dir, 'data');
    await fs.mkdir(data);
    const dbPath = path.join(data, 'Tenant A.db');
    createDatabase(dbPath, 80);
    const config = path.join(dir, 'walship.yml');
    await fs.writeFile(config, `dbs:\n  - dir: ${data}\n    pattern: "*.db"\n    replicas:\n      - path: ${dir}/replica\n`);

    const run = walship(['replicate', '-once', '-config', config]);
    assert.equal(await run.exited, 0, run.output());
    assert.equal(await restoredHash(`file://${dir}/replica/databases/tenant_a`), contentHash(dbPath));

    const output = path.join(dir, 'restored.db');
    const restore = walship(['restore', '-config', config, '-o', output, dbPath]);
    assert.equal(await restore.exited, 0, restore.output());
    assert.equal(contentHash(output), contentHash(dbPath));
  });
});

describe('control socket', () => {
  test('sync -wait ships now', async () => {
    const dir = await freshDir('sync');
    const dbPath = path.join(dir, 'app.db');
    const socket = path.join(dir, 'control.sock');
    createDatabase(dbPath, 50);
    // A sync interval of an hour leaves new frames unshipped until a sync request.
    const daemon = walship(['replicate', '-sync-interval', '1h', '-control-socket', socket, dbPath, `file://${dir}/replica`]);
    await waitForOutput(daemon, 'replication started');
    assert.equal((await fs.stat(socket)).mode & 0o777, 0o600);

    addRows(dbPath, 30);
    const sync = walship(['sync', '-wait', '-control-socket', socket, 'app']);
    assert.equal(await sync.exited, 0, sync.output());
    assert.match(sync.output(), /synced\ndb=app ok/);
    assert.equal(await restoredHash(`file://${dir}/replica`), contentHash(dbPath));

    const unknown = walship(['sync', '-wait', '-control-socket', socket, 'other']);
    assert.equal(await unknown.exited, 1);
    assert.match(unknown.output(), /no database named "other"/);

    daemon.child.kill('SIGTERM');
    assert.equal(await daemon.exited, 0, daemon.output());
    await assert.rejects(fs.stat(socket), { code: 'ENOENT' });

    const noDaemon = walship(['sync', '-control-socket', socket]);
    assert.equal(await noDaemon.exited, 1);
    assert.match(noDaemon.output(), /no walship daemon listens on/);
  });
});

describe('snapshot command', () => {
  test('snapshot stores a new snapshot', async () => {
    const dir = await freshDir('snapshot');
    const dbPath = path.join(dir, 'app.db');
    const socket = path.join(dir, 'control.sock');
    createDatabase(dbPath, 50);
    const daemon = walship(['replicate', '-sync-interval', '50ms', '-control-socket', socket, dbPath, `file://${dir}/replica`]);
    await waitForOutput(daemon, 'replication started');

    // WAL index 0 has the first snapshot: a second one there would hide the
    // points in time between the two, so the request writes none.
    addRows(dbPath, 30);
    const refused = walship(['snapshot', '-control-socket', socket, 'app']);
    assert.equal(await refused.exited, 0, refused.output());
    assert.match(refused.output(), /no new snapshot/);
    assert.equal(daemon.output().split('snapshot written').length - 1, 1, daemon.output());

    // The request asked SQLite to start a new index at the next write, so
    // the next request writes a snapshot there.
    addRows(dbPath, 30);
    await waitForOutput(daemon, 'wal restarted, next index');
    const snapshot = walship(['snapshot', '-control-socket', socket, 'app']);
    assert.equal(await snapshot.exited, 0, snapshot.output());
    assert.match(snapshot.output(), /snapshot written/);
    assert.equal(daemon.output().split('snapshot written').length - 1, 2, daemon.output());
    assert.match(daemon.output(), /snapshot written.*index=1 /);
    assert.equal(await restoredHash(`file://${dir}/replica`), contentHash(dbPath));

    daemon.child.kill('SIGTERM');
    assert.equal(await daemon.exited, 0, daemon.output());
  });
});

describe('single writer', () => {
  let server: S3Server;
  const s3Env = { AWS_ACCESS_KEY_ID: S3RVER_CREDENTIAL, AWS_SECRET_ACCESS_KEY: S3RVER_CREDENTIAL };

  before(async () => {
    server = await startS3Server();
  });

  after(async () => {
    await server.close();
  });

  test('second instance on this host refused', async () => {
    const dir = await freshDir('second');
    const dbPath = path.join(dir, 'app.db');
    createDatabase(dbPath, 50);
    const args = ['replicate', '-control-socket', 'off', dbPath, `file://${dir}/replica`];
    const first = walship(args);
    await waitForOutput(first, 'replication started');

    const second = walship([...args.slice(0, 3), dbPath, `file://${dir}/other-replica`]);
    assert.equal(await second.exited, 1, second.output());
    assert.match(second.output(), /app\.db-walship\.lock/);
    assert.match(second.output(), new RegExp(`walship process ${first.child.pid} `));

    first.child.kill('SIGTERM');
    assert.equal(await first.exited, 0, first.output());
    await assert.rejects(fs.stat(`${dbPath}-walship.lock`), { code: 'ENOENT' });
  });

  test('second writer on one prefix refused', async () => {
    const dir = await freshDir('lease');
    const one = path.join(dir, 'one.db');
    const two = path.join(dir, 'two.db');
    createDatabase(one, 50);
    createDatabase(two, 20);
    const replica = `s3://${server.bucket}/shared-prefix?endpoint=${server.endpoint}`;
    const first = walship(['replicate', '-control-socket', 'off', one, replica], s3Env);
    await waitForOutput(first, 'replication started');

    // Another database, so no lock file is shared: only the lease stops it.
    const second = walship(['replicate', '-control-socket', 'off', two, replica], s3Env);
    assert.equal(await second.exited, 1, second.output());
    assert.match(second.output(), new RegExp(`leased by walship process ${first.child.pid}`));

    first.child.kill('SIGTERM');
    assert.equal(await first.exited, 0, first.output());
    assert.equal(await restoredHash(replica, s3Env), contentHash(one));
  });
});

describe('status server', () => {
  test('metrics and health over HTTP', async () => {
    const dir = await freshDir('status');
    const dbPath = path.join(dir, 'app.db');
    createDatabase(dbPath, 50);
    const daemon = walship(['replicate', '-addr', '127.0.0.1:0', '-sync-interval', '50ms', '-control-socket', 'off', dbPath, `file://${dir}/replica`]);
    await waitForOutput(daemon, 'snapshot written');
    addRows(dbPath, 10);
    await waitForOutput(daemon, 'new transaction:');
    const url = /serving metrics and health checks url=(\S+)\/metrics/.exec(daemon.output())?.[1];
    assert.ok(url, daemon.output());

    const metrics = await fetch(`${url}/metrics`);
    assert.equal(metrics.status, 200);
    const text = await metrics.text();
    assert.match(text, /walship_wal_segments_shipped_total\{db="app",replica="file"\} [1-9]/);
    assert.equal((await fetch(`${url}/healthz`)).status, 200);
    assert.equal((await fetch(`${url}/readyz`)).status, 200);

    daemon.child.kill('SIGTERM');
    assert.equal(await daemon.exited, 0, daemon.output());
  });
});

describe('replicate -exec', () => {
  test('child exit status passed through', async () => {
    const dir = await freshDir('exec-status');
    const dbPath = path.join(dir, 'app.db');
    createDatabase(dbPath, 20);
    // The application writes a row, then exits 7; the final sync ships its row.
    const script = path.join(dir, 'app.cjs');
    const source = `const D = require(${JSON.stringify(betterSqlite3Path())});\nconst d = new D(process.argv[2]);\nd.exec("INSERT INTO t (body) VALUES (x'00')");\nd.close();\nprocess.exit(7);\n`;
    await fs.writeFile(script, source);
    const run = walship(['replicate', '-control-socket', 'off', '-exec', `"${process.execPath}" ${script} "${dbPath}"`, dbPath, `file://${dir}/replica`]);
    assert.equal(await run.exited, 7, run.output());
    assert.match(run.output(), /application exited.*status=7/);
    assert.equal(await restoredHash(`file://${dir}/replica`), contentHash(dbPath));
  });

  test('signal forwarded, 128+signo', async () => {
    const dir = await freshDir('exec-signal');
    const dbPath = path.join(dir, 'app.db');
    createDatabase(dbPath, 20);
    const run = walship(['replicate', '-control-socket', 'off', '-exec', 'sleep 30', dbPath, `file://${dir}/replica`]);
    await waitForOutput(run, 'application started');
    run.child.kill('SIGTERM');
    assert.equal(await run.exited, 128 + os.constants.signals.SIGTERM, run.output());
    assert.match(run.output(), /forwarding signal to the application/);
  });

  test('unknown program rejected', async () => {
    const dir = await freshDir('exec-missing');
    const dbPath = path.join(dir, 'app.db');
    createDatabase(dbPath, 1);
    const run = walship(['replicate', '-control-socket', 'off', '-exec', 'walship-no-such-program', dbPath, `file://${dir}/replica`]);
    assert.equal(await run.exited, 1);
    assert.match(run.output(), /walship-no-such-program.*cannot be started/);
  });
});

describe('heartbeat', () => {
  test('requested after first sync', async () => {
    const dir = await freshDir('heartbeat');
    const dbPath = path.join(dir, 'app.db');
    createDatabase(dbPath, 20);
    const requests: string[] = [];
    const server = http.createServer((req, res) => {
      requests.push(`${req.method} ${req.url}`);
      res.end('ok');
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/ping/abc`;
    try {
      const config = await writeConfig(dir, [dbPath], `heartbeat-url: ${url}\nheartbeat-interval: 1m\ncontrol-socket: off`);
      const daemon = walship(['replicate', '-config', config]);
      const deadline = Date.now() + 15_000;
      while (requests.length === 0 && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 50));
      addRows(dbPath, 5);
      await new Promise((resolve) => setTimeout(resolve, 500));
      daemon.child.kill('SIGTERM');
      assert.equal(await daemon.exited, 0, daemon.output());
      // One request per minute at most, so exactly one in this short run.
      assert.deepEqual(requests, ['GET /ping/abc']);
    } finally {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    }
  });
});

describe('shutdown', () => {
  let server: S3Server;
  const env = { AWS_ACCESS_KEY_ID: S3RVER_CREDENTIAL, AWS_SECRET_ACCESS_KEY: S3RVER_CREDENTIAL };

  before(async () => {
    server = await startS3Server();
  });

  after(async () => {
    await server.close();
  });

  test('SIGTERM during large upload', async (t) => {
    const dir = await freshDir('large');
    const dbPath = path.join(dir, 'app.db');
    createDatabase(dbPath, 100);
    const url = `s3://${server.bucket}/large?endpoint=${server.endpoint}`;
    const daemon = walship(['replicate', '-control-socket', 'off', '-shutdown-timeout', '2s', '-sync-interval', '10ms', dbPath, url], env);
    await waitForOutput(daemon, 'replication started');
    await waitForOutput(daemon, 'snapshot written');
    const before = contentHash(dbPath);

    // About 40 MB in one transaction: several segments, each a multipart upload.
    addRows(dbPath, 160, 256 * 1024);
    const after = contentHash(dbPath);
    await new Promise((resolve) => setTimeout(resolve, 300));
    const signalled = Date.now();
    daemon.child.kill('SIGTERM');
    const status = await daemon.exited;
    const elapsed = Date.now() - signalled;
    t.diagnostic(`exit status ${status} after ${elapsed} ms`);

    // 0 when the final sync finished in time, 1 when WAL was left unshipped; a bound, not a timing measurement.
    assert.ok(status === 0 || status === 1, `status ${status}\n${daemon.output()}`);
    if (status === 1) assert.match(daemon.output(), /shutdown timed out, WAL left unshipped/);
    assert.ok(elapsed < 15_000, `exit took ${elapsed} ms\n${daemon.output()}`);

    const client = createReplicaClient(s3ClientConfig(server, server.bucket, 'large'));
    try {
      assert.deepEqual(await client.listMultipartUploads(''), []);
    } finally {
      await client.close();
    }
    const restored = await restoredHash(url, env);
    assert.ok(restored === before || restored === after, 'the restored database is neither the state before nor after the large transaction');
  });
});

/** Returns the path of the better-sqlite3 package, for the application script of the -exec test. */
function betterSqlite3Path(): string {
  return fileURLToPath(new URL('../../node_modules/better-sqlite3', import.meta.url));
}

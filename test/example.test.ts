import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';

import { S3RVER_CREDENTIAL, startS3Server } from './support/s3-server.js';
import type { S3Server } from './support/s3-server.js';

/** The compiled example application. */
const EXAMPLE = fileURLToPath(new URL('../examples/page-views.js', import.meta.url));

/** Maximum wait for the application to start serving or to exit, in ms. */
const STEP_TIMEOUT_MS = 20_000;

let scratch: string;
let s3: S3Server;

before(async () => {
  scratch = await fs.mkdtemp(path.join(os.tmpdir(), 'walship-example-'));
  s3 = await startS3Server();
});

after(async () => {
  await s3.close();
  await fs.rm(scratch, { recursive: true, force: true });
});

/** A running example application with its log output so far. */
interface App {
  child: ChildProcess;
  /** Everything written to stderr. */
  log: () => string;
  /** Base URL of its HTTP server. */
  url: string;
  /** Resolves with the exit code. */
  exited: Promise<number | null>;
}

/** Starts the example against the test server and waits until it serves, reading the bound port from its log. */
async function startApp(args: string[]): Promise<App> {
  const child = spawn(process.execPath, [EXAMPLE, ...args, '-endpoint', s3.endpoint, '-addr', '127.0.0.1:0'], {
    env: {
      ...process.env,
      AWS_ACCESS_KEY_ID: S3RVER_CREDENTIAL,
      AWS_SECRET_ACCESS_KEY: S3RVER_CREDENTIAL,
      AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: 'true',
    },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let output = '';
  child.stderr!.setEncoding('utf8').on('data', (chunk: string) => (output += chunk));
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));

  const deadline = Date.now() + STEP_TIMEOUT_MS;
  for (;;) {
    const match = /serving page views .*url=(http:\/\/127\.0\.0\.1:\d+)\//.exec(output);
    if (match) return { child, log: () => output, url: match[1]!, exited };
    if (child.exitCode !== null || Date.now() > deadline) {
      child.kill('SIGKILL');
      assert.fail(`example did not start serving (exit code ${child.exitCode}):\n${output}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

/** Sends SIGTERM and returns the exit code, killing the process if it does not exit in time. */
async function stopApp(app: App): Promise<number | null> {
  app.child.kill('SIGTERM');
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<'timeout'>((resolve) => (timer = setTimeout(() => resolve('timeout'), STEP_TIMEOUT_MS)));
  const code = await Promise.race([app.exited, timeout]);
  clearTimeout(timer);
  if (code === 'timeout') {
    app.child.kill('SIGKILL');
    assert.fail(`example did not exit after SIGTERM:\n${app.log()}`);
  }
  return code;
}

/** Requests a page and returns the view count of the response. */
async function view(app: App, page: string): Promise<number> {
  const response = await fetch(`${app.url}${page}`);
  assert.equal(response.status, 200, await response.clone().text());
  const body = (await response.json()) as { views: number; db: string; pos: string };
  return body.views;
}

/** Deletes the database with its WAL, shared memory, lock file and walship's meta directory. */
async function deleteDatabase(dbPath: string): Promise<void> {
  const dir = path.dirname(dbPath);
  const base = path.basename(dbPath);
  for (const file of [dbPath, `${dbPath}-wal`, `${dbPath}-shm`, `${dbPath}-walship.lock`, path.join(dir, `.${base}-walship`)]) {
    await fs.rm(file, { recursive: true, force: true });
  }
}

describe('page-views example', () => {
  test('count survives deleting the database', async () => {
    const dir = await fs.mkdtemp(path.join(scratch, 'app-'));
    const dbPath = path.join(dir, 'app.db');
    const args = ['-dsn', dbPath, '-bucket', s3.bucket, '-db-name', 'Production App'];

    const first = await startApp(args);
    let log: string;
    try {
      assert.match(first.log(), /no backup found in the bucket, starting with an empty database db=production_app location=s3:\/\/walship-test\/databases\/production_app/);
      assert.equal(await view(first, '/'), 1);
      assert.equal(await view(first, '/about'), 2);
      assert.equal(await view(first, '/'), 3);
    } finally {
      assert.equal(await stopApp(first), 0, first.log());
      log = first.log();
    }
    assert.match(log, /new transaction: db=production_app pre=[0-9a-f]{16}\/[0-9a-f]{8}:\d+ post=[0-9a-f]{16}\/[0-9a-f]{8}:\d+ elapsed=\d+ms/);
    assert.match(log, /stopped, everything is stored in the bucket/);

    await deleteDatabase(dbPath);
    const second = await startApp(args);
    try {
      assert.match(second.log(), /restored the newest backup db=production_app/);
      assert.equal(await view(second, '/'), 4);
    } finally {
      assert.equal(await stopApp(second), 0, second.log());
    }
  });

  test('existing database is kept', async () => {
    const dir = await fs.mkdtemp(path.join(scratch, 'kept-'));
    const dbPath = path.join(dir, 'kept.db');
    const args = ['-dsn', dbPath, '-bucket', s3.bucket];

    const first = await startApp(args);
    try {
      assert.equal(await view(first, '/'), 1);
    } finally {
      assert.equal(await stopApp(first), 0, first.log());
    }

    const second = await startApp(args);
    try {
      assert.match(second.log(), /database file exists, not restoring db=kept/);
      assert.equal(await view(second, '/'), 2);
      // The example closes its own connection first, so SQLite keeps the WAL and the generation goes on.
      assert.doesNotMatch(second.log(), /new generation/);
    } finally {
      assert.equal(await stopApp(second), 0, second.log());
    }
  });

  test('missing bucket flag exits 1', async () => {
    const child = spawn(process.execPath, [EXAMPLE, '-dsn', path.join(scratch, 'x.db')], { stdio: ['ignore', 'ignore', 'pipe'] });
    let output = '';
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => (output += chunk));
    const code = await new Promise<number | null>((resolve) => child.once('exit', resolve));
    assert.equal(code, 1);
    assert.match(output, /required option '--bucket <name>' not specified/);
  });
});

import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { mkdtemp, readFile, rm, stat, symlink, utimes, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';

import Database from 'better-sqlite3';

import { hasCode } from '../src/errors.js';
import { DatabaseLock, lockFilePath } from '../src/lock-file.js';
import { createLogger } from '../src/logger.js';

const LOCK_MODULE = new URL('../src/lock-file.js', import.meta.url).href;

/** Collects JSON log lines. */
function captureLog(): { logger: ReturnType<typeof createLogger>; lines: Record<string, unknown>[] } {
  const lines: Record<string, unknown>[] = [];
  const logger = createLogger({ format: 'json', destination: { write: (line: string) => lines.push(JSON.parse(line)) } });
  return { logger, lines };
}

/** Runs a Node.js ES module script in a child process with the lock module as `lockModule`. */
function runChild(script: string, dbPath: string): ChildProcess {
  const code = `import * as lockModule from ${JSON.stringify(LOCK_MODULE)};\nconst dbPath = ${JSON.stringify(dbPath)};\n${script}`;
  return spawn(process.execPath, ['--input-type=module', '-e', code], { stdio: ['pipe', 'pipe', 'pipe'] });
}

/** Waits until a child prints `line` on standard output, for at most 10 s. */
async function waitForLine(child: ChildProcess, line: string): Promise<void> {
  let output = '';
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`child printed no ${line} within 10 s: ${output}`)), 10_000);
    child.stdout!.on('data', (chunk: Buffer) => {
      output += chunk.toString();
      if (output.includes(line)) {
        clearTimeout(timer);
        resolve();
      }
    });
    child.on('exit', () => reject(new Error(`child exited before printing ${line}: ${output}`)));
  });
}

async function exists(file: string): Promise<boolean> {
  return stat(file).then(
    () => true,
    () => false,
  );
}

describe('database lock file', () => {
  let dir: string;
  let n = 0;
  const dbPath = () => path.join(dir, `db${++n}.sqlite`);

  before(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'walship-lock-'));
  });
  after(() => rm(dir, { recursive: true, force: true }));

  test('second instance in process is refused', async () => {
    const db = dbPath();
    const lock = await DatabaseLock.acquire(db);
    const holder = JSON.parse(await readFile(lockFilePath(db), 'utf8')) as { pid: number; hostname: string };
    assert.equal(holder.pid, process.pid);
    assert.equal(holder.hostname, os.hostname());

    await assert.rejects(DatabaseLock.acquire(db), (err) => {
      assert.ok(hasCode(err, 'LOCKED'));
      const message = (err as Error).message;
      assert.ok(message.includes(db), message);
      assert.ok(message.includes(lockFilePath(db)), message);
      assert.ok(message.includes(`process ${process.pid}`), message);
      return true;
    });
    await lock.release();
  });

  test('release deletes the lock file', async () => {
    const db = dbPath();
    const lock = await DatabaseLock.acquire(db);
    assert.equal(await exists(lockFilePath(db)), true);

    await lock.release();
    assert.equal(await exists(lockFilePath(db)), false);
    assert.equal(lock.held, false);

    const again = await DatabaseLock.acquire(db);
    await again.release();
    await again.release();
  });

  test('child process is refused', async () => {
    const db = dbPath();
    const lock = await DatabaseLock.acquire(db);
    const child = runChild(
      `try { await lockModule.DatabaseLock.acquire(dbPath); process.exit(0); }
       catch (err) { console.log(err.code + ' ' + err.message); process.exit(3); }`,
      db,
    );
    let output = '';
    child.stdout!.on('data', (chunk: Buffer) => (output += chunk.toString()));
    const [code] = (await once(child, 'exit')) as [number];
    await lock.release();

    assert.equal(code, 3);
    assert.match(output, /^LOCKED /);
    assert.ok(output.includes(`walship process ${process.pid} on host ${os.hostname()}`), output);
  });

  test('lock of a killed child is taken over', async () => {
    const db = dbPath();
    const child = runChild(
      `await lockModule.DatabaseLock.acquire(dbPath); console.log('locked'); process.stdin.resume();`,
      db,
    );
    await waitForLine(child, 'locked');

    await assert.rejects(DatabaseLock.acquire(db), (err) => {
      assert.ok(hasCode(err, 'LOCKED'));
      assert.ok((err as Error).message.includes(`process ${child.pid}`), (err as Error).message);
      return true;
    });

    child.kill('SIGKILL');
    await once(child, 'exit');
    const { logger, lines } = captureLog();
    const lock = await DatabaseLock.acquire(db, { logger });

    const takeover = lines.find((l) => l['msg'] === 'took over stale lock file');
    assert.ok(takeover, JSON.stringify(lines));
    assert.equal(takeover['holderPid'], child.pid);
    assert.equal(takeover['reason'], `process ${child.pid} is not running`);
    assert.equal(lock.holder.pid, process.pid);
    await lock.release();
  });

  test('exit without release removes the lock file', async () => {
    const db = dbPath();
    const child = runChild(`await lockModule.DatabaseLock.acquire(dbPath); process.exit(0);`, db);
    const [code] = (await once(child, 'exit')) as [number];

    assert.equal(code, 0);
    assert.equal(await exists(lockFilePath(db)), false);
  });

  test('reused pid is stale', async () => {
    const db = dbPath();
    // This process's pid with another start time: the pid now belongs to a different process.
    const holder = { pid: process.pid, hostname: os.hostname(), startedAt: '2020-01-01T00:00:00.000Z', processStart: '1', database: db, token: 'x' };
    await writeFile(lockFilePath(db), JSON.stringify(holder));

    const { logger, lines } = captureLog();
    const lock = await DatabaseLock.acquire(db, { logger });
    assert.equal(lines.find((l) => l['msg'] === 'took over stale lock file')?.['reason'], `pid ${process.pid} now belongs to another process`);
    await lock.release();
  });

  test('damaged lock file is stale', async () => {
    const db = dbPath();
    await writeFile(lockFilePath(db), 'not json');

    const lock = await DatabaseLock.acquire(db);
    assert.equal(lock.holder.pid, process.pid);
    await lock.release();
  });

  test('other host is stale only when old', async () => {
    const db = dbPath();
    const holder = { pid: 1, hostname: 'other-host.invalid', startedAt: '2020-01-01T00:00:00.000Z', database: db, token: 'x' };
    await writeFile(lockFilePath(db), JSON.stringify(holder));

    await assert.rejects(DatabaseLock.acquire(db, { staleAfter: 60_000 }), (err) => {
      assert.ok(hasCode(err, 'LOCKED'));
      assert.match((err as Error).message, /process 1 on host other-host\.invalid/);
      return true;
    });

    const old = new Date(Date.now() - 120_000);
    await utimes(lockFilePath(db), old, old);
    const lock = await DatabaseLock.acquire(db, { staleAfter: 60_000 });
    await lock.release();
  });

  test('symlinked path shares the lock', async () => {
    const db = dbPath();
    await writeFile(db, '');
    const link = path.join(dir, `link${n}.sqlite`);
    await symlink(db, link);

    const lock = await DatabaseLock.acquire(db);
    await assert.rejects(DatabaseLock.acquire(link), (err) => hasCode(err, 'LOCKED'));
    await lock.release();
  });

  test('missing directory names the lock file', async () => {
    const db = path.join(dir, 'missing', 'db.sqlite');
    await assert.rejects(DatabaseLock.acquire(db), (err) => {
      const message = (err as Error).message;
      assert.ok(message.includes(lockFilePath(db)), message);
      assert.match(message, /Check that the directory exists/);
      return true;
    });
  });

  test('SQLite locks survive acquire and release', async () => {
    const db = dbPath();
    const conn = new Database(db);
    conn.pragma('journal_mode = WAL');
    conn.exec('CREATE TABLE t (x); INSERT INTO t VALUES (1)');
    // An open read transaction holds a shared lock, so another connection cannot truncate the WAL.
    conn.exec('BEGIN');
    conn.prepare('SELECT * FROM t').all();

    const lock = await DatabaseLock.acquire(db);
    await lock.release();

    const other = new Database(db);
    other.pragma('busy_timeout = 0');
    other.exec('INSERT INTO t VALUES (2)');
    const [result] = other.pragma('wal_checkpoint(TRUNCATE)') as { busy: number }[];
    assert.equal(result!.busy, 1);
    other.close();
    conn.exec('COMMIT');
    conn.close();
  });
});

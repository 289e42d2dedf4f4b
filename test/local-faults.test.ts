import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { before, describe, test } from 'node:test';

import type { Config } from '../src/config.js';
import { formatPos } from '../src/pos.js';
import { Replicator } from '../src/replicator.js';
import { restore } from '../src/restore.js';
import { contentHash, integrityCheck } from './support/content.js';
import { bindMount, canMount, fillDisk, mountTmpfs, setReadOnly, unmount } from './support/mounts.js';
import { Harness } from './support/replicate-harness.js';

/**
 * Local faults: walship's meta directory on a full disk or a read-only
 * mount, and a database that walship, running with dropped privileges, may
 * not read. Each case expects a clear error naming the path, retries, and a
 * restore equal to the source once the fault is fixed. The tests run as root
 * and need mount(8) and setpriv(1); without mount permission they are skipped.
 */

// Bounded wait for a condition polled in a loop.
const WAIT_MS = 15_000;

// Size of the tmpfs that contains the meta directory in the full-disk case.
const TMPFS_BYTES = 4 * 1024 * 1024;

// User and group id of the unprivileged `nobody` account, which walship runs as when permissions matter.
const NOBODY = 65534;

const CLI = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));

let mountAllowed = false;

before(async () => {
  mountAllowed = process.getuid?.() === 0 && (await canMount(os.tmpdir()));
});

/** Polls `check` every 50 ms until it returns true or WAIT_MS passes, and returns its last result. */
async function waitFor(check: () => boolean | Promise<boolean>): Promise<boolean> {
  for (const deadline = Date.now() + WAIT_MS; Date.now() < deadline; ) {
    if (await check()) return true;
    await sleep(50);
  }
  return check();
}

/** Restores the file replica's latest backup into a new file and checks it against `expectedHash`. */
async function assertRestoreEquals(h: Harness, expectedHash: string, context: () => string): Promise<void> {
  const output = path.join(h.dir, `restored-${randomBytes(4).toString('hex')}.db`);
  const result = await restore({ client: h.replicaConfig('file'), outputPath: output });
  assert.equal(integrityCheck(output), 'ok', `integrity of the restore of ${formatPos(result.pos)}\n${context()}`);
  assert.equal(contentHash(output), expectedHash, `restore of ${formatPos(result.pos)} differs from the source\n${context()}`);
}

/** Returns the harness's config with the meta directory moved to `metaPath`. */
function withMetaPath(h: Harness, metaPath: string): Config {
  return { ...h.config, dbs: [{ ...h.config.dbs[0]!, metaPath }] };
}

/** Returns the error and warning records whose text matches `pattern`. */
function problems(h: Harness, pattern: RegExp): string[] {
  return h.logs.filter((r) => (r.level === 'error' || r.level === 'warn') && pattern.test(JSON.stringify(r))).map((r) => JSON.stringify(r));
}

/**
 * Fills the disk under walship's meta directory while the application writes,
 * frees it, and checks the restore. With `checkPath`, also checks that the
 * full-disk error names a path on that disk.
 */
async function runFullDisk(checkPath: boolean): Promise<void> {
  const h = await Harness.create({ kinds: ['file'] });
  const mountPoint = path.join(h.dir, 'meta-disk');
  await mountTmpfs(mountPoint, TMPFS_BYTES);
  const replicator = new Replicator(withMetaPath(h, path.join(mountPoint, 'meta')), { logger: h.logger, threads: 2 });
  try {
    const writer = await h.openWriter();
    await replicator.start();
    await writer.insert({ transactions: 10, rows: 5, bytes: 500, tag: 'before full' });
    await replicator.sync();

    // The disk fills up: the shadow WAL cannot grow, so walship cannot copy the new frames.
    const filler = path.join(mountPoint, 'filler');
    await fillDisk(filler, TMPFS_BYTES);
    await writer.insert({ transactions: 100, rows: 5, bytes: 1000, pauseMs: 1, tag: 'while full' });
    const full = await waitFor(() => problems(h, /ENOSPC|no space/i).length > 0);
    assert.ok(full, `no error about the full disk\n${h.logText()}`);
    if (checkPath) {
      const errors = problems(h, /ENOSPC|no space/i);
      assert.ok(errors.some((line) => line.includes(mountPoint)), `the full-disk error names no path under ${mountPoint}:\n${errors.join('\n')}`);
    }

    // Space is freed: walship copies the frames it could not copy before and ships them.
    await fs.rm(filler);
    await writer.insert({ transactions: 10, rows: 5, bytes: 500, tag: 'after full' });
    await replicator.sync();
    const sourceHash = contentHash(h.dbPath);
    await replicator.stop();
    await writer.close();

    assert.equal(h.logsWith('new generation').length, 1, h.logText());
    await assertRestoreEquals(h, sourceHash, () => h.logText());
  } finally {
    await replicator.stop().catch(() => undefined);
    unmount(mountPoint);
    await h.cleanup();
  }
}

/**
 * Starts walship with its meta directory on a read-only mount, makes the
 * mount writable after the first error, and checks the restore. With
 * `checkReadOnly`, also checks that the error reports a read-only file system.
 */
async function runReadOnlyAtStart(checkReadOnly: boolean): Promise<void> {
  const h = await Harness.create({ kinds: ['file'] });
  const mountPoint = path.join(h.dir, 'meta-ro');
  await bindMount(mountPoint);
  const metaPath = path.join(mountPoint, 'meta');
  const replicator = new Replicator(withMetaPath(h, metaPath), { logger: h.logger, threads: 2 });
  try {
    const writer = await h.openWriter();
    await writer.insert({ transactions: 10, rows: 5, bytes: 500, tag: 'before start' });
    setReadOnly(mountPoint, true);
    await replicator.start();

    const reported = await waitFor(() => h.logsWith('database unavailable, retrying').length > 0);
    assert.ok(reported, `walship logged no error while its meta directory is read-only\n${h.logText()}`);
    const error = JSON.stringify(h.logsWith('database unavailable, retrying')[0]);
    assert.ok(error.includes(metaPath), `the error does not name ${metaPath}: ${error}`);
    if (checkReadOnly) assert.match(error, /EROFS|read-only/i, 'the error does not say the file system is read-only');

    // The mount becomes writable: the retry opens the database and replicates it.
    setReadOnly(mountPoint, false);
    assert.ok(await waitFor(() => h.logsWith('database available again').length > 0), h.logText());
    await writer.insert({ transactions: 20, rows: 5, bytes: 500, pauseMs: 1, tag: 'after fix' });
    await replicator.sync();
    const sourceHash = contentHash(h.dbPath);
    await replicator.stop();
    await writer.close();

    await assertRestoreEquals(h, sourceHash, () => h.logText());
  } finally {
    await replicator.stop().catch(() => undefined);
    unmount(mountPoint);
    await h.cleanup();
  }
}

describe('local faults', () => {
  test('meta directory on a full disk', { timeout: 60_000 }, async (t) => {
    if (!mountAllowed) return t.skip('mount is not permitted here');
    await runFullDisk(false);
  });

  test(
    'full-disk error names the path',
    { timeout: 60_000 },
    async (t) => {
      if (!mountAllowed) return t.skip('mount is not permitted here');
      await runFullDisk(true);
    },
  );

  test('meta directory read-only at start', { timeout: 60_000 }, async (t) => {
    if (!mountAllowed) return t.skip('mount is not permitted here');
    await runReadOnlyAtStart(false);
  });

  test(
    'read-only error says read-only',
    { timeout: 60_000 },
    async (t) => {
      if (!mountAllowed) return t.skip('mount is not permitted here');
      await runReadOnlyAtStart(true);
    },
  );

  test('meta directory turns read-only', { timeout: 60_000 }, async (t) => {
    if (!mountAllowed) return t.skip('mount is not permitted here');
    const h = await Harness.create({ kinds: ['file'] });
    const mountPoint = path.join(h.dir, 'meta-ro');
    await bindMount(mountPoint);
    const replicator = new Replicator(withMetaPath(h, path.join(mountPoint, 'meta')), { logger: h.logger, threads: 2 });
    try {
      const writer = await h.openWriter();
      await replicator.start();
      await writer.insert({ transactions: 10, rows: 5, bytes: 500, tag: 'before read-only' });
      await replicator.sync();

      setReadOnly(mountPoint, true);
      await writer.insert({ transactions: 50, rows: 5, bytes: 1000, pauseMs: 1, tag: 'while read-only' });
      const reported = await waitFor(() => problems(h, /EROFS|read-only/i).length > 0);
      assert.ok(reported, `no error about the read-only meta directory\n${h.logText()}`);
      t.diagnostic(`walship logged: ${problems(h, /EROFS|read-only/i)[0]!.slice(0, 300)}`);

      setReadOnly(mountPoint, false);
      await writer.insert({ transactions: 10, rows: 5, bytes: 500, tag: 'after fix' });
      await replicator.sync();
      const sourceHash = contentHash(h.dbPath);
      await replicator.stop();
      await writer.close();

      await assertRestoreEquals(h, sourceHash, () => h.logText());
    } finally {
      await replicator.stop().catch(() => undefined);
      unmount(mountPoint);
      await h.cleanup();
    }
  });

  test('database unreadable by walship', { timeout: 60_000 }, async (t) => {
    if (process.getuid?.() !== 0) return t.skip('dropping privileges needs root');
    const h = await Harness.create({ kinds: ['file'] });
    let output = '';
    let child: ReturnType<typeof spawn> | undefined;
    try {
      // walship runs as user `nobody`, which owns the directory (for its lock
      // file, meta directory and replica) but not the database. Only root may
      // read the database.
      const writer = await h.openWriter();
      await writer.insert({ transactions: 10, rows: 5, bytes: 500, tag: 'root only' });
      await fs.mkdir(path.join(h.dir, 'replica'));
      await fs.chown(h.dir, NOBODY, NOBODY);
      await fs.chown(path.join(h.dir, 'replica'), NOBODY, NOBODY);
      await fs.chmod(h.dbPath, 0o600);
      const configFile = await h.writeConfigFile();

      child = spawn('setpriv', [`--reuid=${NOBODY}`, `--regid=${NOBODY}`, '--clear-groups', process.execPath, CLI, 'replicate', '-config', configFile, '-control-socket', 'off'], {
        stdio: ['ignore', 'pipe', 'pipe'],
        env: { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: h.dir },
      });
      child.stdout!.on('data', (chunk: Buffer) => (output += chunk.toString()));
      child.stderr!.on('data', (chunk: Buffer) => (output += chunk.toString()));
      const exited = new Promise<number | string | null>((resolve) => child!.once('close', (code, signal) => resolve(code ?? signal)));

      const denied = await waitFor(() => /permission denied|EACCES|unable to open/i.test(output));
      assert.ok(denied, `no permission error within ${WAIT_MS} ms:\n${output}`);
      const deniedLine = output.split('\n').find((line) => /permission denied|EACCES|unable to open/i.test(line)) ?? '';
      t.diagnostic(`walship logged: ${deniedLine}`);
      assert.ok(deniedLine.includes(h.dbPath), `the error does not name ${h.dbPath}: ${deniedLine}`);
      assert.equal(child.exitCode, null, `walship exited instead of retrying:\n${output}`);

      // The database is handed to walship's user: the retry opens it and replicates.
      for (const suffix of ['', '-wal', '-shm']) await fs.chown(`${h.dbPath}${suffix}`, NOBODY, NOBODY).catch(() => undefined);
      const replicating = await waitFor(async () => (await h.generations('file')).length > 0);
      assert.ok(replicating, `no generation after the fix:\n${output}`);
      await writer.insert({ transactions: 20, rows: 5, bytes: 500, pauseMs: 1, tag: 'readable' });
      await sleep(500);
      child.kill('SIGTERM');
      assert.equal(await exited, 0, output);
      const sourceHash = contentHash(h.dbPath);
      await writer.close();

      await assertRestoreEquals(h, sourceHash, () => output);
    } finally {
      if (child && child.exitCode === null && child.signalCode === null && child.pid !== undefined) process.kill(child.pid, 'SIGKILL');
      await h.cleanup();
    }
  });
});

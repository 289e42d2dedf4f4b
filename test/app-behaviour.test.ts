import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { describe, test } from 'node:test';

import Database from 'better-sqlite3';

import type { Config } from '../src/config.js';
import { defaultMetaPath } from '../src/config.js';
import { formatPos } from '../src/pos.js';
import { Replicator } from '../src/replicator.js';
import { restore } from '../src/restore.js';
import { contentHash, integrityCheck } from './support/content.js';
import { Harness } from './support/replicate-harness.js';
import type { HarnessOptions } from './support/replicate-harness.js';
import { Writer } from './support/writer.js';

/**
 * Application behaviour that walship must survive: long readers, writers
 * without a busy timeout, exclusive locking, page-size changes, files deleted
 * under walship, unusual paths, long write transactions and many writers.
 * Each case either continues the generation or starts a new one with a
 * logged reason, and its restore equals the source by content hash and
 * integrity check. All cases use a file replica: the S3 path is covered by
 * the replicate and faults suites, and these cases exercise the database side.
 */

// Upper bound on one commit of the application while walship runs a RESTART
// checkpoint behind a reader. walship's RESTART waits at most 100 ms, so a
// commit that takes a second means walship stalled the writer. This is a
// sanity bound, not a speed measurement.
const COMMIT_LATENCY_BOUND_MS = 1000;

// Bounded wait for a condition polled in a loop.
const WAIT_MS = 10_000;

/** Runs `body` with a fresh harness on a file replica and removes everything afterwards. */
async function withHarness(options: Omit<HarnessOptions, 'kinds' | 's3'>, body: (h: Harness) => Promise<void>): Promise<void> {
  const h = await Harness.create({ ...options, kinds: ['file'] });
  try {
    await body(h);
  } finally {
    await h.cleanup();
  }
}

/** Restores the file replica's latest backup into a new file and checks it against `expectedHash`. */
async function assertRestoreEquals(h: Harness, expectedHash: string, label = 'restore'): Promise<string> {
  const output = path.join(h.dir, `restored-${randomBytes(4).toString('hex')}.db`);
  const result = await restore({ client: h.replicaConfig('file'), outputPath: output });
  const restored = `${label} of ${formatPos(result.pos)}`;
  assert.equal(integrityCheck(output), 'ok', `integrity of the ${restored}\n${h.logText()}`);
  assert.equal(contentHash(output), expectedHash, `${restored} differs from the source\n${h.logText()}`);
  return output;
}

/** Polls `check` every 50 ms until it returns true or WAIT_MS passes, and returns its last result. */
async function waitFor(check: () => boolean | Promise<boolean>): Promise<boolean> {
  for (const deadline = Date.now() + WAIT_MS; Date.now() < deadline; ) {
    if (await check()) return true;
    await sleep(50);
  }
  return check();
}

/** Returns the size of a file in bytes, or 0 when it is missing. */
async function fileSize(file: string): Promise<number> {
  return (await fs.stat(file).catch(() => undefined))?.size ?? 0;
}

/** Returns the reasons of every new generation logged so far. */
function generationReasons(h: Harness): string[] {
  return h.logsWith('new generation').map((r) => String(r.reason));
}

/** Opens a reader process that keeps a read transaction open on the database until `end` runs. */
async function openLongReader(dbPath: string): Promise<{ end: () => Promise<void> }> {
  const reader = await Writer.open(dbPath);
  // BEGIN is deferred, so the SELECT takes the read lock, which the open
  // transaction keeps, so no checkpoint can pass this reader's snapshot.
  await reader.exec('BEGIN; SELECT count(*) FROM t;');
  return {
    end: async () => {
      await reader.exec('COMMIT');
      await reader.close();
    },
  };
}

describe('application behaviour', () => {
  test('long reader: shipping continues, then catches up', { timeout: 60_000 }, async () => {
    await withHarness({}, async (h) => {
      const writer = await h.openWriter();
      await writer.insert({ transactions: 5, rows: 5, bytes: 500, tag: 'before reader' });
      const replicator = await h.startReplicator();
      const reader = await openLongReader(h.dbPath);

      // About 1,000 WAL frames behind the reader: walship's checkpoints
      // cannot backfill them, so the WAL only grows.
      for (let burst = 0; burst < 4; burst++) {
        await writer.insert({ transactions: 50, rows: 5, bytes: 1000, pauseMs: 1, tag: `behind reader ${burst}` });
        await sleep(300);
      }
      await replicator.sync();
      const walBehindReader = await fileSize(`${h.dbPath}-wal`);
      const hashBehindReader = contentHash(h.dbPath);
      await assertRestoreEquals(h, hashBehindReader, 'restore behind the reader');
      assert.ok(walBehindReader > 400 * 4096, `WAL of ${walBehindReader} bytes behind the reader`);
      const restartsBehindReader = h.logsWith('wal restarted, next index').length;

      // Once the reader ends, a checkpoint completes and the WAL restarts into the next index.
      await reader.end();
      for (let burst = 0; burst < 3; burst++) {
        await sleep(1100);
        await writer.insert({ transactions: 50, rows: 5, bytes: 1000, pauseMs: 1, tag: `after reader ${burst}` });
      }
      await replicator.sync();
      const sourceHash = contentHash(h.dbPath);
      await h.stopReplicator(replicator);

      assert.ok(h.logsWith('wal restarted, next index').length > restartsBehindReader, `no WAL restart after the reader ended\n${h.logText()}`);
      assert.deepEqual(generationReasons(h), ['no generation exists'], h.logText());
      await assertRestoreEquals(h, sourceHash);
      await writer.close();
    });
  });

  test(
    'long reader: warns with WAL size',
    { timeout: 60_000 },
    async () => {
      await withHarness({}, async (h) => {
        const writer = await h.openWriter();
        await writer.insert({ transactions: 5, rows: 5, bytes: 500, tag: 'before reader' });
        const replicator = await h.startReplicator();
        const reader = await openLongReader(h.dbPath);
        for (let burst = 0; burst < 4; burst++) {
          await writer.insert({ transactions: 50, rows: 5, bytes: 1000, pauseMs: 1, tag: `behind reader ${burst}` });
          await sleep(300);
        }
        await replicator.sync();
        await reader.end();
        await h.stopReplicator(replicator);
        await writer.close();

        // A warning names the WAL's size in bytes, so an operator can find the reader.
        const warnings = h.logs.filter((r) => r.level === 'warn' && typeof r.bytes === 'number' && /checkpoint|wal/i.test(r.msg));
        assert.ok(warnings.length > 0, `no warning with the WAL size\n${h.logText()}`);
      });
    },
  );

  test('forced RESTART behind reader gives up', { timeout: 60_000 }, async () => {
    await withHarness({}, async (h) => {
      const writer = await h.openWriter();
      await writer.insert({ transactions: 5, rows: 5, bytes: 500, tag: 'before reader' });
      const replicator = await h.startReplicator();
      const db = replicator.databases[0]!.db;
      const reader = await openLongReader(h.dbPath);

      // The application commits one transaction at a time while walship runs
      // RESTART checkpoints that cannot finish behind the reader.
      let maxCommitMs = 0;
      const outcomes: string[] = [];
      for (let round = 0; round < 10; round++) {
        const restart = db.checkpointNow('RESTART').then((r) => outcomes.push(r ? `busy=${r.busy}` : 'none'));
        for (let i = 0; i < 10; i++) {
          const started = Date.now();
          await writer.insert({ transactions: 1, rows: 5, bytes: 1000, tag: `round ${round}` });
          maxCommitMs = Math.max(maxCommitMs, Date.now() - started);
        }
        await restart;
      }
      await reader.end();
      await replicator.sync();
      const sourceHash = contentHash(h.dbPath);
      await h.stopReplicator(replicator);
      const stats = await writer.close();

      assert.ok(outcomes.some((o) => o === 'busy=1'), `RESTART outcomes: ${outcomes.join(', ')}`);
      assert.ok(maxCommitMs < COMMIT_LATENCY_BOUND_MS, `max commit took ${maxCommitMs} ms`);
      assert.equal(stats.busy, 0, stats.busyErrors.join('\n'));
      assert.equal(stats.commits, 105);
      await assertRestoreEquals(h, sourceHash);
    });
  });

  test(
    'writer without busy timeout: start and PASSIVE',
    { timeout: 60_000 },
    async (t) => {
      // maxCheckpointPageCount 0 leaves walship with PASSIVE checkpoints only.
      await withHarness({ database: { minCheckpointPageCount: 50, maxCheckpointPageCount: 0 } }, async (h) => {
        const writer = await h.openWriter({ busyTimeout: 0 });
        // The application already writes while walship starts its generation.
        const writing = writer.insert({ transactions: 60, rows: 5, bytes: 1000, pauseMs: 1, tag: 'during start' });
        const replicator = await h.startReplicator();
        await writing;
        for (let burst = 0; burst < 4; burst++) {
          await writer.insert({ transactions: 60, rows: 5, bytes: 1000, pauseMs: 1, tag: `burst ${burst}` });
        }
        // Under continuous commits a checkpoint rarely finds every frame
        // backfilled, so the WAL restarts once the application slows down to
        // about one commit every 150 ms.
        let slowCommits = 0;
        const restarted = await waitFor(async () => {
          if (h.logsWith('wal restarted, next index').length > 0) return true;
          await writer.insert({ transactions: 1, rows: 5, bytes: 1000, tag: 'slow' });
          slowCommits++;
          await sleep(150);
          return false;
        });
        await replicator.sync();
        const sourceHash = contentHash(h.dbPath);
        await h.stopReplicator(replicator);
        const stats = await writer.close();

        const modes = new Set(h.logsWith('checkpoint').map((r) => r.mode));
        assert.deepEqual([...modes], ['PASSIVE'], h.logText());
        assert.equal(stats.busy, 0, `SQLITE_BUSY caused by walship:\n${stats.busyErrors.join('\n')}\n${h.logText()}`);
        assert.equal(stats.commits, 300 + slowCommits);
        t.diagnostic(`checkpoints ${h.logsWith('checkpoint').length}, commits before the WAL restarted ${300 + slowCommits}`);
        assert.ok(restarted, `the WAL never restarted\n${h.logText()}`);
        await assertRestoreEquals(h, sourceHash);
      });
    },
  );

  test('own checkpoints beside PASSIVE, no busy timeout', { timeout: 60_000 }, async (t) => {
    await withHarness({ database: { minCheckpointPageCount: 20, maxCheckpointPageCount: 0 } }, async (h) => {
      const writer = await h.openWriter({ busyTimeout: 0 });
      const replicator = await h.startReplicator();
      const outcomes: string[] = [];
      for (let round = 0; round < 8; round++) {
        await writer.insert({ transactions: 40, rows: 5, bytes: 1000, pauseMs: 1, tag: `round ${round}` });
        const mode = round % 2 === 1 ? 'TRUNCATE' : 'PASSIVE';
        const outcome = await writer.checkpoint(mode);
        outcomes.push(`${mode} ${JSON.stringify(outcome)}`);
      }
      await replicator.sync();
      const sourceHash = contentHash(h.dbPath);
      await h.stopReplicator(replicator);
      const stats = await writer.close();
      t.diagnostic(`application checkpoints: ${outcomes.join('; ')}; wal restarts ${h.logsWith('wal restarted, next index').length}`);

      assert.equal(stats.busy, 0, `SQLITE_BUSY caused by walship:\n${stats.busyErrors.join('\n')}\n${h.logText()}`);
      assert.equal(stats.commits, 320);
      // Only the generation of the start: every checkpoint kept continuity.
      assert.equal(generationReasons(h).length, 1, h.logText());
      await assertRestoreEquals(h, sourceHash);
    });
  });

  test('locking_mode=EXCLUSIVE names the database', { timeout: 60_000 }, async (t) => {
    await withHarness({}, async (h) => {
      const writer = await h.openWriter();
      await writer.pragma('locking_mode = EXCLUSIVE');
      // In WAL mode the exclusive lock is taken at the next transaction and kept.
      await writer.insert({ transactions: 5, rows: 5, bytes: 500, tag: 'exclusive' });

      const replicator = await h.startReplicator();
      const found = await waitFor(() => h.logs.some((r) => r.level === 'error' && JSON.stringify(r).includes(h.dbPath)));
      assert.ok(found, `no error naming ${h.dbPath}\n${h.logText()}`);
      const error = h.logs.find((r) => r.level === 'error' && JSON.stringify(r).includes(h.dbPath))!;
      t.diagnostic(`walship logged: ${error.msg}: ${JSON.stringify(error.err)}`);

      // The application returns to normal locking: walship opens the database and replicates it.
      await writer.pragma('locking_mode = NORMAL');
      await writer.insert({ transactions: 5, rows: 5, bytes: 500, tag: 'normal' });
      assert.ok(await waitFor(() => h.logsWith('database available again').length > 0), h.logText());
      await writer.insert({ transactions: 5, rows: 5, bytes: 500, tag: 'replicated' });
      await replicator.sync();
      const sourceHash = contentHash(h.dbPath);
      await h.stopReplicator(replicator);
      await writer.close();

      assert.match(JSON.stringify(error), /locked|EXCLUSIVE/i, `error does not say the database is locked: ${JSON.stringify(error)}`);
      await assertRestoreEquals(h, sourceHash);
    });
  });

  test('page size change via VACUUM', { timeout: 60_000 }, async () => {
    await withHarness({}, async (h) => {
      const writer = await h.openWriter();
      let replicator = await h.startReplicator();
      await writer.insert({ transactions: 20, rows: 5, bytes: 500, pauseMs: 1, tag: 'page size 4096' });
      await replicator.sync();
      await h.stopReplicator(replicator);

      // SQLite changes the page size of a WAL database only outside WAL mode,
      // and walship's read transaction blocks that switch, so the application
      // changes it while walship is stopped.
      await writer.exec("PRAGMA journal_mode = delete; PRAGMA page_size = 8192; VACUUM; PRAGMA journal_mode = wal;");
      assert.equal(await writer.pragma('page_size'), 8192);
      await writer.insert({ transactions: 5, rows: 5, bytes: 500, tag: 'page size 8192' });

      replicator = await h.startReplicator();
      await writer.insert({ transactions: 20, rows: 5, bytes: 500, pauseMs: 1, tag: 'replicated at 8192' });
      await replicator.sync();
      const sourceHash = contentHash(h.dbPath);
      await h.stopReplicator(replicator);
      await writer.close();

      assert.equal(generationReasons(h).length, 2, h.logText());
      const output = await assertRestoreEquals(h, sourceHash);
      const restored = new Database(output, { readonly: true });
      try {
        assert.equal(restored.pragma('page_size', { simple: true }), 8192);
      } finally {
        restored.close();
      }
    });
  });

  test('page size change while running is blocked', { timeout: 60_000 }, async () => {
    await withHarness({}, async (h) => {
      const writer = await h.openWriter({ busyTimeout: 200 });
      const replicator = await h.startReplicator();
      await writer.insert({ transactions: 20, rows: 5, bytes: 500, pauseMs: 1, tag: 'page size 4096' });

      // Leaving WAL mode needs an exclusive lock, which walship's read
      // transaction denies. The application gets SQLITE_BUSY and stays in WAL mode.
      const switched = await writer.exec('PRAGMA journal_mode = delete').then(
        () => 'switched',
        (err: Error & { code?: string }) => String(err.code),
      );
      assert.match(switched, /^SQLITE_BUSY/);
      assert.equal(await writer.pragma('journal_mode'), 'wal');
      await writer.insert({ transactions: 10, rows: 5, bytes: 500, tag: 'after refused switch' });
      await replicator.sync();
      const sourceHash = contentHash(h.dbPath);
      await h.stopReplicator(replicator);
      await writer.close();

      assert.deepEqual(generationReasons(h), ['no generation exists'], h.logText());
      await assertRestoreEquals(h, sourceHash);
    });
  });

  test('database deleted and recreated', { timeout: 60_000 }, async () => {
    await withHarness({}, async (h) => {
      let writer = await h.openWriter();
      const replicator = await h.startReplicator();
      await writer.insert({ transactions: 20, rows: 5, bytes: 500, pauseMs: 1, tag: 'first file' });
      await replicator.sync();
      await writer.close();

      for (const suffix of ['', '-wal', '-shm']) await fs.rm(`${h.dbPath}${suffix}`, { force: true });
      writer = await h.openWriter();
      await writer.insert({ transactions: 20, rows: 5, bytes: 500, pauseMs: 1, tag: 'second file' });
      assert.ok(await waitFor(() => generationReasons(h).length >= 2), `no new generation after the file was recreated\n${h.logText()}`);
      await writer.insert({ transactions: 5, rows: 5, bytes: 500, tag: 'after new generation' });
      await replicator.sync();
      const sourceHash = contentHash(h.dbPath);
      await h.stopReplicator(replicator);
      await writer.close();

      // walship may detect the removal of the old WAL before the new file, and
      // then logs a generation for the truncated WAL first.
      const reasons = generationReasons(h);
      assert.equal(reasons[0], 'no generation exists', h.logText());
      assert.equal(reasons.at(-1), 'database file replaced', h.logText());
      assert.ok(reasons.length <= 3, `reasons: ${reasons.join(', ')}`);
      await assertRestoreEquals(h, sourceHash);
    });
  });

  test('WAL deleted while walship stopped', { timeout: 60_000 }, async () => {
    await withHarness({ database: { minCheckpointPageCount: 1_000_000, maxCheckpointPageCount: 0 } }, async (h) => {
      let writer = await h.openWriter();
      let replicator = await h.startReplicator();
      await writer.insert({ transactions: 20, rows: 5, bytes: 500, pauseMs: 1, tag: 'shipped' });
      await replicator.sync();
      await h.stopReplicator(replicator);

      // The application checkpoints, closes and the WAL and shared-memory
      // files are removed, as an operator cleaning up might do.
      await writer.checkpoint('TRUNCATE');
      await writer.close();
      await fs.rm(`${h.dbPath}-wal`, { force: true });
      await fs.rm(`${h.dbPath}-shm`, { force: true });

      writer = await h.openWriter();
      await writer.insert({ transactions: 10, rows: 5, bytes: 500, tag: 'new WAL' });
      replicator = await h.startReplicator();
      await writer.insert({ transactions: 10, rows: 5, bytes: 500, tag: 'replicated' });
      await replicator.sync();
      const sourceHash = contentHash(h.dbPath);
      await h.stopReplicator(replicator);
      await writer.close();

      const cleared = h.logsWith('cannot continue the last position, clearing generation');
      assert.equal(cleared.length, 1, h.logText());
      assert.equal(generationReasons(h).length, 2, h.logText());
      await assertRestoreEquals(h, sourceHash);
    });
  });

  test('long write transactions, second writer', { timeout: 60_000 }, async () => {
    await withHarness({}, async (h) => {
      const writer = await h.openWriter();
      const other = await h.openWriter();
      const replicator = await h.startReplicator();

      // Three write transactions of 1 s each, with the second writer's
      // commits queued behind them and walship checkpointing between them.
      for (let round = 0; round < 3; round++) {
        const [held, waited] = await Promise.all([
          writer.holdWrite({ transactionsBefore: 20, rows: 5, bytes: 1000, holdMs: 1000, tag: `held ${round}` }),
          sleep(200).then(() => other.insert({ transactions: 10, rows: 5, bytes: 1000, tag: `waiting ${round}` })),
        ]);
        assert.equal(held.commits, 21, held.busyErrors.join('\n'));
        assert.equal(waited.busy, 0, waited.busyErrors.join('\n'));
      }
      await replicator.sync();
      const sourceHash = contentHash(h.dbPath);
      await h.stopReplicator(replicator);
      await writer.close();
      await other.close();

      assert.deepEqual(generationReasons(h), ['no generation exists'], h.logText());
      await assertRestoreEquals(h, sourceHash);
    });
  });

  test('four concurrent writer processes', { timeout: 60_000 }, async () => {
    await withHarness({}, async (h) => {
      const writers = [];
      for (let i = 0; i < 4; i++) writers.push(await h.openWriter());
      const replicator = await h.startReplicator();

      const counts = await Promise.all(writers.map((w, i) => w.insert({ transactions: 100, rows: 3, bytes: 800, pauseMs: 1, tag: `writer ${i}` })));
      await replicator.sync();
      const sourceHash = contentHash(h.dbPath);
      await h.stopReplicator(replicator);
      for (const w of writers) await w.close();

      for (const [i, c] of counts.entries()) {
        assert.equal(c.busy, 0, `writer ${i}: ${c.busyErrors.join('\n')}`);
        assert.equal(c.commits, 100, `commits of writer ${i}`);
      }
      assert.deepEqual(generationReasons(h), ['no generation exists'], h.logText());
      await assertRestoreEquals(h, sourceHash);
    });
  });

  test('checkpoint race with application checkpoints', { timeout: 90_000 }, async (t) => {
    // walship checkpoints every few pages, PASSIVE and RESTART, while three
    // writers commit with a small automatic checkpoint and a fourth connection
    // runs every checkpoint mode in turn. Each WAL restart must keep the
    // generation, and the restore must equal the source.
    await withHarness({ database: { minCheckpointPageCount: 8, maxCheckpointPageCount: 60 } }, async (h) => {
      const writers = [];
      for (let i = 0; i < 3; i++) writers.push(await h.openWriter({ autocheckpoint: 20 }));
      const checkpointer = await h.openWriter();
      const replicator = await h.startReplicator();

      let writing = true;
      const modes = ['PASSIVE', 'TRUNCATE', 'FULL', 'RESTART'] as const;
      const outcomes = new Map<string, number>();
      const checkpoints = (async () => {
        for (let i = 0; writing && i < 10_000; i++) {
          const outcome = await checkpointer.checkpoint(modes[i % modes.length]!, 10);
          const key = `${modes[i % modes.length]} ${outcome.ok ? (outcome.busy ? 'busy' : 'done') : outcome.code}`;
          outcomes.set(key, (outcomes.get(key) ?? 0) + 1);
          await sleep(5);
        }
      })();
      const counts = await Promise.all(writers.map((w, i) => w.insert({ transactions: 150, rows: 3, bytes: 800, pauseMs: 2, tag: `writer ${i}` })));
      writing = false;
      await checkpoints;

      await replicator.sync();
      const sourceHash = contentHash(h.dbPath);
      await h.stopReplicator(replicator);
      for (const w of [...writers, checkpointer]) await w.close();

      const restarts = h.logsWith('wal restarted, next index').length;
      t.diagnostic(`wal restarts ${restarts}, walship checkpoints ${h.logsWith('checkpoint').length}, application checkpoints ${JSON.stringify(Object.fromEntries(outcomes))}`);
      for (const [i, c] of counts.entries()) assert.equal(c.commits, 150, `commits of writer ${i}: ${c.busyErrors.join('\n')}`);
      assert.ok(restarts > 0, `the WAL never restarted\n${h.logText()}`);
      assert.deepEqual(generationReasons(h), ['no generation exists'], h.logText());
      await assertRestoreEquals(h, sourceHash);
    });
  });
});

/** Builds the config of one database at `dbPath` with the harness's file replica and thresholds. */
function configAt(h: Harness, dbPath: string): Config {
  const database = h.config.dbs[0]!;
  return { ...h.config, dbs: [{ ...database, path: dbPath, metaPath: defaultMetaPath(dbPath) }] };
}

describe('database paths', () => {
  test('path with spaces and non-ASCII', { timeout: 60_000 }, async () => {
    await withHarness({}, async (h) => {
      const dir = path.join(h.dir, 'app data', 'données 数据');
      await fs.mkdir(dir, { recursive: true });
      const dbPath = path.join(dir, 'my db ü.sqlite');
      const writer = await Writer.open(dbPath);
      const replicator = new Replicator(configAt(h, dbPath), { logger: h.logger, threads: 2 });
      try {
        await replicator.start();
        await writer.insert({ transactions: 50, rows: 5, bytes: 1000, pauseMs: 1, tag: 'unusual path' });
        await replicator.sync();
        const sourceHash = contentHash(dbPath);
        await replicator.stop();

        await assertRestoreEquals(h, sourceHash);
      } finally {
        writer.kill();
        await replicator.stop().catch(() => undefined);
      }
    });
  });

  for (const appPath of ['real', 'symlink'] as const) {
    test(
      `symlinked database, app opens ${appPath} path`,
      { timeout: 60_000 },
      async () => {
        await withHarness({}, async (h) => {
          const realDir = path.join(h.dir, 'real');
          await fs.mkdir(realDir);
          const realPath = path.join(realDir, 'app.db');
          const linkPath = path.join(h.dir, 'link.db');
          const writer = await Writer.open(realPath);
          await fs.symlink(realPath, linkPath);
          if (appPath === 'symlink') {
            await writer.close();
          }
          const app = appPath === 'symlink' ? await Writer.open(linkPath) : writer;

          const replicator = new Replicator(configAt(h, linkPath), { logger: h.logger, threads: 2 });
          try {
            await replicator.start();
            await app.insert({ transactions: 50, rows: 5, bytes: 1000, pauseMs: 1, tag: 'through a symlink' });
            await replicator.sync();
            const sourceHash = contentHash(realPath);
            await replicator.stop();

            await assertRestoreEquals(h, sourceHash);
          } finally {
            app.kill();
            writer.kill();
            await replicator.stop().catch(() => undefined);
          }
        });
      },
    );
  }
});

describe('restored database replicated again', () => {
  // Where the restored file goes, and whether the application writes before walship starts on it.
  const variants = [
    { name: 'new path', samePath: false, appFirst: false },
    { name: 'original path, meta dir kept', samePath: true, appFirst: false },
    { name: 'app writes first', samePath: false, appFirst: true },
  ];
  for (const variant of variants) {
    test(`first write after restore: ${variant.name}`, { timeout: 60_000 }, async () => {
      await withHarness({}, async (h) => {
        const writer = await h.openWriter();
        const replicator = await h.startReplicator();
        await writer.insert({ transactions: 50, rows: 5, bytes: 1000, pauseMs: 1, tag: 'original' });
        await replicator.sync();
        await h.stopReplicator(replicator);
        await writer.close();

        // The restored file replaces the lost database and is replicated to the
        // same location. At the original path, walship's meta directory still
        // describes the generation of the lost file.
        const restoredPath = variant.samePath ? h.dbPath : path.join(h.dir, 'restored-live.db');
        if (variant.samePath) for (const suffix of ['', '-wal', '-shm']) await fs.rm(`${h.dbPath}${suffix}`, { force: true });
        await restore({ client: h.replicaConfig('file'), outputPath: restoredPath });
        const second = new Replicator(configAt(h, restoredPath), { logger: h.logger, threads: 2 });
        const app = await Writer.open(restoredPath);
        try {
          if (variant.appFirst) await app.insert({ transactions: 1, rows: 1, bytes: 100, tag: 'first write after restore' });
          await second.start();
          if (!variant.appFirst) await app.insert({ transactions: 1, rows: 1, bytes: 100, tag: 'first write after restore' });
          await second.sync();
          const sourceHash = contentHash(restoredPath);
          await second.stop();

          const output = await assertRestoreEquals(h, sourceHash, 'restore of the restored database');
          const check = new Database(output, { readonly: true });
          try {
            assert.deepEqual(check.prepare("SELECT count(*) AS n FROM t WHERE tag = 'first write after restore'").get(), { n: 1 });
          } finally {
            check.close();
          }
          assert.equal((await h.generations('file')).length, 2, h.logText());
        } finally {
          app.kill();
          await second.stop().catch(() => undefined);
        }
      });
    });
  }
});

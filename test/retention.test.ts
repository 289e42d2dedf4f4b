import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, before, describe, test } from 'node:test';

import Database from 'better-sqlite3';

import { parseConfig } from '../src/config.js';
import type { ReplicaConfig } from '../src/config.js';
import { ShipPool } from '../src/pool.js';
import { createReplicaClient } from '../src/replica/create.js';
import type { ObjectInfo } from '../src/replica/client.js';
import { listGenerations, listSegments, listSnapshots } from '../src/replica/listing.js';
import type { SegmentInfo, SnapshotInfo } from '../src/replica/listing.js';
import type { Replicator } from '../src/replicator.js';
import { restore } from '../src/restore.js';
import { lifecycleRule, planRetention } from '../src/retention.js';
import type { GenerationObjects, StoredObject } from '../src/retention.js';
import { snapshotPeriod } from '../src/snapshot-schedule.js';
import { contentHash, integrityCheck } from './support/content.js';
import { Harness } from './support/replicate-harness.js';
import type { LogRecord, ReplicaKind } from './support/replicate-harness.js';
import { S3RVER_CREDENTIAL, startS3Server } from './support/s3-server.js';
import type { S3Server } from './support/s3-server.js';
import type { Writer } from './support/writer.js';

let s3: S3Server;

before(async () => {
  s3 = await startS3Server();
});

after(async () => {
  await s3.close();
});

// Synthetic listings for the planner: times in seconds from 0.
const GEN_A = 'aaaaaaaaaaaaaaaa';
const GEN_B = 'bbbbbbbbbbbbbbbb';
const GEN_C = 'cccccccccccccccc';

function stored(generation: string, kind: 'snapshot' | 'segment', index: number, offset: number, atSeconds: number): StoredObject {
  const hex = index.toString(16).padStart(8, '0');
  const name = kind === 'snapshot' ? `snapshots/${hex}.snapshot.lz4` : `wal/${hex}_${offset.toString(16).padStart(8, '0')}.wal.lz4`;
  return { key: `generations/${generation}/${name}`, size: 100, lastModified: new Date(atSeconds * 1000), index, offset };
}

function generation(name: string, snapshots: StoredObject[], segments: StoredObject[], others: ObjectInfo[] = []): GenerationObjects {
  const times = [...snapshots, ...segments, ...others].map((o) => o.lastModified.getTime());
  return {
    generation: name,
    snapshots,
    segments,
    others,
    ...(times.length > 0 ? { firstAt: Math.min(...times), lastAt: Math.max(...times) } : {}),
  };
}

/** Generation with snapshots at indexes 0, 2 and 4 (times 0, 20, 40) and two segments per index (times 10i+1, 10i+5). */
function steadyGeneration(name: string, shift = 0): GenerationObjects {
  const snapshots = [0, 2, 4].map((i) => stored(name, 'snapshot', i, 0, shift + i * 10));
  const segments = [0, 1, 2, 3, 4, 5].flatMap((i) => [stored(name, 'segment', i, 0, shift + i * 10 + 1), stored(name, 'segment', i, 4152, shift + i * 10 + 5)]);
  return generation(name, snapshots, segments);
}

describe('retention plan', () => {
  test('keeps snapshot before window', () => {
    const plan = planRetention([steadyGeneration(GEN_A)], 30_000, new Set([GEN_A]));

    assert.equal(plan.baseIndexes.get(GEN_A), 2);
    assert.deepEqual(plan.keys, [
      `generations/${GEN_A}/snapshots/00000000.snapshot.lz4`,
      `generations/${GEN_A}/wal/00000000_00000000.wal.lz4`,
      `generations/${GEN_A}/wal/00000000_00001038.wal.lz4`,
      `generations/${GEN_A}/wal/00000001_00000000.wal.lz4`,
      `generations/${GEN_A}/wal/00000001_00001038.wal.lz4`,
    ]);
    assert.equal(plan.bytes, 500);
  });

  test('window before every snapshot keeps all', () => {
    const plan = planRetention([steadyGeneration(GEN_A, 100)], 50_000, new Set([GEN_A]));
    assert.equal(plan.baseIndexes.get(GEN_A), 0);
    assert.deepEqual(plan.keys, []);
  });

  test('newest snapshot is never deleted', () => {
    const plan = planRetention([steadyGeneration(GEN_A)], 1_000_000, new Set([GEN_A]));
    assert.equal(plan.baseIndexes.get(GEN_A), 4);
    assert.ok(!plan.keys.includes(`generations/${GEN_A}/snapshots/00000004.snapshot.lz4`));
    assert.ok(!plan.keys.some((key) => key.includes('/wal/00000004_') || key.includes('/wal/00000005_')));
  });

  test('superseded generation deleted whole', () => {
    const old = steadyGeneration(GEN_A);
    const current = steadyGeneration(GEN_B, 100);
    const plan = planRetention([old, current], 125_000, new Set([GEN_B]));

    assert.deepEqual(plan.generations, [GEN_A]);
    assert.equal(plan.baseIndexes.get(GEN_B), 2);
    // Snapshots go first, so a pass cut short leaves no snapshot without its WAL.
    const firstSegment = plan.keys.findIndex((key) => key.includes('/wal/'));
    assert.ok(plan.keys.slice(firstSegment).every((key) => key.includes('/wal/')));
    for (const object of [...old.snapshots, ...old.segments]) assert.ok(plan.keys.includes(object.key), object.key);
  });

  test('generation ending in window kept', () => {
    // GEN_A's last object is at 55 s; GEN_B's first snapshot at 100 s is inside the window,
    // so the database's state from 80 s to 100 s is GEN_A's last state.
    const old = steadyGeneration(GEN_A);
    const current = steadyGeneration(GEN_B, 100);
    const plan = planRetention([old, current], 80_000, new Set([GEN_B]));

    assert.deepEqual(plan.generations, []);
    assert.equal(plan.baseIndexes.get(GEN_A), 4);
    assert.equal(plan.baseIndexes.get(GEN_B), 0);
  });

  test('generation without snapshot', () => {
    const orphan = generation(GEN_A, [], [stored(GEN_A, 'segment', 0, 0, 5)], [{ key: `generations/${GEN_A}/other.txt`, size: 3, lastModified: new Date(6000) }]);
    const starting = generation(GEN_C, [], [stored(GEN_C, 'segment', 0, 0, 200)]);
    const current = steadyGeneration(GEN_B, 100);
    const plan = planRetention([orphan, current, starting], 50_000, new Set([GEN_B]));

    assert.deepEqual(plan.generations, [GEN_A]);
    assert.ok(plan.keys.includes(`generations/${GEN_A}/other.txt`));
    assert.ok(!plan.keys.some((key) => key.includes(GEN_C)));
  });

  test('latest generation never deleted', () => {
    // Nothing is protected, as when the database has no generation yet.
    const old = steadyGeneration(GEN_A);
    const newer = steadyGeneration(GEN_B, 100);
    const plan = planRetention([old, newer], 10_000_000, new Set());
    assert.deepEqual(plan.generations, [GEN_A]);
    assert.equal(plan.baseIndexes.get(GEN_B), 4);
  });
});

describe('retention settings', () => {
  test('lifecycle rule json', () => {
    const rule = lifecycleRule({ prefix: 'databases/users', retention: 24 * 3600_000, snapshotInterval: 0, retentionCheckInterval: 3600_000 });
    assert.deepEqual(JSON.parse(JSON.stringify(rule)), {
      Rules: [
        {
          ID: 'walship-retention',
          Filter: { Prefix: 'databases/users/generations/' },
          Status: 'Enabled',
          Expiration: { Days: 3 },
          AbortIncompleteMultipartUpload: { DaysAfterInitiation: 1 },
        },
      ],
    });

    const hourly = lifecycleRule({ prefix: '', retention: 24 * 3600_000, snapshotInterval: 3600_000, retentionCheckInterval: 3600_000 });
    assert.equal((hourly.Rules[0]!.Filter as { Prefix: string }).Prefix, 'generations/');
    assert.deepEqual(hourly.Rules[0]!.Expiration, { Days: 2 });
  });

  test('snapshot period', () => {
    assert.deepEqual(snapshotPeriod({ snapshotInterval: 0, retention: 0 }), undefined);
    assert.deepEqual(snapshotPeriod({ snapshotInterval: 0, retention: 5000 }), { ms: 5000, reason: 'retention' });
    assert.deepEqual(snapshotPeriod({ snapshotInterval: 1000, retention: 5000 }), { ms: 1000, reason: 'snapshot-interval' });
    assert.deepEqual(snapshotPeriod({ snapshotInterval: 1000, retention: 0 }), { ms: 1000, reason: 'snapshot-interval' });
  });

  test('retention-mode parsed', () => {
    const text = (extra: string) => `dbs:\n  - path: /data/users.db\n    replicas:\n      - type: s3\n        bucket: b\n${extra}`;
    const defaulted = parseConfig(text(''), 'test.yml').dbs[0]!.replicas[0]!;
    assert.equal(defaulted.retentionMode, 'delete');
    assert.equal(defaulted.retention, 24 * 3600_000);

    const lifecycle = parseConfig(text('        retention-mode: lifecycle\n'), 'test.yml').dbs[0]!.replicas[0]!;
    assert.equal(lifecycle.retentionMode, 'lifecycle');

    assert.throws(() => parseConfig(text('        retention-mode: expire\n'), 'test.yml'), /retention-mode "expire" is not a retention mode; use delete, or lifecycle/);
    assert.throws(() => parseConfig(text('        retention-check-interval: 0\n'), 'test.yml'), /retention-check-interval is 0 while retention is on/);
    assert.equal(parseConfig(text('        retention: 0\n        retention-check-interval: 0\n'), 'test.yml').dbs[0]!.replicas[0]!.retention, 0);
  });
});

describe('retention deletes', () => {
  test('DeleteObjects per-key errors', async () => {
    // DeleteObjects returns 200 and lists the keys it could not delete in its body.
    const requests: string[] = [];
    const server = http.createServer((req, res) => {
      let body = '';
      req.on('data', (chunk: Buffer) => (body += chunk.toString()));
      req.on('end', () => {
        requests.push(`${req.method} ${req.url}`);
        const errors = ['gone', 'locked']
          .filter((name) => body.includes(`<Key>p/generations/${name}</Key>`))
          .map((name) => {
            const [code, message] = name === 'gone' ? ['NoSuchKey', 'The specified key does not exist.'] : ['AccessDenied', 'Access Denied'];
            return `<Error><Key>p/generations/${name}</Key><Code>${code}</Code><Message>${message}</Message></Error>`;
          });
        res.writeHead(200, { 'content-type': 'application/xml' });
        res.end(`<?xml version="1.0" encoding="UTF-8"?><DeleteResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">${errors.join('')}</DeleteResult>`);
      });
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const endpoint = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    const client = createReplicaClient({ type: 's3', bucket: 'b', prefix: 'p', endpoint, region: 'us-east-1', forcePathStyle: true, accessKeyId: S3RVER_CREDENTIAL, secretAccessKey: S3RVER_CREDENTIAL });
    try {
      await client.delete(['generations/gone', 'generations/ok']);
      await assert.rejects(client.delete(['generations/ok', 'generations/locked']), /DeleteObjects .*p\/generations\/locked failed: AccessDenied: Access Denied/);
      assert.deepEqual(requests, ['POST /b/?delete=', 'POST /b/?delete=']);
    } finally {
      await client.close();
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
    }
  });
});

/** A committed transaction of the test writer with the times around it. */
interface Commit {
  /** Transactions committed so far, this one included. */
  count: number;
  sentAt: number;
  doneAt: number;
}

/** SQL of transaction `k`: a new row, and a change to an older one, so that restored states differ in more than their length. */
function transactionSql(k: number): string {
  return (
    `BEGIN; INSERT INTO t (id, tag, payload) VALUES (${k}, 'row ${k}', zeroblob(${600 + (k % 7) * 300})); ` +
    `UPDATE t SET tag = 'seen by ${k}' WHERE id = ${Math.max(1, k - 3)}; COMMIT;`
  );
}

/** Commits transactions one at a time, `gapMs` apart, for `durationMs`, recording when each was sent and acknowledged. */
async function writeFor(writer: Writer, commits: Commit[], durationMs: number, gapMs: number): Promise<void> {
  const end = Date.now() + durationMs;
  while (Date.now() < end) {
    const count = commits.length + 1;
    const sentAt = Date.now();
    await writer.exec(transactionSql(count));
    commits.push({ count, sentAt, doneAt: Date.now() });
    await sleep(gapMs);
  }
}

/** Content hashes of the database after each count of transactions, from a reference database built with the same SQL. */
function referenceHashes(dir: string, upTo: number): string[] {
  const file = path.join(dir, 'reference.db');
  const db = new Database(file);
  db.exec('CREATE TABLE t (id INTEGER PRIMARY KEY, tag TEXT NOT NULL, payload BLOB NOT NULL)');
  db.close();

  const hashes = [contentHash(file)];
  for (let k = 1; k <= upTo; k++) {
    const conn = new Database(file);
    conn.exec(transactionSql(k));
    conn.close();
    hashes.push(contentHash(file));
  }
  return hashes;
}

/** Reports whether a file exists. */
async function fileExists(file: string): Promise<boolean> {
  return fs.access(file).then(
    () => true,
    () => false,
  );
}

/** Sets the retention and snapshot settings of every replica of a harness. */
function configure(h: Harness, settings: Partial<ReplicaConfig>): void {
  for (const replica of h.config.dbs[0]!.replicas) Object.assign(replica, settings);
}

/** Returns the `retention enforced` records of one replica. */
function retentionPasses(h: Harness, kind: ReplicaKind): LogRecord[] {
  return h.logsWith('retention enforced').filter((r) => r.replica === kind);
}

/** Lists a replica's only generation with its snapshots and segments. */
async function listOnly(h: Harness, kind: ReplicaKind): Promise<{ generation: string; snapshots: SnapshotInfo[]; segments: SegmentInfo[] }> {
  return h.withClient(kind, async (client) => {
    const generations = await listGenerations(client);
    assert.equal(generations.length, 1, `${kind}: one generation expected, found ${generations.join(',')}`);
    const generation = generations[0]!;
    return { generation, snapshots: await listSnapshots(client, generation), segments: await listSegments(client, generation) };
  });
}

describe('retention on live replicas', () => {
  test('every point in window restores', async () => {
    const h = await Harness.create({ kinds: ['file', 's3'], s3, syncInterval: 0 });
    const pool = new ShipPool({ threads: 2 });
    try {
      configure(h, { retention: 2500, retentionCheckInterval: 500, snapshotInterval: 1000, retentionMode: 'delete' });
      const writer = await h.openWriter();
      const commits: Commit[] = [];
      await writeFor(writer, commits, 300, 100);

      const replicator = await h.startReplicator();
      await writeFor(writer, commits, 7000, 150);
      await h.stopReplicator(replicator);
      await writer.close();

      const hashes = referenceHashes(h.dir, commits.length);
      for (const kind of ['file', 's3'] as const) {
        const passes = retentionPasses(h, kind);
        assert.ok(passes.length >= 5, `${kind}: retention passes ${passes.length}\n${h.logText()}`);
        const deleted = passes.reduce((sum, r) => sum + Number(r.deleted), 0);
        assert.ok(deleted > 0, `${kind}: retention deleted nothing\n${h.logText()}`);
        for (const pass of passes) {
          assert.equal(pass.db, 'source');
          assert.equal(typeof pass.bytes, 'number');
          assert.equal(typeof pass.window, 'string');
        }

        // The oldest snapshot left is the one the last pass kept: the newest created at or before its window start.
        const last = passes.at(-1)!;
        const windowStart = Date.parse(last.window as string);
        const { generation, snapshots, segments } = await listOnly(h, kind);
        const base = snapshots[0]!;
        assert.equal(base.index, parseInt(last.index as string, 16), `${kind}: kept snapshot`);
        assert.ok(base.index > 0, `${kind}: the first snapshot should be gone`);
        assert.ok(base.createdAt.getTime() <= windowStart, `${kind}: kept snapshot ${base.createdAt.toISOString()} is after the window start ${last.window}`);
        assert.ok(snapshots.length >= 2, `${kind}: periodic snapshots after the kept one`);
        assert.ok(segments.every((s) => s.index >= base.index), `${kind}: segment before the kept snapshot: ${segments[0]?.key}`);

        // The window's start, and the moment after every commit inside the window.
        const targets = [{ at: windowStart, count: commits.filter((c) => c.doneAt <= windowStart).length, ambiguous: commits.some((c) => c.sentAt <= windowStart && windowStart < c.doneAt) }];
        for (let i = 0; i < commits.length; i++) {
          const next = commits[i + 1];
          const at = next === undefined ? Date.now() : next.sentAt - 5;
          if (at >= windowStart) targets.push({ at, count: commits[i]!.count, ambiguous: false });
        }
        assert.ok(targets.length > 10, `${kind}: ${targets.length} points in the window`);

        let restored = 0;
        for (const target of targets) {
          if (target.ambiguous) continue;
          restored++;
          const output = path.join(h.dir, `${kind}-${target.at}.db`);
          const result = await restore({ client: h.replicaConfig(kind), outputPath: output, timestamp: new Date(target.at), pool });
          const label = `${kind} at ${new Date(target.at).toISOString()} (${target.count} commits, snapshot ${result.snapshotIndex})`;
          assert.equal(result.generation, generation, label);
          assert.equal(integrityCheck(output), 'ok', label);
          assert.equal(contentHash(output), hashes[target.count], label);
        }

        if (kind === 'file') assert.ok(restored >= 5, `${kind}: only ${restored} points restored`);

        // Every WAL index left restores to a committed state, later indexes to later states,
        // and on s3 to the same content as from the file replica where both still hold the index.
        const countOf = new Map(hashes.map((hash, count) => [hash, count]));
        const lastIndex = segments.at(-1)!.index;
        let previous = 0;
        for (let index = base.index; index <= lastIndex; index++) {
          const output = path.join(h.dir, `${kind}-index-${index}.db`);
          await restore({ client: h.replicaConfig(kind), outputPath: output, index, pool });
          assert.equal(integrityCheck(output), 'ok', `${kind} index ${index}`);

          const count = countOf.get(contentHash(output));
          assert.ok(count !== undefined, `${kind} index ${index}: not a committed state`);
          assert.ok(count >= previous, `${kind} index ${index}: ${count} commits, fewer than the ${previous} of the index before`);
          previous = count;
          const reference = path.join(h.dir, `file-index-${index}.db`);
          if (kind === 's3' && (await fileExists(reference))) assert.equal(contentHash(output), contentHash(reference), `${kind} index ${index}`);
        }

        // The latest state.
        const latest = path.join(h.dir, `${kind}-latest.db`);
        await restore({ client: h.replicaConfig(kind), outputPath: latest, pool });
        assert.equal(contentHash(latest), hashes[commits.length], `${kind}: latest state`);
      }
    } finally {
      await pool.close();
      await h.cleanup();
    }
  });

  test('lifecycle mode deletes nothing', async () => {
    const h = await Harness.create({ kinds: ['file', 's3'], s3, syncInterval: 0 });
    try {
      configure(h, { retention: 1000, retentionCheckInterval: 300, snapshotInterval: 400, retentionMode: 'lifecycle' });
      const writer = await h.openWriter();
      const commits: Commit[] = [];
      await writeFor(writer, commits, 100, 50);

      // Writes go on until a pass of each replica finds objects past the window, at most 10 s.
      const replicator = await h.startReplicator();
      const expired = (kind: ReplicaKind) => retentionPasses(h, kind).some((r) => Number(r.expirable) > 0);
      const deadline = Date.now() + 10_000;
      await writeFor(writer, commits, 2000, 100);
      while (!(expired('file') && expired('s3')) && Date.now() < deadline) await writeFor(writer, commits, 300, 100);
      await h.stopReplicator(replicator);
      await writer.close();

      for (const kind of ['file', 's3'] as const) {
        const passes = retentionPasses(h, kind);
        assert.ok(passes.length >= 4, `${kind}: retention passes ${passes.length}\n${h.logText()}`);
        assert.ok(passes.every((r) => r.deleted === 0 && r.mode === 'lifecycle'), `${kind}: lifecycle mode deleted objects`);
        assert.ok(passes.some((r) => Number(r.expirable) > 0), `${kind}: no pass found objects past the window\n${h.logText()}`);

        const { snapshots } = await listOnly(h, kind);
        const firstWritten = h.logsWith('snapshot written').find((r) => r.replica === kind)!;
        assert.equal(snapshots[0]!.key, firstWritten.key, `${kind}: the generation's first snapshot is kept`);
        assert.ok(snapshots.length >= 3, `${kind}: ${snapshots.length} snapshots`);
      }

      // The rule is logged once per replica; a file replica has none to apply.
      const notices = h.logs.filter((r) => typeof r.msg === 'string' && r.msg.startsWith('retention-mode is lifecycle'));
      assert.equal(notices.filter((r) => r.replica === 's3').length, 1);
      assert.equal(notices.filter((r) => r.replica === 'file').length, 1);
      const s3Notice = notices.find((r) => r.replica === 's3')!;
      assert.equal(s3Notice.bucket, s3.bucket);
      const rule = JSON.parse(s3Notice.rule as string) as { Rules: Array<{ Filter: { Prefix: string }; Expiration: { Days: number } }> };
      const client = h.replicaConfig('s3');
      assert.equal(rule.Rules[0]!.Filter.Prefix, `${client.type === 's3' ? client.prefix : ''}/generations/`);
      assert.equal(rule.Rules[0]!.Expiration.Days, 1);
    } finally {
      await h.cleanup();
    }
  });

  test('snapshot interval across restarts', async () => {
    const interval = 4000;
    const replicators: Replicator[] = [];
    const h = await Harness.create({ kinds: ['file'], syncInterval: 0 });
    try {
      configure(h, { retention: 0, snapshotInterval: interval });
      const writer = await h.openWriter();
      const commits: Commit[] = [];
      await writeFor(writer, commits, 100, 50);

      // Two restarts inside one interval write no snapshot beyond the generation's first.
      let lastStart = 0;
      for (let run = 0; run < 3; run++) {
        lastStart = Date.now();
        const replicator = await h.startReplicator();
        await writeFor(writer, commits, run < 2 ? 1100 : 0, 50);
        if (run < 2) await h.stopReplicator(replicator);
        else replicators.push(replicator);
      }
      const first = await listOnly(h, 'file');
      assert.equal(first.snapshots.length, 1, `snapshots after restarts: ${first.snapshots.map((s) => s.key).join(',')}\n${h.logText()}`);
      const start = first.snapshots[0]!.createdAt.getTime();
      assert.ok(lastStart - start < interval, 'the restarts took longer than one interval');

      // The next snapshot comes one interval after the first, counted across the restarts.
      const deadline = Date.now() + 2 * interval;
      let snapshots = first.snapshots;
      while (snapshots.length < 2 && Date.now() < deadline) {
        await writeFor(writer, commits, 200, 50);
        snapshots = (await listOnly(h, 'file')).snapshots;
      }
      await writeFor(writer, commits, 500, 50);
      await h.stopReplicator(replicators.pop()!);
      await writer.close();

      snapshots = (await listOnly(h, 'file')).snapshots;
      assert.equal(snapshots.length, 2, `snapshots: ${snapshots.map((s) => `${s.key}@${s.createdAt.toISOString()}`).join(',')}\n${h.logText()}`);
      const second = snapshots[1]!.createdAt.getTime();
      assert.ok(second - start >= interval, 'second snapshot came before the interval');
      assert.ok(second < lastStart + interval, 'second snapshot was counted from the last start, not from the first snapshot');
      assert.ok(snapshots[1]!.index > snapshots[0]!.index, 'second snapshot is at a later WAL index');
      assert.equal(h.logsWith('periodic snapshot written').length, 1);
    } finally {
      await h.cleanup();
    }
  });
});

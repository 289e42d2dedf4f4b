import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';

import Database from 'better-sqlite3';

import { formatLag, formatTable, formatTime } from '../src/cli/table.js';
import type { ReplicaClient } from '../src/replica/client.js';
import { createReplicaClient } from '../src/replica/create.js';
import { generationBounds, listGenerations, listSegments, listSnapshots } from '../src/replica/listing.js';
import { Harness } from './support/replicate-harness.js';
import { S3RVER_CREDENTIAL, s3ClientConfig, startS3Server } from './support/s3-server.js';
import type { S3Server } from './support/s3-server.js';

/**
 * The inspection commands run as child processes (`databases`, `generations`,
 * `snapshots`, `wal`, `ls`, `verify`) against the Litestream v0.3.11 fixture
 * replica and against replicas that walship's Replicator wrote to a directory
 * and to s3rver. Where the real Litestream v0.3.13 binary is installed, its
 * tables for the same file replica are compared line by line.
 */

const MAIN = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));
const FIXTURE = fileURLToPath(new URL('../../test/fixtures/litestream-v0.3.11/', import.meta.url));
const LITESTREAM = fileURLToPath(new URL('../../node_modules/@flydotio/litestream-linux-x64/litestream', import.meta.url));
const NO_LITESTREAM = !existsSync(LITESTREAM) && 'Litestream binary not installed';

const GEN1 = '78eb93ce395367ad';
const GEN2 = 'bec662feba8af0f3';

interface RunResult {
  status: number | null;
  stdout: string;
  stderr: string;
}

interface ManifestEntry {
  key: string;
  size: number;
  mtime: string;
}

let scratch: string;
let s3: S3Server;
let manifest: ManifestEntry[];
// A replica written by walship to a directory and to s3rver, shared by the tests that only read it.
let written: Harness;

before(async () => {
  scratch = await fs.mkdtemp(path.join(os.tmpdir(), 'walship-inspect-'));
  s3 = await startS3Server();
  manifest = JSON.parse(await fs.readFile(path.join(FIXTURE, 'file-replica.manifest.json'), 'utf8')) as ManifestEntry[];
  written = await writeReplicas();
});

after(async () => {
  await written?.cleanup();
  await s3?.close();
  await fs.rm(scratch, { recursive: true, force: true });
});

/** Environment of the CLI without AWS, Litestream or walship settings of the machine. */
function cleanEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [key, value] of Object.entries(process.env)) {
    if (!/^(AWS_|LITESTREAM_|WALSHIP_)/.test(key)) env[key] = value;
  }
  return { ...env, ...extra };
}

/** Runs the walship CLI to completion, at most 60 s, and returns its exit status and output. */
function run(args: string[], env: Record<string, string> = {}): Promise<RunResult> {
  const child = spawn(process.execPath, [MAIN, ...args], { env: cleanEnv(env), stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
  child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));

  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`walship ${args.join(' ')} did not exit within 60 s; stderr: ${stderr}`));
    }, 60_000);
    child.on('close', (status) => {
      clearTimeout(timer);
      resolve({ status, stdout, stderr });
    });
  });
}

/** Runs the CLI and asserts exit 0. */
async function runOk(args: string[], env: Record<string, string> = {}): Promise<string> {
  const result = await run(args, env);
  assert.equal(result.status, 0, `walship ${args.join(' ')} failed: ${result.stderr}`);
  return result.stdout;
}

/** Runs the real Litestream binary in UTC, so that its times print as walship prints them. */
function litestream(args: string[]): string {
  return execFileSync(LITESTREAM, args, { env: { ...cleanEnv(), TZ: 'UTC' }, encoding: 'utf8' });
}

/** Splits a table into rows of cells, the header first. */
function parseTable(text: string): string[][] {
  return text
    .trimEnd()
    .split('\n')
    .map((line) => line.trim().split(/\s{2,}/));
}

/** Parses a manifest time, dropping digits past the millisecond that Date cannot hold. */
function manifestTime(mtime: string): Date {
  return new Date(mtime.replace(/(\.\d{3})\d*Z$/, '$1Z'));
}

/** Copies the Litestream fixture replica to `root` and sets object times from its manifest. */
async function copyFixture(root: string): Promise<string> {
  await fs.mkdir(path.dirname(root), { recursive: true });
  await fs.cp(path.join(FIXTURE, 'file-replica'), root, { recursive: true });
  for (const { key, mtime } of manifest) await fs.utimes(path.join(root, key), manifestTime(mtime), manifestTime(mtime));
  return root;
}

/** Returns a fresh directory under the scratch directory. */
async function freshDir(name: string): Promise<string> {
  return fs.mkdtemp(path.join(scratch, `${name}-`));
}

/** Runs `fn` with a client and closes it afterwards. */
async function withClient<T>(client: ReplicaClient, fn: (client: ReplicaClient) => Promise<T>): Promise<T> {
  try {
    return await fn(client);
  } finally {
    await client.close();
  }
}

/**
 * Replicates a database with two WAL indexes and two snapshots to a file
 * replica and an S3 replica, then stops the Replicator. Each replica folder
 * then gets a lease object, walship/lease.json, as a walship that takes a lease writes it.
 */
async function writeReplicas(): Promise<Harness> {
  const h = await Harness.create({ kinds: ['file', 's3'], s3 });
  const writer = await h.openWriter();
  const replicator = await h.startReplicator();
  // The first snapshot is taken at WAL index 0, before any write.
  await replicator.sync();

  // walship checkpoints at most once a second, so each round after a pause starts a new WAL index.
  for (let round = 0; round < 3; round++) {
    if (round > 0) await sleep(1100);
    await writer.insert({ transactions: 20, rows: 5, bytes: 300, tag: `round ${round}` });
    await replicator.sync();
    if (round === 1) await replicator.snapshot();
  }
  await h.stopReplicator(replicator);
  await writer.close();

  for (const kind of ['file', 's3'] as const) {
    await h.withClient(kind, (client) => client.put('walship/lease.json', Buffer.from('{"owner":"test"}')));
  }
  return h;
}

describe('table format', () => {
  test('columns padded by two', () => {
    const text = formatTable(['a', 'long'], [{ a: 'xyz', long: 1 }, { a: 'q', long: 22 }]);
    assert.equal(text, 'a    long\nxyz  1\nq    22\n');
  });

  test('lag as Go duration', () => {
    assert.equal(formatLag(0), '0s');
    assert.equal(formatLag(81), '81ms');
    assert.equal(formatLag(1540), '1.5s');
    assert.equal(formatLag(10_999), '10s');
    assert.equal(formatLag(123_456), '2m3s');
    assert.equal(formatLag(3_605_000), '1h0m5s');
    assert.equal(formatLag(-2500), '-2.5s');
  });

  test('times in whole seconds', () => {
    assert.equal(formatTime(new Date('2026-12-04T20:11:50.999Z')), '2026-12-04T20:11:50Z');
  });
});

describe('inspect Litestream fixture', () => {
  let root: string;
  let url: string;

  before(async () => {
    root = await copyFixture(path.join(await freshDir('fixture'), 'replica'));
    url = `file://${root}`;
  });

  test('snapshots columns and values', async () => {
    const rows = parseTable(await runOk(['snapshots', url]));
    assert.deepEqual(rows[0], ['replica', 'generation', 'index', 'size', 'created']);

    const expected = manifest
      .filter((m) => m.key.includes('/snapshots/'))
      .map((m) => {
        const [, generation, , name] = m.key.split('/');
        return ['file', generation!, String(parseInt(name!.slice(0, 8), 16)), String(m.size), formatTime(manifestTime(m.mtime))];
      })
      .sort((a, b) => a[1]!.localeCompare(b[1]!) || Number(a[2]) - Number(b[2]));
    assert.deepEqual(rows.slice(1), expected);
  });

  test('wal decimal index and offset', async () => {
    const rows = parseTable(await runOk(['wal', url]));
    assert.deepEqual(rows[0], ['replica', 'generation', 'index', 'offset', 'size', 'created']);
    assert.equal(rows.length - 1, manifest.filter((m) => m.key.includes('/wal/')).length);

    // 00000002_0001a290.wal.lz4 of the first generation: index 2, offset 0x1a290.
    const entry = manifest.find((m) => m.key === `generations/${GEN1}/wal/00000002_0001a290.wal.lz4`)!;
    const row = rows.find((r) => r[1] === GEN1 && r[2] === '2' && r[3] === String(0x1a290));
    assert.deepEqual(row, ['file', GEN1, '2', '107152', String(entry.size), formatTime(manifestTime(entry.mtime))]);
  });

  test('wal one generation', async () => {
    const rows = parseTable(await runOk(['wal', '-generation', GEN2, url])).slice(1);
    assert.equal(rows.length, manifest.filter((m) => m.key.startsWith(`generations/${GEN2}/wal/`)).length);
    assert.ok(rows.every((r) => r[1] === GEN2));
  });

  test('wal invalid generation', async () => {
    const result = await run(['wal', '-generation', 'XYZ', url]);
    assert.notEqual(result.status, 0);
    assert.match(result.stderr, /-generation XYZ is not a generation/);
  });

  test('generations bounds', async () => {
    const expected = JSON.parse(await fs.readFile(path.join(FIXTURE, 'expected.json'), 'utf8')) as {
      generation_bounds: { file: Record<string, { created: string; updated: string }> };
    };
    const rows = parseTable(await runOk(['generations', url]));
    assert.deepEqual(rows[0], ['name', 'generation', 'lag', 'start', 'end']);
    assert.deepEqual(
      rows.slice(1).map((r) => [r[0], r[1], r[3], r[4]]),
      [GEN1, GEN2].map((g) => {
        const bounds = expected.generation_bounds.file[g]!;
        return ['file', g, formatTime(manifestTime(bounds.created)), formatTime(manifestTime(bounds.updated))];
      }),
    );
    assert.match(rows[1]![2]!, /^(\d+h)?(\d+m)?[\d.]+(ms|s)$/);
  });

  test('json output', async () => {
    const snapshots = JSON.parse(await runOk(['snapshots', '-json', url])) as Array<Record<string, unknown>>;
    const client = createReplicaClient({ type: 'file', root });
    const listed = await withClient(client, async (c) => [...(await listSnapshots(c, GEN1)), ...(await listSnapshots(c, GEN2))]);
    assert.deepEqual(
      snapshots,
      listed.map((s) => ({ replica: 'file', generation: s.generation, index: s.index, size: s.size, created: s.createdAt.toISOString() })),
    );

    const generations = JSON.parse(await runOk(['generations', '--json', url])) as Array<Record<string, unknown>>;
    assert.deepEqual(generations.map((g) => Object.keys(g)), [GEN1, GEN2].map(() => ['name', 'generation', 'lag', 'lag_ms', 'start', 'end']));
    assert.equal(typeof generations[0]!.lag_ms, 'number');

    const segments = JSON.parse(await runOk(['wal', '-json', '-generation', GEN1, url])) as Array<Record<string, unknown>>;
    assert.deepEqual(segments[1], { replica: 'file', generation: GEN1, index: 0, offset: 0xb128, size: segments[1]!.size, created: segments[1]!.created });
  });

  test('verify fixture', async () => {
    const tmp = await freshDir('tmp');
    const result = JSON.parse(await runOk(['verify', '-json', url], { TMPDIR: tmp })) as Array<Record<string, unknown>>;
    assert.equal(result.length, 1);
    assert.equal(result[0]!.generation, GEN2);
    assert.equal(result[0]!.integrity, 'ok');
    assert.equal(result[0]!.tables, 3, 'table t and the two _litestream_ tables');
    assert.equal((result[0]!.pages as number) * (result[0]!.page_size as number), result[0]!.size);

    const snapshot = manifest.find((m) => m.key === `generations/${GEN2}/snapshots/00000000.snapshot.lz4`)!;
    assert.equal(result[0]!.from, manifestTime(snapshot.mtime).toISOString());
    const newest = manifest.filter((m) => m.key.startsWith(`generations/${GEN2}/`)).map((m) => manifestTime(m.mtime).getTime());
    assert.equal(result[0]!.to, new Date(Math.max(...newest)).toISOString());
    assert.deepEqual(await fs.readdir(tmp), [], 'verify left temporary files');
  });

  test('same tables as Litestream', { skip: NO_LITESTREAM }, async () => {
    assert.equal(await runOk(['snapshots', url]), litestream(['snapshots', url]));
    assert.equal(await runOk(['wal', url]), litestream(['wal', url]));
    assert.equal(await runOk(['wal', '-generation', GEN1, url]), litestream(['wal', '-generation', GEN1, url]));

    // lag depends on the moment each command runs, so it is left out.
    const withoutLag = (text: string): string[][] => parseTable(text).map((r) => [r[0]!, r[1]!, r[3]!, r[4]!]);
    assert.deepEqual(withoutLag(await runOk(['generations', url])), withoutLag(litestream(['generations', url])));
  });
});

describe('inspect walship replicas', () => {
  test('config with file and s3', async () => {
    const configFile = await written.writeConfigFile();
    const rows = parseTable(await runOk(['snapshots', '-config', configFile, written.dbPath])).slice(1);

    for (const kind of ['file', 's3'] as const) {
      const listed = await written.withClient(kind, async (client) => {
        const generations = await listGenerations(client);
        return (await Promise.all(generations.map((g) => listSnapshots(client, g)))).flat();
      });
      assert.ok(listed.length >= 2, `${kind} replica has two snapshots`);
      assert.deepEqual(
        rows.filter((r) => r[0] === kind),
        listed.map((s) => [kind, s.generation, String(s.index), String(s.size), formatTime(s.createdAt)]),
      );
    }
  });

  test('wal counts and sizes', async () => {
    const configFile = await written.writeConfigFile();
    for (const kind of ['file', 's3'] as const) {
      const rows = parseTable(await runOk(['wal', '-config', configFile, '-replica', kind, written.dbPath])).slice(1);
      const listed = await written.withClient(kind, async (client) => {
        const generations = await listGenerations(client);
        return (await Promise.all(generations.map((g) => listSegments(client, g)))).flat();
      });
      assert.ok(new Set(listed.map((s) => s.index)).size >= 2, `${kind} replica spans two WAL indexes`);
      assert.deepEqual(
        rows,
        listed.map((s) => [kind, s.generation, String(s.index), String(s.offset), String(s.size), formatTime(s.createdAt)]),
      );
    }
  });

  test('generations ignore lease folder', async () => {
    const configFile = await written.writeConfigFile();
    const rows = parseTable(await runOk(['generations', '-config', configFile, written.dbPath])).slice(1);
    for (const kind of ['file', 's3'] as const) {
      const generations = await written.generations(kind);
      const bounds = await written.withClient(kind, (client) => generationBounds(client, generations[0]!));
      assert.deepEqual(
        rows.filter((r) => r[0] === kind).map((r) => [r[1], r[3], r[4]]),
        [[generations[0], formatTime(bounds.createdAt), formatTime(bounds.updatedAt)]],
      );
    }
  });

  test('unknown replica name', async () => {
    const configFile = await written.writeConfigFile();
    const result = await run(['snapshots', '-config', configFile, '-replica', 'nope', written.dbPath]);
    assert.notEqual(result.status, 0);
    assert.match(result.stderr, /no replica named "nope"; its replicas: file, s3/);
  });

  test('s3 replica URL', async () => {
    const client = written.replicaConfig('s3') as { bucket: string; prefix: string };
    const url = `s3://${client.bucket}/${client.prefix}?endpoint=${s3.endpoint}`;
    const env = { AWS_ACCESS_KEY_ID: S3RVER_CREDENTIAL, AWS_SECRET_ACCESS_KEY: S3RVER_CREDENTIAL };
    const rows = parseTable(await runOk(['snapshots', url], env)).slice(1);
    assert.ok(rows.length >= 2);
    assert.ok(rows.every((r) => r[0] === 's3'));
  });

  test('same tables as Litestream', { skip: NO_LITESTREAM }, async () => {
    const url = `file://${(written.replicaConfig('file') as { root: string }).root}`;
    assert.equal(await runOk(['snapshots', url]), litestream(['snapshots', url]));
    assert.equal(await runOk(['wal', url]), litestream(['wal', url]));
  });

  test('verify walship replica', async () => {
    const tmp = await freshDir('tmp');
    const url = `file://${(written.replicaConfig('file') as { root: string }).root}`;
    const text = await runOk(['verify', url], { TMPDIR: tmp });
    const rows = parseTable(text);
    assert.deepEqual(rows[0], ['replica', 'generation', 'position', 'from', 'to', 'size', 'pages', 'tables', 'integrity']);

    const [generation] = await written.generations('file');
    const { snapshots, bounds } = await written.withClient('file', async (client) => ({
      snapshots: await listSnapshots(client, generation!),
      bounds: await generationBounds(client, generation!),
    }));
    const row = rows[1]!;
    assert.equal(row[1], generation);
    assert.match(row[2]!, new RegExp(`^${generation}/[0-9a-f]{8}:\\d+$`));
    assert.equal(row[3], formatTime(snapshots[0]!.createdAt));
    assert.equal(row[4], formatTime(bounds.updatedAt));
    assert.equal(row[7], '1');
    assert.equal(row[8], 'ok');

    // The restored size matches the source database after a full checkpoint.
    const db = new Database(written.dbPath);
    db.pragma('wal_checkpoint(TRUNCATE)');
    const pages = db.pragma('page_count', { simple: true }) as number;
    db.close();
    assert.equal(row[6], String(pages));
    assert.deepEqual(await fs.readdir(tmp), []);
  });

  test('verify damaged segment', async () => {
    const tmp = await freshDir('tmp');
    const root = path.join(await freshDir('damaged'), 'replica');
    await fs.cp((written.replicaConfig('file') as { root: string }).root, root, { recursive: true });

    // Flip one byte in the middle of the largest WAL segment of the newest generation.
    const client = createReplicaClient({ type: 'file', root });
    const segments = await withClient(client, async (c) => listSegments(c, (await listGenerations(c)).at(-1)!));
    const largest = segments.reduce((a, b) => (b.size > a.size ? b : a));
    const file = path.join(root, largest.key);
    const bytes = await fs.readFile(file);
    bytes[Math.floor(bytes.length / 2)]! ^= 0xff;
    await fs.writeFile(file, bytes);

    const result = await run(['verify', `file://${root}`], { TMPDIR: tmp });
    assert.notEqual(result.status, 0, result.stdout);
    assert.ok(result.stderr.includes(largest.key), `stderr names ${largest.key}: ${result.stderr}`);
    assert.deepEqual(await fs.readdir(tmp), [], 'verify left temporary files');
  });
});

describe('inspect config', () => {
  let dir: string;
  let configFile: string;

  before(async () => {
    dir = await freshDir('config');
    await copyFixture(path.join(dir, 'primary'));
    await copyFixture(path.join(dir, 'dirs', 'databases', 'a'));
    await fs.mkdir(path.join(dir, 'many'));
    for (const name of ['a.db', 'b.db']) new Database(path.join(dir, 'many', name)).exec('CREATE TABLE x (y)').close();
    await fs.writeFile(path.join(dir, 'many', 'notes.db'), 'not a database');

    configFile = path.join(dir, 'walship.yml');
    await fs.writeFile(
      configFile,
      [
        'dbs:',
        `  - path: ${dir}/one.db`,
        '    replicas:',
        '      - name: primary',
        `        path: ${dir}/primary`,
        '      - name: broken',
        '        type: s3',
        '        bucket: no-such-bucket',
        '        path: db',
        `        endpoint: ${s3.endpoint}`,
        '        region: us-east-1',
        `        access-key-id: ${S3RVER_CREDENTIAL}`,
        `        secret-access-key: ${S3RVER_CREDENTIAL}`,
        `  - dir: ${dir}/many`,
        '    pattern: "*.db"',
        '    replicas:',
        `      - path: ${dir}/dirs`,
        '',
      ].join('\n'),
    );
  });

  test('databases lists dir entries', async () => {
    const rows = parseTable(await runOk(['databases', '-config', configFile]));
    assert.deepEqual(rows, [
      ['path', 'replicas'],
      [`${dir}/one.db`, 'primary,broken'],
      [`${dir}/many/a.db`, 'file'],
      [`${dir}/many/b.db`, 'file'],
    ]);

    const json = JSON.parse(await runOk(['databases', '-config', configFile, '-json'])) as unknown;
    assert.deepEqual(json, [
      { path: `${dir}/one.db`, replicas: ['primary', 'broken'] },
      { path: `${dir}/many/a.db`, replicas: ['file'] },
      { path: `${dir}/many/b.db`, replicas: ['file'] },
    ]);
  });

  test('failing replica logged, others printed', async () => {
    const result = await run(['snapshots', '-config', configFile, `${dir}/one.db`]);
    assert.equal(result.status, 1, result.stderr);
    const rows = parseTable(result.stdout).slice(1);
    assert.equal(rows.length, 4);
    assert.ok(rows.every((r) => r[0] === 'primary'));
    assert.match(result.stderr, /listing snapshots failed/);
    assert.match(result.stderr, /replica=broken/);
  });

  test('dir entry database resolved', async () => {
    const rows = parseTable(await runOk(['snapshots', '-config', configFile, `${dir}/many/a.db`])).slice(1);
    assert.deepEqual(
      rows.map((r) => [r[0], r[1], r[2]]),
      [
        ['file', GEN1, '0'],
        ['file', GEN1, '1'],
        ['file', GEN1, '3'],
        ['file', GEN2, '0'],
      ],
    );
  });

  test('database not in config', async () => {
    const result = await run(['wal', '-config', configFile, `${dir}/other.db`]);
    assert.notEqual(result.status, 0);
    assert.match(result.stderr, /other\.db is not in/);
  });

  test('config flag with URL', async () => {
    const result = await run(['wal', '-config', configFile, `file://${dir}/primary`]);
    assert.notEqual(result.status, 0);
    assert.match(result.stderr, /-config apply only to a DB_PATH/);
  });
});

describe('ls', () => {
  /** Copies the objects of a replica whose keys start with `from` to `<prefix>/` of another client. */
  async function copyObjects(source: ReplicaClient, target: ReplicaClient, prefix: string, from = ''): Promise<void> {
    for (const object of (await source.list(from)).objects) await target.put(`${prefix}/${object.key}`, await source.get(object.key));
  }

  /**
   * Fills a location with three database folders (two Litestream-written, one
   * walship-written with a lease) and one other folder. S3 object times have
   * whole seconds, so the second generation is uploaded a second after the
   * first to be the newest.
   */
  async function fillLocation(target: ReplicaClient): Promise<void> {
    const fixture = createReplicaClient({ type: 'file', root: path.join(FIXTURE, 'file-replica') });
    await withClient(fixture, async (source) => {
      for (const generation of [GEN1, GEN2]) {
        if (generation === GEN2) await sleep(1100);
        await copyObjects(source, target, 'databases/alpha', `generations/${generation}/`);
        await copyObjects(source, target, 'databases/beta', `generations/${generation}/`);
      }
    });
    await written.withClient('file', (source) => copyObjects(source, target, 'databases/gamma'));
    await target.put('databases/notes/readme.txt', Buffer.from('not a database'));
  }

  /** Returns the object count and byte sum under a folder, listed independently of the command. */
  async function usage(client: ReplicaClient, folder: string): Promise<[number, number]> {
    const objects = (await client.list(`${folder}/`)).objects;
    return [objects.length, objects.reduce((sum, o) => sum + o.size, 0)];
  }

  /** Checks the `ls` table against the location's own listing. */
  async function assertListing(client: ReplicaClient, stdout: string): Promise<void> {
    const rows = parseTable(stdout);
    assert.deepEqual(rows[0], ['name', 'generation', 'updated', 'objects', 'bytes']);
    assert.deepEqual(
      rows.slice(1).map((r) => r[0]),
      ['alpha', 'beta', 'gamma'],
    );

    const [gammaGeneration] = await written.generations('file');
    for (const row of rows.slice(1)) {
      const [objects, bytes] = await usage(client, `databases/${row[0]}`);
      assert.equal(row[3], String(objects), `objects of ${row[0]}`);
      assert.equal(row[4], String(bytes), `bytes of ${row[0]}`);
      assert.equal(row[1], row[0] === 'gamma' ? gammaGeneration : GEN2, `generation of ${row[0]}`);
    }
    const gamma = await usage(client, 'databases/gamma');
    const lease = (await client.list('databases/gamma/walship/')).objects;
    assert.equal(lease.length, 1, 'the lease object is counted');
    assert.ok(gamma[0] > lease.length);
  }

  test('s3 bucket', async () => {
    await s3.createBucket('ls-bucket');
    const client = createReplicaClient(s3ClientConfig(s3, 'ls-bucket', ''));
    await withClient(client, async (c) => {
      await fillLocation(c);
      const env = { AWS_ACCESS_KEY_ID: S3RVER_CREDENTIAL, AWS_SECRET_ACCESS_KEY: S3RVER_CREDENTIAL };
      const stdout = await runOk(['ls', `s3://ls-bucket/databases?endpoint=${s3.endpoint}`], env);
      await assertListing(c, stdout);

      const json = JSON.parse(await runOk(['ls', '-json', `s3://ls-bucket/databases?endpoint=${s3.endpoint}`], env)) as Array<Record<string, unknown>>;
      assert.deepEqual(Object.keys(json[0]!), ['name', 'generation', 'updated', 'objects', 'bytes']);
      assert.deepEqual(json[0]!.bytes, (await usage(c, 'databases/alpha'))[1]);
    });
  });

  test('file directory', async () => {
    const root = await freshDir('ls');
    const client = createReplicaClient({ type: 'file', root });
    await withClient(client, async (c) => {
      await fillLocation(c);
      await assertListing(c, await runOk(['ls', `file://${root}/databases`]));
    });
  });

  test('database folder itself', async () => {
    const root = await copyFixture(path.join(await freshDir('single'), 'replica'));
    const result = await run(['ls', `file://${root}`]);
    assert.equal(result.status, 0);
    assert.equal(result.stdout, 'name  generation  updated  objects  bytes\n');
    assert.match(result.stderr, /one database folder itself/);
  });
});

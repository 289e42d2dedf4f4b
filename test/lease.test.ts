import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { once } from 'node:events';
import { cp, mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';

import { hasCode, WalshipError } from '../src/errors.js';
import { leaseKey } from '../src/keys.js';
import { Lease, type LeaseOptions, type LeaseRecord } from '../src/lease.js';
import { createLogger } from '../src/logger.js';
import type { ReplicaClient } from '../src/replica/client.js';
import { FileReplicaClient } from '../src/replica/file-client.js';
import { listGenerations } from '../src/replica/listing.js';
import { S3ReplicaClient } from '../src/replica/s3-client.js';
import { s3ClientConfig, startS3Server, type S3Server } from './support/s3-server.js';

const DB = '/data/users.db';

const LITESTREAM = fileURLToPath(new URL('../../node_modules/@flydotio/litestream-linux-x64/litestream', import.meta.url));
const FIXTURE_REPLICA = fileURLToPath(new URL('../../test/fixtures/litestream-v0.3.11/file-replica', import.meta.url));

/** Collects JSON log lines. */
function captureLog(): { logger: ReturnType<typeof createLogger>; lines: Record<string, unknown>[] } {
  const lines: Record<string, unknown>[] = [];
  const logger = createLogger({ format: 'json', destination: { write: (line: string) => lines.push(JSON.parse(line)) } });
  return { logger, lines };
}

/** Creates a lease with short timings, so that renewals and expiry happen within a test. */
function lease(client: ReplicaClient, owner: string, options: Partial<LeaseOptions> = {}): Lease {
  return new Lease({ client, database: DB, owner, ttl: 3000, renewInterval: 100, retryDelay: 50, verifyDelay: 50, ...options });
}

/** Returns a lease record of another process on another host. */
function foreignRecord(expiresAt: Date): LeaseRecord {
  return {
    owner: 'other-owner',
    host: 'other-host.invalid',
    pid: 4242,
    database: '/elsewhere/users.db',
    acquiredAt: new Date(expiresAt.getTime() - 30_000).toISOString(),
    renewedAt: new Date(expiresAt.getTime() - 30_000).toISOString(),
    expiresAt: expiresAt.toISOString(),
  };
}

function body(record: LeaseRecord): Buffer {
  return Buffer.from(JSON.stringify(record));
}

/**
 * Waits for an event of a lease, failing after 10 s. The lease's timers do not
 * keep the process alive, so this timer does, as a daemon's other work would.
 */
async function nextEvent<T>(held: Lease, event: 'lost' | 'renewed'): Promise<T> {
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(new Error(`no '${event}' event within 10 s`)), 10_000);
  try {
    const [value] = (await once(held, event, { signal: controller.signal })) as [T];
    return value;
  } finally {
    clearTimeout(timer);
  }
}

async function lostError(held: Lease): Promise<WalshipError> {
  return nextEvent<WalshipError>(held, 'lost');
}

/** A replica backend for the shared lease tests. */
interface Backend {
  name: string;
  /** Whether the store enforces conditional writes. */
  conditional: boolean;
  setup(): Promise<void>;
  open(): Promise<ReplicaClient>;
  teardown(): Promise<void>;
}

function s3Backend(name: string, conditionalWrites: boolean): Backend {
  let server: S3Server | undefined;
  let prefixes = 0;
  return {
    name,
    conditional: conditionalWrites,
    async setup() {
      server = await startS3Server({ conditionalWrites });
    },
    async open() {
      return new S3ReplicaClient(s3ClientConfig(server!, server!.bucket, `lease-${++prefixes}/db`));
    },
    async teardown() {
      await server?.close();
    },
  };
}

function fileBackend(): Backend {
  let dir = '';
  let roots = 0;
  return {
    name: 'file',
    conditional: true,
    async setup() {
      dir = await mkdtemp(path.join(os.tmpdir(), 'walship-lease-'));
    },
    async open() {
      return new FileReplicaClient({ type: 'file', root: path.join(dir, `replica-${++roots}`) });
    },
    async teardown() {
      await rm(dir, { recursive: true, force: true });
    },
  };
}

const backends = [s3Backend('s3', true), s3Backend('s3 without conditional writes', false), fileBackend()];

for (const backend of backends) {
  describe(`lease on ${backend.name}`, () => {
    before(() => backend.setup());
    after(() => backend.teardown());

    test('second owner is refused', async () => {
      const client = await backend.open();
      const first = lease(client, 'owner-a');
      const record = await first.acquire();
      assert.equal(first.state, 'held');
      assert.equal(first.conditionalWrites, backend.conditional);

      const second = lease(client, 'owner-b');
      await assert.rejects(second.acquire(), (err) => {
        assert.ok(hasCode(err, 'LEASE_HELD'));
        const message = (err as Error).message;
        assert.ok(message.includes(`walship process ${process.pid} on host ${os.hostname()}`), message);
        assert.ok(message.includes(DB), message);
        assert.match(message, /until \d{4}-\d\d-\d\dT/);
        return true;
      });

      const stored = JSON.parse((await client.get(leaseKey(''))).toString()) as LeaseRecord;
      assert.equal(stored.owner, 'owner-a');
      assert.equal(stored.acquiredAt, record.acquiredAt);
      await first.release();
      await client.close();
    });

    test('release lets the next owner in', async () => {
      const client = await backend.open();
      const first = lease(client, 'owner-a');
      await first.acquire();
      await first.release();
      assert.equal(first.state, 'released');
      assert.equal(await client.getVersioned(leaseKey('')), undefined);

      const second = lease(client, 'owner-b');
      await second.acquire();
      await second.release();
      await client.close();
    });

    test('expired lease is taken over', async () => {
      const client = await backend.open();
      await client.put(leaseKey(''), body(foreignRecord(new Date(Date.now() - 1000))));

      const { logger, lines } = captureLog();
      const taker = lease(client, 'owner-a', { logger });
      await taker.acquire();

      const takeover = lines.find((l) => l['msg'] === 'taking over expired lease');
      assert.ok(takeover, JSON.stringify(lines));
      assert.equal(takeover['previousHost'], 'other-host.invalid');
      const stored = JSON.parse((await client.get(leaseKey(''))).toString()) as LeaseRecord;
      assert.equal(stored.owner, 'owner-a');
      await taker.release();
      await client.close();
    });

    test('unexpired foreign lease is refused', async () => {
      const client = await backend.open();
      await client.put(leaseKey(''), body(foreignRecord(new Date(Date.now() + 60_000))));

      await assert.rejects(lease(client, 'owner-a').acquire(), (err) => {
        assert.ok(hasCode(err, 'LEASE_HELD'));
        assert.match((err as Error).message, /walship process 4242 on host other-host\.invalid \(database \/elsewhere\/users\.db\)/);
        return true;
      });
      await client.close();
    });

    test('renewal extends the expiry', async () => {
      const client = await backend.open();
      const held = lease(client, 'owner-a');
      const first = await held.acquire();

      const renewed = await nextEvent<LeaseRecord>(held, 'renewed');
      assert.ok(Date.parse(renewed.expiresAt) > Date.parse(first.expiresAt));
      assert.equal(renewed.acquiredAt, first.acquiredAt);
      const stored = JSON.parse((await client.get(leaseKey(''))).toString()) as LeaseRecord;
      assert.ok(Date.parse(stored.expiresAt) >= Date.parse(renewed.expiresAt));
      await held.release();
      await client.close();
    });

    test('overwritten lease is lost', async () => {
      const client = await backend.open();
      const { logger, lines } = captureLog();
      const held = lease(client, 'owner-a', { logger });
      await held.acquire();

      const lost = lostError(held);
      await client.put(leaseKey(''), body(foreignRecord(new Date(Date.now() + 60_000))));
      const err = await lost;

      assert.ok(hasCode(err, 'LEASE_LOST'));
      assert.match(err.message, /walship process 4242 on host other-host\.invalid took over the lease/);
      assert.equal(held.state, 'lost');
      assert.ok(lines.some((l) => l['level'] === 'error' && l['msg'] === 'lease lost, replication to this replica stops'));

      // Release leaves the other owner's lease in place.
      await held.release();
      const stored = JSON.parse((await client.get(leaseKey(''))).toString()) as LeaseRecord;
      assert.equal(stored.owner, 'other-owner');
      await client.close();
    });

    test('deleted lease is lost', async () => {
      const client = await backend.open();
      const held = lease(client, 'owner-a');
      await held.acquire();

      const lost = lostError(held);
      await client.delete([leaseKey('')]);
      assert.match((await lost).message, /lease object was deleted/);
      await client.close();
    });

    test('same owner takes its lease back', async () => {
      const client = await backend.open();
      const first = lease(client, 'owner-a');
      await first.acquire();

      const restarted = lease(client, 'owner-a');
      await restarted.acquire();
      assert.equal(restarted.state, 'held');
      await restarted.release();
      await first.release();
      await client.close();
    });
  });
}

describe('lease', () => {
  test('key is outside generations', async () => {
    assert.equal(leaseKey(''), 'walship/lease.json');
    assert.equal(leaseKey('databases/users'), 'databases/users/walship/lease.json');

    const root = await mkdtemp(path.join(os.tmpdir(), 'walship-lease-key-'));
    const client = new FileReplicaClient({ type: 'file', root });
    await client.put('generations/0123456789abcdef/snapshots/00000000.snapshot.lz4', Buffer.from('x'));
    const held = new Lease({ client, database: DB, owner: 'owner-a' });
    await held.acquire();

    assert.deepEqual(await listGenerations(client), ['0123456789abcdef']);
    await held.release();
    await rm(root, { recursive: true, force: true });
  });

  test('Litestream v0.3 ignores the lease', async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'walship-lease-litestream-'));
    const root = path.join(dir, 'replica');
    await cp(FIXTURE_REPLICA, root, { recursive: true });
    const held = new Lease({ client: new FileReplicaClient({ type: 'file', root }), database: DB, owner: 'owner-a' });
    await held.acquire();

    const result = spawnSync(LITESTREAM, ['generations', `file://${root}`], {
      encoding: 'utf8',
      timeout: 20_000,
      env: { PATH: process.env['PATH'] ?? '/usr/bin:/bin', HOME: dir },
    });
    await held.release();
    await rm(dir, { recursive: true, force: true });

    assert.equal(result.status, 0, result.stderr);
    const generations = result.stdout.trim().split('\n').slice(1).map((line) => line.split(/\s+/)[1]);
    assert.deepEqual(generations.sort(), ['78eb93ce395367ad', 'bec662feba8af0f3']);
  });

  test('unsupported store warns once', async () => {
    const server = await startS3Server({ conditionalWrites: false });
    const client = new S3ReplicaClient(s3ClientConfig(server, server.bucket, 'warn/db'));
    const { logger, lines } = captureLog();
    const held = lease(client, 'owner-a', { logger });
    await held.acquire();
    await nextEvent(held, 'renewed');
    await nextEvent(held, 'renewed');
    await held.release();

    const warnings = lines.filter((l) => String(l['msg']).startsWith('conditional writes unsupported'));
    assert.equal(warnings.length, 1);
    assert.equal(warnings[0]!['level'], 'warn');
    assert.match(String(warnings[0]!['reason']), /accepted a PUT whose If-None-Match condition did not hold/);
    await client.close();
    await server.close();
  });

  test('failed renewals end in expiry', async () => {
    const root = await mkdtemp(path.join(os.tmpdir(), 'walship-lease-expiry-'));
    const client = new FileReplicaClient({ type: 'file', root });
    const held = lease(client, 'owner-a', { ttl: 600, renewInterval: 100 });
    await held.acquire();

    // From now on, every write fails as an unreachable store would.
    client.putConditional = async () => {
      throw new Error('connect ECONNREFUSED 127.0.0.1:9');
    };
    const err = await lostError(held);
    assert.ok(hasCode(err, 'LEASE_LOST'));
    assert.match(err.message, /expired at .* before a renewal succeeded/);
    await rm(root, { recursive: true, force: true });
  });

  test('invalid timings are rejected', async () => {
    const client = new FileReplicaClient({ type: 'file', root: os.tmpdir() });
    assert.throws(() => new Lease({ client, database: DB, ttl: 1000, renewInterval: 1000 }), (err) => hasCode(err, 'INVALID_INPUT'));
    assert.throws(() => new Lease({ client, database: DB, ttl: 0 }), (err) => hasCode(err, 'INVALID_INPUT'));
  });
});

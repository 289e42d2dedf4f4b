import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import { Readable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, before, describe, test } from 'node:test';

import type { S3ClientConfig } from '../src/replica/client.js';
import { listGenerations, listSegments, listSnapshots } from '../src/replica/listing.js';
import { S3ReplicaClient } from '../src/replica/s3-client.js';
import { hasCode } from '../src/errors.js';
import { restore } from '../src/restore.js';
import { contentHash, integrityCheck } from './support/content.js';
import { FaultProxy } from './support/fault-proxy.js';
import type { FaultKind, FaultRule } from './support/fault-proxy.js';
import { Harness } from './support/replicate-harness.js';
import type { DecodedSegment } from './support/replicate-harness.js';
import { s3ClientConfig, startS3Server } from './support/s3-server.js';
import type { S3Server } from './support/s3-server.js';

/**
 * Faults between walship and S3: a fault proxy in front of s3rver returns
 * errors, holds, resets and truncates requests, and plays quirks of
 * S3-compatible stores. walship's Replicator, writing a real SQLite database,
 * must keep shipping, never move its position past an object that was not
 * stored, leave no multipart upload open, and restore the source's content.
 */

const MIB = 1024 * 1024;

// FAULT_SEED=<n> repeats a run's fault pattern; the seed is in every assertion message.
const SEED = process.env.FAULT_SEED !== undefined ? Number(process.env.FAULT_SEED) : undefined;

// Smallest part size S3 accepts, so that a 6 MiB body is a multipart upload.
const PART_SIZE = 5 * MIB;

// Upper bound of every wait for the replica to catch up.
const CATCH_UP_TIMEOUT_MS = 20_000;

let server: S3Server;

before(async () => {
  server = await startS3Server();
});

after(async () => {
  await server?.close();
});

/** Client settings of `prefix` that reach s3rver through `proxy`, or directly without one. */
function clientConfig(prefix: string, proxy?: FaultProxy, bucket = server.bucket): S3ClientConfig {
  const config = s3ClientConfig(server, bucket, prefix);
  return proxy ? { ...config, endpoint: proxy.endpoint } : config;
}

/** Starts a harness whose S3 replica goes through `proxy`, with 5 MiB parts. */
async function proxiedHarness(proxy: FaultProxy, syncInterval = 0): Promise<Harness> {
  const h = await Harness.create({ kinds: ['s3'], s3: { ...server, endpoint: proxy.endpoint }, syncInterval });
  const replica = h.config.dbs[0]!.replicas[0]!;
  replica.client = { ...(replica.client as S3ClientConfig), partSize: PART_SIZE };
  return h;
}

/** Returns the harness's replica settings pointed straight at s3rver, for inspection without faults. */
function directConfig(h: Harness): S3ClientConfig {
  return { ...(h.replicaConfig('s3') as S3ClientConfig), endpoint: server.endpoint };
}

/** Restores the latest state through `config` and compares it with the source. */
async function assertRestoreMatches(h: Harness, config: S3ClientConfig, context: string): Promise<void> {
  const output = path.join(h.dir, `restored-${randomBytes(4).toString('hex')}.db`);
  await restore({ client: config, outputPath: output });
  assert.equal(integrityCheck(output), 'ok', `integrity of the restore, ${context}`);
  assert.equal(contentHash(output), contentHash(h.dbPath), `restore differs from the source, ${context}\n${h.logText()}`);
}

/** Checks that every WAL index's segments follow one another without a gap. */
function assertContiguous(segments: DecodedSegment[], context: string): void {
  for (let i = 1; i < segments.length; i++) {
    const previous = segments[i - 1]!;
    const current = segments[i]!;
    if (current.index !== previous.index) continue;
    assert.equal(current.offset, previous.offset + previous.length, `gap before ${current.key}, ${context}`);
  }
}

/** Returns a full object key relative to the harness's replica prefix, as walship logs keys. */
function relativeKey(h: Harness, fullKey: string): string {
  return fullKey.slice((h.replicaConfig('s3') as S3ClientConfig).prefix.length + 1);
}

/** Keys of WAL segments that the replicator logged as shipped ('new transaction:' records). */
function shippedKeys(h: Harness): string[] {
  return h.logsWith('new transaction:').map((r) => String(r['key']));
}

/**
 * Polls until `check` passes or the time runs out, then runs it once more so
 * that a failure reports its own assertion.
 */
async function eventually(check: () => Promise<void>, timeoutMs = CATCH_UP_TIMEOUT_MS): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    try {
      await check();
      return;
    } catch {
      await sleep(200);
    }
  }
  await check();
}

/** Installs one rule per fault kind on every request, each at `probability`. */
function randomFaults(proxy: FaultProxy, kinds: FaultKind[], probability: number): void {
  for (const fault of kinds) {
    const rule: FaultRule = { fault, probability, holdMs: 400, delayMs: 150 };
    proxy.addRule(rule);
  }
}

describe('shipping through faults', () => {
  test('random faults lose nothing', { timeout: 60_000 }, async () => {
    const proxy = await FaultProxy.start(server.endpoint, { seed: SEED });
    const h = await proxiedHarness(proxy);
    const context = proxy.describe.bind(proxy);
    try {
      const writer = await h.openWriter();
      await writer.insert({ transactions: 5, rows: 1, bytes: 100 });
      const replicator = await h.startReplicator();

      // About 26% of all requests get one of six faults: 1 - 0.95^6.
      randomFaults(proxy, ['internal-error', 'slow-down', 'timeout', 'reset-request', 'reset-response', 'truncate'], 0.05);

      // While the writer runs, every segment logged as shipped must already be stored.
      let sampling = true;
      let samples = 0;
      const direct = new S3ReplicaClient(directConfig(h));
      const sampler = (async () => {
        while (sampling) {
          const logged = shippedKeys(h);
          const generations = [...new Set(logged.map((key) => key.split('/')[1]!))];
          const stored = new Set<string>();
          for (const generation of generations) for (const segment of await listSegments(direct, generation)) stored.add(segment.key);
          for (const key of logged) assert.ok(stored.has(key), `${key} was logged as shipped but is not stored, ${context()}`);
          samples++;
          await sleep(100);
        }
      })();

      try {
        await writer.insert({ transactions: 150, rows: 2, bytes: 400, pauseMs: 12 });
        // One transaction of about 6 MiB: its segment and the next snapshot are multipart uploads.
        await writer.insert({ transactions: 1, rows: 600, bytes: 10_000 });
        await writer.insert({ transactions: 150, rows: 2, bytes: 400, pauseMs: 12 });
        // A requested snapshot fails once the SDK's attempts run out, as it
        // would for an operator, who runs it again: so does the test, a bounded number of times.
        for (let attempt = 1; ; attempt++) {
          try {
            await replicator.snapshot();
            break;
          } catch (err) {
            if (attempt >= 4) throw err;
          }
        }
        await writer.insert({ transactions: 50, rows: 2, bytes: 400, pauseMs: 12 });
      } finally {
        sampling = false;
        await sampler;
      }
      const counts = await writer.close();

      // The faults end; the replica must catch up by itself through its backoff.
      proxy.clearRules();
      await replicator.sync();
      await h.stopReplicator(replicator);

      assert.ok(proxy.faults().length >= 10, `expected at least 10 injected faults, ${context()}`);
      assert.ok(samples > 0, 'the sampler never ran');
      assert.equal(counts.busy, 0, `the writer saw SQLITE_BUSY: ${counts.busyErrors.join('; ')}`);

      const uploads = await direct.listMultipartUploads('');
      assert.deepEqual(uploads, [], `multipart uploads left open, ${context()}`);
      for (const generation of await h.generations('s3')) {
        assertContiguous(await h.decodedSegments('s3', generation), context());
      }
      await direct.close();
      await assertRestoreMatches(h, directConfig(h), context());
      console.log(`random faults: ${context()}, ${counts.commits} transactions, ${samples} samples`);
    } finally {
      await h.cleanup();
      await proxy.close();
    }
  });

  test('failing segment upload holds the position', { timeout: 60_000 }, async () => {
    const proxy = await FaultProxy.start(server.endpoint, { seed: SEED });
    const h = await proxiedHarness(proxy);
    try {
      const writer = await h.openWriter();
      await writer.insert({ transactions: 5, rows: 1, bytes: 100 });
      const replicator = await h.startReplicator();
      await replicator.sync();

      // Every attempt to store the first WAL segment written from now on fails.
      let target: string | undefined;
      const remove = proxy.addRule({
        fault: 'internal-error',
        operation: ['PutObject', 'UploadPart', 'CreateMultipartUpload'],
        key: (key) => /\/wal\//.test(key) && (target ??= key) === key,
      });
      const shippedBefore = shippedKeys(h).length;
      const writing = writer.insert({ transactions: 60, rows: 1, bytes: 300, pauseMs: 20 });

      // While the segment fails, no later segment may be logged as shipped.
      const direct = new S3ReplicaClient(directConfig(h));
      const deadline = Date.now() + 2500;
      let gapsSeen = 0;
      while (Date.now() < deadline) {
        await sleep(100);
        if (target === undefined) continue;
        const after = shippedKeys(h).slice(shippedBefore);
        assert.deepEqual(after, [], `segments shipped while ${target} fails, ${proxy.describe()}`);
        const failing = relativeKey(h, target);
        const stored = (await listSegments(direct, failing.split('/')[1]!)).map((s) => s.key);
        if (stored.some((key) => key > failing) && !stored.includes(failing)) gapsSeen++;
      }
      assert.ok(target !== undefined, 'no WAL segment upload reached the proxy');
      assert.ok(proxy.faults().length >= 5, `the failing segment was attempted ${proxy.faults().length} times`);
      remove();

      await writing;
      await writer.close();
      const failing = relativeKey(h, target!);
      await eventually(async () => {
        assert.ok(shippedKeys(h).includes(failing), `${target} never shipped after the fault ended\n${h.logText()}`);
      });
      await replicator.sync();
      await h.stopReplicator(replicator);

      const generation = failing.split('/')[1]!;
      assertContiguous(await h.decodedSegments('s3', generation), proxy.describe());
      assert.deepEqual(await direct.listMultipartUploads(''), []);
      await direct.close();
      await assertRestoreMatches(h, directConfig(h), proxy.describe());
      // NOTE: uploads run several at a time, so a segment after the failing one
      // can be stored before the trim removes it. This counts the samples that saw one.
      console.log(`failing segment ${target}: ${gapsSeen} samples showed a later segment stored past it`);
    } finally {
      await h.cleanup();
      await proxy.close();
    }
  });
});

describe('first snapshot of a generation', () => {
  test('segments go up first, reported after', { timeout: 60_000 }, async () => {
    const proxy = await FaultProxy.start(server.endpoint, { seed: SEED });
    const h = await proxiedHarness(proxy);
    const direct = new S3ReplicaClient(directConfig(h));
    try {
      // The WAL contains frames, so the first snapshot needs segments of index 0.
      const writer = await h.openWriter();
      await writer.insert({ transactions: 20, rows: 5, bytes: 1000, tag: 'before walship' });
      const removeRule = proxy.addRule({ fault: 'internal-error', operation: ['PutObject', 'UploadPart', 'CreateMultipartUpload'], key: /\/snapshots\// });
      const replicator = await h.startReplicator();

      // While every snapshot upload fails, the segments it needs are stored,
      // but none is reported as shipped and nothing can be restored.
      await eventually(async () => {
        const [generation] = await listGenerations(direct);
        assert.ok(generation !== undefined, 'no generation stored');
        assert.ok((await listSegments(direct, generation)).length > 0, 'no segment stored before the snapshot');
      });
      assert.deepEqual(shippedKeys(h), [], `segments reported before the snapshot, ${proxy.describe()}`);
      const early = path.join(h.dir, 'early.db');
      await assert.rejects(restore({ client: directConfig(h), outputPath: early }), (err: unknown) => hasCode(err, 'NO_GENERATION'));

      // Once snapshots go through, the segments are reported and the restore matches.
      removeRule();
      await eventually(async () => {
        const [generation] = await listGenerations(direct);
        assert.equal((await listSnapshots(direct, generation!)).length, 1, 'snapshot not stored after the fault ended');
      });
      await replicator.sync();
      assert.ok(shippedKeys(h).length > 0, `no segment reported after the snapshot\n${h.logText()}`);
      await h.stopReplicator(replicator);
      await writer.close();
      await assertRestoreMatches(h, directConfig(h), proxy.describe());
    } finally {
      await direct.close();
      await h.cleanup();
      await proxy.close();
    }
  });
});

describe('store quirks', () => {
  test('DeleteObjects not implemented falls back to DeleteObject', async () => {
    const proxy = await FaultProxy.start(server.endpoint, { quirks: { deleteObjectsNotImplemented: true } });
    const client = new S3ReplicaClient(clientConfig(`quirk-${randomBytes(4).toString('hex')}`, proxy));
    try {
      for (let i = 0; i < 5; i++) await client.put(`k/${i}`, Buffer.from(`object ${i}`));
      await client.delete(['k/0', 'k/1', 'k/2']);
      await client.delete(['k/3', 'k/4']);
      assert.deepEqual((await client.list('k')).objects, []);

      // One DeleteObjects probe, then single deletes only. s3rver 3.7.1 can fail
      // a delete that races another in the same folder with 500, which the SDK retries.
      const deletes = proxy.log.filter((r) => r.operation.startsWith('Delete'));
      assert.equal(deletes[0]?.operation, 'DeleteObjects');
      assert.deepEqual(deletes.slice(1).map((r) => r.operation), deletes.slice(1).map(() => 'DeleteObject'));
      const singles = new Set(deletes.slice(1).map((r) => r.key.split('/').at(-1)));
      assert.deepEqual([...singles].sort(), ['0', '1', '2', '3', '4']);
    } finally {
      await client.close();
      await proxy.close();
    }
  });

  test('DeleteObjects sends Content-MD5', async () => {
    const proxy = await FaultProxy.start(server.endpoint, { quirks: { contentMd5Required: true } });
    const client = new S3ReplicaClient(clientConfig(`quirk-${randomBytes(4).toString('hex')}`, proxy));
    try {
      for (let i = 0; i < 3; i++) await client.put(`k/${i}`, Buffer.from(`object ${i}`));
      await client.delete(['k/0', 'k/1', 'k/2']);
      assert.deepEqual((await client.list('k')).objects, []);
      assert.deepEqual(proxy.log.filter((r) => r.quirk !== undefined), []);
      const deletes = proxy.log.filter((r) => r.operation === 'DeleteObjects');
      assert.ok(deletes.length >= 1);
      assert.ok(deletes.every((r) => r.quirk === undefined && r.status !== 400), 'a DeleteObjects request lacked Content-MD5');
    } finally {
      await client.close();
      await proxy.close();
    }
  });

  test('uploads avoid aws-chunked encoding', async () => {
    const proxy = await FaultProxy.start(server.endpoint, { quirks: { rejectAwsChunked: true } });
    const client = new S3ReplicaClient({ ...clientConfig(`quirk-${randomBytes(4).toString('hex')}`, proxy), partSize: PART_SIZE });
    try {
      const small = randomBytes(1000);
      const large = randomBytes(6 * MIB);
      await client.put('small', small);
      await client.put('stream', Readable.from([small, small]));
      await client.put('large', Readable.from([large.subarray(0, 3 * MIB), large.subarray(3 * MIB)]));

      assert.deepEqual(proxy.log.filter((r) => r.quirk !== undefined), []);
      assert.ok(proxy.log.some((r) => r.operation === 'UploadPart'), 'the large body was not a multipart upload');
      assert.ok((await client.get('large')).equals(large));
      assert.ok((await client.get('stream')).equals(Buffer.concat([small, small])));
    } finally {
      await client.close();
      await proxy.close();
    }
  });

  test('listing follows pages of two keys', async () => {
    const proxy = await FaultProxy.start(server.endpoint, { quirks: { maxKeys: 2 } });
    const client = new S3ReplicaClient(clientConfig(`quirk-${randomBytes(4).toString('hex')}`, proxy));
    try {
      const keys = Array.from({ length: 7 }, (_, i) => `k/${String(i).padStart(2, '0')}`);
      for (const key of keys) await client.put(key, Buffer.from(key));
      const listed = (await client.list('k')).objects.map((o) => o.key);
      assert.deepEqual(listed, keys);
      assert.equal(proxy.log.filter((r) => r.operation === 'ListObjectsV2').length, 4);
    } finally {
      await client.close();
      await proxy.close();
    }
  });

  test('replication with every quirk restores', { timeout: 60_000 }, async () => {
    const proxy = await FaultProxy.start(server.endpoint, {
      quirks: { deleteObjectsNotImplemented: true, contentMd5Required: true, rejectAwsChunked: true, maxKeys: 2 },
    });
    const h = await proxiedHarness(proxy);
    try {
      const writer = await h.openWriter();
      await writer.insert({ transactions: 5, rows: 1, bytes: 100 });
      const replicator = await h.startReplicator();
      await writer.insert({ transactions: 100, rows: 2, bytes: 300, pauseMs: 2 });
      await writer.insert({ transactions: 1, rows: 600, bytes: 10_000 });
      await replicator.snapshot();
      await writer.insert({ transactions: 50, rows: 2, bytes: 300 });
      await writer.close();
      await replicator.sync();
      await h.stopReplicator(replicator);

      const rejected = proxy.log.filter((r) => r.quirk !== undefined && r.quirk !== 'maxKeys' && r.quirk !== 'deleteObjectsNotImplemented');
      assert.deepEqual(rejected, [], 'requests rejected by a quirk other than the DeleteObjects probe');
      await assertRestoreMatches(h, h.replicaConfig('s3') as S3ClientConfig, 'all quirks');
    } finally {
      await h.cleanup();
      await proxy.close();
    }
  });
});

describe('errors that retrying cannot fix', () => {
  test('access denied names bucket and operation, then recovers', { timeout: 60_000 }, async () => {
    const proxy = await FaultProxy.start(server.endpoint);
    const h = await proxiedHarness(proxy, 50);
    try {
      const client = new S3ReplicaClient(clientConfig(`denied-${randomBytes(4).toString('hex')}`, proxy));
      const removeDirect = proxy.addRule({ fault: 'access-denied', operation: 'PutObject' });
      await assert.rejects(client.put('k', Buffer.from('x')), (err: Error) => {
        assert.match(err.message, /PutObject s3:\/\/walship-test\/denied-[0-9a-f]+\/k failed/);
        assert.match(err.message, /AccessDenied/);
        assert.match(err.message, /bucket walship-test was denied/);
        return true;
      });
      removeDirect();
      await client.put('k', Buffer.from('x'));
      await client.close();

      // The replicator logs the error, keeps retrying with its backoff and catches up once access returns.
      const writer = await h.openWriter();
      await writer.insert({ transactions: 5, rows: 1, bytes: 100 });
      const replicator = await h.startReplicator();
      await replicator.sync();
      const remove = proxy.addRule({ fault: 'access-denied', operation: ['PutObject', 'UploadPart', 'CreateMultipartUpload'] });
      await writer.insert({ transactions: 20, rows: 1, bytes: 100 });
      await eventually(async () => {
        const errors = h.logs.filter((r) => /AccessDenied/.test(JSON.stringify(r)));
        assert.ok(errors.length > 0, 'no log record names the AccessDenied error');
        assert.match(JSON.stringify(errors[0]), /PutObject s3:\/\/walship-test\//);
      });
      const denied = proxy.faults('access-denied').length;
      await sleep(1500);
      assert.ok(proxy.faults('access-denied').length > denied, 'the replica did not retry after AccessDenied');
      remove();

      await writer.close();
      await eventually(() => replicator.sync());
      await h.stopReplicator(replicator);
      await assertRestoreMatches(h, directConfig(h), 'after access returned');
    } finally {
      await h.cleanup();
      await proxy.close();
    }
  });

  test('missing bucket names the bucket, then recovers', async () => {
    const bucket = `walship-missing-${randomBytes(3).toString('hex')}`;
    const client = new S3ReplicaClient(clientConfig('db', undefined, bucket));
    try {
      await assert.rejects(client.put('k', Buffer.from('x')), (err: Error) => {
        assert.match(err.message, new RegExp(`PutObject s3://${bucket}/db/k failed`));
        assert.match(err.message, /NoSuchBucket/);
        assert.match(err.message, new RegExp(`Bucket ${bucket} does not exist: create it`));
        return true;
      });
      await assert.rejects(client.list(''), new RegExp(`ListObjectsV2 s3://${bucket}/db/ failed`));
      await server.createBucket(bucket);
      await client.put('k', Buffer.from('x'));
      assert.equal((await client.get('k')).toString(), 'x');
    } finally {
      await client.close();
    }
  });

  test('held request times out and is retried', async () => {
    const proxy = await FaultProxy.start(server.endpoint);
    const client = new S3ReplicaClient(clientConfig(`timeout-${randomBytes(4).toString('hex')}`, proxy), { socketTimeout: 300 });
    try {
      proxy.addRule({ fault: 'timeout', operation: 'PutObject', nth: [1, 2], holdMs: 5000 });
      await client.put('k', Buffer.from('held'));
      assert.equal((await client.get('k')).toString(), 'held');
      assert.deepEqual(
        proxy.log.filter((r) => r.operation === 'PutObject').map((r) => r.fault ?? 'forwarded'),
        ['timeout', 'timeout', 'forwarded'],
      );
    } finally {
      await client.close();
      await proxy.close();
    }
  });

  test('failed multipart upload is aborted', async () => {
    const proxy = await FaultProxy.start(server.endpoint);
    const prefix = `abort-${randomBytes(4).toString('hex')}`;
    const client = new S3ReplicaClient({ ...clientConfig(prefix, proxy), partSize: PART_SIZE }, { maxAttempts: 2 });
    try {
      // Every part upload and the first abort fail: the client's own sweep must abort the upload.
      proxy.addRule({ fault: 'internal-error', operation: 'UploadPart', nth: [2, 3, 4, 5, 6, 7, 8] });
      proxy.addRule({ fault: 'internal-error', operation: 'AbortMultipartUpload', nth: [1, 2] });
      await assert.rejects(client.put('big', Readable.from([randomBytes(6 * MIB)])), /PutObject s3:\/\/walship-test\/abort-[0-9a-f]+\/big failed/);
      assert.deepEqual(await client.listMultipartUploads(''), []);

      // A CreateMultipartUpload whose response is lost is retried and leaves the first upload open.
      proxy.clearRules();
      proxy.addRule({ fault: 'reset-response', operation: 'CreateMultipartUpload', nth: [1] });
      const body = randomBytes(6 * MIB);
      await client.put('retried', Readable.from([body]));
      assert.ok((await client.get('retried')).equals(body));
      assert.equal(proxy.log.filter((r) => r.operation === 'CreateMultipartUpload').length >= 3, true);
      assert.deepEqual(await client.listMultipartUploads(''), []);

      // A CompleteMultipartUpload whose response is lost completed all the same: its retry gets NoSuchUpload.
      proxy.clearRules();
      proxy.addRule({ fault: 'reset-response', operation: 'CompleteMultipartUpload', nth: [1] });
      await client.put('completed', Readable.from([body]));
      assert.ok((await client.get('completed')).equals(body));
      assert.equal(proxy.log.filter((r) => r.operation === 'CompleteMultipartUpload' && r.key.endsWith('/completed')).length, 2);
    } finally {
      await client.close();
      await proxy.close();
    }
  });
});

describe('restore through faults', () => {
  test('large restore retries only the failed objects', { timeout: 60_000 }, async () => {
    const h = await Harness.create({ kinds: ['s3'], s3: server, syncInterval: 0 });
    const proxy = await FaultProxy.start(server.endpoint, { seed: SEED });
    try {
      // A snapshot of about 24 MiB, then many WAL segments after it.
      const writer = await h.openWriter();
      await writer.insert({ transactions: 24, rows: 100, bytes: 10_000 });
      const replicator = await h.startReplicator();
      await replicator.sync();
      await replicator.snapshot();
      await writer.insert({ transactions: 40, rows: 4, bytes: 2000, pauseMs: 60 });
      await writer.insert({ transactions: 1, rows: 1000, bytes: 10_000 });
      await writer.insert({ transactions: 20, rows: 4, bytes: 2000, pauseMs: 60 });
      await writer.close();
      await replicator.sync();
      await h.stopReplicator(replicator);

      const config = { ...(h.replicaConfig('s3') as S3ClientConfig), endpoint: proxy.endpoint };
      const direct = new S3ReplicaClient(directConfig(h));
      const generation = (await h.generations('s3')).at(-1)!;
      const snapshot = (await listSnapshots(direct, generation)).at(-1)!;
      const segments = (await listSegments(direct, generation)).filter((s) => s.index >= snapshot.index);
      await direct.close();
      assert.ok(snapshot.size > 16 * MIB, `snapshot of ${snapshot.size} bytes is smaller than intended`);
      assert.ok(segments.length >= 20, `only ${segments.length} segments`);

      // The snapshot's body is reset once, one segment's twice, another is cut short once.
      const large = segments.find((s) => s.size > 8 * MIB);
      const small = segments.filter((s) => s.size < 1 * MIB);
      const failing = new Map<string, number>([
        [snapshot.key, 1],
        [small[3]!.key, 2],
        [small[10]!.key, 1],
      ]);
      if (large) failing.set(large.key, 1);
      const ruleKey = (key: string) => (k: string) => k.endsWith(`/${key}`);
      proxy.addRule({ fault: 'reset-response', operation: 'GetObject', key: ruleKey(snapshot.key), nth: [1] });
      proxy.addRule({ fault: 'reset-response', operation: 'GetObject', key: ruleKey(small[3]!.key), nth: [1, 2] });
      proxy.addRule({ fault: 'truncate', operation: 'GetObject', key: ruleKey(small[10]!.key), nth: [1] });
      if (large) proxy.addRule({ fault: 'truncate', operation: 'GetObject', key: ruleKey(large.key), nth: [1] });

      await assertRestoreMatches(h, config, proxy.describe());

      const gets = new Map<string, number>();
      for (const record of proxy.log.filter((r) => r.operation === 'GetObject')) {
        const key = record.key.slice(config.prefix.length + 1);
        gets.set(key, (gets.get(key) ?? 0) + 1);
      }
      for (const [key, count] of gets) {
        const expected = (failing.get(key) ?? 0) + 1;
        assert.equal(count, expected, `${key} was requested ${count} times, expected ${expected}`);
      }
      assert.equal(gets.size, segments.length + 1, 'the restore did not read every segment and the snapshot');
      assert.equal(proxy.faults().length, [...failing.values()].reduce((a, b) => a + b, 0));
    } finally {
      await h.cleanup();
      await proxy.close();
    }
  });
});

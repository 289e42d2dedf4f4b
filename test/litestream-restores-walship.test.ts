import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs/promises';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';

import { MAX_SEGMENT_BYTES } from '../src/replica.js';
import type { FileClientConfig, S3ClientConfig } from '../src/replica/client.js';
import { restore } from '../src/restore.js';
import { contentHash, integrityCheck } from './support/content.js';
import { Harness } from './support/replicate-harness.js';
import type { ReplicaKind } from './support/replicate-harness.js';
import { startS3Server } from './support/s3-server.js';
import type { S3Server } from './support/s3-server.js';

/**
 * Direction "Litestream restores what walship writes". walship replicates a
 * database to a file replica and an S3 replica on s3rver while an application
 * writer runs with checkpoints, so the generation spans several WAL indexes.
 * Then the real Litestream v0.3.13 binary restores both replicas, to the
 * latest position and to every WAL index, and the tests compare its restores
 * with the source and with walship's own restores.
 */

const LITESTREAM = fileURLToPath(new URL('../../node_modules/@flydotio/litestream-linux-x64/litestream', import.meta.url));
const KINDS: readonly ReplicaKind[] = ['file', 's3'];

// Bound on one Litestream restore, so that a hung process fails the test instead of stalling it.
const LITESTREAM_TIMEOUT_MS = 20_000;

// Pause between write bursts: longer than walship's one-second spacing of
// checkpoints, so that each burst restarts the WAL into a new index.
const BURST_GAP_MS = 1_100;

let s3: S3Server;
let h: Harness;
let sourceHash: string;
let generation: string;

before(async () => {
  s3 = await startS3Server();
  h = await Harness.create({ kinds: ['file', 's3'], s3, syncInterval: 100 });

  const writer = await h.openWriter();
  try {
    const replicator = await h.startReplicator();
    for (let burst = 0; burst < 4; burst++) {
      if (burst > 0) await sleep(BURST_GAP_MS);
      await writer.insert({ transactions: 50, rows: 5, bytes: 1000, pauseMs: 1, tag: `burst ${burst}` });
      // About 17 MiB in one commit, which walship ships as two WAL segments of one index.
      if (burst === 1) await writer.insert({ transactions: 1, rows: 4200, bytes: 4000, tag: 'large' });
      // The application's own PASSIVE checkpoint moves pages up to walship's read mark.
      await writer.checkpoint('PASSIVE');
      await writer.exec(`UPDATE t SET tag = tag || ' updated' WHERE id % 7 = ${burst}`);
      await writer.exec(`DELETE FROM t WHERE id % 11 = ${burst}`);
    }
    await replicator.sync();
    sourceHash = contentHash(h.dbPath);
    await h.stopReplicator(replicator);
    await writer.close();
  } finally {
    writer.kill();
  }

  const generations = await h.generations('file');
  assert.equal(generations.length, 1, h.logText());
  generation = generations[0]!;
  await writeLitestreamConfig();
});

after(async () => {
  await h?.cleanup();
  await s3?.close();
});

/** Writes a Litestream config whose one database has the walship S3 replica as its only replica. */
async function writeLitestreamConfig(): Promise<void> {
  const config = h.replicaConfig('s3') as S3ClientConfig;
  const yaml = `
dbs:
  - path: ${h.dbPath}
    replicas:
      - type: s3
        bucket: ${config.bucket}
        path: ${config.prefix}
        endpoint: ${config.endpoint}
        region: us-east-1
        force-path-style: true
        access-key-id: ${config.accessKeyId}
        secret-access-key: ${config.secretAccessKey}
`;
  await fs.writeFile(path.join(h.dir, 'litestream.yml'), yaml);
}

/**
 * Runs `litestream restore` into `output` from one replica, optionally to a
 * generation and index, and fails with Litestream's output when it exits non-zero.
 */
async function litestreamRestore(kind: ReplicaKind, output: string, target: { generation?: string; index?: number } = {}): Promise<void> {
  const args = ['restore', '-o', output];
  if (target.generation !== undefined) args.push('-generation', target.generation);
  if (target.index !== undefined) args.push('-index', String(target.index));
  if (kind === 'file') args.push(`file://${(h.replicaConfig('file') as FileClientConfig).root}`);
  else args.push('-config', path.join(h.dir, 'litestream.yml'), h.dbPath);

  const { code, output: log } = await runBounded(LITESTREAM, args, LITESTREAM_TIMEOUT_MS);
  assert.equal(code, 0, `litestream ${args.join(' ')} exited with ${code}:\n${log}`);
}

/** Runs a command with a time bound; ends it by PID on timeout and in any case before returning. */
async function runBounded(command: string, args: string[], timeoutMs: number): Promise<{ code: number | string | null; output: string }> {
  const child = spawn(command, args, {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: h.dir },
  });
  let output = '';
  child.stdout.on('data', (chunk: Buffer) => (output += chunk.toString()));
  child.stderr.on('data', (chunk: Buffer) => (output += chunk.toString()));

  const timer = new AbortController();
  try {
    const exited = new Promise<number | string | null>((resolve) => child.once('close', (code, signal) => resolve(code ?? signal)));
    const timeout = sleep(timeoutMs, 'timeout' as const, { signal: timer.signal }).catch(() => 'cancelled' as const);
    const code = await Promise.race([exited, timeout]);
    return { code, output };
  } finally {
    timer.abort();
    if (child.exitCode === null && child.signalCode === null && child.pid !== undefined) process.kill(child.pid, 'SIGKILL');
  }
}

/** Checks a restored file's integrity and returns its content hash. */
function checkedHash(file: string): string {
  assert.equal(integrityCheck(file), 'ok', `integrity of ${path.basename(file)}`);
  return contentHash(file);
}

describe('Litestream restores walship replicas', () => {
  for (const kind of KINDS) {
    test(`several WAL indexes: ${kind}`, async () => {
      const segments = await h.decodedSegments(kind, generation);
      const indexes = new Set(segments.map((s) => s.index));
      assert.ok(indexes.size >= 3, `WAL indexes ${[...indexes].join(', ')}\n${h.logText()}`);
      const largeIndex = [...indexes].find((index) => segments.filter((s) => s.index === index).reduce((sum, s) => sum + s.length, 0) > MAX_SEGMENT_BYTES);
      const parts = segments.filter((s) => s.index === largeIndex);
      assert.ok(parts.length >= 2, `the large transaction is in ${parts.length} segment(s): ${segments.map((s) => `${s.key}=${s.length}`).join(', ')}`);
    });
  }

  for (const kind of KINDS) {
    test(`latest restore: ${kind}`, async () => {
      const output = path.join(h.dir, `litestream-latest-${kind}.db`);
      await litestreamRestore(kind, output);
      assert.equal(checkedHash(output), sourceHash);
    });
  }

  for (const kind of KINDS) {
    test(`every index as walship restores it: ${kind}`, async (t) => {
      const snapshots = await h.snapshotIndexes(kind, generation);
      const segments = await h.decodedSegments(kind, generation);
      const lastIndex = segments.at(-1)!.index;
      assert.ok(lastIndex > snapshots[0]!, `one WAL index only\n${h.logText()}`);
      t.diagnostic(`generation ${generation}: snapshots at ${snapshots.join(', ')}, WAL indexes ${snapshots[0]} to ${lastIndex}`);

      for (let index = snapshots[0]!; index <= lastIndex; index++) {
        const expected = path.join(h.dir, `walship-${kind}-${index}.db`);
        const result = await restore({ client: h.replicaConfig(kind), outputPath: expected, generation, index });
        assert.equal(result.pos.index, index);

        const actual = path.join(h.dir, `litestream-${kind}-${index}.db`);
        await litestreamRestore(kind, actual, { generation, index });
        assert.equal(checkedHash(actual), checkedHash(expected), `${kind} replica at index ${index}`);
        if (index === lastIndex) assert.equal(checkedHash(actual), sourceHash);
      }
    });
  }
});

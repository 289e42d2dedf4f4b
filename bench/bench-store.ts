import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs/promises';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

import { DeleteObjectCommand, DeleteObjectsCommand, ListObjectsV2Command, S3Client } from '@aws-sdk/client-s3';
import type { S3ClientConfig as SdkClientConfig } from '@aws-sdk/client-s3';

import type { S3ClientConfig } from '../src/replica/client.js';
import { trackChild } from './bench-process.js';

/**
 * The S3 store the benchmark writes to: an s3rver on 127.0.0.1 that it starts
 * itself, or the store named by S3_ENDPOINT and S3_BUCKET (MinIO, AWS) with
 * credentials from the environment. Everything the run writes goes under one
 * prefix, `walship-bench/<run id>/`, which is deleted at the end.
 */

/** Access key id and secret that s3rver 3.7.1 accepts; they protect nothing. */
const S3RVER_CREDENTIAL = 'S3RVER';

// How long s3rver may take to listen, and to close and delete its files.
const S3RVER_START_MS = 30_000;
const S3RVER_STOP_MS = 60_000;

/** An S3 store reached by the benchmark, walship and its restores. */
export interface Store {
  kind: 's3rver' | 's3';
  /** For the report, e.g. `s3rver 3.7.1 on http://127.0.0.1:40123`. */
  description: string;
  endpoint?: string;
  bucket: string;
  region: string;
  forcePathStyle: boolean;
  /** Key prefix of this run, without a trailing `/`. */
  runPrefix: string;
  /** Static credentials of s3rver; a remote store takes them from the environment. */
  credentials?: { accessKeyId: string; secretAccessKey: string };
  /** Directory of s3rver's files, on this machine's disk. */
  directory?: string;
  /** PID of the s3rver process, whose CPU time the workloads report. */
  pid?: number;
  sdk: S3Client;
  close(): Promise<void>;
}

/**
 * Opens the store: the one of S3_ENDPOINT / S3_BUCKET when S3_BUCKET is set,
 * else a new s3rver that keeps its files under `localDir`. Throws a message
 * naming the variable at fault.
 */
export async function openStore(env: NodeJS.ProcessEnv, runId: string, localDir: string): Promise<Store> {
  const bucket = nonEmpty(env.S3_BUCKET);
  const endpoint = nonEmpty(env.S3_ENDPOINT);
  if (endpoint !== undefined && bucket === undefined) {
    throw new Error(`S3_ENDPOINT=${endpoint} is set without S3_BUCKET; set S3_BUCKET to a bucket the credentials may write to, or unset S3_ENDPOINT to use a local s3rver`);
  }
  if (bucket === undefined) return startS3rver(runId, localDir);
  return remoteStore(env, bucket, endpoint, runId);
}

function remoteStore(env: NodeJS.ProcessEnv, bucket: string, endpoint: string | undefined, runId: string): Store {
  if (endpoint !== undefined) {
    let url: URL;
    try {
      url = new URL(endpoint);
    } catch {
      throw new Error(`S3_ENDPOINT=${endpoint} is not a URL; write it as http://HOST:PORT or https://HOST`);
    }
    if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new Error(`S3_ENDPOINT=${endpoint} must start with http:// or https://`);
  }

  const region = nonEmpty(env.S3_REGION) ?? nonEmpty(env.AWS_REGION) ?? 'us-east-1';
  const pathStyleSetting = nonEmpty(env.S3_FORCE_PATH_STYLE);
  if (pathStyleSetting !== undefined && pathStyleSetting !== 'true' && pathStyleSetting !== 'false') {
    throw new Error(`S3_FORCE_PATH_STYLE=${pathStyleSetting} must be true or false`);
  }
  // MinIO and most S3-compatible stores serve path-style URLs only; AWS prefers virtual-hosted ones.
  const forcePathStyle = pathStyleSetting === undefined ? endpoint !== undefined : pathStyleSetting === 'true';

  const sdk = new S3Client(sdkSettings(region, endpoint, forcePathStyle, undefined));
  return {
    kind: 's3',
    description: `S3 bucket ${bucket} at ${endpoint ?? `AWS S3 (${region})`}`,
    ...(endpoint !== undefined ? { endpoint } : {}),
    bucket,
    region,
    forcePathStyle,
    runPrefix: `walship-bench/${runId}`,
    sdk,
    close: async () => {
      sdk.destroy();
    },
  };
}

/** Starts bench-s3rver.js as a child process, with its files in a new folder of `localDir`, and connects to it. */
async function startS3rver(runId: string, localDir: string): Promise<Store> {
  const script = fileURLToPath(new URL('./bench-s3rver.js', import.meta.url));
  // s3rver's folder comes from os.tmpdir(), which follows TMPDIR.
  const child = spawn(process.execPath, [script], { stdio: ['ignore', 'pipe', 'inherit', 'ipc'], env: { ...process.env, TMPDIR: localDir } });
  trackChild(child, 's3rver');

  const ready = await readFirstLine(child, S3RVER_START_MS);
  const info = JSON.parse(ready) as { endpoint: string; bucket: string; directory: string };
  const credentials = { accessKeyId: S3RVER_CREDENTIAL, secretAccessKey: S3RVER_CREDENTIAL };
  const sdk = new S3Client(sdkSettings('us-east-1', info.endpoint, true, credentials));

  return {
    kind: 's3rver',
    description: `s3rver 3.7.1 on ${info.endpoint} (own process)`,
    endpoint: info.endpoint,
    bucket: info.bucket,
    region: 'us-east-1',
    forcePathStyle: true,
    runPrefix: `walship-bench/${runId}`,
    credentials,
    directory: info.directory,
    ...(child.pid !== undefined ? { pid: child.pid } : {}),
    sdk,
    close: async () => {
      sdk.destroy();
      await stopChild(child, S3RVER_STOP_MS);
      // A killed s3rver could not delete its directory itself.
      await fs.rm(info.directory, { recursive: true, force: true });
    },
  };
}

/** Settings of the benchmark's own SDK client, with the checksum behaviour walship's client uses. */
function sdkSettings(region: string, endpoint: string | undefined, forcePathStyle: boolean, credentials: Store['credentials']): SdkClientConfig {
  return {
    region,
    ...(endpoint !== undefined ? { endpoint } : {}),
    forcePathStyle,
    requestChecksumCalculation: 'WHEN_REQUIRED',
    responseChecksumValidation: 'WHEN_REQUIRED',
    ...(credentials !== undefined ? { credentials } : {}),
  };
}

/** Returns walship's client settings for a prefix of the store. */
export function replicaClientConfig(store: Store, prefix: string): S3ClientConfig {
  return {
    type: 's3',
    bucket: store.bucket,
    prefix,
    region: store.region,
    forcePathStyle: store.forcePathStyle,
    ...(store.endpoint !== undefined ? { endpoint: store.endpoint } : {}),
    ...(store.credentials ?? {}),
  };
}

/**
 * Returns the `replicas:` entry of walship's YAML config for a prefix, with
 * Litestream's key spellings. Credentials appear only for s3rver, whose key
 * is public; a remote store's come from the environment.
 */
export function replicaYaml(store: Store, prefix: string, syncInterval: string, indent: string): string {
  const lines = [
    `- type: s3`,
    `  bucket: ${JSON.stringify(store.bucket)}`,
    `  path: ${JSON.stringify(prefix)}`,
    `  region: ${JSON.stringify(store.region)}`,
    `  force-path-style: ${store.forcePathStyle}`,
    `  sync-interval: ${syncInterval}`,
  ];
  if (store.endpoint !== undefined) lines.push(`  endpoint: ${JSON.stringify(store.endpoint)}`);
  if (store.credentials !== undefined) {
    lines.push(`  access-key-id: ${JSON.stringify(store.credentials.accessKeyId)}`);
    lines.push(`  secret-access-key: ${JSON.stringify(store.credentials.secretAccessKey)}`);
  }
  return lines.map((line) => indent + line).join('\n');
}

/** Returns the count and total size of the objects under a prefix. */
export async function prefixUsage(store: Store, prefix: string): Promise<{ objects: number; bytes: number }> {
  let objects = 0;
  let bytes = 0;
  for await (const page of listPages(store, prefix)) {
    for (const item of page) {
      objects++;
      bytes += item.size;
    }
  }
  return { objects, bytes };
}

/** Deletes every object under a prefix and returns how many there were. */
export async function deletePrefix(store: Store, prefix: string): Promise<number> {
  let deleted = 0;
  let single = false;
  for await (const page of listPages(store, prefix)) {
    const keys = page.map((item) => item.key);
    if (keys.length === 0) continue;
    if (!single) {
      try {
        await store.sdk.send(new DeleteObjectsCommand({ Bucket: store.bucket, Delete: { Objects: keys.map((Key) => ({ Key })), Quiet: true } }));
        deleted += keys.length;
        continue;
      } catch (err) {
        if ((err as { name?: string }).name !== 'NotImplemented') throw err;
        single = true;
      }
    }
    for (const Key of keys) await store.sdk.send(new DeleteObjectCommand({ Bucket: store.bucket, Key }));
    deleted += keys.length;
  }
  return deleted;
}

/** Lists the objects under a prefix page by page. */
async function* listPages(store: Store, prefix: string): AsyncGenerator<{ key: string; size: number }[]> {
  let token: string | undefined;
  for (let page = 0; page < 1_000_000; page++) {
    const out = await store.sdk.send(
      new ListObjectsV2Command({ Bucket: store.bucket, Prefix: `${prefix.replace(/\/+$/, '')}/`, ContinuationToken: token }),
    );
    yield (out.Contents ?? []).map((item) => ({ key: item.Key ?? '', size: item.Size ?? 0 }));
    if (!out.IsTruncated || !out.NextContinuationToken) return;
    token = out.NextContinuationToken;
  }
}

/** Returns a random id for the run's prefix: the date and 6 hex digits. */
export function newRunId(now: Date): string {
  return `${now.toISOString().replace(/[:.]/g, '-')}-${randomBytes(3).toString('hex')}`;
}

/** Reads the first line a child prints on stdout, or rejects when it exits first or times out. */
function readFirstLine(child: ChildProcess, timeoutMs: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const lines = createInterface({ input: child.stdout! });
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`s3rver did not start within ${timeoutMs / 1000} s`));
    }, timeoutMs);
    lines.once('line', (line) => {
      clearTimeout(timer);
      lines.close();
      resolve(line);
    });
    child.once('exit', (code, signal) => {
      clearTimeout(timer);
      reject(new Error(`s3rver exited with ${signal ?? `status ${code}`} before it listened`));
    });
  });
}

/** Sends SIGTERM to a child and waits for it to exit; kills it after `timeoutMs`. */
export function stopChild(child: ChildProcess, timeoutMs: number): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.once('exit', () => {
      clearTimeout(timer);
      resolve();
    });
    child.kill('SIGTERM');
  });
}

function nonEmpty(value: string | undefined): string | undefined {
  return value === undefined || value === '' ? undefined : value;
}

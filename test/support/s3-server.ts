import { AsyncLocalStorage } from 'node:async_hooks';
import { createHash, randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, open, rename, rm } from 'node:fs/promises';
import type { FileHandle } from 'node:fs/promises';
import type { Server } from 'node:http';
import { createRequire } from 'node:module';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { Readable } from 'node:stream';

import type { S3ClientConfig } from '../../src/replica/client.js';

/** Access key id and secret that s3rver 3.7.1 accepts. */
export const S3RVER_CREDENTIAL = 'S3RVER';

/** Bucket that every server starts with. */
const DEFAULT_BUCKET = 'walship-test';

/** A running s3rver on 127.0.0.1 with its own temporary directory. */
export interface S3Server {
  /** Base URL, `http://127.0.0.1:<port>`. */
  endpoint: string;
  /** A bucket created at start. */
  bucket: string;
  /** Directory that contains the buckets' files. */
  directory: string;
  /** Creates a bucket. Names follow S3 rules: 3-63 lowercase letters, digits and `-`. */
  createBucket(name: string): Promise<void>;
  /** Stops the server, drops open connections and deletes the directory. */
  close(): Promise<void>;
}

/** Options of a test server. */
export interface S3ServerOptions {
  /** Whether the server accepts DeleteObjects. Defaults to true. False rejects it with 501 NotImplemented. */
  deleteObjects?: boolean;
}

/** Starts s3rver 3.7.1 on a free port of 127.0.0.1, silent, over a fresh temporary directory. */
export async function startS3Server(options: S3ServerOptions = {}): Promise<S3Server> {
  const directory = await mkdtemp(path.join(tmpdir(), 'walship-s3rver-'));
  const S3rver = createRequire(import.meta.url)('s3rver') as S3rverConstructor;
  const server = new S3rver({
    address: '127.0.0.1',
    port: 0,
    directory,
    silent: true,
    configureBuckets: [{ name: DEFAULT_BUCKET }],
  });
  patchStore(server.store);
  // Koa composes its middleware list when the server starts listening, so
  // an entry placed before the router (the last entry) still takes effect.
  server.middleware.splice(server.middleware.length - 1, 0, listContinuationTokens);
  if (options.deleteObjects === false) server.middleware.splice(server.middleware.length - 1, 0, rejectDeleteObjects);

  const address = await server.run();
  return {
    endpoint: `http://127.0.0.1:${address.port}`,
    bucket: DEFAULT_BUCKET,
    directory,
    async createBucket(name: string) {
      await server.store.putBucket(name);
    },
    async close() {
      const closing = server.close();
      // Keep-alive sockets of SDK clients would hold close() open.
      server.httpServer?.closeAllConnections();
      await closing;
      await rm(directory, { recursive: true, force: true });
    },
  };
}

/** Returns the S3 replica settings that reach `bucket`/`prefix` on a test server. */
export function s3ClientConfig(server: S3Server, bucket: string, prefix: string): S3ClientConfig {
  return {
    type: 's3',
    bucket,
    prefix,
    endpoint: server.endpoint,
    region: 'us-east-1',
    forcePathStyle: true,
    accessKeyId: S3RVER_CREDENTIAL,
    secretAccessKey: S3RVER_CREDENTIAL,
  };
}

// The parts of s3rver 3.7.1 that this module uses, because s3rver ships no types.

interface S3rverObject {
  bucket: string;
  key: string;
  content: Buffer | Readable;
  metadata: Record<string, string>;
}

interface StoreListOptions {
  delimiter?: string;
  prefix?: string;
  startAfter?: string;
  maxKeys?: number;
}

interface StoreListResult {
  objects: S3rverObject[];
  commonPrefixes: string[];
  isTruncated: boolean;
}

interface FilesystemStore {
  getResourcePath(bucket: string, key: string, resource: string): string;
  putBucket(bucket: string): Promise<unknown>;
  putMetadata(bucket: string, key: string, metadata: Record<string, string>, md5: string): Promise<void>;
  listObjects(bucket: string, options: StoreListOptions): Promise<StoreListResult>;
  putObject(object: S3rverObject): Promise<{ size: number; md5: string }>;
}

/** The parts of a Koa context that the continuation token middleware touches. */
interface KoaContext {
  method: string;
  query: Record<string, string | string[] | undefined>;
  status: number;
  type: string;
  body?: string | { ListBucketResult?: Record<string, unknown> };
}

type KoaMiddleware = (ctx: KoaContext, next: () => Promise<void>) => Promise<void>;

interface S3rverInstance {
  store: FilesystemStore;
  middleware: KoaMiddleware[];
  httpServer?: Server;
  run(): Promise<AddressInfo>;
  close(): Promise<void>;
}

type S3rverConstructor = new (options: Record<string, unknown>) => S3rverInstance;

/** Truncation of the page that the current ListObjectsV2 request lists. */
interface PageState {
  isTruncated?: boolean;
  lastKey?: string;
}

const pageStates = new AsyncLocalStorage<PageState>();

const TOKEN_MARK = 'walship-test:';

/**
 * Issues and reads ListObjectsV2 continuation tokens in place of s3rver.
 * s3rver 3.7.1 encrypts its tokens with DES, which OpenSSL 3 (Node.js 17
 * and later) disables by default, so every truncated page fails with InternalError.
 * The token here is the base64 of the last key. The request reaches s3rver
 * as a `start-after` listing, and the patched store reports truncation
 * through `pageStates` instead of to s3rver's controller.
 */
const listContinuationTokens: KoaMiddleware = async (ctx, next) => {
  if (ctx.method !== 'GET' || ctx.query['list-type'] !== '2') return next();

  const token = ctx.query['continuation-token'];
  if (typeof token === 'string' && token !== '') {
    const query: KoaContext['query'] = { ...ctx.query, 'start-after': decodeToken(token) };
    delete query['continuation-token'];
    ctx.query = query;
  }

  const page: PageState = {};
  await pageStates.run(page, next);

  const result = typeof ctx.body === 'object' ? ctx.body.ListBucketResult : undefined;
  if (result === undefined) return;
  if (typeof token === 'string' && token !== '') {
    delete result['StartAfter'];
    result['ContinuationToken'] = token;
  }
  if (page.isTruncated === true && page.lastKey !== undefined) {
    result['IsTruncated'] = true;
    result['NextContinuationToken'] = Buffer.from(TOKEN_MARK + page.lastKey).toString('base64');
  }
};

/** Rejects DeleteObjects (`POST /<bucket>?delete`) as a store without it does. */
const rejectDeleteObjects: KoaMiddleware = async (ctx, next) => {
  if (ctx.method !== 'POST' || !('delete' in ctx.query)) return next();

  ctx.status = 501;
  ctx.type = 'application/xml';
  ctx.body =
    '<?xml version="1.0" encoding="UTF-8"?>\n' +
    '<Error><Code>NotImplemented</Code><Message>DeleteObjects is turned off on this test server</Message></Error>';
};

function decodeToken(token: string): string {
  const text = Buffer.from(token, 'base64').toString('utf8');
  if (!text.startsWith(TOKEN_MARK)) throw new Error(`continuation token ${token} was not issued by this test server`);
  return text.slice(TOKEN_MARK.length);
}

/**
 * Replaces two methods of s3rver's filesystem store on one instance, where
 * it differs from S3 in ways that replication depends on.
 */
function patchStore(store: FilesystemStore): void {
  const listAll = store.listObjects.bind(store);
  store.listObjects = (bucket, options) => listObjects(listAll, bucket, options);
  store.putObject = (object) => putObject(store, object);
}

/**
 * Lists like S3 does. s3rver prunes the directory walk below a common
 * prefix, so a prefix whose objects all sit two or more levels deeper goes
 * missing, and it pages in directory order rather than key order. This
 * version walks everything under the prefix, sorts by key and folds keys into
 * common prefixes itself.
 */
async function listObjects(
  listAll: FilesystemStore['listObjects'],
  bucket: string,
  options: StoreListOptions,
): Promise<StoreListResult> {
  const { delimiter = '', prefix = '', startAfter = '', maxKeys = Infinity } = options;
  const all = await listWithRetry(() => listAll(bucket, { prefix, maxKeys: Infinity }));
  const sorted = all.objects.sort(compareObjectKeys);

  const objects: S3rverObject[] = [];
  const commonPrefixes = new Set<string>();
  let isTruncated = false;
  for (const object of sorted) {
    const cut = delimiter === '' ? -1 : object.key.indexOf(delimiter, prefix.length);
    if (cut !== -1) {
      const common = object.key.slice(0, cut + delimiter.length);
      if (common > startAfter) commonPrefixes.add(common);
      continue;
    }
    if (object.key <= startAfter) continue;

    // s3rver's ListObjects (v1) controller takes NextMarker from the last
    // object, so a page counts only objects and always ends on one when truncated.
    if (objects.length === maxKeys) {
      isTruncated = true;
      break;
    }
    objects.push(object);
  }

  // Prefixes past the last object of a truncated page belong to the next page.
  const lastKey = objects.at(-1)?.key ?? '';
  const prefixes = [...commonPrefixes].filter((p) => !isTruncated || p < lastKey).sort();

  // A ListObjectsV2 request takes its token from listContinuationTokens, so
  // s3rver's controller must not see the truncation and build a DES token.
  const page = pageStates.getStore();
  if (page !== undefined) {
    page.isTruncated = isTruncated;
    page.lastKey = lastKey;
    return { objects, commonPrefixes: prefixes, isTruncated: false };
  }
  return { objects, commonPrefixes: prefixes, isTruncated };
}

/** Orders objects by key as S3 does for ASCII keys. */
function compareObjectKeys(a: S3rverObject, b: S3rverObject): number {
  if (a.key < b.key) return -1;
  return a.key > b.key ? 1 : 0;
}

/** Retries a listing that a concurrent delete broke, because s3rver's walk stats entries that may vanish. */
async function listWithRetry(list: () => Promise<StoreListResult>): Promise<StoreListResult> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await list();
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT' || attempt >= 5) throw err;
    }
  }
}

/**
 * Stores an object the way S3 shows it: absent until complete. s3rver
 * writes the object file in place, so a listing or GET during a PUT returns
 * a partial object. This version writes a temporary file (ignored by
 * listings, which match only `._S3rver_object`), writes the metadata, then
 * renames the data into place.
 */
async function putObject(store: FilesystemStore, object: S3rverObject): Promise<{ size: number; md5: string }> {
  const objectPath = store.getResourcePath(object.bucket, object.key, 'object');
  const tempPath = `${objectPath}.${randomBytes(6).toString('hex')}.tmp`;

  try {
    const handle = await createFile(tempPath);
    let written;
    try {
      written = await writeHashed(handle, object.content);
    } finally {
      await handle.close();
    }

    // Metadata first: the object file's presence is what makes the object
    // exist, so a reader never finds the data without its metadata.
    await store.putMetadata(object.bucket, object.key, object.metadata, written.md5);
    await rename(tempPath, objectPath);
    return written;
  } catch (err) {
    await rm(tempPath, { force: true });
    throw err;
  }
}

/**
 * Creates a file and its folders. s3rver's delete removes a folder once it
 * is empty, so it can remove the folder between mkdir and open. Then this
 * creates the folder again, at most three times.
 */
async function createFile(file: string): Promise<FileHandle> {
  for (let attempt = 1; ; attempt++) {
    await mkdir(path.dirname(file), { recursive: true });
    try {
      return await open(file, 'wx');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT' || attempt >= 3) throw err;
    }
  }
}

async function writeHashed(handle: FileHandle, content: Buffer | Readable): Promise<{ size: number; md5: string }> {
  const md5 = createHash('md5');
  if (Buffer.isBuffer(content)) {
    md5.update(content);
    await handle.writeFile(content);
    return { size: content.length, md5: md5.digest('hex') };
  }

  let size = 0;
  for await (const chunk of content) {
    const bytes = chunk as Buffer;
    md5.update(bytes);
    size += bytes.length;
    // FileHandle.writeFile writes all of the chunk from the current position.
    await handle.writeFile(bytes);
  }
  return { size, md5: md5.digest('hex') };
}

import { AsyncLocalStorage } from 'node:async_hooks';
import { createHash, randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, open, readdir, readFile, rename, rm, stat } from 'node:fs/promises';
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
  /**
   * Whether PutObject and DeleteObject check If-None-Match and If-Match, as
   * AWS S3, MinIO and R2 do. Defaults to true. False ignores both headers, as
   * stock s3rver and some S3-compatible stores do.
   */
  conditionalWrites?: boolean;
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
  server.middleware.splice(server.middleware.length - 1, 0, multipartUploads(server.store, directory));
  if (options.conditionalWrites !== false) {
    server.middleware.splice(server.middleware.length - 1, 0, conditionalWrites(server.store));
  }

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
  getBucket(bucket: string): Promise<unknown>;
  getMetadata(bucket: string, key: string): Promise<{ etag: string }>;
  getResourcePath(bucket: string, key: string, resource: string): string;
  putBucket(bucket: string): Promise<unknown>;
  putMetadata(bucket: string, key: string, metadata: Record<string, string>, md5: string): Promise<void>;
  listObjects(bucket: string, options: StoreListOptions): Promise<StoreListResult>;
  putObject(object: S3rverObject): Promise<{ size: number; md5: string }>;
}

/** The parts of a Koa context that this module's middleware touches. */
interface KoaContext {
  method: string;
  /** Request path, still percent-encoded. */
  path: string;
  headers: Record<string, string | string[] | undefined>;
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

/** s3rver's error class: thrown from a middleware, it becomes an S3 XML error body with its status. */
type S3ErrorConstructor = new (code: string, message: string, detail?: Record<string, string>) => Error;

const S3Error = createRequire(import.meta.url)('s3rver/lib/models/error') as S3ErrorConstructor;

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

/** Splits a path-style request path into bucket and key. The key is '' for a bucket request. */
function parsePath(ctx: KoaContext): { bucket: string; key: string } {
  const [bucket = '', ...rest] = ctx.path.slice(1).split('/');
  return { bucket: decodeURIComponent(bucket), key: rest.map(decodeURIComponent).join('/') };
}

/** Runs `fn` after every earlier call with the same name has finished, so that a check and its write are one step. */
const keyLocks = new Map<string, Promise<void>>();

async function withKeyLock<T>(name: string, fn: () => Promise<T>): Promise<T> {
  const previous = keyLocks.get(name) ?? Promise.resolve();
  let release!: () => void;
  const current = new Promise<void>((resolve) => (release = resolve));
  const tail = previous.then(() => current);
  keyLocks.set(name, tail);
  await previous;
  try {
    return await fn();
  } finally {
    release();
    if (keyLocks.get(name) === tail) keyLocks.delete(name);
  }
}

/** Reports whether an If-Match or If-None-Match value names this ETag: `*`, or a comma-separated list of tags. */
function matchesEtag(header: string, etag: string): boolean {
  const bare = (tag: string) => tag.trim().replace(/^W\//, '').replace(/"/g, '');
  return header.split(',').some((tag) => tag.trim() === '*' || bare(tag) === bare(etag));
}

/**
 * Checks If-None-Match and If-Match on PutObject and If-Match on DeleteObject
 * as AWS S3 does, which s3rver 3.7.1 ignores. A PUT with `If-None-Match: *`
 * on an existing key and a PUT or DELETE with an `If-Match` that differs get
 * 412 PreconditionFailed. An `If-Match` on a missing key gets 404 NoSuchKey,
 * as on AWS. The check and the write of one key run under one lock, so two
 * conditional writes cannot both pass.
 */
function conditionalWrites(store: FilesystemStore): KoaMiddleware {
  return async (ctx, next) => {
    const ifNoneMatch = header(ctx, 'if-none-match');
    const ifMatch = header(ctx, 'if-match');
    const isObjectWrite = (ctx.method === 'PUT' || ctx.method === 'DELETE') && Object.keys(ctx.query).every((q) => q === 'x-id');
    if (!isObjectWrite || (ifNoneMatch === undefined && ifMatch === undefined)) return next();

    const { bucket, key } = parsePath(ctx);
    if (key === '') return next();
    await withKeyLock(`${bucket}/${key}`, async () => {
      const etag = await store.getMetadata(bucket, key).then(
        (metadata) => metadata.etag,
        () => undefined,
      );

      if (ctx.method === 'PUT' && ifNoneMatch !== undefined && etag !== undefined && matchesEtag(ifNoneMatch, etag)) {
        throw new S3Error('PreconditionFailed', 'At least one of the pre-conditions you specified did not hold', {
          Condition: 'If-None-Match',
        });
      }
      if (ifMatch !== undefined && etag === undefined) {
        throw new S3Error('NoSuchKey', 'The specified key does not exist.', { Key: key });
      }
      if (ifMatch !== undefined && etag !== undefined && !matchesEtag(ifMatch, etag)) {
        throw new S3Error('PreconditionFailed', 'At least one of the pre-conditions you specified did not hold', {
          Condition: 'If-Match',
        });
      }
      await next();
    });
  };
}

function header(ctx: KoaContext, name: string): string | undefined {
  const value = ctx.headers[name];
  return Array.isArray(value) ? value.join(',') : value;
}

/** Upload ids that s3rver 3.7.1 issues: 32 hex digits. Anything else cannot name an upload folder. */
const UPLOAD_ID_RE = /^[0-9a-f]{32}$/;

/** One multipart upload in s3rver's store folder `<bucket>/._S3rver_uploads/<upload id>/`. */
interface StoredUpload {
  key: string;
  uploadId: string;
  initiated: Date;
}

/**
 * Adds AbortMultipartUpload (`DELETE /<bucket>/<key>?uploadId=`) and
 * ListMultipartUploads (`GET /<bucket>?uploads`), for which s3rver 3.7.1
 * returns MethodNotAllowed and NotImplemented, on top of the folder where
 * s3rver keeps an upload's key, metadata and parts until it completes. Part
 * uploads and completions of an aborted upload get 404 NoSuchUpload.
 */
function multipartUploads(store: FilesystemStore, directory: string): KoaMiddleware {
  return async (ctx, next) => {
    const uploadId = ctx.query['uploadId'];
    if (ctx.method === 'GET' && 'uploads' in ctx.query) return listUploads(ctx, store, directory);
    if (typeof uploadId !== 'string') return next();

    const { bucket, key } = parsePath(ctx);
    const upload = await readUpload(directory, bucket, uploadId);
    if (upload === undefined || upload.key !== key) {
      throw new S3Error(
        'NoSuchUpload',
        'The specified upload does not exist. The upload ID may be invalid, or the upload may have been aborted or completed.',
        { UploadId: uploadId },
      );
    }
    if (ctx.method !== 'DELETE') return next();

    await rm(uploadFolder(directory, bucket, uploadId), { recursive: true, force: true });
    ctx.status = 204;
    ctx.body = '';
  };
}

function uploadFolder(directory: string, bucket: string, uploadId: string): string {
  return path.join(directory, bucket, '._S3rver_uploads', uploadId);
}

/** Reads one stored upload, or returns undefined when its folder or key file is missing. */
async function readUpload(directory: string, bucket: string, uploadId: string): Promise<StoredUpload | undefined> {
  if (!UPLOAD_ID_RE.test(uploadId)) return undefined;
  const keyFile = path.join(uploadFolder(directory, bucket, uploadId), 'key');
  try {
    const [key, info] = await Promise.all([readFile(keyFile, 'utf8'), stat(keyFile)]);
    return { key, uploadId, initiated: info.mtime };
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
}

/** Responds to ListMultipartUploads with `prefix`, `key-marker`, `upload-id-marker` and `max-uploads`, ordered by key and upload id. */
async function listUploads(ctx: KoaContext, store: FilesystemStore, directory: string): Promise<void> {
  const { bucket } = parsePath(ctx);
  if (!(await store.getBucket(bucket))) {
    throw new S3Error('NoSuchBucket', 'The specified bucket does not exist', { BucketName: bucket });
  }
  const text = (name: string) => (typeof ctx.query[name] === 'string' ? (ctx.query[name] as string) : '');
  const prefix = text('prefix');
  const keyMarker = text('key-marker');
  const uploadIdMarker = text('upload-id-marker');
  const maxUploads = Math.min(1000, Math.max(0, Number(text('max-uploads') || 1000)));

  // Collect every upload under the prefix past the markers, in key and upload id order.
  const ids = await readdir(path.join(directory, bucket, '._S3rver_uploads')).catch(() => [] as string[]);
  const uploads: StoredUpload[] = [];
  for (const id of ids) {
    const upload = await readUpload(directory, bucket, id);
    if (upload === undefined || !upload.key.startsWith(prefix)) continue;
    const pastMarker = upload.key > keyMarker || (upload.key === keyMarker && uploadIdMarker !== '' && id > uploadIdMarker);
    if (keyMarker === '' || pastMarker) uploads.push(upload);
  }
  uploads.sort((a, b) => (a.key === b.key ? compareText(a.uploadId, b.uploadId) : compareText(a.key, b.key)));

  const page = uploads.slice(0, maxUploads);
  const truncated = uploads.length > page.length;
  const last = page.at(-1);
  const element = (name: string, value: string | number | boolean) => `<${name}>${escapeXml(String(value))}</${name}>`;
  const body = [
    '<?xml version="1.0" encoding="UTF-8"?>',
    '<ListMultipartUploadsResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">',
    element('Bucket', bucket),
    element('KeyMarker', keyMarker),
    element('UploadIdMarker', uploadIdMarker),
    truncated && last ? element('NextKeyMarker', last.key) + element('NextUploadIdMarker', last.uploadId) : '',
    element('Prefix', prefix),
    element('MaxUploads', maxUploads),
    element('IsTruncated', truncated),
    ...page.map(
      (u) =>
        '<Upload>' +
        element('Key', u.key) +
        element('UploadId', u.uploadId) +
        element('StorageClass', 'STANDARD') +
        element('Initiated', u.initiated.toISOString()) +
        '</Upload>',
    ),
    '</ListMultipartUploadsResult>',
  ].join('');
  ctx.status = 200;
  ctx.type = 'application/xml';
  ctx.body = body;
}

function compareText(a: string, b: string): number {
  if (a < b) return -1;
  return a > b ? 1 : 0;
}

function escapeXml(value: string): string {
  return value.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
}

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

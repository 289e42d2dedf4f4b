import { createHash } from 'node:crypto';
import { Agent } from 'node:https';
import { PassThrough, Readable, Transform, pipeline } from 'node:stream';

import {
  AbortMultipartUploadCommand,
  DeleteObjectCommand,
  DeleteObjectsCommand,
  type DeleteObjectsCommandInput,
  type DeleteObjectsCommandOutput,
  GetObjectCommand,
  HeadObjectCommand,
  ListMultipartUploadsCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  S3Client,
  type S3ClientConfig as SdkClientConfig,
} from '@aws-sdk/client-s3';
import { Upload } from '@aws-sdk/lib-storage';
import { NodeHttpHandler } from '@smithy/node-http-handler';
import type { BuildMiddleware, InitializeMiddleware, MetadataBearer } from '@smithy/types';

import { hasCode, WalshipError } from '../errors.js';
import type {
  ListResult,
  MultipartUploadInfo,
  ObjectInfo,
  ReplicaClient,
  S3ClientConfig,
  VersionedObject,
  WriteCondition,
} from './client.js';

const MIB = 1024 * 1024;

/** Default bytes per multipart part. */
const DEFAULT_PART_SIZE = 8 * MIB;

/** S3 rejects multipart parts below 5 MiB, except the last one. */
const MIN_PART_SIZE = 5 * MIB;

/** Parts uploaded at the same time. Memory use is at most this many parts. */
const QUEUE_SIZE = 4;

/** Maximum keys that one DeleteObjects request accepts. */
const DELETE_BATCH = 1000;

/** Pages of ListMultipartUploads (1000 uploads each) that one listing follows at most. */
const MAX_UPLOAD_PAGES = 1000;

/** Single DeleteObject requests in flight when a store lacks DeleteObjects. */
const SINGLE_DELETE_CONCURRENCY = 8;

/**
 * Attempts per request, the first included. The SDK's standard retry strategy
 * retries 5xx responses, throttling, timeouts and connection errors. Before
 * each retry it waits a random time between 0 and base × 2^retry, at most
 * 20 s (full jitter). In SDK 3.1178 the base is 50 ms, or 1 s after a
 * throttling error. Four retries ride out a few seconds of a store's trouble,
 * and the replica's own backoff takes over after that.
 */
const MAX_ATTEMPTS = 5;

/** Milliseconds to establish a TCP (and TLS) connection before the attempt fails and is retried. */
const CONNECTION_TIMEOUT_MS = 10_000;

/**
 * Milliseconds a socket may stay idle, with no byte sent or received, before
 * the attempt fails with a TimeoutError and is retried. An idle limit rather
 * than a limit on the whole request, because a large part on a slow link
 * takes long while it keeps moving.
 */
const SOCKET_TIMEOUT_MS = 60_000;

/** Options of S3ReplicaClient that are not part of the replica config. */
export interface S3ReplicaClientOptions {
  /** Keys per ListObjectsV2 page (MaxKeys), 1 to 1000. Defaults to 1000. Tests lower it to exercise paging. */
  pageSize?: number;
  /** Attempts per request, the first included. Defaults to 5. */
  maxAttempts?: number;
  /** Milliseconds to connect before an attempt fails. Defaults to 10 s. */
  connectionTimeout?: number;
  /** Milliseconds of socket inactivity before an attempt fails. Defaults to 60 s. */
  socketTimeout?: number;
}

/**
 * Stores replica objects in an S3 or S3-compatible bucket under a key prefix.
 * Uploads go through lib-storage: a body up to `partSize` is one PutObject,
 * a larger one a multipart upload, and S3 shows either only once complete.
 */
export class S3ReplicaClient implements ReplicaClient {
  readonly type = 's3';
  readonly location: string;
  readonly #bucket: string;
  readonly #prefix: string;
  readonly #partSize: number;
  readonly #pageSize: number;
  readonly #s3: S3Client;
  /** Set once the store rejects DeleteObjects as not implemented. */
  #singleDeletes = false;
  /** Full keys whose CreateMultipartUpload needed more than one attempt, so an earlier attempt may have left an upload open. */
  #retriedCreates = new Set<string>();

  constructor(config: S3ClientConfig, options: S3ReplicaClientOptions = {}) {
    this.#bucket = config.bucket;
    this.#prefix = config.prefix.replace(/^\/+|\/+$/g, '');
    this.#partSize = config.partSize ?? DEFAULT_PART_SIZE;
    this.#pageSize = options.pageSize ?? 1000;
    this.location = this.#prefix === '' ? `s3://${this.#bucket}` : `s3://${this.#bucket}/${this.#prefix}`;

    if (!Number.isInteger(this.#partSize) || this.#partSize < MIN_PART_SIZE) {
      throw new WalshipError(
        'INVALID_INPUT',
        `${this.location}: part size ${config.partSize} is invalid. ` +
          `Use an integer of at least ${MIN_PART_SIZE} bytes (5 MiB)`,
      );
    }
    this.#s3 = new S3Client(sdkConfig(config, this.location, options));
    this.#s3.middlewareStack.add(this.#recordCommand, { step: 'initialize', name: 'walshipRecordCommand' });
  }

  /** Uploads an object. A Readable body streams with at most `QUEUE_SIZE` parts in memory. */
  async put(key: string, body: Buffer | Readable): Promise<void> {
    const fullKey = this.#fullKey(key);
    let bytes = 0;
    let counted: Buffer | Readable = body;
    if (!Buffer.isBuffer(body)) {
      const counter = new Transform({
        transform(chunk: Buffer, _encoding, callback) {
          bytes += chunk.length;
          callback(null, chunk);
        },
      });
      // pipeline passes a read error of the body on to the upload.
      pipeline(body, counter, () => undefined);
      counted = counter;
    } else {
      bytes = body.length;
    }

    const upload = new Upload({
      client: this.#s3,
      params: { Bucket: this.#bucket, Key: fullKey, Body: counted },
      partSize: this.#partSize,
      queueSize: QUEUE_SIZE,
      leavePartsOnError: false,
    });
    let failure: unknown;
    try {
      await upload.done();
    } catch (err) {
      failure = err;
    }

    // lib-storage aborts a multipart upload that fails, but the abort can fail
    // too, and a CreateMultipartUpload whose response was lost and retried
    // leaves the first upload open. Either way the open uploads of this key
    // are aborted here, so that no parts stay stored and billed.
    const retriedCreate = this.#retriedCreates.delete(fullKey);
    if (failure !== undefined && (await this.#completedBeforeRetry(fullKey, bytes, failure))) failure = undefined;
    if (failure !== undefined || retriedCreate) await this.#abortUploadsOf(fullKey).catch(() => undefined);
    if (failure !== undefined) throw this.#wrap('PutObject', fullKey, failure);
  }

  /**
   * Reports whether a CompleteMultipartUpload that failed with NoSuchUpload on
   * a retry had completed on an earlier attempt whose response was lost.
   * Some stores, the patched s3rver of the tests among them, reject such a
   * retry that way. The object then exists with the uploaded length.
   */
  async #completedBeforeRetry(fullKey: string, bytes: number, err: unknown): Promise<boolean> {
    const command = (err as { $command?: string }).$command;
    const attempts = (err as { $metadata?: { attempts?: number } }).$metadata?.attempts ?? 1;
    if (command !== 'CompleteMultipartUpload' || errorName(err) !== 'NoSuchUpload' || attempts < 2) return false;
    // NOTE: the length is the only check, because the multipart ETag is not
    // known here. Keys of the replica layout are written with one content only.
    const head = await this.#s3.send(new HeadObjectCommand({ Bucket: this.#bucket, Key: fullKey })).catch(() => undefined);
    return head?.ContentLength === bytes;
  }

  /** Downloads a whole object into memory. */
  async get(key: string): Promise<Buffer> {
    const fullKey = this.#fullKey(key);
    const body = await this.#getBody(fullKey);
    try {
      const bytes = await body.transformToByteArray();
      return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    } catch (err) {
      throw this.#wrap('GetObject', fullKey, err);
    }
  }

  /** Opens an object as a stream. Errors while reading it arrive wrapped like any other. */
  async getStream(key: string): Promise<Readable> {
    const fullKey = this.#fullKey(key);
    const body = await this.#getBody(fullKey);
    if (!(body instanceof Readable)) {
      throw new Error(`GetObject ${this.#url(fullKey)} failed: the SDK returned a body that is not a Node.js stream`);
    }

    // Forward the bytes through a PassThrough so that a socket error reaches
    // the reader with the bucket and key, and an early close frees the socket.
    const output = new PassThrough();
    body.on('error', (err) => output.destroy(this.#wrap('GetObject', fullKey, err)));
    output.on('close', () => body.destroy());
    body.pipe(output);
    return output;
  }

  /**
   * Lists the objects under the folder `prefix` (a trailing `/` is optional,
   * `''` is the client's prefix), following every page. With `delimiter`
   * it returns direct children and the common prefixes beneath.
   */
  async list(prefix: string, options: { delimiter?: boolean } = {}): Promise<ListResult> {
    const folder = prefix.replace(/\/+$/, '');
    const listPrefix = joinPrefix(this.#prefix, folder);
    const result: ListResult = { objects: [], prefixes: [] };

    let token: string | undefined;
    do {
      const page = await this.#listPage(listPrefix, options.delimiter === true, token);
      for (const item of page.Contents ?? []) {
        const info = this.#objectInfo(item);
        if (info) result.objects.push(info);
      }
      for (const common of page.CommonPrefixes ?? []) {
        if (common.Prefix !== undefined) result.prefixes.push(this.#relativeKey(common.Prefix));
      }

      // A store that reports a truncated page without a token would loop forever.
      if (page.IsTruncated === true && !page.NextContinuationToken) {
        throw new Error(`ListObjectsV2 ${this.#url(listPrefix)} failed: truncated page without a continuation token`);
      }
      token = page.IsTruncated === true ? page.NextContinuationToken : undefined;
    } while (token !== undefined);

    result.objects.sort((a, b) => compareKeys(a.key, b.key));
    result.prefixes.sort(compareKeys);
    return result;
  }

  /** Deletes objects in batches of 1000. Missing keys are no error. */
  async delete(keys: string[]): Promise<void> {
    const fullKeys = keys.map((key) => this.#fullKey(key));
    for (let start = 0; start < fullKeys.length; start += DELETE_BATCH) {
      const batch = fullKeys.slice(start, start + DELETE_BATCH);
      if (this.#singleDeletes) await this.#deleteOneByOne(batch);
      else await this.#deleteBatch(batch);
    }
  }

  /** Downloads a small object with its ETag, or returns undefined when it does not exist. */
  async getVersioned(key: string): Promise<VersionedObject | undefined> {
    const fullKey = this.#fullKey(key);
    try {
      const output = await this.#s3.send(new GetObjectCommand({ Bucket: this.#bucket, Key: fullKey }));
      if (output.Body === undefined) throw new Error('response has no body');
      const bytes = await output.Body.transformToByteArray();
      const etag = output.ETag ?? '';
      return { body: Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength), etag };
    } catch (err) {
      const wrapped = this.#wrap('GetObject', fullKey, err);
      if (hasCode(wrapped, 'NOT_FOUND')) return undefined;
      throw wrapped;
    }
  }

  /**
   * Uploads a small object in one PutObject with `If-None-Match: *` or
   * `If-Match: <etag>`. A 412, a 409 ConditionalRequestConflict (AWS: a
   * concurrent conditional write won) and a 404 on If-Match (AWS: no object to
   * match) all reject with PRECONDITION_FAILED. A store that rejects the header
   * with 501 makes this reject with CONDITIONAL_WRITES_UNSUPPORTED.
   */
  async putConditional(key: string, body: Buffer, condition: WriteCondition): Promise<{ etag: string }> {
    const fullKey = this.#fullKey(key);
    const header = 'ifNoneMatch' in condition ? 'If-None-Match: *' : `If-Match: ${condition.ifMatch}`;
    const command = new PutObjectCommand({
      Bucket: this.#bucket,
      Key: fullKey,
      Body: body,
      IfNoneMatch: 'ifNoneMatch' in condition ? condition.ifNoneMatch : undefined,
      IfMatch: 'ifMatch' in condition ? condition.ifMatch : undefined,
    });

    let output;
    try {
      output = await this.#s3.send(command);
    } catch (err) {
      throw this.#wrapConditional('PutObject', fullKey, header, err, 'ifMatch' in condition);
    }
    if (output.ETag !== undefined) return { etag: output.ETag };

    // Some S3-compatible stores leave the ETag out of the PutObject response.
    try {
      const head = await this.#s3.send(new HeadObjectCommand({ Bucket: this.#bucket, Key: fullKey }));
      return { etag: head.ETag ?? '' };
    } catch (err) {
      throw this.#wrap('HeadObject', fullKey, err);
    }
  }

  /**
   * Deletes an object with `If-Match: <etag>`. AWS S3 checks the header. A
   * store that rejects it with 501 gets a GetObject, a comparison of the ETag and
   * an unconditional DeleteObject instead, which leaves a short window between
   * the two. A store that ignores the header deletes unconditionally.
   */
  async deleteConditional(key: string, etag: string): Promise<void> {
    const fullKey = this.#fullKey(key);
    try {
      await this.#s3.send(new DeleteObjectCommand({ Bucket: this.#bucket, Key: fullKey, IfMatch: etag }));
      return;
    } catch (err) {
      if (isNotFound(err)) return;
      const wrapped = this.#wrapConditional('DeleteObject', fullKey, `If-Match: ${etag}`, err, false);
      if (!hasCode(wrapped, 'CONDITIONAL_WRITES_UNSUPPORTED')) throw wrapped;
    }

    const current = await this.getVersioned(key);
    if (current === undefined) return;
    if (current.etag !== etag) {
      throw new WalshipError(
        'PRECONDITION_FAILED',
        `DeleteObject ${this.#url(fullKey)}: precondition failed, expected ETag ${etag} but found ${current.etag}`,
      );
    }
    await this.#deleteOne(fullKey);
  }

  /** Lists the multipart uploads still open under the folder `prefix`, following every page. */
  async listMultipartUploads(prefix: string): Promise<MultipartUploadInfo[]> {
    const listPrefix = joinPrefix(this.#prefix, prefix.replace(/\/+$/, ''));
    const uploads: MultipartUploadInfo[] = [];
    let keyMarker: string | undefined;
    let uploadIdMarker: string | undefined;

    // Each page moves the markers forward, and a page without them ends the loop.
    for (let page = 0; page < MAX_UPLOAD_PAGES; page++) {
      const command = new ListMultipartUploadsCommand({
        Bucket: this.#bucket,
        Prefix: listPrefix,
        KeyMarker: keyMarker,
        UploadIdMarker: uploadIdMarker,
      });
      let output;
      try {
        output = await this.#s3.send(command);
      } catch (err) {
        throw this.#wrap('ListMultipartUploads', listPrefix, err);
      }

      for (const upload of output.Uploads ?? []) {
        if (upload.Key === undefined || upload.UploadId === undefined) continue;
        uploads.push({
          key: this.#relativeKey(upload.Key),
          uploadId: upload.UploadId,
          initiated: upload.Initiated ?? new Date(0),
        });
      }
      if (output.IsTruncated !== true) return uploads;
      if (output.NextKeyMarker === undefined && output.NextUploadIdMarker === undefined) {
        throw new Error(`ListMultipartUploads ${this.#url(listPrefix)} failed: truncated page without markers`);
      }
      keyMarker = output.NextKeyMarker;
      uploadIdMarker = output.NextUploadIdMarker;
    }
    throw new Error(`ListMultipartUploads ${this.#url(listPrefix)} failed: more than ${MAX_UPLOAD_PAGES} pages`);
  }

  /** Aborts every multipart upload still open under the folder `prefix`. An upload that ended meanwhile is skipped. */
  async abortMultipartUploads(prefix: string): Promise<number> {
    const uploads = await this.listMultipartUploads(prefix);
    let aborted = 0;
    for (const upload of uploads) {
      const fullKey = this.#fullKey(upload.key);
      try {
        await this.#s3.send(
          new AbortMultipartUploadCommand({ Bucket: this.#bucket, Key: fullKey, UploadId: upload.uploadId }),
        );
        aborted++;
      } catch (err) {
        // NoSuchUpload: the upload completed or was aborted after the listing.
        if (errorName(err) === 'NoSuchUpload' || httpStatus(err) === 404) continue;
        throw this.#wrap(`AbortMultipartUpload (upload id ${upload.uploadId})`, fullKey, err);
      }
    }
    return aborted;
  }

  /** Closes the SDK client's sockets. */
  async close(): Promise<void> {
    this.#s3.destroy();
  }

  /**
   * Tags SDK errors with the command that failed and remembers retried
   * CreateMultipartUpload requests. lib-storage runs several commands for
   * one upload, and the SDK's error does not name its command.
   */
  readonly #recordCommand: InitializeMiddleware<object, MetadataBearer> = (next, context) => async (args) => {
    try {
      const result = await next(args);
      const input = args.input as { Key?: string };
      if (context.commandName === 'CreateMultipartUploadCommand' && (result.output.$metadata.attempts ?? 1) > 1 && input.Key !== undefined) {
        this.#retriedCreates.add(input.Key);
      }
      return result;
    } catch (err) {
      if (err !== null && typeof err === 'object' && context.commandName !== undefined) {
        (err as { $command?: string }).$command = context.commandName.replace(/Command$/, '');
      }
      throw err;
    }
  };

  /** Aborts every open multipart upload of exactly this key. */
  async #abortUploadsOf(fullKey: string): Promise<void> {
    const output = await this.#s3.send(new ListMultipartUploadsCommand({ Bucket: this.#bucket, Prefix: fullKey }));
    for (const upload of output.Uploads ?? []) {
      if (upload.Key !== fullKey || upload.UploadId === undefined) continue;
      await this.#s3
        .send(new AbortMultipartUploadCommand({ Bucket: this.#bucket, Key: fullKey, UploadId: upload.UploadId }))
        .catch((err: unknown) => {
          if (errorName(err) !== 'NoSuchUpload' && httpStatus(err) !== 404) throw err;
        });
    }
  }

  async #getBody(fullKey: string) {
    try {
      const output = await this.#s3.send(new GetObjectCommand({ Bucket: this.#bucket, Key: fullKey }));
      if (output.Body === undefined) throw new Error('response has no body');
      return output.Body;
    } catch (err) {
      throw this.#wrap('GetObject', fullKey, err);
    }
  }

  async #listPage(listPrefix: string, delimiter: boolean, token: string | undefined) {
    const command = new ListObjectsV2Command({
      Bucket: this.#bucket,
      Prefix: listPrefix,
      Delimiter: delimiter ? '/' : undefined,
      ContinuationToken: token,
      MaxKeys: this.#pageSize,
    });
    try {
      return await this.#s3.send(command);
    } catch (err) {
      throw this.#wrap('ListObjectsV2', listPrefix, err);
    }
  }

  async #deleteBatch(batch: string[]): Promise<void> {
    const command = new DeleteObjectsCommand({
      Bucket: this.#bucket,
      Delete: { Objects: batch.map((Key) => ({ Key })), Quiet: true },
    });
    command.middlewareStack.addRelativeTo(useContentMd5, {
      name: 'walshipDeleteObjectsContentMd5',
      relation: 'after',
      toMiddleware: 'flexibleChecksumsMiddleware',
    });

    let output;
    try {
      output = await this.#s3.send(command);
    } catch (err) {
      // Some S3-compatible stores lack DeleteObjects, so delete the keys one by one.
      if (!isNotImplemented(err)) throw this.#wrap('DeleteObjects', batch[0]!, err);
      this.#singleDeletes = true;
      await this.#deleteOneByOne(batch);
      return;
    }

    // DeleteObjects returns 200 even when single keys fail. Their failures are in Errors.
    const failed = (output.Errors ?? []).filter((e) => e.Code !== 'NoSuchKey');
    if (failed.length > 0) {
      const first = failed[0]!;
      throw new Error(
        `DeleteObjects ${this.#url(first.Key ?? '')} failed: ${first.Code}: ${first.Message}` +
          (failed.length > 1 ? ` (and ${failed.length - 1} more keys)` : ''),
      );
    }
  }

  async #deleteOneByOne(batch: string[]): Promise<void> {
    for (let start = 0; start < batch.length; start += SINGLE_DELETE_CONCURRENCY) {
      const slice = batch.slice(start, start + SINGLE_DELETE_CONCURRENCY);
      await Promise.all(slice.map((key) => this.#deleteOne(key)));
    }
  }

  async #deleteOne(fullKey: string): Promise<void> {
    try {
      await this.#s3.send(new DeleteObjectCommand({ Bucket: this.#bucket, Key: fullKey }));
    } catch (err) {
      if (!isNotFound(err)) throw this.#wrap('DeleteObject', fullKey, err);
    }
  }

  #objectInfo(item: { Key?: string; Size?: number; LastModified?: Date }): ObjectInfo | undefined {
    // Keys ending in `/` are folder markers that consoles create, not objects.
    if (item.Key === undefined || item.Key.endsWith('/')) return undefined;
    return {
      key: this.#relativeKey(item.Key),
      size: item.Size ?? 0,
      lastModified: item.LastModified ?? new Date(0),
    };
  }

  #fullKey(key: string): string {
    if (key === '' || key.startsWith('/')) {
      throw new WalshipError('INVALID_INPUT', `${this.location}: invalid object key ${JSON.stringify(key)}`);
    }
    return this.#prefix === '' ? key : `${this.#prefix}/${key}`;
  }

  #relativeKey(fullKey: string): string {
    return this.#prefix === '' ? fullKey : fullKey.slice(this.#prefix.length + 1);
  }

  #url(fullKey: string): string {
    return `s3://${this.#bucket}/${fullKey}`;
  }

  /** Maps the failure of a conditional request to PRECONDITION_FAILED, CONDITIONAL_WRITES_UNSUPPORTED or a plain error. */
  #wrapConditional(operation: string, fullKey: string, header: string, err: unknown, ifMatch: boolean): Error {
    const detail = `${errorName(err)}: ${err instanceof Error ? err.message : String(err)}`;
    const status = httpStatus(err);
    const name = errorName(err);
    if (status === 412 || name === 'PreconditionFailed' || status === 409 || (ifMatch && isNotFound(err))) {
      return new WalshipError(
        'PRECONDITION_FAILED',
        `${operation} ${this.#url(fullKey)} with ${header}: precondition failed (${detail})`,
        { cause: err },
      );
    }
    if (isNotImplemented(err)) {
      return new WalshipError(
        'CONDITIONAL_WRITES_UNSUPPORTED',
        `${operation} ${this.#url(fullKey)} with ${header}: the store does not implement conditional writes (${detail})`,
        { cause: err },
      );
    }
    return this.#wrap(operation, fullKey, err);
  }

  #wrap(operation: string, fullKey: string, err: unknown): Error {
    if (err instanceof WalshipError) return err;
    const detail = `${errorName(err)}: ${err instanceof Error ? err.message : String(err)}`;
    if (operation === 'GetObject' && isNotFound(err)) {
      return new WalshipError('NOT_FOUND', `GetObject ${this.#url(fullKey)}: object not found (${detail})`, {
        cause: err,
      });
    }

    // lib-storage runs CreateMultipartUpload, UploadPart and the others under one PutObject.
    const command = (err as { $command?: string } | undefined)?.$command;
    const step = command !== undefined && command !== operation ? ` in ${command}` : '';
    const attempts = (err as { $metadata?: { attempts?: number } } | undefined)?.$metadata?.attempts;
    const tries = attempts !== undefined && attempts > 1 ? ` after ${attempts} attempts` : '';
    return new Error(`${operation} ${this.#url(fullKey)} failed${step}${tries}: ${detail}${this.#hint(err)}`, { cause: err });
  }

  /** Returns what to do about an error that retrying cannot fix, or '' for the others. */
  #hint(err: unknown): string {
    const name = errorName(err);
    if (name === 'NoSuchBucket') return `. Bucket ${this.#bucket} does not exist: create it or correct the bucket name`;
    if (name === 'AccessDenied' || httpStatus(err) === 403) {
      return `. Access to bucket ${this.#bucket} was denied: check the credentials and the bucket policy`;
    }
    if (name === 'CredentialsProviderError') {
      return '. No S3 credentials were found: set access-key-id and secret-access-key in the config, LITESTREAM_ACCESS_KEY_ID and LITESTREAM_SECRET_ACCESS_KEY, or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY';
    }
    return '';
  }
}

/** Builds the SDK client settings from a replica config. */
function sdkConfig(config: S3ClientConfig, location: string, options: S3ReplicaClientOptions): SdkClientConfig {
  const settings: SdkClientConfig = {
    region: config.region ?? 'us-east-1',
    // The SDK retries; walship adds no retry loop around single requests.
    retryMode: 'standard',
    maxAttempts: options.maxAttempts ?? MAX_ATTEMPTS,
    requestHandler: new NodeHttpHandler({
      connectionTimeout: options.connectionTimeout ?? CONNECTION_TIMEOUT_MS,
      socketTimeout: options.socketTimeout ?? SOCKET_TIMEOUT_MS,
      ...(config.skipVerify === true ? { httpsAgent: new Agent({ rejectUnauthorized: false, keepAlive: true }) } : {}),
    }),
    // Without a configured region, a bucket in another AWS region responds
    // with a redirect. Following it spares users from naming the region.
    followRegionRedirects: true,
    // Since v3.729.0 the SDK adds a CRC32 checksum to every upload. Cloudflare
    // R2 rejected that header with 501 NotImplemented, and other S3-compatible
    // stores may too, so checksums are sent and checked only where S3 requires them.
    requestChecksumCalculation: 'WHEN_REQUIRED',
    responseChecksumValidation: 'WHEN_REQUIRED',
  };

  if (config.endpoint !== undefined) {
    settings.endpoint = config.endpoint;
    settings.forcePathStyle = config.forcePathStyle ?? true;
  } else if (config.forcePathStyle !== undefined) {
    settings.forcePathStyle = config.forcePathStyle;
  }

  if (config.accessKeyId !== undefined || config.secretAccessKey !== undefined) {
    if (!config.accessKeyId || !config.secretAccessKey) {
      throw new WalshipError(
        'INVALID_INPUT',
        `${location}: set both access-key-id and secret-access-key, or neither to use the AWS default credential chain`,
      );
    }
    settings.credentials = {
      accessKeyId: config.accessKeyId,
      secretAccessKey: config.secretAccessKey,
      sessionToken: config.sessionToken,
    };
  }
  return settings;
}

/**
 * Replaces the CRC32 checksum headers of a DeleteObjects request with
 * Content-MD5. The S3 API documents Content-MD5 as required for
 * DeleteObjects. AWS also accepts the CRC32 header that the SDK sends since
 * v3.729.0, but some S3-compatible stores (Dell ECS among them) reject a
 * DeleteObjects request without Content-MD5. This runs after the SDK's
 * checksum middleware and before signing.
 */
type DeleteObjectsMiddleware = BuildMiddleware<DeleteObjectsCommandInput, DeleteObjectsCommandOutput>;

const useContentMd5: DeleteObjectsMiddleware = (next) => async (args) => {
  const request = args.request as { headers?: Record<string, string>; body?: unknown };
  if (request.headers !== undefined && (typeof request.body === 'string' || request.body instanceof Uint8Array)) {
    for (const name of Object.keys(request.headers)) {
      const lower = name.toLowerCase();
      if (lower.startsWith('x-amz-checksum-') || lower.startsWith('x-amz-sdk-checksum-')) delete request.headers[name];
    }
    request.headers['content-md5'] = createHash('md5').update(request.body).digest('base64');
  }
  return next(args);
};

/** Joins the client prefix and a folder into a ListObjectsV2 prefix ending in `/`, or `''` for the bucket root. */
function joinPrefix(clientPrefix: string, folder: string): string {
  const joined = [clientPrefix, folder].filter((p) => p !== '').join('/');
  return joined === '' ? '' : `${joined}/`;
}

function errorName(err: unknown): string {
  return err instanceof Error ? err.name : 'Error';
}

function httpStatus(err: unknown): number | undefined {
  return (err as { $metadata?: { httpStatusCode?: number } } | undefined)?.$metadata?.httpStatusCode;
}

function isNotFound(err: unknown): boolean {
  const name = errorName(err);
  if (name === 'NoSuchKey' || name === 'NotFound') return true;
  // A missing bucket is a configuration error, never a missing object.
  return httpStatus(err) === 404 && name !== 'NoSuchBucket';
}

function isNotImplemented(err: unknown): boolean {
  const status = httpStatus(err);
  return errorName(err) === 'NotImplemented' || status === 501 || status === 405;
}

/** Orders keys by UTF-16 code units, as `Array.prototype.sort` would without a comparator. */
function compareKeys(a: string, b: string): number {
  if (a < b) return -1;
  return a > b ? 1 : 0;
}

import type { Readable } from 'node:stream';

/**
 * Settings of one replica client, plain data so that it crosses into worker
 * threads unchanged. Each worker builds its own client from it.
 */
export type ReplicaClientConfig = FileClientConfig | S3ClientConfig;

/** A replica in a local directory, written through a temporary file and a rename. */
export interface FileClientConfig {
  type: 'file';
  /** Absolute directory that contains `generations/`. */
  root: string;
}

/** A replica in an S3 or S3-compatible bucket. */
export interface S3ClientConfig {
  type: 's3';
  bucket: string;
  /** Key prefix that contains `generations/`, without leading or trailing `/`. It may be empty. */
  prefix: string;
  /** Region; defaults to us-east-1 when an endpoint is set and the SDK's chain finds none. */
  region?: string;
  /** Endpoint URL for S3-compatible stores (MinIO, R2, B2, Ceph). Unset means AWS. */
  endpoint?: string;
  /** Use path-style URLs (`endpoint/bucket/key`). Defaults to true when an endpoint is set. */
  forcePathStyle?: boolean;
  /** Accept any TLS certificate from the endpoint. */
  skipVerify?: boolean;
  /** Static credentials; unset means the SDK's default provider chain. */
  accessKeyId?: string;
  secretAccessKey?: string;
  sessionToken?: string;
  /** Bytes per multipart part. Defaults to 8 MiB. */
  partSize?: number;
}

/** One object found by a listing. */
export interface ObjectInfo {
  /** Key relative to the client's root or prefix, `/`-separated. */
  key: string;
  /** Stored size in bytes. */
  size: number;
  /** Store timestamp: S3 LastModified, or file mtime. */
  lastModified: Date;
}

/** Result of a listing with a delimiter. */
export interface ListResult {
  objects: ObjectInfo[];
  /** Sub-folder keys directly under the listed prefix, each ending in `/`. */
  prefixes: string[];
}

/** An object's bytes with the entity tag that conditional writes compare. */
export interface VersionedObject {
  body: Buffer;
  /** Entity tag as the store returns it, quotes included for S3. */
  etag: string;
}

/**
 * Condition of a conditional write: create only when the key is absent
 * (`If-None-Match: *`), or replace only the version with this entity tag (`If-Match`).
 */
export type WriteCondition = { ifNoneMatch: '*' } | { ifMatch: string };

/** One multipart upload that was started and neither completed nor aborted. */
export interface MultipartUploadInfo {
  /** Key relative to the client's prefix. */
  key: string;
  uploadId: string;
  /** Time the upload was started, as the store reports it. */
  initiated: Date;
}

/**
 * A key-value view of one replica location. Keys are relative to the client's
 * root (a directory for `file`, a key prefix for `s3`) and use `/`.
 *
 * Contract:
 * - `get` and `getStream` reject with a WalshipError of code NOT_FOUND when the key does not exist.
 * - `list` returns every object under a prefix (all pages), sorted by key; with
 *   `delimiter: true` it returns only direct children and the sub-folders beneath.
 *   A prefix that does not exist lists as empty.
 * - `put` makes the object visible only once all its bytes are stored.
 * - `delete` ignores keys that do not exist.
 * - `getVersioned` returns undefined for a missing key.
 * - `putConditional` and `deleteConditional` reject with PRECONDITION_FAILED when
 *   the condition does not hold, and `putConditional` rejects with
 *   CONDITIONAL_WRITES_UNSUPPORTED when the store rejects the header as not
 *   implemented. A store that ignores the headers silently is not detected
 *   here. The lease probes for it.
 * - Errors name the operation, the bucket or directory and the key; they never
 *   carry credentials.
 */
export interface ReplicaClient {
  readonly type: 'file' | 's3';
  /** Human-readable location, e.g. `s3://bucket/databases/users` or `file:///backups/users`. */
  readonly location: string;
  put(key: string, body: Buffer | Readable): Promise<void>;
  get(key: string): Promise<Buffer>;
  getStream(key: string): Promise<Readable>;
  list(prefix: string, options?: { delimiter?: boolean }): Promise<ListResult>;
  delete(keys: string[]): Promise<void>;
  /** Reads a small object with its entity tag, or returns undefined when the key does not exist. */
  getVersioned(key: string): Promise<VersionedObject | undefined>;
  /** Writes a small object only when `condition` holds, and returns the new entity tag. */
  putConditional(key: string, body: Buffer, condition: WriteCondition): Promise<{ etag: string }>;
  /** Deletes an object only while its entity tag is `etag`. A missing key is no error. */
  deleteConditional(key: string, etag: string): Promise<void>;
  /** Lists multipart uploads still open under the folder `prefix`. The file replica has none. */
  listMultipartUploads(prefix: string): Promise<MultipartUploadInfo[]>;
  /** Aborts every multipart upload still open under the folder `prefix`, and returns how many it aborted. */
  abortMultipartUploads(prefix: string): Promise<number>;
  /** Releases sockets and handles. */
  close(): Promise<void>;
}

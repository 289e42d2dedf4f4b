import { createHash, randomBytes } from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import type { Readable } from 'node:stream';
import { pathToFileURL } from 'node:url';

import { hasCode, WalshipError } from '../errors.js';
import { createExclusive, removeIfUnchanged } from '../lock-file.js';
import type {
  FileClientConfig,
  ListResult,
  MultipartUploadInfo,
  ObjectInfo,
  ReplicaClient,
  VersionedObject,
  WriteCondition,
} from './client.js';

/** Suffix of temporary files. Listings skip them, and keys may not end with it. */
const TEMP_SUFFIX = '.tmp';

// A delete may remove a folder between put's mkdir and its open. Put then
// creates the folder again, up to this many times.
const MAX_CREATE_ATTEMPTS = 3;

/** Time that a conditional write waits for another one on the same key, in milliseconds. */
const CONDITION_LOCK_TIMEOUT = 5_000;

/** Age after which a conditional write's lock file is left over from a crashed process, in milliseconds. */
const CONDITION_LOCK_STALE_AFTER = 30_000;

/** Pause between attempts to take a conditional write's lock file, in milliseconds. */
const CONDITION_LOCK_POLL = 10;

/** Error codes of a read or unlink on a key that names no file: missing, below a file, or a folder. */
const MISSING_CODES = new Set(['ENOENT', 'ENOTDIR', 'EISDIR']);

/**
 * Stores replica objects as files under a local directory. Each key maps to
 * the file `<root>/<key>`. A put writes a temporary file in the target folder,
 * fsyncs it, renames it into place and fsyncs the folder, so an object is
 * either absent or complete, even after a crash.
 */
export class FileReplicaClient implements ReplicaClient {
  readonly type = 'file';
  readonly location: string;
  readonly #root: string;

  constructor(config: FileClientConfig) {
    if (!path.isAbsolute(config.root)) {
      const root = JSON.stringify(config.root);
      throw new WalshipError('INVALID_INPUT', `file replica root ${root} is not an absolute path`);
    }
    this.#root = path.resolve(config.root);
    this.location = pathToFileURL(this.#root).href;
  }

  /** Writes an object through a temporary file. A Readable body streams to disk in bounded memory. */
  async put(key: string, body: Buffer | Readable): Promise<void> {
    const file = this.#pathOf(key, 'put');
    const tempFile = `${file}.${randomBytes(6).toString('hex')}${TEMP_SUFFIX}`;

    try {
      const handle = await this.#createFile(tempFile);
      try {
        await writeBody(handle, body);
        await handle.sync();
      } finally {
        await handle.close();
      }

      await fs.rename(tempFile, file);
      await syncDirectory(path.dirname(file));
    } catch (err) {
      await fs.rm(tempFile, { force: true }).catch(() => undefined);
      throw this.#wrap('put', key, err);
    }
  }

  /** Reads a whole object into memory. */
  async get(key: string): Promise<Buffer> {
    const file = this.#pathOf(key, 'get');
    try {
      return await fs.readFile(file);
    } catch (err) {
      throw this.#wrap('get', key, err);
    }
  }

  /** Opens an object for streaming, and rejects with NOT_FOUND before returning when it does not exist. */
  async getStream(key: string): Promise<Readable> {
    const file = this.#pathOf(key, 'getStream');
    try {
      const handle = await fs.open(file, 'r');

      // Linux opens a folder for reading too, but a folder is no object.
      if ((await handle.stat()).isDirectory()) {
        await handle.close();
        throw Object.assign(new Error(`${file} is a folder`), { code: 'EISDIR' });
      }
      return handle.createReadStream();
    } catch (err) {
      throw this.#wrap('getStream', key, err);
    }
  }

  /**
   * Lists the objects in the folder `prefix` (a trailing `/` is optional, `''`
   * is the root): all of them, or with `delimiter` only the direct children
   * and the sub-folders beneath.
   */
  async list(prefix: string, options: { delimiter?: boolean } = {}): Promise<ListResult> {
    const folder = prefix.endsWith('/') ? prefix.slice(0, -1) : prefix;
    if (prefix !== '') validateKey(folder, 'list', this.#root);

    const result: ListResult = { objects: [], prefixes: [] };
    try {
      await this.#walk(folder, options.delimiter === true, result);
    } catch (err) {
      throw this.#wrap('list', prefix, err);
    }

    result.objects.sort((a, b) => compareKeys(a.key, b.key));
    result.prefixes.sort(compareKeys);
    return result;
  }

  /** Deletes objects, ignoring missing ones, then removes the folders they leave empty. */
  async delete(keys: string[]): Promise<void> {
    const files = keys.map((key) => this.#pathOf(key, 'delete'));

    for (const [i, file] of files.entries()) {
      try {
        await fs.unlink(file);
      } catch (err) {
        // No object has this key: nothing there, a file in its path, or a folder.
        if (!MISSING_CODES.has(errorCode(err) ?? '')) throw this.#wrap('delete', keys[i]!, err);
      }
    }

    // Deepest folders first, so that a parent is tried after its children.
    const folders = [...new Set(files.map((f) => path.dirname(f)))].sort((a, b) => b.length - a.length);
    for (const folder of folders) await this.#removeEmptyFolders(folder);
  }

  /** Reads an object with an entity tag: the quoted MD5 of its bytes, as S3 gives a single-part object. */
  async getVersioned(key: string): Promise<VersionedObject | undefined> {
    try {
      const body = await this.get(key);
      return { body, etag: etagOf(body) };
    } catch (err) {
      if (hasCode(err, 'NOT_FOUND')) return undefined;
      throw err;
    }
  }

  /**
   * Writes an object when `condition` holds. The check and the rename run
   * under a lock file beside the object (`<file>.cas.tmp`), which every
   * conditional write and delete of the key takes, in this or another process.
   */
  async putConditional(key: string, body: Buffer, condition: WriteCondition): Promise<{ etag: string }> {
    const file = this.#pathOf(key, 'putConditional');
    await this.#withConditionLock(key, file, async () => {
      const current = await this.getVersioned(key);
      checkCondition(condition, current?.etag, `putConditional ${key} in ${this.#root}`);
      await this.put(key, body);
    });
    return { etag: etagOf(body) };
  }

  /** Deletes an object only while its entity tag is `etag`, under the same lock as putConditional. */
  async deleteConditional(key: string, etag: string): Promise<void> {
    const file = this.#pathOf(key, 'deleteConditional');
    await this.#withConditionLock(key, file, async () => {
      const current = await this.getVersioned(key);
      if (current === undefined) return;
      checkCondition({ ifMatch: etag }, current.etag, `deleteConditional ${key} in ${this.#root}`);
      await this.delete([key]);
    });
  }

  /** Returns no uploads, because the file replica writes no multipart uploads. */
  async listMultipartUploads(_prefix: string): Promise<MultipartUploadInfo[]> {
    return [];
  }

  /** Aborts nothing, because the file replica writes no multipart uploads. */
  async abortMultipartUploads(_prefix: string): Promise<number> {
    return 0;
  }

  /** Does nothing, because the file replica keeps no handles open between calls. */
  async close(): Promise<void> {}

  #pathOf(key: string, operation: string): string {
    validateKey(key, operation, this.#root);
    if (key.endsWith(TEMP_SUFFIX)) {
      throw new WalshipError(
        'INVALID_INPUT',
        `${operation} ${key} in ${this.#root}: keys ending in ${TEMP_SUFFIX} are reserved for temporary files`,
      );
    }
    return path.join(this.#root, ...key.split('/'));
  }

  async #createFile(file: string): Promise<fs.FileHandle> {
    for (let attempt = 1; ; attempt++) {
      await fs.mkdir(path.dirname(file), { recursive: true });
      try {
        return await fs.open(file, 'wx');
      } catch (err) {
        if (errorCode(err) !== 'ENOENT' || attempt >= MAX_CREATE_ATTEMPTS) throw err;
      }
    }
  }

  /**
   * Runs `fn` while holding the lock file of one key. A lock file older than
   * CONDITION_LOCK_STALE_AFTER belongs to a process that crashed inside the
   * few file operations of a conditional write, and is removed.
   */
  async #withConditionLock(key: string, file: string, fn: () => Promise<void>): Promise<void> {
    const lockFile = `${file}.cas.tmp`;
    const content = `${process.pid} ${randomBytes(8).toString('hex')}\n`;
    const deadline = Date.now() + CONDITION_LOCK_TIMEOUT;

    for (;;) {
      await fs.mkdir(path.dirname(file), { recursive: true });
      // A delete of the folder's last object may remove the folder after mkdir, so ENOENT means try again.
      const created = await createExclusive(lockFile, content).catch((err: unknown) => {
        if (errorCode(err) === 'ENOENT') return false;
        throw this.#wrap('putConditional', key, err);
      });
      if (created) break;

      const stale = await readIfOlder(lockFile, CONDITION_LOCK_STALE_AFTER);
      if (stale !== undefined) {
        await removeIfUnchanged(lockFile, stale);
        continue;
      }
      if (Date.now() >= deadline) {
        throw new Error(
          `conditional write of ${key} in ${this.#root} timed out after ${CONDITION_LOCK_TIMEOUT} ms waiting for ` +
            `${lockFile}. Another process holds it. Delete it if no walship process uses this replica`,
        );
      }
      await new Promise((resolve) => setTimeout(resolve, CONDITION_LOCK_POLL));
    }

    try {
      await fn();
    } finally {
      await removeIfUnchanged(lockFile, content).catch(() => undefined);
    }
  }

  async #walk(folder: string, delimiter: boolean, result: ListResult): Promise<void> {
    let entries;
    try {
      entries = await fs.readdir(path.join(this.#root, ...splitFolder(folder)), { withFileTypes: true });
    } catch (err) {
      // A missing folder lists as empty, as a missing S3 prefix does.
      if (errorCode(err) === 'ENOENT' || errorCode(err) === 'ENOTDIR') return;
      throw err;
    }

    for (const entry of entries) {
      const key = folder === '' ? entry.name : `${folder}/${entry.name}`;

      if (entry.isDirectory()) {
        if (!delimiter) await this.#walk(key, false, result);
        else if (await this.#containsObject(key)) result.prefixes.push(`${key}/`);
      } else if (entry.isFile() && !entry.name.endsWith(TEMP_SUFFIX)) {
        const info = await this.#statObject(key);
        if (info) result.objects.push(info);
      }
    }
  }

  /**
   * Reports whether a folder contains an object at any depth. A folder with
   * only temporary files is no prefix yet, as S3 shows a prefix only once an
   * object under it is complete.
   */
  async #containsObject(folder: string): Promise<boolean> {
    let entries;
    try {
      entries = await fs.readdir(path.join(this.#root, ...splitFolder(folder)), { withFileTypes: true });
    } catch (err) {
      if (errorCode(err) === 'ENOENT') return false;
      throw err;
    }

    for (const entry of entries) {
      if (entry.isFile() && !entry.name.endsWith(TEMP_SUFFIX)) return true;
    }
    for (const entry of entries) {
      if (entry.isDirectory() && (await this.#containsObject(`${folder}/${entry.name}`))) return true;
    }
    return false;
  }

  async #statObject(key: string): Promise<ObjectInfo | undefined> {
    try {
      const stat = await fs.stat(path.join(this.#root, ...key.split('/')));
      return { key, size: stat.size, lastModified: stat.mtime };
    } catch (err) {
      // A delete running at the same time may remove the file after readdir saw it.
      if (errorCode(err) === 'ENOENT') return undefined;
      throw err;
    }
  }

  async #removeEmptyFolders(folder: string): Promise<void> {
    const rootWithSep = this.#root.endsWith(path.sep) ? this.#root : this.#root + path.sep;
    let current = folder;
    while (current.startsWith(rootWithSep) && current.length > rootWithSep.length) {
      try {
        await fs.rmdir(current);
      } catch (err) {
        const code = errorCode(err);
        // ENOENT: another delete removed it first. ENOTEMPTY/EEXIST: still in use.
        // ENOTDIR: the deleted key ran through a file, so there is no folder here.
        if (code === 'ENOENT' || code === 'ENOTEMPTY' || code === 'EEXIST' || code === 'ENOTDIR') return;
        throw new Error(`delete: failed to remove empty folder ${current}: ${describe(err)}`, { cause: err });
      }
      current = path.dirname(current);
    }
  }

  #wrap(operation: string, key: string, err: unknown): Error {
    if (err instanceof WalshipError) return err;
    const missing = MISSING_CODES.has(errorCode(err) ?? '');
    if (missing && (operation === 'get' || operation === 'getStream')) {
      return new WalshipError('NOT_FOUND', `${operation} ${key}: object not found in ${this.#root}`, { cause: err });
    }
    return new Error(`${operation} ${key} in ${this.#root} failed: ${describe(err)}`, { cause: err });
  }
}

/**
 * Rejects keys that could name a file outside the root or a different file
 * than the key reads: a leading `/`, empty, `.` or `..` segments, NUL bytes.
 */
function validateKey(key: string, operation: string, root: string): void {
  const segments = key.split('/');
  const bad = key === '' || key.includes('\0') || segments.some((s) => s === '' || s === '.' || s === '..');
  if (bad) {
    throw new WalshipError(
      'INVALID_INPUT',
      `${operation} ${JSON.stringify(key)} in ${root}: invalid key. ` +
        `Use '/'-separated names without empty, '.' or '..' segments and no leading '/'`,
    );
  }
}

async function writeBody(handle: fs.FileHandle, body: Buffer | Readable): Promise<void> {
  if (Buffer.isBuffer(body)) {
    await handle.writeFile(body);
    return;
  }
  // A loop in place of pipeline(), because a FileHandle write stream that
  // leaves the handle open never emits the 'close' that pipeline() waits for.
  for await (const chunk of body) {
    // FileHandle.writeFile writes all of the chunk from the current position.
    await handle.writeFile(chunk as Buffer | string);
  }
}

/** Returns the entity tag of a single-part S3 object with these bytes: its quoted MD5. */
function etagOf(body: Buffer): string {
  return `"${createHash('md5').update(body).digest('hex')}"`;
}

/** Rejects with PRECONDITION_FAILED when an object with entity tag `current` (undefined: missing) fails `condition`. */
function checkCondition(condition: WriteCondition, current: string | undefined, operation: string): void {
  if ('ifNoneMatch' in condition) {
    if (current === undefined) return;
    throw new WalshipError('PRECONDITION_FAILED', `${operation}: precondition failed, the object already exists`);
  }
  if (current === condition.ifMatch) return;
  const found = current === undefined ? 'the object does not exist' : `its entity tag is ${current}`;
  throw new WalshipError('PRECONDITION_FAILED', `${operation}: precondition failed, expected entity tag ${condition.ifMatch} but ${found}`);
}

/** Returns a file's content when its modification time is older than `age` milliseconds, else undefined. */
async function readIfOlder(file: string, age: number): Promise<string | undefined> {
  try {
    const stat = await fs.stat(file);
    if (Date.now() - stat.mtimeMs <= age) return undefined;
    return await fs.readFile(file, 'utf8');
  } catch {
    return undefined;
  }
}

/** Makes a rename durable: fsync of a file does not persist its directory entry, fsync of the directory does. */
async function syncDirectory(dir: string): Promise<void> {
  const handle = await fs.open(dir, 'r');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

function splitFolder(folder: string): string[] {
  return folder === '' ? [] : folder.split('/');
}

/** Orders keys by UTF-16 code units, as `Array.prototype.sort` would without a comparator. */
function compareKeys(a: string, b: string): number {
  if (a < b) return -1;
  return a > b ? 1 : 0;
}

function errorCode(err: unknown): string | undefined {
  return (err as NodeJS.ErrnoException | undefined)?.code;
}

function describe(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

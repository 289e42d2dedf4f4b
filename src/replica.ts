import { EventEmitter } from 'node:events';

import type { ReplicaConfig } from './config.js';
import type { DB } from './db.js';
import { WalshipError, describeError, hasCode } from './errors.js';
import { segmentKey, snapshotKey } from './keys.js';
import type { Logger } from './logger.js';
import { decodeFrame } from './lz4.js';
import { Mutex } from './mutex.js';
import type { ShipPool } from './pool.js';
import { ZERO_POS, comparePos, formatPos } from './pos.js';
import type { Pos } from './pos.js';
import type { ReplicaClient } from './replica/client.js';
import { createReplicaClient } from './replica/create.js';
import { generationBounds, listGenerations, listSegments, listSnapshots } from './replica/listing.js';

/** Largest WAL segment walship uploads; a longer run of frames becomes several segments. */
export const MAX_SEGMENT_BYTES = 16 * 1024 * 1024;

// Backoff after a failed sync: doubles from 1 s up to 30 s.
const MIN_BACKOFF_MS = 1000;
const MAX_BACKOFF_MS = 30_000;

/** Events a Replica emits. */
export interface ReplicaEvents {
  /** A WAL segment is stored; `pos` is the new end of what the replica holds. */
  shipped: [pre: Pos, pos: Pos, bytes: number];
  snapshot: [generation: string, index: number, bytes: number];
  error: [err: Error];
}

/**
 * Ships one database's shadow WAL to one replica location: a snapshot when the
 * replica has none for the current generation, then WAL segments in order.
 *
 * The position only moves past an object once the store has confirmed it.
 * After any failure it is derived again from the replica's own listing, so a
 * crash or an error never leaves a gap that restore would read past.
 */
export class Replica extends EventEmitter<ReplicaEvents> {
  readonly name: string;
  readonly config: ReplicaConfig;
  readonly db: DB;
  readonly client: ReplicaClient;
  readonly log: Logger;

  #pool: ShipPool;
  #txLog: Logger;
  #pos: Pos = ZERO_POS;
  #mutex = new Mutex();
  #timer: NodeJS.Timeout | undefined;
  #dirty = false;
  #lastSync = 0;
  #failures = 0;
  #stopped = true;
  #onChange = () => this.#wake();

  constructor(db: DB, config: ReplicaConfig, pool: ShipPool, logger: Logger) {
    super();
    this.db = db;
    this.config = config;
    this.name = config.name;
    this.#pool = pool;
    this.client = createReplicaClient(config.client);
    this.log = logger.child({ db: db.name, replica: config.name });
    // The shipped-transaction line starts with db=, pre=, post= and elapsed=,
    // the fields operators grep for, so its replica field comes after them.
    this.#txLog = logger.child({ db: db.name });
  }

  /** End of what this replica has stored; the zero position until known. */
  pos(): Pos {
    return this.#pos;
  }

  /** Starts shipping on every captured change, at most once per sync interval. */
  start(): void {
    this.#stopped = false;
    this.db.on('change', this.#onChange);
    this.db.on('generation', this.#onChange);
    this.#wake();
  }

  /** Stops the schedule and ships what is captured one last time. */
  async stop(): Promise<void> {
    this.#stopped = true;
    this.db.off('change', this.#onChange);
    this.db.off('generation', this.#onChange);
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = undefined;
    await this.sync();
    await this.client.close();
  }

  /** Ships everything captured so far. Throws the first error. */
  sync(): Promise<void> {
    return this.#mutex.run(async () => {
      this.#lastSync = Date.now();
      this.#dirty = false;
      try {
        await this.#ship();
        this.#failures = 0;
      } catch (err) {
        // Forget the position: the next attempt reads it from the replica again.
        this.#pos = ZERO_POS;
        this.#failures++;
        throw err;
      }
    });
  }

  // Marks new data and runs a sync now, or when the sync interval allows.
  #wake(): void {
    this.#dirty = true;
    if (this.#stopped || this.#timer || this.#mutex.held) return;

    const backoff = this.#failures === 0 ? 0 : Math.min(MAX_BACKOFF_MS, MIN_BACKOFF_MS * 2 ** (this.#failures - 1));
    const wait = Math.max(0, this.#lastSync + Math.max(this.config.syncInterval, backoff) - Date.now());
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      this.sync()
        .catch((err: Error) => {
          this.log.error({ err: describeError(err), pos: formatPos(this.#pos), attempt: this.#failures }, 'replica sync failed, retrying');
          // An 'error' event nobody listens to would end the process, and a
          // failed sync is retried anyway.
          if (this.listenerCount('error') > 0) this.emit('error', err);
          this.#dirty = true;
        })
        .finally(() => {
          if (this.#dirty || this.#failures > 0) this.#wake();
        });
    }, wait);
  }

  async #ship(): Promise<void> {
    for (;;) {
      const dbPos = this.db.pos();
      if (!dbPos.generation) return;
      if (this.#pos.generation !== dbPos.generation) await this.#establish(dbPos.generation);
      if (this.#pos.generation !== this.db.pos().generation) continue;
      if (comparePos(this.#pos, this.db.pos()) >= 0) return;

      let data: Buffer;
      try {
        data = await this.db.readShadow(this.#pos, MAX_SEGMENT_BYTES);
      } catch (err) {
        if (!hasCode(err, 'WAL_TRUNCATED')) throw err;
        // The generation moved on, or the shadow for this index is gone:
        // start again from what the database has now.
        this.log.warn({ pos: formatPos(this.#pos), err: describeError(err) }, 'shadow wal unavailable, re-reading replica position');
        this.#pos = ZERO_POS;
        continue;
      }

      if (data.length === 0) {
        if (!this.db.isIndexFinished(this.#pos)) return;
        this.#pos = { generation: this.#pos.generation, index: this.#pos.index + 1, offset: 0 };
        continue;
      }
      await this.#putSegment(data);
    }
  }

  async #putSegment(data: Buffer): Promise<void> {
    const pre = this.#pos;
    const key = segmentKey('', pre.generation, pre.index, pre.offset);
    const started = Date.now();
    const bytes = data.length;

    await this.#pool.putSegment({ client: this.config.client, key, data });

    this.#pos = { generation: pre.generation, index: pre.index, offset: pre.offset + bytes };
    this.#txLog.info(
      { pre: formatPos(pre), post: formatPos(this.#pos), elapsed: `${Date.now() - started}ms`, replica: this.name, bytes, key },
      'new transaction:',
    );
    this.emit('shipped', pre, this.#pos, bytes);
  }

  // Finds the position of this replica in `generation`: after the newest stored
  // segment, or at the start of the newest snapshot's index. Takes a snapshot
  // when the generation has none on this replica.
  async #establish(generation: string): Promise<void> {
    const snapshots = await listSnapshots(this.client, generation);
    if (snapshots.length === 0) {
      await this.#startGeneration(generation);
      return;
    }

    const newestSnapshot = snapshots[snapshots.length - 1]!.index;
    const segments = await listSegments(this.client, generation);
    let pos: Pos = { generation, index: newestSnapshot, offset: 0 };
    const last = segments[segments.length - 1];
    if (last && last.index >= newestSnapshot) {
      const body = await decodeFrame(await this.client.get(last.key)).catch((err: unknown) => {
        throw new WalshipError('CORRUPT_REPLICA', `replica ${this.name} of database ${this.db.name}: cannot read ${last.key}: ${describeError(err)}`, { cause: err });
      });
      pos = { generation, index: last.index, offset: last.offset + body.length };
    }

    // A replica ahead of the local shadow WAL was written by someone else, or
    // the meta directory was restored from an old copy: never splice onto it.
    if (comparePos(pos, this.db.pos()) > 0) {
      throw new WalshipError(
        'WAL_TRUNCATED',
        `replica ${this.name} of database ${this.db.name} is at ${formatPos(pos)}, ahead of the local position ${formatPos(this.db.pos())}: another process may be writing to ${this.client.location}`,
      );
    }
    this.#pos = pos;
    this.log.info({ generation, pos: formatPos(pos) }, 'replica position restored');
  }

  // Restores pick the generation with the newest object time, and S3 keeps
  // that time in whole seconds. A new generation's first object must land in
  // a later second than every object of the others, or Litestream and walship
  // could restore an older generation.
  // The local clock only estimates the store's, so after the upload the
  // snapshot's stored time is checked, and the snapshot is written again a
  // second later while it does not stand after the other generations.
  async #startGeneration(generation: string): Promise<void> {
    const newest = await this.#newestOtherObject(generation);
    // A store with sub-second times (file mtimes) needs no wait.
    const wholeSeconds = newest % 1000 === 0;
    const wait = wholeSeconds ? newest + 1000 - Date.now() : 0;
    if (wait > 0) {
      this.log.info({ generation, wait: `${wait}ms` }, 'waiting for the next second before the first snapshot of a new generation');
      await sleep(wait);
    }

    for (let attempt = 0; ; attempt++) {
      await this.#snapshot();
      const stored = (await listSnapshots(this.client, this.#pos.generation)).at(-1)?.createdAt.getTime() ?? Infinity;
      const later = wholeSeconds ? Math.floor(stored / 1000) > Math.floor(newest / 1000) : stored > newest;
      if (later || attempt >= 3) return;
      this.log.warn({ generation, stored: new Date(stored).toISOString(), newest: new Date(newest).toISOString() }, 'snapshot stored in the same second as an older generation, writing it again');
      await sleep(1000);
    }
  }

  // Returns the newest object time of every generation but `generation`, in ms.
  async #newestOtherObject(generation: string): Promise<number> {
    let newest = 0;
    for (const other of await listGenerations(this.client)) {
      if (other === generation) continue;
      const bounds = await generationBounds(this.client, other).catch(() => undefined);
      if (bounds) newest = Math.max(newest, bounds.updatedAt.getTime());
    }
    return newest;
  }

  // Uploads a snapshot of the database at the current index; the WAL of that
  // index is then shipped from offset 0.
  async #snapshot(): Promise<void> {
    await this.db.withSnapshot(async (source) => {
      const key = snapshotKey('', source.generation, source.index);
      const started = Date.now();
      const stats = await this.#pool.putSnapshot({ client: this.config.client, key, fd: source.fd, size: source.size });
      this.#pos = { generation: source.generation, index: source.index, offset: 0 };
      this.log.info(
        { generation: source.generation, index: source.index, key, bytes: stats.rawBytes, stored: stats.storedBytes, elapsed: `${Date.now() - started}ms` },
        'snapshot written',
      );
      this.emit('snapshot', source.generation, source.index, stats.rawBytes);
    });
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

import { randomBytes } from 'node:crypto';
import { EventEmitter } from 'node:events';
import os from 'node:os';

import { describeError, hasCode, WalshipError } from './errors.js';
import { isRunning } from './lock-file.js';
import { leaseKey } from './keys.js';
import { silentLogger, type Logger } from './logger.js';
import type { ReplicaClient, VersionedObject, WriteCondition } from './replica/client.js';

/**
 * A lease on one replica prefix: the object `<prefix>/walship/lease.json`
 * names the one process that may write there, and until when.
 *
 * `acquire()` creates it with `If-None-Match: *`, or replaces an expired one
 * with `If-Match` on its ETag. An unexpired lease of another owner makes it
 * reject with LEASE_HELD. A timer renews the lease with `If-Match` every
 * `renewInterval`. When a renewal finds the lease replaced or deleted, or the
 * lease expires before a renewal succeeds, the lease emits `'lost'` with a
 * LEASE_LOST error, and the caller must stop writing to the prefix.
 *
 * Expiry times are absolute, from the writer's clock, so the TTL must exceed
 * the clock difference between hosts.
 *
 * NOTE: some stores ignore If-None-Match and If-Match and overwrite anyway.
 * After the first write, acquire() probes for this with two writes that must
 * fail. Where the store ignores the headers, the lease logs one warning and
 * falls back to reading the lease before each write and again after it. That
 * still stops a second process from starting while the lease is live, and a
 * running process notices within one renewal interval that another owner
 * replaced its lease. It no longer stops two processes that start within the
 * same second, or a replacement that lands between a renewal's read and its write.
 */

/** Default time a lease stays valid without renewal, in milliseconds. */
export const DEFAULT_LEASE_TTL = 30_000;

/** Owner id of every lease of this process, unless the options name another. */
const PROCESS_OWNER_ID = randomBytes(8).toString('hex');

/** Attempts of acquire() when other processes change the lease between its read and its write. */
const MAX_ACQUIRE_ATTEMPTS = 5;

/** An ETag no object has. A store that honours If-Match rejects a write that names it. */
const PROBE_ETAG = '"00000000000000000000000000000000"';

/** Content of the lease object. Times are ISO 8601 in UTC. */
export interface LeaseRecord {
  /** Random id of the holding process. */
  owner: string;
  host: string;
  pid: number;
  /** Path of the database whose replica this is. */
  database: string;
  acquiredAt: string;
  renewedAt: string;
  expiresAt: string;
}

/** Options of a Lease. */
export interface LeaseOptions {
  /** Client of the replica whose prefix the lease guards. The lease object is at `walship/lease.json` under it. */
  client: ReplicaClient;
  /** Path of the database, recorded in the lease for the operator of another process that finds it. */
  database: string;
  /** Logger, a child with the database's `db` field. Defaults to a silent one. */
  logger?: Logger;
  /** Time the lease stays valid without renewal, in milliseconds. Defaults to 30 s. */
  ttl?: number;
  /** Interval between renewals, in milliseconds. Defaults to a third of `ttl`, so two renewals may fail before expiry. */
  renewInterval?: number;
  /** Delay before a failed renewal is tried again, in milliseconds. Defaults to a tenth of `ttl`, at most 1 s. */
  retryDelay?: number;
  /** Delay between a write and its read-back where the store ignores conditional writes, in milliseconds. Defaults to 1 s. */
  verifyDelay?: number;
  /** Owner id. Defaults to one random id per process, so a restarted instance in this process takes its lease back. */
  owner?: string;
}

/** State of a lease: not acquired yet, held and renewed, lost to another owner or expiry, or released. */
export type LeaseState = 'idle' | 'held' | 'lost' | 'released';

/**
 * A lease on one replica prefix. Emits `'lost'` with a LEASE_LOST error
 * when it is lost, and `'renewed'` with the new record after each renewal.
 */
export class Lease extends EventEmitter {
  readonly key = leaseKey('');
  readonly owner: string;
  readonly ttl: number;
  readonly #client: ReplicaClient;
  readonly #database: string;
  readonly #log: Logger;
  readonly #renewInterval: number;
  readonly #retryDelay: number;
  readonly #verifyDelay: number;
  #state: LeaseState = 'idle';
  #record: LeaseRecord | undefined;
  #etag = '';
  /** Whether the store honours If-None-Match and If-Match; undefined until the first acquire probes it. */
  #conditional: boolean | undefined;
  #renewTimer: NodeJS.Timeout | undefined;
  #expiryTimer: NodeJS.Timeout | undefined;
  #renewing: Promise<void> | undefined;

  constructor(options: LeaseOptions) {
    super();
    this.#client = options.client;
    this.#database = options.database;
    this.#log = (options.logger ?? silentLogger()).child({ key: this.key, replica: options.client.location });
    this.owner = options.owner ?? PROCESS_OWNER_ID;
    this.ttl = options.ttl ?? DEFAULT_LEASE_TTL;
    this.#renewInterval = options.renewInterval ?? Math.floor(this.ttl / 3);
    this.#retryDelay = options.retryDelay ?? Math.min(1000, Math.floor(this.ttl / 10));
    this.#verifyDelay = options.verifyDelay ?? 1000;

    if (!(this.ttl > 0) || !(this.#renewInterval > 0) || this.#renewInterval >= this.ttl) {
      throw new WalshipError(
        'INVALID_INPUT',
        `lease of ${this.#client.location}: ttl ${this.ttl} ms and renew interval ${this.#renewInterval} ms are invalid. ` +
          `Both must be positive, and the renew interval shorter than the ttl`,
      );
    }
  }

  /** State of the lease. */
  get state(): LeaseState {
    return this.#state;
  }

  /** Record last written by this lease, or undefined before acquire(). */
  get record(): LeaseRecord | undefined {
    return this.#record;
  }

  /** Whether the store honours conditional writes; undefined until acquire() has probed it. */
  get conditionalWrites(): boolean | undefined {
    return this.#conditional;
  }

  /**
   * Takes the lease and starts renewing it. Rejects with LEASE_HELD when another
   * owner holds an unexpired lease. An expired lease, or one of this owner,
   * is taken over. Calling it while held does nothing.
   */
  async acquire(): Promise<LeaseRecord> {
    if (this.#state === 'held' && this.#record !== undefined) return this.#record;

    for (let attempt = 1; attempt <= MAX_ACQUIRE_ATTEMPTS; attempt++) {
      // Read the current lease, and decide whether this owner may take it.
      const current = await this.#client.getVersioned(this.key);
      const found = current === undefined ? undefined : this.#checkTakeover(current);
      const record = this.#newRecord();

      // Write the lease under the condition that no other process changed it since the read.
      const condition: WriteCondition = current === undefined ? { ifNoneMatch: '*' } : { ifMatch: current.etag };
      try {
        this.#etag = await this.#write(record, condition);
      } catch (err) {
        if (hasCode(err, 'PRECONDITION_FAILED')) continue;
        throw err;
      }

      // Learn whether the store enforced that condition, and check the result where it does not.
      if (this.#conditional === undefined) await this.#probeConditionalWrites(record);
      if (this.#conditional === false) await this.#verifyOwner('acquire');

      this.#record = record;
      this.#state = 'held';
      this.#scheduleRenewal(this.#renewInterval);
      this.#armExpiry();
      this.#log.info(
        { expiresAt: record.expiresAt, previousOwner: found?.owner, previousHost: found?.host },
        'lease acquired',
      );
      return record;
    }
    throw new Error(
      `lease ${this.#client.location}/${this.key}: could not acquire it in ${MAX_ACQUIRE_ATTEMPTS} attempts, ` +
        `because other processes kept changing it. Check which hosts run walship on this replica`,
    );
  }

  /** Renews the lease now. It rejects nothing: a failure is logged, retried or turned into `'lost'`. */
  async renew(): Promise<void> {
    if (this.#renewing !== undefined) return this.#renewing;
    this.#renewing = this.#renewOnce().finally(() => (this.#renewing = undefined));
    return this.#renewing;
  }

  /**
   * Stops renewing and deletes the lease object while it is still this owner's.
   * It never rejects: a failed delete is logged, and the lease then expires at
   * its `expiresAt`.
   */
  async release(): Promise<void> {
    const wasHeld = this.#state === 'held';
    this.#stopTimers();
    await this.#renewing?.catch(() => undefined);
    if (this.#state !== 'lost') this.#state = 'released';
    if (!wasHeld || this.#record === undefined) return;

    try {
      if (this.#conditional === true) {
        await this.#client.deleteConditional(this.key, this.#etag);
      } else {
        const current = await this.#client.getVersioned(this.key);
        if (current !== undefined && parseRecord(current.body)?.owner === this.owner) await this.#client.delete([this.key]);
      }
      this.#log.info('lease released');
    } catch (err) {
      const changed = hasCode(err, 'PRECONDITION_FAILED');
      this.#log.warn(
        { err: describeError(err), expiresAt: this.#record.expiresAt },
        changed ? 'lease changed since the last renewal, so it was left in place' : 'lease release failed; it expires on its own',
      );
    }
  }

  /** Returns the current record when this owner may take it over, else throws LEASE_HELD. */
  #checkTakeover(current: VersionedObject): LeaseRecord | undefined {
    const found = parseRecord(current.body);
    if (found === undefined) {
      this.#log.warn('lease object is not a walship lease record; replacing it');
      return undefined;
    }
    if (found.owner === this.owner) return found;

    // A walship of this host that was killed cannot renew, and the restarted
    // one should not wait for the lease to expire.
    if (found.host === os.hostname() && !isRunning(found.pid)) {
      this.#log.warn({ pid: found.pid, host: found.host }, 'lease of a walship process that no longer runs on this host, taking it over');
      return found;
    }

    const expires = Date.parse(found.expiresAt);
    if (expires > Date.now()) {
      throw new WalshipError(
        'LEASE_HELD',
        `replica ${this.#client.location} of database ${this.#database} is leased by walship process ${found.pid} ` +
          `on host ${found.host} (database ${found.database}) until ${found.expiresAt}. ` +
          `Stop that process, or give this database another replica path. ` +
          `A lease that is not renewed expires ${Math.round(this.ttl / 1000)} s after its last renewal`,
      );
    }
    this.#log.warn(
      { previousOwner: found.owner, previousHost: found.host, previousPid: found.pid, expiredAt: found.expiresAt },
      'taking over expired lease',
    );
    return found;
  }

  /** Writes a record with `condition`, or unconditionally where the store ignores conditions. Returns the new ETag. */
  async #write(record: LeaseRecord, condition: WriteCondition): Promise<string> {
    const body = Buffer.from(JSON.stringify(record, null, 2) + '\n');
    if (this.#conditional === false) {
      await this.#client.put(this.key, body);
      return '';
    }
    try {
      return (await this.#client.putConditional(this.key, body, condition)).etag;
    } catch (err) {
      if (!hasCode(err, 'CONDITIONAL_WRITES_UNSUPPORTED')) throw err;
      this.#fallBack(describeError(err));
      await this.#client.put(this.key, body);
      return '';
    }
  }

  /**
   * Sends two writes that a store honouring conditional writes must reject:
   * `If-None-Match: *` and `If-Match` with an ETag no object has. Both rewrite
   * this owner's own record, so a store that ignores them changes nothing.
   */
  async #probeConditionalWrites(record: LeaseRecord): Promise<void> {
    const body = Buffer.from(JSON.stringify(record, null, 2) + '\n');
    const probes: WriteCondition[] = [{ ifNoneMatch: '*' }, { ifMatch: PROBE_ETAG }];
    for (const condition of probes) {
      try {
        await this.#client.putConditional(this.key, body, condition);
      } catch (err) {
        if (hasCode(err, 'PRECONDITION_FAILED')) continue;
        if (!hasCode(err, 'CONDITIONAL_WRITES_UNSUPPORTED')) throw err;
      }
      const header = 'ifNoneMatch' in condition ? 'If-None-Match' : 'If-Match';
      this.#fallBack(`the store accepted a PUT whose ${header} condition did not hold`);
      return;
    }
    this.#conditional = true;
  }

  /** Switches to unconditional writes with read-back checks, and logs a warning the first time. */
  #fallBack(reason: string): void {
    if (this.#conditional === false) return;
    this.#conditional = false;
    this.#log.warn(
      { reason },
      'conditional writes unsupported by the store; the lease falls back to checking each write by reading it back, ' +
        'which does not stop two processes that start at the same moment',
    );
  }

  /** Reads the lease back after a pause and rejects with LEASE_HELD, or returns false on renewal, when another owner wrote it. */
  async #verifyOwner(step: 'acquire' | 'renew'): Promise<boolean> {
    await new Promise((resolve) => setTimeout(resolve, this.#verifyDelay));
    const current = await this.#client.getVersioned(this.key);
    const found = current === undefined ? undefined : parseRecord(current.body);
    if (found?.owner === this.owner) return true;
    if (step === 'renew') return false;

    throw new WalshipError(
      'LEASE_HELD',
      `replica ${this.#client.location} of database ${this.#database}: another process ` +
        (found === undefined ? 'deleted the lease' : `(walship process ${found.pid} on host ${found.host})`) +
        ` wrote the lease at the same time as this one. Stop the other process, or give this database another replica path`,
    );
  }

  async #renewOnce(): Promise<void> {
    if (this.#state !== 'held' || this.#record === undefined) return;
    const record = { ...this.#newRecord(), acquiredAt: this.#record.acquiredAt };

    try {
      if (this.#conditional === false) {
        await this.#renewUnconditionally(record);
      } else {
        this.#etag = await this.#write(record, { ifMatch: this.#etag });
      }
    } catch (err) {
      if (this.#state !== 'held') return;
      if (hasCode(err, 'PRECONDITION_FAILED') || hasCode(err, 'LEASE_LOST')) {
        await this.#lose(await this.#describeTakeover());
        return;
      }
      this.#log.warn({ err: describeError(err), expiresAt: this.#record.expiresAt }, 'lease renewal failed; retrying');
      this.#scheduleRenewal(this.#retryDelay);
      return;
    }

    // release() or a lost lease may have come while the write was in flight.
    if (this.#state !== 'held') return;
    this.#record = record;
    this.#armExpiry();
    this.#scheduleRenewal(this.#renewInterval);
    this.#log.debug({ expiresAt: record.expiresAt }, 'lease renewed');
    this.emit('renewed', record);
  }

  /** Renews where the store ignores conditions: read, check the owner, write, read back. */
  async #renewUnconditionally(record: LeaseRecord): Promise<void> {
    const current = await this.#client.getVersioned(this.key);
    if (current === undefined || parseRecord(current.body)?.owner !== this.owner) {
      throw new WalshipError('LEASE_LOST', 'lease changed');
    }
    await this.#write(record, { ifMatch: current.etag });
    if (!(await this.#verifyOwner('renew'))) throw new WalshipError('LEASE_LOST', 'lease changed');
  }

  /** Names who holds the lease now, for the message of a lost lease. */
  async #describeTakeover(): Promise<string> {
    const current = await this.#client.getVersioned(this.key).catch(() => undefined);
    if (current === undefined) return 'the lease object was deleted by another process';
    const found = parseRecord(current.body);
    if (found === undefined) return 'the lease object was replaced with something that is not a walship lease';
    return `walship process ${found.pid} on host ${found.host} took over the lease until ${found.expiresAt}`;
  }

  /** Marks the lease lost, stops its timers, logs it loudly and emits `'lost'`. */
  async #lose(reason: string): Promise<void> {
    if (this.#state !== 'held') return;
    this.#state = 'lost';
    this.#stopTimers();
    const err = new WalshipError(
      'LEASE_LOST',
      `replica ${this.#client.location} of database ${this.#database}: lease lost, ${reason}. ` +
        `Replication to this replica stops, because another process may be writing to it. ` +
        `Make sure only one walship replicates this database, then restart it`,
    );
    this.#log.error({ err: err.message }, 'lease lost, replication to this replica stops');
    this.emit('lost', err);
  }

  #newRecord(): LeaseRecord {
    const now = Date.now();
    return {
      owner: this.owner,
      host: os.hostname(),
      pid: process.pid,
      database: this.#database,
      acquiredAt: new Date(now).toISOString(),
      renewedAt: new Date(now).toISOString(),
      expiresAt: new Date(now + this.ttl).toISOString(),
    };
  }

  #scheduleRenewal(delay: number): void {
    clearTimeout(this.#renewTimer);
    // Up to 10% of jitter, so that the leases of many databases started
    // together do not renew in the same moment.
    this.#renewTimer = setTimeout(() => void this.renew(), delay * (0.9 + Math.random() * 0.1));
    // Renewal must not keep the process alive on its own.
    this.#renewTimer.unref();
  }

  /** Starts the timer that declares the lease lost when it expires before the next successful renewal, even while a request hangs. */
  #armExpiry(): void {
    clearTimeout(this.#expiryTimer);
    const expiresAt = this.#record?.expiresAt ?? '';
    this.#expiryTimer = setTimeout(() => void this.#expired(expiresAt), Math.max(0, Date.parse(expiresAt) - Date.now()));
    this.#expiryTimer.unref();
  }

  // Called when the lease expired before a renewal succeeded. A busy event
  // loop or a slow store can delay renewals past expiry without any other
  // writer around. Where the store enforces If-Match, a renewal that still
  // matches this owner's last write proves that no other process took the lease meanwhile.
  async #expired(expiresAt: string): Promise<void> {
    if (this.#state !== 'held') return;
    if (this.#conditional === true) {
      // A renewal that hangs still loses the lease, after a short wait.
      let timer: NodeJS.Timeout | undefined;
      const timeout = new Promise<void>((resolve) => (timer = setTimeout(resolve, Math.max(1000, this.#retryDelay))));
      await Promise.race([this.renew(), timeout]);
      clearTimeout(timer);
      const renewed = this.#record !== undefined && this.#record.expiresAt !== expiresAt;
      if (this.#state === 'held' && renewed) {
        this.#log.warn({ expiredAt: expiresAt, expiresAt: this.#record!.expiresAt }, 'lease renewed after it had expired; no other process had taken it');
        return;
      }
    }
    await this.#lose(`it expired at ${expiresAt} before a renewal succeeded`);
  }

  #stopTimers(): void {
    clearTimeout(this.#renewTimer);
    clearTimeout(this.#expiryTimer);
    this.#renewTimer = undefined;
    this.#expiryTimer = undefined;
  }
}

/** Parses a lease object, or returns undefined when it is not a lease record. */
function parseRecord(body: Buffer): LeaseRecord | undefined {
  try {
    const value = JSON.parse(body.toString('utf8')) as Partial<LeaseRecord>;
    if (typeof value.owner !== 'string' || typeof value.expiresAt !== 'string') return undefined;
    return value as LeaseRecord;
  } catch {
    return undefined;
  }
}

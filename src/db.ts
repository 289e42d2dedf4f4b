import { EventEmitter } from 'node:events';
import crypto from 'node:crypto';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';

import type { DatabaseConfig } from './config.js';
import { WalshipError, hasSqliteCode } from './errors.js';
import { isGeneration, MAX_INDEX } from './keys.js';
import type { Logger } from './logger.js';
import { Mutex } from './mutex.js';
import { comparePos, formatPos, ZERO_POS } from './pos.js';
import type { Pos } from './pos.js';
import { onFileEvent } from './file-events.js';
import { ShadowWal, fsyncPath, localStateError, readRange } from './shadow-wal.js';
import { copyFrames, readWalState, verifyWal } from './wal-capture.js';
import type { Verdict, WalState } from './wal-capture.js';
import { WAL_HEADER_SIZE, frameSize } from './wal.js';
import { openConnections, checkSqliteVersion } from './sqlite.js';
import type { Connections, CheckpointMode, CheckpointResult } from './sqlite.js';

/**
 * Poll interval while file events watch the WAL. Events wake a sync at once,
 * so the poll only covers lost events, and an idle database costs one cheap
 * stat per second.
 */
const WATCHED_POLL_MS = 1000;

/** Maximum wait of a RESTART checkpoint for the write lock, in ms. It does not wait for readers (see #checkpointBlockingWriters). */
const RESTART_BUSY_TIMEOUT_MS = 100;

/** Source of a snapshot: the database file, read through walship's long-lived descriptor. */
export interface SnapshotSource {
  generation: string;
  index: number;
  /** Descriptor of the database file, shared with worker threads; never close it. */
  fd: number;
  /** Database file size when the snapshot started. */
  size: number;
  /**
   * Length of the shadow WAL of `index` when the snapshot started. SQLite can
   * checkpoint frames up to walship's read transaction into the database file
   * while the snapshot reads it, and every such frame lies before this offset,
   * so a restore must apply the index at least this far.
   */
  walOffset: number;
}

/**
 * Events a DB emits: `change` after new frames were captured, `generation` on
 * a new generation, `sync` after every sync (with its error when it failed),
 * and `checkpoint` after every checkpoint walship ran.
 */
export interface DBEvents {
  change: [pos: Pos];
  generation: [generation: string, reason: string];
  sync: [elapsedMs: number, err: Error | undefined];
  checkpoint: [mode: CheckpointMode, elapsedMs: number, result: CheckpointResult | undefined];
}

// Capture times kept for lag measurement; older entries merge into the oldest kept.
const MAX_CAPTURE_TIMES = 1024;

/**
 * One replicated database: captures committed WAL frames into shadow WAL
 * files, owns checkpointing, and starts new generations when continuity with
 * what it copied cannot be proven.
 *
 * Modes: closed -> open (sync loop running) -> closed. Every change to the
 * shadow WAL happens inside `sync`, which runs one at a time. Checkpoints,
 * snapshots and generation changes also take the coordinator mutex, so they
 * never overlap.
 */
export class DB extends EventEmitter<DBEvents> {
  readonly config: DatabaseConfig;
  readonly name: string;
  #walPath: string;
  readonly log: Logger;

  #conn: Connections | undefined;
  #fd: number | undefined;
  #pageSize = 4096;
  #generation = '';
  #shadow: ShadowWal | undefined;
  // True while the shadow contains every frame of the current incarnation and
  // SQLite had checkpointed all of it under walship's watch; see verifyWal.
  #complete = false;
  #lastCheckpoint: number;
  #blockedWarnedAt = 0;
  #checkpointRetryAt = 0;
  // Mode of the checkpoint that could not finish and set #checkpointRetryAt.
  #checkpointRetryMode: CheckpointMode | undefined;
  #syncMutex = new Mutex();
  #syncQueued = false;
  #coordinator = new Mutex();
  #timer: NodeJS.Timeout | undefined;
  #retryTimer: NodeJS.Timeout | undefined;
  #unwatch: (() => void) | undefined;
  // Identity of the open database file, to notice a replaced file.
  #fileId = '';
  // WAL size, mtime and inode when a sync last found nothing to copy; an
  // unchanged WAL lets the next sync skip reading it.
  #idleFingerprint = '';
  #closed = true;
  #captureStopped = false;
  // Why the generation found at open could not continue, for the new generation's log line.
  #clearedReason: string | undefined;
  #lastError = '';
  #lastErrorAt = 0;
  // End positions of recent captures with the time each was captured, oldest first.
  #captures: { pos: Pos; at: number }[] = [];

  constructor(config: DatabaseConfig, logger: Logger) {
    super();
    this.config = config;
    this.name = config.name;
    this.#walPath = `${config.path}-wal`;
    this.log = logger.child({ db: config.name });
    // Starts at a random point of the interval, so that databases opened
    // together do not all checkpoint in the same moment.
    this.#lastCheckpoint = Date.now() - Math.random() * config.checkpointInterval;
  }

  /**
   * Path of the database's `-wal` file. SQLite names it after the database
   * file with symlinks resolved, so a database opened through a symlink has
   * its WAL beside the target, and so does this path once the database is open.
   */
  get walPath(): string {
    return this.#walPath;
  }

  /** Directory holding the shadow WAL files of one generation. */
  shadowDir(generation: string): string {
    return path.join(this.config.metaPath, 'generations', generation, 'wal');
  }

  /** Current position: the end of what has been captured into the shadow WAL. */
  pos(): Pos {
    if (!this.#generation || !this.#shadow) return ZERO_POS;
    return { generation: this.#generation, index: this.#shadow.index, offset: this.#shadow.size };
  }

  /**
   * Time in ms (epoch) at which walship captured the first frame past `pos`,
   * or undefined when nothing past `pos` has been captured. Replicas use it to
   * measure replication lag from capture to stored object.
   */
  capturedAt(pos: Pos): number | undefined {
    for (const entry of this.#captures) {
      if (entry.pos.generation !== pos.generation || comparePos(entry.pos, pos) > 0) return entry.at;
    }
    return undefined;
  }

  /** Page size of the database. */
  get pageSize(): number {
    return this.#pageSize;
  }

  /**
   * Opens the database for replication: checks it, switches it to WAL mode,
   * takes the long-running read transaction, loads or starts the generation,
   * and starts watching the WAL. Errors name the database path.
   */
  async open(): Promise<void> {
    await checkDatabaseFile(this.config.path);
    checkSqliteVersion();

    this.#walPath = `${fs.realpathSync(this.config.path)}-wal`;
    this.#conn = openConnections(this.config.path, this.config.busyTimeout);
    this.#pageSize = this.#conn.pageSize;
    // Litestream keeps one descriptor open for the process's life for the same
    // reason: closing any descriptor of the database file drops every POSIX lock
    // this process holds on it, including SQLite's. Snapshots read through it.
    this.#fd = fs.openSync(this.config.path, 'r');
    this.#fileId = fileId(fs.fstatSync(this.#fd));
    this.#closed = false;

    await makeMetaDir(this.config.metaPath);
    await removeTempFiles(this.config.metaPath);
    await this.#loadState();

    this.log.info({ path: this.config.path, meta: this.config.metaPath, pos: formatPos(this.pos()) || undefined }, 'database opened');
    await this.sync();
    this.#startMonitor();
  }

  /**
   * Stops watching the WAL and runs a last sync. The shadow WAL and the
   * database file stay readable, so replicas can ship what was captured and
   * take a snapshot if they still need one. `close` releases them. With
   * `sync: false` there is no last sync, for a database file that was deleted:
   * a capture then could only start a new generation of nothing.
   */
  async stopCapture(options: { sync?: boolean } = {}): Promise<void> {
    this.#stopMonitor();
    if (options.sync !== false) await this.sync();
    this.#captureStopped = true;
  }

  /**
   * Stops capture if that has not happened, and closes the connections. The
   * read-only connection closes last so that SQLite does not delete the WAL,
   * which keeps the generation alive for the next start.
   */
  async close(): Promise<void> {
    if (this.#closed) return;
    if (!this.#captureStopped) {
      try {
        await this.stopCapture();
      } catch (err) {
        this.log.error({ err }, 'final sync failed');
      }
    }
    await this.#syncMutex.run(async () => {
      this.#closed = true;
      this.#conn?.close();
      this.#conn = undefined;
      if (this.#fd !== undefined) fs.closeSync(this.#fd);
      this.#fd = undefined;
    });
    this.log.info({ pos: formatPos(this.pos()) }, 'database closed');
  }

  /**
   * Copies new committed frames into the shadow WAL, follows WAL restarts,
   * starts a new generation when needed, and checkpoints by the thresholds.
   * Emits `change` when the position moved.
   */
  sync(): Promise<void> {
    return this.#syncMutex.run(async () => {
      this.#syncQueued = false;
      if (this.#closed || this.#captureStopped) return;
      const started = performance.now();
      try {
        await this.#sync();
      } catch (err) {
        this.emit('sync', performance.now() - started, err as Error);
        throw err;
      }
      this.emit('sync', performance.now() - started, undefined);
    });
  }

  async #sync(): Promise<void> {
    const before = this.pos();

    // An idle database: the WAL has not changed since a sync found nothing new.
    const fingerprint = walFingerprint(this.#walPath, Date.now());
    if (fingerprint !== '' && fingerprint === this.#idleFingerprint && this.#shadow && !this.#fileReplaced()) {
      await this.#maybeCheckpoint();
      return;
    }

    if (this.#fileReplaced()) {
      await this.#coordinator.run(() => this.#reopen());
      await this.#coordinator.run(() => this.#createGeneration('database file replaced'));
    } else if (!this.#generation || !this.#shadow) {
      const reason = this.#clearedReason ?? 'no generation exists';
      this.#clearedReason = undefined;
      await this.#coordinator.run(() => this.#createGeneration(reason));
    } else if (this.#shadow.index >= MAX_INDEX) {
      await this.#coordinator.run(() => this.#createGeneration('max index exceeded'));
    }
    await this.#capture(false);
    await this.#maybeCheckpoint();

    const after = this.pos();
    if (after.generation !== before.generation || after.index !== before.index || after.offset !== before.offset) {
      this.#idleFingerprint = '';
      this.#recordCapture(after);
      this.emit('change', after);
    } else {
      this.#idleFingerprint = fingerprint;
    }
  }

  #recordCapture(pos: Pos): void {
    if (this.#captures.length > 0 && this.#captures[0]!.pos.generation !== pos.generation) this.#captures = [];
    this.#captures.push({ pos, at: Date.now() });
    // The two oldest entries merge into one with the older time, so lag is
    // over-reported rather than under-reported when a replica is far behind.
    if (this.#captures.length > MAX_CAPTURE_TIMES) {
      const [dropped] = this.#captures.splice(0, 1);
      this.#captures[0]!.at = dropped!.at;
    }
  }

  /**
   * Runs `fn` with the database file pinned for a snapshot. walship's read
   * transaction is held and its own checkpoints and generation changes wait.
   * So the file only changes by backfill of frames of the current index, which
   * a restore replays anyway.
   */
  withSnapshot<T>(fn: (source: SnapshotSource) => Promise<T>): Promise<T> {
    return this.#coordinator.run(async () => {
      const pos = this.pos();
      if (!pos.generation || this.#fd === undefined) {
        throw new WalshipError('NO_GENERATION', `database ${this.name}: no generation to snapshot`);
      }
      const size = fs.fstatSync(this.#fd).size;
      return fn({ generation: pos.generation, index: pos.index, fd: this.#fd, size, walOffset: pos.offset });
    });
  }

  /**
   * Reads up to `maxBytes` of shadow WAL from a position, cut at a frame
   * boundary. Returns an empty buffer when the position is at the end of its
   * index. Throws WAL_TRUNCATED when the generation is no longer current or
   * the shadow file is gone.
   */
  readShadow(pos: Pos, maxBytes: number): Buffer {
    if (pos.generation !== this.#generation || !this.#shadow) {
      throw new WalshipError('WAL_TRUNCATED', `database ${this.name}: generation ${pos.generation} is no longer current`);
    }
    const file = ShadowWal.pathFor(this.shadowDir(pos.generation), pos.index);
    let end: number;
    if (pos.index === this.#shadow.index) end = this.#shadow.size;
    else {
      try {
        end = fs.statSync(file).size;
      } catch {
        throw new WalshipError('WAL_TRUNCATED', `database ${this.name}: shadow WAL for ${formatPos(pos)} is missing`);
      }
    }
    if (pos.offset >= end) return Buffer.alloc(0);

    // Cut at a frame boundary, because a segment contains whole frames only.
    const fsz = frameSize(this.#pageSize);
    let length = Math.min(end - pos.offset, maxBytes);
    const base = pos.offset === 0 ? WAL_HEADER_SIZE : 0;
    if (length < end - pos.offset) {
      length = base + Math.max(1, Math.floor((length - base) / fsz)) * fsz;
    }
    return readRange(file, pos.offset, length);
  }

  /** Reports whether `pos` is past the end of the shadow WAL of its index. */
  isIndexFinished(pos: Pos): boolean {
    return !!this.#shadow && pos.generation === this.#generation && pos.index < this.#shadow.index;
  }

  /**
   * Deletes shadow WAL files that every replica has shipped: indexes below
   * `minIndex` of the current generation.
   */
  async removeShippedShadows(minIndex: number): Promise<void> {
    if (!this.#generation || !this.#shadow) return;
    const dir = this.shadowDir(this.#generation);
    for (const name of await fsp.readdir(dir).catch(() => [] as string[])) {
      const m = /^([0-9a-f]{8})\.wal$/.exec(name);
      if (!m) continue;
      const index = parseInt(m[1]!, 16);
      if (index < minIndex && index < this.#shadow.index) await fsp.rm(path.join(dir, name), { force: true });
    }
  }

  /** Total bytes of shadow WAL files of the current generation. */
  async shadowBytes(): Promise<number> {
    if (!this.#generation) return 0;
    const dir = this.shadowDir(this.#generation);
    let total = 0;
    for (const name of await fsp.readdir(dir).catch(() => [] as string[])) {
      total += (await fsp.stat(path.join(dir, name)).catch(() => ({ size: 0 }))).size;
    }
    return total;
  }

  // Loads the generation and the newest shadow WAL from the meta directory and
  // checks that the real WAL still continues it. Anything else clears the
  // generation, so the first sync starts a new one.
  async #loadState(): Promise<void> {
    const generation = (await fsp.readFile(path.join(this.config.metaPath, 'generation'), 'utf8').catch(() => '')).trim();
    if (!isGeneration(generation)) return;

    const dir = this.shadowDir(generation);
    const indexes = (await fsp.readdir(dir).catch(() => [] as string[]))
      .map((name) => /^([0-9a-f]{8})\.wal$/.exec(name))
      .filter((m): m is RegExpExecArray => m !== null)
      .map((m) => parseInt(m[1]!, 16))
      .sort((a, b) => a - b);
    if (indexes.length === 0) {
      this.log.warn({ generation }, 'no shadow wal found, starting a new generation');
      this.#clearedReason = 'no shadow wal';
      return;
    }

    const shadow = ShadowWal.open(dir, indexes[indexes.length - 1]!);
    const wal = readWalState(this.#walPath);

    // A WAL whose header differs from the shadow's was checkpointed or restarted
    // while walship was stopped: frames may have been lost, so start over.
    let reason: string | undefined;
    if (shadow.header && !wal.header) reason = 'wal missing at start';
    else if (shadow.header && !wal.headerBytes!.equals(shadow.headerBytes!)) reason = 'wal header changed while walship was stopped';
    else if (!shadow.header && wal.header) reason = 'wal started while walship was stopped';
    if (reason) {
      this.log.warn({ generation, reason }, 'cannot continue the last position, clearing generation');
      this.#clearedReason = reason;
      return;
    }

    this.#generation = generation;
    this.#shadow = shadow;
    this.#complete = !shadow.header;
  }

  // Reports whether the path now names another file than the one walship has
  // open (the application replaced the database by a rename or a restore).
  #fileReplaced(): boolean {
    // A reopen that failed left no descriptor: try again.
    if (this.#fd === undefined) return !this.#closed;
    const current = fs.statSync(this.config.path, { throwIfNoEntry: false });
    return current !== undefined && fileId(current) !== this.#fileId;
  }

  // Closes the connections to the replaced file and opens the file now at the path.
  #reopen(): void {
    this.log.warn({ path: this.config.path }, 'database file replaced, reopening');
    this.#conn?.close();
    this.#conn = undefined;
    if (this.#fd !== undefined) fs.closeSync(this.#fd);
    this.#fd = undefined;
    this.#generation = '';
    this.#shadow = undefined;

    this.#walPath = `${fs.realpathSync(this.config.path)}-wal`;
    this.#conn = openConnections(this.config.path, this.config.busyTimeout);
    this.#pageSize = this.#conn.pageSize;
    this.#fd = fs.openSync(this.config.path, 'r');
    this.#fileId = fileId(fs.fstatSync(this.#fd));
  }

  // Verifies the real WAL against the shadow and copies what is new.
  async #capture(coordinatorHeld: boolean): Promise<void> {
    for (let attempt = 0; attempt < 3; attempt++) {
      const shadow = this.#shadow!;
      const wal = readWalState(this.#walPath);
      const verdict: Verdict = verifyWal(this.#walPath, wal, shadow, this.#complete);

      switch (verdict.kind) {
        case 'wait':
          return;
        case 'continue': {
          if (!shadow.header) shadow.writeHeader(wal.headerBytes!, wal.header!);
          const bytes = copyFrames(this.#walPath, shadow);
          if (bytes > 0) this.#complete = false;
          return;
        }
        case 'restart':
          this.#followRestart(wal.headerBytes!);
          return;
        case 'new-generation':
          if (coordinatorHeld) this.#createGeneration(verdict.reason);
          else await this.#coordinator.run(() => this.#createGeneration(verdict.reason));
          continue;
      }
    }
  }

  // Finishes the current index with whatever old frames still chain after its
  // end, then starts the next index from the new WAL header.
  #followRestart(headerBytes: Buffer): void {
    const old = this.#shadow!;
    if (!this.#complete) copyFrames(this.#walPath, old);

    const next = ShadowWal.create(this.shadowDir(this.#generation), old.index + 1);
    const wal = readWalState(this.#walPath);
    if (wal.header && wal.headerBytes!.equals(headerBytes)) {
      next.writeHeader(wal.headerBytes!, wal.header);
      copyFrames(this.#walPath, next);
    }
    this.#shadow = next;
    this.#complete = false;
    this.log.info({ generation: this.#generation, index: next.index, pos: formatPos(this.pos()) }, 'wal restarted, next index');
  }

  // Starts a generation: checkpoints what it can with walship's read
  // transaction released, takes the read transaction again, and copies the
  // whole current WAL into shadow index 0. No write lock is needed. A frame
  // that the application checkpoints and overwrites before walship reads again
  // is in the database file, which the generation's first snapshot copies.
  // Every frame SQLite has not backfilled stays in the WAL under walship's
  // read transaction until it is copied.
  #createGeneration(reason: string): void {
    const conn = this.#conn!;
    const generation = crypto.randomBytes(8).toString('hex');
    const dir = this.shadowDir(generation);

    conn.endRead();
    this.#runCheckpoint(conn);
    conn.beginRead();
    const shadow = ShadowWal.create(dir, 0);
    const wal = readWalState(this.#walPath);
    if (wal.header) {
      shadow.writeHeader(wal.headerBytes!, wal.header);
      copyFrames(this.#walPath, shadow);
    }

    // The application may have committed and checkpointed while walship held
    // no read transaction, so the first checkpoint's counts prove nothing
    // about the WAL copied. A second one, under the read transaction, reports
    // whether the shadow now contains every frame, all of them backfilled.
    const probe = this.#runCheckpoint(conn);
    this.#complete = isCompleteCheckpoint(probe, wal.headerBytes, readWalState(this.#walPath).headerBytes, shadow);

    // The generation file is written last: until it exists, a restart starts over.
    const file = path.join(this.config.metaPath, 'generation');
    fs.writeFileSync(`${file}.tmp`, `${generation}\n`);
    fs.renameSync(`${file}.tmp`, file);
    fsyncPath(this.config.metaPath);

    const previous = this.#generation;
    this.#generation = generation;
    this.#shadow = shadow;
    this.#removeOtherGenerations(generation);

    this.log.info({ generation, previous: previous || undefined, reason, pos: formatPos(this.pos()) }, 'new generation');
    this.emit('generation', generation, reason);
  }

  #removeOtherGenerations(keep: string): void {
    const root = path.join(this.config.metaPath, 'generations');
    for (const name of fs.readdirSync(root)) {
      if (name !== keep) fs.rmSync(path.join(root, name), { recursive: true, force: true });
    }
  }

  // Applies Litestream's checkpoint thresholds to the current shadow index.
  async #maybeCheckpoint(): Promise<void> {
    const shadow = this.#shadow;
    if (!shadow || this.#complete) return;

    const frames = shadow.frameCount;
    const cfg = this.config;
    let mode: CheckpointMode | undefined;
    if (cfg.maxCheckpointPageCount > 0 && frames >= cfg.maxCheckpointPageCount) mode = 'RESTART';
    else if (frames >= cfg.minCheckpointPageCount) mode = 'PASSIVE';
    else if (cfg.checkpointInterval > 0 && Date.now() - this.#lastCheckpoint >= cfg.checkpointInterval && frames > 1) mode = 'PASSIVE';
    if (!mode) return;

    // A checkpoint that could not finish, because a reader still uses old
    // frames or a commit came meanwhile, is retried at most once a second
    // rather than on every WAL change. A RESTART due after an unfinished
    // PASSIVE runs at once: the PASSIVE's delay would let the WAL grow past
    // max-checkpoint-page-count meanwhile.
    const restartAfterPassive = mode === 'RESTART' && this.#checkpointRetryMode === 'PASSIVE';
    if (Date.now() < this.#checkpointRetryAt && !restartAfterPassive) {
      // Without this, a quiet database would wait for its next write or poll.
      this.#scheduleTick(this.#checkpointRetryAt - Date.now());
      return;
    }
    if (this.#coordinator.held) {
      // A snapshot or generation change has the coordinator: try again soon
      // rather than at the next WAL change, which may be a while on a quiet database.
      this.#scheduleTick(this.config.monitorInterval);
      return;
    }
    const result = await this.#coordinator.tryRun(() => this.checkpoint(mode));
    if (result && !this.#complete) {
      this.#checkpointRetryAt = Date.now() + 1000;
      this.#checkpointRetryMode = mode;
    }
  }

  /**
   * Checkpoints with `mode` now, under the coordinator mutex, so that no
   * snapshot or generation change runs meanwhile. Returns undefined once
   * capture has stopped or the database is closed.
   */
  checkpointNow(mode: CheckpointMode): Promise<CheckpointResult | undefined> {
    return this.#coordinator.run(async () => {
      if (this.#closed || this.#captureStopped) return undefined;
      return this.checkpoint(mode);
    });
  }

  /**
   * Checkpoints with `mode` while the coordinator mutex is held. Every committed
   * frame is in the fsynced shadow WAL before SQLite may overwrite it. A PASSIVE
   * checkpoint hands walship's read transaction over to a newer snapshot and
   * never takes the write lock. RESTART and TRUNCATE run the same steps while
   * holding the write lock, so that the WAL restarts at the next commit.
   */
  async checkpoint(mode: CheckpointMode): Promise<CheckpointResult | undefined> {
    const conn = this.#conn;
    if (!conn || !this.#shadow) return undefined;

    await this.#capture(true);
    // walship's next read transaction starts at or past these frames, so a
    // checkpoint that backfills fewer was held back by another connection.
    const copied = { index: this.#shadow.index, frames: this.#shadow.frameCount };
    const started = Date.now();
    const { result, lost } = mode === 'PASSIVE' ? this.#checkpointPassive(conn) : this.#checkpointBlockingWriters(conn);

    this.#lastCheckpoint = Date.now();
    this.emit('checkpoint', mode, Date.now() - started, result);
    if (this.#shadow?.index === copied.index) this.#warnIfBlocked(mode, result, copied.frames);
    this.log.info(
      { mode, busy: result?.busy, log: result?.log, checkpointed: result?.checkpointed, pos: formatPos(this.pos()), elapsed: `${Date.now() - started}ms` },
      'checkpoint',
    );
    if (lost) this.#createGeneration(lost);
    return result;
  }

  // Runs a PASSIVE checkpoint that takes no write lock, so the application's
  // writers do not wait for it, and one without a busy timeout gets no
  // SQLITE_BUSY from it. walship's read transaction moves between its two read
  // connections instead of being released. The new one begins at the newest
  // snapshot, and the old one ends only once the shadow contains every frame
  // up to that snapshot. At every moment a read transaction of walship keeps
  // SQLite from overwriting a frame walship has not copied. Returns the reason
  // continuity was lost, if it was.
  #checkpointPassive(conn: Connections): { result: CheckpointResult | undefined; lost?: string } {
    const lost = this.#handOverRead(conn, () => this.#copyUnderRead());
    if (lost) return { result: undefined, lost };

    // The checkpoint backfills frames up to walship's snapshot at most.
    const before = readWalState(this.#walPath);
    const result = this.#runCheckpoint(conn);

    // When the checkpoint backfilled every frame and no commit came since, the
    // next read transaction reads the database file alone, and the
    // application's next commit restarts the WAL from its start.
    return { result, lost: this.#handOverRead(conn, () => this.#settleAfterCheckpoint(result, before)) };
  }

  // Begins a read transaction at the newest snapshot, runs `copy`, which brings
  // the shadow up to that snapshot, and only then ends the previous read
  // transaction. When `copy` throws, the new transaction ends instead, so the
  // previous one keeps protecting the frames the shadow lacks.
  #handOverRead<T>(conn: Connections, copy: () => T): T {
    conn.beginNextRead();
    let result: T;
    try {
      result = copy();
    } catch (err) {
      conn.cancelNextRead();
      throw err;
    }
    conn.endPreviousRead();
    return result;
  }

  // Runs walship's RESTART (and TRUNCATE) checkpoint: the PASSIVE one while a
  // connection of walship holds SQLite's write lock. No commit can come
  // between the checkpoint and walship's next read transaction. So, unless an
  // application reader still uses old frames, the checkpoint backfills the
  // whole WAL, the new read transaction reads the database file alone, and the
  // application's next commit restarts the WAL. Unlike SQLite's RESTART, it
  // waits for the write lock at most RESTART_BUSY_TIMEOUT_MS and does not wait
  // for readers, so it gives up rather than stall the application's writers.
  // Like SQLite's RESTART, it reports busy when frames are left unbackfilled.
  #checkpointBlockingWriters(conn: Connections): { result: CheckpointResult | undefined; lost?: string } {
    let outcome: { result: CheckpointResult | undefined; lost?: string };
    try {
      outcome = conn.withWriteLock(Math.min(RESTART_BUSY_TIMEOUT_MS, this.config.busyTimeout), () => this.#checkpointPassive(conn));
    } catch (err) {
      if (!hasSqliteCode(err, 'SQLITE_BUSY')) throw err;
      return { result: { busy: 1, log: -1, checkpointed: -1 } };
    }

    const result = outcome.result;
    if (result && result.checkpointed < result.log) return { ...outcome, result: { ...result, busy: 1 } };
    return outcome;
  }

  // Copies the frames that arrived since the capture into the shadow, following
  // a WAL restart. Returns the reason when continuity with the shadow is lost.
  #copyUnderRead(): string | undefined {
    const wal = readWalState(this.#walPath);
    const verdict = verifyWal(this.#walPath, wal, this.#shadow!, this.#complete);
    if (verdict.kind === 'new-generation') return verdict.reason;
    if (verdict.kind === 'restart') this.#followRestart(wal.headerBytes!);
    else if (verdict.kind === 'continue') {
      if (!this.#shadow!.header && wal.header) this.#shadow!.writeHeader(wal.headerBytes!, wal.header);
      if (copyFrames(this.#walPath, this.#shadow!) > 0) this.#complete = false;
    }
    return undefined;
  }

  // Copies what the checkpoint left behind and records whether the shadow now
  // contains the whole WAL and SQLite has backfilled all of it, so that a
  // restart of the WAL loses nothing. Runs while a read transaction or the write lock keeps the
  // WAL from restarting. Returns the reason when continuity is lost.
  #settleAfterCheckpoint(result: CheckpointResult | undefined, before: WalState): string | undefined {
    const wal = readWalState(this.#walPath);
    const verdict = verifyWal(this.#walPath, wal, this.#shadow!, false);
    if (verdict.kind === 'continue') copyFrames(this.#walPath, this.#shadow!);
    else if (verdict.kind === 'restart') this.#followRestart(wal.headerBytes!);
    this.#complete = verdict.kind === 'continue' && isCompleteCheckpoint(result, before.headerBytes, wal.headerBytes, this.#shadow!);
    return verdict.kind === 'new-generation' ? 'wal overwritten during checkpoint' : undefined;
  }

  // Warns, at most once a minute, when a checkpoint backfilled fewer than
  // `copiedFrames`, the frames walship had copied before it began: another
  // connection's read transaction still uses them, so the WAL grows until
  // that reader ends. walship keeps shipping meanwhile. Frames committed
  // after walship's read transaction began are left for the next checkpoint
  // and are no reason to warn.
  #warnIfBlocked(mode: CheckpointMode, result: CheckpointResult | undefined, copiedFrames: number): void {
    if (!result || result.checkpointed >= copiedFrames) return;
    // A log of -1 means the checkpoint never started, because another
    // connection held the write lock or ran a checkpoint: no reader is to blame.
    if (result.log < 0) return;
    if (Date.now() - this.#blockedWarnedAt < 60_000) return;
    this.#blockedWarnedAt = Date.now();
    const bytes = fs.statSync(this.#walPath, { throwIfNoEntry: false })?.size ?? 0;
    this.log.warn(
      { mode, bytes, log: result.log, checkpointed: result.checkpointed, pos: formatPos(this.pos()) },
      'checkpoint could not finish: a read transaction of another connection still uses old frames, so the WAL grows until it ends',
    );
  }

  // Runs a PASSIVE checkpoint on the read-write connection. A failure is
  // logged and returns undefined, which counts as a checkpoint that did not finish.
  #runCheckpoint(conn: Connections): CheckpointResult | undefined {
    try {
      return conn.checkpoint();
    } catch (err) {
      this.log.warn({ err, pos: formatPos(this.pos()) }, 'checkpoint failed');
      return undefined;
    }
  }

  // Queues one sync. File events can come faster than syncs finish: one sync
  // waiting behind the running one covers every event until it starts.
  #tick = (): void => {
    if (this.#syncQueued || this.#closed || this.#captureStopped) return;
    this.#syncQueued = true;
    this.sync().catch((err) => this.#logSyncError(err));
  };

  // Runs one extra sync after `ms`, unless one is scheduled already.
  #scheduleTick(ms: number): void {
    if (this.#retryTimer || !this.#timer) return;
    this.#retryTimer = setTimeout(() => {
      this.#retryTimer = undefined;
      this.#tick();
    }, ms);
    this.#retryTimer.unref();
  }

  #startMonitor(): void {
    const tick = this.#tick;
    // File events wake the sync at once; the timer covers missed events, and
    // polls at the monitor interval on file systems without events.
    let interval = this.config.monitorInterval;
    try {
      this.#unwatch = onFileEvent(this.#walPath, tick);
      interval = Math.max(interval, WATCHED_POLL_MS);
    } catch (err) {
      this.log.debug({ err }, 'file watching unavailable, polling only');
    }
    // The timer keeps the process alive while the database is open, as a server would.
    this.#timer = setInterval(tick, interval);
  }

  #stopMonitor(): void {
    if (this.#timer) clearInterval(this.#timer);
    this.#timer = undefined;
    if (this.#retryTimer) clearTimeout(this.#retryTimer);
    this.#retryTimer = undefined;
    this.#unwatch?.();
    this.#unwatch = undefined;
  }

  // Logs sync errors, repeating an identical one at most once a minute.
  #logSyncError(err: unknown): void {
    const message = err instanceof Error ? err.message : String(err);
    if (message === this.#lastError && Date.now() - this.#lastErrorAt < 60_000) return;
    this.#lastError = message;
    this.#lastErrorAt = Date.now();
    this.log.error({ err, pos: formatPos(this.pos()) }, 'sync error');
  }
}

/**
 * Reports whether a checkpoint left nothing in the WAL that walship lacks:
 * SQLite backfilled every frame, the WAL header did not change meanwhile, and
 * the shadow contains exactly the frames the checkpoint saw.
 */
function isCompleteCheckpoint(
  result: CheckpointResult | undefined,
  headerBefore: Buffer | undefined,
  headerAfter: Buffer | undefined,
  shadow: ShadowWal,
): boolean {
  if (!result || result.busy !== 0 || result.log !== result.checkpointed) return false;
  if (!headerBefore || !headerAfter) return !headerAfter && shadow.frameCount === 0;
  return headerBefore.equals(headerAfter) && shadow.frameCount === result.log;
}

/**
 * Creates the meta directory. A recursive mkdir on a read-only file system
 * fails with ENOENT, so the error is taken from the nearest existing parent,
 * which names the real cause (EROFS, EACCES).
 */
async function makeMetaDir(dir: string): Promise<void> {
  try {
    await fsp.mkdir(dir, { recursive: true });
  } catch (err) {
    let parent = path.dirname(dir);
    while (!fs.existsSync(parent) && path.dirname(parent) !== parent) parent = path.dirname(parent);
    let cause: unknown = err;
    try {
      fs.accessSync(parent, fs.constants.W_OK);
    } catch (accessErr) {
      cause = accessErr;
    }
    throw localStateError(cause, dir);
  }
}

/** Identity of a file: device and inode. */
function fileId(stat: fs.Stats): string {
  return `${stat.dev}:${stat.ino}`;
}

// File times come from the kernel's coarse clock, which advances every few
// milliseconds: a write right after a stat can leave size and mtime as they
// were. A WAL modified this recently is never treated as unchanged.
const FINGERPRINT_SETTLE_MS = 100;

/**
 * Size, modification time and inode of the WAL ('-' when it does not exist),
 * or '' when the WAL changed too recently for its times to prove anything.
 */
function walFingerprint(walPath: string, now: number): string {
  const stat = fs.statSync(walPath, { throwIfNoEntry: false });
  if (!stat) return '-';
  if (now - stat.mtimeMs < FINGERPRINT_SETTLE_MS) return '';
  return `${stat.size}:${stat.mtimeMs}:${stat.ino}`;
}

/** Checks that a path exists and contains a SQLite database (or is empty). */
async function checkDatabaseFile(dbPath: string): Promise<void> {
  let stat: fs.Stats;
  try {
    stat = await fsp.stat(dbPath);
  } catch (err) {
    throw new WalshipError('NOT_FOUND', `database ${dbPath} not found: create it first or check the path`, { cause: err });
  }
  if (!stat.isFile()) throw new WalshipError('INVALID_INPUT', `database ${dbPath} is not a regular file`);
  if (stat.size === 0) return;

  const fh = await fsp.open(dbPath, 'r');
  try {
    const head = Buffer.alloc(16);
    await fh.read(head, 0, 16, 0);
    if (!head.equals(Buffer.from('SQLite format 3\0', 'latin1'))) {
      throw new WalshipError('INVALID_INPUT', `database ${dbPath} is not a SQLite database (header does not start with "SQLite format 3")`);
    }
  } finally {
    await fh.close();
  }
}

/** Removes leftover `*.tmp` files of an interrupted run from the meta directory. */
async function removeTempFiles(dir: string): Promise<void> {
  const entries = await fsp.readdir(dir, { recursive: true }).catch(() => [] as string[]);
  for (const entry of entries) {
    if (String(entry).endsWith('.tmp')) await fsp.rm(path.join(dir, String(entry)), { force: true });
  }
}


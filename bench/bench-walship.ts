import { execFileSync, spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { EventEmitter } from 'node:events';
import fs from 'node:fs';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

import { trackChild } from './bench-process.js';
import { replicaYaml, stopChild } from './bench-store.js';
import type { Store } from './bench-store.js';
import { ShipTimeline } from './bench-wal-position.js';

/**
 * walship under test: `walship replicate -config FILE` in a child process of
 * its own, so that its CPU time and peak RSS (its piscina workers are
 * threads of that process) are measured apart from the application and the
 * store. Its JSON log lines on stderr tell when each WAL segment was stored.
 */

export const CLI_SCRIPT = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));

// How long walship may take for its final sync after SIGTERM before it is killed.
const STOP_TIMEOUT_MS = 120_000;
// Warnings and errors kept verbatim for the report.
const MAX_PROBLEMS = 20;
// `checkpoint` lines kept for the report.
const MAX_CHECKPOINT_LINES = 200;
// How often CPU time and memory are read while walship runs, so that the
// values after its exit are at most this old.
const USAGE_SAMPLE_MS = 200;

/** One database in walship's config. */
export interface ReplicatedDb {
  path: string;
  /** The `name:` of the database, the `db=` field of its log lines. */
  name: string;
  /** Key prefix of its replica in the store. */
  prefix: string;
}

/** CPU time and memory of a process, from /proc. */
export interface ProcessUsage {
  /** User plus system CPU seconds of all its threads. */
  cpuSeconds: number;
  /** Peak resident set size (VmHWM) in bytes. */
  peakRssBytes: number;
  /** Current resident set size (VmRSS) in bytes. */
  rssBytes: number;
}

/** A `snapshot written` line. */
export interface SnapshotLine {
  time: number;
  index: number;
  bytes: number;
  stored: number;
  elapsedMs: number;
}

let clockTicks: number | undefined;

/** Returns the kernel's clock ticks per second, the unit of /proc/<pid>/stat times. */
function ticksPerSecond(): number {
  if (clockTicks === undefined) {
    try {
      clockTicks = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
    } catch {
      clockTicks = 100;
    }
  }
  return clockTicks;
}

/** Reads CPU time and memory of a running process; throws once it has exited. */
export function processUsage(pid: number): ProcessUsage {
  const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  // Fields after the command name, which is in parentheses and may contain spaces.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const ticks = Number(fields[11]) + Number(fields[12]);

  const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
  const kib = (name: string): number => Number(new RegExp(`^${name}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? 0) * 1024;
  return { cpuSeconds: ticks / ticksPerSecond(), peakRssBytes: kib('VmHWM'), rssBytes: kib('VmRSS') };
}

/** Options of a walship run. */
export interface WalshipOptions {
  workDir: string;
  label: string;
  store: Store;
  dbs: ReplicatedDb[];
  /** Go duration, e.g. `1s` or `0s`. */
  syncInterval: string;
}

/** Writes walship's YAML config for the databases and returns its path. */
export function writeConfig(options: WalshipOptions): string {
  const lines = ['logging:', '  level: info', '  type: json', 'dbs:'];
  for (const db of options.dbs) {
    lines.push(`  - path: ${JSON.stringify(db.path)}`);
    lines.push(`    name: ${JSON.stringify(db.name)}`);
    lines.push('    replicas:');
    lines.push(replicaYaml(options.store, db.prefix, options.syncInterval, '      '));
  }
  const file = path.join(options.workDir, `${options.label}.yml`);
  fs.writeFileSync(file, `${lines.join('\n')}\n`);
  return file;
}

/**
 * A running `walship replicate`. It follows the log lines the benchmark
 * measures with: `new transaction:` (a segment stored), `snapshot written`,
 * `new generation`, and every warning and error.
 */
export class WalshipProcess extends EventEmitter<{ line: [] }> {
  readonly configPath: string;
  readonly child: ChildProcess;
  readonly pid: number;
  readonly timelines = new Map<string, ShipTimeline>();
  readonly snapshots = new Map<string, SnapshotLine[]>();
  readonly generations = new Map<string, number>();
  /** Raw WAL bytes of every stored segment, over all databases. */
  walBytes = 0;
  /** WAL segments stored, over all databases: one PUT each. */
  segments = 0;
  /** Database bytes of every snapshot written, over all databases. */
  snapshotBytes = 0;
  checkpoints = 0;
  /** `checkpoint` lines: mode and the milliseconds walship's thread spent in it. */
  readonly checkpointLines: { mode: string; elapsedMs: number; busy: number }[] = [];
  warnings = 0;
  errors = 0;
  readonly problems: string[] = [];
  started = false;
  #exit: Promise<void>;
  #lastUsage: ProcessUsage = { cpuSeconds: 0, peakRssBytes: 0, rssBytes: 0 };

  private constructor(configPath: string, child: ChildProcess) {
    super();
    this.configPath = configPath;
    this.child = child;
    this.pid = child.pid!;
    // 'close' comes once stderr is drained too, so every log line has been read by then.
    this.#exit = new Promise((resolve) => child.once('close', () => resolve()));
    const sampler = setInterval(() => this.usage(), USAGE_SAMPLE_MS);
    child.once('exit', () => clearInterval(sampler));
    const lines = createInterface({ input: child.stderr! });
    lines.on('line', (line) => this.#onLine(line));
  }

  /** Starts walship on the databases and waits until it logged `replication started`. */
  static async start(options: WalshipOptions, startTimeoutMs: number): Promise<WalshipProcess> {
    const configPath = writeConfig(options);
    const child = spawn(process.execPath, [CLI_SCRIPT, 'replicate', '-control-socket', 'off', '-config', configPath], {
      stdio: ['ignore', 'ignore', 'pipe'],
      env: { ...process.env, AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: 'true' },
    });
    trackChild(child, `walship ${options.label}`);
    const walship = new WalshipProcess(configPath, child);
    for (const db of options.dbs) walship.timelines.set(db.name, new ShipTimeline());

    const ok = await walship.waitFor(() => walship.started, startTimeoutMs);
    if (!ok) {
      await walship.stop();
      throw new Error(`walship did not start within ${startTimeoutMs / 1000} s: ${walship.problems.slice(0, 3).join(' | ') || 'no log line'}`);
    }
    return walship;
  }

  /** Reports whether the child still runs. */
  get running(): boolean {
    return this.child.exitCode === null && this.child.signalCode === null;
  }

  /** CPU time and memory now; after exit, the last values read (at most 200 ms before it). */
  usage(): ProcessUsage {
    if (this.running) {
      try {
        this.#lastUsage = processUsage(this.pid);
      } catch {
        // The process exited between the check and the read.
      }
    }
    return this.#lastUsage;
  }

  /**
   * Summarizes the `checkpoint` lines: how many, how many SQLite reported
   * busy, and the milliseconds they took, all on walship's main thread,
   * because better-sqlite3 runs them synchronously.
   */
  checkpointSummary(): { count: number; busy: number; totalMs: number; maxMs: number; byMode: Record<string, number> } {
    const byMode: Record<string, number> = {};
    let totalMs = 0;
    let maxMs = 0;
    let busy = 0;
    for (const line of this.checkpointLines) {
      byMode[line.mode] = (byMode[line.mode] ?? 0) + 1;
      totalMs += line.elapsedMs;
      maxMs = Math.max(maxMs, line.elapsedMs);
      if (line.busy !== 0) busy++;
    }
    return { count: this.checkpoints, busy, totalMs, maxMs, byMode };
  }

  /** Snapshots written for a database. */
  snapshotsOf(name: string): SnapshotLine[] {
    return this.snapshots.get(name) ?? [];
  }

  /**
   * Resolves true once `check` holds, checked after every log line and every
   * 100 ms, or false after `timeoutMs` or when walship exits.
   */
  waitFor(check: () => boolean, timeoutMs: number): Promise<boolean> {
    if (check()) return Promise.resolve(true);
    return new Promise((resolve) => {
      const finish = (value: boolean): void => {
        clearTimeout(timer);
        clearInterval(poll);
        this.off('line', onLine);
        resolve(value);
      };
      const onLine = (): void => {
        if (check()) finish(true);
      };
      const timer = setTimeout(() => finish(check()), timeoutMs);
      const poll = setInterval(() => {
        if (check()) finish(true);
        else if (!this.running) finish(false);
      }, 100);
      this.on('line', onLine);
    });
  }

  /** Sends SIGTERM, which makes walship ship what it captured and exit, and waits for the exit. */
  async stop(): Promise<{ stopSeconds: number; exitCode: number | null }> {
    this.usage();
    const started = performance.now();
    await stopChild(this.child, STOP_TIMEOUT_MS);
    await this.#exit;
    return { stopSeconds: (performance.now() - started) / 1000, exitCode: this.child.exitCode };
  }

  #onLine(line: string): void {
    let record: Record<string, unknown>;
    try {
      record = JSON.parse(line) as Record<string, unknown>;
    } catch {
      // Lines before the logger exists (a bad flag) are plain text.
      this.#problem(line);
      this.emit('line');
      return;
    }

    const time = Date.parse(String(record.time));
    const db = String(record.db ?? '');
    const msg = String(record.msg ?? '');
    switch (msg) {
      case 'new transaction:':
        this.#onShipped(db, time, String(record.post ?? ''), Number(record.bytes ?? 0));
        break;
      case 'snapshot written':
        this.#onSnapshot(db, time, record);
        break;
      case 'new generation':
        this.generations.set(db, (this.generations.get(db) ?? 0) + 1);
        break;
      case 'checkpoint':
        this.checkpoints++;
        if (this.checkpointLines.length < MAX_CHECKPOINT_LINES) {
          this.checkpointLines.push({ mode: String(record.mode ?? ''), elapsedMs: parseInt(String(record.elapsed ?? '0'), 10), busy: Number(record.busy ?? 0) });
        }
        break;
      case 'replication started':
        this.started = true;
        break;
    }

    if (record.level === 'warn') this.warnings++;
    if (record.level === 'error' || record.level === 'fatal') this.errors++;
    if (record.level === 'warn' || record.level === 'error' || record.level === 'fatal') this.#problem(line);
    this.emit('line');
  }

  #onShipped(db: string, time: number, post: string, bytes: number): void {
    const m = /^([0-9a-f]{16})\/([0-9a-f]{8}):(\d+)$/.exec(post);
    const timeline = this.timelines.get(db);
    if (!m || !timeline) return;
    timeline.add(time, m[1]!, parseInt(m[2]!, 16), Number(m[3]));
    this.walBytes += bytes;
    this.segments++;
  }

  #onSnapshot(db: string, time: number, record: Record<string, unknown>): void {
    const snapshot: SnapshotLine = {
      time,
      index: Number(record.index ?? 0),
      bytes: Number(record.bytes ?? 0),
      stored: Number(record.stored ?? 0),
      elapsedMs: parseInt(String(record.elapsed ?? '0'), 10),
    };
    const list = this.snapshots.get(db) ?? [];
    list.push(snapshot);
    this.snapshots.set(db, list);
    this.snapshotBytes += snapshot.bytes;

    const timeline = this.timelines.get(db);
    if (timeline && timeline.snapshotAt === undefined) {
      timeline.snapshotAt = time;
      timeline.snapshotIndex = snapshot.index;
    }
  }

  #problem(line: string): void {
    if (this.problems.length < MAX_PROBLEMS) this.problems.push(line.length > 400 ? `${line.slice(0, 400)}...` : line);
  }
}

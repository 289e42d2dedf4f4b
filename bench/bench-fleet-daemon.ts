import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { EventEmitter } from 'node:events';
import fs from 'node:fs';
import { createInterface } from 'node:readline';

import { trackChild } from './bench-process.js';
import { stopChild } from './bench-store.js';
import { ShipTimeline } from './bench-wal-position.js';
import { CLI_SCRIPT, processUsage } from './bench-walship.js';
import type { ProcessUsage } from './bench-walship.js';

/**
 * The walship daemon of the fleet workload: `walship replicate` on a config
 * with one `dir:` entry, with the status server on a port of 127.0.0.1 that
 * the kernel picks. Like WalshipProcess it follows the JSON log lines on
 * stderr. It also takes any config file and extra flags, and raises the
 * open-files limit of the child alone when asked. It counts the child's
 * file descriptors, scrapes its /metrics and can copy every log line to a file.
 */

// How long walship may take for its final sync after SIGTERM before it is killed.
const STOP_TIMEOUT_MS = 120_000;
// Warnings and errors kept verbatim for the report.
const MAX_PROBLEMS = 20;
// How often CPU time, memory and open descriptors are read while walship runs.
const USAGE_SAMPLE_MS = 1000;
// Bound of one /metrics request: 1,000 databases give a large page.
const SCRAPE_TIMEOUT_MS = 60_000;

/** Options of a fleet daemon run. */
export interface FleetDaemonOptions {
  configPath: string;
  /** Flags after `replicate`, besides `-config`. */
  flags: string[];
  /** Soft and hard open-files limit to set in a shell wrapper before walship starts; undefined keeps the inherited limit. */
  openFilesLimit?: number;
  /** File that receives every log line of walship as it arrives; undefined keeps none. */
  logPath?: string;
}

/** One reading of the daemon's process, taken every second. */
export interface UsageSample extends ProcessUsage {
  /** Milliseconds since the epoch. */
  time: number;
  /** Entries of /proc/<pid>/fd. */
  openFiles: number;
}

/** Totals of one counter family of /metrics, summed over every label but one. */
export type MetricTotals = Map<string, number>;

/** One /metrics page and how long it took to fetch. */
export interface MetricsPage {
  text: string;
  bytes: number;
  seconds: number;
}

/** First and last time (ms since the epoch) and count of one log message. */
export interface MessageTimes {
  count: number;
  first: number;
  last: number;
}

/**
 * A running `walship replicate` for the fleet. It records the `new
 * transaction:` and `snapshot written` lines per database, the metrics URL,
 * and every warning and error.
 */
export class FleetDaemon extends EventEmitter<{ line: [] }> {
  readonly child: ChildProcess;
  readonly pid: number;
  /** Time of the spawn, in ms since the epoch. */
  readonly spawnedAt = Date.now();
  readonly timelines = new Map<string, ShipTimeline>();
  /** Databases with at least one `snapshot written` line. */
  readonly snapshotted = new Set<string>();
  /** Every message with its level, e.g. `info: lease acquired`, counted with its first and last time. */
  readonly messages = new Map<string, MessageTimes>();
  readonly problems: string[] = [];
  readonly samples: UsageSample[] = [];
  metricsUrl: string | undefined;
  started = false;
  /** Raw WAL bytes of every stored segment, over all databases. */
  walBytes = 0;
  /** WAL segments stored, over all databases. */
  segments = 0;
  warnings = 0;
  errors = 0;
  #exit: Promise<void>;
  #last: UsageSample = { time: 0, cpuSeconds: 0, peakRssBytes: 0, rssBytes: 0, openFiles: 0 };

  private constructor(child: ChildProcess, logPath: string | undefined) {
    super();
    this.child = child;
    this.pid = child.pid!;
    // 'close' comes once stderr is drained, so every log line has been read by then.
    this.#exit = new Promise((resolve) => child.once('close', () => resolve()));
    const sampler = setInterval(() => this.sample(), USAGE_SAMPLE_MS);
    child.once('exit', () => clearInterval(sampler));
    const log = logPath === undefined ? undefined : fs.createWriteStream(logPath);
    const lines = createInterface({ input: child.stderr! });
    lines.on('line', (line) => {
      log?.write(`${line}\n`);
      this.#onLine(line);
    });
    lines.once('close', () => log?.end());
  }

  /**
   * Starts walship and waits until it logged `replication started`. With an
   * open-files limit, `sh` sets it and then replaces itself with walship
   * (`exec`), so the PID is walship's.
   */
  static async start(options: FleetDaemonOptions, startTimeoutMs: number): Promise<FleetDaemon> {
    const args = [CLI_SCRIPT, 'replicate', ...options.flags, '-config', options.configPath];
    const env = { ...process.env, AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: 'true' };
    const child =
      options.openFilesLimit === undefined
        ? spawn(process.execPath, args, { stdio: ['ignore', 'ignore', 'pipe'], env })
        : spawn('/bin/sh', ['-c', `ulimit -n ${options.openFilesLimit} && exec "$0" "$@"`, process.execPath, ...args], { stdio: ['ignore', 'ignore', 'pipe'], env });
    trackChild(child, 'walship fleet');

    const daemon = new FleetDaemon(child, options.logPath);
    const ok = await daemon.waitFor(() => daemon.started, startTimeoutMs);
    if (!ok) {
      await daemon.stop();
      throw new Error(`walship did not log "replication started" within ${startTimeoutMs / 1000} s: ${daemon.problems.slice(0, 3).join(' | ') || 'no log line'}`);
    }
    return daemon;
  }

  /** Reports whether the child still runs. */
  get running(): boolean {
    return this.child.exitCode === null && this.child.signalCode === null;
  }

  /** Reads CPU time, memory and open descriptors now; after exit, returns the last reading. */
  sample(): UsageSample {
    if (!this.running) return this.#last;
    try {
      const usage = processUsage(this.pid);
      const openFiles = fs.readdirSync(`/proc/${this.pid}/fd`).length;
      this.#last = { ...usage, time: Date.now(), openFiles };
      this.samples.push(this.#last);
    } catch {
      // The process exited between the check and the read.
    }
    return this.#last;
  }

  /** Returns the most descriptors any reading saw. */
  peakOpenFiles(): number {
    return Math.max(0, ...this.samples.map((s) => s.openFiles));
  }

  /**
   * Returns the highest peak RSS any reading saw. The last reading may come
   * from the exited process before it was reaped, whose status has no memory lines.
   */
  peakRssBytes(): number {
    return Math.max(0, ...this.samples.map((s) => s.peakRssBytes));
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

  /** Fetches the /metrics page. */
  async scrape(): Promise<MetricsPage> {
    if (this.metricsUrl === undefined) throw new Error('walship logged no "serving metrics and health checks" line, so there is no /metrics to read');
    const started = performance.now();
    const response = await fetch(this.metricsUrl, { signal: AbortSignal.timeout(SCRAPE_TIMEOUT_MS) });
    if (!response.ok) throw new Error(`GET ${this.metricsUrl} returned HTTP ${response.status}`);
    const text = await response.text();
    return { text, bytes: Buffer.byteLength(text), seconds: (performance.now() - started) / 1000 };
  }

  /** Sends SIGTERM, which makes walship ship what it captured and exit, and waits for the exit. */
  async stop(): Promise<{ stopSeconds: number; exitCode: number | null }> {
    this.sample();
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
      // Lines before the logger exists (a bad flag, a failed ulimit) are plain text.
      this.#count(`text: ${line.slice(0, 80)}`, Date.now());
      this.#problem(line);
      this.emit('line');
      return;
    }

    const db = String(record.db ?? '');
    const msg = String(record.msg ?? '');
    switch (msg) {
      case 'new transaction:':
        this.#onShipped(db, Date.parse(String(record.time)), String(record.post ?? ''), Number(record.bytes ?? 0));
        break;
      case 'snapshot written':
        this.snapshotted.add(db);
        break;
      case 'serving metrics and health checks':
        this.metricsUrl = String(record.url ?? '');
        break;
      case 'replication started':
        this.started = true;
        break;
    }
    this.#count(`${String(record.level)}: ${msg}`, Date.parse(String(record.time)));

    if (record.level === 'warn') this.warnings++;
    if (record.level === 'error' || record.level === 'fatal') this.errors++;
    if (record.level === 'warn' || record.level === 'error' || record.level === 'fatal') this.#problem(line);
    this.emit('line');
  }

  #onShipped(db: string, time: number, post: string, bytes: number): void {
    const m = /^([0-9a-f]{16})\/([0-9a-f]{8}):(\d+)$/.exec(post);
    if (!m) return;
    let timeline = this.timelines.get(db);
    if (timeline === undefined) {
      timeline = new ShipTimeline();
      this.timelines.set(db, timeline);
    }
    timeline.add(time, m[1]!, parseInt(m[2]!, 16), Number(m[3]));
    this.walBytes += bytes;
    this.segments++;
  }

  #count(key: string, time: number): void {
    const times = this.messages.get(key);
    if (times === undefined) this.messages.set(key, { count: 1, first: time, last: time });
    else {
      times.count++;
      times.last = time;
    }
  }

  #problem(line: string): void {
    if (this.problems.length < MAX_PROBLEMS) this.problems.push(line.length > 400 ? `${line.slice(0, 400)}...` : line);
  }
}

/**
 * Sums the samples of one metric in Prometheus text format by the value of
 * one label. Samples without the label count under ''.
 */
export function sumByLabel(text: string, family: string, label: string): MetricTotals {
  const totals: MetricTotals = new Map();
  const labelPattern = new RegExp(`(?:^|,)${label}="((?:[^"\\\\]|\\\\.)*)"`);
  for (const line of text.split('\n')) {
    if (!line.startsWith(family)) continue;
    const rest = line.slice(family.length);
    if (rest[0] !== '{' && rest[0] !== ' ') continue;

    const close = rest.lastIndexOf('}');
    const labels = rest[0] === '{' ? rest.slice(1, close) : '';
    const value = Number(rest.slice(rest[0] === '{' ? close + 1 : 0).trim().split(' ')[0]);
    if (!Number.isFinite(value)) continue;
    const key = labelPattern.exec(labels)?.[1] ?? '';
    totals.set(key, (totals.get(key) ?? 0) + value);
  }
  return totals;
}

/** Returns the difference of two scrapes of one family, key by key, zeros left out. */
export function metricDelta(before: MetricTotals, after: MetricTotals): Record<string, number> {
  const delta: Record<string, number> = {};
  for (const [key, value] of after) {
    const change = value - (before.get(key) ?? 0);
    if (change !== 0) delta[key] = change;
  }
  return delta;
}

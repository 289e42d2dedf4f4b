import type { Calibration } from './bench-calibrate.js';

/**
 * Results of a benchmark run and their presentation: the workloads'
 * measurements, the targets checked against them, and the text table.
 */

/** The application's rate over one run. */
export interface AppRate {
  transactions: number;
  seconds: number;
  txPerSec: number;
  /** WAL bytes the commits appended, in MB/s. */
  walMBps: number;
}

/** Commit-to-stored lag over a set of commits, in milliseconds. */
export interface LagStats {
  count: number;
  /** Commits that were never stored while the benchmark waited. */
  unstored: number;
  p50: number;
  p99: number;
  max: number;
}

/** Measurements of walship's process during a workload. */
export interface WalshipUsage {
  cpuSeconds: number;
  /** CPU seconds per GiB of WAL and snapshot bytes shipped; undefined when nothing was shipped. */
  cpuSecondsPerGiB?: number;
  peakRssMiB: number;
  warnings: number;
  errors: number;
  problems: string[];
}

/** A restore of the workload's replica and its comparison with the source. */
export interface RestoreResult {
  seconds: number;
  bytes: number;
  mbps: number;
  /** mbps over the calibrated GET+decompress limit. */
  ratio: number;
  identical: boolean;
  detail: string;
}

/** One target of the benchmark, checked against a measurement. */
export interface TargetResult {
  workload: string;
  target: string;
  measured: string;
  met: boolean;
  /** How far the measurement is from the target when it is missed. */
  shortfall?: string;
}

/** Everything measured for one workload. */
export interface WorkloadResult {
  name: string;
  description: string;
  /** Remarks on the run, such as a smaller size or a disagreement found in the replica. */
  notes: string[];
  /** Reason the workload did not run. */
  skipped?: string;
  without?: AppRate;
  with?: AppRate;
  /** Transactions a second the schedule asked for (paced workloads). */
  nominalTxPerSec?: number;
  shipped?: { bytes: number; seconds: number; mbps: number; ratio: number; segments?: number };
  lag?: LagStats;
  /** Seconds from the last commit until the replica stored it; null when it was not stored in time. */
  catchUpSeconds?: number | null;
  walship?: WalshipUsage;
  /** Share of one core walship used while every database was idle. */
  idleCorePercent?: number;
  stored?: { objects: number; bytes: number };
  /** Limits at the compression ratio of this workload's data; `shipped.ratio` and `restore.ratio` are relative to them. */
  limits?: { compressionRatio: number; shipLimitMBps: number; restoreLimitMBps: number };
  restore?: RestoreResult;
  /** Other measurements for the JSON file. */
  extra: Record<string, unknown>;
}

/** Returns the p-th percentile of ascending values (nearest rank). */
export function percentile(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) return 0;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))]!;
}

/** Summarizes lags in ms; undefined entries are commits that were never stored. */
export function lagStats(lags: readonly (number | undefined)[]): LagStats {
  const stored = lags.filter((lag): lag is number => lag !== undefined).sort((a, b) => a - b);
  return {
    count: lags.length,
    unstored: lags.length - stored.length,
    p50: percentile(stored, 50),
    p99: percentile(stored, 99),
    max: stored.at(-1) ?? 0,
  };
}

// Text formatting of the report.

function fixed(value: number | undefined, digits: number): string {
  return value === undefined || !Number.isFinite(value) ? '-' : value.toFixed(digits);
}

function ms(value: number): string {
  return value >= 1000 ? `${(value / 1000).toFixed(2)} s` : `${value.toFixed(0)} ms`;
}

function ratio(value: number | undefined): string {
  return value === undefined || !Number.isFinite(value) ? '' : ` (${(value * 100).toFixed(0)}%)`;
}

/** Lays out rows of cells as an aligned text table; the first row is the header. */
export function formatTable(rows: string[][]): string {
  const widths: number[] = [];
  for (const row of rows) row.forEach((cell, i) => (widths[i] = Math.max(widths[i] ?? 0, cell.length)));
  const line = (row: string[]): string => row.map((cell, i) => (i === 0 ? cell.padEnd(widths[i]!) : cell.padStart(widths[i]!))).join('  ');
  const rule = widths.map((w) => '-'.repeat(w)).join('  ');
  return [line(rows[0]!), rule, ...rows.slice(1).map(line)].join('\n');
}

/** Formats the calibration as a table. */
export function formatCalibration(calibration: Calibration, workloads: WorkloadResult[]): string {
  const c = calibration;
  const rows: string[][] = [['limit of this machine', 'value']];
  rows.push(['LZ4 compress, 1 worker', `${fixed(c.lz4.compressOneMBps, 0)} MB/s`]);
  rows.push([`LZ4 compress, ${c.lz4.workers} workers`, `${fixed(c.lz4.compressAllMBps, 0)} MB/s`]);
  rows.push(['LZ4 decompress, 1 worker', `${fixed(c.lz4.decompressOneMBps, 0)} MB/s`]);
  rows.push(['LZ4 ratio of the row data', `${fixed(c.lz4.ratio, 2)} : 1`]);
  for (const [concurrency, value] of Object.entries(c.s3.put)) rows.push([`S3 PUT 8 MiB, concurrency ${concurrency}`, `${fixed(value, 0)} MB/s`]);
  for (const [concurrency, value] of Object.entries(c.s3.get)) rows.push([`S3 GET 8 MiB, concurrency ${concurrency}`, `${fixed(value, 0)} MB/s`]);
  rows.push(['ship limit at the sample ratio', `${fixed(c.shipLimitMBps, 0)} MB/s`]);
  rows.push(['restore limit at the sample ratio', `${fixed(c.restoreLimitMBps, 0)} MB/s`]);
  for (const workload of workloads) {
    if (workload.without === undefined) continue;
    rows.push([`SQLite, ${workload.name}, no replicator`, `${fixed(workload.without.txPerSec, 0)} tx/s, ${fixed(workload.without.walMBps, 1)} MB/s WAL`]);
  }
  const snapshot = workloads.find((w) => w.name === 'snapshot');
  const fill = snapshot?.extra.fillMBps as number | undefined;
  if (fill !== undefined) rows.push(['SQLite, snapshot database fill (no journal)', `${fixed(fill, 0)} MB/s`]);
  return formatTable(rows);
}

/** Formats the workloads as a table: one column per workload, one row per measurement. */
export function formatWorkloads(workloads: WorkloadResult[]): string {
  const ran = workloads.filter((w) => w.skipped === undefined);
  const header = ['', ...ran.map((w) => w.name)];
  const row = (label: string, cell: (w: WorkloadResult) => string): string[] => [label, ...ran.map((w) => cell(w) || '-')];

  const rows: string[][] = [
    header,
    row('app tx/s with walship', (w) => {
      if (w.with === undefined) return '';
      const base = w.without?.txPerSec ?? w.nominalTxPerSec;
      return `${fixed(w.with.txPerSec, 0)}${ratio(base === undefined ? undefined : w.with.txPerSec / base)}`;
    }),
    row('app WAL MB/s with walship', (w) => (w.with === undefined ? '' : `${fixed(w.with.walMBps, 1)}${ratio(w.without ? w.with.walMBps / w.without.walMBps : undefined)}`)),
    row('compression ratio', (w) => (w.limits === undefined ? '' : `${fixed(w.limits.compressionRatio, 2)} : 1`)),
    row('ship limit MB/s', (w) => fixed(w.limits?.shipLimitMBps, 0)),
    row('shipped MB/s (of limit)', (w) => (w.shipped === undefined ? '' : `${fixed(w.shipped.mbps, 1)}${ratio(w.shipped.ratio)}`)),
    row('WAL segments stored / s', (w) => (w.shipped?.segments === undefined ? '' : fixed(w.shipped.segments / w.shipped.seconds, 1))),
    row('lag p50', (w) => (w.lag === undefined ? '' : ms(w.lag.p50))),
    row('lag p99', (w) => (w.lag === undefined ? '' : ms(w.lag.p99))),
    row('lag max', (w) => (w.lag === undefined ? '' : ms(w.lag.max))),
    row('commits never stored', (w) => (w.lag === undefined ? '' : String(w.lag.unstored))),
    row('last commit stored after', (w) => formatCatchUp(w.catchUpSeconds)),
    row('walship CPU s', (w) => fixed(w.walship?.cpuSeconds, 1)),
    row('walship CPU s / GiB', (w) => fixed(w.walship?.cpuSecondsPerGiB, 1)),
    row('walship CPU idle, % core', (w) => (w.idleCorePercent === undefined ? '' : `${fixed(w.idleCorePercent, 2)}%`)),
    row('walship peak RSS MiB', (w) => fixed(w.walship?.peakRssMiB, 0)),
    row('walship warnings/errors', (w) => (w.walship === undefined ? '' : `${w.walship.warnings}/${w.walship.errors}`)),
    row('stored MB', (w) => (w.stored === undefined ? '' : fixed(w.stored.bytes / 1e6, 1))),
    row('restore limit MB/s', (w) => fixed(w.limits?.restoreLimitMBps, 0)),
    row('restore MB/s (of limit)', (w) => (w.restore === undefined ? '' : `${fixed(w.restore.mbps, 1)}${ratio(w.restore.ratio)}`)),
    row('restored = source', (w) => formatIdentical(w.restore)),
  ];
  return formatTable(rows);
}

function formatCatchUp(seconds: number | null | undefined): string {
  if (seconds === undefined) return '';
  if (seconds === null) return 'not in time';
  return `${fixed(seconds, 2)} s`;
}

function formatIdentical(restore: RestoreResult | undefined): string {
  if (restore === undefined) return '';
  return restore.identical ? 'yes' : 'NO';
}

/** Formats the targets, each met or missed with the measurement and the shortfall. */
export function formatTargets(targets: TargetResult[]): string {
  const rows: string[][] = [['target', 'measured', 'result']];
  for (const t of targets) rows.push([`${t.workload}: ${t.target}`, t.measured, t.met ? 'met' : `MISSED${t.shortfall ? ` by ${t.shortfall}` : ''}`]);
  return formatTable(rows);
}

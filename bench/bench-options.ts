import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

/**
 * Settings of a benchmark run, from the environment, and the free-space
 * check that scales a run down or stops it before it fills the disk.
 */

/** Workloads in the order they run. */
export const WORKLOADS = ['small-tx', 'bulk', 'paced', 'snapshot', 'many', 'fleet'] as const;
export type WorkloadName = (typeof WORKLOADS)[number];

/** Workloads of a run without BENCH_ONLY: fleet runs only when named, because it takes minutes of its own. */
export const DEFAULT_WORKLOADS: readonly WorkloadName[] = WORKLOADS.filter((name) => name !== 'fleet');

export const GIB = 1024 ** 3;
const MIB = 1024 ** 2;

const DEFAULT_SECONDS = 20;
const MAX_SECONDS = 3600;
/** Free space the benchmark always leaves on the disk. */
export const DISK_RESERVE = GIB;
/** A run stops at once with less free space than this. */
const MIN_FREE = 2 * GIB;

/** Settings of one run. */
export interface BenchOptions {
  /** BENCH_SECONDS: length of the small-tx run; the other phases scale with it. */
  seconds: number;
  /** BENCH_SCALE: factor on the data sizes (the 1 GiB database, the 256 MiB bulk load). */
  scale: number;
  /** BENCH_ONLY: the workloads to run; unset means every workload but fleet. */
  only: WorkloadName[];
  /** BENCH_DIR: parent of the run's temporary directory. */
  workRoot: string;
  /** Folder of the JSON results: bench/results in the source tree. */
  resultsDir: string;
  /** Databases of the many workload. */
  manyDatabases: number;
  /** BENCH_FLEET_DBS: databases of the fleet workload. */
  fleetDatabases: number;
  /** BENCH_FLEET_LOG: file that keeps walship's log lines of the fleet workload; unset keeps none. */
  fleetLogPath?: string;
}

/** Reads the settings; throws a message naming the variable and its accepted values. */
export function readOptions(env: NodeJS.ProcessEnv): BenchOptions {
  const seconds = numberSetting(env, 'BENCH_SECONDS', DEFAULT_SECONDS, 5, MAX_SECONDS);
  const scale = numberSetting(env, 'BENCH_SCALE', 1, 0.01, 16);

  const fleetDatabases = Math.round(numberSetting(env, 'BENCH_FLEET_DBS', 1000, 1, 10_000));

  let only: WorkloadName[] = [...DEFAULT_WORKLOADS];
  const onlySetting = env.BENCH_ONLY?.trim();
  if (onlySetting) {
    const names = onlySetting.split(',').map((name) => name.trim());
    const unknown = names.find((name) => !(WORKLOADS as readonly string[]).includes(name));
    if (unknown !== undefined) throw new Error(`BENCH_ONLY names the unknown workload "${unknown}"; use a comma-separated list of ${WORKLOADS.join(', ')}`);
    only = WORKLOADS.filter((name) => names.includes(name));
  }

  const workRoot = path.resolve(env.BENCH_DIR?.trim() || os.tmpdir());
  if (!fs.existsSync(workRoot) || !fs.statSync(workRoot).isDirectory()) {
    throw new Error(`BENCH_DIR=${workRoot} is not a directory; point it at a folder on a disk with room for a few GiB`);
  }
  const resultsDir = fileURLToPath(new URL('../../bench/results', import.meta.url));
  const fleetLog = env.BENCH_FLEET_LOG?.trim();
  return { seconds, scale, only, workRoot, resultsDir, manyDatabases: 200, fleetDatabases, ...(fleetLog ? { fleetLogPath: path.resolve(fleetLog) } : {}) };
}

function numberSetting(env: NodeJS.ProcessEnv, name: string, fallback: number, min: number, max: number): number {
  const text = env[name]?.trim();
  if (!text) return fallback;
  const value = Number(text);
  if (!Number.isFinite(value) || value < min || value > max) {
    throw new Error(`${name}=${text} is not a number from ${min} to ${max}; unset it for the default ${fallback}`);
  }
  return value;
}

/** Free bytes of the file system that contains `dir`. */
export function freeBytes(dir: string): number {
  const stats = fs.statfsSync(dir);
  return stats.bavail * stats.bsize;
}

/**
 * Free space on every disk the run writes to: the work directory and, for a
 * local s3rver, the store's directory when it is on another file system.
 */
export class DiskGuard {
  readonly #dirs: string[];

  constructor(dirs: string[]) {
    const seen = new Set<number>();
    this.#dirs = dirs.filter((dir) => {
      const dev = fs.statSync(dir).dev;
      if (seen.has(dev)) return false;
      seen.add(dev);
      return true;
    });
  }

  /** Bytes the run may still use: the smallest free space less the reserve. */
  available(): number {
    return Math.min(...this.#dirs.map(freeBytes)) - DISK_RESERVE;
  }

  /** Throws when the disk is too full to run at all. */
  checkMinimum(): void {
    const free = this.available() + DISK_RESERVE;
    if (free < MIN_FREE) {
      throw new Error(
        `only ${formatGiB(free)} free in ${this.#dirs.join(' and ')}; the benchmark needs at least ${formatGiB(MIN_FREE)} ` +
          '(a full run needs an estimated 5 GiB at its peak). Free some space, or set BENCH_DIR to a folder on a larger disk',
      );
    }
  }

  /**
   * Returns the share (0 to 1] of a phase that fits, given the bytes it needs
   * at full size, or 0 when not even `minShare` of it fits.
   */
  share(neededBytes: number, minShare: number): number {
    const available = this.available();
    if (neededBytes <= available) return 1;
    const share = available / neededBytes;
    return share >= minShare ? share : 0;
  }
}

/** Formats bytes as GiB with one decimal, or MiB below 1 GiB. */
export function formatGiB(bytes: number): string {
  return bytes >= GIB ? `${(bytes / GIB).toFixed(1)} GiB` : `${Math.round(bytes / MIB)} MiB`;
}

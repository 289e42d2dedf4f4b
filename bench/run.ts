import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import Database from 'better-sqlite3';

import { calibrate } from './bench-calibrate.js';
import type { Calibration } from './bench-calibrate.js';
import { runFleet } from './bench-fleet.js';
import { runMany } from './bench-many.js';
import { DiskGuard, formatGiB, freeBytes, readOptions } from './bench-options.js';
import type { BenchOptions, WorkloadName } from './bench-options.js';
import { killChildren } from './bench-process.js';
import { formatCalibration, formatTargets, formatWorkloads } from './bench-report.js';
import type { TargetResult, WorkloadResult } from './bench-report.js';
import type { BenchContext } from './bench-scenario.js';
import { runSnapshot } from './bench-snapshot.js';
import { deletePrefix, newRunId, openStore } from './bench-store.js';
import type { Store } from './bench-store.js';
import { runBulk, runPaced, runSmallTx } from './bench-writes.js';

/**
 * `npm run bench`: measures walship on this machine against an S3 store.
 *
 * It checks the free disk and calibrates this machine's limits: LZ4 with
 * walship's encoder, S3 PUT and GET of 8 MiB objects, and the SQLite write
 * rate of each workload with no replicator. Then it runs walship as a child
 * process on five workloads: small-tx, bulk, paced (sync-interval 1s and
 * 0), snapshot and many. It prints tables and writes
 * bench/results/<date>.json. Default runs took 233 to 303 s on a 2-core
 * machine. The fleet workload (1,000 databases in one walship process, see
 * bench-fleet.ts) runs only when named: `BENCH_ONLY=fleet npm run bench`.
 *
 * Environment:
 *   BENCH_SECONDS   length of the small-tx run; other phases scale with it (default 20)
 *   BENCH_SCALE     factor on the 1 GiB snapshot database and the 256 MiB bulk load (default 1)
 *   BENCH_ONLY      comma-separated workloads to run (default all but fleet)
 *   BENCH_FLEET_DBS databases of the fleet workload (default 1000)
 *   BENCH_FLEET_LOG file that keeps walship's log lines of the fleet workload (default none)
 *   BENCH_DIR       parent folder of the temporary files (default the OS temp folder)
 *   S3_BUCKET       run against this bucket instead of a local s3rver
 *   S3_ENDPOINT     its endpoint, for MinIO and other S3-compatible stores (default AWS)
 *   S3_REGION, S3_FORCE_PATH_STYLE; credentials from AWS_ACCESS_KEY_ID and
 *   AWS_SECRET_ACCESS_KEY (or LITESTREAM_*), as walship reads them
 *
 * Exit status: 0 when every workload ran and every restore matched its
 * source (targets may be missed), 1 otherwise.
 */

// The AWS SDK warns at every client that Node.js 20 will lose support; walship's CLI silences it the same way.
process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';

const benchStarted = performance.now();

// Share of the machine's CPU used by other processes above which the run warns that its numbers suffer.
const OTHER_CPU_WARNING = 10;

/** Prints a progress line on stderr with the time since the start. */
function progress(line: string): void {
  const seconds = ((performance.now() - benchStarted) / 1000).toFixed(1).padStart(6);
  process.stderr.write(`[${seconds} s] ${line}\n`);
}

/** Describes this machine for the report. */
function describeMachine(workDir: string): Record<string, unknown> {
  const db = new Database(':memory:');
  const sqlite = (db.prepare('SELECT sqlite_version() AS v').get() as { v: string }).v;
  db.close();
  const cpus = os.cpus();
  return {
    cpu: cpus[0]?.model ?? 'unknown',
    cores: os.availableParallelism(),
    memoryGiB: Math.round(os.totalmem() / 1024 ** 3),
    os: `${os.type()} ${os.release()}`,
    node: process.version,
    sqlite,
    workDir,
    freeDisk: formatGiB(freeBytes(workDir)),
  };
}

/** Reads the CPU times of the whole machine from /proc/stat, in clock ticks. */
function machineCpuTimes(): { total: number; steal: number; idle: number } {
  try {
    const fields = fs.readFileSync('/proc/stat', 'utf8').split('\n')[0]!.trim().split(/\s+/).slice(1).map(Number);
    // user nice system idle iowait irq softirq steal guest guest_nice; guest time is already in user.
    const total = fields.slice(0, 8).reduce((sum, value) => sum + value, 0);
    return { total, steal: fields[7] ?? 0, idle: (fields[3] ?? 0) + (fields[4] ?? 0) };
  } catch {
    return { total: 0, steal: 0, idle: 0 };
  }
}

/** Returns the CPU ticks of this process and of its children that have exited, from /proc/self/stat. */
function benchCpuTicks(): number {
  try {
    const stat = fs.readFileSync('/proc/self/stat', 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ').map(Number);
    // utime, stime, cutime, cstime: fields 14 to 17 of the line.
    return fields[11]! + fields[12]! + fields[13]! + fields[14]!;
  } catch {
    return 0;
  }
}

/** Returns the share of the machine's CPU that processes outside the benchmark used over `ms` milliseconds. */
async function otherCpuPercent(ms: number): Promise<number> {
  const before = machineCpuTimes();
  const self = benchCpuTicks();
  await new Promise((resolve) => setTimeout(resolve, ms));
  const after = machineCpuTimes();
  const ticks = after.total - before.total;
  if (ticks <= 0) return 0;
  const busy = ticks - (after.idle - before.idle);
  return Math.max(0, ((busy - (benchCpuTicks() - self)) / ticks) * 100);
}

/** Describes the walship code under test: the package version, the git commit and whether src/ has changes not committed. */
function describeCode(): Record<string, unknown> {
  const root = fileURLToPath(new URL('../..', import.meta.url));
  const version = (JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8')) as { version?: string }).version;
  try {
    const commit = execFileSync('git', ['-C', root, 'rev-parse', '--short', 'HEAD'], { encoding: 'utf8' }).trim();
    const changed = execFileSync('git', ['-C', root, 'status', '--porcelain', '--', 'src', 'workers'], { encoding: 'utf8' }).trim() !== '';
    return { version, commit, uncommittedChangesInSrc: changed };
  } catch {
    return { version };
  }
}

/** Returns the command that reproduces the run: the settings given and the script. */
function describeCommand(): string {
  const names = ['BENCH_SECONDS', 'BENCH_SCALE', 'BENCH_ONLY', 'BENCH_FLEET_DBS', 'BENCH_FLEET_LOG', 'BENCH_DIR', 'S3_ENDPOINT', 'S3_BUCKET', 'S3_REGION', 'S3_FORCE_PATH_STYLE'];
  const settings = names.filter((name) => process.env[name]).map((name) => `${name}=${process.env[name]}`);
  return [...settings, 'node dist/bench/run.js'].join(' ');
}

/** Runs one workload by name. */
function runWorkload(ctx: BenchContext, name: WorkloadName): Promise<WorkloadResult[]> {
  switch (name) {
    case 'small-tx':
      return runSmallTx(ctx).then((r) => [r]);
    case 'bulk':
      return runBulk(ctx).then((r) => [r]);
    case 'paced':
      return sequence([() => runPaced(ctx, '1s'), () => runPaced(ctx, '0s')]);
    case 'snapshot':
      return runSnapshot(ctx).then((r) => [r]);
    case 'many':
      return runMany(ctx).then((r) => [r]);
    case 'fleet':
      return runFleet(ctx).then((r) => [r]);
  }
}

/** Runs the steps one after another; a failed step is recorded and the next one still runs. */
async function sequence(steps: (() => Promise<WorkloadResult>)[]): Promise<WorkloadResult[]> {
  const results: WorkloadResult[] = [];
  for (const step of steps) results.push(await step());
  return results;
}

/** Returns seconds of each round of a calibration measurement for a run of `options.seconds`. */
function calibrationSeconds(options: BenchOptions): number {
  return Math.min(5, Math.max(0.75, options.seconds / 20));
}

async function main(): Promise<number> {
  const options = readOptions(process.env);
  const date = new Date();
  const runId = newRunId(date);
  const workDir = fs.mkdtempSync(path.join(options.workRoot, 'walship-bench-'));
  let store: Store | undefined;

  // Ctrl-C ends every child by PID and removes the temporary files.
  process.once('SIGINT', () => {
    progress('interrupted: ending child processes and removing temporary files');
    const ended = killChildren();
    if (ended.length > 0) progress(`ended ${ended.join(', ')}`);
    fs.rmSync(workDir, { recursive: true, force: true });
    if (store?.directory !== undefined) fs.rmSync(store.directory, { recursive: true, force: true });
    process.exit(130);
  });

  const targets: TargetResult[] = [];
  const workloads: WorkloadResult[] = [];
  const othersAtStart = await otherCpuPercent(1000);
  const cpuBefore = machineCpuTimes();
  const selfBefore = benchCpuTicks();
  const loadBefore = os.loadavg()[0]!;
  let calibration: Calibration | undefined;
  let failed = false;
  try {
    let disk = new DiskGuard([workDir]);
    disk.checkMinimum();
    progress(`walship benchmark: ${options.only.join(', ')}; BENCH_SECONDS=${options.seconds}, BENCH_SCALE=${options.scale}; work folder ${workDir}`);
    if (othersAtStart > OTHER_CPU_WARNING) {
      progress(`warning: other processes use ${othersAtStart.toFixed(0)}% of the CPU; they compete with the benchmark and lower its numbers`);
    }

    store = await openStore(process.env, runId, options.workRoot);
    progress(`store: ${store.description}, prefix ${store.runPrefix}/`);
    if (store.directory !== undefined) {
      disk = new DiskGuard([workDir, store.directory]);
      disk.checkMinimum();
    }

    calibration = await calibrate(store, calibrationSeconds(options), 1024, progress);
    const ctx: BenchContext = { options, store, calibration, workDir, disk, targets, progress };

    for (const name of options.only) {
      try {
        workloads.push(...(await runWorkload(ctx, name)));
      } catch (err) {
        failed = true;
        const message = err instanceof Error ? err.message : String(err);
        progress(`${name} failed: ${message}`);
        workloads.push({ name, description: '', notes: [], skipped: `failed: ${message}`, extra: {} });
        targets.push({ workload: name, target: 'workload runs to the end', measured: message.slice(0, 200), met: false });
      }
      const last = workloads.at(-1);
      if (last?.skipped !== undefined) progress(`${last.name} skipped: ${last.skipped}`);
    }
  } finally {
    if (store !== undefined) {
      if (store.kind === 's3') await deletePrefix(store, store.runPrefix).catch((err: unknown) => progress(`cannot delete ${store!.runPrefix}: ${(err as Error).message}`));
      await store.close();
    }
    const ended = killChildren();
    if (ended.length > 0) progress(`ended leftover processes: ${ended.join(', ')}`);
    fs.rmSync(workDir, { recursive: true, force: true });
  }

  if (workloads.some((w) => w.restore !== undefined && !w.restore.identical)) failed = true;
  const cpuAfter = machineCpuTimes();
  const ticks = cpuAfter.total - cpuBefore.total;
  const busyTicks = ticks - (cpuAfter.idle - cpuBefore.idle);
  // Every child has exited and been waited for by now, so its CPU time is in the benchmark's cutime and cstime.
  const benchTicks = benchCpuTicks() - selfBefore;
  const cpu = {
    busyPercent: ticks > 0 ? (busyTicks / ticks) * 100 : 0,
    // CPU that processes outside the benchmark used: they competed with it.
    otherProcessesPercent: ticks > 0 ? Math.max(0, ((busyTicks - benchTicks) / ticks) * 100) : 0,
    otherProcessesPercentAtStart: othersAtStart,
    // Time the hypervisor gave this virtual machine's CPUs to other guests.
    stealPercent: ticks > 0 ? ((cpuAfter.steal - cpuBefore.steal) / ticks) * 100 : 0,
    loadAverageBefore: loadBefore,
    loadAverageAfter: os.loadavg()[0]!,
  };
  const report = {
    date: date.toISOString(),
    command: describeCommand(),
    walship: describeCode(),
    durationSeconds: (performance.now() - benchStarted) / 1000,
    machine: { ...describeMachine(options.workRoot), ...cpu },
    store: store === undefined ? undefined : { kind: store.kind, description: store.description },
    options: { seconds: options.seconds, scale: options.scale, only: options.only },
    calibration,
    workloads,
    targets,
  };

  if (calibration !== undefined) {
    process.stdout.write(`\nCalibration (${store?.description ?? ''})\n${formatCalibration(calibration, workloads)}\n`);
  }
  process.stdout.write(`\nWorkloads\n${formatWorkloads(workloads)}\n`);
  for (const w of workloads) {
    const lines = [...(w.skipped !== undefined ? [`skipped: ${w.skipped}`] : []), ...w.notes, ...(w.walship?.problems ?? []).slice(0, 5)];
    if (lines.length > 0) process.stdout.write(`\n${w.name}:\n${lines.map((line) => `  ${line}`).join('\n')}\n`);
  }
  process.stdout.write(`\nTargets\n${formatTargets(targets)}\n`);

  fs.mkdirSync(options.resultsDir, { recursive: true });
  const file = path.join(options.resultsDir, `${date.toISOString().replace(/[:.]/g, '-')}.json`);
  fs.writeFileSync(file, `${JSON.stringify(report, null, 2)}\n`);
  process.stdout.write(
    `\nMachine: ${os.availableParallelism()} cores; over the run the CPU was ${cpu.busyPercent.toFixed(0)}% busy, ` +
      `${cpu.otherProcessesPercent.toFixed(1)}% of it used by processes outside the benchmark ` +
      `(${cpu.otherProcessesPercentAtStart.toFixed(1)}% in the second before the start), ${cpu.stealPercent.toFixed(1)}% stolen by the hypervisor\n`,
  );
  process.stdout.write(`\nResults written to ${file} (${report.durationSeconds.toFixed(0)} s)\n`);
  return failed ? 1 : 0;
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    process.stderr.write(`benchmark stopped: ${err instanceof Error ? err.message : String(err)}\n`);
    killChildren();
    process.exit(1);
  },
);

import { fork } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';

import type { HashResult, VerifyResult, WriteResult, WriterJob, WriterMessage } from './bench-jobs.js';

/**
 * Child processes of the benchmark: every one is registered here, so that an
 * interrupted run ends each of them by its PID and leaves nothing running.
 */

const live = new Map<number, { child: ChildProcess; label: string }>();

/** Registers a child so that `killChildren` ends it; it leaves the registry when it exits. */
export function trackChild(child: ChildProcess, label: string): void {
  const pid = child.pid;
  if (pid === undefined) return;
  live.set(pid, { child, label });
  child.once('exit', () => live.delete(pid));
}

/** Ends every child still running, by PID, and returns their labels. */
export function killChildren(): string[] {
  const labels: string[] = [];
  for (const [pid, { label }] of live) {
    try {
      process.kill(pid, 'SIGKILL');
      labels.push(`${label} (pid ${pid})`);
    } catch {
      // It exited between the check and the kill.
    }
  }
  live.clear();
  return labels;
}

/** A writer process running one job. */
export interface RunningJob<T> {
  child: ChildProcess;
  result: Promise<T>;
  /** Asks a writing job to stop early; it then reports what it wrote. */
  stop(): void;
}

const WRITER_SCRIPT = fileURLToPath(new URL('./bench-writer.js', import.meta.url));

/**
 * Forks a writer process for one job. The result rejects when the job fails,
 * when the process dies, or after `timeoutMs`, when the process is killed.
 */
export function startJob<T extends WriteResult | HashResult | VerifyResult>(job: WriterJob, timeoutMs: number): RunningJob<T> {
  const child = fork(WRITER_SCRIPT, [], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  trackChild(child, `writer ${job.kind}`);

  const result = new Promise<T>((resolve, reject) => {
    let outcome: WriterMessage | undefined;
    const timer = setTimeout(() => {
      reject(new Error(`writer job ${job.kind} (pid ${child.pid}) did not finish within ${Math.round(timeoutMs / 1000)} s; killed it`));
      child.kill('SIGKILL');
    }, timeoutMs);

    child.on('message', (message: WriterMessage) => {
      outcome = message;
    });
    child.on('error', (err) => {
      clearTimeout(timer);
      reject(new Error(`cannot run writer process ${WRITER_SCRIPT}: ${err.message}`, { cause: err }));
    });
    // 'close' comes after the IPC channel closed, so every message has arrived by
    // then; 'exit' can come before a large last message was read.
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      if (outcome?.type === 'done') resolve(outcome.result as T);
      else if (outcome?.type === 'error') reject(new Error(`writer job ${job.kind} failed: ${outcome.message}`));
      else reject(new Error(`writer job ${job.kind} (pid ${child.pid}) exited with ${signal ?? `status ${code}`} before reporting`));
    });
  });
  child.send(job);

  return {
    child,
    result,
    stop: () => {
      if (child.connected) child.send('stop');
    },
  };
}

/** Runs one job in a writer process and returns its result. */
export function runJob<T extends WriteResult | HashResult | VerifyResult>(job: WriterJob, timeoutMs: number): Promise<T> {
  return startJob<T>(job, timeoutMs).result;
}

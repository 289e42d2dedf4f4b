import { spawn } from 'node:child_process';
import fs from 'node:fs';
import { createInterface } from 'node:readline';
import type { Readable } from 'node:stream';

import { GetObjectCommand } from '@aws-sdk/client-s3';

import { LZ4FrameDecoder, loadHasher } from '../src/lz4.js';
import { compareHashes } from './bench-jobs.js';
import type { HashResult } from './bench-jobs.js';
import { runJob, trackChild } from './bench-process.js';
import type { Store } from './bench-store.js';
import { CLI_SCRIPT } from './bench-walship.js';

/**
 * Restore checks: `walship restore` in a child process, timed, then the
 * restored rows compared with the source's by hash, plus SQLite's integrity
 * check of the copy.
 */

/** Outcome of one restore and comparison. */
export interface RestoreCheck {
  /** Wall-clock seconds of `walship restore`, process start included. */
  seconds: number;
  /** Seconds walship logged from the first listing to the restored file in place. */
  loggedSeconds: number;
  /** Size of the restored database file. */
  bytes: number;
  identical: boolean;
  /** The differences found, or the row count and hash when identical. */
  detail: string;
  /** Seconds SQLite's integrity check of the restored file took in the comparison, about what the restore spends on its own check. */
  integritySeconds: number;
}

/** Restores `dbPath` of a walship config into `output` with the CLI and compares it with the source. */
export async function restoreAndCompare(configPath: string, dbPath: string, output: string, timeoutMs: number): Promise<RestoreCheck> {
  const run = await runRestoreCli(configPath, dbPath, output, timeoutMs);
  if (run.error !== '') return { seconds: run.seconds, loggedSeconds: 0, bytes: 0, identical: false, detail: `restore failed: ${run.error}`, integritySeconds: 0 };

  try {
    const [source, copy] = await Promise.all([
      runJob<HashResult>({ kind: 'hash', db: dbPath }, timeoutMs),
      runJob<HashResult>({ kind: 'hash', db: output }, timeoutMs),
    ]);
    const differences = compareHashes(source, copy);
    const detail = differences === '' ? `${source.rows} rows, sha256 ${source.sha256.slice(0, 12)}, integrity ok` : differences;
    return { seconds: run.seconds, loggedSeconds: run.loggedSeconds, bytes: run.bytes, identical: differences === '', detail, integritySeconds: copy.integritySeconds };
  } finally {
    for (const suffix of ['', '-wal', '-shm']) fs.rmSync(`${output}${suffix}`, { force: true });
  }
}

/** Runs `walship restore -config FILE -o OUTPUT DB_PATH` and reads its `restore finished` line. */
function runRestoreCli(
  configPath: string,
  dbPath: string,
  output: string,
  timeoutMs: number,
): Promise<{ seconds: number; loggedSeconds: number; bytes: number; error: string }> {
  const started = performance.now();
  const child = spawn(process.execPath, [CLI_SCRIPT, 'restore', '-config', configPath, '-o', output, '-log-format', 'json', dbPath], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  trackChild(child, 'walship restore');

  let loggedSeconds = 0;
  let bytes = 0;
  const stderr: string[] = [];
  createInterface({ input: child.stderr! }).on('line', (line) => {
    try {
      const record = JSON.parse(line) as Record<string, unknown>;
      if (record.msg === 'restore finished') {
        loggedSeconds = parseInt(String(record.elapsed ?? '0'), 10) / 1000;
        bytes = Number(record.bytes ?? 0);
      }
      if (record.level === 'error' || record.level === 'warn') stderr.push(String(record.msg));
    } catch {
      stderr.push(line);
    }
  });

  return new Promise((resolve) => {
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    // 'close' comes once stderr is drained, so the `restore finished` line has been read.
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      const seconds = (performance.now() - started) / 1000;
      const error = code === 0 ? '' : `exit ${signal ?? code}: ${stderr.slice(-3).join(' | ') || 'no message'}`;
      resolve({ seconds, loggedSeconds, bytes, error });
    });
  });
}

/**
 * Downloads one object and decodes its LZ4 frame without writing the
 * output anywhere: the most any restore of it could reach. Returns raw MB/s.
 */
export async function getAndDecode(store: Store, key: string): Promise<{ rawBytes: number; seconds: number }> {
  const started = performance.now();
  const out = await store.sdk.send(new GetObjectCommand({ Bucket: store.bucket, Key: key }));
  const decoder = new LZ4FrameDecoder(await loadHasher());
  let rawBytes = 0;
  let pending: Buffer[] = [];
  let pendingBytes = 0;
  // Pieces are gathered to 1 MiB before decoding, as walship's restore does.
  for await (const chunk of out.Body as Readable) {
    pending.push(chunk as Buffer);
    pendingBytes += (chunk as Buffer).length;
    if (pendingBytes < 1024 * 1024) continue;
    for (const part of decoder.push(Buffer.concat(pending, pendingBytes))) rawBytes += part.length;
    pending = [];
    pendingBytes = 0;
  }
  if (pendingBytes > 0) for (const part of decoder.push(Buffer.concat(pending, pendingBytes))) rawBytes += part.length;
  decoder.finish();
  return { rawBytes, seconds: (performance.now() - started) / 1000 };
}

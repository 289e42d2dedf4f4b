import { randomBytes } from 'node:crypto';
import os from 'node:os';
import { Worker } from 'node:worker_threads';

import { GetObjectCommand, PutObjectCommand } from '@aws-sdk/client-s3';

import type { Lz4WorkerData, Lz4WorkerMessage } from './bench-lz4-worker.js';
import { deletePrefix } from './bench-store.js';
import type { Store } from './bench-store.js';

/**
 * Calibration of this machine's limits, measured in the same run as the
 * workloads: LZ4 frame compression and decompression with walship's encoder
 * in worker threads, and S3 PUT and GET of 8 MiB objects against the store at
 * the concurrencies walship's pipeline uses.
 */

/** Bytes in a megabyte: rates are reported in MB/s of 10^6 bytes. */
export const MB = 1e6;
export const MIB = 1024 * 1024;

/** Size of the objects and of the LZ4 sample. */
const OBJECT_BYTES = 8 * MIB;

/** Segment downloads walship's restore keeps in flight (its default -parallelism). */
export const RESTORE_PARALLELISM = 8;

/** Rounds of every measurement; the best one counts. */
const ROUNDS = 2;

/** Parts lib-storage uploads at once for one multipart object in walship's S3 client. */
const MULTIPART_QUEUE = 4;

/** Worker threads of walship's ship pool: the CPU count, at least 2, at most 8 (src/pool.ts). */
export function shipPoolThreads(): number {
  return Math.min(8, Math.max(2, os.availableParallelism()));
}

/** Results of the calibration. */
export interface Calibration {
  lz4: {
    workers: number;
    /** Raw input MB/s of one worker compressing. */
    compressOneMBps: number;
    /** Raw input MB/s of all workers compressing at once. */
    compressAllMBps: number;
    /** Raw output MB/s of one worker decompressing. */
    decompressOneMBps: number;
    /** Raw bytes over compressed bytes of the row sample. */
    ratio: number;
  };
  s3: {
    objectBytes: number;
    /** Stored MB/s of PutObject by concurrency. */
    put: Record<string, number>;
    /** Stored MB/s of GetObject by concurrency. */
    get: Record<string, number>;
  };
  poolThreads: number;
  /** Raw WAL MB/s this machine can compress and store: the limit shipping is compared with. */
  shipLimitMBps: number;
  shipLimitFormula: string;
  /** Raw MB/s this machine can download and decompress: the limit restore is compared with. */
  restoreLimitMBps: number;
  restoreLimitFormula: string;
}

/**
 * Runs the calibration. Every measurement runs in ROUNDS rounds of
 * `seconds` each, interleaved with the other measurements, and keeps the
 * best round. A limit is what the machine can do, so a round slowed by
 * another process or by CPU steal of the virtual machine is not the limit.
 */
export async function calibrate(store: Store, seconds: number, rowBytes: number, progress: (line: string) => void): Promise<Calibration> {
  const workers = shipPoolThreads();

  progress(`calibration: LZ4 with 1 and ${workers} worker threads, best of ${ROUNDS} rounds of ${seconds} s`);
  let one = { mbps: 0, ratio: 1 };
  let all = { mbps: 0, ratio: 1 };
  let decompress = { mbps: 0, ratio: 1 };
  for (let round = 0; round < ROUNDS; round++) {
    one = best(one, await runLz4('compress', 1, seconds, rowBytes));
    all = best(all, await runLz4('compress', workers, seconds, rowBytes));
    decompress = best(decompress, await runLz4('decompress', 1, seconds, rowBytes));
  }

  const putConcurrency = [...new Set([1, workers, MULTIPART_QUEUE])].sort((a, b) => a - b);
  const getConcurrency = [1, RESTORE_PARALLELISM];
  progress(
    `calibration: S3 PUT of 8 MiB objects at concurrency ${putConcurrency.join(', ')}; GET at ${getConcurrency.join(', ')}; ` +
      `best of ${ROUNDS} rounds of ${seconds} s`,
  );
  const prefix = `${store.runPrefix}/calibration`;
  const put: Record<string, number> = {};
  const get: Record<string, number> = {};
  const keys: string[] = [];
  try {
    const body = randomBytes(OBJECT_BYTES);
    // One request each way first, so that connection setup is not measured.
    await putObject(store, `${prefix}/warm-up`, body);
    await getObject(store, `${prefix}/warm-up`);
    for (let round = 0; round < ROUNDS; round++) {
      for (const concurrency of putConcurrency) {
        put[concurrency] = Math.max(put[concurrency] ?? 0, await measurePut(store, prefix, body, concurrency, seconds, keys));
      }
      for (const concurrency of getConcurrency) {
        get[concurrency] = Math.max(get[concurrency] ?? 0, await measureGet(store, keys, concurrency, seconds));
      }
    }
  } finally {
    await deletePrefix(store, prefix);
  }

  const ratio = one.ratio;
  const putAtPool = put[workers]!;
  const shipLimitMBps = Math.min(all.mbps, putAtPool * ratio);
  const restoreLimitMBps = Math.min(get[1]! * ratio, decompress.mbps);
  return {
    lz4: { workers, compressOneMBps: one.mbps, compressAllMBps: all.mbps, decompressOneMBps: decompress.mbps, ratio },
    s3: { objectBytes: OBJECT_BYTES, put, get },
    poolThreads: workers,
    shipLimitMBps,
    shipLimitFormula: `min(LZ4 compress with ${workers} workers, PUT at concurrency ${workers} x compression ratio ${ratio.toFixed(2)})`,
    restoreLimitMBps,
    restoreLimitFormula: `min(GET at concurrency 1 x compression ratio ${ratio.toFixed(2)}, LZ4 decompress with 1 worker)`,
  };
}

/** Runs `count` LZ4 workers side by side for `seconds` and returns their summed raw MB/s and the ratio. */
async function runLz4(op: Lz4WorkerData['op'], count: number, seconds: number, rowBytes: number): Promise<{ mbps: number; ratio: number }> {
  const url = new URL('./bench-lz4-worker.js', import.meta.url);
  const data: Lz4WorkerData = { op, sampleBytes: OBJECT_BYTES, rowBytes };
  const workers = Array.from({ length: count }, () => new Worker(url, { workerData: data }));

  try {
    const ready = await Promise.all(workers.map((worker) => nextMessage(worker)));
    const done = await Promise.all(
      workers.map((worker) => {
        const result = nextMessage(worker);
        worker.postMessage(seconds * 1000);
        return result;
      }),
    );

    let rawBytes = 0;
    let longest = 0;
    for (const message of done) {
      if (message.type !== 'done') throw new Error('LZ4 calibration worker sent no result');
      // Decompression's raw bytes are its output; compression's are its input.
      rawBytes += op === 'compress' ? message.inputBytes : message.outputBytes;
      longest = Math.max(longest, message.seconds);
    }
    const ratio = ready[0]?.type === 'ready' ? ready[0].ratio : 1;
    return { mbps: rawBytes / MB / longest, ratio };
  } finally {
    await Promise.all(workers.map((worker) => worker.terminate()));
  }
}

function best(a: { mbps: number; ratio: number }, b: { mbps: number; ratio: number }): { mbps: number; ratio: number } {
  return b.mbps > a.mbps ? b : a;
}

function nextMessage(worker: Worker): Promise<Lz4WorkerMessage> {
  return new Promise((resolve, reject) => {
    worker.once('message', resolve);
    worker.once('error', reject);
  });
}

/** PUTs 8 MiB objects from `concurrency` loops for `seconds`; returns stored MB/s and adds the keys written. */
async function measurePut(store: Store, prefix: string, body: Buffer, concurrency: number, seconds: number, keys: string[]): Promise<number> {
  const started = performance.now();
  const deadline = started + seconds * 1000;
  let bytes = 0;
  await Promise.all(
    Array.from({ length: concurrency }, async (_, loop) => {
      for (let i = 0; performance.now() < deadline; i++) {
        const key = `${prefix}/put-c${concurrency}-${loop}-${i}`;
        await putObject(store, key, body);
        keys.push(key);
        bytes += body.length;
      }
    }),
  );
  return bytes / MB / ((performance.now() - started) / 1000);
}

/** GETs the objects in `keys` round robin from `concurrency` loops for `seconds`; returns stored MB/s. */
async function measureGet(store: Store, keys: string[], concurrency: number, seconds: number): Promise<number> {
  const started = performance.now();
  const deadline = started + seconds * 1000;
  let bytes = 0;
  let next = 0;
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (performance.now() < deadline) {
        const key = keys[next++ % keys.length]!;
        const received = await getObject(store, key);
        bytes += received;
      }
    }),
  );
  return bytes / MB / ((performance.now() - started) / 1000);
}

async function putObject(store: Store, key: string, body: Buffer): Promise<void> {
  await store.sdk.send(new PutObjectCommand({ Bucket: store.bucket, Key: key, Body: body }));
}

async function getObject(store: Store, key: string): Promise<number> {
  const out = await store.sdk.send(new GetObjectCommand({ Bucket: store.bucket, Key: key }));
  const bytes = await out.Body!.transformToByteArray();
  return bytes.length;
}

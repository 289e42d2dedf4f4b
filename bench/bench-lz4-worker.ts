import { parentPort, workerData } from 'node:worker_threads';

import { decodeFrame, encodeFrame } from '../src/lz4.js';
import { rowSample } from './bench-rows.js';

/**
 * Worker thread of the LZ4 calibration: compresses (or decompresses) a sample
 * of row data with walship's frame encoder for a given time and reports the
 * bytes it processed. The parent starts all workers at once after each one
 * has built its sample, so that they run side by side.
 */

/** Settings of one calibration worker. */
export interface Lz4WorkerData {
  op: 'compress' | 'decompress';
  sampleBytes: number;
  rowBytes: number;
}

/** Messages from the worker: `ready` once the sample is built, then the measurement. */
export type Lz4WorkerMessage =
  | { type: 'ready'; ratio: number }
  | { type: 'done'; inputBytes: number; outputBytes: number; seconds: number };

const data = workerData as Lz4WorkerData;
const sample = rowSample(data.sampleBytes, data.rowBytes);
const frame = await encodeFrame(sample);
parentPort!.postMessage({ type: 'ready', ratio: sample.length / frame.length } satisfies Lz4WorkerMessage);

parentPort!.once('message', async (durationMs: number) => {
  const started = performance.now();
  let inputBytes = 0;
  let outputBytes = 0;
  while (performance.now() - started < durationMs) {
    if (data.op === 'compress') {
      inputBytes += sample.length;
      outputBytes += (await encodeFrame(sample)).length;
    } else {
      inputBytes += frame.length;
      outputBytes += (await decodeFrame(frame)).length;
    }
  }
  const seconds = (performance.now() - started) / 1000;
  parentPort!.postMessage({ type: 'done', inputBytes, outputBytes, seconds } satisfies Lz4WorkerMessage);
});

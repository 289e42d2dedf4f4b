import cliProgress from 'cli-progress';

import type { Logger } from '../logger.js';
import type { RestoreProgress } from '../restore.js';

/**
 * Shows a restore's download progress: a bar on a terminal, with bytes,
 * objects, rate and ETA. When stderr is a file or a pipe, a plain log line
 * every few seconds gives container logs a heartbeat without carriage returns.
 */

/** Milliseconds between plain progress lines. */
export const PROGRESS_LINE_INTERVAL_MS = 5000;

/** Receives progress updates and ends the display. */
export interface ProgressDisplay {
  update(progress: RestoreProgress): void;
  /** Removes the bar, or writes a last line. A second call does nothing. */
  stop(): void;
}

/** Returns a bar when `stream` is a terminal, else a plain-line display through `logger`. */
export function progressDisplay(stream: NodeJS.WriteStream, logger: Logger, now: () => number = Date.now): ProgressDisplay {
  return stream.isTTY ? new Bar(stream, now) : new Lines(logger, now);
}

/** Formats a byte count with a binary unit: 512 B, 1.5 MiB. */
export function formatBytes(bytes: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return unit === 0 ? `${value} B` : `${value.toFixed(1)} ${units[unit]}`;
}

/** Bytes per second since `started`, or 0 before any time has passed. */
function rate(bytes: number, started: number, now: number): number {
  const seconds = (now - started) / 1000;
  return seconds > 0 ? bytes / seconds : 0;
}

/** The terminal bar, redrawn at most a few times a second by cli-progress. */
class Bar implements ProgressDisplay {
  #bar: cliProgress.SingleBar;
  #started: number;
  #now: () => number;
  #running = false;

  constructor(stream: NodeJS.WriteStream, now: () => number) {
    this.#now = now;
    this.#started = now();
    this.#bar = new cliProgress.SingleBar({
      stream,
      format: 'restore {bar} {percentage}% | {doneBytes} of {totalBytes} | {objects} objects | {rate}/s | ETA {eta_formatted}',
      barsize: 30,
      fps: 5,
      hideCursor: null,
      clearOnComplete: false,
      etaBuffer: 20,
    });
  }

  update(progress: RestoreProgress): void {
    const payload = {
      doneBytes: formatBytes(progress.bytesDone),
      totalBytes: formatBytes(progress.bytesTotal),
      objects: `${progress.objectsDone}/${progress.objectsTotal}`,
      rate: formatBytes(Math.round(rate(progress.bytesDone, this.#started, this.#now()))),
    };
    // A point-in-time restore can stop before the planned total, and the
    // total counts stored bytes, so the bar is filled when the restore is done.
    const total = Math.max(1, progress.bytesTotal);
    const value = progress.done ? total : Math.min(progress.bytesDone, total);
    if (!this.#running) {
      this.#bar.start(total, value, payload);
      this.#running = true;
      return;
    }
    this.#bar.setTotal(total);
    this.#bar.update(value, payload);
  }

  stop(): void {
    if (!this.#running) return;
    this.#running = false;
    this.#bar.stop();
  }
}

/** Plain progress lines, at most one per PROGRESS_LINE_INTERVAL_MS, and one when done. */
class Lines implements ProgressDisplay {
  #logger: Logger;
  #now: () => number;
  #started: number;
  #lastLine: number;
  #last: RestoreProgress | undefined;
  #ended = false;

  constructor(logger: Logger, now: () => number) {
    this.#logger = logger;
    this.#now = now;
    this.#started = now();
    this.#lastLine = this.#started;
  }

  update(progress: RestoreProgress): void {
    this.#last = progress;
    const now = this.#now();
    if (progress.done || now - this.#lastLine < PROGRESS_LINE_INTERVAL_MS) return;
    this.#lastLine = now;
    this.#write(progress, now);
  }

  stop(): void {
    if (this.#ended) return;
    this.#ended = true;
    // A restore shorter than one interval printed nothing, and needs no line.
    if (this.#last !== undefined && this.#lastLine !== this.#started) this.#write(this.#last, this.#now());
  }

  #write(progress: RestoreProgress, now: number): void {
    const speed = rate(progress.bytesDone, this.#started, now);
    const left = Math.max(0, progress.bytesTotal - progress.bytesDone);
    let eta: number | undefined;
    if (progress.done) eta = 0;
    else if (speed > 0) eta = Math.ceil(left / speed);
    const percent = progress.bytesTotal > 0 ? Math.min(100, Math.floor((progress.bytesDone / progress.bytesTotal) * 100)) : 100;
    this.#logger.info(
      {
        bytes: progress.bytesDone,
        total: progress.bytesTotal,
        objects: `${progress.objectsDone}/${progress.objectsTotal}`,
        rate: `${formatBytes(Math.round(speed))}/s`,
        eta: eta === undefined ? undefined : `${eta}s`,
        elapsed: `${now - this.#started}ms`,
      },
      `restore progress ${percent}%: ${formatBytes(progress.bytesDone)} of ${formatBytes(progress.bytesTotal)}`,
    );
  }
}

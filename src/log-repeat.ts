import { toText } from './logger.js';
import type { LogFormat } from './logger.js';

/** Options of a RepeatLimiter. */
export interface RepeatLimiterOptions {
  /** Destination of the lines that pass. */
  out: { write(line: string): unknown };
  /** Format written to `out`; the limiter itself receives pino's JSON lines. */
  format: LogFormat;
  /** Window in ms during which an identical warning or error is shown once. Defaults to 60 s. */
  windowMs?: number;
  /** Distinct repeating lines tracked at once; the oldest is dropped past it. Defaults to 1000. */
  maxKeys?: number;
}

// Fields that identify a repeated problem. Fields that change on every
// attempt (attempt=, pos=, elapsed=, time) do not make a line different.
const KEY_FIELDS = ['level', 'msg', 'db', 'replica', 'dir', 'path', 'key', 'err', 'reason'];

// Levels whose repeats are rate-limited, as the logger writes their labels.
const LIMITED_LEVELS = new Set(['warn', 'error', 'fatal']);

interface Repeat {
  windowStart: number;
  /** Identical lines dropped since the window started. */
  suppressed: number;
  /** The last dropped record, written with its count when the window ends. */
  last: Record<string, unknown> | undefined;
}

/**
 * A pino destination that rate-limits repeated warnings and errors. The first
 * line of a problem is written at once. Identical lines within the window
 * (same level, message, database, replica and error) are only counted. When
 * the window ends, the last of them is written with `repeated=N`, the number
 * of lines it replaces. Other levels pass through.
 */
export class RepeatLimiter {
  #out: RepeatLimiterOptions['out'];
  #format: LogFormat;
  #windowMs: number;
  #maxKeys: number;
  #repeats = new Map<string, Repeat>();
  #timer: NodeJS.Timeout | undefined;

  constructor(options: RepeatLimiterOptions) {
    this.#out = options.out;
    this.#format = options.format;
    this.#windowMs = options.windowMs ?? 60_000;
    this.#maxKeys = options.maxKeys ?? 1000;
  }

  /** Receives one JSON line from pino. */
  write(line: string): void {
    let record: Record<string, unknown>;
    try {
      record = JSON.parse(line) as Record<string, unknown>;
    } catch {
      this.#emit(line);
      return;
    }
    if (!LIMITED_LEVELS.has(String(record.level))) {
      this.#emit(line);
      return;
    }

    const key = JSON.stringify(KEY_FIELDS.map((field) => record[field]));
    const now = Date.now();
    const repeat = this.#repeats.get(key);
    if (repeat !== undefined && now - repeat.windowStart < this.#windowMs) {
      repeat.suppressed++;
      repeat.last = record;
      return;
    }

    // A window that ended without a sweep reports its count first.
    if (repeat !== undefined) this.#report(repeat);
    this.#repeats.delete(key);
    this.#repeats.set(key, { windowStart: now, suppressed: 0, last: undefined });
    this.#trim();
    this.#emit(line);
    this.#schedule();
  }

  /** Writes the counts of every open window now, e.g. before the process exits. */
  flush(): void {
    for (const repeat of this.#repeats.values()) this.#report(repeat);
    this.#repeats.clear();
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = undefined;
  }

  // Writes the counted lines of windows that have ended, and removes those windows.
  #sweep(): void {
    this.#timer = undefined;
    const now = Date.now();
    for (const [key, repeat] of this.#repeats) {
      if (now - repeat.windowStart < this.#windowMs) continue;
      this.#report(repeat);
      this.#repeats.delete(key);
    }
    this.#schedule();
  }

  #schedule(): void {
    if (this.#timer || this.#repeats.size === 0) return;
    // The sweep only reports counts, so it must not keep the process alive.
    this.#timer = setTimeout(() => this.#sweep(), this.#windowMs);
    this.#timer.unref();
  }

  #report(repeat: Repeat): void {
    if (repeat.suppressed === 0 || repeat.last === undefined) return;
    this.#emit(JSON.stringify({ ...repeat.last, repeated: repeat.suppressed }) + '\n');
    repeat.suppressed = 0;
    repeat.last = undefined;
  }

  // Drops the oldest tracked lines past maxKeys; a Map iterates in insertion order.
  #trim(): void {
    for (const key of this.#repeats.keys()) {
      if (this.#repeats.size <= this.#maxKeys) return;
      this.#report(this.#repeats.get(key)!);
      this.#repeats.delete(key);
    }
  }

  #emit(line: string): void {
    this.#out.write(this.#format === 'json' ? line : toText(line));
  }
}

import pino from 'pino';
import type { Logger } from 'pino';

export type { Logger } from 'pino';

/** Output format of log lines. */
export type LogFormat = 'text' | 'json';

/** Options for createLogger. */
export interface LoggerOptions {
  /** Minimum level: trace, debug, info, warn, error. Defaults to info. */
  level?: string;
  /** `text` (default) prints `time LEVEL message key=value ...`; `json` prints one JSON object a line. */
  format?: LogFormat;
  /** Destination of log lines. Defaults to standard error. */
  destination?: { write(line: string): unknown };
}

// Field names whose values must never reach a log line, at any depth pino checks.
const SECRET_PATHS = [
  'secretAccessKey',
  'accessKeyId',
  'sessionToken',
  '*.secretAccessKey',
  '*.accessKeyId',
  '*.sessionToken',
  'credentials',
  '*.credentials',
];

/**
 * Creates the process logger: pino underneath, with text lines in logfmt style
 * by default (`new transaction: db=users pre=... post=... elapsed=12ms`) and
 * credentials redacted.
 */
export function createLogger(options: LoggerOptions = {}): Logger {
  const format = options.format ?? 'text';
  const out = options.destination ?? process.stderr;
  const destination = format === 'json' ? out : { write: (line: string) => out.write(toText(line)) };

  return pino(
    {
      level: options.level ?? 'info',
      base: undefined,
      timestamp: pino.stdTimeFunctions.isoTime,
      formatters: { level: (label) => ({ level: label }) },
      redact: { paths: SECRET_PATHS, censor: '[redacted]' },
    },
    destination,
  );
}

/** Creates a logger that drops everything, for library use without logging. */
export function silentLogger(): Logger {
  return pino({ level: 'silent' });
}

/** Turns one pino JSON line into `time LEVEL message key=value ...`. */
export function toText(line: string): string {
  let record: Record<string, unknown>;
  try {
    record = JSON.parse(line) as Record<string, unknown>;
  } catch {
    return line;
  }

  const { time, level, msg, ...fields } = record;
  const parts = [String(time ?? ''), String(level ?? '').toUpperCase(), String(msg ?? '')];
  for (const [key, value] of Object.entries(fields)) {
    parts.push(`${key}=${formatValue(value)}`);
  }
  return parts.filter((p) => p !== '').join(' ') + '\n';
}

/** Quotes a logfmt value when it contains spaces, quotes or `=`. */
function formatValue(value: unknown): string {
  let text: string;
  if (typeof value === 'string') text = value;
  else if (value !== null && typeof value === 'object') {
    const err = value as { message?: unknown };
    text = typeof err.message === 'string' ? err.message : JSON.stringify(value);
  } else text = String(value);
  return /[\s"=]/.test(text) || text === '' ? JSON.stringify(text) : text;
}

/**
 * Durations written as Go writes them (`1s`, `500ms`, `1h30m`, `168h`), the
 * syntax of Litestream's config file and flags.
 */

// Nanoseconds per unit. Go accepts both the micro sign (U+00B5) and the Greek mu (U+03BC).
const UNIT_NS: Readonly<Record<string, number>> = {
  ns: 1,
  us: 1e3,
  'µs': 1e3,
  'μs': 1e3,
  ms: 1e6,
  s: 1e9,
  m: 60e9,
  h: 3600e9,
};

// One term: digits with an optional fraction (`1`, `1.5`, `.5`, `5.`), then a unit.
const TERM_RE = /(\d+\.?\d*|\.\d+)([a-zµμ]+)/y;

/**
 * Parses a Go duration into milliseconds, or returns undefined when the text
 * is not one. A sign is allowed, a bare `0` is zero, and every other number
 * needs a unit. The result may have a fraction (`500us` is 0.5).
 */
export function parseDuration(text: string): number | undefined {
  let rest = text.trim();
  let sign = 1;
  if (rest.startsWith('-') || rest.startsWith('+')) {
    sign = rest.startsWith('-') ? -1 : 1;
    rest = rest.slice(1);
  }
  if (rest === '0') return 0;
  if (rest === '') return undefined;

  // Sum whole nanoseconds, as Go does, so that `1.1s` gives exactly 1100 ms.
  let totalNs = 0;
  TERM_RE.lastIndex = 0;
  while (TERM_RE.lastIndex < rest.length) {
    const match = TERM_RE.exec(rest);
    if (match === null) return undefined;

    const unit = UNIT_NS[match[2]!];
    if (unit === undefined) return undefined;
    totalNs += Math.round(Number(match[1]) * unit);
  }
  return (sign * totalNs) / 1e6;
}

/** Formats milliseconds as a short Go duration for help text and logs: 90 minutes gives `1h30m`. */
export function formatDuration(ms: number): string {
  if (ms === 0) return '0s';

  const parts: string[] = [];
  let rest = Math.abs(ms);
  for (const [unit, size] of [['h', 3_600_000], ['m', 60_000], ['s', 1000]] as const) {
    const count = Math.floor(rest / size);
    if (count > 0) parts.push(`${count}${unit}`);
    rest -= count * size;
  }
  if (rest > 0) parts.push(`${rest}ms`);
  return (ms < 0 ? '-' : '') + parts.join('');
}

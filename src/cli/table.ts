/**
 * Output of the inspection commands: tab-aligned tables as Litestream v0.3
 * prints them, or a JSON array of objects with the same fields.
 */

/** A value of one field: text, a decimal number, a time, a list of names, or null when absent. */
export type Cell = string | number | Date | readonly string[] | null;

/** One output row, keyed by field name. */
export type Row = Record<string, Cell>;

// Spaces after the widest cell of a column, as Litestream's tab writer adds them.
const PADDING = 2;

/**
 * Formats a time as RFC 3339 in UTC with whole seconds, as Litestream prints
 * times in tables. Go's formatter drops the fraction rather than rounding it, and so does this.
 */
export function formatTime(time: Date): string {
  return time.toISOString().replace(/\.\d{3}Z$/, 'Z');
}

/**
 * Formats a duration in milliseconds as Go's time.Duration prints it
 * (`0s`, `81ms`, `1.5s`, `2m3s`, `1h0m5s`), after cutting precision as
 * Litestream does for lag: whole seconds above 10 s, tenths above 1 s.
 */
export function formatLag(ms: number): string {
  const sign = ms < 0 ? '-' : '';
  let rest = Math.trunc(Math.abs(ms));
  if (rest > 10_000) rest -= rest % 1000;
  else if (rest > 1000) rest -= rest % 100;

  if (rest === 0) return '0s';
  if (rest < 1000) return `${sign}${rest}ms`;

  const hours = Math.floor(rest / 3_600_000);
  const minutes = Math.floor((rest % 3_600_000) / 60_000);
  const millis = rest % 60_000;
  const fraction = String(millis % 1000).padStart(3, '0').replace(/0+$/, '');
  const seconds = `${Math.floor(millis / 1000)}${fraction === '' ? '' : `.${fraction}`}s`;

  if (hours > 0) return `${sign}${hours}h${minutes}m${seconds}`;
  if (minutes > 0) return `${sign}${minutes}m${seconds}`;
  return `${sign}${seconds}`;
}

/** Formats one cell for a table: times as RFC 3339, numbers in decimal, lists joined by commas, null as `-`. */
export function cellText(value: Cell): string {
  if (value === null) return '-';
  if (value instanceof Date) return formatTime(value);
  if (Array.isArray(value)) return value.join(',');
  return String(value);
}

/**
 * Formats rows as a table with a header line. Every column but the last is
 * padded with spaces to its widest cell plus two, and the last is written as
 * is, which is what Go's tabwriter does with Litestream's settings.
 */
export function formatTable(columns: readonly string[], rows: readonly Row[]): string {
  const lines = [columns.slice(), ...rows.map((row) => columns.map((column) => cellText(row[column] ?? null)))];

  // Widths count code points, as Go's tabwriter counts runes.
  const widths = columns.map((_column, i) => Math.max(...lines.map((line) => [...line[i]!].length)));
  const text = lines.map((line) =>
    line.map((cell, i) => (i === line.length - 1 ? cell : cell + ' '.repeat(widths[i]! - [...cell].length + PADDING))).join(''),
  );
  return text.map((line) => `${line}\n`).join('');
}

/** Formats rows as a JSON array: times as RFC 3339 with milliseconds, numbers and lists as JSON values. */
export function formatJson(rows: readonly Row[]): string {
  const plain = rows.map((row) => Object.fromEntries(Object.entries(row).map(([key, value]) => [key, value instanceof Date ? value.toISOString() : value])));
  return `${JSON.stringify(plain, null, 2)}\n`;
}

/**
 * Writes rows to stdout as a table of `columns`, or with `json` as a JSON
 * array of every field of each row, the table's columns included.
 */
export function printRows(columns: readonly string[], rows: readonly Row[], json: boolean): void {
  process.stdout.write(json ? formatJson(rows) : formatTable(columns, rows));
}

import { parseDuration } from './duration.js';
import { WalshipError } from './errors.js';

/**
 * Typed reads of one mapping of the config file (the top level, a database or
 * a replica). The YAML is parsed with the failsafe schema, so every scalar
 * arrives as the string written in the file and is converted here, the way
 * Litestream's Go decoder reads a scalar into a typed field. The command line
 * builds the same mappings, with strings or booleans.
 *
 * An empty value (`key:` or `key: ""`, which is also what an unset `$VAR`
 * expands to) counts as unset, as in Litestream.
 */
export class ConfigFields {
  /** Location of the mapping for error messages, e.g. `/etc/walship.yml, database /data/users.db`. */
  readonly where: string;
  readonly #raw: Readonly<Record<string, unknown>>;
  readonly #read = new Set<string>();

  constructor(raw: unknown, where: string) {
    if (raw === null || raw === undefined || raw === '') raw = {};
    if (typeof raw !== 'object' || Array.isArray(raw)) {
      throw new WalshipError('INVALID_INPUT', `${where}: expected a mapping of key: value lines, found ${describe(raw)}`);
    }
    this.#raw = raw as Record<string, unknown>;
    this.where = where;
  }

  /** Keys present in the mapping, in file order; keys the command line left undefined are skipped. */
  keys(): string[] {
    return Object.keys(this.#raw).filter((key) => this.#raw[key] !== undefined);
  }

  /** Reports whether a key is present with a non-empty value. */
  has(key: string): boolean {
    const value = this.#value(key);
    return value !== undefined;
  }

  /** Reports whether a key is written at all, even with an empty value. */
  written(key: string): boolean {
    return Object.hasOwn(this.#raw, key) && this.#raw[key] !== undefined;
  }

  /** Returns the raw value of a key (string, list or mapping), or undefined when unset. */
  raw(key: string): unknown {
    return this.#value(key);
  }

  /** Reads a string; numbers and booleans given by the command line are converted. */
  string(key: string): string | undefined {
    const value = this.#value(key);
    if (value === undefined) return undefined;
    if (typeof value === 'string') return value;
    if (typeof value === 'number' || typeof value === 'boolean') return String(value);
    throw this.error(`${key} must be a single value, found ${describe(value)}`);
  }

  /** Reads a string that may be written empty (`name: ""`); undefined only when the key is absent. */
  stringAllowEmpty(key: string): string | undefined {
    if (!this.written(key)) return undefined;
    this.#read.add(key);
    const value = this.#raw[key];
    if (value === null || value === undefined) return '';
    return this.string(key) ?? '';
  }

  /** Reads a Go duration (`1s`, `500ms`, `1h30m`) as milliseconds; negative values are invalid. */
  duration(key: string): number | undefined {
    const text = this.string(key);
    if (text === undefined) return undefined;

    const ms = parseDuration(text);
    if (ms === undefined) {
      throw this.error(`${key} ${JSON.stringify(text)} is not a duration; write it as 1s, 500ms, 1h30m or 0`);
    }
    if (ms < 0) throw this.error(`${key} ${JSON.stringify(text)} is negative; use 0 or a positive duration`);
    return ms;
  }

  /** Reads a whole number of at least `min`. */
  integer(key: string, min = 0): number | undefined {
    const text = this.string(key);
    if (text === undefined) return undefined;

    if (!/^\d+$/.test(text.trim()) || Number(text) < min || !Number.isSafeInteger(Number(text))) {
      throw this.error(`${key} ${JSON.stringify(text)} must be a whole number of at least ${min}`);
    }
    return Number(text);
  }

  /** Reads a boolean: true/false, yes/no, on/off, as YAML 1.1 spells them. */
  boolean(key: string): boolean | undefined {
    const value = this.#value(key);
    if (value === undefined || typeof value === 'boolean') return value;

    const text = (this.string(key) ?? '').toLowerCase();
    if (['true', 'yes', 'on', 'y'].includes(text)) return true;
    if (['false', 'no', 'off', 'n'].includes(text)) return false;
    throw this.error(`${key} ${JSON.stringify(text)} must be true or false`);
  }

  /** Reads a list; a single mapping is not accepted in its place. */
  list(key: string): unknown[] | undefined {
    const value = this.#value(key);
    if (value === undefined) return undefined;
    if (!Array.isArray(value)) throw this.error(`${key} must be a list of "- " entries, found ${describe(value)}`);
    return value;
  }

  /** Reads a nested mapping. */
  fields(key: string, where: string): ConfigFields | undefined {
    const value = this.#value(key);
    return value === undefined ? undefined : new ConfigFields(value, where);
  }

  /**
   * Rejects keys that were never read and are not in `ignored`, naming the
   * first one. Call it after every known key has been read.
   */
  rejectUnknown(ignored: readonly string[] = [], hint = ''): void {
    for (const key of this.keys()) {
      if (this.#read.has(key) || ignored.includes(key)) continue;
      throw this.error(`unknown key "${key}"; check its spelling${hint}`);
    }
  }

  /** Runs a check and places its WalshipError at this mapping, keeping it as the cause. */
  within<T>(check: () => T): T {
    try {
      return check();
    } catch (err) {
      if (err instanceof WalshipError) throw this.error(err.message, err);
      throw err;
    }
  }

  /** Builds an INVALID_INPUT error placed at this mapping. */
  error(message: string, cause?: unknown): WalshipError {
    return new WalshipError('INVALID_INPUT', `${this.where}: ${message}`, cause === undefined ? undefined : { cause });
  }

  /** Returns a key's value and marks it as read; empty values count as unset. */
  #value(key: string): unknown {
    if (!Object.hasOwn(this.#raw, key)) return undefined;
    this.#read.add(key);
    const value = this.#raw[key];
    return value === null || value === '' ? undefined : value;
  }
}

/** Names the kind of a YAML value for error messages. */
function describe(value: unknown): string {
  if (Array.isArray(value)) return 'a list';
  if (value !== null && typeof value === 'object') return 'a mapping';
  return `the value ${JSON.stringify(value)}`;
}

import type { Command } from 'commander';

/**
 * Litestream's flags are Go flags, written with one dash (`-dsn PATH`,
 * `-config=PATH`). commander reads `-dsn` as the short flags `-d -s -n`, so
 * single-dash long flags are rewritten to two dashes before parsing.
 */

// A single dash, then a name of two or more characters, then an optional `=value`.
const SINGLE_DASH_LONG = /^-([A-Za-z][A-Za-z0-9-]+)(=.*)?$/s;

/**
 * Rewrites `-name` and `-name=value` to `--name` and `--name=value` when
 * `--name` is one of `longFlags`. Other arguments are left as written: short
 * flags (`-o`, `-h`), unknown names (so that commander's error shows the flag
 * as typed), and everything after `--`.
 */
export function normalizeFlags(argv: readonly string[], longFlags: ReadonlySet<string>): string[] {
  const out: string[] = [];
  let rest = false;

  for (const arg of argv) {
    if (rest || arg === '--') {
      rest = true;
      out.push(arg);
      continue;
    }

    const match = SINGLE_DASH_LONG.exec(arg);
    if (match !== null && longFlags.has(`--${match[1]}`)) out.push(`-${arg}`);
    else out.push(arg);
  }
  return out;
}

/** Collects the long flags (`--dsn`, `--no-expand-env`, `--help`) of a program and its subcommands. */
export function longFlagsOf(program: Command): Set<string> {
  const flags = new Set<string>(['--help']);
  const commands = [program, ...program.commands];

  for (const command of commands) {
    for (const option of command.options) {
      if (option.long !== undefined) flags.add(option.long);
    }
  }
  return flags;
}

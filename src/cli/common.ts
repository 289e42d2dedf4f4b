import fs from 'node:fs';

import { Option } from 'commander';
import type { Command } from 'commander';

import { LOG_LEVELS, loadConfigFile } from '../config.js';
import type { Config } from '../config.js';
import { WalshipError } from '../errors.js';
import { RepeatLimiter } from '../log-repeat.js';
import { createLogger } from '../logger.js';
import type { LogFormat, Logger } from '../logger.js';

/** Config file read when neither -config nor WALSHIP_CONFIG is given. */
export const DEFAULT_CONFIG_PATH = '/etc/walship.yml';

/** Flags shared by the commands that read a config file. */
export interface ConfigFlags {
  config?: string;
  /** False when -no-expand-env is given. */
  expandEnv: boolean;
}

/** Flags of the log output. */
export interface LogFlags {
  logLevel?: string;
  logFormat?: LogFormat;
}

/** Flags that describe an S3 replica in place of a URL. */
export interface BucketFlags {
  bucket?: string;
  dbName?: string;
  endpoint?: string;
  region?: string;
  forcePathStyle?: boolean;
}

/** Adds -config and -no-expand-env. */
export function addConfigFlags(command: Command): Command {
  return command
    .option('--config <path>', `config file in Litestream v0.3 format (default: $WALSHIP_CONFIG, else ${DEFAULT_CONFIG_PATH})`)
    .option('--no-expand-env', 'do not replace $VAR and ${VAR} in the config file with environment values (default: they are replaced)');
}

/** Adds -bucket, -db-name, -endpoint, -region and -force-path-style. */
export function addBucketFlags(command: Command): Command {
  return command
    .option('--bucket <name>', 'S3 bucket; the replica is s3://NAME/databases/<db-name> (default: none, the replica comes from the config file or a URL)')
    .option('--db-name <name>', "database name, the folder databases/<name> (default: the database file's name without its extension)")
    .option('--endpoint <url>', 'URL of an S3-compatible store, e.g. http://127.0.0.1:9000 (default: AWS S3)')
    .option('--region <region>', 'S3 region (default: the AWS SDK chain, or us-east-1 with -endpoint)')
    .option('--force-path-style', 'use path-style S3 URLs, endpoint/bucket/key (default: on with -endpoint, off without)')
    .option('--no-force-path-style', 'use virtual-hosted S3 URLs, bucket.endpoint/key (default: on without -endpoint)');
}

/** Adds -log-level and -log-format. */
export function addLogFlags(command: Command): Command {
  return command
    .addOption(new Option('--log-level <level>', 'minimum level of log lines (default: logging.level of the config, else info)').choices(LOG_LEVELS))
    .addOption(new Option('--log-format <format>', 'log line format on stderr (default: logging.type of the config, else text)').choices(['text', 'json']));
}

// Rate limiters of the loggers made so far, flushed before the process exits.
const limiters: RepeatLimiter[] = [];

/**
 * Creates the logger from flags, falling back to the config's logging
 * settings. Repeated identical warnings and errors are shown once a minute
 * with a count (see RepeatLimiter).
 */
export function makeLogger(flags: LogFlags, config?: Config): Logger {
  const limiter = new RepeatLimiter({ out: process.stderr, format: flags.logFormat ?? config?.logFormat ?? 'text' });
  limiters.push(limiter);
  // The limiter reads pino's JSON lines and writes the chosen format itself.
  return createLogger({ level: flags.logLevel ?? config?.logLevel ?? 'info', format: 'json', destination: limiter });
}

/** Writes the counts of repeated log lines not yet reported; call it before the process exits. */
export function flushLogs(): void {
  for (const limiter of limiters) limiter.flush();
}

/**
 * Loads the config named by -config, else by WALSHIP_CONFIG, else
 * /etc/walship.yml. A missing file is an error that lists the forms of the
 * command that need no config file (`missingHint`).
 */
export async function loadCliConfig(flags: ConfigFlags, logger: Logger, missingHint: string): Promise<{ config: Config; file: string }> {
  const explicit = flags.config ?? nonEmpty(process.env.WALSHIP_CONFIG);
  const file = explicit ?? DEFAULT_CONFIG_PATH;

  if (explicit === undefined && !fs.existsSync(file)) {
    throw new WalshipError('INVALID_INPUT', `no config file at ${DEFAULT_CONFIG_PATH}; pass -config PATH, or ${missingHint}`);
  }
  const config = await loadConfigFile(file, { expandEnv: flags.expandEnv, logger });
  return { config, file };
}

/** Throws an INVALID_INPUT error naming flags that do not apply to the chosen form of a command. */
export function rejectFlags(parsed: object, flags: readonly string[], reason: string): void {
  const values = parsed as Record<string, unknown>;
  const found = flags.filter((flag) => values[flagKey(flag)] !== undefined);
  if (found.length > 0) {
    throw new WalshipError('INVALID_INPUT', `${found.map((f) => `-${f}`).join(', ')} ${reason}`);
  }
}

/** Turns a flag name into commander's option key: `db-name` gives `dbName`. */
function flagKey(flag: string): string {
  return flag.replace(/-([a-z])/g, (_match, letter: string) => letter.toUpperCase());
}

/** Returns a value unless it is undefined or empty. */
function nonEmpty(value: string | undefined): string | undefined {
  return value === undefined || value === '' ? undefined : value;
}

/** Builds the replica entry of a config for -bucket and its companion flags, with Litestream's key spellings. */
export function bucketReplica(flags: BucketFlags): Record<string, unknown> {
  return {
    type: 's3',
    bucket: flags.bucket,
    endpoint: flags.endpoint,
    region: flags.region,
    'force-path-style': flags.forcePathStyle,
  };
}

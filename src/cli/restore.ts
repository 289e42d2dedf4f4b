import fs from 'node:fs';
import path from 'node:path';

import { Command } from 'commander';

import { resolveConfig } from '../config.js';
import type { Config, ReplicaConfig } from '../config.js';
import { hasCode, WalshipError } from '../errors.js';
import { isGeneration, MAX_INDEX } from '../keys.js';
import type { Logger } from '../logger.js';
import { formatPos } from '../pos.js';
import { redactUrl, urlScheme } from '../replica-url.js';
import { addBucketFlags, addConfigFlags, addLogFlags, bucketReplica, loadCliConfig, makeLogger, rejectFlags } from './common.js';
import type { BucketFlags, ConfigFlags, LogFlags } from './common.js';
import { findDatabase } from './inspect-target.js';

/** Flags of `walship restore`. */
interface RestoreFlags extends ConfigFlags, LogFlags, BucketFlags {
  output?: string;
  generation?: string;
  index?: string;
  timestamp?: string;
  parallelism?: string;
  replica?: string;
  ifDbNotExists?: boolean;
  ifReplicaExists?: boolean;
}

/** Replica to read and output file to write, resolved from the flags. */
interface RestoreTarget {
  replica: ReplicaConfig;
  /** Every replica of the database, when it has several and -replica names none. */
  candidates?: ReplicaConfig[];
  dbName: string;
  outputPath: string;
}

const DEFAULT_PARALLELISM = 8;

/** Creates the `restore` command. */
export function restoreCommand(): Command {
  const command = new Command('restore')
    .description('Restore a database from a replica into a new file.')
    .usage('[flags] -o OUTPUT (REPLICA_URL | DB_PATH)  |  [flags] -o OUTPUT -bucket NAME [-db-name NAME]')
    .argument('[target]', 'REPLICA_URL (s3://BUCKET/PATH, file:///DIR) or DB_PATH, a database of the config file')
    .allowExcessArguments(false)
    .option('-o, --output <path>', 'database file to create; it must not exist (default with DB_PATH: the database path)')
    .option('--generation <id>', 'generation to restore, 16 hex digits (default: the generation with the newest object)')
    .option('--index <hex>', 'last WAL index to apply, in hex, up to 7fffffff; needs -generation (default: the last one)')
    .option('--timestamp <time>', 'restore the state after the last transaction committed at or before this RFC 3339 time, e.g. 2024-05-01T12:00:00Z (default: the latest state)')
    .option('--parallelism <n>', `WAL segment downloads in flight at once (default: ${DEFAULT_PARALLELISM})`)
    .option('--replica <name>', 'with DB_PATH: name of the replica to restore from (default: the replica with the newest backup)')
    .option('--if-db-not-exists', 'exit 0 without restoring when the output file already exists (default: off, an existing output file is an error)')
    .option('--if-replica-exists', 'exit 0 without restoring when the replica contains no backup (default: off, an empty replica is an error)');
  addBucketFlags(command);
  addConfigFlags(command);
  addLogFlags(command);

  command.addHelpText(
    'after',
    `
A plain path is a database of the config file, as in Litestream; give a file
replica as file:///DIR. With -bucket the replica is s3://NAME/databases/<db-name>,
and -db-name defaults to the output file's name without its extension.

-timestamp uses the commit times walship stores with each WAL segment: a time
is recorded when walship captures the commit, at most one sync after it. For
replicas written by Litestream, whole WAL segments count by their upload time.
A time after the newest backup restores the latest state.`,
  );

  return command.action(async (target: string | undefined, flags: RestoreFlags) => {
    await restoreDatabase(target, flags);
  });
}

/** Resolves the replica and output, then restores. */
async function restoreDatabase(target: string | undefined, flags: RestoreFlags): Promise<void> {
  const options = parseRestoreFlags(flags);
  let logger = makeLogger(flags);
  const { resolved, config } = await resolveTarget(target, flags, logger);
  logger = makeLogger(flags, config);

  if (flags.ifDbNotExists && fs.existsSync(resolved.outputPath)) {
    process.stdout.write('database already exists, skipping\n');
    return;
  }

  // The restore module pulls in SQLite and the AWS SDK, so it is loaded only
  // once the arguments are known to be valid.
  const { restore } = await import('../restore.js');
  const { progressDisplay } = await import('../restore/progress-bar.js');
  let replica = resolved.replica;
  if (resolved.candidates !== undefined) {
    const { chooseNewestReplica } = await import('./choose-replica.js');
    // With no backup anywhere, the first replica's restore below reports it.
    replica = await chooseNewestReplica(resolved.candidates, options, logger.child({ db: resolved.dbName })).catch((err: unknown) => {
      if (hasCode(err, 'NO_GENERATION')) return resolved.replica;
      throw err;
    });
  }
  const display = progressDisplay(process.stderr, logger.child({ db: resolved.dbName }));
  try {
    const result = await restore({
      client: replica.client,
      outputPath: resolved.outputPath,
      logger,
      dbName: resolved.dbName,
      onProgress: (progress) => display.update(progress),
      ...options,
    });
    display.stop();
    logger.info(
      {
        db: resolved.dbName,
        generation: result.generation,
        pos: formatPos(result.pos),
        bytes: result.bytes,
        lastCommitAt: result.lastCommitAt?.toISOString(),
      },
      `restored ${resolved.outputPath}`,
    );
  } catch (err) {
    display.stop();
    if (!hasCode(err, 'NO_GENERATION')) throw err;
    if (flags.ifReplicaExists) {
      process.stdout.write('no matching backups found\n');
      return;
    }
    const message = `${(err as Error).message}; check the replica location, or pass -if-replica-exists to exit 0 when there is nothing to restore`;
    throw new WalshipError('NO_GENERATION', message, { cause: err });
  }
}

/** Parses -generation, -index, -timestamp and -parallelism. */
function parseRestoreFlags(flags: RestoreFlags): { generation?: string; index?: number; timestamp?: Date; parallelism: number } {
  if (flags.generation !== undefined && !isGeneration(flags.generation)) {
    throw new WalshipError('INVALID_INPUT', `-generation ${flags.generation} is not a generation; give its 16 lowercase hex digits`);
  }

  let index: number | undefined;
  if (flags.index !== undefined) {
    if (flags.generation === undefined) throw new WalshipError('INVALID_INPUT', '-index needs -generation: an index is only meaningful within one generation');
    index = /^[0-9a-f]{1,8}$/i.test(flags.index) ? parseInt(flags.index, 16) : NaN;
    if (!(index <= MAX_INDEX)) {
      throw new WalshipError('INVALID_INPUT', `-index ${flags.index} is not a WAL index; give 1 to 8 hex digits, at most 7fffffff`);
    }
  }

  let timestamp: Date | undefined;
  if (flags.timestamp !== undefined) {
    if (index !== undefined) throw new WalshipError('INVALID_INPUT', '-timestamp and -index both choose where to stop; give one of them');
    timestamp = parseTimestamp(flags.timestamp);
  }

  const parallelism = flags.parallelism === undefined ? DEFAULT_PARALLELISM : Number(flags.parallelism);
  if (!Number.isSafeInteger(parallelism) || parallelism < 1) {
    throw new WalshipError('INVALID_INPUT', `-parallelism ${flags.parallelism} must be a whole number of at least 1`);
  }
  return {
    ...(flags.generation ? { generation: flags.generation } : {}),
    ...(index !== undefined ? { index } : {}),
    ...(timestamp !== undefined ? { timestamp } : {}),
    parallelism,
  };
}

// RFC 3339: date, "T" (or "t" or a space, which RFC 3339 allows), time with
// optional fraction, and a zone that is Z or a numeric offset.
const RFC3339 = /^(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$/;

/**
 * Parses an RFC 3339 time as Go's time.RFC3339Nano does for Litestream.
 * Fractions finer than a millisecond are dropped, since store times and
 * commit times are kept in milliseconds.
 */
export function parseTimestamp(text: string): Date {
  const m = RFC3339.exec(text);
  let time = NaN;
  if (m !== null) {
    const [year, month, day, hour, minute, second] = m.slice(1, 7).map(Number) as [number, number, number, number, number, number];
    // Date.parse would roll 2024-02-30 over into March, so fields are range-checked first.
    const daysInMonth = new Date(Date.UTC(year, month, 0)).getUTCDate();
    if (month >= 1 && month <= 12 && day >= 1 && day <= daysInMonth && hour <= 23 && minute <= 59 && second <= 59) {
      const fraction = (m[7] ?? '').slice(0, 4);
      time = Date.parse(`${m[1]}-${m[2]}-${m[3]}T${m[4]}:${m[5]}:${m[6]}${fraction}${m[8]!.toUpperCase()}`);
    }
  }
  if (Number.isNaN(time)) {
    throw new WalshipError('INVALID_INPUT', `-timestamp ${text} is not an RFC 3339 time; give one like 2024-05-01T12:00:00Z or 2024-05-01T14:00:00.5+02:00`);
  }
  return new Date(time);
}

/** Finds the replica to read and the output to write for the form of the command used. */
async function resolveTarget(
  target: string | undefined,
  flags: RestoreFlags,
  logger: Logger,
): Promise<{ resolved: RestoreTarget; config?: Config }> {
  if (flags.bucket !== undefined) {
    if (target !== undefined) throw new WalshipError('INVALID_INPUT', `-bucket replaces the replica URL; remove ${redactUrl(target)} or -bucket`);
    return { resolved: fromFlags(bucketReplica(flags), flags, logger) };
  }
  rejectFlags(flags, ['endpoint', 'region', 'force-path-style'], 'apply only with -bucket; put them in the URL: s3://BUCKET/PATH?endpoint=URL&region=R');

  if (target === undefined) {
    throw new WalshipError('INVALID_INPUT', 'nothing to restore from; pass a REPLICA_URL, a DB_PATH of the config file, or -bucket NAME');
  }
  if (urlScheme(target) !== undefined) return { resolved: fromFlags({ url: target }, flags, logger) };

  rejectFlags(flags, ['db-name'], 'applies only with -bucket or a replica URL; the config file names the database');
  const { config, file } = await loadCliConfig(flags, logger, 'give a REPLICA_URL or -bucket NAME');
  return { resolved: fromConfig(target, config, file, flags), config };
}

/** Resolves a replica given by URL or -bucket; -o is required. */
function fromFlags(replicaEntry: Record<string, unknown>, flags: RestoreFlags, logger: Logger): RestoreTarget {
  rejectFlags(flags, ['config', 'replica'], 'apply only when restoring a DB_PATH of the config file');
  if (flags.output === undefined) {
    throw new WalshipError('INVALID_INPUT', '-o OUTPUT is required when restoring from a replica URL or -bucket; give the database file to create');
  }

  // The output path takes the place of the database path, so -db-name defaults to its base name.
  const outputPath = path.resolve(flags.output);
  const config = resolveConfig({ dbs: [{ path: outputPath, name: flags.dbName, replicas: [replicaEntry] }] }, 'command line', { logger });
  const db = config.dbs[0]!;
  return { replica: db.replicas[0]!, dbName: db.name, outputPath };
}

/** Finds DB_PATH (or a database name) in the config and picks its replica. */
function fromConfig(target: string, config: Config, file: string, flags: RestoreFlags): RestoreTarget {
  const db = findDatabase(target, config, file);

  const replica = flags.replica === undefined ? db.replicas[0] : db.replicas.find((r) => r.name === flags.replica);
  if (replica === undefined) {
    const names = db.replicas.map((r) => r.name).join(', ') || 'none';
    const problem = flags.replica === undefined ? 'no replicas' : `no replica named "${flags.replica}"`;
    throw new WalshipError('INVALID_INPUT', `database ${db.path} in ${file} has ${problem}; its replicas: ${names}`);
  }
  const candidates = flags.replica === undefined && db.replicas.length > 1 ? db.replicas : undefined;
  return { replica, ...(candidates ? { candidates } : {}), dbName: db.name, outputPath: path.resolve(flags.output ?? db.path) };
}

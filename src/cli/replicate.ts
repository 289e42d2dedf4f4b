import { Command } from 'commander';

import { resolveConfig } from '../config.js';
import type { Config } from '../config.js';
import { WalshipError } from '../errors.js';
import type { Logger } from '../logger.js';
import { urlScheme } from '../replica-url.js';
import { addBucketFlags, addConfigFlags, addLogFlags, bucketReplica, DEFAULT_CONFIG_PATH, loadCliConfig, makeLogger, rejectFlags } from './common.js';
import type { BucketFlags, ConfigFlags, LogFlags } from './common.js';
import { readVersion } from './version.js';

/** Flags of `walship replicate`. */
interface ReplicateFlags extends ConfigFlags, LogFlags, BucketFlags {
  dsn?: string;
  syncInterval?: string;
}

const FORMS = '-dsn PATH -bucket NAME, or DB_PATH REPLICA_URL...';

/** Creates the `replicate` command. */
export function replicateCommand(): Command {
  const command = new Command('replicate')
    .description('Replicate SQLite databases continuously until SIGINT or SIGTERM.')
    .usage('[flags] | -dsn PATH -bucket NAME [flags] | [flags] DB_PATH REPLICA_URL...')
    .argument('[args...]', 'DB_PATH and one or more REPLICA_URLs (s3://BUCKET/PATH?endpoint=URL, file:///DIR)')
    .option('--dsn <path>', 'database file to replicate to -bucket');
  addBucketFlags(command);
  command.option('--sync-interval <duration>', 'with -dsn or replica URLs: how often new WAL is shipped, as a Go duration such as 500ms or 1m (default: 1s)');
  addConfigFlags(command);
  addLogFlags(command);

  command.addHelpText(
    'after',
    `
Forms:
  walship replicate [-config PATH]               every database of the config file
  walship replicate -dsn PATH -bucket NAME       one database to s3://NAME/databases/<db-name>
  walship replicate DB_PATH REPLICA_URL...       one database to each replica URL, used as given

The config file defaults to $WALSHIP_CONFIG, else ${DEFAULT_CONFIG_PATH}; it is read
only when no database is given on the command line.`,
  );

  return command.action(async (args: string[], flags: ReplicateFlags) => {
    await replicate(args, flags);
  });
}

/** Resolves the config from flags or file, starts replication and waits for a signal to stop. */
async function replicate(args: string[], flags: ReplicateFlags): Promise<void> {
  const flagLogger = makeLogger(flags);
  const config = await buildConfig(args, flags, flagLogger);
  const logger = makeLogger(flags, config);

  logger.info({ version: readVersion(), dbs: config.dbs.length }, 'walship starting');
  await runUntilSignal(config, logger);
}

/** Builds the config of one of the three forms of the command. */
async function buildConfig(args: string[], flags: ReplicateFlags, logger: Logger): Promise<Config> {
  if (flags.dsn !== undefined || flags.bucket !== undefined) return configFromBucket(args, flags, logger);
  if (args.length > 0) return configFromUrls(args, flags, logger);

  rejectFlags(flags, ['db-name', 'endpoint', 'region', 'force-path-style', 'sync-interval'], `apply only with ${FORMS}; set them in the config file instead`);
  const { config, file } = await loadCliConfig(flags, logger, `give a database as ${FORMS}`);
  if (config.dbs.length === 0) {
    throw new WalshipError('INVALID_INPUT', `config file ${file} lists no databases; add an entry under dbs:`);
  }
  return config;
}

/** Builds the config of `-dsn PATH -bucket NAME` (the path may also be the one argument). */
function configFromBucket(args: string[], flags: ReplicateFlags, logger: Logger): Config {
  rejectFlags(flags, ['config'], 'cannot be combined with -dsn and -bucket; use one or the other');

  const dsn = flags.dsn ?? args[0];
  const extra = flags.dsn === undefined ? args.slice(1) : args;
  if (extra.length > 0) {
    throw new WalshipError('INVALID_INPUT', `unexpected argument ${extra[0]}: -dsn PATH -bucket NAME replicates one database to one bucket`);
  }
  if (dsn === undefined) throw new WalshipError('INVALID_INPUT', '-bucket needs the database file: pass -dsn PATH');
  if (flags.bucket === undefined) throw new WalshipError('INVALID_INPUT', `-dsn ${dsn} needs a destination: pass -bucket NAME`);

  const replica = { ...bucketReplica(flags), 'sync-interval': flags.syncInterval };
  return resolveConfig({ dbs: [{ path: dsn, name: flags.dbName, replicas: [replica] }] }, 'command line', { logger });
}

/** Builds the config of `DB_PATH REPLICA_URL...`. */
function configFromUrls(args: string[], flags: ReplicateFlags, logger: Logger): Config {
  rejectFlags(flags, ['config'], 'cannot be combined with DB_PATH REPLICA_URL; use one or the other');
  rejectFlags(flags, ['endpoint', 'region', 'force-path-style'], 'apply only with -bucket; put them in the URL: s3://BUCKET/PATH?endpoint=URL&region=R');

  const [dbPath, ...urls] = args;
  if (urls.length === 0) {
    throw new WalshipError('INVALID_INPUT', `no replica URL given for ${dbPath}; pass DB_PATH REPLICA_URL, e.g. s3://BUCKET/PATH`);
  }

  // Replicas are named after their type; a second one of the same type gets its position.
  const types = urls.map((url) => urlScheme(url) ?? 'file');
  const replicas = urls.map((url, i) => ({
    url,
    name: types.indexOf(types[i]!) === i ? types[i] : `${types[i]}${i + 1}`,
    'sync-interval': flags.syncInterval,
  }));
  return resolveConfig({ dbs: [{ path: dbPath, name: flags.dbName, replicas }] }, 'command line', { logger });
}

/**
 * Starts replication and stops it on SIGINT or SIGTERM with a final sync. A
 * second signal exits at once, without the final sync.
 */
async function runUntilSignal(config: Config, logger: Logger): Promise<void> {
  // The replicator pulls in SQLite, the worker pool and the AWS SDK, so it is
  // loaded only once the arguments are known to be valid.
  const { Replicator } = await import('../replicator.js');
  const replicator = new Replicator(config, { logger });

  let received: NodeJS.Signals | undefined;
  let wake = (): void => {};
  const signalled = new Promise<void>((resolve) => (wake = resolve));
  const onSignal = (signal: NodeJS.Signals): void => {
    if (received !== undefined) {
      logger.warn({ signal }, 'second signal received, exiting without a final sync');
      process.exit(1);
    }
    received = signal;
    logger.info({ signal }, 'signal received, stopping replication');
    wake();
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);

  await replicator.start();
  logger.info({ dbs: config.dbs.map((db) => db.name).join(',') }, 'replication started');

  // The replicator's timers and watchers do not hold the event loop open, so
  // without this timer the process would exit while waiting for a signal.
  const keepAlive = setInterval(() => {}, 3_600_000);
  await signalled;
  clearInterval(keepAlive);

  const started = Date.now();
  await replicator.stop();
  logger.info({ elapsed: `${Date.now() - started}ms` }, 'replication stopped');
}

import { Command } from 'commander';

import { resolveConfig } from '../config.js';
import type { Config } from '../config.js';
import { WalshipError } from '../errors.js';
import type { Logger } from '../logger.js';
import { urlScheme } from '../replica-url.js';
import { addBucketFlags, addConfigFlags, addLogFlags, bucketReplica, DEFAULT_CONFIG_PATH, loadCliConfig, makeLogger, rejectFlags } from './common.js';
import type { BucketFlags, ConfigFlags, LogFlags } from './common.js';
import { runDaemon } from './daemon.js';
import { readVersion } from './version.js';

/** Flags of `walship replicate`. */
interface ReplicateFlags extends ConfigFlags, LogFlags, BucketFlags {
  dsn?: string;
  syncInterval?: string;
  once?: boolean;
  exec?: string;
  shutdownTimeout?: string;
  addr?: string;
  controlSocket?: string;
}

const FORMS = '-dsn PATH -bucket NAME, or DB_PATH REPLICA_URL...';

/** Creates the `replicate` command. */
export function replicateCommand(): Command {
  const command = new Command('replicate')
    .description('Replicate SQLite databases continuously until SIGINT or SIGTERM.')
    .usage('[flags] | -dsn PATH -bucket NAME [flags] | [flags] DB_PATH REPLICA_URL...')
    .argument('[args...]', 'DB_PATH and one or more REPLICA_URLs (s3://BUCKET/PATH?endpoint=URL, file:///DIR)')
    .option('--dsn <path>', 'database file to replicate to -bucket (default: none, the databases come from the config file or DB_PATH)');
  addBucketFlags(command);
  command.option('--sync-interval <duration>', 'with -dsn or replica URLs: how often new WAL is shipped, as a Go duration such as 500ms or 1m (default: 1s)');
  command
    .option('--once', 'ship every database once, then exit: 0 when all were shipped to every replica, 1 otherwise (default: off, run until SIGINT or SIGTERM)')
    .option('--exec <command>', 'run the application as a child process, split into words like a shell (no shell features); exit with its status (default: exec of the config, else none)')
    .option('--shutdown-timeout <duration>', 'bound of the final sync after SIGINT or SIGTERM, as a Go duration (default: shutdown-timeout of the config, else 10s)')
    .option('--addr <address>', 'serve /metrics, /healthz and /readyz on host:port, or :port for 127.0.0.1 (default: addr of the config, else off)')
    .option('--control-socket <path>', 'Unix socket for walship sync and walship snapshot, or off (default: control-socket of the config, else $XDG_RUNTIME_DIR/walship.sock or /tmp/walship-<uid>.sock)');
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
only when no database is given on the command line.

A database that is missing, locked or not SQLite is logged and retried (after 1 s,
doubling up to 30 s) while the others replicate. SIGINT or SIGTERM ships what is
committed and exits within -shutdown-timeout; a second signal exits at once.

Exit status: 0 when everything committed was shipped; 1 when WAL was left unshipped at
the shutdown timeout, a final sync failed, a second signal came, or with -once a
database could not be shipped; with -exec, the application's status (128 + signal
number when a signal ended it), or 1 when it exited 0 but WAL was left unshipped.`,
  );

  return command.action(async (args: string[], flags: ReplicateFlags) => {
    await replicate(args, flags);
  });
}

/** Resolves the config from flags or file, runs the daemon and sets the exit status. */
async function replicate(args: string[], flags: ReplicateFlags): Promise<void> {
  const flagLogger = makeLogger(flags);
  const config = applyDaemonFlags(await buildConfig(args, flags, flagLogger), flags);
  const logger = makeLogger(flags, config);
  if (flags.once && config.exec !== undefined) throw new WalshipError('INVALID_INPUT', '-once cannot be combined with -exec or exec:; use one or the other');

  logger.info({ version: readVersion(), dbs: config.dbs.length, dirs: config.dirs?.length ?? 0 }, 'walship starting');
  process.exitCode = await runDaemon(config, logger, { once: flags.once === true });
}

/** Applies -exec, -shutdown-timeout, -addr and -control-socket over the config's values, with the config's checks. */
function applyDaemonFlags(config: Config, flags: ReplicateFlags): Config {
  const raw = { exec: flags.exec, 'shutdown-timeout': flags.shutdownTimeout, addr: flags.addr, 'control-socket': flags.controlSocket };
  const fromFlags = resolveConfig(raw, 'command line');
  for (const key of ['exec', 'shutdownTimeout', 'addr', 'controlSocket'] as const) {
    if (fromFlags[key] !== undefined) Object.assign(config, { [key]: fromFlags[key] });
  }
  return config;
}

/** Builds the config of one of the three forms of the command. */
async function buildConfig(args: string[], flags: ReplicateFlags, logger: Logger): Promise<Config> {
  if (flags.dsn !== undefined || flags.bucket !== undefined) return configFromBucket(args, flags, logger);
  if (args.length > 0) return configFromUrls(args, flags, logger);

  rejectFlags(flags, ['db-name', 'endpoint', 'region', 'force-path-style', 'sync-interval'], `apply only with ${FORMS}; set them in the config file instead`);
  const { config, file } = await loadCliConfig(flags, logger, `give a database as ${FORMS}`);
  if (config.dbs.length === 0 && (config.dirs?.length ?? 0) === 0) {
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

import { Command } from 'commander';

import type { Config, DatabaseConfig } from '../config.js';
import { directoryDatabase } from '../config-directory.js';
import { DirectoryWatch } from '../directory-watch.js';
import type { Logger } from '../logger.js';
import { addConfigFlags, addLogFlags, loadCliConfig, makeLogger } from './common.js';
import type { ConfigFlags, LogFlags } from './common.js';
import { printRows } from './table.js';

/** Flags of `walship databases`. */
interface DatabasesFlags extends ConfigFlags, LogFlags {
  json?: boolean;
}

const COLUMNS = ['path', 'replicas'];

/** Creates the `databases` command: the databases of the config file with the names of their replicas. */
export function databasesCommand(): Command {
  const command = new Command('databases')
    .description('List the databases of the config file and the names of their replicas.')
    .usage('[-config PATH] [-no-expand-env] [-json]')
    .allowExcessArguments(false)
    .option('--json', 'print a JSON array of objects with the fields path and replicas (a list of names) (default: off, a table)');
  addConfigFlags(command);
  addLogFlags(command);

  command.addHelpText(
    'after',
    `
Columns: path (absolute database path), replicas (replica names, comma-separated).
A dir: entry lists each database file it covers now: files whose names match
its pattern and that start with the SQLite header.`,
  );

  return command.action(async (flags: DatabasesFlags) => {
    const logger = makeLogger(flags);
    const { config } = await loadCliConfig(flags, logger, 'create one that lists dbs:');
    const databases = await configDatabases(config, makeLogger(flags, config));
    const rows = databases.map((db) => ({ path: db.path, replicas: db.replicas.map((replica) => replica.name) }));
    printRows(COLUMNS, rows, flags.json === true);
  });
}

/** Returns the databases of a config: its `path:` entries in file order, then the files each `dir:` entry covers, sorted by path. */
async function configDatabases(config: Config, logger: Logger): Promise<DatabaseConfig[]> {
  const found: DatabaseConfig[] = [];

  for (const directory of config.dirs ?? []) {
    const files: string[] = [];
    const watch = new DirectoryWatch(directory, { logger, rescanIntervalMs: 60_000, onFound: (file) => files.push(file), onGone: () => undefined });
    try {
      await watch.scan();
    } finally {
      watch.stop();
    }
    for (const file of files.sort()) found.push(directoryDatabase(directory, file));
  }
  return [...config.dbs, ...found];
}

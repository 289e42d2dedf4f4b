#!/usr/bin/env node
import { Command } from 'commander';

import { describeError } from '../errors.js';
import { longFlagsOf, normalizeFlags } from './args.js';
import { flushLogs } from './common.js';
import { snapshotCommand, syncCommand } from './control.js';
import { databasesCommand } from './databases.js';
import { generationsCommand } from './generations.js';
import { lsCommand } from './ls.js';
import { replicateCommand } from './replicate.js';
import { restoreCommand } from './restore.js';
import { snapshotsCommand } from './snapshots.js';
import { verifyCommand } from './verify.js';
import { versionCommand } from './version.js';
import { walCommand } from './wal.js';

// walship runs on Node.js 20 because better-sqlite3 12 does. The AWS SDK's
// notice that later SDK versions need Node.js 22 would only be noise in every
// run. An operator can still turn it on by setting the variable to false.
process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';

/** Creates the walship program with its subcommands. */
function createProgram(): Command {
  const program = new Command('walship')
    .description('Continuous replication of SQLite databases to S3 and local directories, in the Litestream v0.3 format.')
    .addCommand(replicateCommand())
    .addCommand(restoreCommand())
    .addCommand(syncCommand())
    .addCommand(snapshotCommand())
    .addCommand(databasesCommand())
    .addCommand(generationsCommand())
    .addCommand(snapshotsCommand())
    .addCommand(walCommand())
    .addCommand(lsCommand())
    .addCommand(verifyCommand())
    .addCommand(versionCommand())
    .addHelpText(
      'after',
      `
Long flags take one dash or two, as Litestream's do: -dsn PATH, --dsn PATH, -config=PATH.
Durations use Go syntax: 500ms, 1s, 1h30m. Run "walship COMMAND --help" for a command's flags.`,
    );

  // Usage errors, like unknown flags, exit 1 as Litestream's do; their message names the flag.
  for (const command of [program, ...program.commands]) command.showHelpAfterError('(run with --help for usage)');
  return program;
}

/**
 * Runs walship with command-line arguments and returns the exit code: the
 * code a command set in process.exitCode (`replicate -exec` passes on
 * the application's status), else 0, or 1 after an error.
 */
async function main(argv: readonly string[]): Promise<number> {
  const program = createProgram();
  try {
    await program.parseAsync(normalizeFlags(argv, longFlagsOf(program)), { from: 'user' });
    return typeof process.exitCode === 'number' ? process.exitCode : 0;
  } catch (err) {
    process.stderr.write(`error: ${describeError(err)}\n`);
    return 1;
  } finally {
    flushLogs();
  }
}

// Exit explicitly: open sockets of the S3 client's connection pool would
// otherwise keep the process alive after the command finished.
process.exit(await main(process.argv.slice(2)));

import { Command } from 'commander';

import { WalshipError, describeError } from '../errors.js';
import { generationsKey } from '../keys.js';
import type { Logger } from '../logger.js';
import type { ReplicaClient } from '../replica/client.js';
import { createReplicaClient } from '../replica/create.js';
import { describeDatabaseFolder, listDatabaseFolders } from '../replica/listing.js';
import { redactUrl } from '../replica-url.js';
import { addLogFlags, makeLogger } from './common.js';
import type { LogFlags } from './common.js';
import { exitWithFailures, replicaFromUrl } from './inspect-target.js';
import { printRows } from './table.js';
import type { Row } from './table.js';

/** Flags of `walship ls`. */
interface LsFlags extends LogFlags {
  json?: boolean;
}

const COLUMNS = ['name', 'generation', 'updated', 'objects', 'bytes'];

// Database folders whose objects are listed at once.
const FOLDERS_IN_FLIGHT = 8;

/** Creates the `ls` command: the database folders under a bucket prefix with their storage use. */
export function lsCommand(): Command {
  const command = new Command('ls')
    .description('List the database folders under a bucket prefix or directory with their newest generation and storage use.')
    .usage('[-json] (s3://BUCKET[/PREFIX] | file:///DIR)')
    .argument('<url>', 'location that contains database folders, e.g. s3://BUCKET/databases or file:///backups/databases')
    .allowExcessArguments(false)
    .option('--json', 'print a JSON array of objects with the same fields as the table columns (default: off, a table)');
  addLogFlags(command);

  command.addHelpText(
    'after',
    `
A database folder is a folder <name>/ directly under the location that
contains <name>/generations/. Columns: name (folder), generation (the one with
the newest snapshot or WAL segment, - when none), updated (time of that
object, RFC 3339, UTC), objects (every object under the folder, walship's
lease included), bytes (their stored sizes summed). S3 credentials come from
LITESTREAM_ACCESS_KEY_ID/LITESTREAM_SECRET_ACCESS_KEY, else the AWS variables
and the AWS SDK's default chain.`,
  );

  return command.action(async (url: string, flags: LsFlags) => {
    const logger = makeLogger(flags);
    if (!/^(s3|file):\/\//i.test(url)) {
      throw new WalshipError('INVALID_INPUT', `invalid location ${JSON.stringify(url)}: give a URL such as s3://BUCKET/databases or file:///backups/databases`);
    }
    const replica = replicaFromUrl(url, logger);
    const client = createReplicaClient(replica.client);
    try {
      await listFolders(client, redactUrl(url), flags.json === true, logger);
    } finally {
      await client.close();
    }
  });
}

/** Prints one row per database folder. A folder that cannot be listed is logged and makes the exit code 1. */
async function listFolders(client: ReplicaClient, displayUrl: string, json: boolean, logger: Logger): Promise<void> {
  const names = await listDatabaseFolders(client);
  if (names.length === 0) await explainEmpty(client, displayUrl, logger);

  const rows: Row[] = [];
  let failures = 0;
  for (let start = 0; start < names.length; start += FOLDERS_IN_FLIGHT) {
    const batch = names.slice(start, start + FOLDERS_IN_FLIGHT);
    const results = await Promise.allSettled(batch.map((name) => describeDatabaseFolder(client, name)));

    for (const [i, result] of results.entries()) {
      if (result.status === 'rejected') {
        failures++;
        logger.error({ folder: batch[i], err: describeError(result.reason) }, 'listing database folder failed');
        continue;
      }
      const info = result.value;
      rows.push({ name: info.name, generation: info.generation ?? null, updated: info.updatedAt ?? null, objects: info.objects, bytes: info.bytes });
    }
  }
  printRows(COLUMNS, rows, json);
  exitWithFailures(failures);
}

/** Logs why a location shows no database folders when it is a database folder itself. */
async function explainEmpty(client: ReplicaClient, displayUrl: string, logger: Logger): Promise<void> {
  const root = await client.list('', { delimiter: true });
  if (!root.prefixes.includes(`${generationsKey('')}/`)) return;
  logger.warn(
    { location: displayUrl },
    'the location is one database folder itself; list its parent location, or run walship generations with this URL',
  );
}

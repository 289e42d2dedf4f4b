import { Command } from 'commander';

import { describeError, hasCode } from '../errors.js';
import { createReplicaClient } from '../replica/create.js';
import { generationBounds, listGenerations } from '../replica/listing.js';
import { addInspectFlags, databaseUpdatedAt, exitWithFailures, resolveInspectTarget } from './inspect-target.js';
import type { InspectFlags, InspectReplica, InspectTarget } from './inspect-target.js';
import { formatLag, printRows } from './table.js';
import type { Row } from './table.js';

const COLUMNS = ['name', 'generation', 'lag', 'start', 'end'];

/** Creates the `generations` command: each generation of each replica with its time bounds and lag. */
export function generationsCommand(): Command {
  const command = new Command('generations')
    .description('List the generations of a database or replica URL with their time bounds and lag.')
    .usage('[-config PATH] [-no-expand-env] [-replica NAME] [-json] (DB_PATH | REPLICA_URL)');
  addInspectFlags(command);

  command.addHelpText(
    'after',
    `
Columns: name (replica), generation, lag, start, end. start and end are the
oldest and newest object times of the generation (RFC 3339, UTC). lag is the
last change of the database file or its -wal file minus end, or now minus end
for a replica URL, as a Go duration (81ms, 1.5s, 2m3s). -json adds lag_ms, the
lag in milliseconds. A replica that cannot be listed is logged on stderr, the
others are still printed, and the exit code is 1.`,
  );

  return command.action(async (target: string, flags: InspectFlags) => {
    const resolved = await resolveInspectTarget(target, flags);
    const updatedAt = await lagReference(resolved);

    const rows: Row[] = [];
    let failures = 0;
    for (const replica of resolved.replicas) {
      try {
        rows.push(...(await generationRows(replica, updatedAt, resolved)));
      } catch (err) {
        failures++;
        resolved.logger.error({ replica: replica.name, err: describeError(err) }, 'listing generations failed');
      }
    }
    printRows(COLUMNS, rows, flags.json === true);
    exitWithFailures(failures);
  });
}

/**
 * Returns the time the lag is measured from: the last change of the database
 * file, or now for a replica URL or a database file that does not exist.
 */
async function lagReference(resolved: InspectTarget): Promise<Date> {
  if (resolved.dbPath === undefined) return new Date();

  const updatedAt = await databaseUpdatedAt(resolved.dbPath);
  if (updatedAt !== undefined) return updatedAt;
  resolved.logger.warn({ path: resolved.dbPath }, 'database file does not exist, so lag is measured from now');
  return new Date();
}

/** Lists one replica's generations. A generation without snapshots or WAL segments is logged and left out. */
async function generationRows(replica: InspectReplica, updatedAt: Date, resolved: InspectTarget): Promise<Row[]> {
  const client = createReplicaClient(replica.client);
  try {
    const rows: Row[] = [];
    for (const generation of await listGenerations(client)) {
      let bounds;
      try {
        bounds = await generationBounds(client, generation);
      } catch (err) {
        if (!hasCode(err, 'NOT_FOUND')) throw err;
        resolved.logger.warn({ replica: replica.name, generation }, 'generation has no snapshots or WAL segments, leaving it out');
        continue;
      }

      const lagMs = updatedAt.getTime() - bounds.updatedAt.getTime();
      rows.push({ name: replica.name, generation, lag: formatLag(lagMs), lag_ms: lagMs, start: bounds.createdAt, end: bounds.updatedAt });
    }
    return rows;
  } finally {
    await client.close();
  }
}

import { Command } from 'commander';

import { describeError } from '../errors.js';
import { createReplicaClient } from '../replica/create.js';
import { listGenerations, listSnapshots } from '../replica/listing.js';
import { addInspectFlags, exitWithFailures, resolveInspectTarget } from './inspect-target.js';
import type { InspectFlags, InspectReplica } from './inspect-target.js';
import { printRows } from './table.js';
import type { Row } from './table.js';

const COLUMNS = ['replica', 'generation', 'index', 'size', 'created'];

/** Creates the `snapshots` command: every snapshot of each replica, by generation, then index. */
export function snapshotsCommand(): Command {
  const command = new Command('snapshots')
    .description('List the snapshots of a database or replica URL.')
    .usage('[-config PATH] [-no-expand-env] [-replica NAME] [-json] (DB_PATH | REPLICA_URL)');
  addInspectFlags(command);

  command.addHelpText(
    'after',
    `
Columns: replica, generation, index (WAL index in decimal; object names spell
it in hex), size (stored bytes, compressed), created (object time, RFC 3339,
UTC). Rows are sorted by generation, then index. A replica that cannot be
listed is logged on stderr, the others are still printed, and the exit code is 1.`,
  );

  return command.action(async (target: string, flags: InspectFlags) => {
    const resolved = await resolveInspectTarget(target, flags);

    const rows: Row[] = [];
    let failures = 0;
    for (const replica of resolved.replicas) {
      try {
        rows.push(...(await snapshotRows(replica)));
      } catch (err) {
        failures++;
        resolved.logger.error({ replica: replica.name, err: describeError(err) }, 'listing snapshots failed');
      }
    }
    printRows(COLUMNS, rows, flags.json === true);
    exitWithFailures(failures);
  });
}

/** Lists the snapshots of every generation of one replica. */
async function snapshotRows(replica: InspectReplica): Promise<Row[]> {
  const client = createReplicaClient(replica.client);
  try {
    const rows: Row[] = [];
    for (const generation of await listGenerations(client)) {
      for (const snapshot of await listSnapshots(client, generation)) {
        rows.push({ replica: replica.name, generation, index: snapshot.index, size: snapshot.size, created: snapshot.createdAt });
      }
    }
    return rows;
  } finally {
    await client.close();
  }
}

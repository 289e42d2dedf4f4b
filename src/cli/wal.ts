import { Command } from 'commander';

import { describeError, WalshipError } from '../errors.js';
import { isGeneration } from '../keys.js';
import { createReplicaClient } from '../replica/create.js';
import { listGenerations, listSegments } from '../replica/listing.js';
import { addInspectFlags, exitWithFailures, resolveInspectTarget } from './inspect-target.js';
import type { InspectFlags, InspectReplica } from './inspect-target.js';
import { printRows } from './table.js';
import type { Row } from './table.js';

/** Flags of `walship wal`. */
interface WalFlags extends InspectFlags {
  generation?: string;
}

const COLUMNS = ['replica', 'generation', 'index', 'offset', 'size', 'created'];

/** Creates the `wal` command: every WAL segment of each replica, in index and offset order. */
export function walCommand(): Command {
  const command = new Command('wal')
    .description('List the WAL segments of a database or replica URL.')
    .usage('[-config PATH] [-no-expand-env] [-replica NAME] [-generation G] [-json] (DB_PATH | REPLICA_URL)')
    .option('--generation <id>', 'list only this generation, 16 hex digits (default: every generation)');
  addInspectFlags(command);

  command.addHelpText(
    'after',
    `
Columns: replica, generation, index (WAL index in decimal), offset (byte offset
of the segment inside its WAL index, in decimal; object names spell both in
hex), size (stored bytes, compressed), created (object time, RFC 3339, UTC).
Rows are sorted by generation, index, then offset. A replica that cannot be
listed is logged on stderr, the others are still printed, and the exit code is 1.`,
  );

  return command.action(async (target: string, flags: WalFlags) => {
    if (flags.generation !== undefined && !isGeneration(flags.generation)) {
      throw new WalshipError('INVALID_INPUT', `-generation ${flags.generation} is not a generation; give its 16 lowercase hex digits`);
    }
    const resolved = await resolveInspectTarget(target, flags);

    const rows: Row[] = [];
    let failures = 0;
    for (const replica of resolved.replicas) {
      try {
        rows.push(...(await segmentRows(replica, flags.generation)));
      } catch (err) {
        failures++;
        resolved.logger.error({ replica: replica.name, err: describeError(err) }, 'listing WAL segments failed');
      }
    }
    printRows(COLUMNS, rows, flags.json === true);
    exitWithFailures(failures);
  });
}

/** Lists the WAL segments of one generation, or of every generation, of one replica. */
async function segmentRows(replica: InspectReplica, only: string | undefined): Promise<Row[]> {
  const client = createReplicaClient(replica.client);
  try {
    const generations = only === undefined ? await listGenerations(client) : [only];
    const rows: Row[] = [];
    for (const generation of generations) {
      for (const segment of await listSegments(client, generation)) {
        rows.push({
          replica: replica.name,
          generation,
          index: segment.index,
          offset: segment.offset,
          size: segment.size,
          created: segment.createdAt,
        });
      }
    }
    return rows;
  } finally {
    await client.close();
  }
}

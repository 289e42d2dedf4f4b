import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

import { Command } from 'commander';

import { describeError, WalshipError } from '../errors.js';
import { isGeneration } from '../keys.js';
import type { Logger } from '../logger.js';
import { formatPos } from '../pos.js';
import { createReplicaClient } from '../replica/create.js';
import { generationBounds, listSnapshots } from '../replica/listing.js';
import { addInspectFlags, exitWithFailures, resolveInspectTarget } from './inspect-target.js';
import type { InspectFlags, InspectReplica } from './inspect-target.js';
import { printRows } from './table.js';
import type { Row } from './table.js';

/** Flags of `walship verify`. */
interface VerifyFlags extends InspectFlags {
  generation?: string;
}

/** Page and table counts of a restored database. */
interface ContentSummary {
  pageSize: number;
  pages: number;
  tables: number;
}

const COLUMNS = ['replica', 'generation', 'position', 'from', 'to', 'size', 'pages', 'tables', 'integrity'];

// Temporary directories of restores in progress, removed on SIGINT and SIGTERM as well.
const temporaryDirs = new Set<string>();

/** Creates the `verify` command: restores each replica to a temporary file, checks it and reports what it holds. */
export function verifyCommand(): Command {
  const command = new Command('verify')
    .description('Restore a replica to a temporary file, check its integrity and report the restorable time range.')
    .usage('[-config PATH] [-no-expand-env] [-replica NAME] [-generation G] [-json] (REPLICA_URL | DB_PATH)')
    .option('--generation <id>', 'generation to verify, 16 hex digits (default: the generation with the newest object)');
  addInspectFlags(command);

  command.addHelpText(
    'after',
    `
Each replica is restored into a new directory under the system temporary
directory ($TMPDIR, else /tmp), checked with PRAGMA integrity_check, and the
directory is deleted afterwards, also when the check fails. Columns: replica,
generation, position (generation/index:offset reached, index in hex, offset in
bytes), from and to (the restorable time range: first snapshot time to newest
object time of the generation, RFC 3339, UTC), size (database bytes), pages,
tables (tables in the schema, SQLite's own excluded), integrity. -json adds
page_size. A replica that fails is logged on stderr with the error, which
names the object key at fault, and the exit code is 1.`,
  );

  return command.action(async (target: string, flags: VerifyFlags) => {
    if (flags.generation !== undefined && !isGeneration(flags.generation)) {
      throw new WalshipError('INVALID_INPUT', `-generation ${flags.generation} is not a generation; give its 16 lowercase hex digits`);
    }
    const resolved = await resolveInspectTarget(target, flags);

    const removeOnSignal = (signal: NodeJS.Signals): void => {
      for (const dir of temporaryDirs) fs.rmSync(dir, { recursive: true, force: true });
      process.exit(signal === 'SIGINT' ? 130 : 143);
    };
    process.once('SIGINT', removeOnSignal);
    process.once('SIGTERM', removeOnSignal);

    const rows: Row[] = [];
    let failures = 0;
    try {
      for (const replica of resolved.replicas) {
        try {
          rows.push(await verifyReplica(replica, flags.generation, resolved.logger));
        } catch (err) {
          failures++;
          resolved.logger.error({ replica: replica.name, err: describeError(err) }, 'verify failed');
        }
      }
    } finally {
      process.off('SIGINT', removeOnSignal);
      process.off('SIGTERM', removeOnSignal);
    }
    printRows(COLUMNS, rows, flags.json === true);
    exitWithFailures(failures);
  });
}

/** Restores one replica into a temporary directory, summarizes the result, and removes the directory. */
async function verifyReplica(replica: InspectReplica, generation: string | undefined, logger: Logger): Promise<Row> {
  // The restore module pulls in SQLite and the worker pool, so it is loaded only when a restore runs.
  const { restore } = await import('../restore.js');
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'walship-verify-'));
  temporaryDirs.add(dir);

  const client = createReplicaClient(replica.client);
  try {
    const outputPath = path.join(dir, 'verify.db');
    const result = await restore({ client, outputPath, logger, dbName: replica.name, ...(generation ? { generation } : {}) });
    const summary = await summarize(outputPath);

    // The range starts at the oldest snapshot, because no restore can start before one.
    const snapshots = await listSnapshots(client, result.generation);
    const bounds = await generationBounds(client, result.generation);
    const from = snapshots.reduce((oldest, s) => (s.createdAt < oldest ? s.createdAt : oldest), bounds.updatedAt);

    return {
      replica: replica.name,
      generation: result.generation,
      position: formatPos(result.pos),
      from,
      to: bounds.updatedAt,
      size: result.bytes,
      pages: summary.pages,
      page_size: summary.pageSize,
      tables: summary.tables,
      integrity: 'ok',
    };
  } finally {
    await client.close();
    fs.rmSync(dir, { recursive: true, force: true });
    temporaryDirs.delete(dir);
  }
}

/** Counts the pages and tables of a restored database, read-only. */
async function summarize(dbPath: string): Promise<ContentSummary> {
  const { default: Database } = await import('better-sqlite3');
  const db = new Database(dbPath, { readonly: true, fileMustExist: true });
  try {
    const pageSize = db.pragma('page_size', { simple: true }) as number;
    const pages = db.pragma('page_count', { simple: true }) as number;
    const row = db.prepare("SELECT count(*) AS n FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\'").get() as { n: number };
    return { pageSize, pages, tables: row.n };
  } finally {
    db.close();
  }
}

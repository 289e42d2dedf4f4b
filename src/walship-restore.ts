import fs from 'node:fs';
import path from 'node:path';

import type { Env } from './config-replica.js';
import { hasCode, WalshipError } from './errors.js';
import type { Logger } from './logger.js';
import { createReplicaClient } from './replica/create.js';
import { restore } from './restore.js';
import type { RestoreProgress, RestoreResult } from './restore.js';
import { resolveReplicaOptions } from './walship-options.js';
import type { ReplicaSpec } from './walship-options.js';

/** Options of Walship.restore: where to read, what to write, and where to stop. */
export interface WalshipRestoreOptions {
  /** Replica to read: a URL, a bucket in the CLI's `-bucket` form, or a ReplicaConfig. */
  replica: ReplicaSpec;
  /** Database file to create. It must not exist, and neither may its `-wal` file. */
  outputPath: string;
  /** Database name, for the `databases/<name>` prefix of a bucket replica and for log lines. Defaults to the output file's name without its extension. */
  dbName?: string;
  /** Generation to restore. Defaults to the generation with the newest object. */
  generation?: string;
  /** Last WAL index to apply. Defaults to the last index of the generation. */
  index?: number;
  /** Point in time: the state after the last transaction committed at or before it. Cannot be combined with `index`. */
  timestamp?: Date;
  /** WAL segment downloads in flight at once. Defaults to 8. */
  parallelism?: number;
  /** Called as downloads progress. */
  onProgress?: (progress: RestoreProgress) => void;
  /** When true, an existing output file gives `{ status: 'exists' }` instead of a rejection. */
  ifDbNotExists?: boolean;
  /** When true, a replica without a backup gives `{ status: 'no-backup' }` instead of a NO_GENERATION rejection. */
  ifReplicaExists?: boolean;
  /** Defaults to a logger that drops everything. */
  logger?: Logger;
  /** Environment that credentials are read from. Defaults to process.env. */
  env?: Env;
}

/**
 * Outcome of Walship.restore: `restored` with the position reached, or one
 * of the cases that `ifDbNotExists` and `ifReplicaExists` turn from errors
 * into results.
 */
export type WalshipRestoreOutcome =
  | { status: 'restored'; dbName: string; location: string; result: RestoreResult }
  | { status: 'exists'; dbName: string }
  | { status: 'no-backup'; dbName: string; location: string };

/**
 * Restores a database from a replica into a new file, as `walship restore`
 * does. The output appears complete and checked, or not at all. Rejects
 * with INVALID_INPUT when the output or its `-wal` file exists,
 * and with NO_GENERATION when the replica contains no backup, unless the
 * matching `if...` option is set.
 */
export async function restoreDatabase(options: WalshipRestoreOptions): Promise<WalshipRestoreOutcome> {
  if (typeof options.outputPath !== 'string' || options.outputPath === '') {
    throw new WalshipError('INVALID_INPUT', 'outputPath is missing; give the database file to create');
  }
  const outputPath = path.resolve(options.outputPath);
  const { replica, dbName } = resolveReplicaOptions(options.replica, outputPath, options.dbName, options.env);

  if (fs.existsSync(outputPath)) {
    if (options.ifDbNotExists) return { status: 'exists', dbName };
    throw new WalshipError('INVALID_INPUT', `output ${outputPath} already exists; remove it, choose another path, or set ifDbNotExists`);
  }
  checkNoLeftoverWal(outputPath);

  const client = createReplicaClient(replica.client);
  try {
    const result = await restore({
      client,
      outputPath,
      dbName,
      ...(options.generation !== undefined ? { generation: options.generation } : {}),
      ...(options.index !== undefined ? { index: options.index } : {}),
      ...(options.timestamp !== undefined ? { timestamp: options.timestamp } : {}),
      ...(options.parallelism !== undefined ? { parallelism: options.parallelism } : {}),
      ...(options.onProgress !== undefined ? { onProgress: options.onProgress } : {}),
      ...(options.logger !== undefined ? { logger: options.logger } : {}),
    });
    return { status: 'restored', dbName, location: client.location, result };
  } catch (err) {
    if (options.ifReplicaExists && hasCode(err, 'NO_GENERATION')) return { status: 'no-backup', dbName, location: client.location };
    throw err;
  } finally {
    await client.close();
  }
}

/**
 * Rejects an output whose `-wal` file is still there. SQLite would apply a
 * leftover WAL of the deleted database to the restored file the first time
 * it is opened, and corrupt it.
 */
function checkNoLeftoverWal(outputPath: string): void {
  const wal = `${outputPath}-wal`;
  if (fs.existsSync(wal)) {
    throw new WalshipError('INVALID_INPUT', `${wal} exists although ${outputPath} does not; delete it before restoring, because SQLite would apply it to the restored database`);
  }
}

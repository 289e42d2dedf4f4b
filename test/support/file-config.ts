import { DEFAULTS, defaultMetaPath } from '../../src/config.js';
import type { Config } from '../../src/config.js';

/**
 * Builds the config of one database replicated to a file replica at `root`,
 * with short monitor and sync intervals and no time-based checkpoint.
 */
export function fileReplicaConfig(dbPath: string, name: string, root: string): Config {
  return {
    dbs: [
      {
        path: dbPath,
        name,
        metaPath: defaultMetaPath(dbPath),
        monitorInterval: 50,
        checkpointInterval: 0,
        minCheckpointPageCount: DEFAULTS.minCheckpointPageCount,
        maxCheckpointPageCount: DEFAULTS.maxCheckpointPageCount,
        busyTimeout: DEFAULTS.busyTimeout,
        replicas: [{ name: 'file', client: { type: 'file', root }, syncInterval: 50, retention: 0, retentionCheckInterval: DEFAULTS.retentionCheckInterval, snapshotInterval: 0 }],
      },
    ],
    logLevel: 'info',
    logFormat: 'text',
  };
}

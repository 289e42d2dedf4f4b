import type { ReplicaClientConfig } from '../src/replica/client.js';

/**
 * Jobs that the benchmark hands to its writer processes (bench-writer.ts),
 * and what they send back. A job arrives as the one IPC message after the
 * fork, and the process exits after its `done` or `error` message.
 */

/** Shape of the rows every workload inserts into table `t`. */
export interface RowShape {
  /** Rows per transaction. */
  rowsPerTx: number;
  /** Bytes of the `body` blob of each row. */
  rowBytes: number;
}

/** Commits transactions back to back for `seconds` (small-tx). */
export interface FlatJob extends RowShape {
  kind: 'flat';
  db: string;
  seconds: number;
  /** Milliseconds between the WAL positions kept for the lag over time. */
  sampleMs: number;
}

/** Writes `totalBytes` of rows in transactions of `rowsPerTx` rows (bulk). */
export interface BulkJob extends RowShape {
  kind: 'bulk';
  db: string;
  totalBytes: number;
}

/** Commits `ratePerDb` transactions a second to each database for `seconds` (paced, many). */
export interface PacedJob extends RowShape {
  kind: 'paced';
  dbs: string[];
  ratePerDb: number;
  seconds: number;
}

/** Grows a database to `bytes` with 4 MiB transactions and no journal, then switches it to WAL mode (snapshot). */
export interface FillJob extends RowShape {
  kind: 'fill';
  db: string;
  bytes: number;
}

/** Hashes the rows of table `t` and runs `PRAGMA integrity_check`. */
export interface HashJob {
  kind: 'hash';
  db: string;
}

/** Restores databases with walship's library restore and compares each with its source. */
export interface VerifyJob {
  kind: 'verify';
  items: { source: string; output: string; client: ReplicaClientConfig }[];
  /** The job stops starting restores after this many seconds and reports what it checked. */
  seconds: number;
}

export type WriterJob = FlatJob | BulkJob | PacedJob | FillJob | HashJob | VerifyJob;

/**
 * The end of one commit in the WAL, as the writer saw it right after COMMIT
 * returned: the commit time (ms since the epoch), salt-1 of the WAL header
 * (it grows by one at every WAL restart) and the byte offset just past the
 * commit's last frame.
 */
export interface WalMark {
  t: number;
  salt: number;
  end: number;
}

/** Outcome of a job that writes. */
export interface WriteResult {
  transactions: number;
  rows: number;
  /** WAL bytes appended by the commits: frames, plus a 32-byte header at each WAL restart. */
  walBytes: number;
  startedAt: number;
  endedAt: number;
  pageSize: number;
  /** Commit positions per database: every commit for paced jobs, a sample for flat jobs, the last for bulk. */
  marks: Record<string, WalMark[]>;
  /** Milliseconds commits started after their scheduled time (paced jobs): p50, p99, max. */
  lateness?: { p50: number; p99: number; max: number };
  /** Milliseconds a commit took, waits for the write lock included: p50, p99, max. */
  commitMs: { p50: number; p99: number; max: number };
  /** Size of the database file at the end (fill jobs). */
  dbBytes?: number;
}

/** Outcome of a hash job. */
export interface HashResult {
  rows: number;
  sha256: string;
  integrity: string;
  /** Seconds `PRAGMA integrity_check` took. */
  integritySeconds: number;
  bytes: number;
}

/** Outcome of a verify job. */
export interface VerifyResult {
  checked: number;
  identical: number;
  failures: string[];
  restoreSeconds: number;
  restoredBytes: number;
}

/** Message from a writer process. */
export type WriterMessage =
  | { type: 'done'; result: WriteResult | HashResult | VerifyResult }
  | { type: 'error'; message: string };

/** Describes how a restored copy differs from its source, or returns '' when rows and integrity match. */
export function compareHashes(source: HashResult, copy: HashResult): string {
  const problems: string[] = [];
  if (copy.integrity !== 'ok') problems.push(`integrity_check: ${copy.integrity.slice(0, 200)}`);
  if (copy.rows !== source.rows) problems.push(`${copy.rows} rows, source has ${source.rows}`);
  else if (copy.sha256 !== source.sha256) problems.push('row hash differs from the source');
  return problems.join('; ');
}

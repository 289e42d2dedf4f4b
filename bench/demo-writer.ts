import { setTimeout as sleep } from 'node:timers/promises';

import Database from 'better-sqlite3';

import { ChinookWorkload, NorthwindWorkload, Random } from './demo-workload.js';

/**
 * The demo's application process: writes to Northwind and Chinook while
 * walship replicates them from the demo's process, as a real application
 * runs apart from its replicator. Started by bench/demo.ts with its options
 * as one JSON argument. It stops at its deadline, on a `stop` message, on
 * SIGINT or SIGTERM, or when the demo process goes away, then sends a
 * `done` message with its counts.
 */

/** Options of the writer process, passed as its one argument in JSON. */
export interface WriterOptions {
  northwind: string;
  chinook: string;
  /** How long to write, in seconds. */
  seconds: number;
  seed: number;
}

/** Counts of the transactions and rows the writer committed to one database. */
export interface WriterStats {
  transactions: number;
  /** Rows inserted, updated or deleted. */
  rowsWritten: number;
  /** Rows written by the largest transaction. */
  largestTransaction: number;
  /** Transactions by kind, e.g. `placeOrder: 212`. */
  operations: Record<string, number>;
}

/** Message from the writer to the demo. */
export type WriterMessage = { type: 'done'; stats: { northwind: WriterStats; chinook: WriterStats } } | { type: 'error'; message: string };

// Upper bound on transactions, so the loop ends even if the clock misbehaves.
const MAX_TRANSACTIONS = 100_000;
// Pause between transactions in milliseconds: a few hundred transactions in 15 s.
const MIN_PAUSE_MS = 10;
const MAX_PAUSE_MS = 40;
// Orders of the batch import, the largest transaction of the run.
const BULK_ORDERS = 250;
// How long a writer waits for walship's checkpoints to release the database.
const BUSY_TIMEOUT_MS = 5_000;

let stopping = false;

/** Runs the workloads until the deadline or a stop request and returns their counts. */
async function runWriter(options: WriterOptions): Promise<{ northwind: WriterStats; chinook: WriterStats }> {
  const random = new Random(options.seed);
  const northwindDb = openDatabase(options.northwind);
  const chinookDb = openDatabase(options.chinook);

  try {
    const northwind = new NorthwindWorkload(northwindDb, random);
    const chinook = new ChinookWorkload(chinookDb, random);
    const stats = { northwind: emptyStats(), chinook: emptyStats() };

    const started = Date.now();
    const deadline = started + options.seconds * 1000;
    // The large transactions run once, 40% into the run, so that small ones come before and after them.
    const largeAt = started + options.seconds * 400;
    let largeDone = false;

    for (let i = 0; i < MAX_TRANSACTIONS && !stopping && Date.now() < deadline; i++) {
      if (!largeDone && Date.now() >= largeAt) {
        record(stats.northwind, 'bulkImport', northwind.bulkImport(BULK_ORDERS));
        record(stats.chinook, 'repriceCatalog', chinook.repriceCatalog());
        largeDone = true;
        continue;
      }

      runOne(random, northwind, chinook, stats);
      await sleep(random.int(MIN_PAUSE_MS, MAX_PAUSE_MS));
    }
    return stats;
  } finally {
    northwindDb.close();
    chinookDb.close();
  }
}

/** Runs one small transaction chosen at random: mostly new orders and invoices. */
function runOne(random: Random, northwind: NorthwindWorkload, chinook: ChinookWorkload, stats: { northwind: WriterStats; chinook: WriterStats }): void {
  const roll = random.next();
  if (roll < 0.4) record(stats.northwind, 'placeOrder', northwind.placeOrder());
  else if (roll < 0.5) record(stats.northwind, 'shipOrder', northwind.shipOrder());
  else if (roll < 0.55) record(stats.northwind, 'restock', northwind.restock());
  else if (roll < 0.58) record(stats.northwind, 'deleteOldestOrder', northwind.deleteOldestOrder());
  else if (roll < 0.88) record(stats.chinook, 'sellInvoice', chinook.sellInvoice());
  else record(stats.chinook, 'adjustInvoice', chinook.adjustInvoice());
}

/** Opens a database as an application would: WAL mode (set by walship already), a busy timeout, foreign keys on. */
function openDatabase(dbPath: string): Database.Database {
  const db = new Database(dbPath, { fileMustExist: true, timeout: BUSY_TIMEOUT_MS });
  db.pragma('foreign_keys = ON');
  return db;
}

function emptyStats(): WriterStats {
  return { transactions: 0, rowsWritten: 0, largestTransaction: 0, operations: {} };
}

/** Adds one committed transaction to the counts. */
function record(stats: WriterStats, operation: string, rows: number): void {
  stats.transactions++;
  stats.rowsWritten += rows;
  stats.largestTransaction = Math.max(stats.largestTransaction, rows);
  stats.operations[operation] = (stats.operations[operation] ?? 0) + 1;
}

/** Sends a message to the demo process and waits until it is written. */
function send(message: WriterMessage): Promise<void> {
  return new Promise((resolve) => {
    if (!process.send) resolve();
    else process.send(message, undefined, {}, () => resolve());
  });
}

async function main(): Promise<void> {
  const requestStop = (): void => {
    stopping = true;
  };
  // Ctrl-C reaches the whole process group: the writer finishes its current
  // transaction and reports, and the demo goes on to verify what was written.
  process.on('SIGINT', requestStop);
  process.on('SIGTERM', requestStop);
  process.on('disconnect', requestStop);
  process.on('message', (message) => {
    if (message === 'stop') requestStop();
  });

  try {
    const options = JSON.parse(process.argv[2] ?? '') as WriterOptions;
    const stats = await runWriter(options);
    await send({ type: 'done', stats });
  } catch (err) {
    await send({ type: 'error', message: err instanceof Error ? (err.stack ?? err.message) : String(err) });
    process.exitCode = 1;
  }
  process.disconnect?.();
}

await main();

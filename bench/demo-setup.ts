import fs from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import Database from 'better-sqlite3';

/** Directory of the sample databases and their licenses: `data/` at the repository root. */
export const DATA_DIR = fileURLToPath(new URL('../../data/', import.meta.url));

// File that marks a directory as created by the demo, so that a rerun may delete it.
const MARKER = '.walship-demo';

/** Paths of the demo's source databases. */
export interface DemoSources {
  northwind: string;
  chinook: string;
}

/**
 * Creates the work directory afresh and puts the two source databases in it:
 * a copy of Chinook and a Northwind built from its SQL scripts. An existing
 * directory is deleted only when it is empty or was created by the demo.
 */
export async function prepareWorkDir(workDir: string): Promise<DemoSources> {
  await removeOldRun(workDir);
  await fs.mkdir(workDir, { recursive: true });
  await fs.writeFile(path.join(workDir, MARKER), 'Created by npm run demo; deleted and recreated by the next run.\n');

  const chinook = path.join(workDir, 'chinook.db');
  await fs.copyFile(path.join(DATA_DIR, 'chinook.sqlite'), chinook);

  const northwind = path.join(workDir, 'northwind.db');
  await buildNorthwind(northwind);
  return { northwind, chinook };
}

/** Deletes the directory of a previous run. Rejects a non-empty directory that the demo did not create. */
async function removeOldRun(workDir: string): Promise<void> {
  const entries = await fs.readdir(workDir).catch((err: NodeJS.ErrnoException) => {
    if (err.code === 'ENOENT') return undefined;
    throw err;
  });
  if (entries === undefined) return;

  if (entries.length > 0 && !entries.includes(MARKER)) {
    throw new Error(
      `work directory ${workDir} is not empty and was not created by the demo (it has no ${MARKER} file); ` +
        'remove it or set WALSHIP_DEMO_DIR to another directory',
    );
  }
  await fs.rm(workDir, { recursive: true, force: true });
}

/** Builds Northwind from data/northwind-create.sql and data/northwind-update.sql. */
async function buildNorthwind(dbPath: string): Promise<void> {
  const create = await fs.readFile(path.join(DATA_DIR, 'northwind-create.sql'), 'utf8');
  const update = await fs.readFile(path.join(DATA_DIR, 'northwind-update.sql'), 'utf8');

  const db = new Database(dbPath);
  try {
    // The create script inserts order lines before the orders table exists,
    // so foreign keys stay off while it runs. One transaction keeps the
    // 3,300 inserts from syncing the file one by one, and inside it the
    // script's own `PRAGMA foreign_keys` lines have no effect.
    db.pragma('foreign_keys = OFF');
    db.exec('BEGIN');
    db.exec(create);
    db.exec(update);
    db.exec('COMMIT');
    db.pragma('foreign_keys = ON');

    const violations = db.pragma('foreign_key_check') as unknown[];
    if (violations.length > 0) throw new Error(`Northwind built from ${DATA_DIR} has ${violations.length} foreign key violations`);
  } finally {
    db.close();
  }
}

import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';

import { patternMatcher } from './config-directory.js';
import type { DirectoryConfig } from './config.js';
import { describeError } from './errors.js';
import type { Logger } from './logger.js';
import { Mutex } from './mutex.js';

/** Options of a DirectoryWatch. */
export interface DirectoryWatchOptions {
  logger: Logger;
  /** Time between full rescans in ms, which catch what file events missed. */
  rescanIntervalMs: number;
  /** Called once for each database file that appears, with its absolute path. */
  onFound(filePath: string): void;
  /** Called once for each database file found before that is gone. */
  onGone(filePath: string): void;
}

// File events come in bursts (create, write, rename): one rescan covers a burst.
const EVENT_DEBOUNCE_MS = 100;

const SQLITE_HEADER = Buffer.from('SQLite format 3\0', 'latin1');

/**
 * Finds the database files of a directory entry and follows them while
 * walship runs: a file event or the periodic rescan reports files that
 * appeared or disappeared. A file qualifies when its name matches the
 * pattern and it starts with the SQLite header, so an empty file that an
 * application is still creating is picked up once SQLite has written it.
 */
export class DirectoryWatch {
  readonly directory: DirectoryConfig;

  #options: DirectoryWatchOptions;
  #log: Logger;
  #matches: (fileName: string) => boolean;
  #known = new Set<string>();
  // Matching files without the SQLite header, reported once each.
  #skipped = new Set<string>();
  #scanMutex = new Mutex();
  #timer: NodeJS.Timeout | undefined;
  #debounce: NodeJS.Timeout | undefined;
  #watcher: fs.FSWatcher | undefined;
  #stopped = false;
  #missingReported = false;

  constructor(directory: DirectoryConfig, options: DirectoryWatchOptions) {
    this.directory = directory;
    this.#options = options;
    this.#log = options.logger.child({ dir: directory.dir });
    this.#matches = patternMatcher(directory);
  }

  /** Database files found by the last scan. */
  get files(): string[] {
    return [...this.#known];
  }

  /** Scans once, then follows file events and rescans periodically until `stop`. */
  async start(): Promise<void> {
    await this.scan();
    this.#timer = setInterval(() => void this.scan(), this.#options.rescanIntervalMs);
    this.#timer.unref();
  }

  /** Stops following the directory; no callback runs afterwards. */
  stop(): void {
    this.#stopped = true;
    if (this.#timer) clearInterval(this.#timer);
    if (this.#debounce) clearTimeout(this.#debounce);
    this.#watcher?.close();
    this.#timer = this.#debounce = this.#watcher = undefined;
  }

  /** Lists the directory and reports files that appeared or disappeared since the last scan. */
  scan(): Promise<void> {
    return this.#scanMutex.run(async () => {
      if (this.#stopped) return;
      this.#watch();

      const found = await this.#list();
      if (found === undefined || this.#stopped) return;

      for (const file of found) {
        if (this.#known.has(file)) continue;
        this.#known.add(file);
        this.#options.onFound(file);
      }
      for (const file of [...this.#known]) {
        if (found.has(file)) continue;
        this.#known.delete(file);
        this.#options.onGone(file);
      }
    });
  }

  // Returns the qualifying files, or undefined when the directory cannot be read
  // for another reason than not existing (then nothing is reported gone).
  async #list(): Promise<Set<string> | undefined> {
    const { dir, recursive } = this.directory;
    let entries: fs.Dirent[];
    try {
      entries = await fsp.readdir(dir, { withFileTypes: true, recursive });
      this.#missingReported = false;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') {
        this.#log.error({ err: describeError(err) }, 'cannot list the database directory, retrying at the next rescan');
        return undefined;
      }
      if (!this.#missingReported) this.#log.warn('database directory does not exist, waiting for it');
      this.#missingReported = true;
      return new Set();
    }

    const found = new Set<string>();
    for (const entry of entries) {
      if (!entry.isFile() || !this.#matches(entry.name)) continue;
      // Node 20 names the entry's own directory in `parentPath` (or `path` before 20.12).
      const parent = (entry as { parentPath?: string }).parentPath ?? (entry as { path?: string }).path ?? dir;
      const file = path.join(parent, entry.name);
      if (hasHiddenSegment(path.relative(dir, file))) continue;
      if (this.#known.has(file) || (await this.#isDatabase(file))) found.add(file);
    }
    return found;
  }

  // Reads the first 16 bytes; a file that is not SQLite (yet) is reported once and rechecked at every scan.
  async #isDatabase(file: string): Promise<boolean> {
    let head = Buffer.alloc(0);
    try {
      const handle = await fsp.open(file, 'r');
      try {
        head = (await handle.read(Buffer.alloc(16), 0, 16, 0)).buffer;
      } finally {
        await handle.close();
      }
    } catch {
      return false;
    }

    if (head.equals(SQLITE_HEADER)) {
      this.#skipped.delete(file);
      return true;
    }
    if (!this.#skipped.has(file)) this.#log.info({ path: file }, 'file matches the pattern but is not a SQLite database yet, skipping it');
    this.#skipped.add(file);
    return false;
  }

  // Starts the file watcher when the directory exists; events trigger a rescan.
  #watch(): void {
    if (this.#watcher) return;
    try {
      this.#watcher = fs.watch(this.directory.dir, { persistent: false, recursive: this.directory.recursive }, () => this.#scanSoon());
    } catch {
      // The directory is missing, or the platform cannot watch it: the periodic rescan covers both.
      return;
    }
    this.#watcher.on('error', () => {
      // A watched directory that is removed ends its watcher; the next scan starts a new one.
      this.#watcher?.close();
      this.#watcher = undefined;
    });
  }

  #scanSoon(): void {
    if (this.#debounce || this.#stopped) return;
    this.#debounce = setTimeout(() => {
      this.#debounce = undefined;
      void this.scan();
    }, EVENT_DEBOUNCE_MS);
  }
}

/** Reports whether a relative path passes through a hidden directory, such as a meta directory. */
function hasHiddenSegment(relative: string): boolean {
  return relative.split(path.sep).some((segment) => segment.startsWith('.'));
}

import fs from 'node:fs';
import path from 'node:path';

/**
 * File-change notifications shared per directory. Many databases often live
 * in one directory, and one `fs.watch` per database would deliver every event
 * in that directory to every database. Here each directory has one watcher,
 * and an event reaches only the listeners of the file it names.
 */

type Listener = () => void;

interface DirectoryWatch {
  watcher: fs.FSWatcher;
  listeners: Map<string, Set<Listener>>;
}

const watches = new Map<string, DirectoryWatch>();

/**
 * Calls `listener` whenever the file at `filePath` may have changed, and
 * returns a function that stops the notifications. Throws when the platform
 * or file system cannot watch the directory, so callers poll instead.
 */
export function onFileEvent(filePath: string, listener: Listener): () => void {
  const dir = path.dirname(path.resolve(filePath));
  const base = path.basename(filePath);

  let watch = watches.get(dir);
  if (!watch) {
    const listeners = new Map<string, Set<Listener>>();
    const watcher = fs.watch(dir, { persistent: false }, (_event, file) => {
      // Some platforms omit the file name, so every listener of the directory runs.
      if (file === null) {
        for (const set of listeners.values()) for (const fn of set) fn();
        return;
      }
      const set = listeners.get(String(file));
      if (set) for (const fn of set) fn();
    });
    // A watched directory that disappears ends its watcher. Listeners still poll, so the error is ignored.
    watcher.on('error', () => undefined);
    watch = { watcher, listeners };
    watches.set(dir, watch);
  }

  let set = watch.listeners.get(base);
  if (!set) {
    set = new Set();
    watch.listeners.set(base, set);
  }
  set.add(listener);

  const owner = watch;
  return () => {
    const current = owner.listeners.get(base);
    current?.delete(listener);
    if (current && current.size === 0) owner.listeners.delete(base);
    if (owner.listeners.size === 0 && watches.get(dir) === owner) {
      owner.watcher.close();
      watches.delete(dir);
    }
  };
}

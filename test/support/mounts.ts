import { execFileSync } from 'node:child_process';
import fs from 'node:fs/promises';
import path from 'node:path';

/**
 * Mounts for local-fault tests, which run as root: a small tmpfs that can be
 * filled up, and a bind mount that can be switched between read-only and
 * read-write. Each mount is undone by `unmount`, which the tests call in
 * `finally`.
 */

/** Runs mount(8) with `args` and throws, with its standard error, when it fails. */
function mount(args: string[]): void {
  execFileSync('mount', args, { stdio: ['ignore', 'ignore', 'pipe'] });
}

/** Reports whether this process may mount a tmpfs: it tries one in a scratch directory under `parent`. */
export async function canMount(parent: string): Promise<boolean> {
  const probe = await fs.mkdtemp(path.join(parent, 'mount-probe-'));
  try {
    mount(['-t', 'tmpfs', '-o', 'size=64k', 'tmpfs', probe]);
    unmount(probe);
    return true;
  } catch {
    return false;
  } finally {
    await fs.rm(probe, { recursive: true, force: true });
  }
}

/** Mounts a tmpfs of `bytes` bytes on `dir`, creating the directory. */
export async function mountTmpfs(dir: string, bytes: number): Promise<void> {
  await fs.mkdir(dir, { recursive: true });
  mount(['-t', 'tmpfs', '-o', `size=${bytes}`, 'tmpfs', dir]);
}

/** Bind-mounts `dir` on itself, creating the directory, so that `setReadOnly` can switch it. */
export async function bindMount(dir: string): Promise<void> {
  await fs.mkdir(dir, { recursive: true });
  mount(['--bind', dir, dir]);
}

/** Remounts a bind mount made by `bindMount` read-only or read-write. */
export function setReadOnly(dir: string, readOnly: boolean): void {
  mount(['-o', `remount,bind,${readOnly ? 'ro' : 'rw'}`, dir]);
}

/** Unmounts `dir`, ignoring a directory that is not mounted, so that it is safe in `finally`. */
export function unmount(dir: string): void {
  try {
    execFileSync('umount', [dir], { stdio: ['ignore', 'ignore', 'pipe'] });
  } catch (err) {
    const stderr = String((err as { stderr?: Buffer }).stderr ?? '');
    if (!/not mounted|no mount point|not found/i.test(stderr)) throw err;
  }
}

/**
 * Fills the file system holding `file` by appending to it until ENOSPC, first
 * in 64 KiB writes and then in 4 KiB writes for the last partial space,
 * bounded at `maxBytes`. Returns the bytes written.
 */
export async function fillDisk(file: string, maxBytes: number): Promise<number> {
  const handle = await fs.open(file, 'w');
  let written = 0;
  try {
    for (const size of [64 * 1024, 4096]) {
      const chunk = Buffer.alloc(size, 0xa5);
      while (written < maxBytes) {
        try {
          const { bytesWritten } = await handle.write(chunk);
          written += bytesWritten;
          if (bytesWritten < chunk.length) break;
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code === 'ENOSPC') break;
          throw err;
        }
      }
    }
  } finally {
    await handle.close();
  }
  return written;
}

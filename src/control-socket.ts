import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';

import { WalshipError, describeError } from './errors.js';
import type { Logger } from './logger.js';
import type { SyncResult } from './replicator.js';

/**
 * The control socket: HTTP over a Unix socket (mode 0600, so only the user
 * running walship can use it), through which `walship sync` and
 * `walship snapshot` reach a running daemon.
 *
 * Requests:
 * - `POST /sync?db=NAME&wait=1`: ship now. With `wait`, the response comes once
 *   the stores confirmed it: 200 when every database shipped, 500 otherwise,
 *   with one entry per database. Without `wait`, 202 at once.
 * - `POST /snapshot?db=NAME`: write a new snapshot to every replica; 200 or 500.
 * - `GET /status`: every database with its state and positions.
 * `db` is a database name or path; without it the request covers every database.
 */

/** Target of control requests: the methods of a Replicator that the control socket calls. */
export interface ControlTarget {
  syncAll(name?: string): Promise<SyncResult[]>;
  snapshot(name?: string): Promise<number>;
  status(): unknown;
}

/** Value of `control-socket` that turns the socket off. */
export const CONTROL_SOCKET_OFF = 'off';

/** Returns the default socket path: `$XDG_RUNTIME_DIR/walship.sock`, else `<tmpdir>/walship-<uid>.sock`. */
export function defaultControlSocket(): string {
  const runtime = process.env.XDG_RUNTIME_DIR;
  if (runtime !== undefined && runtime !== '') return path.join(runtime, 'walship.sock');
  return path.join(os.tmpdir(), `walship-${process.getuid?.() ?? 0}.sock`);
}

/** A listening control socket. */
export class ControlServer {
  readonly path: string;
  #server: http.Server;
  #inode: number;

  private constructor(socketPath: string, server: http.Server, inode: number) {
    this.path = socketPath;
    this.#server = server;
    this.#inode = inode;
  }

  /**
   * Listens on `socketPath`. A socket file left by a process that is gone is
   * replaced. Rejects when another process accepts connections on it, or when
   * the path is something other than a socket.
   */
  static async listen(socketPath: string, target: ControlTarget, logger: Logger): Promise<ControlServer> {
    await removeStaleSocket(socketPath);
    const server = http.createServer((req, res) => void handle(req, res, target, logger));

    // The umask covers the moment between bind and chmod, when the socket
    // would otherwise be open to other users.
    const umask = process.umask(0o177);
    try {
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        server.listen(socketPath, () => resolve());
      });
    } finally {
      process.umask(umask);
    }
    fs.chmodSync(socketPath, 0o600);
    return new ControlServer(socketPath, server, fs.statSync(socketPath).ino);
  }

  /** Stops listening and removes the socket file, unless another process has replaced it. */
  async close(): Promise<void> {
    await new Promise<void>((resolve) => {
      this.#server.close(() => resolve());
      this.#server.closeAllConnections();
    });
    try {
      if (fs.statSync(this.path).ino === this.#inode) fs.unlinkSync(this.path);
    } catch {
      // Already gone.
    }
  }
}

/** Response of a control request. */
export interface ControlResponse {
  status: number;
  body: Record<string, unknown>;
}

/**
 * Sends one request to the daemon on `socketPath` and returns its status and
 * JSON body. Rejects with a message naming the path when no daemon listens
 * there, and when no response came within `timeoutMs`.
 */
export function controlRequest(socketPath: string, method: 'GET' | 'POST', urlPath: string, timeoutMs: number): Promise<ControlResponse> {
  return new Promise((resolve, reject) => {
    const req = http.request({ socketPath, method, path: urlPath, timeout: timeoutMs }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => (text += chunk));
      res.on('end', () => {
        try {
          resolve({ status: res.statusCode ?? 0, body: JSON.parse(text) as Record<string, unknown> });
        } catch (err) {
          reject(new WalshipError('INVALID_INPUT', `control socket ${socketPath} sent a response that is not JSON: ${text.slice(0, 200)}`, { cause: err }));
        }
      });
    });
    req.on('timeout', () => req.destroy(new WalshipError('INVALID_INPUT', `control request to ${socketPath} timed out after ${timeoutMs}ms; pass a longer -timeout`)));
    req.on('error', (err: NodeJS.ErrnoException) => {
      if (err.code === 'ENOENT' || err.code === 'ECONNREFUSED') {
        reject(new WalshipError('NOT_FOUND', `no walship daemon listens on ${socketPath}; start walship replicate, or pass the daemon's -control-socket PATH`, { cause: err }));
      } else reject(err);
    });
    req.end();
  });
}

// Routes one request to the target and writes its JSON response.
async function handle(req: http.IncomingMessage, res: http.ServerResponse, target: ControlTarget, logger: Logger): Promise<void> {
  const url = new URL(req.url ?? '/', 'http://walship');
  const db = url.searchParams.get('db') ?? undefined;
  const route = `${req.method} ${url.pathname}`;

  try {
    if (route === 'POST /sync') {
      if (url.searchParams.get('wait') === null) {
        void target.syncAll(db).then(logFailures(logger), (err: unknown) => logger.warn({ err: describeError(err) }, 'sync requested over the control socket failed'));
        return reply(res, 202, { status: 'started' });
      }
      const results = await target.syncAll(db);
      const failed = results.some((r) => r.error !== undefined);
      return reply(res, failed ? 500 : 200, { status: failed ? 'failed' : 'synced', databases: results.map(describeResult) });
    }
    if (route === 'POST /snapshot') {
      const written = await target.snapshot(db);
      if (written > 0) return reply(res, 200, { status: 'snapshot written' });
      return reply(res, 200, { status: 'no new snapshot: the current WAL index has one already; the next write starts a new index, and the next request writes one there' });
    }
    if (route === 'GET /status') return reply(res, 200, { status: 'ok', databases: target.status() });
    return reply(res, 404, { status: 'failed', error: `unknown request ${route}; use POST /sync, POST /snapshot or GET /status` });
  } catch (err) {
    return reply(res, 500, { status: 'failed', error: describeError(err) });
  }
}

function reply(res: http.ServerResponse, status: number, body: Record<string, unknown>): void {
  res.writeHead(status, { 'content-type': 'application/json' });
  res.end(JSON.stringify(body));
}

function describeResult(result: SyncResult): Record<string, unknown> {
  return { db: result.db, path: result.path, ...(result.error ? { error: describeError(result.error) } : {}) };
}

function logFailures(logger: Logger): (results: SyncResult[]) => void {
  return (results) => {
    for (const r of results) if (r.error) logger.warn({ db: r.db, err: describeError(r.error) }, 'sync requested over the control socket failed');
  };
}

// Removes a socket file whose daemon is gone. Rejects when a daemon accepts connections on it or the path is no socket.
async function removeStaleSocket(socketPath: string): Promise<void> {
  let stat: fs.Stats;
  try {
    stat = fs.lstatSync(socketPath);
  } catch {
    return;
  }
  if (!stat.isSocket()) {
    throw new WalshipError('INVALID_INPUT', `control socket path ${socketPath} exists and is not a socket; remove it or pass another -control-socket PATH`);
  }

  const answering = await new Promise<boolean>((resolve) => {
    const probe = net.connect(socketPath);
    probe.once('connect', () => {
      probe.destroy();
      resolve(true);
    });
    probe.once('error', () => resolve(false));
  });
  if (answering) {
    throw new WalshipError('INVALID_INPUT', `control socket ${socketPath} is in use by another walship; pass another -control-socket PATH, or off`);
  }
  fs.unlinkSync(socketPath);
}

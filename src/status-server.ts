import http from 'node:http';
import type { AddressInfo } from 'node:net';

import { WalshipError, describeError } from './errors.js';
import type { Health } from './health.js';
import type { Logger } from './logger.js';
import type { Metrics } from './metrics.js';

/** Host the status server binds when `addr` gives only a port (`:9090`). */
export const DEFAULT_STATUS_HOST = '127.0.0.1';

/** Options of startStatusServer. */
export interface StatusServerOptions {
  /**
   * Address to listen on: `host:port`, `[ipv6]:port`, or `:port`, which binds
   * 127.0.0.1 only. Litestream v0.3 binds every interface for `:9090`, but
   * walship serves other hosts only when the host is given, e.g.
   * `0.0.0.0:9090`. Port 0 picks a free port.
   */
  addr: string;
  metrics: Metrics;
  health: Health;
  /** Receives failed scrapes. Defaults to none. */
  log?: Logger;
}

/** A running status server. */
export interface StatusServer {
  /** Bound host, e.g. `127.0.0.1` or `::1`. */
  host: string;
  /** Bound port; the chosen one when `addr` asked for port 0. */
  port: number;
  /** Base URL, e.g. `http://127.0.0.1:9090`. */
  url: string;
  /** Stops listening and closes open connections. */
  close(): Promise<void>;
}

/** Parses a status server address (`host:port`, `[ipv6]:port` or `:port`) into host and port. */
export function parseAddr(addr: string): { host: string; port: number } {
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([^:[\]]*)):(\d{1,5})$/.exec(addr.trim());
  const port = m ? Number(m[3]) : NaN;
  if (!m || port > 65535) {
    throw new WalshipError('INVALID_INPUT', `invalid addr ${JSON.stringify(addr)}: expected host:port, [ipv6]:port or :port, e.g. 127.0.0.1:9090`);
  }
  const host = m[1] ?? (m[2] || DEFAULT_STATUS_HOST);
  return { host, port };
}

/**
 * Starts the HTTP server for Prometheus and health probes:
 * - `GET /metrics`: the metrics in Prometheus text format.
 * - `GET /healthz`: 200 while every replica of every database is within its
 *   database's max-lag, else 503 with a JSON body naming those that are not.
 * - `GET /readyz`: 200 once every replica of every database has completed a
 *   sync, else 503 with a JSON body naming those that have not.
 * Other paths get 404, and methods other than GET and HEAD get 405.
 * Rejects with INVALID_INPUT naming the address when it cannot listen there.
 */
export async function startStatusServer(options: StatusServerOptions): Promise<StatusServer> {
  const { host, port } = parseAddr(options.addr);
  const server = http.createServer((req, res) => {
    handle(options, req, res).catch((err: unknown) => {
      options.log?.error({ err: describeError(err), path: req.url }, 'status request failed');
      if (!res.headersSent) send(res, 500, 'text/plain; charset=utf-8', `${describeError(err)}\n`);
      else res.destroy();
    });
  });

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve();
    });
  }).catch((err: unknown) => {
    throw new WalshipError('INVALID_INPUT', `cannot listen on addr ${options.addr}: ${describeError(err)}; choose another address with -addr or addr:`, { cause: err });
  });

  const bound = server.address() as AddressInfo;
  return {
    host: bound.address,
    port: bound.port,
    url: `http://${bound.family === 'IPv6' ? `[${bound.address}]` : bound.address}:${bound.port}`,
    close: () =>
      new Promise<void>((resolve, reject) => {
        server.close((err) => (err ? reject(err) : resolve()));
        // Keep-alive connections of a scraper would hold close() open.
        server.closeAllConnections();
      }),
  };
}

// Routes one request.
async function handle(options: StatusServerOptions, req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
  const path = new URL(req.url ?? '/', 'http://localhost').pathname;
  const route = ROUTES[path];
  if (!route) {
    send(res, 404, 'text/plain; charset=utf-8', `not found: ${path}; try /metrics, /healthz or /readyz\n`);
    return;
  }
  if (req.method !== 'GET' && req.method !== 'HEAD') {
    res.setHeader('Allow', 'GET, HEAD');
    send(res, 405, 'text/plain; charset=utf-8', `method ${req.method} not allowed on ${path}\n`);
    return;
  }
  await route(options, res);
}

const ROUTES: Record<string, (options: StatusServerOptions, res: http.ServerResponse) => Promise<void> | void> = {
  '/metrics': async ({ metrics }, res) => {
    send(res, 200, metrics.contentType, await metrics.registry.metrics());
  },
  '/healthz': ({ health }, res) => {
    const result = health.check();
    if (result.ok) sendJson(res, 200, { status: 'ok', databases: [] });
    else sendJson(res, 503, { status: 'lagging', databases: result.failing });
  },
  '/readyz': ({ health }, res) => {
    const result = health.readiness();
    if (result.ok) sendJson(res, 200, { status: 'ready', databases: [] });
    else sendJson(res, 503, { status: 'not ready', databases: result.failing });
  },
};

function sendJson(res: http.ServerResponse, status: number, body: unknown): void {
  send(res, status, 'application/json; charset=utf-8', `${JSON.stringify(body)}\n`);
}

function send(res: http.ServerResponse, status: number, contentType: string, body: string): void {
  res.statusCode = status;
  res.setHeader('Content-Type', contentType);
  // Probes and scrapes must see the state at request time.
  res.setHeader('Cache-Control', 'no-store');
  res.setHeader('Content-Length', Buffer.byteLength(body));
  res.end(res.req.method === 'HEAD' ? undefined : body);
}

import { describeError } from './errors.js';
import type { Logger } from './logger.js';

/** Options of a Heartbeat. */
export interface HeartbeatOptions {
  /** URL requested with GET. */
  url: string;
  /** Minimum time between requests, in ms. The config enforces at least 1 minute. */
  intervalMs: number;
  /** Reports whether every database has synced successfully; checked before each request. */
  healthy(): boolean;
  logger: Logger;
  /** Time a request may take, in ms. Defaults to 30 s. */
  requestTimeoutMs?: number;
}

// How often the condition is checked while a request is due, at most.
const MAX_CHECK_MS = 5000;

/**
 * Requests a monitoring URL (a dead man's switch) while replication is
 * healthy: a GET once every database has synced, then again at most once per
 * interval while that stays true, so the monitoring service can alert when
 * the requests stop. Failed requests are logged and retried at the next check.
 */
export class Heartbeat {
  #options: HeartbeatOptions;
  #log: Logger;
  #timer: NodeJS.Timeout | undefined;
  #lastSent = 0;
  #inFlight = false;
  #sent = 0;

  constructor(options: HeartbeatOptions) {
    this.#options = options;
    // The URL may carry a token, so log lines name only its origin.
    this.#log = options.logger.child({ heartbeat: safeOrigin(options.url) });
  }

  /** Successful requests so far. */
  get sent(): number {
    return this.#sent;
  }

  /** Starts checking; the timer does not keep the process alive. */
  start(): void {
    const checkMs = Math.min(MAX_CHECK_MS, this.#options.intervalMs);
    this.#timer = setInterval(() => void this.check(), checkMs);
    this.#timer.unref();
  }

  /** Stops checking; a request in flight completes. */
  stop(): void {
    if (this.#timer) clearInterval(this.#timer);
    this.#timer = undefined;
  }

  /** Sends the request when it is due and every database has synced. */
  async check(): Promise<void> {
    if (this.#inFlight || Date.now() - this.#lastSent < this.#options.intervalMs) return;
    if (!this.#options.healthy()) return;

    this.#inFlight = true;
    try {
      const response = await fetch(this.#options.url, { signal: AbortSignal.timeout(this.#options.requestTimeoutMs ?? 30_000) });
      // The body is not needed, but reading it releases the connection.
      await response.arrayBuffer().catch(() => undefined);
      if (!response.ok) throw new Error(`HTTP status ${response.status}`);
      this.#lastSent = Date.now();
      this.#sent++;
      this.#log.debug('heartbeat sent');
    } catch (err) {
      this.#log.warn({ err: describeError(err) }, 'heartbeat request failed, retrying at the next check');
    } finally {
      this.#inFlight = false;
    }
  }
}

/** Returns the scheme, host and port of a URL, without its path or credentials. */
function safeOrigin(url: string): string {
  try {
    return new URL(url).origin;
  } catch {
    return '(invalid URL)';
  }
}

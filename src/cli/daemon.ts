import { DEFAULTS } from '../config.js';
import type { Config } from '../config.js';
import { CONTROL_SOCKET_OFF, ControlServer, defaultControlSocket } from '../control-socket.js';
import { describeError } from '../errors.js';
import { ExecChild } from '../exec-child.js';
import { Heartbeat } from '../heartbeat.js';
import type { Logger } from '../logger.js';
import type { Replicator } from '../replicator.js';
import { flushLogs } from './common.js';

/**
 * The `replicate` daemon: replication, the control socket, the status server,
 * the heartbeat and the `-exec` application, from start to a graceful
 * shutdown.
 *
 * Exit status:
 * - 0: stopped by SIGINT or SIGTERM with every captured frame stored on every
 *   replica, or with `-once`, every database shipped to every replica.
 * - 1: a final sync failed, or the shutdown timed out with WAL left unshipped
 *   (each such database is logged with its position and its replicas').
 *   Also when a second signal ended the process at once, or with `-once` when
 *   a database could not be opened or shipped.
 * - With `-exec`: the application's own exit status (128 + the signal number
 *   when a signal ended it). When the application exits 0 but WAL was left
 *   unshipped, 1.
 */

/** Options of runDaemon. */
export interface DaemonOptions {
  /** Ship every database once, then stop. */
  once: boolean;
}

/** Runs replication until a signal, the `-exec` application's exit, or one pass with `-once`; returns the exit status. */
export async function runDaemon(config: Config, logger: Logger, options: DaemonOptions): Promise<number> {
  // The replicator pulls in SQLite, the worker pool and the AWS SDK, so it is
  // loaded only once the arguments are known to be valid.
  const { Replicator } = await import('../replicator.js');
  const replicator = new Replicator(config, { logger });
  const timeoutMs = config.shutdownTimeout ?? DEFAULTS.shutdownTimeout;

  let child: ExecChild | undefined;
  const stop = waitForSignal(logger, () => child);
  try {
    await replicator.start();
    if (options.once) return await shipOnce(replicator, logger, timeoutMs);

    const services = await startServices(config, replicator, logger);
    logger.info({ dbs: replicator.supervisors.map((s) => s.config.name).join(',') }, 'replication started');

    if (config.exec !== undefined) {
      try {
        child = await ExecChild.start(config.exec, logger);
      } catch (err) {
        logger.error({ err: describeError(err) }, 'cannot start the application');
        await services.close();
        await replicator.shutdown(timeoutMs);
        return 1;
      }
    }

    // The replicator's timers and watchers do not hold the event loop open, so
    // without this timer the process would exit while waiting for a signal.
    const keepAlive = setInterval(() => {}, 3_600_000);
    const childStatus = await Promise.race([stop.signalled.then(() => undefined), child?.exited ?? new Promise<never>(() => {})]);
    clearInterval(keepAlive);

    // A signal was forwarded to the application: it ends first, then replication.
    let status = childStatus;
    if (child !== undefined && status === undefined) {
      logger.info('waiting for the application to exit');
      status = await child.exited;
    }
    if (child !== undefined) logger.info({ status }, 'application exited, stopping replication');

    await services.close();
    const complete = await shutdown(replicator, logger, timeoutMs);
    if (status !== undefined && status !== 0) return status;
    return complete ? 0 : 1;
  } finally {
    stop.dispose();
  }
}

// Ships every database once and stops: 0 when all were shipped, else 1.
async function shipOnce(replicator: Replicator, logger: Logger, timeoutMs: number): Promise<number> {
  const results = await replicator.syncAll();
  for (const result of results) {
    if (result.error) logger.error({ db: result.db, path: result.path, err: describeError(result.error) }, 'database not shipped');
  }
  const complete = await shutdown(replicator, logger, timeoutMs);
  const shipped = results.filter((r) => r.error === undefined).length;
  logger.info({ shipped, failed: results.length - shipped }, 'replicated once');
  return complete && shipped === results.length ? 0 : 1;
}

// Stops replication within the shutdown timeout; returns true when nothing was left unshipped.
async function shutdown(replicator: Replicator, logger: Logger, timeoutMs: number): Promise<boolean> {
  const started = Date.now();
  const report = await replicator.shutdown(timeoutMs);
  const elapsed = `${Date.now() - started}ms`;
  if (report.timedOut) logger.error({ elapsed, unshipped: report.unshipped.length }, 'replication stopped at the shutdown timeout with WAL left unshipped');
  else logger.info({ elapsed, complete: report.complete }, 'replication stopped');
  return report.complete;
}

/** Services beside replication, closed before the final sync. */
interface Services {
  close(): Promise<void>;
}

// Starts the control socket, the status server and the heartbeat that the config sets.
async function startServices(config: Config, replicator: Replicator, logger: Logger): Promise<Services> {
  const closers: (() => Promise<void>)[] = [];

  const socketPath = config.controlSocket ?? defaultControlSocket();
  if (socketPath !== CONTROL_SOCKET_OFF) {
    try {
      const control = await ControlServer.listen(socketPath, replicator, logger);
      closers.push(() => control.close());
      logger.info({ path: socketPath }, 'control socket listening');
    } catch (err) {
      // Replication matters more than the socket: walship goes on without it.
      logger.error({ path: socketPath, err: describeError(err) }, 'control socket unavailable; walship sync and walship snapshot cannot reach this process');
    }
  }

  if (config.addr !== undefined) {
    const { Metrics } = await import('../metrics.js');
    const { Health } = await import('../health.js');
    const { startStatusServer } = await import('../status-server.js');
    const metrics = new Metrics();
    metrics.attach(replicator);
    const server = await startStatusServer({ addr: config.addr, metrics, health: new Health(replicator), log: logger });
    closers.push(async () => {
      metrics.detach();
      await server.close();
    });
    logger.info({ url: `${server.url}/metrics` }, 'serving metrics and health checks');
  }

  if (config.heartbeatUrl !== undefined) {
    const heartbeat = new Heartbeat({
      url: config.heartbeatUrl,
      intervalMs: config.heartbeatInterval ?? DEFAULTS.heartbeatInterval,
      healthy: () => replicator.allSynced(),
      logger,
    });
    heartbeat.start();
    void heartbeat.check();
    closers.push(async () => heartbeat.stop());
  }

  return {
    async close() {
      for (const close of closers.reverse()) await close().catch((err: unknown) => logger.warn({ err: describeError(err) }, 'cannot close a service'));
    },
  };
}

/**
 * Waits for SIGINT or SIGTERM. The first is forwarded to the application of
 * `-exec` and starts the graceful shutdown. A second exits at once with status 1.
 */
function waitForSignal(logger: Logger, child: () => ExecChild | undefined): { signalled: Promise<void>; dispose(): void } {
  let received: NodeJS.Signals | undefined;
  let wake = (): void => {};
  const signalled = new Promise<void>((resolve) => (wake = resolve));

  const onSignal = (signal: NodeJS.Signals): void => {
    if (received !== undefined) {
      logger.warn({ signal }, 'second signal received, exiting without a final sync');
      child()?.signal(signal);
      flushLogs();
      process.exit(1);
    }
    received = signal;
    logger.info({ signal }, 'signal received, stopping replication');
    child()?.signal(signal);
    wake();
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  return {
    signalled,
    dispose() {
      process.off('SIGINT', onSignal);
      process.off('SIGTERM', onSignal);
    },
  };
}

import { Command } from 'commander';

import { loadConfigFile } from '../config.js';
import { CONTROL_SOCKET_OFF, controlRequest, defaultControlSocket } from '../control-socket.js';
import type { ControlResponse } from '../control-socket.js';
import { parseDuration } from '../duration.js';
import { WalshipError } from '../errors.js';
import { addConfigFlags } from './common.js';
import type { ConfigFlags } from './common.js';

/** Flags of the commands that talk to a running daemon. */
interface ControlFlags extends ConfigFlags {
  controlSocket?: string;
  timeout?: string;
  wait?: boolean;
}

const DEFAULT_TIMEOUT = '30s';

/** Creates the `sync` command, which requests a running daemon to ship now. */
export function syncCommand(): Command {
  const command = new Command('sync')
    .description('Ask the running walship replicate to ship everything committed now.')
    .argument('[db]', 'database name or path (default: every database)')
    .allowExcessArguments(false)
    .option('--wait', 'return once every replica has stored it; exit 1 when a database could not be shipped (default: off, return once the daemon accepted the request)');
  addControlFlags(command);
  return command.action(async (db: string | undefined, flags: ControlFlags) => {
    const response = await send(flags, 'POST', `/sync?${query(db, flags.wait === true)}`);
    report(response);
  });
}

/** Creates the `snapshot` command, which requests a new snapshot from a running daemon. */
export function snapshotCommand(): Command {
  const command = new Command('snapshot')
    .description(
      'Ask the running walship replicate to write a new snapshot to every replica, and wait for it. ' +
        'A replica whose current WAL index has a snapshot gets none; the next write starts a new index for it.',
    )
    .argument('[db]', 'database name or path (default: every database)')
    .allowExcessArguments(false);
  addControlFlags(command);
  return command.action(async (db: string | undefined, flags: ControlFlags) => {
    const response = await send(flags, 'POST', `/snapshot?${query(db, false)}`);
    report(response);
  });
}

function addControlFlags(command: Command): void {
  command
    .option('--control-socket <path>', 'Unix socket of the daemon (default: control-socket of the config, else $XDG_RUNTIME_DIR/walship.sock or /tmp/walship-<uid>.sock)')
    .option('--timeout <duration>', `longest wait for the daemon's response, as a Go duration (default: ${DEFAULT_TIMEOUT})`);
  addConfigFlags(command);
}

function query(db: string | undefined, wait: boolean): string {
  const params = new URLSearchParams();
  if (db !== undefined) params.set('db', db);
  if (wait) params.set('wait', '1');
  return params.toString();
}

// Finds the socket, sends the request and rejects on a failed response.
async function send(flags: ControlFlags, method: 'GET' | 'POST', urlPath: string): Promise<ControlResponse> {
  const timeoutText = flags.timeout ?? DEFAULT_TIMEOUT;
  const timeoutMs = parseDuration(timeoutText);
  if (timeoutMs === undefined || timeoutMs <= 0) {
    throw new WalshipError('INVALID_INPUT', `-timeout ${JSON.stringify(timeoutText)} is not a positive duration; write it as 30s or 2m`);
  }

  const socketPath = await socketOf(flags);
  const response = await controlRequest(socketPath, method, urlPath, timeoutMs);
  if (response.status >= 400) {
    printDatabases(response, process.stderr);
    const reason = typeof response.body.error === 'string' ? response.body.error : 'a database was not shipped';
    throw new WalshipError('INVALID_INPUT', `walship at ${socketPath}: ${reason}`);
  }
  return response;
}

// -control-socket, else control-socket of the config file when one is given, else the default path.
async function socketOf(flags: ControlFlags): Promise<string> {
  let socketPath = flags.controlSocket;
  const file = flags.config ?? (process.env.WALSHIP_CONFIG || undefined);
  if (socketPath === undefined && file !== undefined) socketPath = (await loadConfigFile(file, { expandEnv: flags.expandEnv })).controlSocket;
  socketPath ??= defaultControlSocket();

  if (socketPath === CONTROL_SOCKET_OFF) throw new WalshipError('INVALID_INPUT', 'the control socket is off in the config; set control-socket: PATH on the daemon to use this command');
  return socketPath;
}

function report(response: ControlResponse): void {
  process.stdout.write(`${String(response.body.status)}\n`);
  printDatabases(response, process.stdout);
}

// Prints one line per database of a sync response: `db=NAME ok` or `db=NAME error: ...`.
function printDatabases(response: ControlResponse, out: NodeJS.WritableStream): void {
  const databases = Array.isArray(response.body.databases) ? (response.body.databases as Record<string, unknown>[]) : [];
  for (const db of databases) {
    out.write(`db=${String(db.db)} ${typeof db.error === 'string' ? `error: ${db.error}` : 'ok'}\n`);
  }
}

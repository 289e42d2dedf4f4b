import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import os from 'node:os';

import { WalshipError } from './errors.js';
import type { Logger } from './logger.js';

/**
 * The application run by `-exec CMD` as walship's child process. The command
 * is split into words as a POSIX shell would split it, without running a
 * shell: quotes and backslashes are honoured, but there is no variable
 * expansion, globbing, redirection or pipe. Write `-exec "sh -c '...'"` for
 * those. Without a shell in between, forwarded signals reach the
 * application itself.
 */

/**
 * Splits a command line into words: whitespace separates words, single
 * quotes keep everything literally, double quotes keep everything but `\"`
 * and `\\`, and a backslash outside quotes escapes the next character.
 *
 * Throws WalshipError INVALID_INPUT on an unterminated quote or an empty command.
 */
export function splitCommand(command: string): string[] {
  const words: string[] = [];
  let word = '';
  let inWord = false;
  let quote: "'" | '"' | undefined;

  for (let i = 0; i < command.length; i++) {
    const c = command[i]!;
    if (quote === "'") {
      if (c === "'") quote = undefined;
      else word += c;
    } else if (quote === '"') {
      if (c === '"') quote = undefined;
      else if (c === '\\' && (command[i + 1] === '"' || command[i + 1] === '\\')) word += command[++i];
      else word += c;
    } else if (c === "'" || c === '"') {
      quote = c;
      inWord = true;
    } else if (c === '\\' && i + 1 < command.length) {
      word += command[++i];
      inWord = true;
    } else if (/\s/.test(c)) {
      if (inWord) words.push(word);
      word = '';
      inWord = false;
    } else {
      word += c;
      inWord = true;
    }
  }

  if (quote !== undefined) throw new WalshipError('INVALID_INPUT', `-exec ${JSON.stringify(command)} has an unterminated ${quote} quote`);
  if (inWord) words.push(word);
  if (words.length === 0) throw new WalshipError('INVALID_INPUT', '-exec needs a command; give it as -exec "myapp serve"');
  return words;
}

/**
 * Returns the exit status a shell would report for a child: its exit code,
 * or 128 plus the signal number when a signal ended it.
 */
export function exitStatus(code: number | null, signal: NodeJS.Signals | null): number {
  if (code !== null) return code;
  const number = signal === null ? undefined : os.constants.signals[signal];
  return number === undefined ? 1 : 128 + number;
}

/** A running application started by `-exec`. */
export class ExecChild {
  readonly command: string;
  readonly child: ChildProcess;
  /** Resolves with the child's exit status once it has exited (see exitStatus). */
  readonly exited: Promise<number>;
  #log: Logger;

  private constructor(command: string, child: ChildProcess, exited: Promise<number>, log: Logger) {
    this.command = command;
    this.child = child;
    this.exited = exited;
    this.#log = log;
  }

  /**
   * Starts the command with walship's environment, standard input, output and
   * error. Rejects when the program cannot be started (not found, not executable).
   */
  static async start(command: string, logger: Logger): Promise<ExecChild> {
    const [program, ...args] = splitCommand(command);
    const log = logger.child({ exec: program });
    const child = spawn(program!, args, { stdio: 'inherit' });

    await new Promise<void>((resolve, reject) => {
      child.once('spawn', resolve);
      child.once('error', (err) => reject(new WalshipError('INVALID_INPUT', `-exec ${JSON.stringify(command)} cannot be started: ${err.message}`, { cause: err })));
    });

    const exited = new Promise<number>((resolve) => {
      child.once('exit', (code, signal) => {
        const status = exitStatus(code, signal);
        log.info({ pid: child.pid, status, ...(signal ? { signal } : {}) }, 'application exited');
        resolve(status);
      });
    });
    log.info({ pid: child.pid }, 'application started');
    return new ExecChild(command, child, exited, log);
  }

  /** Sends a signal to the child while it runs. */
  signal(signal: NodeJS.Signals): void {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return;
    this.#log.info({ pid: this.child.pid, signal }, 'forwarding signal to the application');
    this.child.kill(signal);
  }
}

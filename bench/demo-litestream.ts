import { spawn } from 'node:child_process';
import fs from 'node:fs';
import { fileURLToPath } from 'node:url';

import type { S3ClientConfig } from '../src/replica/client.js';

/** Litestream v0.3.13 for linux-x64, installed by the dev dependency @flydotio/litestream-linux-x64. */
export const LITESTREAM_BINARY = fileURLToPath(new URL('../../node_modules/@flydotio/litestream-linux-x64/litestream', import.meta.url));

// Bound on one Litestream restore of the demo's small databases.
const RESTORE_TIMEOUT_MS = 120_000;

/** Reports whether the Litestream binary is installed and executable here. */
export function litestreamAvailable(): boolean {
  try {
    fs.accessSync(LITESTREAM_BINARY, fs.constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

/** Result of running `litestream restore`. */
export interface LitestreamRun {
  /** The command line, for the report. */
  command: string;
  /** Empty when Litestream exited with status 0; otherwise its error output. */
  error: string;
}

/** Runs `litestream restore -o OUTPUT file://DIR` on a file replica. */
export function restoreFileReplica(output: string, replicaDir: string, home: string): Promise<LitestreamRun> {
  return run(['restore', '-o', output, `file://${replicaDir}`], home);
}

/**
 * Runs `litestream restore -config CONFIG -o OUTPUT DB_PATH` on an S3
 * replica. Litestream v0.3 reads an S3-compatible endpoint and static
 * credentials from a config file only, so this writes one next to `output`.
 */
export function restoreS3Replica(output: string, dbPath: string, client: S3ClientConfig, home: string): Promise<LitestreamRun> {
  const configPath = `${output}.litestream.yml`;
  const config = [
    'dbs:',
    `  - path: ${JSON.stringify(dbPath)}`,
    '    replicas:',
    '      - type: s3',
    `        bucket: ${JSON.stringify(client.bucket)}`,
    `        path: ${JSON.stringify(client.prefix)}`,
    `        endpoint: ${JSON.stringify(client.endpoint ?? '')}`,
    `        region: ${JSON.stringify(client.region ?? 'us-east-1')}`,
    '        force-path-style: true',
    `        access-key-id: ${JSON.stringify(client.accessKeyId ?? '')}`,
    `        secret-access-key: ${JSON.stringify(client.secretAccessKey ?? '')}`,
    '',
  ].join('\n');
  fs.writeFileSync(configPath, config);
  return run(['restore', '-config', configPath, '-o', output, dbPath], home);
}

/**
 * Runs Litestream with a minimal environment, so no AWS settings of the
 * user's shell reach it. The process runs asynchronously because the S3
 * server it reads from may live in this process's event loop.
 */
function run(args: string[], home: string): Promise<LitestreamRun> {
  const command = `litestream ${args.join(' ')}`;
  const child = spawn(LITESTREAM_BINARY, args, {
    stdio: ['ignore', 'ignore', 'pipe'],
    env: { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: home },
  });

  let stderr = '';
  child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
  const timer = setTimeout(() => child.kill('SIGKILL'), RESTORE_TIMEOUT_MS);

  return new Promise((resolve) => {
    child.on('error', (err) => resolve({ command, error: err.message }));
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      if (code === 0) resolve({ command, error: '' });
      else if (signal !== null) resolve({ command, error: `killed by ${signal} after ${RESTORE_TIMEOUT_MS / 1000} s: ${stderr.trim()}` });
      else resolve({ command, error: `exit status ${code}: ${stderr.trim()}` });
    });
  });
}

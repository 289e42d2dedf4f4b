import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';

import Database from 'better-sqlite3';

import { contentHash, integrityCheck } from './support/content.js';
import { S3RVER_CREDENTIAL, startS3Server } from './support/s3-server.js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const cli = path.join(root, 'dist/src/cli/main.js');
const usersConfig = path.join(root, 'test/fixtures/users-litestream.yml');

test('users config replicates to s3rver', { timeout: 60_000 }, async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'walship-users-'));
  const server = await startS3Server();
  let child: ReturnType<typeof spawn> | undefined;

  try {
    await server.createBucket('meu-bucket');

    // The users' file unchanged but for its paths, its endpoint and the
    // credentials the test server accepts.
    const text = fs
      .readFileSync(usersConfig, 'utf8')
      .replaceAll('/data/', `${dir}/`)
      .replace(/access-key-id: .*/, `access-key-id: ${S3RVER_CREDENTIAL}`)
      .replace(/secret-access-key: .*/, `secret-access-key: ${S3RVER_CREDENTIAL}`)
      .replace(/( +)region: us-east-1/g, `$1region: us-east-1\n$1endpoint: ${server.endpoint}\n$1force-path-style: true`);
    const configPath = path.join(dir, 'litestream.yml');
    fs.writeFileSync(configPath, text);

    const names = ['users', 'catalog', 'analytics'];
    for (const name of names) {
      const db = new Database(path.join(dir, `${name}.db`));
      db.pragma('journal_mode = wal');
      db.exec('CREATE TABLE t (id INTEGER PRIMARY KEY, body TEXT NOT NULL)');
      db.close();
    }

    child = spawn(process.execPath, [cli, 'replicate', '-config', configPath], { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr!.on('data', (chunk: Buffer) => (stderr += chunk.toString()));

    // Write while walship runs.
    for (const name of names) {
      const db = new Database(path.join(dir, `${name}.db`));
      db.pragma('busy_timeout = 5000');
      const insert = db.prepare('INSERT INTO t (body) VALUES (?)');
      for (let i = 0; i < 50; i++) db.transaction(() => insert.run(`${name} ${i}`))();
      db.close();
    }
    await new Promise((resolve) => setTimeout(resolve, 2500));

    child.kill('SIGTERM');
    const code = await new Promise<number | null>((resolve) => child!.once('exit', resolve));
    assert.equal(code, 0, stderr);
    assert.match(stderr, /db=users /);
    assert.match(stderr, /db=analytics /);

    for (const name of names) {
      const output = path.join(dir, `${name}.restored.db`);
      // Spawned without blocking: the S3 server runs in this process.
      const result = await run([cli, 'restore', '-config', configPath, '-o', output, path.join(dir, `${name}.db`)]);
      assert.equal(result.code, 0, result.stderr);
      assert.equal(integrityCheck(output), 'ok');
      assert.equal(contentHash(output), contentHash(path.join(dir, `${name}.db`)), `${name} restored content differs`);
    }

    // Each database went to the folder its path names.
    const folders = fs.readdirSync(path.join(server.directory, 'meu-bucket', 'databases')).sort();
    assert.deepEqual(folders, ['analytics_dashboard', 'product_catalog', 'users']);
  } finally {
    if (child && child.exitCode === null) child.kill('SIGKILL');
    await server.close();
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

function run(args: string[]): Promise<{ code: number | null; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, args, { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    child.once('exit', (code) => resolve({ code, stderr }));
  });
}

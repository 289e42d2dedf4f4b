import assert from 'node:assert/strict';
import path from 'node:path';
import { describe, test } from 'node:test';

import { WalshipError } from '../src/errors.js';
import { normalizeEndpoint, parseReplicaUrl, redactUrl, urlScheme } from '../src/replica-url.js';

/** Asserts that parsing `url` fails with INVALID_INPUT and a message containing every part. */
function assertRejected(url: string, ...parts: string[]): void {
  assert.throws(
    () => parseReplicaUrl(url),
    (err: unknown) => {
      assert.ok(err instanceof WalshipError, `expected a WalshipError, got ${String(err)}`);
      assert.equal(err.code, 'INVALID_INPUT');
      for (const part of parts) assert.ok(err.message.includes(part), `message ${JSON.stringify(err.message)} lacks ${JSON.stringify(part)}`);
      return true;
    },
  );
}

describe('parseReplicaUrl s3', () => {
  test('bucket and path', () => {
    assert.deepEqual(parseReplicaUrl('s3://meu-bucket/databases/users'), { type: 's3', bucket: 'meu-bucket', prefix: 'databases/users' });
  });

  test('bucket root', () => {
    assert.deepEqual(parseReplicaUrl('s3://b'), { type: 's3', bucket: 'b', prefix: '' });
    assert.deepEqual(parseReplicaUrl('s3://b/'), { type: 's3', bucket: 'b', prefix: '' });
  });

  test('trailing slash dropped', () => {
    assert.equal((parseReplicaUrl('s3://b/databases/users/') as { prefix: string }).prefix, 'databases/users');
  });

  test('dotted bucket kept whole', () => {
    assert.deepEqual(parseReplicaUrl('s3://backups.example.com/x'), { type: 's3', bucket: 'backups.example.com', prefix: 'x' });
  });

  test('query parameters', () => {
    const config = parseReplicaUrl('s3://b/p?endpoint=http://127.0.0.1:9000&region=eu-west-1&forcePathStyle=false&skipVerify=true');
    assert.deepEqual(config, {
      type: 's3',
      bucket: 'b',
      prefix: 'p',
      endpoint: 'http://127.0.0.1:9000',
      region: 'eu-west-1',
      forcePathStyle: false,
      skipVerify: true,
    });
  });

  test('endpoint implies path style', () => {
    const config = parseReplicaUrl('s3://b/p?endpoint=127.0.0.1:9000');
    assert.deepEqual(config, { type: 's3', bucket: 'b', prefix: 'p', endpoint: 'http://127.0.0.1:9000', forcePathStyle: true });
  });

  test('kebab-case parameters', () => {
    const config = parseReplicaUrl('s3://b/p?force-path-style=true&skip-verify=false');
    assert.deepEqual(config, { type: 's3', bucket: 'b', prefix: 'p', forcePathStyle: true, skipVerify: false });
  });

  test('provider hosts', () => {
    assert.deepEqual(parseReplicaUrl('s3://mybucket.localhost:9000/db'), {
      type: 's3',
      bucket: 'mybucket',
      prefix: 'db',
      endpoint: 'http://localhost:9000',
      region: 'us-east-1',
      forcePathStyle: true,
    });
    assert.deepEqual(parseReplicaUrl('s3://MyBucket.s3.us-west-002.backblazeb2.com/db'), {
      type: 's3',
      bucket: 'MyBucket',
      prefix: 'db',
      endpoint: 'https://s3.us-west-002.backblazeb2.com',
      region: 'us-west-002',
      forcePathStyle: true,
    });
    assert.deepEqual(parseReplicaUrl('s3://b.nyc3.digitaloceanspaces.com/db'), {
      type: 's3',
      bucket: 'b',
      prefix: 'db',
      endpoint: 'https://nyc3.digitaloceanspaces.com',
      region: 'nyc3',
      forcePathStyle: true,
    });
  });

  test('percent escapes decoded', () => {
    assert.equal((parseReplicaUrl('s3://b/my%20db') as { prefix: string }).prefix, 'my db');
  });

  test('unsafe paths rejected', () => {
    assertRejected('s3://b/a/../c', 'a/../c');
    assertRejected('s3://b/a//c', 'a//c');
    assertRejected('s3://b/%2e%2e/c', '../c');
  });

  test('malformed URLs rejected', () => {
    assertRejected('s3:///databases/users', 'has no bucket');
    assertRejected('s3://localhost:9000/x', 'has no bucket');
    assertRejected('s3://b:9000/x', 'port', '?endpoint=');
    assertRejected('s3://b/x?bogus=1', '"bogus"', 'endpoint, region');
    assertRejected('s3://b/x?forcePathStyle=maybe', 'forcePathStyle=maybe');
    assertRejected('s3://b/x#frag', 's3://b/x#frag');
  });

  test('credentials rejected and hidden', () => {
    assertRejected('s3://AKIA:s3cret@b/x', 'contains credentials', 's3://AKIA:***@b/x');
    assert.throws(
      () => parseReplicaUrl('s3://AKIA:s3cret@b/x'),
      (err: Error) => !err.message.includes('s3cret'),
    );
  });
});

describe('parseReplicaUrl file', () => {
  test('file URL', () => {
    assert.deepEqual(parseReplicaUrl('file:///backups/users'), { type: 'file', root: '/backups/users' });
    assert.deepEqual(parseReplicaUrl('file:///backups/users/'), { type: 'file', root: '/backups/users' });
  });

  test('host folds into path', () => {
    assert.deepEqual(parseReplicaUrl('file://backups/users'), { type: 'file', root: '/backups/users' });
  });

  test('plain paths', () => {
    assert.deepEqual(parseReplicaUrl('/backups/users'), { type: 'file', root: '/backups/users' });
    assert.deepEqual(parseReplicaUrl('backups/users'), { type: 'file', root: path.resolve('backups/users') });
    assert.deepEqual(parseReplicaUrl('./backups'), { type: 'file', root: path.resolve('backups') });
  });

  test('unsafe directories rejected', () => {
    assertRejected('file:///backups/../etc', '/backups/../etc');
    assertRejected('/backups/./x', '/backups/./x');
    assertRejected('../backups', '../backups');
    assertRejected('file:///', 'root');
    assertRejected('/', 'root');
    assertRejected('file:///x?y=1', 'query');
  });
});

describe('parseReplicaUrl other schemes', () => {
  for (const url of ['gcs://bucket/db', 'abs://account@container/db', 'sftp://user@host/db', 'gs://b/x', 'webdav://h/x']) {
    test(`${urlScheme(url)} rejected`, () => {
      assertRejected(url, `"${urlScheme(url)}"`, 'not support', 's3://');
    });
  }

  test('password hidden', () => {
    assertRejected('sftp://user:hunter2@host/db', 'sftp://user:***@host/db');
    assert.equal(redactUrl('sftp://user:hunter2@host/db'), 'sftp://user:***@host/db');
  });
});

describe('normalizeEndpoint', () => {
  test('scheme added', () => {
    assert.equal(normalizeEndpoint('127.0.0.1:9000', 'x'), 'http://127.0.0.1:9000');
    assert.equal(normalizeEndpoint('minio.local:9000', 'x'), 'http://minio.local:9000');
    assert.equal(normalizeEndpoint('s3.example.com', 'x'), 'https://s3.example.com');
    assert.equal(normalizeEndpoint('https://s3.example.com/', 'x'), 'https://s3.example.com');
  });
});

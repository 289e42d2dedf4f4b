import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, test } from 'node:test';

import {
  AbortMultipartUploadCommand,
  CompleteMultipartUploadCommand,
  CreateMultipartUploadCommand,
  ListMultipartUploadsCommand,
  PutObjectCommand,
  S3Client,
  UploadPartCommand,
} from '@aws-sdk/client-s3';

import { hasCode } from '../src/errors.js';
import { S3ReplicaClient } from '../src/replica/s3-client.js';
import { s3ClientConfig, S3RVER_CREDENTIAL, startS3Server, type S3Server } from './support/s3-server.js';

function sdkClient(server: S3Server): S3Client {
  return new S3Client({
    endpoint: server.endpoint,
    region: 'us-east-1',
    forcePathStyle: true,
    credentials: { accessKeyId: S3RVER_CREDENTIAL, secretAccessKey: S3RVER_CREDENTIAL },
  });
}

/** Starts a multipart upload with one part, and returns its upload id. */
async function startUpload(s3: S3Client, bucket: string, key: string): Promise<string> {
  const created = await s3.send(new CreateMultipartUploadCommand({ Bucket: bucket, Key: key }));
  const uploadId = created.UploadId!;
  await s3.send(new UploadPartCommand({ Bucket: bucket, Key: key, UploadId: uploadId, PartNumber: 1, Body: randomBytes(1024) }));
  return uploadId;
}

/** Returns the HTTP status of a rejected SDK call and its S3 error code. */
async function failure(promise: Promise<unknown>): Promise<{ status: number | undefined; code: string }> {
  try {
    await promise;
  } catch (err) {
    const e = err as { name: string; $metadata?: { httpStatusCode?: number } };
    return { status: e.$metadata?.httpStatusCode, code: e.name };
  }
  throw new Error('the request succeeded, but a failure was expected');
}

describe('test S3 server multipart uploads', () => {
  let server: S3Server;
  let s3: S3Client;

  before(async () => {
    server = await startS3Server();
    s3 = sdkClient(server);
  });
  after(async () => {
    s3.destroy();
    await server.close();
  });

  test('list and abort an open upload', async () => {
    const uploadId = await startUpload(s3, server.bucket, 'list/a/object');

    const listed = await s3.send(new ListMultipartUploadsCommand({ Bucket: server.bucket, Prefix: 'list/' }));
    assert.deepEqual(
      (listed.Uploads ?? []).map((u) => [u.Key, u.UploadId]),
      [['list/a/object', uploadId]],
    );
    assert.ok(listed.Uploads![0]!.Initiated instanceof Date);

    await s3.send(new AbortMultipartUploadCommand({ Bucket: server.bucket, Key: 'list/a/object', UploadId: uploadId }));
    const after = await s3.send(new ListMultipartUploadsCommand({ Bucket: server.bucket, Prefix: 'list/' }));
    assert.deepEqual(after.Uploads ?? [], []);
  });

  test('aborted upload is NoSuchUpload', async () => {
    const uploadId = await startUpload(s3, server.bucket, 'gone/object');
    await s3.send(new AbortMultipartUploadCommand({ Bucket: server.bucket, Key: 'gone/object', UploadId: uploadId }));

    const abortAgain = await failure(
      s3.send(new AbortMultipartUploadCommand({ Bucket: server.bucket, Key: 'gone/object', UploadId: uploadId })),
    );
    assert.deepEqual(abortAgain, { status: 404, code: 'NoSuchUpload' });

    const part = await failure(
      s3.send(new UploadPartCommand({ Bucket: server.bucket, Key: 'gone/object', UploadId: uploadId, PartNumber: 2, Body: 'x' })),
    );
    assert.deepEqual(part, { status: 404, code: 'NoSuchUpload' });
  });

  test('completed upload is not listed', async () => {
    const created = await s3.send(new CreateMultipartUploadCommand({ Bucket: server.bucket, Key: 'done/object' }));
    const part = await s3.send(
      new UploadPartCommand({ Bucket: server.bucket, Key: 'done/object', UploadId: created.UploadId, PartNumber: 1, Body: 'data' }),
    );
    await s3.send(
      new CompleteMultipartUploadCommand({
        Bucket: server.bucket,
        Key: 'done/object',
        UploadId: created.UploadId,
        MultipartUpload: { Parts: [{ PartNumber: 1, ETag: part.ETag }] },
      }),
    );

    const listed = await s3.send(new ListMultipartUploadsCommand({ Bucket: server.bucket, Prefix: 'done/' }));
    assert.deepEqual(listed.Uploads ?? [], []);
  });

  test('listing pages with markers', async () => {
    const ids = [];
    for (const key of ['paged/a', 'paged/b', 'paged/c']) ids.push(await startUpload(s3, server.bucket, key));

    const first = await s3.send(new ListMultipartUploadsCommand({ Bucket: server.bucket, Prefix: 'paged/', MaxUploads: 2 }));
    assert.equal(first.IsTruncated, true);
    assert.deepEqual(first.Uploads!.map((u) => u.Key), ['paged/a', 'paged/b']);

    const second = await s3.send(
      new ListMultipartUploadsCommand({
        Bucket: server.bucket,
        Prefix: 'paged/',
        MaxUploads: 2,
        KeyMarker: first.NextKeyMarker,
        UploadIdMarker: first.NextUploadIdMarker,
      }),
    );
    assert.equal(second.IsTruncated, false);
    assert.deepEqual(second.Uploads!.map((u) => u.Key), ['paged/c']);
  });

  test('replica client aborts only under its prefix', async () => {
    const mine = new S3ReplicaClient(s3ClientConfig(server, server.bucket, 'mine/db'));
    const other = new S3ReplicaClient(s3ClientConfig(server, server.bucket, 'other/db'));
    try {
      const uploadId = await startUpload(s3, server.bucket, 'mine/db/generations/0123456789abcdef/wal/big');
      await startUpload(s3, server.bucket, 'other/db/generations/0123456789abcdef/wal/big');

      const listed = await mine.listMultipartUploads('');
      assert.deepEqual(
        listed.map((u) => [u.key, u.uploadId]),
        [['generations/0123456789abcdef/wal/big', uploadId]],
      );
      assert.equal(await mine.abortMultipartUploads(''), 1);
      assert.deepEqual(await mine.listMultipartUploads(''), []);
      assert.equal((await other.listMultipartUploads('generations')).length, 1);
    } finally {
      await mine.close();
      await other.close();
    }
  });
});

describe('test S3 server conditional writes', () => {
  let server: S3Server;
  let s3: S3Client;

  before(async () => {
    server = await startS3Server();
    s3 = sdkClient(server);
  });
  after(async () => {
    s3.destroy();
    await server.close();
  });

  test('If-None-Match on an existing key is 412', async () => {
    await s3.send(new PutObjectCommand({ Bucket: server.bucket, Key: 'cond/a', Body: 'one' }));

    const put = await failure(s3.send(new PutObjectCommand({ Bucket: server.bucket, Key: 'cond/a', Body: 'two', IfNoneMatch: '*' })));
    assert.deepEqual(put, { status: 412, code: 'PreconditionFailed' });
  });

  test('If-Match with another ETag is 412', async () => {
    const put = await s3.send(new PutObjectCommand({ Bucket: server.bucket, Key: 'cond/b', Body: 'one' }));

    const stale = await failure(
      s3.send(new PutObjectCommand({ Bucket: server.bucket, Key: 'cond/b', Body: 'two', IfMatch: '"0123"' })),
    );
    assert.deepEqual(stale, { status: 412, code: 'PreconditionFailed' });

    const matched = await s3.send(new PutObjectCommand({ Bucket: server.bucket, Key: 'cond/b', Body: 'two', IfMatch: put.ETag }));
    assert.notEqual(matched.ETag, put.ETag);
  });

  test('If-Match on a missing key is 404', async () => {
    const put = await failure(
      s3.send(new PutObjectCommand({ Bucket: server.bucket, Key: 'cond/missing', Body: 'x', IfMatch: '"0123"' })),
    );
    assert.deepEqual(put, { status: 404, code: 'NoSuchKey' });
  });

  test('error body is S3 XML', async () => {
    await s3.send(new PutObjectCommand({ Bucket: server.bucket, Key: 'cond/xml', Body: 'one' }));

    // An unsigned request reaches the check too, because it runs before s3rver's authentication.
    const response = await fetch(`${server.endpoint}/${server.bucket}/cond/xml`, {
      method: 'PUT',
      headers: { 'If-None-Match': '*' },
      body: 'two',
    });
    const body = await response.text();
    assert.equal(response.status, 412);
    assert.match(response.headers.get('content-type') ?? '', /application\/xml/);
    assert.match(body, /<Error><Code>PreconditionFailed<\/Code><Message>[^<]+<\/Message><Condition>If-None-Match<\/Condition><\/Error>/);
  });

  test('store without conditional writes ignores the headers', async () => {
    const plain = await startS3Server({ conditionalWrites: false });
    const client = sdkClient(plain);
    try {
      await client.send(new PutObjectCommand({ Bucket: plain.bucket, Key: 'cond/a', Body: 'one' }));
      await client.send(new PutObjectCommand({ Bucket: plain.bucket, Key: 'cond/a', Body: 'two', IfNoneMatch: '*' }));
      await client.send(new PutObjectCommand({ Bucket: plain.bucket, Key: 'cond/a', Body: 'three', IfMatch: '"0123"' }));

      const replica = new S3ReplicaClient(s3ClientConfig(plain, plain.bucket, ''));
      assert.deepEqual(await replica.get('cond/a'), Buffer.from('three'));
      const written = await replica.putConditional('cond/a', Buffer.from('four'), { ifNoneMatch: '*' });
      assert.equal((await replica.getVersioned('cond/a'))?.etag, written.etag);
      await replica.close();
    } finally {
      client.destroy();
      await plain.close();
    }
  });

  test('replica client maps 412 to PRECONDITION_FAILED', async () => {
    const replica = new S3ReplicaClient(s3ClientConfig(server, server.bucket, 'mapped'));
    try {
      await replica.putConditional('lease', Buffer.from('one'), { ifNoneMatch: '*' });
      await assert.rejects(replica.putConditional('lease', Buffer.from('two'), { ifNoneMatch: '*' }), (err) => {
        assert.ok(hasCode(err, 'PRECONDITION_FAILED'));
        assert.match((err as Error).message, /s3:\/\/walship-test\/mapped\/lease with If-None-Match: \*/);
        return true;
      });
    } finally {
      await replica.close();
    }
  });
});

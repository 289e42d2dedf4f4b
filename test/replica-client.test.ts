import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import { after, afterEach, before, beforeEach, describe, test } from 'node:test';

import { hasCode } from '../src/errors.js';
import type { ReplicaClient } from '../src/replica/client.js';
import { createReplicaClient } from '../src/replica/create.js';
import { FileReplicaClient } from '../src/replica/file-client.js';
import { S3ReplicaClient } from '../src/replica/s3-client.js';
import { s3ClientConfig, startS3Server, type S3Server } from './support/s3-server.js';

const MIB = 1024 * 1024;
const GEN_A = '0123456789abcdef';
const GEN_B = 'fedcba9876543210';

/** Keys per ListObjectsV2 page of the S3 paging client, small so that 25 keys take 4 pages. */
const TEST_PAGE_SIZE = 7;

/** Clients under test for one test. `paged` lists in small pages on a backend that pages. */
interface Replica {
  client: ReplicaClient;
  paged: ReplicaClient;
  /** Root directory of a file replica. */
  root?: string;
  close(): Promise<void>;
}

interface Backend {
  name: string;
  setup(): Promise<void>;
  open(): Promise<Replica>;
  teardown(): Promise<void>;
}

let s3: S3Server | undefined;
let prefixCounter = 0;

const fileBackend: Backend = {
  name: 'file',
  async setup() {},
  async open() {
    const root = await mkdtemp(path.join(tmpdir(), 'walship-file-replica-'));
    const client = new FileReplicaClient({ type: 'file', root });
    return {
      client,
      paged: client,
      root,
      async close() {
        await client.close();
        await rm(root, { recursive: true, force: true });
      },
    };
  },
  async teardown() {},
};

const s3Backend: Backend = {
  name: 's3',
  async setup() {
    s3 = await startS3Server();
  },
  async open() {
    const server = s3!;
    const config = s3ClientConfig(server, server.bucket, `test-${++prefixCounter}/db`);
    const client = new S3ReplicaClient(config);
    const paged = new S3ReplicaClient(config, { pageSize: TEST_PAGE_SIZE });
    return {
      client,
      paged,
      async close() {
        await client.close();
        await paged.close();
      },
    };
  },
  async teardown() {
    await s3?.close();
    s3 = undefined;
  },
};

function sha256(data: Buffer): string {
  return createHash('sha256').update(data).digest('hex');
}

async function readAll(stream: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

/** Streams `data` in 1 MiB chunks. */
function streamOf(data: Buffer): Readable {
  const chunks: Buffer[] = [];
  for (let offset = 0; offset < data.length; offset += MIB) chunks.push(data.subarray(offset, offset + MIB));
  return Readable.from(chunks);
}

function keysOf(objects: { key: string }[]): string[] {
  return objects.map((o) => o.key);
}

for (const backend of [fileBackend, s3Backend]) {
  describe(`${backend.name} replica client`, () => {
    let replica: Replica;

    before(() => backend.setup());
    after(() => backend.teardown());
    beforeEach(async () => {
      replica = await backend.open();
    });
    afterEach(() => replica.close());

    test('put and get a buffer', async () => {
      const data = Buffer.from('snapshot bytes');
      await replica.client.put('generations/a/snapshots/x', data);

      assert.deepEqual(await replica.client.get('generations/a/snapshots/x'), data);
      assert.deepEqual(await readAll(await replica.client.getStream('generations/a/snapshots/x')), data);
    });

    test('put a small stream', async () => {
      const data = randomBytes(3 * MIB + 17);
      await replica.client.put('segment', streamOf(data));

      assert.equal(sha256(await replica.client.get('segment')), sha256(data));
    });

    test('put a 20 MiB stream', async () => {
      // Larger than the 8 MiB default part size, so S3 uploads it in three parts.
      const data = randomBytes(20 * MIB);
      await replica.client.put('big/object', streamOf(data));

      const read = await readAll(await replica.client.getStream('big/object'));
      assert.equal(read.length, data.length);
      assert.equal(sha256(read), sha256(data));
      const listed = await replica.client.list('big');
      assert.equal(listed.objects[0]?.size, data.length);
    });

    test('put overwrites an object', async () => {
      await replica.client.put('generations/a/x', Buffer.from('first'));
      await replica.client.put('generations/a/x', Buffer.from('second'));

      assert.equal((await replica.client.get('generations/a/x')).toString(), 'second');
      assert.deepEqual(keysOf((await replica.client.list('generations/a')).objects), ['generations/a/x']);
    });

    test('get missing object is NOT_FOUND', async () => {
      await assert.rejects(replica.client.get('generations/none/x'), (err: Error) => {
        assert.ok(hasCode(err, 'NOT_FOUND'), String(err));
        assert.match(err.message, /generations\/none\/x/);
        return true;
      });
      await assert.rejects(replica.client.getStream('generations/none/x'), (err: Error) => {
        assert.ok(hasCode(err, 'NOT_FOUND'), String(err));
        return true;
      });

      // A key that is only a prefix of other keys names no object either.
      await replica.client.put('generations/a/x', Buffer.from('x'));
      await assert.rejects(replica.client.get('generations/a'), (err) => hasCode(err, 'NOT_FOUND'));
      await assert.rejects(replica.client.getStream('generations/a'), (err) => hasCode(err, 'NOT_FOUND'));
      await assert.rejects(replica.client.get('generations/a/x/y'), (err) => hasCode(err, 'NOT_FOUND'));
      await replica.client.delete(['generations/a', 'generations/a/x/y']);
      assert.equal((await replica.client.get('generations/a/x')).toString(), 'x');
    });

    test('list recursive', async () => {
      const keys = [
        `generations/${GEN_A}/snapshots/00000000.snapshot.lz4`,
        `generations/${GEN_A}/wal/00000000_00000000.wal.lz4`,
        `generations/${GEN_A}/wal/00000000_00001000.wal.lz4`,
        `generations/${GEN_B}/wal/00000001_00000000.wal.lz4`,
        'other',
      ];
      for (const [i, key] of keys.entries()) await replica.client.put(key, Buffer.alloc(i + 1, i));
      const before = Date.now();

      const generations = await replica.client.list('generations/');
      assert.deepEqual(keysOf(generations.objects), keys.slice(0, 4));
      assert.deepEqual(generations.prefixes, []);
      assert.deepEqual(
        generations.objects.map((o) => o.size),
        [1, 2, 3, 4],
      );
      for (const object of generations.objects) {
        assert.ok(object.lastModified instanceof Date);
        assert.ok(!Number.isNaN(object.lastModified.getTime()));
        // S3 stores whole seconds; allow a second of rounding.
        assert.ok(object.lastModified.getTime() <= before + 1000, object.lastModified.toISOString());
        assert.ok(object.lastModified.getTime() > before - 60_000, object.lastModified.toISOString());
      }

      assert.deepEqual(keysOf((await replica.client.list('generations')).objects), keys.slice(0, 4));
      assert.deepEqual(keysOf((await replica.client.list('')).objects), keys);
      assert.deepEqual(keysOf((await replica.client.list(`generations/${GEN_A}/wal/`)).objects), keys.slice(1, 3));
    });

    test('list with delimiter', async () => {
      // GEN_B contains objects only two levels below it, which s3rver alone misses.
      await replica.client.put(`generations/${GEN_A}/snapshots/00000000.snapshot.lz4`, Buffer.from('s'));
      await replica.client.put(`generations/${GEN_B}/wal/00000000_00000000.wal.lz4`, Buffer.from('w'));
      await replica.client.put('generations/loose', Buffer.from('l'));
      await replica.client.put('other', Buffer.from('o'));

      const generations = await replica.client.list('generations/', { delimiter: true });
      assert.deepEqual(generations.prefixes, [`generations/${GEN_A}/`, `generations/${GEN_B}/`]);
      assert.deepEqual(keysOf(generations.objects), ['generations/loose']);

      const root = await replica.client.list('', { delimiter: true });
      assert.deepEqual(root.prefixes, ['generations/']);
      assert.deepEqual(keysOf(root.objects), ['other']);

      const generation = await replica.client.list(`generations/${GEN_B}`, { delimiter: true });
      assert.deepEqual(generation.prefixes, [`generations/${GEN_B}/wal/`]);
      assert.deepEqual(generation.objects, []);

      const wal = await replica.client.list(`generations/${GEN_B}/wal`, { delimiter: true });
      assert.deepEqual(wal.prefixes, []);
      assert.deepEqual(keysOf(wal.objects), [`generations/${GEN_B}/wal/00000000_00000000.wal.lz4`]);
    });

    test('list missing prefix is empty', async () => {
      await replica.client.put('generations/a/x', Buffer.from('x'));

      assert.deepEqual(await replica.client.list('generations/b/'), { objects: [], prefixes: [] });
      assert.deepEqual(await replica.client.list('nothing', { delimiter: true }), { objects: [], prefixes: [] });
      assert.deepEqual(await replica.client.list('generations/a/x/'), { objects: [], prefixes: [] });
    });

    test('list pages through every key', async () => {
      const direct: string[] = [];
      const nested: string[] = [];
      for (let i = 0; i < 15; i++) direct.push(`wal/${i.toString(16).padStart(8, '0')}`);
      for (let i = 0; i < 10; i++) nested.push(`wal/sub${i % 5}/deep/${i}`);
      await Promise.all([...direct, ...nested].map((key) => replica.client.put(key, Buffer.from(key))));

      const all = await replica.paged.list('wal/');
      assert.deepEqual(keysOf(all.objects), [...direct, ...nested].sort());

      const folded = await replica.paged.list('wal/', { delimiter: true });
      assert.deepEqual(keysOf(folded.objects), direct);
      assert.deepEqual(folded.prefixes, [0, 1, 2, 3, 4].map((i) => `wal/sub${i}/`));
    });

    test('delete many and missing keys', async () => {
      const keys: string[] = [];
      for (let i = 0; i < 30; i++) {
        keys.push(`generations/${GEN_A}/wal/${i.toString(16).padStart(8, '0')}_00000000.wal.lz4`);
      }
      await Promise.all(keys.map((key) => replica.client.put(key, Buffer.from(key))));
      await replica.client.put('keep', Buffer.from('keep'));

      await replica.client.delete([...keys, 'generations/missing/x', `generations/${GEN_A}/wal/gone`]);

      assert.deepEqual(keysOf((await replica.client.list('')).objects), ['keep']);
      assert.deepEqual((await replica.client.list('', { delimiter: true })).prefixes, []);
      await assert.rejects(replica.client.get(keys[0]!), (err) => hasCode(err, 'NOT_FOUND'));
      if (replica.root !== undefined) assert.deepEqual(await readdir(replica.root), ['keep']);
    });

    test('delete only missing keys', async () => {
      await replica.client.delete(['never/written', 'nor/this']);
      await replica.client.delete([]);

      assert.deepEqual(await replica.client.list(''), { objects: [], prefixes: [] });
    });

    test('listing during a large put', async (t) => {
      const data = randomBytes(20 * MIB);
      const digest = sha256(data);
      let done = false;
      const upload = replica.client.put('generations/a/wal/big', data).finally(() => {
        done = true;
      });

      // Poll until the put finishes; each listing that shows the object must
      // find all of its bytes readable.
      let listings = 0;
      let sightings = 0;
      while (!done && listings < 10_000) {
        const listed = await replica.client.list('generations/a/', { delimiter: false });
        listings++;
        const object = listed.objects.find((o) => o.key === 'generations/a/wal/big');
        if (object === undefined) continue;

        sightings++;
        assert.equal(object.size, data.length);
        assert.equal(sha256(await replica.client.get(object.key)), digest);
      }
      await upload;

      assert.ok(listings > 0);
      const final = await replica.client.list('generations/a/');
      assert.deepEqual(keysOf(final.objects), ['generations/a/wal/big']);
      assert.equal(final.objects[0]!.size, data.length);
      t.diagnostic(`${listings} listings, ${sightings} showed the object`);
    });

    test('getVersioned of a missing key', async () => {
      assert.equal(await replica.client.getVersioned('walship/lease.json'), undefined);
    });

    test('putConditional creates once', async () => {
      const first = await replica.client.putConditional('walship/lease.json', Buffer.from('one'), { ifNoneMatch: '*' });
      await assert.rejects(
        replica.client.putConditional('walship/lease.json', Buffer.from('two'), { ifNoneMatch: '*' }),
        (err) => hasCode(err, 'PRECONDITION_FAILED'),
      );

      const read = await replica.client.getVersioned('walship/lease.json');
      assert.deepEqual(read?.body, Buffer.from('one'));
      assert.equal(read?.etag, first.etag);
    });

    test('putConditional replaces a matching ETag only', async () => {
      const first = await replica.client.putConditional('walship/lease.json', Buffer.from('one'), { ifNoneMatch: '*' });
      const second = await replica.client.putConditional('walship/lease.json', Buffer.from('two'), { ifMatch: first.etag });
      assert.notEqual(second.etag, first.etag);

      await assert.rejects(
        replica.client.putConditional('walship/lease.json', Buffer.from('three'), { ifMatch: first.etag }),
        (err) => hasCode(err, 'PRECONDITION_FAILED'),
      );
      await assert.rejects(
        replica.client.putConditional('walship/other.json', Buffer.from('x'), { ifMatch: first.etag }),
        (err) => hasCode(err, 'PRECONDITION_FAILED'),
      );
      assert.deepEqual((await replica.client.getVersioned('walship/lease.json'))?.body, Buffer.from('two'));
    });

    test('concurrent creates have one winner', async () => {
      const attempts = Array.from({ length: 8 }, (_, i) =>
        replica.client.putConditional('walship/lease.json', Buffer.from(`writer ${i}`), { ifNoneMatch: '*' }),
      );
      const results = await Promise.allSettled(attempts);

      const won = results.filter((r) => r.status === 'fulfilled');
      assert.equal(won.length, 1);
      for (const r of results) if (r.status === 'rejected') assert.ok(hasCode(r.reason, 'PRECONDITION_FAILED'));
    });

    test('deleteConditional checks the ETag', async () => {
      const first = await replica.client.putConditional('walship/lease.json', Buffer.from('one'), { ifNoneMatch: '*' });
      const second = await replica.client.putConditional('walship/lease.json', Buffer.from('two'), { ifMatch: first.etag });

      await assert.rejects(replica.client.deleteConditional('walship/lease.json', first.etag), (err) =>
        hasCode(err, 'PRECONDITION_FAILED'),
      );
      await replica.client.deleteConditional('walship/lease.json', second.etag);
      assert.equal(await replica.client.getVersioned('walship/lease.json'), undefined);
      await replica.client.deleteConditional('walship/lease.json', second.etag);
    });

    test('no multipart uploads left after puts', async () => {
      await replica.client.put('big/object', randomBytes(9 * MIB));

      assert.deepEqual(await replica.client.listMultipartUploads(''), []);
      assert.equal(await replica.client.abortMultipartUploads(''), 0);
    });
  });
}

describe('file replica client keys', () => {
  let root: string;
  let client: FileReplicaClient;

  beforeEach(async () => {
    const parent = await mkdtemp(path.join(tmpdir(), 'walship-file-keys-'));
    root = path.join(parent, 'root');
    client = new FileReplicaClient({ type: 'file', root });
  });
  afterEach(async () => {
    await rm(path.dirname(root), { recursive: true, force: true });
  });

  test('keys outside the root are rejected', async () => {
    const invalid = ['../escape', '/etc/escape', 'a/../../escape', 'a//b', 'a/./b', '.', '', 'a/', 'x\0y'];
    for (const key of invalid) {
      const isInvalid = (err: unknown) => hasCode(err, 'INVALID_INPUT');
      await assert.rejects(client.put(key, Buffer.from('x')), isInvalid, `put ${JSON.stringify(key)}`);
      await assert.rejects(client.get(key), isInvalid, `get ${JSON.stringify(key)}`);
      await assert.rejects(client.getStream(key), isInvalid, `getStream ${JSON.stringify(key)}`);
      await assert.rejects(client.delete([key]), isInvalid, `delete ${JSON.stringify(key)}`);
    }
    await assert.rejects(client.list('../'), (err) => hasCode(err, 'INVALID_INPUT'));
    await assert.rejects(client.list('/'), (err) => hasCode(err, 'INVALID_INPUT'));

    assert.deepEqual(await readdir(path.dirname(root)), []);
  });

  test('temporary files are hidden', async () => {
    await client.put('generations/a/x', Buffer.from('x'));
    await writeFile(path.join(root, 'generations', 'a', 'y.1234.tmp'), 'partial');
    await writeFile(path.join(root, 'generations', 'b.tmp'), 'partial');

    assert.deepEqual(keysOf((await client.list('')).objects), ['generations/a/x']);
    await assert.rejects(client.put('generations/a/y.tmp', Buffer.from('x')), (err) => hasCode(err, 'INVALID_INPUT'));
  });

  test('folder with only temporary files is no prefix', async () => {
    await mkdir(path.join(root, 'generations', GEN_A, 'snapshots'), { recursive: true });
    await writeFile(path.join(root, 'generations', GEN_A, 'snapshots', '00000000.snapshot.lz4.ab.tmp'), 'partial');

    assert.deepEqual(await client.list('generations/', { delimiter: true }), { objects: [], prefixes: [] });
  });

  test('delete keeps the root', async () => {
    await client.put('generations/a/wal/x', Buffer.from('x'));
    await client.delete(['generations/a/wal/x']);

    assert.deepEqual(await readdir(root), []);
  });

  test('location is a file URL', () => {
    assert.equal(client.location, `file://${root}`);
  });

  test('relative root is rejected', () => {
    const open = () => new FileReplicaClient({ type: 'file', root: 'relative/dir' });
    assert.throws(open, (err) => hasCode(err, 'INVALID_INPUT'));
  });
});

describe('s3 replica client', () => {
  let server: S3Server;

  before(async () => {
    server = await startS3Server();
  });
  after(() => server.close());

  test('empty prefix uses bare keys', async () => {
    await server.createBucket('walship-empty-prefix');
    const client = new S3ReplicaClient(s3ClientConfig(server, 'walship-empty-prefix', ''));
    const prefixed = new S3ReplicaClient(s3ClientConfig(server, 'walship-empty-prefix', 'db'));
    try {
      await client.put('generations/a/x', Buffer.from('x'));
      await prefixed.put('generations/b/y', Buffer.from('y'));

      assert.equal(client.location, 's3://walship-empty-prefix');
      assert.equal(prefixed.location, 's3://walship-empty-prefix/db');
      assert.deepEqual(keysOf((await client.list('')).objects), ['db/generations/b/y', 'generations/a/x']);
      assert.deepEqual(keysOf((await prefixed.list('')).objects), ['generations/b/y']);
      assert.equal((await client.get('db/generations/b/y')).toString(), 'y');
    } finally {
      await client.close();
      await prefixed.close();
    }
  });

  test('missing bucket error names the location', async () => {
    const client = new S3ReplicaClient(s3ClientConfig(server, 'walship-no-such-bucket', 'db'));
    try {
      await assert.rejects(client.list('generations/'), (err: Error) => {
        assert.match(err.message, /^ListObjectsV2 s3:\/\/walship-no-such-bucket\/db\/generations\/ failed/);
        assert.match(err.message, /NoSuchBucket/);
        assert.ok(!err.message.includes('S3RVER'), err.message);
        assert.ok(err.cause instanceof Error);
        assert.ok(!hasCode(err, 'NOT_FOUND'));
        return true;
      });
      await assert.rejects(client.get('x'), (err: Error) => {
        assert.match(err.message, /s3:\/\/walship-no-such-bucket\/db\/x/);
        assert.ok(!hasCode(err, 'NOT_FOUND'));
        return true;
      });
    } finally {
      await client.close();
    }
  });

  test('delete without DeleteObjects', async () => {
    const limited = await startS3Server({ deleteObjects: false });
    const client = new S3ReplicaClient(s3ClientConfig(limited, limited.bucket, 'db'));
    try {
      const keys = ['generations/a/wal/1', 'generations/a/wal/2', 'generations/b/snapshots/1'];
      await Promise.all(keys.map((key) => client.put(key, Buffer.from(key))));

      await client.delete([keys[0]!, 'generations/missing']);
      assert.deepEqual(keysOf((await client.list('')).objects), keys.slice(1));

      // The second call goes straight to single deletes.
      await client.delete(keys.slice(1));
      assert.deepEqual(await client.list(''), { objects: [], prefixes: [] });
    } finally {
      await client.close();
      await limited.close();
    }
  });

  test('half credentials are rejected', () => {
    const config = { ...s3ClientConfig(server, server.bucket, 'db'), secretAccessKey: undefined };
    assert.throws(() => new S3ReplicaClient(config), (err) => hasCode(err, 'INVALID_INPUT'));
  });

  test('part size below 5 MiB is rejected', () => {
    const config = { ...s3ClientConfig(server, server.bucket, 'db'), partSize: MIB };
    assert.throws(() => new S3ReplicaClient(config), (err) => hasCode(err, 'INVALID_INPUT'));
  });
});

describe('createReplicaClient', () => {
  test('builds the client of each type', async () => {
    const file = createReplicaClient({ type: 'file', root: '/tmp/walship-create-test' });
    const s3Client = createReplicaClient({ type: 's3', bucket: 'b', prefix: 'p', endpoint: 'http://127.0.0.1:1' });

    assert.ok(file instanceof FileReplicaClient);
    assert.ok(s3Client instanceof S3ReplicaClient);
    assert.equal(s3Client.location, 's3://b/p');
    await file.close();
    await s3Client.close();
  });
});

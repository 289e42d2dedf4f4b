import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';

import { directoryDatabase } from '../src/config-directory.js';
import { DEFAULTS, expandEnv, loadConfigFile, parseConfig, resolveConfig } from '../src/config.js';
import type { Config, LoadConfigOptions } from '../src/config.js';
import { WalshipError } from '../src/errors.js';
import { createLogger } from '../src/logger.js';
import type { S3ClientConfig } from '../src/replica/client.js';

const USERS_CONFIG = fileURLToPath(new URL('../../test/fixtures/users-litestream.yml', import.meta.url));

/** Parses YAML text with an empty environment unless one is given. */
function parse(text: string, options: LoadConfigOptions = {}): Config {
  return parseConfig(text, 'test.yml', { env: {}, ...options });
}

/** Asserts that parsing fails with INVALID_INPUT and a message containing every part. */
function assertRejected(text: string, parts: string[], options: LoadConfigOptions = {}): void {
  assert.throws(
    () => parse(text, options),
    (err: unknown) => {
      assert.ok(err instanceof WalshipError, `expected a WalshipError, got ${String(err)}`);
      assert.equal(err.code, 'INVALID_INPUT');
      for (const part of parts) assert.ok(err.message.includes(part), `message ${JSON.stringify(err.message)} lacks ${JSON.stringify(part)}`);
      return true;
    },
  );
}

/** Returns the s3 client of a database's first replica. */
function s3Of(config: Config, db = 0): S3ClientConfig {
  const client = config.dbs[db]!.replicas[0]!.client;
  assert.equal(client.type, 's3');
  return client as S3ClientConfig;
}

/** Builds a one-database config with one replica given as YAML lines. */
function oneReplica(replicaLines: string, dbLines = ''): string {
  const indent = (text: string, spaces: number) => text.split('\n').filter(Boolean).map((l) => ' '.repeat(spaces) + l).join('\n');
  return `dbs:\n  - path: /data/users.db\n${indent(dbLines, 4)}\n    replicas:\n      - ${indent(replicaLines, 8).trimStart()}\n`;
}

describe('users config', () => {
  test('loads unchanged', async () => {
    const config = await loadConfigFile(USERS_CONFIG, { env: {} });

    assert.deepEqual(
      config.dbs.map((db) => db.name),
      ['users', 'catalog', 'analytics'],
    );
    assert.deepEqual(
      config.dbs.map((db) => s3Of(config, config.dbs.indexOf(db)).prefix),
      ['databases/users', 'databases/product_catalog', 'databases/analytics_dashboard'],
    );
    assert.deepEqual(
      config.dbs.map((db) => db.path),
      ['/data/users.db', '/data/catalog.db', '/data/analytics.db'],
    );
  });

  test('retention and defaults', async () => {
    const config = await loadConfigFile(USERS_CONFIG, { env: {} });
    assert.equal(config.dbs[2]!.replicas[0]!.retention, 168 * 3_600_000);
    assert.equal(config.dbs[0]!.replicas[0]!.retention, DEFAULTS.retention);
    assert.equal(config.dbs[0]!.replicas[0]!.syncInterval, DEFAULTS.syncInterval);
    assert.equal(config.dbs[0]!.monitorInterval, DEFAULTS.monitorInterval);
    assert.equal(config.dbs[0]!.metaPath, '/data/.users.db-walship');
  });

  test('top-level credentials and region', async () => {
    const config = await loadConfigFile(USERS_CONFIG, { env: {} });
    for (let i = 0; i < 3; i++) {
      const client = s3Of(config, i);
      assert.equal(client.bucket, 'meu-bucket');
      assert.equal(client.region, 'us-east-1');
      assert.equal(client.accessKeyId, 'AKIAxxxxxxxxxxxxxxxx');
      assert.equal(client.secretAccessKey, 'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxx/xxxxxxxxx');
    }
  });
});

describe('database keys', () => {
  test('durations and counts', () => {
    const config = parse(
      oneReplica(
        'type: s3\nbucket: b\nsync-interval: 500ms\nretention: 1h30m\nretention-check-interval: 10m\nsnapshot-interval: 24h\nlease-ttl: 5m',
        'meta-path: /var/lib/walship/users\nmonitor-interval: 1s\ncheckpoint-interval: 0\nmin-checkpoint-page-count: 500\nmax-checkpoint-page-count: 0\nbusy-timeout: 5s',
      ),
    );
    const db = config.dbs[0]!;
    assert.equal(db.metaPath, '/var/lib/walship/users');
    assert.equal(db.monitorInterval, 1000);
    assert.equal(db.checkpointInterval, 0);
    assert.equal(db.minCheckpointPageCount, 500);
    assert.equal(db.maxCheckpointPageCount, 0);
    assert.equal(db.busyTimeout, 5000);
    const replica = db.replicas[0]!;
    assert.equal(replica.syncInterval, 500);
    assert.equal(replica.retention, 5_400_000);
    assert.equal(replica.retentionCheckInterval, 600_000);
    assert.equal(replica.snapshotInterval, 86_400_000);
    assert.equal(replica.leaseTtl, 300_000);
  });

  test('lease-ttl too short', () => {
    assert.throws(() => parse(oneReplica('type: s3\nbucket: b\nlease-ttl: 1s')), /lease-ttl 1000ms is too short; use at least 3s/);
  });

  test('name sanitized into prefix', () => {
    const config = parse(oneReplica('type: s3\nbucket: b', 'name: Analytics Dashboard'));
    assert.equal(config.dbs[0]!.name, 'analytics_dashboard');
    assert.equal(s3Of(config).prefix, 'databases/analytics_dashboard');
  });

  test('empty name gives default', () => {
    const config = parse(oneReplica('type: s3\nbucket: b', 'name: ""'));
    assert.equal(config.dbs[0]!.name, 'default');
    assert.equal(s3Of(config).prefix, 'databases/default');
  });

  test('date-like name stays text', () => {
    const config = parse(oneReplica('type: s3\nbucket: b', 'name: 2025-01-15'));
    assert.equal(config.dbs[0]!.name, '2025-01-15');
  });

  test('relative path made absolute', () => {
    const config = parse('dbs:\n  - path: data/app.db\n');
    assert.equal(config.dbs[0]!.path, path.resolve('data/app.db'));
    assert.deepEqual(config.dbs[0]!.replicas, []);
  });

  test('home directory expanded', () => {
    const config = parse('dbs:\n  - path: ~/app.db\n');
    assert.equal(config.dbs[0]!.path, path.join(os.homedir(), 'app.db'));
  });

  test('invalid values rejected', () => {
    assertRejected(oneReplica('type: s3\nbucket: b', 'monitor-interval: 10'), ['database /data/users.db', 'monitor-interval "10"', '1s']);
    assertRejected(oneReplica('type: s3\nbucket: b', 'checkpoint-interval: -1s'), ['checkpoint-interval "-1s"', 'negative']);
    assertRejected(oneReplica('type: s3\nbucket: b', 'min-checkpoint-page-count: 0'), ['min-checkpoint-page-count "0"', 'at least 1']);
    assertRejected(oneReplica('type: s3\nbucket: b', 'max-checkpoint-page-count: many'), ['max-checkpoint-page-count "many"']);
  });

  test('missing path rejected', () => {
    assertRejected('dbs:\n  - name: x\n', ['test.yml, database 1', 'path is missing']);
  });

  test('unknown key rejected', () => {
    assertRejected(oneReplica('type: s3\nbucket: b', 'monitor-intervall: 1s'), ['database /data/users.db', '"monitor-intervall"']);
  });

  test('unusable name rejected', () => {
    assertRejected(oneReplica('type: s3\nbucket: b', 'name: "..."'), ['database /data/users.db', '"..."', '-db-name']);
  });

  test('duplicate databases rejected', () => {
    assertRejected('dbs:\n  - path: /a/users.db\n  - path: /b/users.db\n', ['/a/users.db', '/b/users.db', '"users"']);
    assertRejected('dbs:\n  - path: /a/users.db\n  - path: /a/users.db\n    name: other\n', ['/a/users.db', 'listed twice']);
  });
});

describe('replica keys', () => {
  test('bucket without path', () => {
    const config = parse(oneReplica('type: s3\nbucket: b'));
    assert.deepEqual(s3Of(config), { type: 's3', bucket: 'b', prefix: 'databases/users' });
    assert.equal(config.dbs[0]!.replicas[0]!.name, 's3');
  });

  test('path used as given', () => {
    const config = parse(oneReplica('type: s3\nbucket: b\npath: backups/prod/users/'));
    assert.equal(s3Of(config).prefix, 'backups/prod/users');
  });

  test('unsafe path rejected', () => {
    assertRejected(oneReplica('type: s3\nbucket: b\npath: /databases/users'), ['database /data/users.db, replica 1', 'starts with "/"']);
    assertRejected(oneReplica('type: s3\nbucket: b\npath: databases/../x'), ['replica 1', 'databases/../x']);
  });

  test('endpoint keys', () => {
    const config = parse(oneReplica('type: s3\nbucket: b\nendpoint: 127.0.0.1:9000\nregion: auto\nskip-verify: true'));
    assert.deepEqual(s3Of(config), {
      type: 's3',
      bucket: 'b',
      prefix: 'databases/users',
      endpoint: 'http://127.0.0.1:9000',
      region: 'auto',
      forcePathStyle: true,
      skipVerify: true,
    });
  });

  test('force-path-style false wins', () => {
    const config = parse(oneReplica('type: s3\nbucket: b\nendpoint: https://s3.example.com\nforce-path-style: false'));
    assert.equal(s3Of(config).forcePathStyle, false);
  });

  test('url replica', () => {
    const config = parse(oneReplica('url: s3://b/backups/users?endpoint=http://127.0.0.1:9000\nregion: eu-west-1'));
    assert.deepEqual(s3Of(config), {
      type: 's3',
      bucket: 'b',
      prefix: 'backups/users',
      endpoint: 'http://127.0.0.1:9000',
      forcePathStyle: true,
      region: 'eu-west-1',
    });
  });

  test('url with path rejected', () => {
    assertRejected(oneReplica('url: s3://b/x\npath: y'), ['replica 1', 'either url or bucket and path']);
    assertRejected(oneReplica('url: s3://b/x\nbucket: c'), ['either url or bucket and path']);
  });

  test('type and url disagree', () => {
    assertRejected(oneReplica('type: file\nurl: s3://b/x'), ['type "file"', 's3://b/x']);
  });

  test('file replica', () => {
    const config = parse(oneReplica('type: file\npath: /backups/users\nname: local'));
    const replica = config.dbs[0]!.replicas[0]!;
    assert.equal(replica.name, 'local');
    assert.deepEqual(replica.client, { type: 'file', root: '/backups/users' });
  });

  test('file replica by default', () => {
    const config = parse(oneReplica('path: /backups/users'));
    assert.deepEqual(config.dbs[0]!.replicas[0]!.client, { type: 'file', root: '/backups/users' });
    const byUrl = parse(oneReplica('url: file:///backups/users'));
    assert.deepEqual(byUrl.dbs[0]!.replicas[0]!.client, { type: 'file', root: '/backups/users' });
  });

  test('file replica problems', () => {
    assertRejected(oneReplica('type: file'), ['replica 1', 'path: DIRECTORY']);
    assertRejected(oneReplica('type: file\npath: s3://b/x'), ['looks like a URL']);
    assertRejected(oneReplica('type: file\npath: /backups\nbucket: b'), ['"bucket"', 'file replica']);
    assertRejected(oneReplica('type: file\npath: /backups/../etc'), ['/backups/../etc']);
  });

  test('s3 without bucket rejected', () => {
    assertRejected(oneReplica('type: s3\npath: x'), ['database /data/users.db, replica 1', 'bucket: NAME']);
  });

  for (const type of ['gcs', 'abs', 'sftp', 'webdav']) {
    test(`type ${type} rejected`, () => {
      assertRejected(oneReplica(`type: ${type}\nbucket: b\npath: x`), ['database /data/users.db', `"${type}"`, 'not supported']);
    });
  }

  test('gcs url rejected', () => {
    assertRejected(oneReplica('url: gcs://b/x'), ['database /data/users.db', '"gcs"', 'not supported']);
  });

  test('age rejected', () => {
    assertRejected(oneReplica('type: s3\nbucket: b\nage:\n  recipients: [age1xyz]'), ['database /data/users.db', 'age', 'not supported']);
  });

  test('keys of other types rejected', () => {
    assertRejected(oneReplica('type: s3\nbucket: b\nhost: example.com'), ['"host"', 'sftp']);
  });

  test('unknown key rejected', () => {
    assertRejected(oneReplica('type: s3\nbucket: b\nsync-intervall: 1s'), ['database /data/users.db, replica 1', '"sync-intervall"']);
    assertRejected(oneReplica('type: s3\nname: main\nbucket: b\nbukcet: c'), ['replica 1 "main"', '"bukcet"']);
  });

  test('validation-interval accepted with warning', () => {
    const lines: string[] = [];
    const logger = createLogger({ format: 'json', destination: { write: (line: string) => lines.push(line) } });
    const config = parse(oneReplica('type: s3\nbucket: b\nvalidation-interval: 1h'), { logger });
    assert.equal(config.dbs[0]!.replicas.length, 1);
    assert.equal(lines.length, 1);
    assert.match(lines[0]!, /validation-interval/);
  });

  test('duplicate replica names rejected', () => {
    const text = 'dbs:\n  - path: /a.db\n    replicas:\n      - type: s3\n        bucket: b\n      - type: s3\n        bucket: c\n';
    assertRejected(text, ['database /a.db', 'two replicas are named "s3"']);
  });

  test('overlapping databases rejected', () => {
    const text =
      'dbs:\n  - path: /a/users.db\n    replicas:\n      - url: s3://b/shared\n' +
      '  - path: /b/orders.db\n    replicas:\n      - url: s3://b/shared/orders\n';
    assertRejected(text, ['test.yml', '/a/users.db', '/b/orders.db']);
  });

  test('singular replica key', () => {
    const config = parse('dbs:\n  - path: /a.db\n    replica:\n      type: s3\n      bucket: b\n');
    assert.equal(s3Of(config).prefix, 'databases/a');
  });
});

describe('credentials', () => {
  const replica = oneReplica('type: s3\nbucket: b');
  const awsEnv = { AWS_ACCESS_KEY_ID: 'aws-id', AWS_SECRET_ACCESS_KEY: 'aws-secret', AWS_SESSION_TOKEN: 'aws-token' };
  const litestreamEnv = { LITESTREAM_ACCESS_KEY_ID: 'ls-id', LITESTREAM_SECRET_ACCESS_KEY: 'ls-secret' };

  test('replica keys first', () => {
    const text = `access-key-id: top-id\nsecret-access-key: top-secret\n${oneReplica('type: s3\nbucket: b\naccess-key-id: r-id\nsecret-access-key: r-secret')}`;
    const client = s3Of(parse(text, { env: { ...awsEnv, ...litestreamEnv } }));
    assert.equal(client.accessKeyId, 'r-id');
    assert.equal(client.secretAccessKey, 'r-secret');
    assert.equal(client.sessionToken, undefined);
  });

  test('top-level keys second', () => {
    const text = `access-key-id: top-id\nsecret-access-key: top-secret\n${replica}`;
    const client = s3Of(parse(text, { env: { ...awsEnv, ...litestreamEnv } }));
    assert.equal(client.accessKeyId, 'top-id');
    assert.equal(client.secretAccessKey, 'top-secret');
  });

  test('LITESTREAM_ variables third', () => {
    const client = s3Of(parse(replica, { env: { ...awsEnv, ...litestreamEnv } }));
    assert.equal(client.accessKeyId, 'ls-id');
    assert.equal(client.secretAccessKey, 'ls-secret');
    assert.equal(client.sessionToken, undefined);
  });

  test('AWS_ variables fourth', () => {
    const client = s3Of(parse(replica, { env: awsEnv }));
    assert.equal(client.accessKeyId, 'aws-id');
    assert.equal(client.secretAccessKey, 'aws-secret');
    assert.equal(client.sessionToken, 'aws-token');
  });

  test('none leaves SDK chain', () => {
    const client = s3Of(parse(replica, { env: {} }));
    assert.equal(client.accessKeyId, undefined);
    assert.equal(client.secretAccessKey, undefined);
  });

  test('half pair rejected without values', () => {
    const text = oneReplica('type: s3\nbucket: b\naccess-key-id: AKIA-only');
    assertRejected(text, ['secret-access-key is missing']);
    assert.throws(() => parse(text), (err: Error) => !err.message.includes('AKIA-only'));
    assertRejected(replica, ['AWS_SECRET_ACCESS_KEY'], { env: { AWS_ACCESS_KEY_ID: 'x' } });
  });
});

describe('top level', () => {
  test('logging and addr', () => {
    const config = parse('addr: ":9090"\nlogging:\n  level: warning\n  type: json\n  stderr: true\ndbs: []\n');
    assert.equal(config.addr, ':9090');
    assert.equal(config.logLevel, 'warn');
    assert.equal(config.logFormat, 'json');
  });

  test('defaults', () => {
    const config = parse('');
    assert.deepEqual(config, { dbs: [], logLevel: DEFAULTS.logLevel, logFormat: DEFAULTS.logFormat });
  });

  test('bad values rejected', () => {
    assertRejected('addr: localhost\n', ['addr "localhost"', 'port']);
    assertRejected('logging:\n  level: loud\n', ['test.yml, logging', 'level "loud"']);
    assertRejected('logging:\n  type: xml\n', ['type "xml"']);
    assertRejected('dbs:\n  path: /a.db\n', ['dbs must be a list']);
    assertRejected('- a\n', ['test.yml', 'expected a mapping']);
  });

  test('unknown key rejected', () => {
    assertRejected('dbz: []\n', ['test.yml', '"dbz"']);
  });

  test('exec accepted', () => {
    assert.equal(parse('exec: myapp serve --port 8080\n').exec, 'myapp serve --port 8080');
  });

  test('daemon keys', () => {
    const config = parse('shutdown-timeout: 3s\ncontrol-socket: /run/w.sock\nheartbeat-url: http://127.0.0.1:1/ping\nheartbeat-interval: 2m\n');
    assert.equal(config.shutdownTimeout, 3000);
    assert.equal(config.controlSocket, '/run/w.sock');
    assert.equal(config.heartbeatUrl, 'http://127.0.0.1:1/ping');
    assert.equal(config.heartbeatInterval, 120_000);
    assert.equal(parse('control-socket: off\n').controlSocket, 'off');
  });

  test('daemon keys rejected', () => {
    assertRejected('shutdown-timeout: soon\n', ['shutdown-timeout "soon"']);
    assertRejected('heartbeat-interval: 30s\n', ['heartbeat-interval', 'minimum of 1m']);
    assertRejected('heartbeat-url: ftp://127.0.0.1/x\n', ['heartbeat-url', 'http or https']);
    assertRejected('heartbeat-url: not a url\n', ['heartbeat-url', 'not a URL']);
  });
});

describe('directory entries', () => {
  const dirEntry = (extra = '') =>
    `dbs:\n  - dir: /data\n    pattern: "*.db"\n${extra}    replicas:\n      - type: s3\n        bucket: b\n      - name: backup\n        type: s3\n        bucket: b2\n        path: fleet\n      - name: local\n        path: /backups\n`;

  test('resolved apart from files', () => {
    const config = parse(dirEntry('    recursive: true\n    max-lag: 30s\n'));
    assert.deepEqual(config.dbs, []);
    const directory = config.dirs![0]!;
    assert.equal(directory.dir, '/data');
    assert.equal(directory.pattern, '*.db');
    assert.equal(directory.recursive, true);
    assert.equal(directory.settings.maxLag, 30_000);
    assert.equal(directory.settings.monitorInterval, DEFAULTS.monitorInterval);
    assert.deepEqual(
      directory.replicas.map((r) => r.client),
      [
        { type: 's3', bucket: 'b', prefix: '' },
        { type: 's3', bucket: 'b2', prefix: 'fleet' },
        { type: 'file', root: '/backups' },
      ],
    );
  });

  test('database per file', () => {
    const directory = parse(dirEntry('    recursive: true\n')).dirs![0]!;
    const db = directoryDatabase(directory, '/data/tenants/Acme Corp.db');
    assert.equal(db.name, 'tenants_acme_corp');
    assert.equal(db.metaPath, '/data/tenants/.Acme Corp.db-walship');
    assert.deepEqual(
      db.replicas.map((r) => r.client),
      [
        { type: 's3', bucket: 'b', prefix: 'databases/tenants_acme_corp' },
        { type: 's3', bucket: 'b2', prefix: 'fleet/databases/tenants_acme_corp' },
        { type: 'file', root: '/backups/databases/tenants_acme_corp' },
      ],
    );
  });

  test('meta-path per database', () => {
    const directory = parse(dirEntry('    meta-path: /var/lib/walship\n')).dirs![0]!;
    assert.equal(directoryDatabase(directory, '/data/users.db').metaPath, '/var/lib/walship/users');
  });

  test('problems rejected', () => {
    assertRejected('dbs:\n  - dir: /data\n', ['directory /data', 'pattern is missing']);
    assertRejected('dbs:\n  - dir: /data\n    path: /data/a.db\n    pattern: "*.db"\n', ['either path', 'or dir']);
    assertRejected('dbs:\n  - dir: /data\n    name: x\n    pattern: "*.db"\n', ['name: does not apply']);
    assertRejected('dbs:\n  - dir: /data\n    pattern: "sub/*.db"\n', ['contains "/"']);
    assertRejected('dbs:\n  - path: /data/a.db\n    pattern: "*.db"\n', ['pattern applies only to a directory']);
    assertRejected('dbs:\n  - dir: /data\n    pattern: "*.db"\n    color: red\n', ['unknown key "color"']);
  });

  test('max-lag per database', () => {
    assert.equal(parse(oneReplica('path: /r', 'max-lag: 1m')).dbs[0]!.maxLag, 60_000);
    assert.equal(parse(oneReplica('path: /r')).dbs[0]!.maxLag, undefined);
  });
});

describe('YAML and environment', () => {
  test('malformed YAML names line', () => {
    assertRejected('dbs:\n  - path: /a.db\n    replicas: [\n  - x\n', ['malformed YAML in test.yml at line 4, column']);
    assertRejected('dbs:\n  - path: /a.db\n  - path: "unterminated\n', ['malformed YAML in test.yml at line']);
  });

  test('duplicate keys rejected', () => {
    assertRejected('dbs: []\ndbs: []\n', ['malformed YAML', 'line 2']);
  });

  test('variables expanded', () => {
    const text = oneReplica('type: s3\nbucket: $BUCKET\npath: ${PREFIX}/users\nregion: $UNSET_REGION');
    const client = s3Of(parse(text, { env: { BUCKET: 'from-env', PREFIX: 'prod' } }));
    assert.equal(client.bucket, 'from-env');
    assert.equal(client.prefix, 'prod/users');
    assert.equal(client.region, undefined);
  });

  test('expansion turned off', () => {
    const text = oneReplica('type: s3\nbucket: $BUCKET');
    const client = s3Of(parse(text, { env: { BUCKET: 'from-env' }, expandEnv: false }));
    assert.equal(client.bucket, '$BUCKET');
  });

  test('expandEnv forms', () => {
    const env = { A: '1', B_2: 'two' };
    assert.equal(expandEnv('$A ${B_2} $MISSING ${MISSING} $ $-x 5$', env), '1 two   $ $-x 5$');
  });

  test('scalars kept as written', () => {
    const config = parse(oneReplica('type: s3\nbucket: 0123\naccess-key-id: 1e3\nsecret-access-key: true'));
    const client = s3Of(config);
    assert.equal(client.bucket, '0123');
    assert.equal(client.accessKeyId, '1e3');
    assert.equal(client.secretAccessKey, 'true');
  });
});

describe('loadConfigFile', () => {
  test('missing file named', async () => {
    await assert.rejects(loadConfigFile('/nonexistent/walship.yml'), (err: unknown) => {
      assert.ok(err instanceof WalshipError);
      assert.equal(err.code, 'INVALID_INPUT');
      assert.match(err.message, /\/nonexistent\/walship\.yml does not exist/);
      return true;
    });
  });

  test('file errors name the file', async () => {
    const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'walship-config-'));
    try {
      const file = path.join(dir, 'bad.yml');
      await fs.writeFile(file, 'dbs:\n  - path: /a.db\n    replicas:\n      - type: gcs\n        bucket: b\n');
      await assert.rejects(loadConfigFile(file, { env: {} }), (err: Error) => err.message.startsWith(`${file}, database /a.db, replica 1:`));
    } finally {
      await fs.rm(dir, { recursive: true, force: true });
    }
  });
});

describe('resolveConfig', () => {
  test('flag-built mapping', () => {
    const raw = { dbs: [{ path: '/data/app.db', name: undefined, replicas: [{ type: 's3', bucket: 'b', 'force-path-style': true, 'sync-interval': '250ms' }] }] };
    const config = resolveConfig(raw, 'command line', { env: {} });
    assert.equal(config.dbs[0]!.name, 'app');
    assert.deepEqual(s3Of(config), { type: 's3', bucket: 'b', prefix: 'databases/app', forcePathStyle: true });
    assert.equal(config.dbs[0]!.replicas[0]!.syncInterval, 250);
  });
});

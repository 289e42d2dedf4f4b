import assert from 'node:assert/strict';
import { execFile, execFileSync, spawn } from 'node:child_process';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

import Database from 'better-sqlite3';

import { parseConfig } from '../src/config.js';
import { S3RVER_CREDENTIAL, startS3Server } from './support/s3-server.js';
import type { S3Server } from './support/s3-server.js';

/**
 * Runs every `walship` command of the README files and of docs/*.md against
 * a local s3rver and temporary directories, so that the documentation cannot
 * drift from the command-line interface. Placeholders of the pages (the
 * bucket, the MinIO endpoint, /data, /backups, /restore, the config file) are
 * replaced by the table in `substitute`. Every command must pass commander's
 * parsing and walship's flag-combination checks. Read-only commands on the
 * prepared replicas must also exit 0. Config examples, the IAM policies and
 * the systemd unit are checked too.
 */

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const MAIN = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));

/** Bucket name that the pages use. */
const DOC_BUCKET = 'my-bucket';

/** Other bucket names of the pages, such as the Portuguese README's, replaced by DOC_BUCKET. */
const OTHER_DOC_BUCKETS = ['meu-bucket'];

/** Endpoints that the pages use for an S3-compatible store. */
const DOC_ENDPOINTS = ['http://127.0.0.1:9000', 'http://minio:9000'];

/** Generation id that the pages use as an example. No replica of the test contains it. */
const DOC_GENERATION = '325438e6141a7da0';

/** Time a command may run before it is killed and reported. */
const RUN_MS = 30_000;

/** Commands run at once. Each one is a Node.js process that loads the AWS SDK. */
const CONCURRENCY = 3;

// Output of commander's usage errors, which end with the hint of
// showHelpAfterError, and walship's rejections of flag combinations.
const USAGE_ERROR = /\(run with --help for usage\)|error: (unknown option|unknown command|too many arguments|missing required argument)|apply only|applies only|cannot be combined/;

// Subcommands that only read a replica or a config file. On the prepared
// replicas they must succeed, unless they name the example generation or a
// time before the first snapshot.
const READ_ONLY = new Set(['version', 'databases', 'generations', 'snapshots', 'wal', 'ls', 'verify', 'restore']);

/** A `walship` command line of a page. */
interface DocCommand {
  file: string;
  line: number;
  text: string;
}

interface RunResult {
  status: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** Lists the Markdown files whose commands are checked: README.md, README.pt-BR.md and docs/*.md. */
async function docFiles(): Promise<string[]> {
  const docs = (await fs.readdir(path.join(ROOT, 'docs'))).filter((name) => name.endsWith('.md')).map((name) => path.join('docs', name));
  const readmes: string[] = [];
  for (const name of ['README.md', 'README.pt-BR.md']) {
    if (await exists(path.join(ROOT, name))) readmes.push(name);
  }
  return [...readmes, ...docs.sort()];
}

/** Returns the lines of fenced blocks of the given languages with their line numbers, joining `\` continuations. */
function fencedLines(markdown: string, languages: readonly string[]): { line: number; text: string }[] {
  const lines = markdown.split('\n');
  const out: { line: number; text: string }[] = [];
  let inside = false;

  for (let i = 0; i < lines.length; i++) {
    const fence = /^\s*```\s*([\w-]*)\s*$/.exec(lines[i]!);
    if (fence !== null) {
      inside = !inside && languages.includes(fence[1]!);
      continue;
    }
    if (!inside) continue;

    const start = i;
    let text = lines[i]!;
    while (text.endsWith('\\') && i + 1 < lines.length) text = text.slice(0, -1) + lines[++i]!;
    out.push({ line: start + 1, text: text.trim() });
  }
  return out;
}

/** Returns the `walship ...` lines of a page's sh blocks, without a leading `exec`. */
function walshipCommands(file: string, markdown: string): DocCommand[] {
  const commands: DocCommand[] = [];
  for (const { line, text } of fencedLines(markdown, ['sh', 'bash', 'shell'])) {
    const command = text.replace(/^exec\s+/, '');
    if (command.startsWith('walship ')) commands.push({ file, line, text: command });
  }
  return commands;
}

/**
 * Splits a shell command line into words: single and double quotes group,
 * a backslash escapes the next character outside single quotes, and an
 * unquoted `#` after a space starts a comment. Pipes and other operators are
 * not supported: a documented walship command is one simple command.
 */
function splitWords(line: string): string[] {
  const words: string[] = [];
  let word = '';
  let started = false;
  let quote: '' | "'" | '"' = '';

  for (let i = 0; i < line.length; i++) {
    const c = line[i]!;
    if (quote === "'") {
      if (c === "'") quote = '';
      else word += c;
    } else if (quote === '"') {
      if (c === '"') quote = '';
      else if (c === '\\' && i + 1 < line.length) word += line[++i];
      else word += c;
    } else if (c === "'" || c === '"') {
      quote = c;
      started = true;
    } else if (c === '\\' && i + 1 < line.length) {
      word += line[++i];
      started = true;
    } else if (/\s/.test(c)) {
      if (started) words.push(word);
      word = '';
      started = false;
    } else if (c === '#' && !started) {
      break;
    } else {
      word += c;
      started = true;
    }
  }
  assert.equal(quote, '', `unterminated quote in ${line}`);
  if (started) words.push(word);
  return words;
}

/** Paths and endpoints of the test environment that replace the pages' placeholders. */
interface Environment {
  dir: string;
  endpoint: string;
  config: string;
}

/**
 * Replaces the placeholders of a documented command with the test
 * environment: the endpoints with s3rver's, /data, /backups and /restore with
 * directories under `env.dir` (each command gets its own /restore), the
 * config file, the control socket and the metrics port. An `s3://` URL gets
 * `endpoint=`, and `-bucket` gets `-endpoint`, so no request leaves 127.0.0.1.
 */
function substitute(words: readonly string[], env: Environment, index: number): string[] {
  const out = words.map((word) => {
    let value = word;
    for (const endpoint of DOC_ENDPOINTS) value = value.split(endpoint).join(env.endpoint);
    for (const bucket of OTHER_DOC_BUCKETS) value = value.replace(new RegExp(`^(s3://)?${bucket}(?=/|$)`), `$1${DOC_BUCKET}`);
    value = value.replace(/^(file:\/\/)?\/(data|backups)(?=\/|$)/, `$1${env.dir}/$2`);
    value = value.replace(/^(file:\/\/)?\/restore(?=\/|$)/, `$1${env.dir}/restore-${index}`);
    if (value === 'walship.yml' || value === '/etc/walship.yml') value = env.config;
    if (value === '/run/walship/walship.sock') value = path.join(env.dir, 'run', 'walship.sock');
    if (/^(127\.0\.0\.1|0\.0\.0\.0)?:\d+$/.test(value)) value = '127.0.0.1:0';
    if (value.startsWith('s3://')) value = withEndpoint(value, env.endpoint);
    return value;
  });

  const bucket = flagIndex(out, 'bucket');
  if (bucket >= 0 && flagIndex(out, 'endpoint') < 0) out.push('-endpoint', env.endpoint);
  return out;
}

/** Sets the `endpoint` query parameter of an `s3://` URL, written unencoded as the pages do. */
function withEndpoint(url: string, endpoint: string): string {
  const [base, query = ''] = url.split('?', 2) as [string, string?];
  const params = query.split('&').filter((param) => param !== '' && !param.startsWith('endpoint='));
  return `${base}?${[...params, `endpoint=${endpoint}`].join('&')}`;
}

/** Returns the index of `-name` or `--name` (also written `-name=value`) in the words, or -1. */
function flagIndex(words: readonly string[], name: string): number {
  return words.findIndex((word) => new RegExp(`^--?${name}(=|$)`).test(word));
}

/** Asserts that a substituted command can reach no store but the local s3rver. */
function assertLocalOnly(words: readonly string[], env: Environment, where: string): void {
  for (const word of words) {
    if (word.includes('s3://')) assert.ok(word.includes(`endpoint=${env.endpoint}`), `${where}: ${word} has no local endpoint`);
  }
  if (flagIndex(words, 'bucket') >= 0) assert.ok(words.includes(env.endpoint), `${where}: -bucket without the local -endpoint`);
}

/** Environment of the CLI: s3rver's credentials, and no settings of the machine running the tests. */
function cliEnv(env: Environment): NodeJS.ProcessEnv {
  const out: NodeJS.ProcessEnv = {};
  for (const [key, value] of Object.entries(process.env)) {
    if (!/^(AWS_|LITESTREAM_|WALSHIP_|XDG_RUNTIME_DIR$)/.test(key)) out[key] = value;
  }
  return {
    ...out,
    AWS_ACCESS_KEY_ID: S3RVER_CREDENTIAL,
    AWS_SECRET_ACCESS_KEY: S3RVER_CREDENTIAL,
    AWS_REGION: 'us-east-1',
    AWS_EC2_METADATA_DISABLED: 'true',
    XDG_RUNTIME_DIR: path.join(env.dir, 'run'),
    // The pages' commands that name no config file read /etc/walship.yml.
    WALSHIP_CONFIG: env.config,
  };
}

/**
 * Runs the CLI. A daemon (`stopOnOutput`) gets SIGTERM at its first line on
 * stderr: by then its flags were parsed. After `runMs` the process gets
 * SIGTERM, and SIGKILL 20 s later.
 */
function runCli(args: readonly string[], env: Environment, options: { runMs?: number; stopOnOutput?: boolean } = {}): Promise<RunResult> {
  const runMs = options.runMs ?? RUN_MS;
  const child = spawn(process.execPath, [MAIN, ...args], { cwd: env.dir, env: cliEnv(env), stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
  child.stderr.on('data', (chunk: Buffer) => {
    if (options.stopOnOutput === true && stderr === '') child.kill('SIGTERM');
    stderr += chunk.toString();
  });

  return new Promise((resolve) => {
    const term = setTimeout(() => child.kill('SIGTERM'), runMs);
    const kill = setTimeout(() => child.kill('SIGKILL'), runMs + 20_000);
    child.on('exit', (status, signal) => {
      clearTimeout(term);
      clearTimeout(kill);
      resolve({ status, signal, stdout, stderr });
    });
  });
}

/** Runs `items` through `task` with at most `limit` running at once, keeping the order of results. */
async function mapLimit<T, R>(items: readonly T[], limit: number, task: (item: T, index: number) => Promise<R>): Promise<R[]> {
  const results: R[] = new Array(items.length);
  let next = 0;
  const workers = Array.from({ length: Math.min(limit, items.length) }, async () => {
    while (next < items.length) {
      const i = next++;
      results[i] = await task(items[i]!, i);
    }
  });
  await Promise.all(workers);
  return results;
}

async function exists(file: string): Promise<boolean> {
  return fs.access(file).then(
    () => true,
    () => false,
  );
}

/** Returns the path of a program on PATH, or undefined when there is none. */
function commandExists(name: string): string | undefined {
  try {
    return execFileSync('sh', ['-c', `command -v ${name}`], { encoding: 'utf8' }).trim();
  } catch {
    return undefined;
  }
}

/** Creates a WAL-mode database with a few rows. */
function createDatabase(file: string): void {
  const db = new Database(file);
  db.pragma('journal_mode = wal');
  db.exec('CREATE TABLE views (id INTEGER PRIMARY KEY, at TEXT)');
  const insert = db.prepare('INSERT INTO views (at) VALUES (?)');
  for (let i = 0; i < 20; i++) insert.run(new Date(Date.UTC(2026, 0, 1, 0, 0, i)).toISOString());
  db.close();
}

describe('documented walship commands', () => {
  let server: S3Server;
  let env: Environment;

  before(async () => {
    server = await startS3Server();
    await server.createBucket(DOC_BUCKET);
    const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'walship-docs-'));
    env = { dir, endpoint: server.endpoint, config: path.join(dir, 'walship.yml') };

    for (const sub of ['data', 'backups', 'run', 'litestream']) await fs.mkdir(path.join(dir, sub), { recursive: true });
    for (const name of ['users', 'app', 'catalog', 'analytics']) createDatabase(path.join(dir, 'data', `${name}.db`));
    createDatabase(path.join(dir, 'litestream', 'users.db'));

    // The config that the pages' `-config walship.yml` and `/etc/walship.yml` stand for.
    const s3 = `type: s3\n        bucket: ${DOC_BUCKET}\n        endpoint: ${server.endpoint}`;
    await fs.writeFile(
      env.config,
      `dbs:\n` +
        `  - path: ${dir}/data/users.db\n    replicas:\n      - ${s3}\n      - path: ${dir}/backups/users\n` +
        `  - path: ${dir}/data/catalog.db\n    name: Product Catalog\n    replicas:\n      - ${s3}\n`,
    );

    // Replicas that the read-only commands find: the bucket folders of users
    // and app, and the directory /backups/users. s3://my-bucket/users stands
    // for an old Litestream location, with a generation of its own.
    const url = (prefix: string) => `s3://${DOC_BUCKET}/${prefix}?endpoint=${server.endpoint}`;
    const once = [
      ['replicate', '-once', path.join(dir, 'data', 'users.db'), url('databases/users'), `file://${dir}/backups/users`],
      ['replicate', '-once', path.join(dir, 'litestream', 'users.db'), url('users')],
      ['replicate', '-once', path.join(dir, 'data', 'app.db'), url('databases/production_instance')],
      ['replicate', '-once', '-config', env.config],
    ];
    for (const args of once) {
      const result = await runCli(args, env);
      assert.equal(result.status, 0, `walship ${args.join(' ')} failed: ${result.stderr}`);
    }
  });

  after(async () => {
    await server?.close();
    if (env !== undefined) await fs.rm(env.dir, { recursive: true, force: true });
  });

  test('every command parses and read-only ones succeed', async () => {
    const commands: DocCommand[] = [];
    for (const file of await docFiles()) commands.push(...walshipCommands(file, await fs.readFile(path.join(ROOT, file), 'utf8')));
    assert.ok(commands.length >= 40, `found only ${commands.length} documented walship commands`);

    // Pages repeat commands (the two READMEs contain the same ones), so each
    // distinct command runs once, and a failure names every place of it.
    const distinct = new Map<string, { command: DocCommand; where: string[] }>();
    for (const command of commands) {
      const words = splitWords(command.text).map((word) => OTHER_DOC_BUCKETS.reduce((w, bucket) => w.split(bucket).join(DOC_BUCKET), word));
      const key = JSON.stringify(words);
      const entry = distinct.get(key) ?? { command, where: [] };
      entry.where.push(`${command.file}:${command.line}`);
      distinct.set(key, entry);
    }

    const results = await mapLimit([...distinct.values()], CONCURRENCY, async ({ command, where: places }, i) => {
      const where = places.join(', ');
      const args = substitute(splitWords(command.text).slice(1), env, i);
      assertLocalOnly(args, env, where);
      await fs.mkdir(path.join(env.dir, `restore-${i}`), { recursive: true });

      const daemon = args[0] === 'replicate' && flagIndex(args, 'once') < 0;
      const started = Date.now();
      const result = await runCli(args, env, { stopOnOutput: daemon });
      return { command, where, args, result, elapsed: Date.now() - started };
    });

    // Every failing command is listed, so one run shows all the pages to fix.
    const failures: string[] = [];
    for (const { command, where, args, result, elapsed } of results) {
      const report = `${where}: ${command.text}\n  ran: walship ${args.join(' ')}\n  exit ${result.status ?? result.signal} after ${elapsed} ms\n  ${result.stderr.trim()}`;
      if (USAGE_ERROR.test(result.stderr)) failures.push(`usage error: ${report}`);

      const readOnly = READ_ONLY.has(args[0] ?? '');
      const example = command.text.includes(DOC_GENERATION) || flagIndex(args, 'timestamp') >= 0;
      if (readOnly && !example && result.status !== 0) failures.push(`failed: ${report}`);
    }
    assert.deepEqual(failures, [], failures.join('\n\n'));
  });

  test('aws s3 commands run with --dryrun', async (t) => {
    if (!commandExists('aws')) {
      t.skip('the AWS CLI is not installed');
      return;
    }

    const lines: { where: string; text: string }[] = [];
    for (const file of await docFiles()) {
      for (const { line, text } of fencedLines(await fs.readFile(path.join(ROOT, file), 'utf8'), ['sh', 'bash', 'shell'])) {
        if (text.startsWith('aws s3 ')) lines.push({ where: `${file}:${line}`, text });
      }
    }
    assert.ok(lines.length > 0, 'no aws s3 command found in the pages');

    // s3://my-bucket/users contains a replica, so the copy of the migration page
    // lists real objects. --dryrun prints each copy without making it.
    let copies = 0;
    for (const { where, text } of lines) {
      const args = [...splitWords(text).slice(1), '--dryrun', '--endpoint-url', env.endpoint];
      const awsEnv = { ...cliEnv(env), AWS_DEFAULT_REGION: 'us-east-1', AWS_CONFIG_FILE: '/dev/null', AWS_SHARED_CREDENTIALS_FILE: '/dev/null' };
      const result = await promisify(execFile)('aws', args, { env: awsEnv, timeout: 60_000 }).catch((err: { stderr?: string; message: string }) => {
        assert.fail(`${where}: aws ${args.join(' ')} failed: ${err.stderr ?? err.message}`);
      });
      copies += (result.stdout.match(/\(dryrun\) copy: /g) ?? []).length;
    }
    assert.ok(copies > 0, 'the aws s3 commands copied nothing from s3://my-bucket/users');
  });
});

describe('command help', () => {
  const SUBCOMMANDS = ['replicate', 'restore', 'sync', 'snapshot', 'databases', 'generations', 'snapshots', 'wal', 'ls', 'verify', 'version'];

  for (const subcommand of SUBCOMMANDS) {
    test(`${subcommand} help gives every default`, () => {
      const help = execFileSync(process.execPath, [MAIN, subcommand, '--help'], { encoding: 'utf8' });
      const options = optionBlocks(help).filter((block) => !block.startsWith('-h, --help'));

      for (const block of options) assert.match(block, /\(default|default: /, `walship ${subcommand} --help: no default in "${block}"`);
    });
  }
});

/** Splits the Options section of a commander help text into one string per option, wrapped lines joined. */
function optionBlocks(help: string): string[] {
  const section = help.split(/^Options:$/m)[1]?.split(/^\S/m)[0] ?? '';
  const blocks: string[] = [];
  for (const line of section.split('\n')) {
    if (/^  -/.test(line)) blocks.push(line.trim());
    else if (line.trim() !== '' && blocks.length > 0) blocks[blocks.length - 1] += ' ' + line.trim();
  }
  return blocks;
}

describe('documented files', () => {
  test('config examples parse', async () => {
    let checked = 0;
    for (const file of await docFiles()) {
      const markdown = await fs.readFile(path.join(ROOT, file), 'utf8');
      const blocks = markdown.split(/^```yaml\s*$/m).slice(1).map((rest) => rest.split(/^```\s*$/m)[0]!);
      for (const block of blocks.filter((text) => /^dbs:/m.test(text))) {
        assert.doesNotThrow(() => parseConfig(block, `${file} example`, { env: {} }), `${file}: a config example does not parse`);
        checked++;
      }
    }
    assert.ok(checked >= 5, `checked only ${checked} config examples`);
  });

  test('IAM policies are valid JSON', async () => {
    for (const name of ['iam-writer-policy.json', 'iam-restore-policy.json']) {
      const policy = JSON.parse(await fs.readFile(path.join(ROOT, 'deploy', name), 'utf8')) as { Version: string; Statement: { Effect: string; Action: string | string[]; Resource: string }[] };
      assert.equal(policy.Version, '2012-10-17', `${name}: Version`);
      assert.ok(Array.isArray(policy.Statement), `${name}: Statement is a list`);
    assert.ok(policy.Statement.length > 0, `${name}: Statement is not empty`);
      for (const statement of policy.Statement) {
        assert.equal(statement.Effect, 'Allow', `${name}: Effect`);
        assert.match(statement.Resource, /^arn:aws:s3:::my-bucket(\/databases\/.*)?$/, `${name}: Resource`);
      }
    }
  });

  test('writer policy covers only its folder', async () => {
    const policy = JSON.parse(await fs.readFile(path.join(ROOT, 'deploy', 'iam-writer-policy.json'), 'utf8')) as { Statement: { Action: string | string[]; Resource: string; Condition?: unknown }[] };
    const actions = policy.Statement.flatMap((s) => (Array.isArray(s.Action) ? s.Action : [s.Action]));
    for (const action of ['s3:ListBucket', 's3:GetObject', 's3:PutObject', 's3:DeleteObject', 's3:AbortMultipartUpload']) {
      assert.ok(actions.includes(action), `writer policy lacks ${action}`);
    }
    for (const statement of policy.Statement) {
      if (statement.Resource.includes('/')) assert.equal(statement.Resource, 'arn:aws:s3:::my-bucket/databases/users/*');
    }
    const list = policy.Statement.find((s) => s.Action === 's3:ListBucket');
    assert.deepEqual(list?.Condition, { StringLike: { 's3:prefix': ['databases/users/', 'databases/users/*'] } });
  });

  test('restore policy only reads', async () => {
    const policy = JSON.parse(await fs.readFile(path.join(ROOT, 'deploy', 'iam-restore-policy.json'), 'utf8')) as { Statement: { Action: string | string[] }[] };
    const actions = policy.Statement.flatMap((s) => (Array.isArray(s.Action) ? s.Action : [s.Action]));
    assert.deepEqual(actions.sort(), ['s3:GetObject', 's3:ListBucket']);
  });

  test('systemd unit passes systemd-analyze', async (t) => {
    const analyze = commandExists('systemd-analyze');
    if (analyze === undefined) {
      t.skip('systemd-analyze is not installed');
      return;
    }

    // systemd-analyze checks that ExecStart names an executable, and walship
    // is not installed where the unit expects it, so the copy runs /bin/true.
    const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'walship-unit-'));
    try {
      const unit = await fs.readFile(path.join(ROOT, 'deploy', 'walship.service'), 'utf8');
      assert.match(unit, /^ExecStart=\/usr\/local\/bin\/walship replicate -config \/etc\/walship\.yml$/m);
      const copy = path.join(dir, 'walship.service');
      await fs.writeFile(copy, unit.replace('/usr/local/bin/walship', '/bin/true'));
      const output = execFileSync(analyze, ['verify', copy], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
      assert.equal(output.trim(), '');
    } finally {
      await fs.rm(dir, { recursive: true, force: true });
    }
  });
});

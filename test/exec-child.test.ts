import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import { WalshipError } from '../src/errors.js';
import { exitStatus, splitCommand } from '../src/exec-child.js';

describe('splitCommand', () => {
  const cases: [string, string[]][] = [
    ['myapp serve', ['myapp', 'serve']],
    ['  myapp   --port 8080 ', ['myapp', '--port', '8080']],
    [`sh -c 'echo "$HOME" > out'`, ['sh', '-c', 'echo "$HOME" > out']],
    ['app "two words" "say \\"hi\\"" a\\ b', ['app', 'two words', 'say "hi"', 'a b']],
    [`app '' ""`, ['app', '', '']],
    [`app it'"'s`, ['app', `it"s`]],
  ];
  for (const [command, words] of cases) {
    test(`splits ${command}`, () => assert.deepEqual(splitCommand(command), words));
  }

  test('problems rejected', () => {
    assert.throws(() => splitCommand(`app 'open`), (err: unknown) => err instanceof WalshipError && /unterminated ' quote/.test(err.message));
    assert.throws(() => splitCommand('   '), /needs a command/);
  });
});

describe('exitStatus', () => {
  test('code and signal', () => {
    assert.equal(exitStatus(0, null), 0);
    assert.equal(exitStatus(3, null), 3);
    assert.equal(exitStatus(null, 'SIGTERM'), 143);
    assert.equal(exitStatus(null, 'SIGKILL'), 137);
  });
});

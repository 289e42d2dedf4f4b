import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import { formatDuration, parseDuration } from '../src/duration.js';

describe('parseDuration', () => {
  const valid: [string, number][] = [
    ['0', 0],
    ['0s', 0],
    ['1s', 1000],
    ['500ms', 500],
    ['24h', 86_400_000],
    ['168h', 604_800_000],
    ['1h30m', 5_400_000],
    ['1m30.5s', 90_500],
    ['1.1s', 1100],
    ['.5s', 500],
    ['5.s', 5000],
    ['250us', 0.25],
    ['250µs', 0.25],
    ['1000000ns', 1],
    ['-1s', -1000],
    ['+2m', 120_000],
    [' 1s ', 1000],
  ];
  for (const [text, ms] of valid) {
    test(`valid ${JSON.stringify(text)}`, () => {
      assert.equal(parseDuration(text), ms);
    });
  }

  const invalid = ['', '1', '10', 's', '1x', '1 s', '1s2', 'one', '1.2.3s', '-', '1d', '1S'];
  for (const text of invalid) {
    test(`invalid ${JSON.stringify(text)}`, () => {
      assert.equal(parseDuration(text), undefined);
    });
  }
});

describe('formatDuration', () => {
  test('round trips', () => {
    for (const text of ['1s', '500ms', '24h', '1h30m', '1m30s', '0s']) {
      assert.equal(formatDuration(parseDuration(text)!), text);
    }
  });
});

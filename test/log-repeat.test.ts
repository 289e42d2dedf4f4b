import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import { RepeatLimiter } from '../src/log-repeat.js';
import { createLogger } from '../src/logger.js';

/** Creates a logger whose lines pass through a RepeatLimiter into an array. */
function limited(format: 'json' | 'text', windowMs: number): { lines: string[]; limiter: RepeatLimiter; log: ReturnType<typeof createLogger> } {
  const lines: string[] = [];
  const limiter = new RepeatLimiter({ out: { write: (line: string) => lines.push(line) }, format, windowMs });
  return { lines, limiter, log: createLogger({ format: 'json', destination: limiter }) };
}

describe('RepeatLimiter', () => {
  test('repeats counted once', () => {
    const { lines, limiter, log } = limited('json', 60_000);
    for (let attempt = 1; attempt <= 13; attempt++) log.error({ db: 'users', err: 'connect ECONNREFUSED', attempt }, 'replica sync failed, retrying');
    log.error({ db: 'orders', err: 'connect ECONNREFUSED' }, 'replica sync failed, retrying');
    log.info({ db: 'users' }, 'checkpoint');
    log.info({ db: 'users' }, 'checkpoint');
    assert.equal(lines.length, 4);

    limiter.flush();
    const last = JSON.parse(lines.at(-1)!) as Record<string, unknown>;
    assert.equal(last.db, 'users');
    assert.equal(last.attempt, 13);
    assert.equal(last.repeated, 12);
  });

  test('new window shows the count', async () => {
    const { lines, log } = limited('text', 50);
    log.warn({ db: 'a' }, 'database unavailable, retrying');
    log.warn({ db: 'a' }, 'database unavailable, retrying');
    log.warn({ db: 'a' }, 'database unavailable, retrying');
    await new Promise((resolve) => setTimeout(resolve, 80));
    log.warn({ db: 'a' }, 'database unavailable, retrying');

    assert.equal(lines.length, 3);
    assert.match(lines[0]!, / WARN database unavailable, retrying db=a\n$/);
    assert.match(lines[1]!, /db=a repeated=2\n$/);
    assert.doesNotMatch(lines[2]!, /repeated/);
  });
});

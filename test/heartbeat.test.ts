import assert from 'node:assert/strict';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { describe, test } from 'node:test';

import { Heartbeat } from '../src/heartbeat.js';
import { silentLogger } from '../src/logger.js';

describe('Heartbeat', () => {
  test('sent when healthy, once per interval', async () => {
    let status = 200;
    const requests: string[] = [];
    const server = http.createServer((req, res) => {
      requests.push(`${req.method} ${req.url}`);
      res.statusCode = status;
      res.end();
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/beat`;

    let healthy = false;
    const heartbeat = new Heartbeat({ url, intervalMs: 200, healthy: () => healthy, logger: silentLogger() });
    try {
      await heartbeat.check();
      assert.equal(requests.length, 0, 'no request before every database synced');

      healthy = true;
      await heartbeat.check();
      await heartbeat.check();
      assert.deepEqual(requests, ['GET /beat'], 'one request per interval');

      await new Promise((resolve) => setTimeout(resolve, 250));
      await heartbeat.check();
      assert.equal(requests.length, 2);
      assert.equal(heartbeat.sent, 2);

      // A failed request does not count, so the next check tries again.
      status = 500;
      await new Promise((resolve) => setTimeout(resolve, 250));
      await heartbeat.check();
      await heartbeat.check();
      assert.equal(requests.length, 4);
      assert.equal(heartbeat.sent, 2);
    } finally {
      heartbeat.stop();
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    }
  });
});

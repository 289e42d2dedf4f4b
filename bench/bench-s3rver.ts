import { startS3Server } from '../test/support/s3-server.js';

/**
 * Child process of the benchmark that serves s3rver on 127.0.0.1. It runs
 * apart from the benchmark's own process so that the store's CPU time does
 * not slow the process that reads walship's log lines and paces the run.
 *
 * It prints one JSON line `{"endpoint": ..., "bucket": ...}` on stdout once
 * the server listens, and stops the server and deletes its directory on
 * SIGTERM, on SIGINT, or when the benchmark's IPC channel closes.
 */

const server = await startS3Server();
process.stdout.write(`${JSON.stringify({ endpoint: server.endpoint, bucket: server.bucket, directory: server.directory })}\n`);

let closing = false;
const shutdown = (): void => {
  if (closing) return;
  closing = true;
  server.close().then(
    () => process.exit(0),
    (err: unknown) => {
      process.stderr.write(`s3rver did not close cleanly: ${(err as Error).message}\n`);
      process.exit(1);
    },
  );
};
process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);
process.on('disconnect', shutdown);

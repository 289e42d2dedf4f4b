import type { Readable } from 'node:stream';

import type { ReplicaClient, VersionedObject, WriteCondition } from './client.js';

/** Client operations, named after ReplicaClient's methods. They run on the main thread; segment and snapshot uploads run in ship workers. */
export const CLIENT_OPERATIONS = [
  'get',
  'get_stream',
  'list',
  'put',
  'delete',
  'get_versioned',
  'put_conditional',
  'delete_conditional',
  'list_multipart_uploads',
  'abort_multipart_uploads',
] as const;

/** One of CLIENT_OPERATIONS. */
export type ClientOperation = (typeof CLIENT_OPERATIONS)[number];

/** One finished client operation, as `instrumentClient` reports it. */
export interface ClientOperationReport {
  operation: ClientOperation;
  /**
   * Body bytes sent (`put` of a Buffer, `put_conditional`) or received (`get`,
   * `get_versioned`). 0 for the other operations, and for `get_stream` and a
   * `put` of a stream, whose length is not known when the operation settles.
   */
  bytes: number;
  /** False when the operation rejected. */
  ok: boolean;
  /** Milliseconds from the call until the operation settled. */
  elapsedMs: number;
}

/**
 * Wraps a replica client so that every operation is reported to
 * `onOperation` once it settles. Results and errors pass through unchanged.
 * A `list` counts as one operation, however many pages the store returned.
 */
export function instrumentClient(client: ReplicaClient, onOperation: (report: ClientOperationReport) => void): ReplicaClient {
  // Runs one operation and reports it, also when it rejects.
  async function observe<T>(operation: ClientOperation, run: () => Promise<T>, bytesOf: (result: T) => number): Promise<T> {
    const started = performance.now();
    try {
      const result = await run();
      onOperation({ operation, bytes: bytesOf(result), ok: true, elapsedMs: performance.now() - started });
      return result;
    } catch (err) {
      onOperation({ operation, bytes: 0, ok: false, elapsedMs: performance.now() - started });
      throw err;
    }
  }

  return {
    type: client.type,
    location: client.location,
    put: (key: string, body: Buffer | Readable) => observe('put', () => client.put(key, body), () => (Buffer.isBuffer(body) ? body.length : 0)),
    get: (key: string) => observe('get', () => client.get(key), (data: Buffer) => data.length),
    getStream: (key: string) => observe('get_stream', () => client.getStream(key), () => 0),
    list: (prefix: string, options?: { delimiter?: boolean }) => observe('list', () => client.list(prefix, options), () => 0),
    delete: (keys: string[]) => observe('delete', () => client.delete(keys), () => 0),
    getVersioned: (key: string) => observe('get_versioned', () => client.getVersioned(key), (found: VersionedObject | undefined) => found?.body.length ?? 0),
    putConditional: (key: string, body: Buffer, condition: WriteCondition) =>
      observe('put_conditional', () => client.putConditional(key, body, condition), () => body.length),
    deleteConditional: (key: string, etag: string) => observe('delete_conditional', () => client.deleteConditional(key, etag), () => 0),
    listMultipartUploads: (prefix: string) => observe('list_multipart_uploads', () => client.listMultipartUploads(prefix), () => 0),
    abortMultipartUploads: (prefix: string) => observe('abort_multipart_uploads', () => client.abortMultipartUploads(prefix), () => 0),
    close: () => client.close(),
  };
}

import http from 'node:http';
import type { AddressInfo } from 'node:net';

/**
 * An HTTP proxy on 127.0.0.1 in front of a test S3 server that injects
 * faults into chosen requests and plays quirks of S3-compatible stores. Each
 * request is classified as an S3 operation and recorded, with the fault or
 * quirk it received, so that tests can assert on what the client sent.
 */

/** S3 operations that the proxy distinguishes by the method, the path and the query of a path-style request. */
export type S3Operation =
  | 'PutObject'
  | 'UploadPart'
  | 'CreateMultipartUpload'
  | 'CompleteMultipartUpload'
  | 'AbortMultipartUpload'
  | 'ListMultipartUploads'
  | 'GetObject'
  | 'HeadObject'
  | 'ListObjectsV2'
  | 'ListObjects'
  | 'DeleteObject'
  | 'DeleteObjects'
  | 'HeadBucket'
  | 'CreateBucket'
  | 'Other';

/**
 * Faults the proxy injects:
 * - `internal-error`: 500 InternalError.
 * - `slow-down`: 503 SlowDown, S3's throttling response.
 * - `access-denied`: 403 AccessDenied.
 * - `no-such-bucket`: 404 NoSuchBucket.
 * - `timeout`: reads the request, sends nothing for `holdMs` and then closes the connection.
 * - `reset-request`: resets the connection after the first chunk of the request body, before forwarding.
 * - `reset-response`: forwards the request, sends the response headers and half of the body, then resets the connection.
 * - `truncate`: like `reset-response`, but ends the connection cleanly, short of the Content-Length.
 * - `delay`: waits `delayMs`, then forwards the request.
 */
export type FaultKind =
  | 'internal-error'
  | 'slow-down'
  | 'access-denied'
  | 'no-such-bucket'
  | 'timeout'
  | 'reset-request'
  | 'reset-response'
  | 'truncate'
  | 'delay';

/** Which requests a rule applies to, and when it fires. Unset match fields match every request. */
export interface FaultRule {
  fault: FaultKind;
  operation?: S3Operation | S3Operation[];
  /** HTTP method, upper case. */
  method?: string;
  /** Pattern or predicate tested against the decoded object key (without the bucket). */
  key?: RegExp | ((key: string) => boolean);
  /** Chance of firing on each matching request, drawn from the proxy's seeded generator. */
  probability?: number;
  /** 1-based numbers of the matching requests on which the rule fires. */
  nth?: number[];
  /** Maximum number of injections; the rule stays installed but inert afterwards. */
  limit?: number;
  /** Milliseconds of `delay`. Defaults to 200. */
  delayMs?: number;
  /** Milliseconds that `timeout` keeps a request unanswered before it closes the connection. Defaults to 2000. */
  holdMs?: number;
}

/** Behaviours of real S3-compatible stores that differ from AWS S3. */
export interface StoreQuirks {
  /** DeleteObjects gets 501 NotImplemented. */
  deleteObjectsNotImplemented?: boolean;
  /** DeleteObjects without a Content-MD5 header gets 400 InvalidRequest. */
  contentMd5Required?: boolean;
  /** Uploads in aws-chunked encoding or with trailing checksums get 400 InvalidArgument. */
  rejectAwsChunked?: boolean;
  /** ListObjectsV2 pages hold at most this many keys, whatever max-keys the client sent. */
  maxKeys?: number;
}

/** One request that reached the proxy. */
export interface RequestRecord {
  method: string;
  /** Request path and query, as received. */
  url: string;
  bucket: string;
  /** Decoded object key; '' for a bucket request. */
  key: string;
  operation: S3Operation;
  fault?: FaultKind;
  /** Name of the quirk that responded to the request in place of the store, or rewrote it. */
  quirk?: keyof StoreQuirks;
  /** Status sent to the client; undefined when the connection was reset or held before a response. */
  status?: number;
}

/** Options of a fault proxy. */
export interface FaultProxyOptions {
  /** Seed of the generator behind `probability`; random when unset. Printed by `describe()`. */
  seed?: number;
  quirks?: StoreQuirks;
}

/** A running fault proxy. */
export class FaultProxy {
  /** Seed of the generator; a failing test prints it so that a run can be repeated. */
  readonly seed: number;
  /** Every request received, in arrival order. */
  readonly log: RequestRecord[] = [];
  quirks: StoreQuirks;
  #rules: Array<{ rule: FaultRule; matched: number; injected: number }> = [];
  #random: () => number;
  #server: http.Server;
  #upstream: URL;
  #agent = new http.Agent({ keepAlive: true });
  #timers = new Set<NodeJS.Timeout>();
  #port = 0;

  private constructor(upstream: string, options: FaultProxyOptions) {
    this.#upstream = new URL(upstream);
    this.seed = options.seed ?? Math.floor(Math.random() * 2 ** 31);
    this.#random = mulberry32(this.seed);
    this.quirks = { ...options.quirks };
    this.#server = http.createServer((req, res) => {
      this.#handle(req, res).catch((err: unknown) => {
        // A handler failure is a bug of the proxy: make it visible to the client as a reset.
        console.error('fault proxy:', err);
        req.socket.destroy();
      });
    });
  }

  /** Starts a proxy on a free port of 127.0.0.1 in front of `upstream` (`http://127.0.0.1:<port>`). */
  static async start(upstream: string, options: FaultProxyOptions = {}): Promise<FaultProxy> {
    const proxy = new FaultProxy(upstream, options);
    // Injected resets make client sockets fail; that is the point, not a proxy error.
    proxy.#server.on('connection', (socket) => socket.on('error', () => undefined));
    await new Promise<void>((resolve, reject) => {
      proxy.#server.once('error', reject);
      proxy.#server.listen(0, '127.0.0.1', () => resolve());
    });
    proxy.#port = (proxy.#server.address() as AddressInfo).port;
    return proxy;
  }

  /** Base URL of the proxy, `http://127.0.0.1:<port>`. */
  get endpoint(): string {
    return `http://127.0.0.1:${this.#port}`;
  }

  /** Installs a rule after the existing ones and returns a function that removes it. The first rule that fires wins. */
  addRule(rule: FaultRule): () => void {
    const entry = { rule, matched: 0, injected: 0 };
    this.#rules.push(entry);
    return () => {
      this.#rules = this.#rules.filter((e) => e !== entry);
    };
  }

  /** Removes every rule. Quirks stay. */
  clearRules(): void {
    this.#rules = [];
  }

  /** Returns the records of requests that received a fault, optionally of one kind. */
  faults(kind?: FaultKind): RequestRecord[] {
    return this.log.filter((r) => r.fault !== undefined && (kind === undefined || r.fault === kind));
  }

  /** Counts the injected faults by kind, for a test's closing summary. */
  faultCounts(): Record<string, number> {
    const counts: Record<string, number> = {};
    for (const record of this.log) if (record.fault) counts[record.fault] = (counts[record.fault] ?? 0) + 1;
    return counts;
  }

  /** Describes the proxy's seed and injected faults, for assertion messages. */
  describe(): string {
    return `fault proxy seed ${this.seed} (replay with FAULT_SEED=${this.seed}), faults ${JSON.stringify(this.faultCounts())}, ${this.log.length} requests`;
  }

  /** Stops the proxy, ends held requests and closes every connection. */
  async close(): Promise<void> {
    for (const timer of this.#timers) clearTimeout(timer);
    this.#timers.clear();
    const closing = new Promise<void>((resolve) => this.#server.close(() => resolve()));
    this.#server.closeAllConnections();
    this.#agent.destroy();
    await closing;
  }

  async #handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://proxy');
    const { bucket, key } = splitPath(url.pathname);
    const operation = classify(req.method ?? 'GET', key, url.searchParams);
    const record: RequestRecord = { method: req.method ?? 'GET', url: req.url ?? '/', bucket, key, operation };
    this.log.push(record);

    const rule = this.#pickRule(record);
    if (rule !== undefined) {
      record.fault = rule.fault;
      await this.#inject(rule, req, res, record, url);
      return;
    }

    const quirk = this.#quirk(req, record);
    if (quirk !== undefined) {
      record.quirk = quirk.name;
      await drain(req);
      this.#sendError(res, record, quirk.status, quirk.code, quirk.message);
      return;
    }
    await this.#forward(req, res, record, url);
  }

  #pickRule(record: RequestRecord): FaultRule | undefined {
    for (const entry of this.#rules) {
      const { rule } = entry;
      if (!matches(rule, record)) continue;
      entry.matched++;
      if (rule.limit !== undefined && entry.injected >= rule.limit) continue;

      let fires: boolean;
      if (rule.nth !== undefined) fires = rule.nth.includes(entry.matched);
      else if (rule.probability !== undefined) fires = this.#random() < rule.probability;
      else fires = true;
      if (!fires) continue;

      entry.injected++;
      return rule;
    }
    return undefined;
  }

  async #inject(rule: FaultRule, req: http.IncomingMessage, res: http.ServerResponse, record: RequestRecord, url: URL): Promise<void> {
    switch (rule.fault) {
      case 'internal-error':
        await drain(req);
        return this.#sendError(res, record, 500, 'InternalError', 'We encountered an internal error. Please try again.');
      case 'slow-down':
        await drain(req);
        return this.#sendError(res, record, 503, 'SlowDown', 'Please reduce your request rate.');
      case 'access-denied':
        await drain(req);
        return this.#sendError(res, record, 403, 'AccessDenied', 'Access Denied');
      case 'no-such-bucket':
        await drain(req);
        return this.#sendError(res, record, 404, 'NoSuchBucket', 'The specified bucket does not exist');
      case 'timeout':
        await drain(req);
        await this.#sleep(rule.holdMs ?? 2000);
        req.socket.destroy();
        return;
      case 'reset-request':
        await firstChunk(req);
        req.socket.destroy();
        return;
      case 'delay':
        await this.#sleep(rule.delayMs ?? 200);
        return this.#forward(req, res, record, url);
      case 'reset-response':
      case 'truncate':
        return this.#forward(req, res, record, url, rule.fault);
    }
  }

  /** Returns the store quirk that rejects this request, if any. */
  #quirk(req: http.IncomingMessage, record: RequestRecord): { name: keyof StoreQuirks; status: number; code: string; message: string } | undefined {
    const quirks = this.quirks;
    if (quirks.deleteObjectsNotImplemented && record.operation === 'DeleteObjects') {
      return { name: 'deleteObjectsNotImplemented', status: 501, code: 'NotImplemented', message: 'DeleteObjects is not implemented' };
    }
    if (quirks.contentMd5Required && record.operation === 'DeleteObjects' && req.headers['content-md5'] === undefined) {
      return { name: 'contentMd5Required', status: 400, code: 'InvalidRequest', message: 'Missing required header for this request: Content-MD5' };
    }
    if (quirks.rejectAwsChunked && isAwsChunked(req)) {
      return { name: 'rejectAwsChunked', status: 400, code: 'InvalidArgument', message: 'aws-chunked encoding and trailing checksums are not supported' };
    }
    return undefined;
  }

  /**
   * Forwards a request to the store. With `cut`, the response stops after
   * half of its body: a reset or a clean end short of its Content-Length.
   */
  async #forward(req: http.IncomingMessage, res: http.ServerResponse, record: RequestRecord, url: URL, cut?: 'reset-response' | 'truncate'): Promise<void> {
    const headers = { ...req.headers };
    let target = `${url.pathname}${url.search}`;

    // Rewriting max-keys changes the signed query, so the rewritten request
    // goes to s3rver unsigned, which s3rver 3.7.1 accepts.
    const maxKeys = this.quirks.maxKeys;
    if (maxKeys !== undefined && record.operation === 'ListObjectsV2') {
      const params = new URLSearchParams(url.searchParams);
      const requested = Number(params.get('max-keys') ?? 1000);
      params.set('max-keys', String(Math.min(requested, maxKeys)));
      target = `${url.pathname}?${params.toString()}`;
      delete headers['authorization'];
      record.quirk = 'maxKeys';
    }

    const upstream = http.request({
      host: this.#upstream.hostname,
      port: Number(this.#upstream.port),
      method: req.method,
      path: target,
      headers,
      agent: this.#agent,
    });
    const response = new Promise<http.IncomingMessage>((resolve, reject) => {
      upstream.once('response', resolve);
      upstream.once('error', reject);
    });
    req.pipe(upstream);

    let upstreamResponse: http.IncomingMessage;
    try {
      upstreamResponse = await response;
    } catch {
      // The client went away mid-request, or the store is down: pass the reset on.
      req.socket.destroy();
      return;
    }
    record.status = upstreamResponse.statusCode ?? 502;

    if (cut === undefined) {
      res.writeHead(record.status, upstreamResponse.headers);
      upstreamResponse.pipe(res);
      await new Promise<void>((resolve) => res.once('close', () => resolve()));
      return;
    }

    const body = await readAll(upstreamResponse);
    res.writeHead(record.status, { ...upstreamResponse.headers, 'content-length': String(body.length) });
    res.flushHeaders();
    const half = body.subarray(0, Math.floor(body.length / 2));
    if (half.length > 0) await new Promise<void>((resolve) => res.write(half, () => resolve()));
    if (cut === 'reset-response') req.socket.resetAndDestroy();
    else req.socket.end();
  }

  #sendError(res: http.ServerResponse, record: RequestRecord, status: number, code: string, message: string): void {
    record.status = status;
    const body =
      '<?xml version="1.0" encoding="UTF-8"?>\n' +
      `<Error><Code>${code}</Code><Message>${message}</Message>` +
      `<Resource>/${record.bucket}/${record.key}</Resource><RequestId>fault-proxy</RequestId></Error>`;
    // A HEAD response has no body, so the SDK reads the status only.
    res.writeHead(status, { 'content-type': 'application/xml', 'content-length': Buffer.byteLength(body) });
    res.end(record.method === 'HEAD' ? undefined : body);
  }

  #sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.#timers.delete(timer);
        resolve();
      }, ms);
      this.#timers.add(timer);
    });
  }
}

/** Splits a path-style request path into the bucket and the decoded key. */
function splitPath(pathname: string): { bucket: string; key: string } {
  const [bucket = '', ...rest] = pathname.slice(1).split('/');
  return { bucket: decodeURIComponent(bucket), key: rest.map(decodeURIComponent).join('/') };
}

/** Classifies a path-style S3 request by method, key and query. */
export function classify(method: string, key: string, query: URLSearchParams): S3Operation {
  const upper = method.toUpperCase();
  if (key === '') {
    if (upper === 'GET' && query.has('uploads')) return 'ListMultipartUploads';
    if (upper === 'GET' && query.get('list-type') === '2') return 'ListObjectsV2';
    if (upper === 'GET') return 'ListObjects';
    if (upper === 'POST' && query.has('delete')) return 'DeleteObjects';
    if (upper === 'HEAD') return 'HeadBucket';
    if (upper === 'PUT') return 'CreateBucket';
    return 'Other';
  }
  switch (upper) {
    case 'PUT':
      return query.has('uploadId') && query.has('partNumber') ? 'UploadPart' : 'PutObject';
    case 'POST':
      if (query.has('uploads')) return 'CreateMultipartUpload';
      if (query.has('uploadId')) return 'CompleteMultipartUpload';
      return 'Other';
    case 'DELETE':
      return query.has('uploadId') ? 'AbortMultipartUpload' : 'DeleteObject';
    case 'GET':
      return 'GetObject';
    case 'HEAD':
      return 'HeadObject';
    default:
      return 'Other';
  }
}

function matches(rule: FaultRule, record: RequestRecord): boolean {
  if (rule.method !== undefined && rule.method !== record.method) return false;
  if (rule.key instanceof RegExp && !rule.key.test(record.key)) return false;
  if (typeof rule.key === 'function' && !rule.key(record.key)) return false;
  if (rule.operation === undefined) return true;
  const operations = Array.isArray(rule.operation) ? rule.operation : [rule.operation];
  return operations.includes(record.operation);
}

/** Reports whether a request body uses aws-chunked encoding or announces trailing checksums. */
function isAwsChunked(req: http.IncomingMessage): boolean {
  const encoding = String(req.headers['content-encoding'] ?? '');
  const sha = String(req.headers['x-amz-content-sha256'] ?? '');
  return encoding.includes('aws-chunked') || sha.startsWith('STREAMING-') || req.headers['x-amz-trailer'] !== undefined;
}

/** Reads and discards a request body, so that an error response does not race the client's upload. */
function drain(req: http.IncomingMessage): Promise<void> {
  return new Promise((resolve) => {
    if (req.complete) return resolve();
    req.on('end', resolve);
    req.on('error', () => resolve());
    req.on('close', () => resolve());
    req.resume();
  });
}

/** Waits for the first chunk of a request body, or its end when it has none. */
function firstChunk(req: http.IncomingMessage): Promise<void> {
  return new Promise((resolve) => {
    if (req.complete) return resolve();
    req.once('data', () => resolve());
    req.once('end', resolve);
    req.once('close', () => resolve());
  });
}

function readAll(stream: http.IncomingMessage): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    stream.on('data', (chunk: Buffer) => chunks.push(chunk));
    stream.on('end', () => resolve(Buffer.concat(chunks)));
    stream.on('error', reject);
  });
}

/** A small seeded generator (mulberry32) of numbers in [0, 1). */
export function mulberry32(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 2 ** 32;
  };
}

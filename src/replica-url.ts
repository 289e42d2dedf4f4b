import path from 'node:path';

import { WalshipError } from './errors.js';
import { validatePrefix } from './naming.js';
import type { FileClientConfig, ReplicaClientConfig, S3ClientConfig } from './replica/client.js';

/**
 * Replica URLs, as Litestream v0.3 accepts them on the command line and in
 * `url:` config keys:
 *
 *   s3://BUCKET[/PREFIX][?endpoint=URL&region=R&forcePathStyle=true&skipVerify=true]
 *   file:///ABSOLUTE/DIR, or a plain path (a relative path is resolved against the working directory)
 *
 * The URL path is used as the prefix exactly (no `databases/<name>`), so
 * `s3://bucket` is the bucket root, as in Litestream.
 */

/** URL schemes walship writes to. */
export const SUPPORTED_SCHEMES: readonly string[] = ['s3', 'file'];

// Query parameters of s3:// URLs, each with its kebab-case spelling.
const S3_PARAMS: Readonly<Record<string, 'endpoint' | 'region' | 'forcePathStyle' | 'skipVerify'>> = {
  endpoint: 'endpoint',
  region: 'region',
  forcePathStyle: 'forcePathStyle',
  'force-path-style': 'forcePathStyle',
  skipVerify: 'skipVerify',
  'skip-verify': 'skipVerify',
};

/** An S3-compatible provider recognized by its host name. */
interface S3Provider {
  /** Matches a lowercase host: group 1 is the bucket, group 2 the endpoint host, group 3 the region if any. */
  re: RegExp;
  endpoint: (match: RegExpExecArray) => string;
  region: (match: RegExpExecArray) => string | undefined;
}

// Host patterns of the providers Litestream v0.3.11 detects in s3:// URLs.
const S3_PROVIDERS: readonly S3Provider[] = [
  { re: /^(?:(.+)\.)?(localhost(?::\d+)?)$/, endpoint: (match) => `http://${match[2]}`, region: () => 'us-east-1' },
  { re: /^(?:(.+)\.)?(s3\.([^.]+)\.backblazeb2\.com)$/, endpoint: (match) => `https://${match[2]}`, region: (match) => match[3] },
  { re: /^(?:(.+)\.)?(s3\.filebase\.com)$/, endpoint: (match) => `https://${match[2]}`, region: () => undefined },
  { re: /^(?:(.+)\.)?(([^.]+)\.digitaloceanspaces\.com)$/, endpoint: (match) => `https://${match[2]}`, region: (match) => match[3] },
  { re: /^(?:(.+)\.)?(([^.]+)\.linodeobjects\.com)$/, endpoint: (match) => `https://${match[2]}`, region: (match) => match[3] },
  { re: /^(?:(.+)\.)?(s3\.([^.]+)\.scw\.cloud)$/, endpoint: (match) => `https://${match[2]}`, region: (match) => match[3] },
];

/**
 * Parses a replica URL or path into a client config without credentials.
 * Throws WalshipError INVALID_INPUT naming the URL for an unsupported
 * scheme, a missing bucket, an unsafe prefix or an unknown query parameter.
 */
export function parseReplicaUrl(url: string): ReplicaClientConfig {
  const scheme = urlScheme(url);
  if (scheme === undefined) return fileConfig(url, url);

  if (scheme === 'file') return parseFileUrl(url);
  if (scheme === 's3') return parseS3Url(url);
  throw new WalshipError(
    'INVALID_INPUT',
    `replica URL ${redactUrl(url)} uses scheme "${scheme}", which walship does not support; ` +
      'use s3://BUCKET/PATH (AWS S3 or an S3-compatible store) or file:///DIR',
  );
}

/** Returns the lowercase scheme of a URL, or undefined for a plain path. */
export function urlScheme(value: string): string | undefined {
  const match = /^([a-z][a-z0-9+.-]*):\/\//i.exec(value);
  return match ? match[1]!.toLowerCase() : undefined;
}

/** Returns a URL with any password replaced by `***`, for error messages. */
export function redactUrl(url: string): string {
  return url.replace(/^([a-z][a-z0-9+.-]*:\/\/[^/@:]*):[^/@]*@/i, '$1:***@');
}

/** Builds a file replica from `file:///dir`; a host part joins the path, so `file://a/b` is `/a/b`. */
function parseFileUrl(url: string): FileClientConfig {
  // The URL is split by hand because WHATWG URL parsing removes `..` segments,
  // which must be seen to be rejected.
  const rest = url.slice('file://'.length);
  if (/[?#]/.test(rest)) {
    throw new WalshipError('INVALID_INPUT', `file replica URL ${url} has query parameters or a fragment; file replicas take none`);
  }
  const dir = decodeUrlPart(rest, url);
  return fileConfig(dir.startsWith('/') ? dir : `/${dir}`, url);
}

/**
 * Checks a file replica directory and returns its config with an absolute
 * root. A relative directory is resolved against the working directory.
 */
function fileConfig(dir: string, displayUrl: string): FileClientConfig {
  const trimmed = dir.replace(/\/+$/, '');
  if (trimmed === '') {
    throw new WalshipError('INVALID_INPUT', `file replica ${displayUrl} is the file system root; give a directory of its own`);
  }

  const relative = trimmed.startsWith('/') ? trimmed.slice(1) : trimmed.replace(/^\.\//, '');
  try {
    validatePrefix(relative);
  } catch (err) {
    throw new WalshipError(
      'INVALID_INPUT',
      `file replica directory ${JSON.stringify(displayUrl)} contains an empty, "." or ".." segment; write the directory without them`,
      { cause: err },
    );
  }
  return { type: 'file', root: path.resolve(trimmed) };
}

/** Builds an S3 replica from an `s3://` URL. */
function parseS3Url(url: string): S3ClientConfig {
  const displayUrl = redactUrl(url);

  // Split by hand: WHATWG URL parsing would drop `..` segments before they can be rejected.
  const match = /^s3:\/\/([^/?#]*)([^?#]*)(?:\?([^#]*))?(#.*)?$/i.exec(url);
  if (match === null || match[4] !== undefined) {
    throw new WalshipError('INVALID_INPUT', `replica URL ${displayUrl} is not valid; write it as s3://BUCKET/PATH?endpoint=URL`);
  }
  const [, host = '', rawPath = '', query = ''] = match;

  if (host.includes('@')) {
    throw new WalshipError(
      'INVALID_INPUT',
      `replica URL ${displayUrl} contains credentials; remove them from the URL and set access-key-id and ` +
        'secret-access-key in the config file or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY',
    );
  }
  const config: S3ClientConfig = { type: 's3', ...bucketFromHost(host, displayUrl), prefix: '' };

  // Litestream strips the leading "/" of the URL path; a trailing one adds nothing.
  const prefix = decodeUrlPart(rawPath, displayUrl).replace(/^\//, '').replace(/\/+$/, '');
  validatePrefix(prefix, `path of replica URL ${displayUrl}`);
  config.prefix = prefix;

  applyS3Params(config, new URLSearchParams(query), displayUrl);
  return config;
}

/** Decodes percent escapes of a URL part. */
function decodeUrlPart(part: string, displayUrl: string): string {
  try {
    return decodeURIComponent(part);
  } catch (err) {
    throw new WalshipError('INVALID_INPUT', `replica URL ${displayUrl} has an invalid percent escape`, { cause: err });
  }
}

/**
 * Splits an s3:// host into bucket and endpoint. Hosts of S3-compatible
 * providers that Litestream v0.3.11 recognizes carry the bucket as their
 * first label (`mybucket.localhost:9000`, `mybucket.s3.us-west-002.backblazeb2.com`);
 * any other host is the bucket name itself.
 */
function bucketFromHost(host: string, displayUrl: string): Pick<S3ClientConfig, 'bucket' | 'endpoint' | 'region' | 'forcePathStyle'> {
  for (const provider of S3_PROVIDERS) {
    const match = provider.re.exec(host.toLowerCase());
    if (match === null) continue;

    // The bucket keeps its spelling from the URL; only the provider part was lowercased to match.
    const bucket = match[1] === undefined ? '' : host.slice(0, match[1].length);
    requireBucket(bucket, displayUrl);
    const region = provider.region(match);
    return { bucket, endpoint: provider.endpoint(match), forcePathStyle: true, ...(region ? { region } : {}) };
  }

  requireBucket(host, displayUrl);
  if (host.includes(':')) {
    throw new WalshipError(
      'INVALID_INPUT',
      `replica URL ${displayUrl} has a port in the bucket name; pass the store's address as ?endpoint=http://HOST:PORT`,
    );
  }
  return { bucket: host };
}

/** Throws when the bucket part of an s3:// URL is empty. */
function requireBucket(bucket: string, displayUrl: string): void {
  if (bucket === '') {
    throw new WalshipError('INVALID_INPUT', `replica URL ${displayUrl} has no bucket; write it as s3://BUCKET/PATH`);
  }
}

/** Applies the query parameters of an s3:// URL to its config. */
function applyS3Params(config: S3ClientConfig, params: URLSearchParams, displayUrl: string): void {
  for (const [key, value] of params) {
    const field = S3_PARAMS[key];
    if (field === undefined) {
      throw new WalshipError(
        'INVALID_INPUT',
        `replica URL ${displayUrl} has the unknown parameter "${key}"; known parameters: endpoint, region, forcePathStyle, skipVerify`,
      );
    }

    if (field === 'endpoint') config.endpoint = normalizeEndpoint(value, displayUrl);
    else if (field === 'region') config.region = value;
    else config[field] = parseUrlBoolean(value, key, displayUrl);
  }

  // An endpoint means an S3-compatible store, and most of them serve only path-style URLs.
  if (params.has('endpoint') && config.forcePathStyle === undefined) config.forcePathStyle = true;
}

/** Adds a scheme to an endpoint given as `host:port`: http for local hosts, https otherwise. */
export function normalizeEndpoint(endpoint: string, displayUrl: string): string {
  if (endpoint === '') {
    throw new WalshipError('INVALID_INPUT', `replica ${displayUrl} has an empty endpoint; give a URL such as http://127.0.0.1:9000`);
  }

  let withScheme = endpoint;
  if (!/^https?:\/\//i.test(endpoint)) {
    const host = endpoint.split('/')[0]!.replace(/:\d+$/, '').replace(/^\[|\]$/g, '');
    withScheme = `${isLocalHost(host) ? 'http' : 'https'}://${endpoint}`;
  }

  try {
    new URL(withScheme);
  } catch (err) {
    throw new WalshipError('INVALID_INPUT', `endpoint ${JSON.stringify(endpoint)} of replica ${displayUrl} is not a valid URL`, { cause: err });
  }
  return withScheme.replace(/\/+$/, '');
}

/** Reports whether a host is a loopback, private or `.local` address, reached over plain http by default. */
function isLocalHost(host: string): boolean {
  return (
    host === 'localhost' ||
    host.endsWith('.local') ||
    host === '::1' ||
    /^127\./.test(host) ||
    /^10\./.test(host) ||
    /^192\.168\./.test(host) ||
    /^172\.(1[6-9]|2\d|3[01])\./.test(host)
  );
}

/** Parses `true`/`false` (also 1/0, yes/no) from a URL parameter. */
function parseUrlBoolean(value: string, key: string, displayUrl: string): boolean {
  const lower = value.toLowerCase();
  if (['true', '1', 'yes', 'on', ''].includes(lower)) return true;
  if (['false', '0', 'no', 'off'].includes(lower)) return false;
  throw new WalshipError('INVALID_INPUT', `parameter ${key}=${value} of replica URL ${displayUrl} is not a boolean; use true or false`);
}

/**
 * Error codes that callers branch on. Every other failure is a plain Error
 * with a message naming the database, the object key or the position.
 */
export type WalshipErrorCode =
  /** A replica contains no generation, so there is nothing to restore. */
  | 'NO_GENERATION'
  /** A frame, LZ4 block or object failed its checksum. */
  | 'CHECKSUM_MISMATCH'
  /** The WAL or the replica does not continue the last known position. */
  | 'WAL_TRUNCATED'
  /** An object, file or database does not exist. */
  | 'NOT_FOUND'
  /** A flag, config value or path given by the user is invalid. */
  | 'INVALID_INPUT'
  /** A replica's objects are missing or out of order. */
  | 'CORRUPT_REPLICA'
  /** A conditional write or delete found the object changed, present or missing against its condition. */
  | 'PRECONDITION_FAILED'
  /** The store rejected the If-Match or If-None-Match header of a conditional write as not implemented. */
  | 'CONDITIONAL_WRITES_UNSUPPORTED'
  /** Another walship process on this host holds the database's lock file. */
  | 'LOCKED'
  /** Another owner holds an unexpired lease on the replica prefix. */
  | 'LEASE_HELD'
  /** A held lease was taken over, deleted or could not be renewed before it expired. */
  | 'LEASE_LOST'
  /** walship's local state (the meta directory) could not be written. */
  | 'IO_ERROR';

/** An error with a stable code; the message names the value or object involved. */
export class WalshipError extends Error {
  override name = 'WalshipError';
  readonly code: WalshipErrorCode;

  constructor(code: WalshipErrorCode, message: string, options?: ErrorOptions) {
    super(message, options);
    this.code = code;
  }
}

/** Reports whether an error is a WalshipError with the given code. */
export function hasCode(err: unknown, code: WalshipErrorCode): boolean {
  return err instanceof WalshipError && err.code === code;
}

/**
 * Reports whether `err` is a SQLite error whose code is one of `codes` or one
 * of their extended codes (SQLITE_BUSY also matches SQLITE_BUSY_SNAPSHOT).
 */
export function hasSqliteCode(err: unknown, ...codes: string[]): boolean {
  const code = String((err as { code?: unknown } | undefined)?.code ?? '');
  return codes.some((base) => code === base || code.startsWith(`${base}_`));
}

/**
 * Returns an error's message, including the messages of its causes. A
 * WalshipError's message already states its cause, so the chain stops there.
 */
export function describeError(err: unknown): string {
  const parts: string[] = [];
  let cur: unknown = err;
  for (let depth = 0; cur !== undefined && depth < 5; depth++) {
    if (cur instanceof WalshipError) {
      parts.push(cur.message);
      break;
    }
    if (cur instanceof Error) {
      if (!parts.some((p) => p.includes(cur instanceof Error ? cur.message : ''))) parts.push(cur.message);
      cur = cur.cause;
    } else {
      parts.push(String(cur));
      break;
    }
  }
  return parts.join(': ');
}

/**
 * An async mutex: callers run one at a time in the order they asked.
 * `tryRun` runs only when the mutex is free at once.
 */
export class Mutex {
  #tail: Promise<void> = Promise.resolve();
  #held = false;

  /** Reports whether a caller holds the mutex now. */
  get held(): boolean {
    return this.#held;
  }

  /** Runs `fn` once every earlier caller has finished. */
  async run<T>(fn: () => Promise<T> | T): Promise<T> {
    const prev = this.#tail;
    let release!: () => void;
    this.#tail = new Promise<void>((resolve) => (release = resolve));
    await prev;
    this.#held = true;
    try {
      return await fn();
    } finally {
      this.#held = false;
      release();
    }
  }

  /** Runs `fn` if the mutex is free now; otherwise returns undefined without waiting. */
  async tryRun<T>(fn: () => Promise<T> | T): Promise<T | undefined> {
    if (this.#held) return undefined;
    return this.run(fn);
  }
}

/**
 * A counting semaphore: at most `limit` callers run at once, the others wait
 * in the order they asked.
 */
export class Semaphore {
  readonly limit: number;
  #running = 0;
  #waiting: (() => void)[] = [];

  constructor(limit: number) {
    this.limit = limit;
  }

  /** Runs `fn` once fewer than `limit` other callers are running. */
  async run<T>(fn: () => Promise<T> | T): Promise<T> {
    if (this.#running >= this.limit) await new Promise<void>((resolve) => this.#waiting.push(resolve));
    else this.#running++;
    try {
      return await fn();
    } finally {
      // The slot passes straight to the next caller, or is freed.
      const next = this.#waiting.shift();
      if (next) next();
      else this.#running--;
    }
  }
}

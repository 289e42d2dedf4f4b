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

/**
 * Waiting in integration tests and benchmarks, which talk to real servers on the wall clock.
 * Unit tests do not use these: they drive time with fake timers or an injected clock.
 */
/** Resolves after `ms` milliseconds of wall-clock time. */
export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** How long and how often {@link waitFor} asks. */
export interface WaitOptions {
  /** Give up after this long (default 5 s). */
  timeoutMs?: number;
  /** Pause between two probes (default 50 ms). */
  intervalMs?: number;
  /** What is awaited, for the error message, or a function that says what was seen instead. */
  what?: string | (() => string);
}

/** What a probe returns while the condition does not hold yet. */
type NotYet = undefined | null | false;

/**
 * Calls `probe` until it returns something other than undefined, null or false and resolves with
 * that value; rejects once `timeoutMs` passed. The probe runs at least once, and once more at
 * the deadline; an error it throws ends the wait.
 */
export async function waitFor<T>(probe: () => T | NotYet | Promise<T | NotYet>, options: WaitOptions = {}): Promise<T> {
  const { timeoutMs = 5_000, intervalMs = 50, what = 'the condition' } = options;
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value !== undefined && value !== null && value !== false) return value;
    const left = deadline - Date.now();
    if (left <= 0) {
      const described = typeof what === 'function' ? what() : what;
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${described}`);
    }
    await sleep(Math.min(intervalMs, left));
  }
}

/**
 * Waits until the text `read` returns (a server's log) has a line matching `pattern`; resolves
 * with the first such line. The error shows the end of the text last read.
 */
export function waitForLine(read: () => string | Promise<string>, pattern: RegExp, options: WaitOptions = {}): Promise<string> {
  let last = '';
  return waitFor(
    async () => {
      last = await read();
      return last.split('\n').find((line) => pattern.test(line));
    },
    { what: () => `a line matching ${pattern} in:\n${last.slice(-3000)}`, ...options },
  );
}

import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { waitFor, waitForLine } from '../support/wait.js';

describe('waitFor', () => {
  beforeEach(() => {
    vi.useFakeTimers();
  });
  afterEach(() => {
    vi.useRealTimers();
  });

  it('resolves with the first value that is not undefined, null or false, probing every intervalMs', async () => {
    let calls = 0;
    const waiting = waitFor(() => (++calls === 4 ? { ready: calls } : calls === 2 ? null : false), { intervalMs: 100 });
    await vi.advanceTimersByTimeAsync(299);
    expect(calls).toBe(3);
    await vi.advanceTimersByTimeAsync(1);
    await expect(waiting).resolves.toEqual({ ready: 4 });
    // Zero and the empty string are values too.
    await expect(waitFor(() => 0)).resolves.toBe(0);
  });

  it('gives up after timeoutMs, having probed once more at the deadline, and says what it waited for', async () => {
    let calls = 0;
    const waiting = waitFor(
      () => {
        calls += 1;
        return false;
      },
      { timeoutMs: 1000, intervalMs: 300, what: () => `the door after ${calls} knocks` },
    );
    const outcome = waiting.catch((err: Error) => err);
    await vi.advanceTimersByTimeAsync(1000);
    expect(await outcome).toMatchObject({ message: 'timed out after 1000 ms waiting for the door after 5 knocks' });
    expect(calls).toBe(5);
  });

  it('an error thrown by the probe ends the wait at once', async () => {
    await expect(waitFor(() => Promise.reject(new Error('broken')))).rejects.toThrow('broken');
  });

  it('waitForLine finds a line in the text read and shows the text when there is none', async () => {
    let log = 'a\nb\n';
    const found = waitForLine(() => log, /^c\d$/, { timeoutMs: 500 });
    log += 'c1\nc2\n';
    await vi.advanceTimersByTimeAsync(50);
    await expect(found).resolves.toBe('c1');
    const missing = waitForLine(() => log, /^d/, { timeoutMs: 100 }).catch((err: Error) => err.message);
    await vi.advanceTimersByTimeAsync(100);
    expect(await missing).toBe('timed out after 100 ms waiting for a line matching /^d/ in:\na\nb\nc1\nc2\n');
  });
});

import pino from 'pino';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { CapabilityCache } from '../../../src/login/capability-cache.js';

/** A backend whose next answers the test scripts: a list, or a failure. */
function scriptedProbe() {
  const answers: Array<string[] | Error> = [];
  let calls = 0;
  return {
    answers,
    get calls() {
      return calls;
    },
    probe: async (): Promise<string[]> => {
      calls += 1;
      const next = answers.shift();
      if (next === undefined) throw new Error('no answer scripted');
      if (next instanceof Error) throw next;
      return next;
    },
  };
}

function cache(probe: () => Promise<string[]>) {
  const logged: Array<Record<string, unknown>> = [];
  const log = pino({ level: 'info' }, { write: (line: string) => logged.push(JSON.parse(line) as Record<string, unknown>) });
  const capabilities = new CapabilityCache({
    name: 'imap',
    probe,
    // What sasl-gate advertises: the backend's list without AUTH=, plus its own mechanisms.
    advertise: (list) => [...list.filter((c) => !c.startsWith('AUTH=')), 'AUTH=XOAUTH2'],
    fallback: ['IMAP4rev1'],
    refreshMs: 60_000,
    log,
  });
  return { capabilities, logged, messages: () => logged.map((l) => l['msg']) };
}

describe('CapabilityCache', () => {
  beforeEach(() => {
    vi.useFakeTimers();
  });
  afterEach(() => {
    vi.useRealTimers();
  });

  it('advertises the fallback until the first probe answers, then what the backend offers', async () => {
    const backend = scriptedProbe();
    const { capabilities, messages } = cache(backend.probe);
    expect(capabilities.current()).toEqual(['IMAP4rev1', 'AUTH=XOAUTH2']);
    expect(capabilities.isProbed).toBe(false);
    backend.answers.push(['IMAP4rev1', 'IDLE', 'AUTH=PLAIN']);
    await capabilities.start();
    expect(capabilities.isProbed).toBe(true);
    expect(capabilities.backendList()).toEqual(['IMAP4rev1', 'IDLE', 'AUTH=PLAIN']);
    expect(capabilities.current()).toEqual(['IMAP4rev1', 'IDLE', 'AUTH=XOAUTH2']);
    expect(capabilities.name).toBe('imap');
    expect(messages()).toEqual(['backend capabilities probed']);
    capabilities.stop();
  });

  it('runs one probe at a time: a backend slower than the refresh interval is not probed again meanwhile', async () => {
    let calls = 0;
    let answer: (list: string[]) => void = () => undefined;
    const { capabilities } = cache(() => {
      calls += 1;
      return new Promise<string[]>((resolve) => (answer = resolve));
    });
    const first = capabilities.refresh();
    const joined = capabilities.refresh();
    expect(calls).toBe(1);
    answer(['IMAP4rev1', 'IDLE']);
    await Promise.all([first, joined]);
    expect(capabilities.backendList()).toEqual(['IMAP4rev1', 'IDLE']);
    void capabilities.refresh();
    expect(calls).toBe(2);
    answer(['IMAP4rev1']);
  });

  it('refreshes every refreshMs and logs only a change', async () => {
    const backend = scriptedProbe();
    const { capabilities, messages } = cache(backend.probe);
    backend.answers.push(['IMAP4rev1'], ['IMAP4rev1'], ['IMAP4rev1', 'MOVE']);
    await capabilities.start();
    expect(backend.calls).toBe(1);
    await vi.advanceTimersByTimeAsync(59_999);
    expect(backend.calls).toBe(1);
    await vi.advanceTimersByTimeAsync(1);
    expect(backend.calls).toBe(2);
    expect(messages()).toEqual(['backend capabilities probed']);
    await vi.advanceTimersByTimeAsync(60_000);
    expect(backend.calls).toBe(3);
    expect(capabilities.current()).toEqual(['IMAP4rev1', 'MOVE', 'AUTH=XOAUTH2']);
    expect(messages()).toEqual(['backend capabilities probed', 'backend capabilities probed']);
    capabilities.stop();
  });

  it('a failing first probe keeps the fallback and says so; the next good probe replaces it', async () => {
    const backend = scriptedProbe();
    const { capabilities, logged } = cache(backend.probe);
    backend.answers.push(new Error('connect ECONNREFUSED'), ['IMAP4rev1', 'IDLE']);
    await capabilities.start();
    expect(capabilities.isProbed).toBe(false);
    expect(capabilities.current()).toEqual(['IMAP4rev1', 'AUTH=XOAUTH2']);
    expect(logged).toContainEqual(
      expect.objectContaining({ backend: 'imap', err: 'connect ECONNREFUSED', msg: 'backend capability probe failed; advertising a minimal list until it answers' }),
    );
    await vi.advanceTimersByTimeAsync(60_000);
    expect(capabilities.isProbed).toBe(true);
    expect(capabilities.current()).toEqual(['IMAP4rev1', 'IDLE', 'AUTH=XOAUTH2']);
    capabilities.stop();
  });

  it('a failing later probe keeps the last good list', async () => {
    const backend = scriptedProbe();
    const { capabilities, messages } = cache(backend.probe);
    backend.answers.push(['IMAP4rev1', 'IDLE', 'MOVE'], new Error('timeout'));
    await capabilities.start();
    await vi.advanceTimersByTimeAsync(60_000);
    expect(backend.calls).toBe(2);
    expect(capabilities.backendList()).toEqual(['IMAP4rev1', 'IDLE', 'MOVE']);
    expect(capabilities.current()).toEqual(['IMAP4rev1', 'IDLE', 'MOVE', 'AUTH=XOAUTH2']);
    expect(messages()).toContain('backend capability probe failed; keeping the last list');
    capabilities.stop();
  });

  it('stop ends the refreshing', async () => {
    const backend = scriptedProbe();
    const { capabilities } = cache(backend.probe);
    backend.answers.push(['IMAP4rev1'], ['IMAP4rev1'], ['IMAP4rev1']);
    await capabilities.start();
    capabilities.stop();
    await vi.advanceTimersByTimeAsync(10 * 60_000);
    expect(backend.calls).toBe(1);
    expect(vi.getTimerCount()).toBe(0);
  });
});

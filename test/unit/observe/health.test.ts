import { describe, expect, it } from 'vitest';
import { DependencyHealth, Readiness, tracked } from '../../../src/observe/health.js';

function clock() {
  let now = 1_000_000;
  return { now: () => now, advance: (ms: number) => (now += ms) };
}

describe('DependencyHealth', () => {
  it('is not ready before it was ever reached, with the reason once one failed', () => {
    const c = clock();
    const health = new DependencyHealth(c.now);
    expect(health.check()).toEqual({ ok: false, text: 'not reachable yet' });
    health.failed('connect to 127.0.0.1:143 failed: ECONNREFUSED');
    expect(health.check()).toEqual({ ok: false, text: 'not reachable yet: connect to 127.0.0.1:143 failed: ECONNREFUSED' });
  });

  it('follows the most recent outcome: ok, failing since the first failure, ok again', () => {
    const c = clock();
    const health = new DependencyHealth(c.now);
    health.succeeded();
    expect(health.check()).toEqual({ ok: true, text: 'ok' });
    c.advance(5_000);
    health.failed('first');
    c.advance(12_000);
    health.failed('second\r\nline', 'login');
    expect(health.check()).toEqual({ ok: false, text: 'failing for 12 s: second line' });
    expect(health.failing).toBe('login');
    health.succeeded();
    expect(health.check()).toEqual({ ok: true, text: 'ok' });
    expect(health.failing).toBeUndefined();
  });

  it('is stale when nothing was heard for the probe interval', () => {
    const c = clock();
    const health = new DependencyHealth(c.now);
    health.succeeded();
    c.advance(9_999);
    expect(health.isStale(10_000)).toBe(false);
    c.advance(1);
    expect(health.isStale(10_000)).toBe(true);
  });

  it('keeps reasons short', () => {
    const health = new DependencyHealth();
    health.failed('x'.repeat(1000));
    expect(health.check().text.length).toBeLessThan(200);
  });

  it('records what a tracked call did and passes its result or error on', async () => {
    const health = new DependencyHealth();
    await expect(tracked(health, 'probe', async () => 7)).resolves.toBe(7);
    expect(health.check().ok).toBe(true);
    await expect(tracked(health, 'login', () => Promise.reject(new Error('refused')))).rejects.toThrow('refused');
    expect(health.failing).toBe('login');
  });
});

describe('Readiness', () => {
  it('answers one line per check and is ready only when all pass', () => {
    const readiness = new Readiness();
    let backendOk = true;
    readiness.add('imap backend', () => (backendOk ? { ok: true, text: 'ok' } : { ok: false, text: 'failing for 3 s: timeout' }));
    readiness.add('openid provider', () => ({ ok: true, text: 'ok' }));
    expect(readiness.report()).toEqual({ ready: true, body: 'imap backend: ok\nopenid provider: ok\n' });
    backendOk = false;
    expect(readiness.report()).toEqual({ ready: false, body: 'imap backend: failing for 3 s: timeout\nopenid provider: ok\n' });
  });
});

import { describe, expect, it } from 'vitest';
import { CircuitBreaker } from '../../../src/auth/breaker.js';
import { TokenCache } from '../../../src/auth/cache.js';
import type { TokenIdentity } from '../../../src/auth/validator.js';
import { AuthError } from '../../../src/errors.js';

function identity(expiresInMs: number, now: number): TokenIdentity {
  return { identity: 'alice', claim: 'email', strategy: 'jwt', expiresAt: new Date(now + expiresInMs), claims: {} };
}

describe('TokenCache', () => {
  it('keeps a positive result until the token expires, at most maxTtl', async () => {
    let now = 1_000_000;
    const cache = new TokenCache({ maxEntries: 10, maxTtlMs: 60_000, negativeTtlMs: 5000, now: () => now });
    let calls = 0;
    const validate = async () => {
      calls += 1;
      return identity(30_000, now);
    };
    await cache.get('t1', validate);
    await cache.get('t1', validate);
    expect(calls).toBe(1);
    now += 29_999;
    await cache.get('t1', validate);
    expect(calls).toBe(1);
    now += 2;
    await cache.get('t1', validate);
    expect(calls).toBe(2);
    // A long-lived token is still revalidated after maxTtl.
    const long = async () => {
      calls += 1;
      return identity(3_600_000, now);
    };
    await cache.get('t2', long);
    now += 60_001;
    await cache.get('t2', long);
    expect(calls).toBe(4);
    expect(cache.stats).toMatchObject({ hits: 2, misses: 4 });
  });

  it('remembers rejections briefly and temporary failures not at all', async () => {
    let now = 0;
    const cache = new TokenCache({ maxEntries: 10, maxTtlMs: 60_000, negativeTtlMs: 5000, now: () => now });
    let calls = 0;
    const reject = async (): Promise<TokenIdentity> => {
      calls += 1;
      throw new AuthError('expired', 'token expired');
    };
    await expect(cache.get('bad', reject)).rejects.toMatchObject({ code: 'expired' });
    await expect(cache.get('bad', reject)).rejects.toMatchObject({ code: 'expired' });
    expect(calls).toBe(1);
    now += 5001;
    await expect(cache.get('bad', reject)).rejects.toMatchObject({ code: 'expired' });
    expect(calls).toBe(2);
    const down = async (): Promise<TokenIdentity> => {
      calls += 1;
      throw new AuthError('provider_unavailable', 'down');
    };
    await expect(cache.get('t', down)).rejects.toMatchObject({ code: 'provider_unavailable' });
    await expect(cache.get('t', down)).rejects.toMatchObject({ code: 'provider_unavailable' });
    expect(calls).toBe(4);
  });

  it('lets concurrent lookups of one token share one validation', async () => {
    const cache = new TokenCache({ maxEntries: 10, maxTtlMs: 60_000, negativeTtlMs: 5000 });
    let calls = 0;
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    const validate = async () => {
      calls += 1;
      await gate;
      return identity(60_000, Date.now());
    };
    const all = Promise.all(Array.from({ length: 100 }, () => cache.get('same', validate)));
    release();
    const results = await all;
    expect(calls).toBe(1);
    expect(new Set(results.map((r) => r.identity))).toEqual(new Set(['alice']));
    expect(cache.stats.joined).toBe(99);
  });

  it('stays within maxEntries, dropping the oldest', async () => {
    const cache = new TokenCache({ maxEntries: 3, maxTtlMs: 60_000, negativeTtlMs: 5000 });
    let calls = 0;
    const validate = async () => {
      calls += 1;
      return identity(60_000, Date.now());
    };
    for (const t of ['a', 'b', 'c', 'd']) await cache.get(t, validate);
    expect(cache.size).toBe(3);
    await cache.get('d', validate);
    expect(calls).toBe(4);
    await cache.get('a', validate);
    expect(calls).toBe(5);
  });
});

describe('CircuitBreaker', () => {
  it('opens after repeated temporary failures, fails fast, then lets one trial through', async () => {
    let now = 0;
    const breaker = new CircuitBreaker({ failureThreshold: 3, openMs: 10_000, now: () => now });
    let calls = 0;
    const failing = async () => {
      calls += 1;
      throw new AuthError('provider_unavailable', 'down');
    };
    for (let i = 0; i < 3; i++) await expect(breaker.run('x', failing)).rejects.toThrow('down');
    expect(breaker.state).toBe('open');
    await expect(breaker.run('x', failing)).rejects.toMatchObject({ code: 'provider_unavailable' });
    expect(calls).toBe(3);
    now += 10_001;
    expect(breaker.state).toBe('half-open');
    await expect(breaker.run('x', async () => 'ok')).resolves.toBe('ok');
    expect(breaker.state).toBe('closed');
  });

  it('does not count answers about bad tokens as provider failures', async () => {
    const breaker = new CircuitBreaker({ failureThreshold: 2, openMs: 10_000 });
    for (let i = 0; i < 5; i++) {
      await expect(
        breaker.run('x', async () => {
          throw new AuthError('inactive', 'no');
        }),
      ).rejects.toMatchObject({ code: 'inactive' });
    }
    expect(breaker.state).toBe('closed');
  });
});

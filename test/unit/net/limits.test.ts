import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { ConnectionLimiter } from '../../../src/net/limits.js';
import { clientAddressKey } from '../../../src/net/networks.js';

describe('ConnectionLimiter', () => {
  it('counts IPv6 clients by their /64, so rotating addresses inside it does not help', () => {
    const limiter = new ConnectionLimiter(100, 3);
    expect(limiter.admit('2001:db8:1:2::1')).toBeUndefined();
    expect(limiter.admit('2001:db8:1:2::2')).toBeUndefined();
    expect(limiter.admit('2001:db8:1:2:ffff:ffff:ffff:ffff')).toBeUndefined();
    expect(limiter.admit('2001:db8:1:2:abcd::9')).toBe('per_address');
    expect(limiter.admit('2001:DB8:1:2:0:0:0:7')).toBe('per_address');
    // The next /64 is another client.
    expect(limiter.admit('2001:db8:1:3::1')).toBeUndefined();
    // A release of any address of the /64 frees a slot for the whole /64.
    limiter.release('2001:db8:1:2::2');
    expect(limiter.admit('2001:db8:1:2::99')).toBeUndefined();
    expect(limiter.open).toBe(4);
  });

  it('counts IPv4 clients by address, IPv4-mapped IPv6 as the IPv4 address it carries', () => {
    const limiter = new ConnectionLimiter(100, 2);
    expect(limiter.admit('192.0.2.1')).toBeUndefined();
    expect(limiter.admit('::ffff:192.0.2.1')).toBeUndefined();
    expect(limiter.admit('192.0.2.1')).toBe('per_address');
    expect(limiter.admit('192.0.2.2')).toBeUndefined();
  });

  it('forgets a network with its last connection, and still bounds the total', () => {
    const limiter = new ConnectionLimiter(2, 5);
    expect(limiter.admit('2001:db8::1')).toBeUndefined();
    expect(limiter.admit('2001:db8::2')).toBeUndefined();
    expect(limiter.admit('2001:db9::1')).toBe('total');
    limiter.release('2001:db8::1');
    limiter.release('2001:db8::2');
    expect(limiter.open).toBe(0);
    const fresh = new ConnectionLimiter(10, 1);
    expect(fresh.admit('2001:db8::1')).toBeUndefined();
    fresh.release('2001:db8::1');
    expect(fresh.admit('2001:db8::5')).toBeUndefined();
  });

  it('a refused connection takes no slot: neither the total nor its address counts it', () => {
    const limiter = new ConnectionLimiter(3, 1);
    expect(limiter.admit('192.0.2.1')).toBeUndefined();
    for (let i = 0; i < 10; i++) expect(limiter.admit('192.0.2.1')).toBe('per_address');
    expect(limiter.open).toBe(1);
    expect(limiter.admit('192.0.2.2')).toBeUndefined();
    expect(limiter.admit('192.0.2.3')).toBeUndefined();
    // Full: the total is checked first, even for an address at its own limit.
    expect(limiter.admit('192.0.2.1')).toBe('total');
    expect(limiter.admit('192.0.2.4')).toBe('total');
    limiter.release('192.0.2.3');
    expect(limiter.admit('192.0.2.4')).toBeUndefined();
    expect(limiter.open).toBe(3);
  });

  it('whatever the order of connections and closes, the bounds hold and every slot comes back', () => {
    const addresses = ['192.0.2.1', '192.0.2.2', '::ffff:192.0.2.1', '2001:db8::1', '2001:db8::2', '2001:db8:0:1::1'];
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 6 }),
        fc.integer({ min: 1, max: 3 }),
        fc.array(fc.record({ open: fc.boolean(), address: fc.constantFrom(...addresses) }), { maxLength: 60 }),
        (maxTotal, maxPerAddress, steps) => {
          const limiter = new ConnectionLimiter(maxTotal, maxPerAddress);
          const admitted: string[] = [];
          for (const step of steps) {
            if (step.open) {
              const refusal = limiter.admit(step.address);
              const sameClient = admitted.filter((a) => clientAddressKey(a) === clientAddressKey(step.address)).length;
              const expected = admitted.length >= maxTotal ? 'total' : sameClient >= maxPerAddress ? 'per_address' : undefined;
              expect(refusal).toBe(expected);
              if (refusal === undefined) admitted.push(step.address);
            } else {
              const at = admitted.findIndex((a) => a === step.address);
              if (at < 0) continue;
              admitted.splice(at, 1);
              limiter.release(step.address);
            }
            expect(limiter.open).toBe(admitted.length);
          }
          for (const address of admitted) limiter.release(address);
          expect(limiter.open).toBe(0);
          // Nothing is left behind: every client gets its full allowance again.
          for (let i = 0; i < Math.min(maxTotal, maxPerAddress); i++) expect(limiter.admit('192.0.2.1')).toBeUndefined();
        },
      ),
    );
  });
});

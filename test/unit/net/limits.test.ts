import { describe, expect, it } from 'vitest';
import { ConnectionLimiter } from '../../../src/net/limits.js';

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
});

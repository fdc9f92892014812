import { describe, expect, it } from 'vitest';
import { clientAddressKey } from '../../../src/net/networks.js';
import { FailureTracker, userNameKey } from '../../../src/login/failures.js';

function tracker(options: ConstructorParameters<typeof FailureTracker>[0] = {}) {
  const clock = { now: 1_000_000 };
  const t = new FailureTracker({ now: () => clock.now, ...options });
  return { t, clock };
}

describe('FailureTracker delays', () => {
  it('is 0 for an address and user it has never seen', () => {
    const { t } = tracker();
    expect(t.delayFor('192.0.2.1')).toBe(0);
    expect(t.delayFor('192.0.2.1', 'alice')).toBe(0);
    expect(t.delayFor('2001:db8::1', 'bob')).toBe(0);
    expect(t.stats()).toEqual({ addresses: 0, users: 0 });
  });

  it.each([
    { failures: 0, delay: 0 },
    { failures: 1, delay: 500 },
    { failures: 2, delay: 1000 },
    { failures: 3, delay: 2000 },
    { failures: 4, delay: 4000 },
    { failures: 5, delay: 8000 },
    { failures: 6, delay: 15_000 },
    { failures: 7, delay: 15_000 },
    { failures: 100, delay: 15_000 },
    { failures: 5000, delay: 15_000 },
  ])('after $failures failures waits $delay ms', ({ failures, delay }) => {
    const { t } = tracker();
    for (let i = 0; i < failures; i += 1) t.recordFailure('192.0.2.1', 'alice');
    expect(t.delayFor('192.0.2.1', 'alice')).toBe(delay);
    expect(t.delayFor('192.0.2.1')).toBe(delay);
    expect(t.delayFor('198.51.100.9', 'alice')).toBe(delay);
  });

  it.each([
    { base: 100, max: 1000, failures: 4, delay: 800 },
    { base: 100, max: 1000, failures: 5, delay: 1000 },
    { base: 0, max: 1000, failures: 2000, delay: 0 },
    { base: 250, max: 100, failures: 1, delay: 100 },
  ])('honours base $base and cap $max', ({ base, max, failures, delay }) => {
    const { t } = tracker({ baseDelayMs: base, maxDelayMs: max });
    for (let i = 0; i < failures; i += 1) t.recordFailure('192.0.2.1');
    expect(t.delayFor('192.0.2.1')).toBe(delay);
  });

  it('takes the larger of the address delay and the user delay', () => {
    const { t } = tracker();
    // A sprayer: many names from one address.
    for (let i = 0; i < 4; i += 1) t.recordFailure('203.0.113.5', `user${i}`);
    // A guesser: one name from many addresses.
    for (let i = 0; i < 3; i += 1) t.recordFailure(`198.51.100.${i}`, 'carol');
    expect(t.delayFor('203.0.113.5', 'user0')).toBe(4000);
    expect(t.delayFor('203.0.113.5', 'carol')).toBe(4000);
    expect(t.delayFor('192.0.2.77', 'carol')).toBe(2000);
    expect(t.delayFor('198.51.100.0', 'carol')).toBe(2000);
    expect(t.delayFor('198.51.100.0', 'dave')).toBe(500);
    expect(t.delayFor('192.0.2.77', 'user1')).toBe(500);
  });

  it('a failure without a user name counts only for the address', () => {
    const { t } = tracker();
    t.recordFailure('192.0.2.1');
    t.recordFailure('192.0.2.1', '');
    expect(t.delayFor('192.0.2.1')).toBe(1000);
    expect(t.stats()).toEqual({ addresses: 1, users: 0 });
  });
});

describe('FailureTracker decay', () => {
  it('forgets a record forgetAfterMs after its last failure', () => {
    const { t, clock } = tracker({ forgetAfterMs: 60_000 });
    t.recordFailure('192.0.2.1', 'alice');
    clock.now += 50_000;
    t.recordFailure('192.0.2.1', 'alice');
    // Measured from the last failure, not the first.
    clock.now += 59_999;
    expect(t.delayFor('192.0.2.1', 'alice')).toBe(1000);
    expect(t.stats()).toEqual({ addresses: 1, users: 1 });
    clock.now += 1;
    expect(t.delayFor('192.0.2.1', 'alice')).toBe(0);
    expect(t.stats()).toEqual({ addresses: 0, users: 0 });
    // A new failure starts from the bottom of the ramp again.
    t.recordFailure('192.0.2.1', 'alice');
    expect(t.delayFor('192.0.2.1', 'alice')).toBe(500);
  });

  it('expires records independently and stats() reports only live ones', () => {
    const { t, clock } = tracker({ forgetAfterMs: 1000 });
    t.recordFailure('192.0.2.1', 'alice');
    clock.now += 600;
    t.recordFailure('192.0.2.2', 'bob');
    clock.now += 500;
    expect(t.stats()).toEqual({ addresses: 1, users: 1 });
    expect(t.delayFor('192.0.2.1', 'alice')).toBe(0);
    expect(t.delayFor('192.0.2.2', 'bob')).toBe(500);
    clock.now += 500;
    expect(t.stats()).toEqual({ addresses: 0, users: 0 });
  });

  it('uses Date.now when no clock is given', () => {
    const t = new FailureTracker();
    t.recordFailure('192.0.2.1');
    expect(t.delayFor('192.0.2.1')).toBe(500);
  });
});

describe('FailureTracker successes', () => {
  it('clears the user and halves the address', () => {
    const { t } = tracker();
    for (let i = 0; i < 4; i += 1) t.recordFailure('192.0.2.1', 'alice');
    t.recordSuccess('192.0.2.1', 'alice');
    expect(t.delayFor('198.51.100.1', 'alice')).toBe(0);
    // 4 failures halved to 2.
    expect(t.delayFor('192.0.2.1')).toBe(1000);
    expect(t.delayFor('192.0.2.1', 'alice')).toBe(1000);
    t.recordSuccess('192.0.2.1', 'alice');
    expect(t.delayFor('192.0.2.1')).toBe(500);
    t.recordSuccess('192.0.2.1', 'alice');
    expect(t.delayFor('192.0.2.1', 'alice')).toBe(0);
    expect(t.stats()).toEqual({ addresses: 0, users: 0 });
  });

  it('does not let a sprayer who owns one account wipe its penalty', () => {
    const { t } = tracker();
    for (let i = 0; i < 40; i += 1) t.recordFailure('203.0.113.5', `victim${i}`);
    t.recordSuccess('203.0.113.5', 'mallory');
    expect(t.delayFor('203.0.113.5', 'mallory')).toBe(15_000);
    expect(t.delayFor('203.0.113.5', 'victim41')).toBe(15_000);
    // The names it guessed keep their own records.
    expect(t.delayFor('192.0.2.9', 'victim3')).toBe(500);
  });

  it('leaves other users and other addresses alone', () => {
    const { t } = tracker();
    t.recordFailure('192.0.2.1', 'alice');
    t.recordFailure('192.0.2.2', 'bob');
    t.recordFailure('192.0.2.2', 'bob');
    t.recordSuccess('192.0.2.1', 'alice');
    expect(t.delayFor('192.0.2.2', 'bob')).toBe(1000);
    expect(t.delayFor('192.0.2.3', 'bob')).toBe(1000);
  });

  it('without a user name only halves the address', () => {
    const { t } = tracker();
    for (let i = 0; i < 3; i += 1) t.recordFailure('192.0.2.1', 'alice');
    t.recordSuccess('192.0.2.1');
    expect(t.delayFor('192.0.2.1')).toBe(500);
    expect(t.delayFor('198.51.100.1', 'alice')).toBe(2000);
  });

  it('does not extend the life of a record', () => {
    const { t, clock } = tracker({ forgetAfterMs: 1000 });
    for (let i = 0; i < 4; i += 1) t.recordFailure('192.0.2.1');
    clock.now += 900;
    t.recordSuccess('192.0.2.1');
    clock.now += 100;
    expect(t.delayFor('192.0.2.1')).toBe(0);
  });

  it('is harmless for unknown or expired records', () => {
    const { t, clock } = tracker({ forgetAfterMs: 1000 });
    t.recordSuccess('192.0.2.1', 'alice');
    t.recordFailure('192.0.2.1', 'alice');
    clock.now += 1000;
    t.recordSuccess('192.0.2.1', 'alice');
    expect(t.stats()).toEqual({ addresses: 0, users: 0 });
  });
});

describe('FailureTracker keys', () => {
  it.each([
    ['192.0.2.1', '192.0.2.1'],
    [' 192.0.2.1 ', '192.0.2.1'],
    ['::ffff:192.0.2.1', '192.0.2.1'],
    ['::FFFF:192.0.2.1', '192.0.2.1'],
    ['::ffff:c000:0201', '192.0.2.1'],
    ['0:0:0:0:0:ffff:192.0.2.1', '192.0.2.1'],
    ['[::ffff:192.0.2.1]', '192.0.2.1'],
    ['2001:db8:1:2:3:4:5:6', '2001:db8:1:2::/64'],
    ['2001:DB8:1:2::ffff:1', '2001:db8:1:2::/64'],
    ['2001:0db8:0001:0002:0000:0000:0000:0001', '2001:db8:1:2::/64'],
    ['2001:db8::1', '2001:db8:0:0::/64'],
    ['::1', '0:0:0:0::/64'],
    ['::', '0:0:0:0::/64'],
    ['fe80::1%eth0', 'fe80:0:0:0::/64'],
    ['[2001:db8:1:2::9]', '2001:db8:1:2::/64'],
    ['::ffff:0:192.0.2.1', '0:0:0:0::/64'],
    ['/run/sasl-gate.sock', '/run/sasl-gate.sock'],
    ['Not-An-Address', 'not-an-address'],
    ['', ''],
  ])('address %j is counted as %j', (address, key) => {
    expect(clientAddressKey(address)).toBe(key);
  });

  it('bounds the key of an unparseable address', () => {
    expect(clientAddressKey('x'.repeat(10_000))).toHaveLength(256);
  });

  it('groups IPv6 addresses by /64', () => {
    const { t } = tracker();
    t.recordFailure('2001:db8:aa:bb::1');
    t.recordFailure('2001:db8:aa:bb:ffff:ffff:ffff:ffff');
    t.recordFailure('2001:db8:aa:bb:1234:5678:9abc:def0');
    expect(t.delayFor('2001:db8:aa:bb::42')).toBe(2000);
    expect(t.delayFor('2001:db8:aa:bc::1')).toBe(0);
    expect(t.delayFor('2001:db8:aa::1')).toBe(0);
    expect(t.stats().addresses).toBe(1);
  });

  it('counts an IPv4-mapped address as the IPv4 address', () => {
    const { t } = tracker();
    t.recordFailure('::ffff:192.0.2.1');
    t.recordFailure('192.0.2.1');
    expect(t.delayFor('192.0.2.1')).toBe(1000);
    expect(t.delayFor('::ffff:192.0.2.1')).toBe(1000);
    expect(t.delayFor('::ffff:192.0.2.2')).toBe(0);
    expect(t.stats().addresses).toBe(1);
  });

  it.each([
    ['Alice@Example.COM', 'alice@example.com'],
    ['ALICE', 'alice'],
    // A decomposed "é" (e + combining acute) becomes the composed one.
    ['Ame\u0301lie', 'am\u00e9lie'],
    ['', undefined],
    [undefined, undefined],
  ])('user %j is counted as %j', (user, key) => {
    expect(userNameKey(user)).toBe(key);
  });

  it('compares user names case-insensitively and after NFC', () => {
    const { t } = tracker();
    t.recordFailure('192.0.2.1', 'Am\u00e9lie@Example.com');
    t.recordFailure('192.0.2.2', 'AME\u0301LIE@example.COM');
    expect(t.delayFor('198.51.100.1', 'am\u00e9lie@example.com')).toBe(1000);
    expect(t.stats().users).toBe(1);
  });

  it('truncates long user names to 256 characters for the key', () => {
    const long = 'a'.repeat(300);
    expect(userNameKey(long)).toHaveLength(256);
    expect(userNameKey('b'.repeat(1_000_000))).toHaveLength(256);
    const { t } = tracker();
    t.recordFailure('192.0.2.1', `${'a'.repeat(256)}x`);
    expect(t.delayFor('198.51.100.1', `${'A'.repeat(256)}y`)).toBe(500);
  });

  it('does not leave half a surrogate pair at the end of a key', () => {
    const key = userNameKey(`${'a'.repeat(255)}\u{1F600}`);
    expect(key).toBe('a'.repeat(255));
  });
});

describe('FailureTracker memory', () => {
  it('holds at most maxEntries user names through a flood of 200,000 random names', () => {
    const { t } = tracker({ maxEntries: 10_000 });
    let seed = 0x2545f491;
    for (let i = 0; i < 200_000; i += 1) {
      // xorshift32: distinct-looking names without paying for a cryptographic generator.
      seed ^= seed << 13;
      seed ^= seed >>> 17;
      seed ^= seed << 5;
      t.recordFailure('203.0.113.5', `U${(seed >>> 0).toString(36)}@Example.com`);
    }
    expect(t.stats()).toEqual({ addresses: 1, users: 10_000 });
    expect(t.delayFor('203.0.113.5')).toBe(15_000);
  });

  it('keeps the default cap of 100,000 names', () => {
    const { t } = tracker();
    for (let i = 0; i < 150_000; i += 1) t.recordFailure('203.0.113.5', `n${i}`);
    expect(t.stats()).toEqual({ addresses: 1, users: 100_000 });
    expect(t.delayFor('192.0.2.1', 'n49999')).toBe(0);
    expect(t.delayFor('192.0.2.1', 'n50000')).toBe(500);
  });

  it('holds at most maxEntries addresses through a flood of distinct addresses', () => {
    const { t } = tracker({ maxEntries: 1000 });
    for (let i = 0; i < 200_000; i += 1) {
      t.recordFailure(`10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`);
      t.recordFailure(`2001:db8:${(i >> 16).toString(16)}:${(i & 0xffff).toString(16)}::1`, 'victim');
    }
    expect(t.stats()).toEqual({ addresses: 1000, users: 1 });
    // The newest survive, the oldest are gone.
    expect(t.delayFor('10.3.13.63')).toBe(500);
    expect(t.delayFor('10.0.0.0')).toBe(0);
  });

  it('evicts the record whose last failure is oldest', () => {
    const { t, clock } = tracker({ maxEntries: 3 });
    t.recordFailure('192.0.2.1', 'a');
    clock.now += 1;
    t.recordFailure('192.0.2.2', 'b');
    clock.now += 1;
    t.recordFailure('192.0.2.3', 'c');
    clock.now += 1;
    // A fresh failure moves "a" to the back, so "b" is the oldest now.
    t.recordFailure('192.0.2.1', 'a');
    t.recordFailure('192.0.2.4', 'd');
    expect(t.stats()).toEqual({ addresses: 3, users: 3 });
    expect(t.delayFor('192.0.2.2', 'b')).toBe(0);
    expect(t.delayFor('192.0.2.1', 'a')).toBe(1000);
    expect(t.delayFor('192.0.2.3', 'c')).toBe(500);
    expect(t.delayFor('192.0.2.4', 'd')).toBe(500);
  });

  it.each([
    { maxEntries: 0 },
    { maxEntries: 1.5 },
    { baseDelayMs: -1 },
    { maxDelayMs: Number.NaN },
    { forgetAfterMs: Number.POSITIVE_INFINITY },
  ])('rejects %j', (options) => {
    expect(() => new FailureTracker(options)).toThrow(RangeError);
  });
});

import { isIPv6 } from 'node:net';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { GateError } from '../../../src/errors.js';
import {
  canonicalAddress,
  formatIp,
  NetworkError,
  parseIPv4,
  parseIPv6,
  parseNetworks,
} from '../../../src/net/networks.js';

describe('parseNetworks', () => {
  const trusted = parseNetworks(['127.0.0.0/8', '::1', '10.0.0.0/8', 'fd00::/8', '192.168.1.5']);

  it.each([
    ['127.0.0.1', true],
    ['127.255.255.255', true],
    ['128.0.0.1', false],
    ['10.1.2.3', true],
    ['11.0.0.0', false],
    ['9.255.255.255', false],
    ['192.168.1.5', true],
    ['192.168.1.4', false],
    ['192.168.1.6', false],
    ['::1', true],
    ['0:0:0:0:0:0:0:1', true],
    ['::2', false],
    ['fd00::1', true],
    ['fdff:ffff::1', true],
    ['FD12:3456::1', true],
    ['fe80::1', false],
    ['fc00::1', false],
    ['2001:db8::1', false],
  ])('%s is trusted: %s', (address, expected) => {
    expect(trusted.contains(address)).toBe(expected);
  });

  it.each([
    ['::ffff:127.0.0.1', true],
    ['::FFFF:10.9.8.7', true],
    ['::ffff:7f00:1', true],
    ['0:0:0:0:0:ffff:c0a8:105', true],
    ['::ffff:192.168.1.5', true],
    ['::ffff:192.168.1.6', false],
    ['::ffff:8.8.8.8', false],
  ])('IPv4-mapped %s counts as its IPv4 address: %s', (address, expected) => {
    expect(trusted.contains(address)).toBe(expected);
  });

  it.each(['', 'localhost', '127.0.0.1 ', '127.0.0.01', '10.0.0.0/8', '::1/128', 'fd0x::1'])(
    'does not trust %j, which is not an address',
    (address) => {
      expect(trusted.contains(address)).toBe(false);
    },
  );

  it('drops the zone of a scoped address before comparing', () => {
    const linkLocal = parseNetworks(['fe80::/10']);
    expect(linkLocal.contains('fe80::1%eth0')).toBe(true);
    expect(linkLocal.contains('fe80::1')).toBe(true);
    expect(linkLocal.contains('fec0::1')).toBe(false);
  });

  it('treats IPv4-mapped entries as IPv4 entries', () => {
    const mapped = parseNetworks(['::ffff:10.0.0.0/104', '::ffff:192.0.2.1']);
    expect(mapped.entries).toEqual(['10.0.0.0/8', '192.0.2.1/32']);
    expect(mapped.contains('10.20.30.40')).toBe(true);
    expect(mapped.contains('::ffff:10.20.30.40')).toBe(true);
    expect(mapped.contains('192.0.2.1')).toBe(true);
    expect(mapped.contains('192.0.2.2')).toBe(false);
  });

  it('keeps the families apart: an IPv6 range trusts no IPv4 client, an IPv4 range no IPv6 one', () => {
    const v6 = parseNetworks(['::/0']);
    expect(v6.contains('2001:db8::1')).toBe(true);
    expect(v6.contains('1.2.3.4')).toBe(false);
    expect(v6.contains('::ffff:1.2.3.4')).toBe(false);
    const v4 = parseNetworks(['0.0.0.0/0']);
    expect(v4.contains('1.2.3.4')).toBe(true);
    expect(v4.contains('::ffff:1.2.3.4')).toBe(true);
    expect(v4.contains('::1')).toBe(false);
  });

  it('accepts the extremes of the prefix length and surrounding blanks', () => {
    const list = parseNetworks(['0.0.0.0/0', '::/0', '203.0.113.7/32', '2001:db8::7/128', ' 198.51.100.0/24 ']);
    expect(list.entries).toEqual(['0.0.0.0/0', '::/0', '203.0.113.7/32', '2001:db8::7/128', '198.51.100.0/24']);
    const host = parseNetworks(['203.0.113.7/32', '2001:DB8:0::7/128']);
    expect(host.contains('203.0.113.7')).toBe(true);
    expect(host.contains('203.0.113.8')).toBe(false);
    expect(host.contains('2001:db8::7')).toBe(true);
    expect(host.contains('2001:db8::8')).toBe(false);
  });

  it('trusts nothing when empty', () => {
    const none = parseNetworks([]);
    expect(none.entries).toEqual([]);
    expect(none.contains('127.0.0.1')).toBe(false);
    expect(none.contains('::1')).toBe(false);
  });

  it.each([
    ['', 'not an IPv4'],
    ['localhost', 'not an IPv4'],
    ['10.0.0.0/', 'prefix length'],
    ['10.0.0.0/33', 'prefix length'],
    ['10.0.0.0/-1', 'prefix length'],
    ['10.0.0.0/08', 'prefix length'],
    ['10.0.0.0/8/8', 'prefix length'],
    ['10.0.0.0/ 8', 'prefix length'],
    ['fd00::/129', 'prefix length'],
    ['256.0.0.0/8', 'not an IPv4'],
    ['10.0.0/8', 'not an IPv4'],
    ['010.0.0.0/8', 'not an IPv4'],
    ['10.0.0.1/8', 'host bits are set; the network is 10.0.0.0/8'],
    ['192.168.1.0/2', 'the network is 192.0.0.0/2'],
    ['fd00::1/8', 'the network is fd00::/8'],
    ['fe80::1%eth0', 'not an IPv4'],
    ['1::2::3', 'not an IPv4'],
    ['10.0.0.0 /8', 'not an IPv4'],
    ['10.0.0.0-10.0.0.255', 'not an IPv4'],
  ])('refuses %j with code bad_network, naming the entry', (entry, reason) => {
    const error = (() => {
      try {
        parseNetworks(['127.0.0.1', entry]);
      } catch (caught) {
        return caught;
      }
      return undefined;
    })();
    expect(error).toBeInstanceOf(NetworkError);
    expect(error).toBeInstanceOf(GateError);
    expect((error as NetworkError).code).toBe('bad_network');
    expect((error as NetworkError).entry).toBe(entry);
    expect((error as NetworkError).message).toContain(JSON.stringify(entry));
    expect((error as NetworkError).message).toContain(reason);
  });

  it('refuses entries that are not strings', () => {
    expect(() => parseNetworks([8 as unknown as string])).toThrow(NetworkError);
  });
});

describe('address helpers', () => {
  it.each([
    ['::ffff:127.0.0.1', '127.0.0.1'],
    ['::FFFF:7F00:1', '127.0.0.1'],
    ['2001:DB8:0:0:1:0:0:1', '2001:db8::1:0:0:1'],
    ['2001:db8:0:0:0:0:2:1', '2001:db8::2:1'],
    ['fe80::1%eth0', 'fe80::1'],
    ['0:0:0:0:0:0:0:0', '::'],
    ['192.0.2.1', '192.0.2.1'],
  ])('canonicalAddress(%j) is %j', (input, expected) => {
    expect(canonicalAddress(input)).toBe(expected);
  });

  it.each(['', '1.2.3', '::g', '1:2:3:4:5:6:7:8:9', ':1::', '1:::2', '::1.2.3', '1.2.3.4::'])(
    'canonicalAddress(%j) is undefined',
    (input) => {
      expect(canonicalAddress(input)).toBeUndefined();
    },
  );

  it('parses every IPv4 address fast-check makes and formats it back unchanged', () => {
    fc.assert(
      fc.property(fc.ipV4(), (address) => {
        const bytes = parseIPv4(address);
        expect(bytes).toBeDefined();
        expect(formatIp(bytes!)).toBe(address);
      }),
    );
  });

  it('parses every IPv6 address fast-check makes, agreeing with Node on the canonical text', () => {
    fc.assert(
      fc.property(fc.ipV6(), (address) => {
        const bytes = parseIPv6(address);
        expect(bytes).toBeDefined();
        const text = formatIp(bytes!);
        expect(parseIPv6(text)).toEqual(bytes);
        expect(isIPv6(text)).toBe(true);
      }),
    );
  });

  it('accepts exactly the IPv6 texts Node accepts', () => {
    const piece = fc.constantFrom('0', '1', 'a', 'F', 'ffff', '12345', ':', ':', '::', '.', '1.2.3.4', '255', '01', 'g');
    fc.assert(
      fc.property(fc.array(piece, { maxLength: 14 }), (pieces) => {
        const text = pieces.join('');
        expect(parseIPv6(text) !== undefined).toBe(isIPv6(text));
      }),
      { numRuns: 2000 },
    );
  });
});

describe('NetworkList properties', () => {
  /** Reference membership on raw bytes. */
  function inBlock(address: Buffer, network: Buffer, prefix: number): boolean {
    for (let bit = 0; bit < prefix; bit++) {
      const mask = 0x80 >> bit % 8;
      if (((address[bit >> 3] ?? 0) & mask) !== ((network[bit >> 3] ?? 0) & mask)) return false;
    }
    return true;
  }

  /** The block containing `bytes` at `prefix`, written as an entry. */
  function blockOf(bytes: Buffer, prefix: number): string {
    const network = Buffer.from(bytes);
    for (let bit = prefix; bit < bytes.length * 8; bit++) network[bit >> 3]! &= ~(0x80 >> bit % 8);
    return `${formatIp(network)}/${prefix}`;
  }

  const v4Bytes = fc.uint8Array({ minLength: 4, maxLength: 4 }).map((array) => Buffer.from(array));
  const v6Bytes = fc.uint8Array({ minLength: 16, maxLength: 16 }).map((array) => Buffer.from(array));

  it('an IPv4 block contains exactly the addresses sharing its prefix, in either spelling', () => {
    fc.assert(
      fc.property(v4Bytes, fc.integer({ min: 0, max: 32 }), v4Bytes, fc.integer({ min: 0, max: 32 }), (base, prefix, probe, flip) => {
        const list = parseNetworks([blockOf(base, prefix)]);
        // Near misses: the probe differs from the base from bit `flip` on.
        const near = Buffer.from(base);
        for (let bit = flip; bit < 32; bit++) if (probe[bit >> 3]! & (0x80 >> bit % 8)) near[bit >> 3]! ^= 0x80 >> bit % 8;
        for (const candidate of [probe, near, base]) {
          const expected = inBlock(candidate, base, prefix);
          expect(list.contains(formatIp(candidate))).toBe(expected);
          expect(list.contains(`::ffff:${formatIp(candidate)}`)).toBe(expected);
        }
      }),
      { numRuns: 500 },
    );
  });

  it('an IPv6 block contains exactly the addresses sharing its prefix', () => {
    fc.assert(
      fc.property(v6Bytes, fc.integer({ min: 0, max: 128 }), v6Bytes, fc.integer({ min: 0, max: 128 }), (base, prefix, probe, flip) => {
        const network = Buffer.from(base);
        // Keep clear of the mapped range, whose entries become IPv4 ones.
        if (network.subarray(0, 12).equals(Buffer.from([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff]))) network[0] = 0x20;
        const list = parseNetworks([blockOf(network, prefix)]);
        const near = Buffer.from(network);
        for (let bit = flip; bit < 128; bit++) if (probe[bit >> 3]! & (0x80 >> bit % 8)) near[bit >> 3]! ^= 0x80 >> bit % 8;
        for (const candidate of [probe, near, network]) {
          const mapped = candidate.subarray(0, 12).equals(Buffer.from([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff]));
          expect(list.contains(formatIp(candidate))).toBe(!mapped && inBlock(candidate, network, prefix));
        }
      }),
      { numRuns: 500 },
    );
  });
});

import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { GateError } from '../../../src/errors.js';
import {
  encodeProxyV2,
  encodeProxyV2Local,
  parseProxyHeader,
  PROXY_HEADER_MAX_LENGTH,
  PROXY_V1_MAX_LENGTH,
  PROXY_V2_MAX_PAYLOAD,
  ProxyHeaderError,
  type ProxyHeader,
  type ProxyParseResult,
} from '../../../src/net/proxy-protocol.js';
import { formatIp, parseIPv6 } from '../../../src/net/networks.js';

const ntop = (address: string): string => formatIp(parseIPv6(address)!);

const SIGNATURE = Buffer.from('0d0a0d0a000d0a515549540a', 'hex');

/** A v2 header from its parts; `length` overrides the length field. */
function v2(versionCommand: number, familyProtocol: number, payload: Buffer | string = '', length?: number): Buffer {
  const body = typeof payload === 'string' ? Buffer.from(payload, 'hex') : payload;
  const fixed = Buffer.alloc(4);
  fixed[0] = versionCommand;
  fixed[1] = familyProtocol;
  fixed.writeUInt16BE(length ?? body.length, 2);
  return Buffer.concat([SIGNATURE, fixed, body]);
}

/** A TLV with the given type and value. */
function tlv(type: number, value: Buffer | string): Buffer {
  const body = typeof value === 'string' ? Buffer.from(value, 'latin1') : value;
  const head = Buffer.alloc(3);
  head[0] = type;
  head.writeUInt16BE(body.length, 1);
  return Buffer.concat([head, body]);
}

const IPV4_BLOCK = 'c0000201' + 'c6336407' + '3039' + '03e1'; // 192.0.2.1:12345 -> 198.51.100.7:993
const IPV6_BLOCK =
  '20010db8000000000000000000000001' + '20010db8000000000000000000000002' + 'd431' + '01d1'; // [2001:db8::1]:54321 -> [2001:db8::2]:465

function parsed(input: Buffer | string): { header: ProxyHeader; length: number } {
  const result = parseProxyHeader(typeof input === 'string' ? Buffer.from(input, 'latin1') : input);
  if ('needMore' in result) throw new Error('expected a complete header');
  return result;
}

function refusal(input: Buffer | string): ProxyHeaderError {
  try {
    parseProxyHeader(typeof input === 'string' ? Buffer.from(input, 'latin1') : input);
  } catch (error) {
    expect(error).toBeInstanceOf(ProxyHeaderError);
    expect(error).toBeInstanceOf(GateError);
    expect((error as GateError).code).toBe('bad_proxy_header');
    return error as ProxyHeaderError;
  }
  throw new Error('expected the header to be refused');
}

const tcp4 = (source: string, sourcePort: number, destination: string, destinationPort: number) => ({
  family: 'TCP4' as const,
  source: { address: source, port: sourcePort },
  destination: { address: destination, port: destinationPort },
});
const tcp6 = (source: string, sourcePort: number, destination: string, destinationPort: number) => ({
  family: 'TCP6' as const,
  source: { address: source, port: sourcePort },
  destination: { address: destination, port: destinationPort },
});

describe('parseProxyHeader, version 1', () => {
  const ffff6 = 'ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff';
  it.each<[string, string, Omit<ProxyHeader, 'version' | 'command'>]>([
    ['the spec example', 'PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n', tcp4('192.168.0.1', 56324, '192.168.0.11', 443)],
    ['the longest TCP4 line', 'PROXY TCP4 255.255.255.255 255.255.255.255 65535 65535\r\n', tcp4('255.255.255.255', 65535, '255.255.255.255', 65535)],
    ['zero addresses and ports', 'PROXY TCP4 0.0.0.0 0.0.0.0 0 0\r\n', tcp4('0.0.0.0', 0, '0.0.0.0', 0)],
    ['the longest TCP6 line', `PROXY TCP6 ${ffff6} ${ffff6} 65535 65535\r\n`, tcp6(ffff6, 65535, ffff6, 65535)],
    ['compressed upper-case IPv6', 'PROXY TCP6 2001:DB8::1 ::1 51000 993\r\n', tcp6('2001:db8::1', 51000, '::1', 993)],
    ['uncompressed IPv6', 'PROXY TCP6 2001:db8:0:0:0:0:0:1 0:0:0:0:0:0:0:1 1 2\r\n', tcp6('2001:db8::1', 1, '::1', 2)],
    ['IPv4-mapped IPv6', 'PROXY TCP6 ::ffff:192.0.2.1 ::ffff:c000:202 1 2\r\n', tcp6('::ffff:192.0.2.1', 1, '::ffff:192.0.2.2', 2)],
    ['UNKNOWN, short form', 'PROXY UNKNOWN\r\n', { family: 'UNKNOWN' }],
    ['UNKNOWN with addresses', 'PROXY UNKNOWN 192.0.2.1 192.0.2.2 1 2\r\n', { family: 'UNKNOWN' }],
    ['UNKNOWN, worst case of 107 bytes', `PROXY UNKNOWN ${ffff6} ${ffff6} 65535 65535\r\n`, { family: 'UNKNOWN' }],
    ['UNKNOWN followed by anything printable', 'PROXY UNKNOWN whatever  it is!\r\n', { family: 'UNKNOWN' }],
  ])('parses %s', (_name, line, expected) => {
    const data = 'a1 CAPABILITY\r\n';
    const result = parsed(line + data);
    expect(result).toEqual({ header: { version: 1, command: 'PROXY', ...expected }, length: line.length });
    expect(result.length).toBeLessThanOrEqual(PROXY_V1_MAX_LENGTH);
  });

  it.each<[string, string]>([
    ['an IPv4 octet above 255', 'PROXY TCP4 256.0.0.1 192.0.2.2 1 2\r\n'],
    ['three octets', 'PROXY TCP4 192.0.2 192.0.2.2 1 2\r\n'],
    ['five octets', 'PROXY TCP4 192.0.2.1.5 192.0.2.2 1 2\r\n'],
    ['a leading zero in an octet', 'PROXY TCP4 192.0.2.01 192.0.2.2 1 2\r\n'],
    ['a host name', 'PROXY TCP4 localhost 192.0.2.2 1 2\r\n'],
    ['an IPv6 address under TCP4', 'PROXY TCP4 ::1 ::1 1 2\r\n'],
    ['an IPv4 address under TCP6', 'PROXY TCP6 192.0.2.1 192.0.2.2 1 2\r\n'],
    ['two double colons', 'PROXY TCP6 1::2::3 ::1 1 2\r\n'],
    ['an IPv6 zone', 'PROXY TCP6 fe80::1%eth0 ::1 1 2\r\n'],
    ['port 70000', 'PROXY TCP4 192.0.2.1 192.0.2.2 70000 2\r\n'],
    ['port 65536', 'PROXY TCP4 192.0.2.1 192.0.2.2 1 65536\r\n'],
    ['a port with a leading zero', 'PROXY TCP4 192.0.2.1 192.0.2.2 01 2\r\n'],
    ['a negative port', 'PROXY TCP4 192.0.2.1 192.0.2.2 -1 2\r\n'],
    ['a signed port', 'PROXY TCP4 192.0.2.1 192.0.2.2 +1 2\r\n'],
    ['a hexadecimal port', 'PROXY TCP4 192.0.2.1 192.0.2.2 0x10 2\r\n'],
    ['a missing port', 'PROXY TCP4 192.0.2.1 192.0.2.2 1\r\n'],
    ['an extra field', 'PROXY TCP4 192.0.2.1 192.0.2.2 1 2 3\r\n'],
    ['two spaces between fields', 'PROXY TCP4 192.0.2.1  192.0.2.2 1 2\r\n'],
    ['two spaces after PROXY', 'PROXY  TCP4 192.0.2.1 192.0.2.2 1 2\r\n'],
    ['a trailing space', 'PROXY TCP4 192.0.2.1 192.0.2.2 1 2 \r\n'],
    ['a tab instead of a space', 'PROXY TCP4\t192.0.2.1 192.0.2.2 1 2\r\n'],
    ['a lower-case protocol', 'PROXY tcp4 192.0.2.1 192.0.2.2 1 2\r\n'],
    ['a lower-case keyword', 'proxy TCP4 192.0.2.1 192.0.2.2 1 2\r\n'],
    ['lower-case unknown', 'PROXY unknown\r\n'],
    ['an unknown protocol', 'PROXY TCP5 192.0.2.1 192.0.2.2 1 2\r\n'],
    ['UDP', 'PROXY UDP4 192.0.2.1 192.0.2.2 1 2\r\n'],
    ['UNKNOWN run into another word', 'PROXY UNKNOWNX\r\n'],
    ['no protocol', 'PROXY \r\n'],
    ['PROXY alone', 'PROXY\r\n'],
    ['a bare LF', 'PROXY TCP4 192.0.2.1 192.0.2.2 1 2\n'],
    ['a bare CR', 'PROXY TCP4 192.0.2.1 192.0.2.2 1 2\rx\n'],
    ['LF CR', 'PROXY UNKNOWN\n\r'],
    ['a NUL byte', 'PROXY UNKNOWN \0\r\n'],
    ['a byte above ASCII', 'PROXY UNKNOWN \xe9\r\n'],
    ['no CRLF within 107 bytes', `PROXY UNKNOWN ${'a'.repeat(100)}`],
    ['a line of 108 bytes', `PROXY UNKNOWN ${'a'.repeat(92)}\r\n`],
    ['a CR as the 107th byte', `PROXY UNKNOWN ${'a'.repeat(92)}\r`],
  ])('refuses %s', (_name, line) => {
    refusal(line + 'a1 LOGIN alice secret\r\n');
  });

  it('accepts a line of exactly 107 bytes and no longer', () => {
    const line = `PROXY UNKNOWN ${'a'.repeat(91)}\r\n`;
    expect(line.length).toBe(107);
    expect(parsed(line).length).toBe(107);
    expect(parseProxyHeader(Buffer.from(line.slice(0, 106)))).toEqual({ needMore: true });
    refusal(`PROXY UNKNOWN ${'a'.repeat(92)}`);
  });

  it('refuses a line without CRLF as soon as 106 bytes are in (its CR could no longer fit)', () => {
    expect(parseProxyHeader(Buffer.from(`PROXY UNKNOWN ${'a'.repeat(91)}`))).toEqual({ needMore: true });
    refusal(`PROXY UNKNOWN ${'a'.repeat(92)}`);
  });
});

describe('parseProxyHeader, version 2', () => {
  it.each<[string, Buffer, Omit<ProxyHeader, 'version'>]>([
    ['TCP over IPv4', v2(0x21, 0x11, IPV4_BLOCK), { command: 'PROXY', ...tcp4('192.0.2.1', 12345, '198.51.100.7', 993) }],
    ['TCP over IPv6', v2(0x21, 0x21, IPV6_BLOCK), { command: 'PROXY', ...tcp6('2001:db8::1', 54321, '2001:db8::2', 465) }],
    [
      'IPv4-mapped IPv6',
      v2(0x21, 0x21, '00000000000000000000ffffc0000201' + '00000000000000000000000000000001' + '0001' + 'ffff'),
      { command: 'PROXY', ...tcp6('::ffff:192.0.2.1', 1, '::1', 65535) },
    ],
    ['LOCAL', v2(0x20, 0x00), { command: 'LOCAL', family: 'UNKNOWN' }],
    ['LOCAL with an address block, which is ignored', v2(0x20, 0x11, IPV4_BLOCK), { command: 'LOCAL', family: 'UNKNOWN' }],
    ['LOCAL with a wrong-sized address block', v2(0x20, 0x21, IPV4_BLOCK), { command: 'LOCAL', family: 'UNKNOWN' }],
    ['LOCAL with TLVs', v2(0x20, 0x00, tlv(0x05, 'health-check')), { command: 'LOCAL', family: 'UNKNOWN' }],
    ['PROXY UNSPEC', v2(0x21, 0x00), { command: 'PROXY', family: 'UNKNOWN' }],
    ['PROXY UNSPEC with bytes to skip', v2(0x21, 0x00, 'deadbeef'), { command: 'PROXY', family: 'UNKNOWN' }],
    ['UDP over IPv4, taken as UNSPEC', v2(0x21, 0x12, IPV4_BLOCK), { command: 'PROXY', family: 'UNKNOWN' }],
    ['UDP over IPv6, taken as UNSPEC', v2(0x21, 0x22, IPV6_BLOCK), { command: 'PROXY', family: 'UNKNOWN' }],
    ['UNIX stream', v2(0x21, 0x31, Buffer.alloc(216, 0x61)), { command: 'PROXY', family: 'UNIX' }],
    ['UNIX datagram', v2(0x21, 0x32, Buffer.alloc(216, 0x61)), { command: 'PROXY', family: 'UNKNOWN' }],
    [
      'IPv4 with TLVs',
      v2(
        0x21,
        0x11,
        Buffer.concat([
          Buffer.from(IPV4_BLOCK, 'hex'),
          tlv(0x01, 'imap'),
          tlv(0x02, 'mail.example.org'),
          tlv(0x20, Buffer.concat([Buffer.from('0100000000', 'hex'), tlv(0x21, 'TLSv1.3')])),
          tlv(0x04, ''),
          tlv(0xea, Buffer.from('vpce-0123', 'latin1')),
        ]),
      ),
      { command: 'PROXY', ...tcp4('192.0.2.1', 12345, '198.51.100.7', 993) },
    ],
    [
      'IPv6 with a NOOP TLV',
      v2(0x21, 0x21, Buffer.concat([Buffer.from(IPV6_BLOCK, 'hex'), tlv(0x04, Buffer.alloc(5))])),
      { command: 'PROXY', ...tcp6('2001:db8::1', 54321, '2001:db8::2', 465) },
    ],
    [
      'UNIX with a TLV',
      v2(0x21, 0x31, Buffer.concat([Buffer.alloc(216), tlv(0x05, 'id')])),
      { command: 'PROXY', family: 'UNIX' },
    ],
  ])('parses %s', (_name, header, expected) => {
    const data = Buffer.from('\x16\x03\x01\x02\x00\x01\x00\x01\xfc', 'latin1');
    const result = parsed(Buffer.concat([header, data]));
    expect(result).toEqual({ header: { version: 2, ...expected }, length: header.length });
  });

  it('accepts an address block of exactly the cap', () => {
    const payload = Buffer.concat([Buffer.from(IPV4_BLOCK, 'hex'), tlv(0x04, Buffer.alloc(PROXY_V2_MAX_PAYLOAD - 12 - 3))]);
    expect(payload.length).toBe(PROXY_V2_MAX_PAYLOAD);
    expect(parsed(v2(0x21, 0x11, payload)).length).toBe(PROXY_HEADER_MAX_LENGTH);
  });

  it.each<[string, Buffer]>([
    ['version 1 in the binary format', v2(0x11, 0x11, IPV4_BLOCK)],
    ['version 3', v2(0x31, 0x11, IPV4_BLOCK)],
    ['version 0', v2(0x01, 0x11, IPV4_BLOCK)],
    ['command 2', v2(0x22, 0x11, IPV4_BLOCK)],
    ['command 15', v2(0x2f, 0x11, IPV4_BLOCK)],
    ['address family 4', v2(0x21, 0x41, IPV4_BLOCK)],
    ['transport protocol 3', v2(0x21, 0x13, IPV4_BLOCK)],
    ['UNSPEC family with STREAM', v2(0x21, 0x01)],
    ['AF_INET with UNSPEC protocol', v2(0x21, 0x10, IPV4_BLOCK)],
    ['an undefined family even under LOCAL', v2(0x20, 0xff)],
    ['an IPv4 block one byte short', v2(0x21, 0x11, IPV4_BLOCK.slice(0, -2))],
    ['an IPv4 family with no block', v2(0x21, 0x11)],
    ['an IPv6 family with an IPv4-sized block', v2(0x21, 0x21, IPV4_BLOCK)],
    ['an IPv6 block one byte short', v2(0x21, 0x21, IPV6_BLOCK.slice(0, -2))],
    ['a UNIX block one byte short', v2(0x21, 0x31, Buffer.alloc(215))],
    ['a UDP block too short', v2(0x21, 0x12, IPV4_BLOCK.slice(0, -2))],
    ['a length beyond the cap', v2(0x21, 0x11, Buffer.alloc(PROXY_V2_MAX_PAYLOAD + 1))],
    ['the largest length field', v2(0x21, 0x11, '', 0xffff)],
    ['a TLV of two bytes', v2(0x21, 0x11, IPV4_BLOCK + '0400')],
    ['a single trailing byte', v2(0x21, 0x11, IPV4_BLOCK + '00')],
    ['a TLV longer than the block', v2(0x21, 0x11, IPV4_BLOCK + '040005' + '00000000')],
    ['a second TLV running past the end', v2(0x21, 0x11, IPV4_BLOCK + '040000' + '0400ff')],
    ['a wrong signature byte', Buffer.concat([Buffer.from('0d0a0d0a000d0a515549540b', 'hex'), v2(0x21, 0x11, IPV4_BLOCK).subarray(12)])],
    ['the v1 keyword after the v2 signature', Buffer.concat([SIGNATURE.subarray(0, 4), Buffer.from('PROXY TCP4 ')])],
  ])('refuses %s', (_name, header) => {
    refusal(Buffer.concat([header, Buffer.alloc(64, 0x41)]));
  });

  it('refuses an over-long length as soon as the fixed part is in, without waiting for the rest', () => {
    refusal(v2(0x21, 0x11, '', PROXY_V2_MAX_PAYLOAD + 1));
  });

  it('refuses a bad version, command or family as soon as that byte arrives', () => {
    refusal(Buffer.concat([SIGNATURE, Buffer.from([0x31])]));
    refusal(Buffer.concat([SIGNATURE, Buffer.from([0x23])]));
    refusal(Buffer.concat([SIGNATURE, Buffer.from([0x21, 0x51])]));
  });
});

describe('parseProxyHeader, other data', () => {
  const clientHello = Buffer.from('1603010200010001fc0303' + '00'.repeat(32), 'hex');
  it.each<[string, Buffer | string]>([
    ['a TLS ClientHello', clientHello],
    ['an IMAP command', 'a1 LOGIN alice secret\r\n'],
    ['an SMTP greeting reply', 'EHLO client.example.org\r\n'],
    ['an HTTP request', 'GET / HTTP/1.1\r\n'],
    ['a near miss of the keyword', 'PROXZ TCP4 192.0.2.1 192.0.2.2 1 2\r\n'],
    ['a single P followed by a space', 'P '],
    ['an empty line before a command', '\r\na1 NOOP\r\n'],
    ['a NUL', '\0'],
  ])('refuses %s at once', (_name, input) => {
    const error = refusal(input);
    expect(error.message).not.toContain('secret');
    expect(error.message).not.toContain('alice');
  });

  it('never quotes the input in its errors', () => {
    for (const line of ['PROXY TCP4 secret 192.0.2.2 1 2\r\n', 'PROXY TCP4 192.0.2.1 192.0.2.2 secret 2\r\n', 'PROXY secret\r\n']) {
      expect(refusal(line).message).not.toContain('secret');
    }
  });

  it.each<[string, Buffer | string]>([
    ['nothing', ''],
    ['P', 'P'],
    ['PROXY', 'PROXY'],
    ['PROXY and a space', 'PROXY '],
    ['a v1 line without its end', 'PROXY TCP4 192.0.2.1 192.0.2.2 1 2'],
    ['a v1 line up to its CR', 'PROXY TCP4 192.0.2.1 192.0.2.2 1 2\r'],
    ['a v1 line that is not yet valid but could be', 'PROXY TCP4 192.0.2.1 192.0'],
    ['the first byte of the signature', SIGNATURE.subarray(0, 1)],
    ['the signature', SIGNATURE],
    ['the signature and version', Buffer.concat([SIGNATURE, Buffer.from([0x21])])],
    ['the fixed part', v2(0x21, 0x11, '', 12)],
    ['part of the address block', v2(0x21, 0x11, IPV4_BLOCK).subarray(0, 27)],
    ['a LOCAL header announcing bytes to skip', v2(0x20, 0x00, '', 100)],
  ])('asks for more after %s', (_name, input) => {
    expect(parseProxyHeader(typeof input === 'string' ? Buffer.from(input, 'latin1') : input)).toEqual({ needMore: true });
  });
});

describe('encodeProxyV2', () => {
  it('builds the version 2 header for TCP over IPv4 byte for byte', () => {
    const header = encodeProxyV2({ address: '192.0.2.1', port: 12345 }, { address: '198.51.100.7', port: 993 });
    expect(header.toString('hex')).toBe(SIGNATURE.toString('hex') + '2111000c' + IPV4_BLOCK);
  });

  it('builds the version 2 header for TCP over IPv6 byte for byte', () => {
    const header = encodeProxyV2({ address: '2001:db8::1', port: 54321 }, { address: '2001:DB8:0::2', port: 465 });
    expect(header.toString('hex')).toBe(SIGNATURE.toString('hex') + '21210024' + IPV6_BLOCK);
  });

  it('sends IPv4-mapped addresses, as dual-stack sockets report them, as IPv4', () => {
    const header = encodeProxyV2({ address: '::ffff:192.0.2.1', port: 12345 }, { address: '::FFFF:198.51.100.7', port: 993 });
    expect(header.toString('hex')).toBe(SIGNATURE.toString('hex') + '2111000c' + IPV4_BLOCK);
  });

  it('sends a mixed pair as IPv6, mapping the IPv4 side', () => {
    const header = encodeProxyV2({ address: '2001:db8::1', port: 1 }, { address: '127.0.0.1', port: 143 });
    expect(parsed(header)).toEqual({
      header: { version: 2, command: 'PROXY', ...tcp6('2001:db8::1', 1, '::ffff:127.0.0.1', 143) },
      length: 16 + 36,
    });
  });

  it('drops the zone of a scoped address', () => {
    const header = encodeProxyV2({ address: 'fe80::1%eth0', port: 1 }, { address: 'fe80::2', port: 2 });
    expect(parsed(header).header.source).toEqual({ address: 'fe80::1', port: 1 });
  });

  it('builds the LOCAL header byte for byte, and it parses as LOCAL', () => {
    const header = encodeProxyV2Local();
    expect(header.toString('hex')).toBe(SIGNATURE.toString('hex') + '20000000');
    expect(parsed(header)).toEqual({ header: { version: 2, command: 'LOCAL', family: 'UNKNOWN' }, length: 16 });
  });

  it.each<[string, string, number]>([
    ['a host name', 'localhost', 1],
    ['an empty address', '', 1],
    ['a port above 65535', '192.0.2.1', 65536],
    ['a negative port', '192.0.2.1', -1],
    ['a fractional port', '192.0.2.1', 1.5],
    ['a NaN port', '192.0.2.1', Number.NaN],
  ])('refuses %s', (_name, address, port) => {
    expect(() => encodeProxyV2({ address, port }, { address: '192.0.2.2', port: 2 })).toThrow(ProxyHeaderError);
    expect(() => encodeProxyV2({ address: '192.0.2.2', port: 2 }, { address, port })).toThrow(ProxyHeaderError);
  });
});

describe('properties', () => {
  const port = fc.integer({ min: 0, max: 0xffff });
  const endpoint4 = fc.record({ address: fc.ipV4(), port });
  const endpoint6 = fc.record({ address: fc.ipV6(), port });
  const endpoint = fc.oneof(endpoint4, endpoint6);

  it('encodeProxyV2 round-trips through parseProxyHeader', () => {
    fc.assert(
      fc.property(endpoint, endpoint, (source, destination) => {
        const header = encodeProxyV2(source, destination);
        const result = parsed(header);
        expect(result.length).toBe(header.length);
        expect(result.header.version).toBe(2);
        expect(result.header.command).toBe('PROXY');
        // Comparing as canonical bytes: IPv6 text has many spellings, IPv4 may come back mapped.
        const reencoded = encodeProxyV2(result.header.source!, result.header.destination!);
        expect(reencoded.equals(header)).toBe(true);
        expect(result.header.source!.port).toBe(source.port);
        expect(result.header.destination!.port).toBe(destination.port);
      }),
    );
  });

  it('encodeProxyV2 of two IPv4 endpoints gives back the same text', () => {
    fc.assert(
      fc.property(endpoint4, endpoint4, (source, destination) => {
        expect(parsed(encodeProxyV2(source, destination)).header).toEqual({
          version: 2,
          command: 'PROXY',
          family: 'TCP4',
          source,
          destination,
        });
      }),
    );
  });

  const v1Line = fc.oneof(
    fc.tuple(endpoint4, endpoint4).map(([s, d]) => `PROXY TCP4 ${s.address} ${d.address} ${s.port} ${d.port}\r\n`),
    // Senders write IPv6 as inet_ntop does; fast-check's longer dotted spellings would not fit 107 bytes.
    fc
      .tuple(endpoint6, endpoint6)
      .map(([s, d]) => `PROXY TCP6 ${ntop(s.address)} ${ntop(d.address)} ${s.port} ${d.port}\r\n`),
    fc.stringMatching(/^[ -~]{0,91}$/).map((rest) => `PROXY UNKNOWN ${rest}\r\n`),
    fc.constant('PROXY UNKNOWN\r\n'),
  );
  const tlvs = fc
    .array(fc.tuple(fc.integer({ min: 0, max: 255 }), fc.uint8Array({ maxLength: 40 })), { maxLength: 4 })
    .map((items) => Buffer.concat(items.map(([type, value]) => tlv(type, Buffer.from(value)))));
  const v2Header = fc.oneof(
    fc.tuple(endpoint, endpoint).map(([s, d]) => encodeProxyV2(s, d)),
    fc.tuple(endpoint, endpoint, tlvs).map(([s, d, extra]) => {
      const plain = encodeProxyV2(s, d);
      const withTlvs = Buffer.concat([plain, extra]);
      withTlvs.writeUInt16BE(plain.length - 16 + extra.length, 14);
      return withTlvs;
    }),
    fc.uint8Array({ maxLength: 60 }).map((block) => v2(0x20, 0x00, Buffer.from(block))),
    fc.uint8Array({ maxLength: 60 }).map((block) => v2(0x21, 0x00, Buffer.from(block))),
    tlvs.map((extra) => v2(0x21, 0x31, Buffer.concat([Buffer.alloc(216, 0x2f), extra]))),
  );
  const header = fc.oneof(v1Line.map((line) => Buffer.from(line, 'latin1')), v2Header);
  const trailing = fc.uint8Array({ maxLength: 200 }).map((array) => Buffer.from(array));

  it('gives needMore for every proper prefix of a header and the same result for every longer input', () => {
    fc.assert(
      fc.property(header, trailing, (bytes, rest) => {
        const input = Buffer.concat([bytes, rest]);
        const complete = parsed(input);
        expect(complete.length).toBe(bytes.length);
        for (let end = 0; end < bytes.length; end++) {
          expect(parseProxyHeader(input.subarray(0, end))).toEqual({ needMore: true });
        }
        for (let end = bytes.length; end <= input.length; end++) {
          expect(parseProxyHeader(input.subarray(0, end))).toEqual(complete);
        }
      }),
      { numRuns: 300 },
    );
  });

  it('parses the same header however the bytes are split into reads', () => {
    fc.assert(
      fc.property(header, trailing, fc.array(fc.integer({ min: 1, max: 64 }), { maxLength: 30 }), (bytes, rest, sizes) => {
        const input = Buffer.concat([bytes, rest]);
        const expected = parsed(input);
        // Mimics a caller that appends each read to what it has and retries until an answer.
        let received = Buffer.alloc(0);
        let offset = 0;
        let result: ProxyParseResult = { needMore: true };
        for (const size of [...sizes, input.length]) {
          received = Buffer.concat([received, input.subarray(offset, offset + size)]);
          offset += size;
          result = parseProxyHeader(received);
          if (!('needMore' in result)) break;
          expect(received.length).toBeLessThan(bytes.length);
        }
        expect(result).toEqual(expected);
        expect(received.subarray(expected.length)).toEqual(input.subarray(expected.length, received.length));
      }),
      { numRuns: 300 },
    );
  });

  /** Bytes built from the pieces the parser looks for, so that runs get past the first checks. */
  const headerish = fc
    .array(
      fc.oneof(
        fc.constantFrom(
          'PROXY ', 'TCP4 ', 'TCP6 ', 'UNKNOWN', ' ', '192.0.2.1', '::1', '65535', '70000', '\r\n', '\r', '\n', '\0',
          SIGNATURE.toString('latin1'), '\x21', '\x20', '\x11', '\x31', '\x00', '\x0c', '\x24', '\xd8', '\x10\x00',
        ),
        fc.uint8Array({ maxLength: 8 }).map((array) => Buffer.from(array).toString('latin1')),
      ),
      { maxLength: 20 },
    )
    .map((pieces) => Buffer.from(pieces.join(''), 'latin1'));
  const anyBytes = fc.oneof(fc.uint8Array({ maxLength: 300 }).map((array) => Buffer.from(array)), headerish);

  it('answers arbitrary bytes with needMore, a header within the buffer, or a ProxyHeaderError', () => {
    fc.assert(
      fc.property(anyBytes, (bytes) => {
        let result: ProxyParseResult;
        try {
          result = parseProxyHeader(bytes);
        } catch (error) {
          expect(error).toBeInstanceOf(ProxyHeaderError);
          expect((error as GateError).code).toBe('bad_proxy_header');
          return;
        }
        if ('needMore' in result) {
          expect(bytes.length).toBeLessThan(PROXY_HEADER_MAX_LENGTH);
        } else {
          expect(result.length).toBeGreaterThan(0);
          expect(result.length).toBeLessThanOrEqual(bytes.length);
          // A header is accepted only when its prefixes were all incomplete, never contradicted.
          expect(parseProxyHeader(bytes.subarray(0, result.length))).toEqual(result);
        }
      }),
      { numRuns: 3000 },
    );
  });

  it('never waits beyond the largest header', () => {
    fc.assert(
      fc.property(anyBytes, fc.uint8Array({ minLength: PROXY_HEADER_MAX_LENGTH, maxLength: PROXY_HEADER_MAX_LENGTH }), (start, filler) => {
        const input = Buffer.concat([start, Buffer.from(filler)]);
        try {
          expect('needMore' in parseProxyHeader(input)).toBe(false);
        } catch (error) {
          expect(error).toBeInstanceOf(ProxyHeaderError);
        }
      }),
      { numRuns: 200 },
    );
  });
});

/**
 * PROXY protocol headers (HAProxy's proxy-protocol.txt, versions 1 and 2): parsing the header a
 * trusted load balancer puts in front of a connection, and building the one sasl-gate sends to a
 * backend. Pure: bytes in, values out.
 */
import { GateError } from '../errors.js';
import { addressBytes, formatIp, mapIPv4, parseIPv4, parseIPv6 } from './networks.js';

/** One end of the proxied connection. */
export type ProxyEndpoint = { address: string; port: number };

/**
 * A parsed header. `source` and `destination` are present only for PROXY with TCP4 or TCP6; for
 * LOCAL, UNKNOWN and UNIX the caller uses the connection's own endpoints.
 */
export type ProxyHeader = {
  version: 1 | 2;
  command: 'PROXY' | 'LOCAL';
  family: 'TCP4' | 'TCP6' | 'UNKNOWN' | 'UNIX';
  source?: ProxyEndpoint;
  destination?: ProxyEndpoint;
};

/** A complete header and the number of bytes it took, or the news that it has not all arrived. */
export type ProxyParseResult = { header: ProxyHeader; length: number } | { needMore: true };

/** Anything that is not a well-formed PROXY header; the connection is to be refused. */
export class ProxyHeaderError extends GateError {
  constructor(message: string) {
    // Never quotes the input: a client that wrongly speaks first may have sent a password.
    super('bad_proxy_header', message);
    this.name = 'ProxyHeaderError';
  }
}

/** Longest version 1 line, CRLF included (`PROXY UNKNOWN` with two full IPv6 addresses and ports). */
export const PROXY_V1_MAX_LENGTH = 107;
/** Largest version 2 address-and-TLV block accepted; a real one is at most 216 bytes plus a few TLVs. */
export const PROXY_V2_MAX_PAYLOAD = 4096;
/** The most bytes a caller ever needs to buffer before `parseProxyHeader` decides. */
export const PROXY_HEADER_MAX_LENGTH = 16 + PROXY_V2_MAX_PAYLOAD;

const V2_SIGNATURE = Buffer.from([0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a]);
const V2_FIXED_LENGTH = 16;
const V1_PREFIX = Buffer.from('PROXY ', 'latin1');
const CR = 0x0d;
const LF = 0x0a;
const PORT_PATTERN = /^(?:0|[1-9][0-9]{0,4})$/;

const NEED_MORE: { needMore: true } = Object.freeze({ needMore: true });

/** Whether `buffer` agrees with `expected` for as many bytes as both have. */
function agreesWith(buffer: Buffer, expected: Buffer): boolean {
  const n = Math.min(buffer.length, expected.length);
  return buffer.subarray(0, n).equals(expected.subarray(0, n));
}

/**
 * Parses the PROXY header at the start of a connection from the bytes received so far: the header
 * and its length once complete (the bytes after it are protocol data), `needMore` while it is
 * incomplete, a ProxyHeaderError as soon as the bytes cannot become a valid header.
 */
export function parseProxyHeader(buffer: Buffer): ProxyParseResult {
  if (buffer.length === 0) return NEED_MORE;
  // The first byte tells the formats apart, so a TLS ClientHello or an IMAP tag fails at once.
  if (buffer[0] === V2_SIGNATURE[0]) return parseV2(buffer);
  if (buffer[0] === V1_PREFIX[0]) return parseV1(buffer);
  throw new ProxyHeaderError('not a PROXY protocol header');
}

function parseV1(buffer: Buffer): ProxyParseResult {
  if (!agreesWith(buffer, V1_PREFIX)) throw new ProxyHeaderError('not a PROXY protocol header');
  // The CR must leave room for its LF within the maximum length.
  const lastCr = PROXY_V1_MAX_LENGTH - 2;
  const scan = Math.min(buffer.length, lastCr + 1);
  for (let i = 0; i < scan; i++) {
    const byte = buffer[i];
    if (byte === CR) {
      if (i + 1 === buffer.length) return NEED_MORE;
      if (buffer[i + 1] !== LF) throw new ProxyHeaderError('PROXY v1 line has a CR without LF');
      return { header: decodeV1Line(buffer.toString('latin1', V1_PREFIX.length, i)), length: i + 2 };
    }
    if (byte === undefined || byte < 0x20 || byte > 0x7e) {
      throw new ProxyHeaderError('PROXY v1 line has a byte that is not printable US-ASCII');
    }
  }
  if (buffer.length > lastCr) throw new ProxyHeaderError(`PROXY v1 line has no CRLF within ${PROXY_V1_MAX_LENGTH} bytes`);
  return NEED_MORE;
}

/** Decodes what follows `PROXY ` up to the CRLF. */
function decodeV1Line(rest: string): ProxyHeader {
  // The spec tells receivers to ignore whatever follows UNKNOWN.
  if (rest === 'UNKNOWN' || rest.startsWith('UNKNOWN ')) return { version: 1, command: 'PROXY', family: 'UNKNOWN' };
  const fields = rest.split(' ');
  const [family, source, destination, sourcePort, destinationPort] = fields;
  if (family !== 'TCP4' && family !== 'TCP6') throw new ProxyHeaderError('PROXY v1 protocol is not TCP4, TCP6 or UNKNOWN');
  if (fields.length !== 5 || source === undefined || destination === undefined) {
    throw new ProxyHeaderError('PROXY v1 line does not have exactly five fields separated by single spaces');
  }
  return {
    version: 1,
    command: 'PROXY',
    family,
    source: { address: v1Address(family, source), port: v1Port(sourcePort) },
    destination: { address: v1Address(family, destination), port: v1Port(destinationPort) },
  };
}

function v1Address(family: 'TCP4' | 'TCP6', text: string): string {
  const bytes = family === 'TCP4' ? parseIPv4(text) : parseIPv6(text);
  if (bytes === undefined) throw new ProxyHeaderError(`PROXY v1 address is not a canonical ${family === 'TCP4' ? 'IPv4' : 'IPv6'} address`);
  return formatIp(bytes);
}

function v1Port(text: string | undefined): number {
  const port = text !== undefined && PORT_PATTERN.test(text) ? Number(text) : NaN;
  if (!(port <= 0xffff)) throw new ProxyHeaderError('PROXY v1 port is not a decimal number from 0 to 65535');
  return port;
}

/** Address block length per v2 address family (high nibble of byte 14). */
const V2_ADDRESS_LENGTH: Record<number, number> = { 0x1: 12, 0x2: 36, 0x3: 216 };
/** The family/protocol bytes the spec defines; anything else must be rejected. */
const V2_FAMILIES = new Set([0x00, 0x11, 0x12, 0x21, 0x22, 0x31, 0x32]);
const V2_STREAM = 0x1;

function parseV2(buffer: Buffer): ProxyParseResult {
  if (!agreesWith(buffer, V2_SIGNATURE)) throw new ProxyHeaderError('not a PROXY protocol header');
  // Each fixed field is judged as soon as it arrives, so garbage is refused without waiting.
  const versionCommand = buffer[12];
  if (versionCommand !== undefined) {
    if (versionCommand >> 4 !== 2) throw new ProxyHeaderError('PROXY v2 header has an unsupported version');
    if ((versionCommand & 0xf) > 1) throw new ProxyHeaderError('PROXY v2 header has an unknown command');
  }
  const familyProtocol = buffer[13];
  if (familyProtocol !== undefined && !V2_FAMILIES.has(familyProtocol)) {
    throw new ProxyHeaderError('PROXY v2 header has an unknown address family or transport protocol');
  }
  if (versionCommand === undefined || familyProtocol === undefined || buffer.length < V2_FIXED_LENGTH) return NEED_MORE;
  const payloadLength = buffer.readUInt16BE(14);
  if (payloadLength > PROXY_V2_MAX_PAYLOAD) {
    throw new ProxyHeaderError(`PROXY v2 header is longer than ${V2_FIXED_LENGTH + PROXY_V2_MAX_PAYLOAD} bytes`);
  }
  const length = V2_FIXED_LENGTH + payloadLength;
  if (buffer.length < length) return NEED_MORE;
  const payload = buffer.subarray(V2_FIXED_LENGTH, length);

  // LOCAL: the proxy's own connection (a health check); the spec says to ignore the whole block.
  if ((versionCommand & 0xf) === 0) return { header: { version: 2, command: 'LOCAL', family: 'UNKNOWN' }, length };
  const family = familyProtocol >> 4;
  const addressLength = V2_ADDRESS_LENGTH[family];
  // UNSPEC: nothing says where addresses end and TLVs start, so the block is skipped whole.
  if (addressLength === undefined) return { header: { version: 2, command: 'PROXY', family: 'UNKNOWN' }, length };
  if (payload.length < addressLength) throw new ProxyHeaderError('PROXY v2 address block is too short for its family');
  checkTlvs(payload.subarray(addressLength));
  // Datagram families are valid but meaningless for mail: the spec's fallback is UNSPEC.
  if ((familyProtocol & 0xf) !== V2_STREAM) return { header: { version: 2, command: 'PROXY', family: 'UNKNOWN' }, length };
  if (family === 0x3) return { header: { version: 2, command: 'PROXY', family: 'UNIX' }, length };
  const size = family === 0x1 ? 4 : 16;
  const ports = 2 * size;
  return {
    header: {
      version: 2,
      command: 'PROXY',
      family: family === 0x1 ? 'TCP4' : 'TCP6',
      source: { address: formatIp(payload.subarray(0, size)), port: payload.readUInt16BE(ports) },
      destination: { address: formatIp(payload.subarray(size, ports)), port: payload.readUInt16BE(ports + 2) },
    },
    length,
  };
}

/** TLVs are ignored, but they must tile the rest of the block exactly. */
function checkTlvs(tlvs: Buffer): void {
  let offset = 0;
  while (offset < tlvs.length) {
    if (offset + 3 > tlvs.length) throw new ProxyHeaderError('PROXY v2 TLV is truncated');
    offset += 3 + tlvs.readUInt16BE(offset + 1);
    if (offset > tlvs.length) throw new ProxyHeaderError('PROXY v2 TLV runs past the end of the header');
  }
}

function endpointBytes(endpoint: ProxyEndpoint, role: string): Buffer {
  const bytes = addressBytes(endpoint.address);
  if (bytes === undefined) throw new ProxyHeaderError(`cannot build a PROXY header: the ${role} address is not an IP address`);
  if (!Number.isInteger(endpoint.port) || endpoint.port < 0 || endpoint.port > 0xffff) {
    throw new ProxyHeaderError(`cannot build a PROXY header: the ${role} port is not from 0 to 65535`);
  }
  return bytes;
}

/**
 * A version 2 PROXY header (command PROXY, TCP) for a backend connection; IPv4-mapped addresses are
 * sent as IPv4, and a mixed pair as IPv6 since one header carries one family.
 */
export function encodeProxyV2(source: ProxyEndpoint, destination: ProxyEndpoint, options: { tls?: boolean } = {}): Buffer {
  let from = endpointBytes(source, 'source');
  let to = endpointBytes(destination, 'destination');
  const ipv4 = from.length === 4 && to.length === 4;
  if (!ipv4) {
    if (from.length === 4) from = mapIPv4(from);
    if (to.length === 4) to = mapIPv4(to);
  }
  // PP2_TYPE_SSL with PP2_CLIENT_SSL and verify = 0: the client spoke TLS (to sasl-gate), so a
  // backend that refuses plaintext logins treats the connection as secured.
  const tlv = options.tls ? Buffer.from([0x20, 0x00, 0x05, 0x01, 0x00, 0x00, 0x00, 0x00]) : Buffer.alloc(0);
  const addressLength = 2 * from.length + 4;
  const payloadLength = addressLength + tlv.length;
  const header = Buffer.alloc(V2_FIXED_LENGTH + payloadLength);
  V2_SIGNATURE.copy(header, 0);
  header[12] = 0x21; // version 2, PROXY
  header[13] = ipv4 ? 0x11 : 0x21; // AF_INET or AF_INET6, STREAM
  header.writeUInt16BE(payloadLength, 14);
  from.copy(header, V2_FIXED_LENGTH);
  to.copy(header, V2_FIXED_LENGTH + from.length);
  header.writeUInt16BE(source.port, V2_FIXED_LENGTH + 2 * from.length);
  header.writeUInt16BE(destination.port, V2_FIXED_LENGTH + 2 * from.length + 2);
  tlv.copy(header, V2_FIXED_LENGTH + addressLength);
  return header;
}

/** A version 2 LOCAL header: sasl-gate's own connection (a capability probe), not a client's. */
export function encodeProxyV2Local(): Buffer {
  const header = Buffer.alloc(V2_FIXED_LENGTH);
  V2_SIGNATURE.copy(header, 0);
  header[12] = 0x20; // version 2, LOCAL
  header[13] = 0x00; // UNSPEC: a LOCAL header carries no addresses
  return header;
}

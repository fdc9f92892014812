/**
 * Trusted network lists (who may send a PROXY protocol header, for instance) and the address
 * helpers they need. Pure: strings in, values out.
 */
import { BlockList, SocketAddress } from 'node:net';
import { GateError } from '../errors.js';

/** A network entry that is not an address or CIDR block; `entry` is the offending text. */
export class NetworkError extends GateError {
  readonly entry: string;
  constructor(entry: string, reason: string) {
    super('bad_network', `bad network ${JSON.stringify(entry)}: ${reason}`);
    this.name = 'NetworkError';
    this.entry = entry;
  }
}

/** A set of addresses and CIDR blocks, IPv4 and IPv6. */
export interface NetworkList {
  /** True when the address lies in one of the entries; an IPv4-mapped IPv6 address counts as its IPv4 address. */
  contains(address: string): boolean;
  /** The entries in canonical CIDR form, for logs and diagnostics. */
  readonly entries: readonly string[];
}

const IPV4_OCTET = '(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9][0-9]|[0-9])';
// Leading zeros are refused: some resolvers read them as octal, so `010.0.0.1` is ambiguous.
const IPV4_PATTERN = new RegExp(`^${IPV4_OCTET}(?:\\.${IPV4_OCTET}){3}$`);
const HEX_GROUP = /^[0-9a-fA-F]{1,4}$/;
const PREFIX_PATTERN = /^(?:0|[1-9][0-9]{0,2})$/;

/** The 4 bytes of a dotted-quad IPv4 address (no leading zeros), or undefined. */
export function parseIPv4(text: string): Buffer | undefined {
  if (!IPV4_PATTERN.test(text)) return undefined;
  return Buffer.from(text.split('.').map(Number));
}

/** The 16 bytes of an IPv6 address in any RFC 4291 text form (no zone), or undefined. */
export function parseIPv6(text: string): Buffer | undefined {
  let hex = text;
  const lastColon = text.lastIndexOf(':');
  if (lastColon < 0) return undefined;
  if (text.includes('.', lastColon)) {
    // A dotted-quad tail stands for the last two groups.
    const tail = parseIPv4(text.slice(lastColon + 1));
    if (tail === undefined) return undefined;
    hex = `${text.slice(0, lastColon + 1)}${tail.readUInt16BE(0).toString(16)}:${tail.readUInt16BE(2).toString(16)}`;
  }
  const halves = hex.split('::');
  if (halves.length > 2) return undefined;
  const groupsOf = (part: string): string[] => (part === '' ? [] : part.split(':'));
  const head = groupsOf(halves[0] ?? '');
  const tail = halves.length === 2 ? groupsOf(halves[1] ?? '') : [];
  if (![...head, ...tail].every((group) => HEX_GROUP.test(group))) return undefined;
  const count = head.length + tail.length;
  if (halves.length === 2 ? count > 7 : count !== 8) return undefined;
  const bytes = Buffer.alloc(16);
  head.forEach((group, i) => bytes.writeUInt16BE(parseInt(group, 16), i * 2));
  tail.forEach((group, i) => bytes.writeUInt16BE(parseInt(group, 16), 16 - (tail.length - i) * 2));
  return bytes;
}

const MAPPED_PREFIX = Buffer.from([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff]);

/** The embedded IPv4 bytes of an IPv4-mapped IPv6 address (`::ffff:a.b.c.d`), or undefined. */
export function unmapIPv4(bytes: Buffer): Buffer | undefined {
  return bytes.length === 16 && bytes.subarray(0, 12).equals(MAPPED_PREFIX) ? bytes.subarray(12) : undefined;
}

/** `::ffff:a.b.c.d` as 16 bytes. */
export function mapIPv4(bytes: Buffer): Buffer {
  return Buffer.concat([MAPPED_PREFIX, bytes]);
}

/** Text of a 4- or 16-byte address, IPv6 formatted exactly as Node reports socket addresses. */
export function formatIp(bytes: Buffer): string {
  if (bytes.length === 4) return Array.from(bytes).join('.');
  if (bytes.length !== 16) throw new RangeError(`an IP address has 4 or 16 bytes, not ${bytes.length}`);
  const groups: string[] = [];
  for (let i = 0; i < 16; i += 2) groups.push(bytes.readUInt16BE(i).toString(16));
  // Node's own formatter, so that a header's address compares equal to a socket's remoteAddress.
  return new SocketAddress({ address: groups.join(':'), family: 'ipv6' }).address;
}

/** Removes the zone of a scoped IPv6 address (`fe80::1%eth0`): it names an interface, not a host. */
function withoutZone(address: string): string {
  const percent = address.indexOf('%');
  return percent < 0 ? address : address.slice(0, percent);
}

/** Bytes of an address as a socket reports it (zone dropped), 4 for IPv4 and IPv4-mapped IPv6, else 16. */
export function addressBytes(address: string): Buffer | undefined {
  const bare = withoutZone(address);
  const v4 = parseIPv4(bare);
  if (v4 !== undefined) return v4;
  const v6 = parseIPv6(bare);
  if (v6 === undefined) return undefined;
  return unmapIPv4(v6) ?? v6;
}

/**
 * One spelling per host, for keys and logs: IPv4-mapped IPv6 becomes IPv4, IPv6 is compressed and
 * lowercased, a zone is dropped; undefined when the text is not an address.
 */
export function canonicalAddress(address: string): string | undefined {
  const bytes = addressBytes(address);
  return bytes === undefined ? undefined : formatIp(bytes);
}

/** The address with every bit after `prefix` cleared. */
function networkOf(bytes: Buffer, prefix: number): Buffer {
  const masked = Buffer.from(bytes);
  for (let i = 0; i < masked.length; i++) {
    const keep = Math.max(0, Math.min(8, prefix - i * 8));
    masked[i] = (masked[i] ?? 0) & (0xff << (8 - keep)) & 0xff;
  }
  return masked;
}

type Rule = { bytes: Buffer; prefix: number };

/** Parses one entry; IPv4-mapped IPv6 entries become IPv4 ones so they compare like client addresses. */
function parseEntry(entry: string): Rule {
  const text = entry.trim();
  const slash = text.indexOf('/');
  const addressText = slash < 0 ? text : text.slice(0, slash);
  const prefixText = slash < 0 ? undefined : text.slice(slash + 1);
  const v4 = parseIPv4(addressText);
  const v6 = v4 === undefined ? parseIPv6(addressText) : undefined;
  const bytes = v4 ?? v6;
  if (bytes === undefined) throw new NetworkError(entry, 'not an IPv4 or IPv6 address or CIDR block');
  const bits = bytes.length * 8;
  let prefix = bits;
  if (prefixText !== undefined) {
    if (!PREFIX_PATTERN.test(prefixText) || Number(prefixText) > bits) {
      throw new NetworkError(entry, `the prefix length must be a number from 0 to ${bits}`);
    }
    prefix = Number(prefixText);
  }
  const network = networkOf(bytes, prefix);
  // A typo such as 192.168.1.0/2 for /24 would silently trust a quarter of the internet.
  if (!network.equals(bytes)) {
    throw new NetworkError(entry, `host bits are set; the network is ${formatIp(network)}/${prefix}`);
  }
  const mapped = unmapIPv4(bytes);
  if (mapped !== undefined && prefix >= 96) return { bytes: Buffer.from(mapped), prefix: prefix - 96 };
  return { bytes, prefix };
}

class BlockListNetworks implements NetworkList {
  readonly entries: readonly string[];
  private readonly v4 = new BlockList();
  private readonly v6 = new BlockList();

  constructor(rules: Rule[]) {
    for (const rule of rules) {
      if (rule.bytes.length === 4) this.v4.addSubnet(formatIp(rule.bytes), rule.prefix, 'ipv4');
      else this.v6.addSubnet(formatIp(rule.bytes), rule.prefix, 'ipv6');
    }
    this.entries = Object.freeze(rules.map((rule) => `${formatIp(rule.bytes)}/${rule.prefix}`));
  }

  contains(address: string): boolean {
    const bytes = addressBytes(address);
    if (bytes === undefined) return false;
    // Separate lists, each asked only in its own family: BlockList on its own also matches IPv4
    // addresses against IPv6 rules such as ::/0, which would widen what an IPv6 entry trusts.
    return bytes.length === 4 ? this.v4.check(formatIp(bytes), 'ipv4') : this.v6.check(formatIp(bytes), 'ipv6');
  }
}

/** Parses addresses and CIDR blocks (`10.0.0.0/8`, `fd00::/8`, `::1`); throws NetworkError naming a bad entry. */
export function parseNetworks(list: readonly string[]): NetworkList {
  const rules = list.map((entry) => {
    if (typeof entry !== 'string') throw new NetworkError(String(entry), 'not a string');
    return parseEntry(entry);
  });
  return new BlockListNetworks(rules);
}

const MAX_RAW_ADDRESS_KEY = 256;

/**
 * The key under which limits and failures count `address`: IPv4 as is, IPv4-mapped IPv6 as the
 * IPv4 address it carries, other IPv6 addresses by their /64 (one host or home usually holds a
 * whole /64, so counting single addresses would let it rotate freely), anything unparseable
 * lower-cased and truncated.
 */
export function clientAddressKey(address: string): string {
  let text = address.trim().toLowerCase();
  if (text.startsWith('[') && text.endsWith(']')) text = text.slice(1, -1);
  const zone = text.indexOf('%');
  if (zone >= 0) text = text.slice(0, zone);
  if (parseIPv4(text)) return text;
  const bytes = parseIPv6(text);
  if (bytes) {
    const mapped = unmapIPv4(bytes);
    if (mapped) return Array.from(mapped).join('.');
    const groups = [0, 2, 4, 6].map((i) => bytes.readUInt16BE(i).toString(16));
    return `${groups.join(':')}::/64`;
  }
  return text.slice(0, MAX_RAW_ADDRESS_KEY);
}

import { isUtf8 } from 'node:buffer';
import { GateError } from '../errors.js';

/**
 * ManageSieve (RFC 5804) lines as values, without any I/O: client commands, SASL responses,
 * and the backend's responses and capability lines all use the same words (atoms, quoted
 * strings, literals, and a parenthesized response code).
 */

/** One line and the literal announced at its end, if any (the framer's output). */
export interface SieveSegment {
  /** The line's text without CRLF; when a literal follows, it ends with `{n}` or `{n+}`. */
  text: Buffer;
  literal?: Buffer;
}

/** A value on a ManageSieve line. */
export type SieveValue =
  | { type: 'atom'; value: string }
  | { type: 'string'; value: Buffer; form: 'quoted' | 'literal' }
  /** A response code: `(SASL "..")`, `(QUOTA/MAXSIZE)`, `(TAG "x")`. */
  | { type: 'list'; items: SieveValue[] };

/** A client command: its upper-cased name and its arguments. */
export interface SieveCommand {
  name: string;
  args: SieveValue[];
}

/** A server response line: `OK`, `NO` or `BYE`, an optional response code, an optional human text. */
export interface SieveResponse {
  status: 'OK' | 'NO' | 'BYE';
  /** The response code's items, e.g. `[atom SASL, string ...]`. */
  code: SieveValue[] | undefined;
  text: Buffer | undefined;
}

/** A line that is not ManageSieve; the message is safe to show. */
export class SieveSyntaxError extends GateError {
  declare readonly code: 'sieve_syntax';
  constructor(message: string) {
    super('sieve_syntax', message, { clientMessage: message });
    this.name = 'SieveSyntaxError';
  }
}

const SP = 0x20;
const DQUOTE = 0x22;
const BACKSLASH = 0x5c;
/**
 * RFC 5804 allows quoted strings of 1024 octets, longer ones being literals. sasl-gate writes no
 * longer ones, but reads them (bounded by the line length): clients quote their bearer tokens,
 * which are longer (Net_Sieve, Roundcube's library, quotes every ASCII string).
 */
export const MAX_QUOTED_LENGTH = 1024;
/** RFC 5804 `number`: below 2^32. */
export const MAX_NUMBER = 4294967295;
/** A literal announcement at the end of a line (`{n}` or `{n+}`). */
export const LITERAL_AT_END = /\{(\d{1,20})(\+?)\}$/;

/** RFC 5804 ATOM-CHAR: printable ASCII except `"`, `(`, `)`, `\`, `{` and SP. */
export function isAtomChar(byte: number): boolean {
  if (byte <= 0x20 || byte >= 0x7f) return false;
  return byte !== DQUOTE && byte !== 0x28 && byte !== 0x29 && byte !== BACKSLASH && byte !== 0x7b;
}

/** Reads every value on a framed line (values separated by single spaces). */
export function parseValues(segments: readonly SieveSegment[]): SieveValue[] {
  if (segments.length === 0) throw new SieveSyntaxError('Empty line');
  let segmentIndex = 0;
  let pos = 0;
  const text = () => segments[segmentIndex]!.text;
  const fail = (message: string): never => {
    throw new SieveSyntaxError(message);
  };

  const parseValue = (inList: boolean): SieveValue => {
    const line = text();
    const byte = line[pos];
    if (byte === DQUOTE) {
      const bytes: number[] = [];
      pos++;
      for (;;) {
        if (pos >= line.length) fail('Unterminated quoted string');
        const c = line[pos++]!;
        if (c === DQUOTE) break;
        if (c === BACKSLASH) {
          const escaped = line[pos++];
          if (escaped !== DQUOTE && escaped !== BACKSLASH) fail('Invalid escape in quoted string');
          bytes.push(escaped!);
        } else if (c === 0x00 || c === 0x0d || c === 0x0a) {
          fail('Invalid character in quoted string');
        } else {
          bytes.push(c);
        }
      }
      return { type: 'string', value: Buffer.from(bytes), form: 'quoted' };
    }
    if (byte === 0x7b /* { */) {
      const segment = segments[segmentIndex]!;
      const announced = LITERAL_AT_END.exec(line.subarray(pos).toString('latin1'));
      if (segment.literal === undefined || !announced || announced.index !== 0) fail('Invalid literal');
      if (Number(announced![1]) !== segment.literal!.length) fail('Literal of the wrong size');
      segmentIndex++;
      pos = 0;
      if (segmentIndex >= segments.length) fail('Literal without end of line');
      return { type: 'string', value: segment.literal!, form: 'literal' };
    }
    if (byte === 0x28 /* ( */ && !inList) {
      pos++;
      const items: SieveValue[] = [];
      for (;;) {
        const current = text();
        if (current[pos] === 0x29 /* ) */) {
          pos++;
          if (items.length === 0) fail('Empty response code');
          return { type: 'list', items };
        }
        if (items.length > 0) {
          if (current[pos] !== SP) fail('Expected space in response code');
          pos++;
        }
        if (pos >= text().length) fail('Unterminated response code');
        items.push(parseValue(true));
      }
    }
    const start = pos;
    while (pos < line.length && isAtomChar(line[pos]!)) pos++;
    if (pos === start) fail('Invalid argument');
    return { type: 'atom', value: line.subarray(start, pos).toString('latin1') };
  };

  const values: SieveValue[] = [];
  for (;;) {
    const line = text();
    if (pos >= line.length) {
      if (segments[segmentIndex]!.literal !== undefined) fail('Invalid literal');
      break;
    }
    if (values.length > 0) {
      if (line[pos] !== SP) fail('Expected space between arguments');
      pos++;
      if (pos >= line.length) fail('Trailing space');
    }
    values.push(parseValue(false));
  }
  if (segmentIndex !== segments.length - 1) fail('Unexpected data after the line');
  return values;
}

/** Parses a client command: a command name (an atom) and its arguments. */
export function parseCommand(segments: readonly SieveSegment[]): SieveCommand {
  const values = parseValues(segments);
  const [name, ...args] = values;
  if (name?.type !== 'atom') throw new SieveSyntaxError('Missing command name');
  if (args.some((a) => a.type === 'list')) throw new SieveSyntaxError('Unexpected parenthesis');
  return { name: name.value.toUpperCase(), args };
}

/** The one string of a SASL response line (RFC 5804 `sasl-response = string`). */
export function parseStringLine(segments: readonly SieveSegment[]): SieveValue & { type: 'string' } {
  const values = parseValues(segments);
  const [value] = values;
  if (values.length !== 1 || value?.type !== 'string') throw new SieveSyntaxError('Expected one string');
  return value;
}

/** Parses a server response line (`OK`, `NO`, `BYE` with optional code and text). */
export function parseResponse(segments: readonly SieveSegment[]): SieveResponse {
  const values = parseValues(segments);
  const [status, ...rest] = values;
  const word = status?.type === 'atom' ? status.value.toUpperCase() : '';
  if (word !== 'OK' && word !== 'NO' && word !== 'BYE') throw new SieveSyntaxError('Not a response');
  let code: SieveValue[] | undefined;
  if (rest[0]?.type === 'list') code = (rest.shift() as { items: SieveValue[] }).items;
  const text = rest.shift();
  if (rest.length > 0 || (text !== undefined && text.type !== 'string')) throw new SieveSyntaxError('Invalid response text');
  return { status: word, code, text: text?.type === 'string' ? text.value : undefined };
}

/** A capability line (`"SIEVE" "fileinto ..."`, `"STARTTLS"`): its upper-cased name and value. */
export function parseCapability(segments: readonly SieveSegment[]): { name: string; value: string | undefined } {
  const values = parseValues(segments);
  const [name, value] = values;
  if (values.length > 2 || name?.type !== 'string' || (value !== undefined && value.type !== 'string')) {
    throw new SieveSyntaxError('Not a capability line');
  }
  return { name: name.value.toString('utf8').toUpperCase(), value: value?.value.toString('utf8') };
}

/**
 * A string as sent on the wire: quoted when RFC 5804 allows (UTF-8 without CR, LF or NUL, at most
 * 1024 octets), otherwise a literal; `{n+}` from a client, `{n}` from a server.
 */
export function encodeString(value: Buffer | string, from: 'client' | 'server'): Buffer {
  const bytes = typeof value === 'string' ? Buffer.from(value, 'utf8') : value;
  const quotable = bytes.length <= MAX_QUOTED_LENGTH && isUtf8(bytes) && !bytes.some((b) => b === 0x00 || b === 0x0d || b === 0x0a);
  if (!quotable) return Buffer.concat([Buffer.from(`{${bytes.length}${from === 'client' ? '+' : ''}}\r\n`, 'latin1'), bytes]);
  const out: number[] = [DQUOTE];
  for (const b of bytes) {
    if (b === DQUOTE || b === BACKSLASH) out.push(BACKSLASH);
    out.push(b);
  }
  out.push(DQUOTE);
  return Buffer.from(out);
}

import { GateError } from '../errors.js';
import type { CommandSegment } from './framer.js';
import { tagOf } from './framer.js';

/** A parsed argument of a client command. */
export type ImapValue =
  | { type: 'atom'; value: string }
  | { type: 'string'; value: Buffer; form: 'quoted' | 'literal' }
  | { type: 'nil' }
  | { type: 'list'; items: ImapValue[] };

export interface ImapCommand {
  tag: string;
  /** Upper-cased command name. */
  name: string;
  args: ImapValue[];
}

/** A syntax error in a client command; `tag` is known when the line began with one. */
export class ImapSyntaxError extends GateError {
  declare readonly code: 'imap_syntax';
  constructor(
    message: string,
    readonly tag: string | undefined,
  ) {
    super('imap_syntax', message, { clientMessage: message });
    this.name = 'ImapSyntaxError';
  }
}

/** Pre-login commands need one level (ID); a few more cost nothing, thousands would exhaust the stack. */
const MAX_LIST_DEPTH = 8;
const SP = 0x20;
const DQUOTE = 0x22;
const BACKSLASH = 0x5c;

/** RFC 3501 atom-specials plus CTL, SP and 8-bit: whatever ends an atom. */
function isAtomChar(byte: number): boolean {
  if (byte <= 0x20 || byte >= 0x7f) return false;
  return !'(){%*"\\]'.includes(String.fromCharCode(byte));
}

/** RFC 3501 tag: ASTRING-CHAR (atom chars and `]`) except `+`. */
function isTagChar(byte: number): boolean {
  return (isAtomChar(byte) || byte === 0x5d) && byte !== 0x2b;
}

/** Parses a framed command into tag, name and arguments (atoms, strings, literals, lists, NIL). */
export function parseCommand(segments: CommandSegment[]): ImapCommand {
  const first = segments[0]?.text ?? Buffer.alloc(0);
  const provisionalTag = tagOf(first);
  let segmentIndex = 0;
  let pos = 0;
  const text = () => segments[segmentIndex]!.text;
  const fail = (message: string): never => {
    throw new ImapSyntaxError(message, provisionalTag);
  };

  let end = 0;
  while (end < first.length && isTagChar(first[end]!)) end++;
  if (end === 0) fail('Missing or invalid tag');
  const tag = first.subarray(0, end).toString('latin1');
  if (first[end] !== SP) fail(end === first.length ? 'Missing command' : 'Invalid tag');
  pos = end + 1;
  let nameEnd = pos;
  while (nameEnd < first.length && isAtomChar(first[nameEnd]!)) nameEnd++;
  if (nameEnd === pos) fail('Missing command');
  const name = first.subarray(pos, nameEnd).toString('latin1').toUpperCase();
  pos = nameEnd;

  let depth = 0;
  const parseValue = (): ImapValue => {
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
          continue;
        }
        if (c === 0x00) fail('NUL in quoted string');
        bytes.push(c);
      }
      return { type: 'string', value: Buffer.from(bytes), form: 'quoted' };
    }
    if (byte === 0x7b /* { */) {
      const segment = segments[segmentIndex]!;
      const close = line.indexOf(0x7d, pos);
      if (segment.literal === undefined || close !== line.length - 1) fail('Invalid literal');
      const value = segment.literal!;
      segmentIndex++;
      pos = 0;
      if (segmentIndex >= segments.length) fail('Literal without end of command');
      return { type: 'string', value, form: 'literal' };
    }
    if (byte === 0x28 /* ( */) {
      if (++depth > MAX_LIST_DEPTH) fail('Lists nested too deeply');
      pos++;
      const items: ImapValue[] = [];
      for (;;) {
        const current = text();
        if (current[pos] === 0x29 /* ) */) {
          pos++;
          depth--;
          return { type: 'list', items };
        }
        if (items.length > 0) {
          if (current[pos] !== SP) fail('Expected space in list');
          pos++;
        }
        if (pos >= text().length && segments[segmentIndex]!.literal === undefined) fail('Unterminated list');
        items.push(parseValue());
      }
    }
    const start = pos;
    while (pos < line.length && isAtomChar(line[pos]!)) pos++;
    if (pos === start) fail('Invalid argument');
    const atom = line.subarray(start, pos).toString('latin1');
    return atom.toUpperCase() === 'NIL' ? { type: 'nil' } : { type: 'atom', value: atom };
  };

  const args: ImapValue[] = [];
  if (name === 'AUTHENTICATE' && segments.length === 1) {
    // The initial response is base64 or "=", judged by the SASL layer, which gives a clearer
    // reply than a generic syntax error; so the words are taken as they are.
    const rest = first.subarray(pos).toString('latin1');
    if (rest !== '' && !/^( [\x21-\x7e]+)+$/.test(rest)) fail('Invalid AUTHENTICATE arguments');
    const words = rest.split(' ').slice(1);
    return { tag, name, args: words.map((value) => ({ type: 'atom', value })) };
  }
  for (;;) {
    const line = text();
    if (pos >= line.length) {
      if (segments[segmentIndex]!.literal !== undefined) fail('Invalid literal');
      break;
    }
    if (line[pos] !== SP) fail('Expected space between arguments');
    pos++;
    if (pos >= line.length) fail('Trailing space');
    args.push(parseValue());
  }
  if (segmentIndex !== segments.length - 1) fail('Unexpected data after command');
  return { tag, name, args };
}

/** The value of an astring argument (atom, quoted or literal) as bytes, or undefined. */
export function astringValue(value: ImapValue | undefined): Buffer | undefined {
  if (value?.type === 'atom') return Buffer.from(value.value, 'latin1');
  if (value?.type === 'string') return value.value;
  return undefined;
}

/** Encodes a string argument for a command sent to a server: quoted when safe, else a literal. */
export function encodeAstring(value: Buffer, options: { literal: boolean; literalPlus: boolean }): {
  text: string;
  literal?: Buffer;
} {
  const quotable = !options.literal && value.every((b) => b >= 0x20 && b < 0x7f);
  if (quotable) {
    return { text: `"${value.toString('latin1').replace(/[\\"]/g, (c) => `\\${c}`)}"` };
  }
  return { text: `{${value.length}${options.literalPlus ? '+' : ''}}`, literal: value };
}

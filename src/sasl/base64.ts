/**
 * Byte-level codecs shared by the SASL mechanisms: the strict base64 of client responses and
 * server challenges (IMAP AUTHENTICATE, SMTP AUTH), and strict UTF-8 decoding.
 */
import { isUtf8 } from 'node:buffer';
import { SaslError } from '../errors.js';

const EQUALS = 0x3d;

/** 6-bit value of each base64 alphabet byte, -1 for every other byte. */
const SEXTET_OF_BYTE: Int8Array = (() => {
  const table = new Int8Array(256).fill(-1);
  const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/';
  for (let i = 0; i < alphabet.length; i++) table[alphabet.charCodeAt(i)] = i;
  return table;
})();

function sextetAt(bytes: Uint8Array, index: number): number {
  const byte = bytes[index];
  return byte === undefined ? -1 : (SEXTET_OF_BYTE[byte] ?? -1);
}

/**
 * Checks the RFC 4648 rules Node's own decoder ignores (it skips foreign characters and stops
 * quietly at bad padding), so that one line has exactly one meaning and round trips are exact.
 */
function assertCanonicalBase64(bytes: Uint8Array): void {
  const length = bytes.length;
  if (length === 0 || length % 4 !== 0) throw new SaslError('invalid base64');

  let padding = 0;
  if (bytes[length - 1] === EQUALS) padding = bytes[length - 2] === EQUALS ? 2 : 1;

  const dataLength = length - padding;
  for (let i = 0; i < dataLength; i++) {
    if (sextetAt(bytes, i) < 0) throw new SaslError('invalid base64');
  }

  // Non-zero bits hidden under the padding would let two different lines decode alike.
  const lastSextet = sextetAt(bytes, dataLength - 1);
  if (padding === 2 && (lastSextet & 0x0f) !== 0) throw new SaslError('invalid base64');
  if (padding === 1 && (lastSextet & 0x03) !== 0) throw new SaslError('invalid base64');
}

/** Decodes one client SASL response line (strict RFC 4648 base64; `=` alone is the empty response). */
export function decodeSaslResponse(line: string | Buffer): Buffer {
  const bytes = typeof line === 'string' ? asciiBytes(line) : line;
  if (bytes.length === 1 && bytes[0] === EQUALS) return Buffer.alloc(0);
  assertCanonicalBase64(bytes);
  return Buffer.from(bytes.toString('latin1'), 'base64');
}

/** Converting a string with latin1 would truncate U+0141 to 0x41 ('A') and let it pass as base64. */
function asciiBytes(text: string): Buffer {
  for (let i = 0; i < text.length; i++) {
    if (text.charCodeAt(i) > 0x7f) throw new SaslError('invalid base64');
  }
  return Buffer.from(text, 'latin1');
}

/** Encodes a server challenge as base64 (strings as UTF-8); an empty challenge stays empty. */
export function encodeSaslChallenge(data: Buffer | string): string {
  return (typeof data === 'string' ? Buffer.from(data, 'utf8') : data).toString('base64');
}

/** Decodes bytes as UTF-8, rejecting invalid sequences instead of replacing them with U+FFFD. */
export function decodeUtf8Strict(bytes: Buffer): string {
  if (!isUtf8(bytes)) throw new SaslError('invalid UTF-8');
  return bytes.toString('utf8');
}

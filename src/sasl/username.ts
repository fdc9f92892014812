/**
 * The user-name rule applied before any name reaches a backend: a name must not be able to break
 * a protocol line (IMAP, SMTP, Dovecot's auth protocol, log lines) or hide a decoding failure.
 */
import { SaslError } from '../errors.js';

/** Longest name accepted, in UTF-8 bytes (what RFC 4616 asks servers to support at least). */
export const MAX_USERNAME_BYTES = 255;

/**
 * C0 controls (NUL, TAB, CR, LF, ...), DEL and C1 controls break line-based protocols; U+2028/U+2029
 * are line breaks to some parsers and log viewers; U+FFFD betrays a lossy decode upstream; lone
 * surrogates cannot be encoded as UTF-8 at all and would turn into U+FFFD on the wire.
 */
const FORBIDDEN_CHARACTER = /[\u0000-\u001f\u007f-\u009f\u2028\u2029\ufffd]|\p{Cs}/u;

/** Padding around a name makes two spellings of one account and trips up backends that trim. */
const EDGE_WHITESPACE = /^\s|\s$/u;

/** Throws SaslError('invalid user name') unless `name` is safe to hand to a backend. */
export function checkUsername(name: string): void {
  if (
    name.length === 0 ||
    // Every UTF-16 unit costs at least one UTF-8 byte, so this bounds the work below.
    name.length > MAX_USERNAME_BYTES ||
    Buffer.byteLength(name, 'utf8') > MAX_USERNAME_BYTES ||
    FORBIDDEN_CHARACTER.test(name) ||
    EDGE_WHITESPACE.test(name)
  ) {
    throw new SaslError('invalid user name');
  }
}

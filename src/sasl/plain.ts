/**
 * The PLAIN mechanism (RFC 4616): `[authzid] NUL authcid NUL passwd`, all UTF-8.
 */
import { SaslError } from '../errors.js';
import { decodeUtf8Strict } from './base64.js';

/** The three fields of a PLAIN message; an empty authzid means "act as authcid". */
export interface PlainCredentials {
  authzid: string;
  authcid: string;
  password: string;
}

const NUL = '\u0000';
const LONE_SURROGATE = /\p{Cs}/u;

/** Decodes a PLAIN message; throws SaslError unless it has exactly three valid UTF-8 fields. */
export function decodePlain(message: Buffer): PlainCredentials {
  // NUL never occurs inside a multi-byte UTF-8 sequence, so validating the whole message is the
  // same as validating each field, and splitting after decoding is safe.
  const text = decodeUtf8Strict(message);
  // The limit keeps a message made of NULs from building a huge array just to be rejected.
  const fields = text.split(NUL, 4);
  if (fields.length !== 3) throw new SaslError('malformed PLAIN message');
  const [authzid = '', authcid = '', password = ''] = fields;
  if (authcid.length === 0) throw new SaslError('empty authentication identity');
  if (password.length === 0) throw new SaslError('empty password');
  return { authzid, authcid, password };
}

/** Encodes PLAIN credentials; throws SaslError for values that would not decode back unchanged. */
export function encodePlain(c: PlainCredentials): Buffer {
  if ([c.authzid, c.authcid, c.password].some((field) => field.includes(NUL))) {
    throw new SaslError('PLAIN fields must not contain NUL');
  }
  if (c.authcid.length === 0) throw new SaslError('empty authentication identity');
  if (c.password.length === 0) throw new SaslError('empty password');
  // A lone surrogate has no UTF-8 form; Buffer would silently send U+FFFD instead.
  if ([c.authzid, c.authcid, c.password].some((field) => LONE_SURROGATE.test(field))) {
    throw new SaslError('PLAIN fields must be valid Unicode');
  }
  return Buffer.from(`${c.authzid}${NUL}${c.authcid}${NUL}${c.password}`, 'utf8');
}

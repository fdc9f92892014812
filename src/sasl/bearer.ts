/**
 * The token mechanisms: XOAUTH2 (Google's, also spoken by Microsoft, Yahoo and Dovecot) and
 * OAUTHBEARER (RFC 7628). Both carry an RFC 6750 bearer token and, for XOAUTH2 always and for
 * OAUTHBEARER optionally, the user the client wants to act as. Error messages are short, safe to
 * show the client, and never contain the token.
 */
import { SaslError } from '../errors.js';
import { decodeUtf8Strict } from './base64.js';
import { checkUsername } from './username.js';

/** What a token mechanism's initial response carries. */
export interface BearerCredentials {
  mechanism: 'XOAUTH2' | 'OAUTHBEARER';
  /** The user named in the exchange; undefined for OAUTHBEARER without `a=`. */
  user: string | undefined;
  token: string;
  /** OAUTHBEARER's informational `host=`, when sent. */
  host?: string;
  /** OAUTHBEARER's informational `port=`, when sent. */
  port?: number;
}

const KVSEP = '\u0001';

/** RFC 7628 `key = 1*ALPHA`; XOAUTH2 never defined one, so the same rule is used there. */
const KEY_SYNTAX = /^[A-Za-z]+$/;

/** RFC 6750 `b64token`: the only characters a bearer token can contain. */
const B64TOKEN = /^[A-Za-z0-9\-._~+/]+=*$/;

/** RFC 7628 `value = *(VCHAR / SP / HTAB / CR / LF)`. */
const KV_VALUE = /^[\x21-\x7e \t\r\n]*$/;

/** RFC 7628 host: visible ASCII only, so a host name can never carry spaces or line breaks. */
const HOST_VALUE = /^[\x21-\x7e]+$/;

const PORT_VALUE = /^[0-9]{1,5}$/;

/** RFC 5801 saslname escapes; an `=` followed by anything else is malformed. */
const BAD_SASLNAME_ESCAPE = /=(?!2C|3D)/;
const SASLNAME_ESCAPE = /=(2C|3D)/g;

function splitKeyValue(field: string, mechanism: BearerCredentials['mechanism']): [string, string] {
  const equals = field.indexOf('=');
  const key = equals > 0 ? field.slice(0, equals) : '';
  if (!KEY_SYNTAX.test(key)) throw new SaslError(`malformed ${mechanism} message`);
  // Key names are compared case-insensitively: clients differ, and a duplicate in another case
  // must still count as a duplicate.
  return [key.toLowerCase(), field.slice(equals + 1)];
}

/** Extracts the token from `auth=` (`"Bearer" 1*SP b64token`, scheme word in any case). */
function tokenFromAuthValue(value: string): string {
  if (value.length === 0) throw new SaslError('missing token');
  const space = value.indexOf(' ');
  const scheme = space < 0 ? value : value.slice(0, space);
  if (scheme.toLowerCase() !== 'bearer') throw new SaslError('unsupported authorization scheme');
  const token = space < 0 ? '' : value.slice(space + 1).replace(/^ +/, '');
  if (token.length === 0) throw new SaslError('missing token');
  if (!B64TOKEN.test(token)) throw new SaslError('invalid token syntax');
  return token;
}

function rememberKey(seen: Set<string>, key: string): void {
  if (seen.has(key)) throw new SaslError('duplicate key');
  seen.add(key);
}

/**
 * XOAUTH2 has no RFC; Google documents `...token ^A^A`. Dovecot, the backend behind this gate,
 * accepts the message with one or no final ^A and with a newline after it (what
 * `echo ... | base64` produces when testing by hand), so those are tolerated here too. Anything
 * after the terminator is not.
 */
function stripXoauth2Terminator(text: string): string {
  let end = text.length;
  if (text.endsWith(`${KVSEP}\r\n`)) end -= 2;
  else if (text.endsWith(`${KVSEP}\n`)) end -= 1;
  for (let i = 0; i < 2 && text[end - 1] === KVSEP; i++) end--;
  return text.slice(0, end);
}

/** Decodes an XOAUTH2 initial response: `user={user}^Aauth=Bearer {token}^A^A`. */
export function decodeXoauth2(message: Buffer): BearerCredentials {
  const body = stripXoauth2Terminator(decodeUtf8Strict(message));
  const seen = new Set<string>();
  let user: string | undefined;
  let token: string | undefined;
  for (const field of body.split(KVSEP)) {
    const [key, value] = splitKeyValue(field, 'XOAUTH2');
    rememberKey(seen, key);
    if (key === 'user') user = value;
    else if (key === 'auth') token = tokenFromAuthValue(value);
    // Other keys are ignored, as Dovecot does.
  }
  if (user === undefined || user.length === 0) throw new SaslError('missing user');
  if (token === undefined) throw new SaslError('missing token');
  checkUsername(user);
  return { mechanism: 'XOAUTH2', user, token };
}

function unescapeSaslname(saslname: string): string {
  if (saslname.length === 0 || BAD_SASLNAME_ESCAPE.test(saslname)) {
    throw new SaslError('malformed authorization identity');
  }
  return saslname.replace(SASLNAME_ESCAPE, (_escape, code: string) => (code === '2C' ? ',' : '='));
}

/**
 * Parses the GS2 header (RFC 5801 section 4, as RFC 7628 uses it): `n,` or `y,`, an optional
 * `a=saslname`, then `,`. Returns the user and where the key-value part starts.
 */
function parseGs2Header(text: string): { user: string | undefined; end: number } {
  if (text.startsWith('p=')) {
    throw new SaslError('channel binding is not supported');
  }
  if (!text.startsWith('n,') && !text.startsWith('y,')) {
    throw new SaslError('malformed GS2 header');
  }
  if (text[2] === ',') return { user: undefined, end: 3 };
  if (!text.startsWith('a=', 2)) throw new SaslError('malformed GS2 header');
  const comma = text.indexOf(',', 4);
  if (comma < 0) throw new SaslError('malformed GS2 header');
  return { user: unescapeSaslname(text.slice(4, comma)), end: comma + 1 };
}

/** Decodes an OAUTHBEARER initial response (RFC 7628): GS2 header, ^A, key=value^A pairs, ^A. */
export function decodeOauthbearer(message: Buffer): BearerCredentials {
  const text = decodeUtf8Strict(message);
  const { user, end: headerEnd } = parseGs2Header(text);
  if (user !== undefined) checkUsername(user);
  if (text[headerEnd] !== KVSEP) throw new SaslError('malformed GS2 header');

  const seen = new Set<string>();
  let token: string | undefined;
  let host: string | undefined;
  let port: number | undefined;
  let cursor = headerEnd + 1;
  for (;;) {
    if (cursor >= text.length) throw new SaslError('missing message terminator');
    if (text[cursor] === KVSEP) {
      if (cursor !== text.length - 1) throw new SaslError('unexpected data after message end');
      break;
    }
    const fieldEnd = text.indexOf(KVSEP, cursor);
    if (fieldEnd < 0) throw new SaslError('missing message terminator');
    const [key, value] = splitKeyValue(text.slice(cursor, fieldEnd), 'OAUTHBEARER');
    cursor = fieldEnd + 1;
    rememberKey(seen, key);
    if (key === 'auth') {
      token = tokenFromAuthValue(value);
      continue;
    }
    if (!KV_VALUE.test(value)) throw new SaslError('malformed OAUTHBEARER message');
    if (key === 'host') {
      // host is informational; an empty one is treated as not sent rather than failing the login.
      if (value.length === 0) continue;
      if (!HOST_VALUE.test(value)) throw new SaslError('invalid host');
      host = value;
    } else if (key === 'port') {
      port = parsePort(value);
    }
    // Other keys (RFC 7628 leaves room for extensions) are ignored.
  }
  if (token === undefined) throw new SaslError('missing token');

  const credentials: BearerCredentials = { mechanism: 'OAUTHBEARER', user, token };
  if (host !== undefined) credentials.host = host;
  if (port !== undefined) credentials.port = port;
  return credentials;
}

function parsePort(value: string): number {
  const port = PORT_VALUE.test(value) ? Number(value) : 0;
  if (port < 1 || port > 65535) throw new SaslError('invalid port');
  return port;
}

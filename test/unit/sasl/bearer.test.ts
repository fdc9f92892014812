import { describe, expect, it } from 'vitest';
import { SaslError } from '../../../src/errors.js';
import { decodeSaslResponse } from '../../../src/sasl/base64.js';
import { decodeOauthbearer, decodeXoauth2, type BearerCredentials } from '../../../src/sasl/bearer.js';

const bytes = (text: string) => Buffer.from(text, 'utf8');
const SECRET_TOKEN = 'secretTOKEN.abc-def_ghi~jkl+mno/pqr==';

/** A distinct all-letter key per number (RFC 7628 keys are 1*ALPHA). */
function lettersFor(n: number): string {
  let letters = '';
  do {
    letters = String.fromCharCode(0x61 + (n % 26)) + letters;
    n = Math.floor(n / 26);
  } while (n > 0);
  return letters;
}

function expectSaslError(decode: () => unknown, message?: string | RegExp): SaslError {
  let caught: unknown;
  try {
    decode();
  } catch (error) {
    caught = error;
  }
  expect(caught).toBeInstanceOf(SaslError);
  if (message !== undefined) expect((caught as SaslError).message).toMatch(message);
  return caught as SaslError;
}

describe('decodeXoauth2', () => {
  it("decodes the example from Google's XOAUTH2 documentation", () => {
    const line =
      'dXNlcj1zb21ldXNlckBleGFtcGxlLmNvbQFhdXRoPUJlYXJlciB5YTI5LnZGOWRmdDRxbVRjMk52' +
      'YjNSbGNrQmhkSFJoZG1semRHRXVZMjl0Q2cBAQ==';
    expect(decodeXoauth2(decodeSaslResponse(line))).toEqual({
      mechanism: 'XOAUTH2',
      user: 'someuser@example.com',
      token: 'ya29.vF9dft4qmTc2Nvb3RlckBhdHRhdmlzdGEuY29tCg',
    });
  });

  it.each<[string, string, Partial<BearerCredentials>]>([
    ['imapflow / Thunderbird form', 'user=alice@example.org\x01auth=Bearer abc.def.ghi\x01\x01', { user: 'alice@example.org', token: 'abc.def.ghi' }],
    ['a JWT with padding characters', 'user=a@b.c\x01auth=Bearer eyJh.eyJz.c2ln==\x01\x01', { token: 'eyJh.eyJz.c2ln==' }],
    ['every b64token character', 'user=a\x01auth=Bearer AZaz09-._~+/==\x01\x01', { token: 'AZaz09-._~+/==' }],
    ['lower-case scheme word', 'user=a\x01auth=bearer tok\x01\x01', { token: 'tok' }],
    ['upper-case scheme word', 'user=a\x01auth=BEARER tok\x01\x01', { token: 'tok' }],
    ['several spaces after the scheme (RFC 6750 1*SP)', 'user=a\x01auth=Bearer   tok\x01\x01', { token: 'tok' }],
    ['upper-case key names', 'USER=a\x01Auth=Bearer tok\x01\x01', { user: 'a', token: 'tok' }],
    ['keys in the other order', 'auth=Bearer tok\x01user=a\x01\x01', { user: 'a', token: 'tok' }],
    ['unknown keys are ignored', 'user=a\x01vendor=x y\x01auth=Bearer tok\x01\x01', { user: 'a', token: 'tok' }],
    ['missing final ^A pair (accepted by Dovecot)', 'user=a\x01auth=Bearer tok', { token: 'tok' }],
    ['single final ^A', 'user=a\x01auth=Bearer tok\x01', { token: 'tok' }],
    ['newline after the terminator (echo | base64)', 'user=a\x01auth=Bearer tok\x01\x01\n', { token: 'tok' }],
    ['CRLF after the terminator', 'user=a\x01auth=Bearer tok\x01\x01\r\n', { token: 'tok' }],
    ['unicode user', 'user=jürgen@exämple.de\x01auth=Bearer tok\x01\x01', { user: 'jürgen@exämple.de' }],
    ['user containing "="', 'user=a=b@example.org\x01auth=Bearer tok\x01\x01', { user: 'a=b@example.org' }],
    ['user with +tag', 'user=first.last+tag@example.org\x01auth=Bearer tok\x01\x01', { user: 'first.last+tag@example.org' }],
  ])('accepts %s', (_name, text, expected) => {
    expect(decodeXoauth2(bytes(text))).toMatchObject({ mechanism: 'XOAUTH2', ...expected });
  });

  it.each<[string, Buffer, RegExp]>([
    ['empty message', bytes(''), /malformed/],
    ['terminator only', bytes('\x01\x01'), /malformed/],
    ['missing user', bytes('auth=Bearer tok\x01\x01'), /missing user/],
    ['empty user', bytes('user=\x01auth=Bearer tok\x01\x01'), /missing user/],
    ['missing auth', bytes('user=a\x01\x01'), /missing token/],
    ['empty auth', bytes('user=a\x01auth=\x01\x01'), /missing token/],
    ['scheme without token', bytes('user=a\x01auth=Bearer\x01\x01'), /missing token/],
    ['scheme with empty token', bytes('user=a\x01auth=Bearer \x01\x01'), /missing token/],
    ['token without scheme', bytes('user=a\x01auth=tok\x01\x01'), /unsupported authorization scheme/],
    ['token after a bare space', bytes('user=a\x01auth= tok\x01\x01'), /unsupported authorization scheme/],
    ['Basic scheme', bytes('user=a\x01auth=Basic YTpi\x01\x01'), /unsupported authorization scheme/],
    ['Bearer glued to the token', bytes('user=a\x01auth=Bearertok\x01\x01'), /unsupported authorization scheme/],
    ['tab after the scheme', bytes('user=a\x01auth=Bearer\ttok\x01\x01'), /unsupported authorization scheme/],
    ['space inside the token', bytes('user=a\x01auth=Bearer to k\x01\x01'), /invalid token syntax/],
    ['trailing space after the token', bytes('user=a\x01auth=Bearer tok \x01\x01'), /invalid token syntax/],
    ['"=" inside the token', bytes('user=a\x01auth=Bearer to=k\x01\x01'), /invalid token syntax/],
    ['token that is only padding', bytes('user=a\x01auth=Bearer ==\x01\x01'), /invalid token syntax/],
    ['quote in the token', bytes('user=a\x01auth=Bearer "tok"\x01\x01'), /invalid token syntax/],
    ['non-ASCII token', bytes('user=a\x01auth=Bearer tök\x01\x01'), /invalid token syntax/],
    ['CR/LF in the token', bytes('user=a\x01auth=Bearer tok\r\nA1 LOGOUT\x01\x01'), /invalid token syntax/],
    ['duplicate user', bytes('user=a\x01user=b\x01auth=Bearer tok\x01\x01'), /duplicate key/],
    ['duplicate user in another case', bytes('user=a\x01USER=b\x01auth=Bearer tok\x01\x01'), /duplicate key/],
    ['duplicate auth', bytes('user=a\x01auth=Bearer t1\x01auth=Bearer t2\x01\x01'), /duplicate key/],
    ['field without "="', bytes('user=a\x01garbage\x01auth=Bearer tok\x01\x01'), /malformed/],
    ['empty key', bytes('user=a\x01=x\x01auth=Bearer tok\x01\x01'), /malformed/],
    ['key with a digit', bytes('user=a\x01k1=x\x01auth=Bearer tok\x01\x01'), /malformed/],
    ['key with a space', bytes('user =a\x01auth=Bearer tok\x01\x01'), /malformed/],
    ['data after the terminator', bytes('user=a\x01auth=Bearer tok\x01\x01user=b\x01\x01'), /malformed/],
    ['three final ^A', bytes('user=a\x01auth=Bearer tok\x01\x01\x01'), /malformed/],
    ['empty field in the middle', bytes('user=a\x01\x01auth=Bearer tok\x01\x01'), /malformed/],
    ['leading ^A', bytes('\x01user=a\x01auth=Bearer tok\x01\x01'), /malformed/],
    ['newline without terminator', bytes('user=a\x01auth=Bearer tok\n'), /invalid token syntax/],
    ['invalid UTF-8 in the user', Buffer.concat([bytes('user=a'), Buffer.from([0xff]), bytes('\x01auth=Bearer tok\x01\x01')]), /invalid UTF-8/],
    ['overlong encoding in the user', Buffer.concat([bytes('user=a'), Buffer.from([0xc0, 0x80]), bytes('\x01auth=Bearer tok\x01\x01')]), /invalid UTF-8/],
    ['NUL in the user', bytes('user=a\0b\x01auth=Bearer tok\x01\x01'), /invalid user name/],
    ['CR/LF in the user', bytes('user=a\r\nA1 LOGIN x y\x01auth=Bearer tok\x01\x01'), /invalid user name/],
    ['leading space in the user', bytes('user= a\x01auth=Bearer tok\x01\x01'), /invalid user name/],
    ['over-long user', bytes(`user=${'a'.repeat(256)}\x01auth=Bearer tok\x01\x01`), /invalid user name/],
    ['OAUTHBEARER message sent as XOAUTH2', bytes('n,a=a,\x01auth=Bearer tok\x01\x01'), /malformed/],
  ])('rejects %s', (_name, message, reason) => {
    expectSaslError(() => decodeXoauth2(message), reason);
  });

  it.each([
    ['bad scheme', `user=a\x01auth=Basic ${SECRET_TOKEN}\x01\x01`],
    ['bad token syntax', `user=a\x01auth=Bearer ${SECRET_TOKEN} x\x01\x01`],
    ['duplicate auth', `user=a\x01auth=Bearer ${SECRET_TOKEN}\x01auth=Bearer ${SECRET_TOKEN}\x01\x01`],
    ['bad user', `user=a\r\n\x01auth=Bearer ${SECRET_TOKEN}\x01\x01`],
    ['missing user', `auth=Bearer ${SECRET_TOKEN}\x01\x01`],
  ])('never echoes the token (%s)', (_name, text) => {
    const error = expectSaslError(() => decodeXoauth2(bytes(text)));
    expect(error.message).not.toContain('secretTOKEN');
    expect(error.clientMessage ?? '').not.toContain('secretTOKEN');
    expect(error.code).toBe('bad_sasl');
  });
});

describe('decodeOauthbearer', () => {
  it('decodes the IMAP example of RFC 7628 section 4.1', () => {
    const line =
      'bixhPXVzZXJAZXhhbXBsZS5jb20sAWhvc3Q9c2VydmVyLmV4YW1wbGUuY29tAXBvcnQ9MTQzAWF1dGg9QmVhcmVyIHZGOWRm' +
      'dDRxbVRjMk52YjNSbGNrQmhiSFJoZG1semRHRXVZMjl0Q2c9PQEB';
    expect(decodeOauthbearer(decodeSaslResponse(line))).toEqual({
      mechanism: 'OAUTHBEARER',
      user: 'user@example.com',
      token: 'vF9dft4qmTc2Nvb3RlckBhbHRhdmlzdGEuY29tCg==',
      host: 'server.example.com',
      port: 143,
    });
  });

  it('decodes the SMTP example of RFC 7628 section 4.4', () => {
    const line =
      'bixhPXVzZXJAZXhhbXBsZS5jb20sAWhvc3Q9c2VydmVyLmV4YW1wbGUuY29tAXBvcnQ9NTg3AWF1dGg9QmVhcmVyIHZGOWRmd' +
      'DRxbVRjMk52YjNSbGNrQmhiSFJoZG1semRHRXVZMjl0Q2c9PQEB';
    expect(decodeOauthbearer(decodeSaslResponse(line))).toMatchObject({ user: 'user@example.com', port: 587 });
  });

  it('rejects the OAuth 1.0a payload of RFC 7628 section 4.2 (a different mechanism)', () => {
    const text =
      'n,a=user@example.com,\x01host=example.com\x01port=143\x01' +
      'auth=OAuth realm="Example",oauth_consumer_key="9djdj82h48djs9d2",oauth_token="kkk9d7dh3k39sjv7",' +
      'oauth_signature_method="HMAC-SHA1",oauth_timestamp="137131201",oauth_nonce="7d8f3e4a",' +
      'oauth_signature="Tm90IGEgcmVhbCBzaWduYXR1cmU%3D"\x01\x01';
    expectSaslError(() => decodeOauthbearer(bytes(text)), /unsupported authorization scheme/);
  });

  it.each<[string, string, BearerCredentials]>([
    [
      "imapflow's form",
      'n,a=user@example.com,\x01host=imap.example.com\x01port=993\x01auth=Bearer ya29.a0Af\x01\x01',
      { mechanism: 'OAUTHBEARER', user: 'user@example.com', token: 'ya29.a0Af', host: 'imap.example.com', port: 993 },
    ],
    ['no authzid', 'n,,\x01auth=Bearer tok\x01\x01', { mechanism: 'OAUTHBEARER', user: undefined, token: 'tok' }],
    ['"y" channel-binding flag', 'y,a=bob,\x01auth=Bearer tok\x01\x01', { mechanism: 'OAUTHBEARER', user: 'bob', token: 'tok' }],
    ['escaped comma', 'n,a=a=2Cb,\x01auth=Bearer tok\x01\x01', { mechanism: 'OAUTHBEARER', user: 'a,b', token: 'tok' }],
    ['escaped equals sign', 'n,a=a=3Db,\x01auth=Bearer tok\x01\x01', { mechanism: 'OAUTHBEARER', user: 'a=b', token: 'tok' }],
    ['escapes are decoded once', 'n,a==3D2C,\x01auth=Bearer tok\x01\x01', { mechanism: 'OAUTHBEARER', user: '=2C', token: 'tok' }],
    ['unicode user', 'n,a=jürgen@exämple.de,\x01auth=Bearer tok\x01\x01', { mechanism: 'OAUTHBEARER', user: 'jürgen@exämple.de', token: 'tok' }],
    ['lower-case scheme word', 'n,,\x01auth=bearer tok\x01\x01', { mechanism: 'OAUTHBEARER', user: undefined, token: 'tok' }],
    ['auth before host and port', 'n,,\x01auth=Bearer tok\x01port=465\x01host=smtp.example.com\x01\x01', { mechanism: 'OAUTHBEARER', user: undefined, token: 'tok', host: 'smtp.example.com', port: 465 }],
    ['unknown keys are ignored', 'n,,\x01mfa=otp 123\x01auth=Bearer tok\x01\x01', { mechanism: 'OAUTHBEARER', user: undefined, token: 'tok' }],
    ['upper-case key names', 'n,,\x01AUTH=Bearer tok\x01HOST=h\x01\x01', { mechanism: 'OAUTHBEARER', user: undefined, token: 'tok', host: 'h' }],
    ['empty host is treated as absent', 'n,,\x01host=\x01auth=Bearer tok\x01\x01', { mechanism: 'OAUTHBEARER', user: undefined, token: 'tok' }],
    ['IPv6 host', 'n,,\x01host=[2001:db8::1]\x01port=65535\x01auth=Bearer tok\x01\x01', { mechanism: 'OAUTHBEARER', user: undefined, token: 'tok', host: '[2001:db8::1]', port: 65535 }],
    ['port 1', 'n,,\x01port=1\x01auth=Bearer tok\x01\x01', { mechanism: 'OAUTHBEARER', user: undefined, token: 'tok', port: 1 }],
  ])('accepts %s', (_name, text, expected) => {
    expect(decodeOauthbearer(bytes(text))).toStrictEqual(expected);
  });

  it.each<[string, Buffer, RegExp]>([
    ['channel binding (p=)', bytes('p=tls-unique,a=bob,\x01auth=Bearer tok\x01\x01'), /channel binding is not supported/],
    ['channel binding without authzid', bytes('p=tls-exporter,,\x01auth=Bearer tok\x01\x01'), /channel binding is not supported/],
    ['unknown channel-binding flag', bytes('x,,\x01auth=Bearer tok\x01\x01'), /malformed GS2 header/],
    ['upper-case flag', bytes('N,,\x01auth=Bearer tok\x01\x01'), /malformed GS2 header/],
    ['non-standard GS2 flag', bytes('F,n,,\x01auth=Bearer tok\x01\x01'), /malformed GS2 header/],
    ['missing first comma', bytes('n\x01auth=Bearer tok\x01\x01'), /malformed GS2 header/],
    ['missing second comma', bytes('n,\x01auth=Bearer tok\x01\x01'), /malformed GS2 header/],
    ['authzid without closing comma', bytes('n,a=bob\x01auth=Bearer tok\x01\x01'), /malformed GS2 header/],
    ['authzid not starting with a=', bytes('n,bob,\x01auth=Bearer tok\x01\x01'), /malformed GS2 header/],
    ['authzid with an upper-case A=', bytes('n,A=bob,\x01auth=Bearer tok\x01\x01'), /malformed GS2 header/],
    ['empty authzid', bytes('n,a=,\x01auth=Bearer tok\x01\x01'), /malformed authorization identity/],
    ['unknown escape', bytes('n,a=a=41b,\x01auth=Bearer tok\x01\x01'), /malformed authorization identity/],
    ['lower-case escape', bytes('n,a=a=2cb,\x01auth=Bearer tok\x01\x01'), /malformed authorization identity/],
    ['truncated escape', bytes('n,a=ab=2,\x01auth=Bearer tok\x01\x01'), /malformed authorization identity/],
    ['bare equals sign', bytes('n,a=a=b,\x01auth=Bearer tok\x01\x01'), /malformed authorization identity/],
    ['missing kvsep after the header', bytes('n,,auth=Bearer tok\x01\x01'), /malformed GS2 header/],
    ['header only', bytes('n,,'), /malformed GS2 header/],
    ['the dummy reply \\x01', bytes('\x01'), /malformed GS2 header/],
    ['empty message', bytes(''), /malformed GS2 header/],
    ['XOAUTH2 message sent as OAUTHBEARER', bytes('user=a\x01auth=Bearer tok\x01\x01'), /malformed GS2 header/],
    ['missing \\x01\\x01', bytes('n,,\x01auth=Bearer tok'), /missing message terminator/],
    ['missing final \\x01', bytes('n,,\x01auth=Bearer tok\x01'), /missing message terminator/],
    ['data after the terminator', bytes('n,,\x01auth=Bearer tok\x01\x01x'), /unexpected data after message end/],
    ['three final \\x01', bytes('n,,\x01auth=Bearer tok\x01\x01\x01'), /unexpected data after message end/],
    ['no key-value pairs', bytes('n,,\x01\x01'), /missing token/],
    ['missing auth', bytes('n,a=bob,\x01host=h\x01\x01'), /missing token/],
    ['empty token', bytes('n,,\x01auth=Bearer \x01\x01'), /missing token/],
    ['empty auth', bytes('n,,\x01auth=\x01\x01'), /missing token/],
    ['token with a space', bytes('n,,\x01auth=Bearer a b\x01\x01'), /invalid token syntax/],
    ['token with a tab', bytes('n,,\x01auth=Bearer a\tb\x01\x01'), /invalid token syntax/],
    ['Basic scheme', bytes('n,,\x01auth=Basic YTpi\x01\x01'), /unsupported authorization scheme/],
    ['duplicate auth', bytes('n,,\x01auth=Bearer t1\x01auth=Bearer t2\x01\x01'), /duplicate key/],
    ['duplicate auth in another case', bytes('n,,\x01auth=Bearer t1\x01Auth=Bearer t2\x01\x01'), /duplicate key/],
    ['duplicate host', bytes('n,,\x01host=a\x01host=b\x01auth=Bearer tok\x01\x01'), /duplicate key/],
    ['key with a digit', bytes('n,,\x01x1=y\x01auth=Bearer tok\x01\x01'), /malformed/],
    ['field without "="', bytes('n,,\x01junk\x01auth=Bearer tok\x01\x01'), /malformed/],
    ['empty key', bytes('n,,\x01=v\x01auth=Bearer tok\x01\x01'), /malformed/],
    ['non-ASCII value of an unknown key', bytes('n,,\x01x=ü\x01auth=Bearer tok\x01\x01'), /malformed/],
    ['control character in a value', bytes('n,,\x01x=a\x02b\x01auth=Bearer tok\x01\x01'), /malformed/],
    ['port 0', bytes('n,,\x01port=0\x01auth=Bearer tok\x01\x01'), /invalid port/],
    ['port 65536', bytes('n,,\x01port=65536\x01auth=Bearer tok\x01\x01'), /invalid port/],
    ['negative port', bytes('n,,\x01port=-1\x01auth=Bearer tok\x01\x01'), /invalid port/],
    ['port with a sign', bytes('n,,\x01port=+993\x01auth=Bearer tok\x01\x01'), /invalid port/],
    ['fractional port', bytes('n,,\x01port=99.3\x01auth=Bearer tok\x01\x01'), /invalid port/],
    ['hex port', bytes('n,,\x01port=0x3e1\x01auth=Bearer tok\x01\x01'), /invalid port/],
    ['huge port', bytes('n,,\x01port=99999999999999999999\x01auth=Bearer tok\x01\x01'), /invalid port/],
    ['empty port', bytes('n,,\x01port=\x01auth=Bearer tok\x01\x01'), /invalid port/],
    ['port with spaces', bytes('n,,\x01port= 993\x01auth=Bearer tok\x01\x01'), /invalid port/],
    ['host with a space', bytes('n,,\x01host=a b\x01auth=Bearer tok\x01\x01'), /invalid host/],
    ['host with CR/LF', bytes('n,,\x01host=a\r\nb\x01auth=Bearer tok\x01\x01'), /invalid host/],
    ['invalid UTF-8 in the authzid', Buffer.concat([bytes('n,a=b'), Buffer.from([0xfe]), bytes(',\x01auth=Bearer tok\x01\x01')]), /invalid UTF-8/],
    ['truncated UTF-8 at the end', Buffer.concat([bytes('n,,\x01auth=Bearer tok\x01\x01'), Buffer.from([0xe2, 0x82])]), /invalid UTF-8/],
    ['NUL in the authzid', bytes('n,a=a\0b,\x01auth=Bearer tok\x01\x01'), /invalid user name/],
    ['CR/LF in the authzid', bytes('n,a=a\r\nb,\x01auth=Bearer tok\x01\x01'), /invalid user name/],
    ['\\x01 in the authzid', bytes('n,a=a\x01b,\x01auth=Bearer tok\x01\x01'), /invalid user name/],
    ['U+2028 in the authzid', bytes('n,a=a\u2028b,\x01auth=Bearer tok\x01\x01'), /invalid user name/],
  ])('rejects %s', (_name, message, reason) => {
    expectSaslError(() => decodeOauthbearer(message), reason);
  });

  it.each([
    ['bad scheme', `n,,\x01auth=Basic ${SECRET_TOKEN}\x01\x01`],
    ['bad token syntax', `n,,\x01auth=Bearer ${SECRET_TOKEN}\t\x01\x01`],
    ['missing terminator', `n,,\x01auth=Bearer ${SECRET_TOKEN}`],
    ['trailing data', `n,,\x01auth=Bearer ${SECRET_TOKEN}\x01\x01${SECRET_TOKEN}`],
    ['duplicate auth', `n,,\x01auth=Bearer ${SECRET_TOKEN}\x01auth=Bearer ${SECRET_TOKEN}\x01\x01`],
    ['bad port', `n,,\x01auth=Bearer ${SECRET_TOKEN}\x01port=x\x01\x01`],
  ])('never echoes the token (%s)', (_name, text) => {
    const error = expectSaslError(() => decodeOauthbearer(bytes(text)));
    expect(error.message).not.toContain('secretTOKEN');
    expect(error.clientMessage ?? '').not.toContain('secretTOKEN');
  });

  it('stays fast on a huge message with many fields', () => {
    const fields = Array.from({ length: 100_000 }, (_, i) => `x${lettersFor(i)}=y\x01`).join('');
    const many = `n,,\x01${fields}auth=Bearer ${'A'.repeat(1_000_000)}\x01\x01`;
    const started = performance.now();
    expect(decodeOauthbearer(bytes(many)).token.length).toBe(1_000_000);
    expectSaslError(() => decodeOauthbearer(bytes(`n,a=${'=2C'.repeat(300_000)}=,\x01auth=Bearer t\x01\x01`)));
    expectSaslError(() => decodeXoauth2(bytes(`user=a\x01auth=Bearer ${'A'.repeat(1_000_000)} \x01\x01`)));
    expect(performance.now() - started).toBeLessThan(5_000);
  });
});

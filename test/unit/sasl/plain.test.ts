import { describe, expect, it } from 'vitest';
import { SaslError } from '../../../src/errors.js';
import { decodePlain, encodePlain, type PlainCredentials } from '../../../src/sasl/plain.js';
import { decodeSaslResponse } from '../../../src/sasl/base64.js';

const bytes = (text: string) => Buffer.from(text, 'utf8');

describe('decodePlain', () => {
  it.each<[string, Buffer, PlainCredentials]>([
    ['no authzid', bytes('\0alice\0secret'), { authzid: '', authcid: 'alice', password: 'secret' }],
    ['authzid equal to authcid', bytes('alice\0alice\0secret'), { authzid: 'alice', authcid: 'alice', password: 'secret' }],
    ['e-mail address', bytes('\0alice@example.org\0pw'), { authzid: '', authcid: 'alice@example.org', password: 'pw' }],
    ['unicode', bytes('\0jürgen@exämple.de\0pässwörd😀'), { authzid: '', authcid: 'jürgen@exämple.de', password: 'pässwörd😀' }],
    ['password with spaces and symbols', bytes('\0bob\0 a b=c,d\x01 '), { authzid: '', authcid: 'bob', password: ' a b=c,d\x01 ' }],
    // RFC 4616 section 4 examples.
    ['RFC 4616: tim/tanstaaftanstaaf', bytes('\0tim\0tanstaaftanstaaf'), { authzid: '', authcid: 'tim', password: 'tanstaaftanstaaf' }],
    ['RFC 4616: Ursel acting as Kurt', bytes('Ursel\0Kurt\0xipj3plmq'), { authzid: 'Ursel', authcid: 'Kurt', password: 'xipj3plmq' }],
  ])('decodes %s', (_name, message, expected) => {
    expect(decodePlain(message)).toEqual(expected);
  });

  it('decodes what a real IMAP client sends (AUTHENTICATE PLAIN AHRpbQB0YW5zdGFhZnRhbnN0YWFm)', () => {
    expect(decodePlain(decodeSaslResponse('AHRpbQB0YW5zdGFhZnRhbnN0YWFm'))).toEqual({
      authzid: '',
      authcid: 'tim',
      password: 'tanstaaftanstaaf',
    });
  });

  it.each([
    ['empty message', bytes('')],
    ['no separator', bytes('alice')],
    ['one separator', bytes('alice\0secret')],
    ['three separators', bytes('\0alice\0secret\0')],
    ['NUL inside the password', bytes('\0alice\0sec\0ret')],
    ['two NULs only', bytes('\0\0')],
    ['empty authcid', bytes('\0\0secret')],
    ['empty password', bytes('\0alice\0')],
    ['invalid UTF-8 in authcid', Buffer.concat([bytes('\0al'), Buffer.from([0xff]), bytes('ice\0pw')])],
    ['invalid UTF-8 in password', Buffer.concat([bytes('\0alice\0p'), Buffer.from([0xc3])])],
    ['latin1 password', Buffer.concat([bytes('\0alice\0p'), Buffer.from([0xe4]), bytes('ss')])],
    ['overlong NUL smuggling a fourth field', Buffer.concat([bytes('\0alice\0pw'), Buffer.from([0xc0, 0x80]), bytes('x')])],
  ])('rejects %s', (_name, message) => {
    expect(() => decodePlain(message)).toThrow(SaslError);
  });

  it('never puts the password into the error message', () => {
    try {
      decodePlain(Buffer.concat([bytes('\0alice\0hunter2'), Buffer.from([0xff])]));
      expect.unreachable();
    } catch (error) {
      expect(String((error as Error).message)).not.toContain('hunter2');
    }
  });
});

describe('encodePlain', () => {
  it('encodes the three fields with NUL separators', () => {
    expect(encodePlain({ authzid: 'bob', authcid: 'sasl-gate', password: 's3cret' })).toEqual(
      bytes('bob\0sasl-gate\0s3cret'),
    );
    expect(encodePlain({ authzid: '', authcid: 'jürgen', password: 'pw' })).toEqual(bytes('\0jürgen\0pw'));
  });

  it.each<[string, PlainCredentials]>([
    ['NUL in authzid', { authzid: 'a\0b', authcid: 'c', password: 'd' }],
    ['NUL in authcid', { authzid: '', authcid: 'c\0', password: 'd' }],
    ['NUL in password', { authzid: '', authcid: 'c', password: '\0d' }],
    ['empty authcid', { authzid: '', authcid: '', password: 'd' }],
    ['empty password', { authzid: '', authcid: 'c', password: '' }],
    ['lone surrogate', { authzid: '', authcid: 'c\ud800', password: 'd' }],
  ])('refuses %s', (_name, credentials) => {
    expect(() => encodePlain(credentials)).toThrow(SaslError);
  });

  it('round-trips', () => {
    const credentials = { authzid: 'Ursel', authcid: 'Kurt', password: 'xipj3plmq 😀' };
    expect(decodePlain(encodePlain(credentials))).toEqual(credentials);
  });
});

import { describe, expect, it } from 'vitest';
import { SaslError } from '../../../src/errors.js';
import { decodeSaslResponse, decodeUtf8Strict, encodeSaslChallenge } from '../../../src/sasl/base64.js';

describe('decodeSaslResponse', () => {
  it.each([
    ['AQ==', Buffer.from([0x01])],
    ['YQ==', Buffer.from('a')],
    ['YWI=', Buffer.from('ab')],
    ['YWJj', Buffer.from('abc')],
    ['AGFsaWNlAHNlY3JldA==', Buffer.from('\0alice\0secret')],
    ['+/+/', Buffer.from([0xfb, 0xff, 0xbf])],
    ['VXNlcm5hbWU6', Buffer.from('Username:')],
  ])('decodes %j', (line, expected) => {
    expect(decodeSaslResponse(line)).toEqual(expected);
    expect(decodeSaslResponse(Buffer.from(line, 'latin1'))).toEqual(expected);
  });

  it('decodes the single line "=" as the empty response (RFC 4959, RFC 4954)', () => {
    expect(decodeSaslResponse('=')).toEqual(Buffer.alloc(0));
    expect(decodeSaslResponse(Buffer.from('='))).toEqual(Buffer.alloc(0));
  });

  it.each([
    ['empty line (the caller decides what it means)', ''],
    ['padding only', '===='],
    ['two equals signs', '=='],
    ['missing padding', 'YQ'],
    ['missing one padding character', 'YQ='],
    ['too much padding', 'Y==='],
    ['length not a multiple of 4', 'YWJjZ'],
    ['padding in the middle', 'YQ==YQ=='],
    ['data after padding', 'YWI=a'],
    ['equals sign inside a quantum', 'Y=Jj'],
    ['URL-safe alphabet (-)', 'ab-d'],
    ['URL-safe alphabet (_)', 'ab_d'],
    ['space inside', 'YW Jj'],
    ['leading space', ' YWJj'],
    ['trailing space', 'YWJj '],
    ['trailing CR', 'YWJj\r'],
    ['trailing CRLF', 'YWJj\r\n'],
    ['line break inside', 'YWJj\nYWJj'],
    ['tab', 'YWJj\tYWJj'],
    ['NUL byte', 'YWJ\0'],
    ['cancel', '*'],
    ['non-zero bits under "=="', 'YR=='],
    ['non-zero bits under "="', 'YWJ='],
    ['non-ASCII letter', 'YWJé'],
    ['character that latin1 would truncate to "A" (U+0141)', 'YWJ\u0141'],
    ['character that latin1 would truncate to "=" (U+013D)', 'YQ\u013d\u013d'],
    ['full-width letters', 'ＹＷＪｊ'],
  ])('rejects %s', (_name, line) => {
    expect(() => decodeSaslResponse(line)).toThrow(SaslError);
    expect(() => decodeSaslResponse(line)).toThrow('invalid base64');
  });

  it('rejects bytes above 0x7F given as a Buffer', () => {
    expect(() => decodeSaslResponse(Buffer.from([0x59, 0x57, 0x4a, 0xea]))).toThrow(SaslError);
  });

  it('is fast on huge valid and invalid input', () => {
    const huge = 'QUFB'.repeat(4_000_000);
    const started = performance.now();
    expect(decodeSaslResponse(huge).length).toBe(12_000_000);
    expect(() => decodeSaslResponse(`${huge}!`)).toThrow(SaslError);
    expect(() => decodeSaslResponse(`${'='.repeat(16_000_000)}`)).toThrow(SaslError);
    expect(() => decodeSaslResponse(`${huge.slice(0, -1)}*`)).toThrow(SaslError);
    expect(performance.now() - started).toBeLessThan(5_000);
  });
});

describe('encodeSaslChallenge', () => {
  it.each([
    ['', ''],
    ['Username:', 'VXNlcm5hbWU6'],
    ['Password:', 'UGFzc3dvcmQ6'],
    ['ü', 'w7w='],
  ])('encodes the string %j as UTF-8 base64', (input, expected) => {
    expect(encodeSaslChallenge(input)).toBe(expected);
  });

  it('encodes bytes', () => {
    expect(encodeSaslChallenge(Buffer.from([0x01]))).toBe('AQ==');
    expect(encodeSaslChallenge(Buffer.from([0xff, 0xfe, 0x00]))).toBe('//4A');
  });
});

describe('decodeUtf8Strict', () => {
  it.each([
    ['ASCII', Buffer.from('alice'), 'alice'],
    ['two-byte', Buffer.from('jürgen'), 'jürgen'],
    ['four-byte', Buffer.from('😀'), '😀'],
    ['empty', Buffer.alloc(0), ''],
    ['a byte order mark is kept, not swallowed', Buffer.from([0xef, 0xbb, 0xbf, 0x61]), '\ufeffa'],
  ])('accepts %s', (_name, bytes, expected) => {
    expect(decodeUtf8Strict(bytes)).toBe(expected);
  });

  it.each([
    ['lone continuation byte', [0x80]],
    ['truncated two-byte sequence', [0x61, 0xc3]],
    ['overlong "/"', [0xc0, 0xaf]],
    ['overlong NUL', [0xc0, 0x80]],
    ['UTF-16 surrogate encoded in UTF-8', [0xed, 0xa0, 0x80]],
    ['code point above U+10FFFF', [0xf4, 0x90, 0x80, 0x80]],
    ['latin1 "ü"', [0xfc]],
    ['0xFF', [0xff]],
  ])('rejects %s', (_name, bytes) => {
    expect(() => decodeUtf8Strict(Buffer.from(bytes))).toThrow('invalid UTF-8');
  });
});

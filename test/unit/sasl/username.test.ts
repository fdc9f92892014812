import { describe, expect, it } from 'vitest';
import { SaslError } from '../../../src/errors.js';
import { checkUsername } from '../../../src/sasl/username.js';

describe('checkUsername', () => {
  it.each([
    'alice',
    'alice@example.org',
    'jürgen@exämple.de',
    'first.last+tag@example.org',
    'o\'brien@example.org',
    'user_name-1@sub.example.co.uk',
    '用户@例子.广告',
    'émoji😀@example.org',
    'alice smith',
    'a',
    'a'.repeat(255),
    `${'ü'.repeat(127)}a`, // 255 bytes
  ])('accepts %j', (name) => {
    expect(() => checkUsername(name)).not.toThrow();
  });

  it.each<[string, string]>([
    ['empty', ''],
    ['256 ASCII bytes', 'a'.repeat(256)],
    ['256 UTF-8 bytes in 128 characters', 'ü'.repeat(128)],
    ['NUL', 'alice\0bob'],
    ['TAB', 'alice\tbob'],
    ['CR', 'alice\r'],
    ['LF', 'alice\nA1 LOGOUT'],
    ['CRLF injection', 'alice\r\nA2 LOGIN master secret'],
    ['SOH (the SASL kvsep)', 'alice\x01'],
    ['ESC', 'alice\x1b[31m'],
    ['unit separator', 'a\x1fb'],
    ['DEL', 'alice\x7f'],
    ['C1 control U+0080', 'a\u0080b'],
    ['C1 control NEL U+0085', 'a\u0085b'],
    ['C1 control U+009F', 'a\u009fb'],
    ['line separator U+2028', 'a\u2028b'],
    ['paragraph separator U+2029', 'a\u2029b'],
    ['replacement character U+FFFD', 'a\ufffdb'],
    ['lone high surrogate', 'a\ud800b'],
    ['lone low surrogate', 'a\udc00'],
    ['leading space', ' alice'],
    ['trailing space', 'alice '],
    ['leading no-break space', '\u00a0alice'],
    ['trailing ideographic space', 'alice\u3000'],
    ['only spaces', '   '],
    ['leading byte order mark', '\ufeffalice'],
  ])('rejects %s', (_name, name) => {
    expect(() => checkUsername(name)).toThrow(SaslError);
    expect(() => checkUsername(name)).toThrow('invalid user name');
  });

  it('is fast on a huge name', () => {
    const started = performance.now();
    expect(() => checkUsername('a'.repeat(50_000_000))).toThrow(SaslError);
    expect(performance.now() - started).toBeLessThan(1_000);
  });
});

import { describe, expect, it } from 'vitest';
import { SaslError } from '../../../src/errors.js';
import { decodeSaslResponse } from '../../../src/sasl/base64.js';
import { decodeLoginField, LOGIN_PASSWORD_PROMPT, LOGIN_USERNAME_PROMPT } from '../../../src/sasl/login.js';

describe('LOGIN prompts', () => {
  it('are base64 of "Username:" and "Password:"', () => {
    expect(decodeSaslResponse(LOGIN_USERNAME_PROMPT).toString()).toBe('Username:');
    expect(decodeSaslResponse(LOGIN_PASSWORD_PROMPT).toString()).toBe('Password:');
  });
});

describe('decodeLoginField', () => {
  it.each([
    ['user name', 'YWxpY2VAZXhhbXBsZS5vcmc=', 'alice@example.org'],
    ['unicode', 'asO8cmdlbkBleMOkbXBsZS5kZQ==', 'jürgen@exämple.de'],
    ['password with spaces', 'IGEgYiA=', ' a b '],
    ['empty (the "=" line)', '=', ''],
  ])('decodes %s', (_name, line, expected) => {
    expect(decodeLoginField(decodeSaslResponse(line))).toBe(expected);
  });

  it.each([
    ['NUL', Buffer.from('alice\0bob')],
    ['trailing NUL', Buffer.from('alice\0')],
    ['invalid UTF-8', Buffer.from([0x61, 0xff])],
    ['overlong NUL', Buffer.from([0x61, 0xc0, 0x80])],
  ])('rejects %s', (_name, message) => {
    expect(() => decodeLoginField(message)).toThrow(SaslError);
  });
});

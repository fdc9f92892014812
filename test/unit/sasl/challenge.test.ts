import { describe, expect, it } from 'vitest';
import { decodeSaslResponse } from '../../../src/sasl/base64.js';
import { isDummyReply, oauthbearerErrorChallenge, xoauth2ErrorChallenge } from '../../../src/sasl/challenge.js';

const decodeJson = (challenge: string): unknown => JSON.parse(decodeSaslResponse(challenge).toString('utf8'));
const decodeText = (challenge: string): string => decodeSaslResponse(challenge).toString('utf8');

describe('xoauth2ErrorChallenge', () => {
  it('is base64 of {"status":"401","schemes":"bearer","scope":...} with the keys in that order', () => {
    const challenge = xoauth2ErrorChallenge({ scope: 'openid email' });
    expect(decodeText(challenge)).toBe('{"status":"401","schemes":"bearer","scope":"openid email"}');
  });

  it("has the keys of Google's documented error challenge, in the same order", () => {
    const google = decodeJson(
      'eyJzdGF0dXMiOiI0MDEiLCJzY2hlbWVzIjoiYmVhcmVyIG1hYyIsInNjb3BlIjoiaHR0cHM6Ly9tYWlsLmdvb2dsZS5jb20vIn0K',
    ) as Record<string, string>;
    const ours = decodeJson(xoauth2ErrorChallenge({ scope: 'https://mail.google.com/' })) as Record<string, string>;
    expect(Object.keys(ours)).toEqual(Object.keys(google));
    expect(ours.status).toBe(google.status);
    expect(ours.scope).toBe(google.scope);
  });

  it('escapes the scope as JSON', () => {
    const scope = 'a"b\\c\n\u2028ü';
    expect(decodeJson(xoauth2ErrorChallenge({ scope }))).toEqual({ status: '401', schemes: 'bearer', scope });
  });

  it('is a single base64 line', () => {
    expect(xoauth2ErrorChallenge({ scope: 'x'.repeat(500) })).toMatch(/^[A-Za-z0-9+/]+=*$/);
  });
});

describe('oauthbearerErrorChallenge', () => {
  it('reproduces the error challenge of RFC 7628 section 4.3', () => {
    expect(
      oauthbearerErrorChallenge({
        scope: 'example_scope',
        openidConfiguration: 'https://example.com/.well-known/openid-configuration',
      }),
    ).toBe(
      'eyJzdGF0dXMiOiJpbnZhbGlkX3Rva2VuIiwic2NvcGUiOiJleGFtcGxlX3Njb3BlIiwib3BlbmlkLWNvbmZpZ3VyYXRpb24iOiJodHRwczovL2V4YW1wbGUuY29tLy53ZWxsLWtub3duL29wZW5pZC1jb25maWd1cmF0aW9uIn0=',
    );
  });

  it.each([
    [undefined, 'invalid_token'],
    ['insufficient_scope', 'insufficient_scope'],
    ['invalid_request', 'invalid_request'],
  ])('uses status %s -> %s', (status, expected) => {
    const challenge = oauthbearerErrorChallenge({
      scope: 'openid email',
      openidConfiguration: 'https://idp.example.com/.well-known/openid-configuration',
      ...(status === undefined ? {} : { status }),
    });
    expect(decodeText(challenge)).toBe(
      `{"status":"${expected}","scope":"openid email","openid-configuration":"https://idp.example.com/.well-known/openid-configuration"}`,
    );
  });
});

describe('isDummyReply', () => {
  it.each<[string, string | Buffer, boolean]>([
    ['AQ== (RFC 7628)', 'AQ==', true],
    ['AQ== as bytes', Buffer.from('AQ=='), true],
    ['empty line (Google, imapflow for XOAUTH2)', '', true],
    ['empty buffer', Buffer.alloc(0), true],
    ['raw 0x01 as bytes', Buffer.from([0x01]), true],
    ['raw 0x01 as string', '\x01', true],
    ['cancel', '*', true],
    ['cancel as bytes', Buffer.from('*'), true],
    ['lower-case aq==', 'aq==', false],
    ['AQ without padding', 'AQ', false],
    ['AQ== with trailing space', 'AQ== ', false],
    ['AQ== with CRLF (the caller strips it)', 'AQ==\r\n', false],
    ['two 0x01 bytes', Buffer.from([0x01, 0x01]), false],
    ['"="', '=', false],
    ['"**"', '**', false],
    ['a new token', 'dXNlcj1hAWF1dGg9QmVhcmVyIHQBAQ==', false],
    ['a space', ' ', false],
    ['NUL', '\0', false],
  ])('%s -> %s', (_name, reply, expected) => {
    expect(isDummyReply(reply)).toBe(expected);
  });
});

import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { basicAuthorization, basicCredential } from '../../../src/auth/provider.js';

/** How a server that form-decodes the credentials reads them (RFC 6749 2.3.1, oidc-provider). */
const formDecoded = (value: string) => decodeURIComponent(value.replace(/\+/g, ' '));

function credentials(header: string): [string, string] {
  const decoded = Buffer.from(header.replace(/^Basic /, ''), 'base64').toString('utf8');
  const colon = decoded.indexOf(':');
  return [decoded.slice(0, colon), decoded.slice(colon + 1)];
}

describe('client_secret_basic credentials', () => {
  it('sends unreserved characters as they are, so a server that reads them raw (Authentik) matches', () => {
    const id = 'mail-gate.v2_prod~1';
    const secret = 'Aa0-._~zZ9';
    expect(credentials(basicAuthorization(id, secret))).toEqual([id, secret]);
  });

  it('percent-encodes everything else, so a server that form-decodes gets the value back', () => {
    expect(basicCredential("a b+c:d%e/f!*'()é")).toBe('a%20b%2Bc%3Ad%25e%2Ff%21%2A%27%28%29%C3%A9');
    fc.assert(
      fc.property(fc.string({ unit: 'grapheme' }), fc.string({ unit: 'grapheme' }), (id, secret) => {
        const [rawId, rawSecret] = credentials(basicAuthorization(id, secret));
        expect(formDecoded(rawId)).toBe(id);
        expect(formDecoded(rawSecret)).toBe(secret);
        // The colon that separates them is never part of either.
        expect(rawId.includes(':')).toBe(false);
        if (/^[A-Za-z0-9._~-]*$/.test(id)) expect(rawId).toBe(id);
      }),
    );
  });
});

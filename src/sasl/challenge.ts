/**
 * Error challenges for the token mechanisms. A rejected token is not answered with a final NO/535
 * straight away: the server first sends a JSON error as a challenge, the client answers it with a
 * dummy reply, and only then does the failure follow.
 */
import { encodeSaslChallenge } from './base64.js';

/** The XOAUTH2 error challenge (Google's format): base64 of {"status":"401","schemes":"bearer","scope":...}. */
export function xoauth2ErrorChallenge(opts: { scope: string }): string {
  return encodeSaslChallenge(JSON.stringify({ status: '401', schemes: 'bearer', scope: opts.scope }));
}

/** The OAUTHBEARER error challenge (RFC 7628 section 3.2.2); status defaults to invalid_token. */
export function oauthbearerErrorChallenge(opts: {
  scope: string;
  openidConfiguration: string;
  status?: string;
}): string {
  return encodeSaslChallenge(
    JSON.stringify({
      status: opts.status ?? 'invalid_token',
      scope: opts.scope,
      'openid-configuration': opts.openidConfiguration,
    }),
  );
}

const KVSEP = 0x01;

/**
 * Whether `response` is the client's answer to an error challenge: `AQ==` (RFC 7628's base64
 * kvsep), an empty line (what Google documents for XOAUTH2), a raw 0x01 byte (clients that forget
 * to encode it) or `*` (the SASL cancel). Trailing CR/LF must already be stripped.
 */
export function isDummyReply(response: Buffer | string): boolean {
  const bytes = typeof response === 'string' ? Buffer.from(response, 'utf8') : response;
  if (bytes.length === 0) return true;
  if (bytes.length === 1) return bytes[0] === KVSEP || bytes[0] === 0x2a;
  return bytes.length === 4 && bytes.toString('latin1') === 'AQ==';
}

/**
 * Access tokens of 1 KiB, 4 KiB and 12 KiB (real JWTs signed by the provider, padded with a
 * claim), as initial response and as continuation, with XOAUTH2 and OAUTHBEARER, on IMAPS and
 * SMTPS: all accepted, and the session works after the login.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RawSmtps } from '../support/smtps-raw.js';
import { oauthbearer, startStack, TlsImap, xoauth2, type Stack } from '../support/stack.js';
import { ALICE } from './support/clients.js';

const SIZES = [1024, 4096, 12 * 1024];
let stack: Stack;
const tokens = new Map<number, string>();

/** A provider-signed token of exactly `size` characters (a `padding` claim makes up the rest). */
async function tokenOfSize(size: number): Promise<string> {
  const claims = stack.idp.claimsFor(ALICE.name);
  let pad = 0;
  for (let i = 0; i < 8; i++) {
    const token = await stack.idp.signToken({ ...claims, padding: 'p'.repeat(pad) });
    if (token.length === size) return token;
    // Three payload bytes are four base64url characters.
    pad += Math.max(1, Math.floor(((size - token.length) * 3) / 4));
    if (pad < 0) throw new Error(`the unpadded token is already longer than ${size}`);
  }
  // base64url rounding can leave it a character off: accept the closest from above.
  for (let extra = 0; extra < 4; extra++) {
    const token = await stack.idp.signToken({ ...claims, padding: 'p'.repeat(pad + extra) });
    if (token.length >= size) return token;
  }
  throw new Error(`could not make a token of ${size} characters`);
}

beforeAll(async () => {
  stack = await startStack({ smtp: { login: 'xclient' } });
  for (const size of SIZES) tokens.set(size, await tokenOfSize(size));
});

afterAll(async () => {
  await stack?.close();
});

describe.each(SIZES)('a %i-character token', (size) => {
  it('has the size asked for', () => {
    expect(tokens.get(size)!.length).toBeGreaterThanOrEqual(size);
    expect(tokens.get(size)!.length).toBeLessThan(size + 4);
  });

  for (const mechanism of ['XOAUTH2', 'OAUTHBEARER'] as const) {
    for (const ir of [true, false]) {
      const how = ir ? 'initial response' : 'continuation';
      it(`IMAPS ${mechanism} as ${how}`, async () => {
        const token = tokens.get(size)!;
        const message = mechanism === 'XOAUTH2' ? xoauth2(ALICE.name, token) : oauthbearer(ALICE.name, token, 'localhost', stack.imapPort);
        const c = await TlsImap.connect(stack);
        try {
          if (ir) c.write(`a1 AUTHENTICATE ${mechanism} ${message}\r\n`);
          else {
            c.write(`a1 AUTHENTICATE ${mechanism}\r\n`);
            expect(await c.readLine()).toBe('+ ');
            c.write(`${message}\r\n`);
          }
          expect((await c.until('a1')).tagged).toMatch(/^a1 OK \[CAPABILITY /);
          expect((await c.command('SELECT INBOX')).tagged).toMatch(/ OK /);
        } finally {
          c.close();
        }
      });

      it(`SMTPS ${mechanism} as ${how}`, async () => {
        const token = tokens.get(size)!;
        const message = mechanism === 'XOAUTH2' ? xoauth2(ALICE.name, token) : oauthbearer(ALICE.name, token, 'localhost', stack.smtpPort);
        const c = await RawSmtps.connect({ host: stack.host, port: stack.smtpPort, ca: stack.ca });
        try {
          expect((await c.command('EHLO big.example')).code).toBe(250);
          if (ir) expect((await c.command(`AUTH ${mechanism} ${message}`)).lines).toEqual(['235 2.7.0 Authentication successful']);
          else {
            expect((await c.command(`AUTH ${mechanism}`)).lines).toEqual(['334 ']);
            expect((await c.command(message)).lines).toEqual(['235 2.7.0 Authentication successful']);
          }
          expect((await c.command(`MAIL FROM:<${ALICE.name}>`)).code).toBe(250);
          expect((await c.command('RSET')).code).toBe(250);
        } finally {
          c.close();
        }
      });
    }
  }
});

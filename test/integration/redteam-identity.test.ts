/**
 * Who a token names, attacked with tokens the provider signs, against real Postfix (XCLIENT
 * login, which does not ask Dovecot whether the user exists) and Dovecot. The server accepts
 * only example.test (`oauth.allowedEmailDomains`).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RawSmtps } from '../support/smtps-raw.js';
import { startStack, USERS, xoauth2, type Stack } from '../support/stack.js';

const [ALICE, BOB] = USERS as [(typeof USERS)[0], (typeof USERS)[0]];
let stack: Stack;

beforeAll(async () => {
  stack = await startStack({ smtp: { login: 'xclient' }, oauth: { allowedEmailDomains: ['example.test'] } });
}, 120_000);

afterAll(async () => {
  await stack?.close();
});

/** Logs in with a provider-signed token whose claims are alice's with `changes`; the AUTH reply code. */
async function tryLogin(user: string, changes: Record<string, unknown>, after?: (c: RawSmtps) => Promise<void>): Promise<number> {
  const claims = { ...stack.idp.claimsFor(ALICE.name), ...changes };
  const token = await stack.idp.signToken(claims);
  const c = await RawSmtps.connect({ host: stack.host, port: stack.smtpPort, ca: stack.ca, timeoutMs: 5000 });
  try {
    expect((await c.command('EHLO client.example')).code).toBe(250);
    let code = (await c.command(`AUTH XOAUTH2 ${xoauth2(user, token)}`)).code;
    // A refused token gets XOAUTH2's error challenge first; the empty answer brings the 535.
    if (code === 334) code = (await c.command('')).code;
    if (code === 235 && after) await after(c);
    return code;
  } finally {
    c.close();
  }
}

describe('red team: token identities outside the accepted domains', () => {
  it('control: an address of another domain is refused', async () => {
    expect(await tryLogin('eve@evil.test', { email: 'eve@evil.test' })).toBe(535);
  });

  it('a full-width letter in the domain (eve@ｅxample.test) is refused, not an authenticated Postfix session', async () => {
    const lookalike = 'eve@\uff45xample.test';
    const code = await tryLogin(lookalike, { email: lookalike }, async (c) => {
      // What an attacker does with the session: mail from the null sender to anyone.
      c.write(`MAIL FROM:<>\r\nRCPT TO:<${BOB.name}>\r\nDATA\r\n`);
      const replies = await c.readReplies(3);
      if (replies[2]?.code === 354) {
        c.write('Subject: lookalike domain\r\n\r\nhello\r\n.\r\n');
        await c.readReply();
      }
      await c.command('QUIT');
    });
    await new Promise((r) => setTimeout(r, 500));
    const log = await stack.postfix!.readLog();
    // Evidence when it goes through: Postfix's `sasl_username=eve@ｅxample.test` line.
    expect(log.split('\n').filter((l) => /sasl_username=eve@/.test(l))).toEqual([]);
    expect(code).toBe(535);
  });

  it.each([['FALSE'], ['False']])('email_verified: %j is refused like false', async (value) => {
    expect(await tryLogin(ALICE.name, { email_verified: value })).toBe(535);
  });
});

describe('red team: an OpenID Connect ID token used as an access token', () => {
  let idStack: Stack;
  beforeAll(async () => {
    // No oauth.audience: the client id is the audience, as the configuration reference allows.
    idStack = await startStack({ smtp: { login: 'xclient' }, oauth: { audience: [], allowedEmailDomains: ['example.test'] } });
  }, 120_000);
  afterAll(async () => {
    await idStack?.close();
  });

  it('an ID token of the code flow (nonce, auth_time, aud = client id, no at_hash, typ JWT) is refused', async () => {
    const base = idStack.idp.claimsFor(ALICE.name);
    const now = Math.floor(Date.now() / 1000);
    const idToken = await idStack.idp.signToken(
      {
        iss: base['iss'],
        sub: base['sub'],
        aud: idStack.idp.clientId,
        iat: now,
        exp: now + 300,
        auth_time: now - 5,
        nonce: 'n-0S6_WzA2Mj',
        sid: 'session-1',
        email: ALICE.name,
        email_verified: true,
      },
      { typ: 'JWT' },
    );
    const c = await RawSmtps.connect({ host: idStack.host, port: idStack.smtpPort, ca: idStack.ca, timeoutMs: 5000 });
    try {
      expect((await c.command('EHLO client.example')).code).toBe(250);
      let code = (await c.command(`AUTH XOAUTH2 ${xoauth2(ALICE.name, idToken)}`)).code;
      if (code === 334) code = (await c.command('')).code;
      expect(code).toBe(535);
    } finally {
      c.close();
    }
  });
});

describe('red team: the default oauth.allowedEmailDomains (empty) with login: xclient', () => {
  let openStack: Stack;
  beforeAll(async () => {
    openStack = await startStack({ smtp: { login: 'xclient' } });
  }, 120_000);
  afterAll(async () => {
    await openStack?.close();
  });

  it('a token for an address of a domain this server does not host gets no authenticated Postfix session', async () => {
    const claims = { ...openStack.idp.claimsFor(ALICE.name), email: 'eve@elsewhere.example' };
    const token = await openStack.idp.signToken(claims);
    const c = await RawSmtps.connect({ host: openStack.host, port: openStack.smtpPort, ca: openStack.ca, timeoutMs: 5000 });
    try {
      expect((await c.command('EHLO client.example')).code).toBe(250);
      let code = (await c.command(`AUTH XOAUTH2 ${xoauth2('eve@elsewhere.example', token)}`)).code;
      if (code === 334) code = (await c.command('')).code;
      if (code === 235) {
        // Mail as an authenticated sender (the test Postfix delivers only to example.test; a real
        // submission service relays anywhere for permit_sasl_authenticated).
        c.write(`MAIL FROM:<>\r\nRCPT TO:<${BOB.name}>\r\nDATA\r\n`);
        const replies = await c.readReplies(3);
        if (replies[2]?.code === 354) {
          c.write('Subject: relayed\r\n\r\nhello\r\n.\r\n');
          await c.readReply();
        }
        await c.command('QUIT');
      }
    } finally {
      c.close();
    }
    await new Promise((r) => setTimeout(r, 500));
    const log = await openStack.postfix!.readLog();
    // Evidence when it goes through: Postfix's `sasl_method=XCLIENT, sasl_username=eve@elsewhere.example`.
    expect(log.split('\n').filter((l) => /sasl_username=eve@/.test(l))).toEqual([]);
  });
});

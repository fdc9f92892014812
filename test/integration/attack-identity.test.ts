/**
 * Who a token names, attacked with tokens the provider signs, against real Postfix (XCLIENT
 * login, which does not ask Dovecot whether the user exists) and Dovecot. The server accepts
 * only example.test (`oauth.allowedEmailDomains`). An ID token without `at_hash` cannot be told
 * from an access token (Authentik's access tokens carry `nonce` too): the audience keeps other
 * applications' ID tokens out (docs/troubleshooting.md, wrong_token_type).
 */
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config/load.js';
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

describe('attack: token identities outside the accepted domains', () => {
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

describe('the default oauth.allowedEmailDomains (empty) with login: xclient', () => {
  it('is said at start: XCLIENT LOGIN= asks nobody whether the user exists', () => {
    const dir = mkdtempSync(join(tmpdir(), 'sasl-gate-open-domains-'));
    const file = join(dir, 'config.yaml');
    writeFileSync(
      file,
      [
        'listeners: [{ protocol: smtp, bind: "127.0.0.1:1465", tls: implicit }]',
        'tls: { development: true }',
        'backends: { smtp: { host: 127.0.0.1, port: 587, login: xclient } }',
        'master: { user: sasl-gate, password: not-used-here }',
        'oauth: { issuer: "https://idp.example.test", audience: [mail] }',
      ].join('\n'),
    );
    const { warnings } = loadConfig({ file, env: {} });
    expect(warnings.join('\n')).toMatch(/backends\.smtp\.login is xclient and no domain is accepted/);
    const withDomains = loadConfig({ file, env: { SASL_GATE_OAUTH__ALLOWED_EMAIL_DOMAINS: 'example.test' } });
    expect(withDomains.warnings.join('\n')).not.toMatch(/no domain is accepted/);
  });
});

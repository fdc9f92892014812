/**
 * The Node.js mail libraries against sasl-gate: imapflow (OAUTHBEARER with `host` and `port` when
 * advertised, XOAUTH2 otherwise, an initial response only with SASL-IR, `AQ==` / an empty line as
 * the answer to an error challenge) and nodemailer (`AUTH XOAUTH2` with an initial response, an
 * empty line after the error challenge, then one more `AUTH XOAUTH2` on the same connection with a
 * renewed token when it has a way to get one).
 */
import { ImapFlow } from 'imapflow';
import nodemailer from 'nodemailer';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startStack, type Stack } from '../support/stack.js';
import {
  ALICE,
  BOB,
  appendMessage,
  authCommand,
  authenticatedLine,
  decodeChallenge,
  expectedChallenge,
  expiredToken,
  failedLine,
  registerSaslSecrets,
  unique,
  waitForLog,
  waitForMessage,
} from './support/clients.js';
import { WireTap, withoutImapCapabilities } from './support/wire.js';

let stack: Stack;
let aliceToken: string;
const taps = {} as Record<'imap' | 'imapXoauth2' | 'imapXoauth2NoIr' | 'smtp', WireTap>;

beforeAll(async () => {
  stack = await startStack({ smtp: { login: 'xclient' } });
  aliceToken = await stack.idp.mintAccessToken({ user: ALICE.name });
  const tap = (port: number, edit?: (line: string) => string) =>
    WireTap.start({ target: { host: stack.host, port, ca: stack.ca }, tls: stack.tlsPaths, ...(edit ? { editServerLine: edit } : {}) });
  taps.imap = await tap(stack.imapPort);
  taps.imapXoauth2 = await tap(stack.imapPort, withoutImapCapabilities('AUTH=OAUTHBEARER'));
  taps.imapXoauth2NoIr = await tap(stack.imapPort, withoutImapCapabilities('AUTH=OAUTHBEARER', 'SASL-IR'));
  taps.smtp = await tap(stack.smtpPort);
});

afterAll(async () => {
  await Promise.all(Object.values(taps).map((t) => t.close()));
  await stack?.close();
});

function imapflow(port: number, user: string, accessToken: string) {
  return new ImapFlow({
    host: 'localhost',
    port,
    secure: true,
    tls: { ca: [stack.ca] },
    auth: { user, accessToken },
    logger: false,
    connectionTimeout: 10_000,
  });
}

describe('imapflow', () => {
  const variants = [
    { name: 'OAUTHBEARER with SASL-IR (sasl-gate as it is)', port: () => stack.imapPort, tap: () => taps.imap, mechanism: 'OAUTHBEARER', ir: true },
    { name: 'XOAUTH2 when only XOAUTH2 is advertised', port: () => taps.imapXoauth2.port, tap: () => taps.imapXoauth2, mechanism: 'XOAUTH2', ir: true },
    { name: 'XOAUTH2 without SASL-IR', port: () => taps.imapXoauth2NoIr.port, tap: () => taps.imapXoauth2NoIr, mechanism: 'XOAUTH2', ir: false },
  ] as const;

  for (const v of variants) {
    it(`${v.name}: reads the message; another user's and an expired token are refused`, async () => {
      const subject = unique('imapflow');
      await appendMessage(stack, ALICE, subject, 'read by imapflow through sasl-gate');
      const from = stack.logs.length;
      const client = imapflow(v.port(), ALICE.name, aliceToken);
      await client.connect();
      const lock = await client.getMailboxLock('INBOX');
      try {
        const found = (await client.search({ subject })) || [];
        expect(found).toHaveLength(1);
        const message = await client.fetchOne(String(found[0]), { source: true });
        expect(message && message.source?.toString()).toContain('read by imapflow through sasl-gate');
      } finally {
        lock.release();
      }
      await client.logout();
      expect(await authenticatedLine(stack, from, ALICE.name)).toMatchObject({ mechanism: v.mechanism });

      for (const [user, token, reason] of [
        [BOB.name, aliceToken, 'wrong_user'],
        [ALICE.name, await expiredToken(stack, ALICE.name), 'expired'],
      ] as const) {
        const at = stack.logs.length;
        const refused = imapflow(v.tap().port, user, token);
        const error = await refused.connect().then(
          () => undefined,
          (err: { authenticationFailed?: boolean; oauthError?: unknown }) => err,
        );
        refused.close();
        expect(error?.authenticationFailed).toBe(true);
        expect(error?.oauthError).toEqual(expectedChallenge(stack, v.mechanism));
        expect(await failedLine(stack, at)).toMatchObject({ reason, mechanism: v.mechanism });
        const wire = v.tap().last();
        const sent = wire.clientLines();
        registerSaslSecrets(sent);
        expect(authCommand(sent)).toMatchObject({ mechanism: v.mechanism, initialResponse: v.ir });
        if (v.mechanism === 'OAUTHBEARER') {
          // RFC 7628 message with the host and port imapflow connected to.
          const ir = Buffer.from(authCommand(sent)!.line.split(' ')[3]!, 'base64').toString();
          expect(ir).toBe(`n,a=${user},\x01host=localhost\x01port=${v.tap().port}\x01auth=Bearer ${token}\x01\x01`);
        }
        const challengeAt = wire.serverLines().findIndex((l) => /^\+ ./.test(l));
        expect(decodeChallenge(wire.serverLines()[challengeAt]!)).toEqual(expectedChallenge(stack, v.mechanism));
        const authAt = sent.findIndex((l) => / AUTHENTICATE /.test(l));
        expect(sent[authAt + (v.ir ? 1 : 2)]).toBe(v.mechanism === 'OAUTHBEARER' ? 'AQ==' : '');
        expect(wire.serverLines().some((l) => / NO \[AUTHENTICATIONFAILED\]/.test(l))).toBe(true);
      }
    });
  }
});

describe('nodemailer', () => {
  function transport(port: number, auth: Record<string, unknown>) {
    return nodemailer.createTransport({
      host: 'localhost',
      port,
      secure: true,
      name: 'nodemailer.example',
      tls: { ca: [stack.ca] },
      auth,
    });
  }

  it('XOAUTH2 with an initial response delivers the message', async () => {
    const subject = unique('nodemailer');
    const from = stack.logs.length;
    const info = await transport(taps.smtp.port, { type: 'OAuth2', user: ALICE.name, accessToken: aliceToken }).sendMail({
      from: ALICE.name,
      to: BOB.name,
      subject,
      text: 'sent by nodemailer through sasl-gate',
    });
    expect(info.accepted).toEqual([BOB.name]);
    expect(await authenticatedLine(stack, from, ALICE.name)).toMatchObject({ mechanism: 'XOAUTH2' });
    const sent = taps.smtp.last().clientLines();
    registerSaslSecrets(sent);
    expect(authCommand(sent)).toMatchObject({ mechanism: 'XOAUTH2', initialResponse: true });
    expect(await waitForMessage(stack, BOB, subject)).toContain('sent by nodemailer through sasl-gate');
  });

  it('after a refused token it retries on the same connection with a renewed one', async () => {
    const expired = await expiredToken(stack, ALICE.name);
    const handed: boolean[] = [];
    const provisionCallback = (_user: string, renew: boolean, callback: (err: Error | null, token?: string) => void) => {
      handed.push(renew);
      callback(null, renew ? aliceToken : expired);
    };
    const subject = unique('nodemailer retry');
    const from = stack.logs.length;
    const info = await transport(taps.smtp.port, { type: 'OAuth2', user: ALICE.name, provisionCallback }).sendMail({
      from: ALICE.name,
      to: BOB.name,
      subject,
      text: 'sent after a renewed token',
    });
    expect(info.accepted).toEqual([BOB.name]);
    expect(handed).toEqual([false, true]);
    expect(await failedLine(stack, from)).toMatchObject({ reason: 'expired', mechanism: 'XOAUTH2' });
    expect(await authenticatedLine(stack, from, ALICE.name)).toMatchObject({ mechanism: 'XOAUTH2' });
    const wire = taps.smtp.last();
    const sent = wire.clientLines();
    registerSaslSecrets(sent);
    // One connection: AUTH (refused: error challenge, empty line, 535), AUTH again, 235.
    const auths = sent.map((l, i) => [l, i] as const).filter(([l]) => l.startsWith('AUTH XOAUTH2 '));
    expect(auths).toHaveLength(2);
    expect(sent[auths[0]![1] + 1]).toBe('');
    const server = wire.serverLines();
    expect(decodeChallenge(server.find((l) => /^334 ./.test(l))!)).toEqual(expectedChallenge(stack, 'XOAUTH2'));
    expect(server).toContain('535 5.7.8 Authentication credentials invalid');
    expect(server).toContain('235 2.7.0 Authentication successful');
    expect(await waitForMessage(stack, BOB, subject)).toContain('sent after a renewed token');
  });

  it("another user's token is refused (EAUTH) after the retry", async () => {
    const from = stack.logs.length;
    const provisionCallback = (_user: string, _renew: boolean, callback: (err: Error | null, token?: string) => void) =>
      callback(null, aliceToken);
    const error = await transport(taps.smtp.port, { type: 'OAuth2', user: BOB.name, provisionCallback })
      .sendMail({ from: BOB.name, to: BOB.name, subject: 'never sent', text: 'x' })
      .then(
        () => undefined,
        (err: { code?: string; response?: string }) => err,
      );
    expect(error).toMatchObject({ code: 'EAUTH', response: '535 5.7.8 Authentication credentials invalid' });
    await waitForLog(stack, from, (l) => l['msg'] === 'connection closed' && l['mechanism'] === 'XOAUTH2');
    const failures = stack.logs.slice(from).filter((l) => l['msg'] === 'authentication failed');
    expect(failures.map((f) => f['reason'])).toEqual(['wrong_user', 'wrong_user']);
    registerSaslSecrets(taps.smtp.last().clientLines());
  });
});

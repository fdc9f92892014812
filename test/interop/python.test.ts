/**
 * Python's standard library against sasl-gate, run as `python3 -c` scripts the way a user's
 * script would use them: imaplib (which never sends an initial response; it waits for `+` and
 * calls the authobject for every challenge, so a naive lambda re-sends the token as its answer to
 * the error challenge) and smtplib (initial response by default, or after 334 with
 * `initial_response_ok=False`; it also re-sends the auth string on the error challenge).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startStack, type Stack } from '../support/stack.js';
import {
  ALICE,
  BOB,
  appendMessage,
  authCommand,
  authenticatedLine,
  decodeChallenge,
  ensureProgram,
  expectedChallenge,
  expiredToken,
  failedLine,
  registerSaslSecrets,
  removeWorkDirs,
  run,
  unique,
  waitForMessage,
  workDir,
} from './support/clients.js';
import { WireTap } from './support/wire.js';

let stack: Stack;
let caPath: string;
let aliceToken: string;
let available: { ok: boolean; reason: string };
let imapTap: WireTap;
let smtpTap: WireTap;

beforeAll(async () => {
  available = await ensureProgram('python3', 'python3');
  stack = await startStack({ smtp: { login: 'xclient' } });
  ({ caPath } = workDir(stack, 'python'));
  aliceToken = await stack.idp.mintAccessToken({ user: ALICE.name });
  imapTap = await WireTap.start({ target: { host: stack.host, port: stack.imapPort, ca: stack.ca }, tls: stack.tlsPaths });
  smtpTap = await WireTap.start({ target: { host: stack.host, port: stack.smtpPort, ca: stack.ca }, tls: stack.tlsPaths });
});

afterAll(async () => {
  await Promise.all([imapTap?.close(), smtpTap?.close()]);
  await stack?.close();
  removeWorkDirs();
});

/**
 * The scripts take their parameters from the environment (never from the command line, where a
 * token would show in `ps`) and print one JSON line with the outcome.
 */
const IMAP_SCRIPT = String.raw`
import imaplib, json, os, ssl
e = os.environ
ctx = ssl.create_default_context(cafile=e['CA'])
m = imaplib.IMAP4_SSL('localhost', int(e['PORT']), ssl_context=ctx)
user, token, mech = e['MAIL_USER'], e['TOKEN'], e['MECH']
if mech == 'XOAUTH2':
    auth = lambda _challenge: f'user={user}\x01auth=Bearer {token}\x01\x01'.encode()
else:
    auth = lambda _challenge: f'n,a={user},\x01host=localhost\x01port={e["PORT"]}\x01auth=Bearer {token}\x01\x01'.encode()
try:
    typ, data = m.authenticate(mech, auth)
except imaplib.IMAP4.error as err:
    print(json.dumps({'ok': False, 'error': str(err)}))
    raise SystemExit(0)
m.select('INBOX', readonly=True)
typ, data = m.search(None, 'SUBJECT', '"' + e['SUBJECT'] + '"')
num = data[0].split()[0]
typ, msg = m.fetch(num, '(BODY.PEEK[])')
m.logout()
print(json.dumps({'ok': True, 'message': msg[0][1].decode('utf-8', 'replace')}))
`;

const SMTP_SCRIPT = String.raw`
import json, os, smtplib, ssl
e = os.environ
ctx = ssl.create_default_context(cafile=e['CA'])
user, token, mech = e['MAIL_USER'], e['TOKEN'], e['MECH']
def auth(challenge=None):
    if mech == 'XOAUTH2':
        return f'user={user}\x01auth=Bearer {token}\x01\x01'
    return f'n,a={user},\x01host=localhost\x01port={e["PORT"]}\x01auth=Bearer {token}\x01\x01'
with smtplib.SMTP_SSL('localhost', int(e['PORT']), context=ctx) as s:
    s.ehlo('python.example')
    try:
        s.auth(mech, auth, initial_response_ok=e['IR'] == '1')
    except smtplib.SMTPAuthenticationError as err:
        print(json.dumps({'ok': False, 'code': err.smtp_code, 'error': err.smtp_error.decode()}))
        raise SystemExit(0)
    s.sendmail(user, [e['RCPT']], f'From: <{user}>\r\nTo: <{e["RCPT"]}>\r\nSubject: {e["SUBJECT"]}\r\n\r\nsent by smtplib through sasl-gate\r\n')
print(json.dumps({'ok': True}))
`;

async function python(script: string, env: Record<string, string>) {
  const r = await run('python3', ['-c', script], { env: { CA: caPath, ...env } });
  expect(r.code, r.stderr).toBe(0);
  return JSON.parse(r.stdout.trim().split('\n').at(-1)!) as { ok: boolean; message?: string; code?: number; error?: string };
}

function skipUnless(ctx: { skip: (note?: string) => void }) {
  if (!available.ok) ctx.skip(available.reason);
}

describe('imaplib', () => {
  for (const mechanism of ['XOAUTH2', 'OAUTHBEARER'] as const) {
    it(`${mechanism} (continuation): reads the message; another user's and an expired token are refused`, async (ctx) => {
      skipUnless(ctx);
      const subject = unique('imaplib');
      await appendMessage(stack, ALICE, subject, 'read by imaplib through sasl-gate');
      const from = stack.logs.length;
      const good = await python(IMAP_SCRIPT, { PORT: String(stack.imapPort), MAIL_USER: ALICE.name, TOKEN: aliceToken, MECH: mechanism, SUBJECT: subject });
      expect(good).toMatchObject({ ok: true });
      expect(good.message).toContain('read by imaplib through sasl-gate');
      expect(await authenticatedLine(stack, from, ALICE.name)).toMatchObject({ mechanism });

      for (const [user, token, reason] of [
        [BOB.name, aliceToken, 'wrong_user'],
        [ALICE.name, await expiredToken(stack, ALICE.name), 'expired'],
      ] as const) {
        const at = stack.logs.length;
        const bad = await python(IMAP_SCRIPT, { PORT: String(imapTap.port), MAIL_USER: user, TOKEN: token, MECH: mechanism, SUBJECT: subject });
        expect(bad).toEqual({ ok: false, error: '[AUTHENTICATIONFAILED] Authentication failed.' });
        expect(await failedLine(stack, at)).toMatchObject({ reason, mechanism });
        const client = imapTap.last().clientLines();
        const server = imapTap.last().serverLines();
        registerSaslSecrets(client);
        // No initial response: the command, then the message after "+ ".
        expect(authCommand(client)).toMatchObject({ mechanism, initialResponse: false });
        const challengeAt = server.findIndex((l) => l.startsWith('+ ') && l.length > 2);
        expect(decodeChallenge(server[challengeAt]!)).toEqual(expectedChallenge(stack, mechanism));
        // imaplib calls the authobject again with the challenge: the lambda answers with the
        // same message, which sasl-gate takes as the reply that ends the exchange.
        const authAt = client.findIndex((l) => / AUTHENTICATE /.test(l));
        expect(client[authAt + 2]).toBe(client[authAt + 1]);
        expect(server.at(-1)).toMatch(/^\S+ NO \[AUTHENTICATIONFAILED\]/);
      }
    });
  }
});

describe('smtplib', () => {
  const variants = [
    { mechanism: 'XOAUTH2', ir: true },
    { mechanism: 'XOAUTH2', ir: false },
    { mechanism: 'OAUTHBEARER', ir: true },
  ] as const;
  for (const { mechanism, ir } of variants) {
    it(`${mechanism} ${ir ? 'with an initial response' : 'after 334 (initial_response_ok=False)'}: delivers; bad tokens get 535`, async (ctx) => {
      skipUnless(ctx);
      const subject = unique('smtplib');
      const from = stack.logs.length;
      const good = await python(SMTP_SCRIPT, {
        PORT: String(stack.smtpPort), MAIL_USER: ALICE.name, TOKEN: aliceToken, MECH: mechanism, IR: ir ? '1' : '0', RCPT: BOB.name, SUBJECT: subject,
      });
      expect(good).toEqual({ ok: true });
      expect(await authenticatedLine(stack, from, ALICE.name)).toMatchObject({ mechanism });
      expect(await waitForMessage(stack, BOB, subject)).toContain('sent by smtplib through sasl-gate');

      for (const [user, token, reason] of [
        [BOB.name, aliceToken, 'wrong_user'],
        [ALICE.name, await expiredToken(stack, ALICE.name), 'expired'],
      ] as const) {
        const at = stack.logs.length;
        const bad = await python(SMTP_SCRIPT, {
          PORT: String(smtpTap.port), MAIL_USER: user, TOKEN: token, MECH: mechanism, IR: ir ? '1' : '0', RCPT: BOB.name, SUBJECT: subject,
        });
        expect(bad).toEqual({ ok: false, code: 535, error: '5.7.8 Authentication credentials invalid' });
        expect(await failedLine(stack, at)).toMatchObject({ reason, mechanism });
        const client = smtpTap.last().clientLines();
        const server = smtpTap.last().serverLines();
        registerSaslSecrets(client);
        expect(authCommand(client)).toMatchObject({ mechanism, initialResponse: ir });
        const challenge = server.find((l) => /^334 ./.test(l));
        expect(decodeChallenge(challenge!)).toEqual(expectedChallenge(stack, mechanism));
        // smtplib answers the error challenge by calling the authobject again: the same message.
        const authAt = client.findIndex((l) => l.startsWith('AUTH '));
        const message = ir ? client[authAt]!.split(' ')[2] : client[authAt + 1];
        expect(client[authAt + (ir ? 1 : 2)]).toBe(message);
        expect(server).toContain('535 5.7.8 Authentication credentials invalid');
      }
    });
  }
});

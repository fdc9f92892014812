/**
 * curl against sasl-gate, IMAPS and SMTPS, with real tokens from the OpenID provider. curl picks
 * OAUTHBEARER when it is advertised and XOAUTH2 otherwise; it sends an initial response on IMAP
 * when SASL-IR is advertised and on SMTP only with `--sasl-ir`. The cases where sasl-gate offers
 * fewer mechanisms (only XOAUTH2, or no SASL-IR) go through a tap that removes them from the
 * capability lines, which is the only way to make Debian's curl 7.88 use XOAUTH2: it ignores
 * `--login-options AUTH=XOAUTH2` together with `--oauth2-bearer` (curl issue 10259, fixed in 8.6).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { secret } from '../support/evidence.js';
import { startStack, type Stack } from '../support/stack.js';
import {
  ALICE,
  BOB,
  appendMessage,
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
import { WireTap, withoutImapCapabilities, withoutSmtpMechanisms } from './support/wire.js';

let stack: Stack;
let caPath: string;
let aliceToken: string;
let bobToken: string;
/** An opaque token (validated by introspection): short enough for curl's 512-octet SMTP lines. */
let aliceOpaque: string;
let available: { ok: boolean; reason: string };
let curlVersion: [number, number];
const taps: Record<string, WireTap> = {};

beforeAll(async () => {
  available = await ensureProgram('curl', 'curl');
  stack = await startStack({ smtp: { login: 'xclient' }, oauth: { validation: ['jwt', 'introspection'] } });
  ({ caPath } = workDir(stack, 'curl'));
  aliceToken = await stack.idp.mintAccessToken({ user: ALICE.name });
  bobToken = await stack.idp.mintAccessToken({ user: BOB.name });
  aliceOpaque = await stack.idp.mintAccessToken({ user: ALICE.name, format: 'opaque', audience: 'mail' });
  const target = { host: stack.host, ca: stack.ca };
  const tap = (port: number, edit: (line: string) => string) =>
    WireTap.start({ target: { ...target, port }, tls: stack.tlsPaths, editServerLine: edit });
  taps['imapXoauth2'] = await tap(stack.imapPort, withoutImapCapabilities('AUTH=OAUTHBEARER'));
  taps['imapXoauth2NoIr'] = await tap(stack.imapPort, withoutImapCapabilities('AUTH=OAUTHBEARER', 'SASL-IR'));
  taps['imapNoIr'] = await tap(stack.imapPort, withoutImapCapabilities('SASL-IR'));
  taps['smtpXoauth2'] = await tap(stack.smtpPort, withoutSmtpMechanisms('OAUTHBEARER'));
  if (available.ok) {
    const v = await run('curl', ['--version']);
    const m = /^curl (\d+)\.(\d+)/.exec(v.stdout);
    curlVersion = [Number(m?.[1] ?? 0), Number(m?.[2] ?? 0)];
  }
});

afterAll(async () => {
  await Promise.all(Object.values(taps).map((t) => t.close()));
  await stack?.close();
  removeWorkDirs();
});

/** Runs curl with -v; returns the protocol lines it sent (`> `) and received (`< `). */
async function curl(args: string[], input?: string) {
  const r = await run('curl', ['-sS', '-v', '--max-time', '20', '--cacert', caPath, ...args], input === undefined ? {} : { input });
  const sent = r.stderr.split(/\r?\n/).filter((l) => l.startsWith('> ')).map((l) => l.slice(2));
  const received = r.stderr.split(/\r?\n/).filter((l) => l.startsWith('< ')).map((l) => l.slice(2));
  registerSaslSecrets(sent);
  return { ...r, sent, received };
}

/** What curl's AUTHENTICATE / AUTH line looked like. */
function authOf(sent: string[]) {
  const line = sent.find((l) => / AUTHENTICATE |^AUTH /.test(l)) ?? '';
  const m = /(?:AUTHENTICATE|AUTH) (\S+)(?: (\S+))?$/.exec(line);
  return { mechanism: m?.[1], initialResponse: m?.[2] !== undefined };
}

function skipUnlessCurl(ctx: { skip: (note?: string) => void }) {
  if (!available.ok) ctx.skip(available.reason);
}

const imapUrl = (port: number, path: string) => `imaps://localhost:${port}/${path}`;

describe('curl IMAPS', () => {
  const variants = [
    { name: 'OAUTHBEARER with SASL-IR (sasl-gate as it is)', port: () => stack.imapPort, mechanism: 'OAUTHBEARER', ir: true },
    { name: 'OAUTHBEARER without SASL-IR advertised', port: () => taps['imapNoIr']!.port, mechanism: 'OAUTHBEARER', ir: false },
    { name: 'XOAUTH2 when only XOAUTH2 is advertised', port: () => taps['imapXoauth2']!.port, mechanism: 'XOAUTH2', ir: true },
    { name: 'XOAUTH2 without SASL-IR', port: () => taps['imapXoauth2NoIr']!.port, mechanism: 'XOAUTH2', ir: false },
  ] as const;

  for (const v of variants) {
    it(`${v.name}: reads the mailbox; another user's and an expired token are refused`, async (ctx) => {
      skipUnlessCurl(ctx);
      const subject = unique('curl imap');
      await appendMessage(stack, ALICE, subject, 'read by curl through sasl-gate');
      const from = stack.logs.length;
      const search = await curl(['--user', ALICE.name, '--oauth2-bearer', aliceToken, imapUrl(v.port(), `INBOX?SUBJECT%20%22${encodeURIComponent(subject)}%22`)]);
      expect(search.code, search.stderr).toBe(0);
      expect(authOf(search.sent)).toEqual({ mechanism: v.mechanism, initialResponse: v.ir });
      if (!v.ir) expect(search.received).toContain('+ ');
      const n = /^\* SEARCH (\d+)/.exec(search.stdout.trim())?.[1];
      expect(n, search.stdout).toBeDefined();
      const fetched = await curl(['--user', ALICE.name, '--oauth2-bearer', aliceToken, imapUrl(v.port(), `INBOX;MAILINDEX=${n}`)]);
      expect(fetched.code, fetched.stderr).toBe(0);
      expect(fetched.stdout).toContain(`Subject: ${subject}`);
      expect(fetched.stdout).toContain('read by curl through sasl-gate');
      expect(await authenticatedLine(stack, from, ALICE.name)).toMatchObject({ mechanism: v.mechanism });

      for (const [user, token, reason] of [
        [BOB.name, aliceToken, 'wrong_user'],
        [ALICE.name, await expiredToken(stack, ALICE.name), 'expired'],
      ] as const) {
        const at = stack.logs.length;
        const refused = await curl(['--user', user, '--oauth2-bearer', token, imapUrl(v.port(), 'INBOX?ALL')]);
        expect(refused.code, refused.stderr).toBe(67); // CURLE_LOGIN_DENIED
        expect(await failedLine(stack, at)).toMatchObject({ reason, mechanism: v.mechanism });
        const challenge = refused.received.find((l) => l.startsWith('+ ') && l.length > 2);
        expect(challenge, refused.received.join('\n')).toBeDefined();
        expect(decodeChallenge(challenge!)).toEqual(expectedChallenge(stack, v.mechanism));
        if (v.mechanism === 'OAUTHBEARER') {
          // curl answers RFC 7628's error challenge with the base64 of 0x01 and reads the NO.
          expect(refused.sent.at(-1) === 'AQ==' || refused.sent.includes('AQ==')).toBe(true);
          expect(refused.received.some((l) => / NO \[AUTHENTICATIONFAILED\]/.test(l))).toBe(true);
        }
      }
    });
  }

  it('--login-options AUTH=XOAUTH2 against sasl-gate (honoured from curl 8.6 on)', async (ctx) => {
    skipUnlessCurl(ctx);
    const from = stack.logs.length;
    const r = await curl(['--login-options', 'AUTH=XOAUTH2', '--user', BOB.name, '--oauth2-bearer', bobToken, imapUrl(stack.imapPort, 'INBOX?ALL')]);
    expect(r.code, r.stderr).toBe(0);
    const honoured = curlVersion[0] > 8 || (curlVersion[0] === 8 && curlVersion[1] >= 6);
    const expected = honoured ? 'XOAUTH2' : 'OAUTHBEARER';
    expect(authOf(r.sent).mechanism).toBe(expected);
    expect(await authenticatedLine(stack, from, BOB.name)).toMatchObject({ mechanism: expected });
  });
});

describe('curl SMTPS', () => {
  const variants = [
    { name: 'OAUTHBEARER', port: () => stack.smtpPort, mechanism: 'OAUTHBEARER', ir: false, opaque: false },
    { name: 'OAUTHBEARER with --sasl-ir (opaque token)', port: () => stack.smtpPort, mechanism: 'OAUTHBEARER', ir: true, opaque: true },
    { name: 'XOAUTH2 (only XOAUTH2 advertised)', port: () => taps['smtpXoauth2']!.port, mechanism: 'XOAUTH2', ir: false, opaque: false },
    { name: 'XOAUTH2 with --sasl-ir (opaque token)', port: () => taps['smtpXoauth2']!.port, mechanism: 'XOAUTH2', ir: true, opaque: true },
  ] as const;

  for (const v of variants) {
    it(`${v.name}: delivers a message; another user's and an expired token are refused`, async (ctx) => {
      skipUnlessCurl(ctx);
      const subject = unique('curl smtp');
      const message = `From: <${ALICE.name}>\r\nTo: <${BOB.name}>\r\nSubject: ${subject}\r\n\r\nsent by curl through sasl-gate\r\n`;
      const smtp = (user: string, token: string) => [
        ...(v.ir ? ['--sasl-ir'] : []),
        '--user', user, '--oauth2-bearer', token,
        '--mail-from', ALICE.name, '--mail-rcpt', BOB.name, '-T', '-',
        `smtps://localhost:${v.port()}`,
      ];
      const from = stack.logs.length;
      // With --sasl-ir curl sends an initial response only when the AUTH line stays within 512
      // octets; a JWT access token is longer (see the large-token case below).
      const sent = await curl(smtp(ALICE.name, v.opaque ? aliceOpaque : aliceToken), message);
      expect(sent.code, sent.stderr).toBe(0);
      expect(authOf(sent.sent)).toEqual({ mechanism: v.mechanism, initialResponse: v.ir });
      expect(sent.received).toContain('235 2.7.0 Authentication successful');
      expect(await authenticatedLine(stack, from, ALICE.name)).toMatchObject({ mechanism: v.mechanism });
      expect(await waitForMessage(stack, BOB, subject)).toContain('sent by curl through sasl-gate');

      for (const [user, token, reason] of [
        [BOB.name, v.opaque ? aliceOpaque : aliceToken, 'wrong_user'],
        [ALICE.name, await expiredToken(stack, ALICE.name), 'expired'],
      ] as const) {
        const at = stack.logs.length;
        const refused = await curl(smtp(user, token), message);
        if (reason === 'wrong_user') expect(authOf(refused.sent)).toEqual({ mechanism: v.mechanism, initialResponse: v.ir });
        expect(refused.code, refused.stderr).toBe(67);
        expect(await failedLine(stack, at)).toMatchObject({ reason, mechanism: v.mechanism });
        const challenge = refused.received.find((l) => /^334 ./.test(l));
        expect(challenge, refused.received.join('\n')).toBeDefined();
        expect(decodeChallenge(challenge!)).toEqual(expectedChallenge(stack, v.mechanism));
        if (v.mechanism === 'OAUTHBEARER') {
          expect(refused.sent).toContain('AQ==');
          expect(refused.received).toContain('535 5.7.8 Authentication credentials invalid');
        }
      }
    });
  }
});

describe('curl with large tokens', () => {
  it('IMAPS and SMTPS (with --sasl-ir) accept a 12 KiB token', async (ctx) => {
    skipUnlessCurl(ctx);
    const claims = { ...stack.idp.claimsFor(ALICE.name), padding: 'x'.repeat(8800) };
    const big = await stack.idp.signToken(claims);
    expect(big.length).toBeGreaterThan(12_000);
    const imap = await curl(['--user', ALICE.name, '--oauth2-bearer', big, imapUrl(stack.imapPort, 'INBOX?ALL')]);
    expect(imap.code, imap.stderr).toBe(0);
    expect(authOf(imap.sent).initialResponse).toBe(true);
    const subject = unique('curl big token');
    const smtp = await curl(
      ['--sasl-ir', '--user', ALICE.name, '--oauth2-bearer', big, '--mail-from', ALICE.name, '--mail-rcpt', ALICE.name, '-T', '-', `smtps://localhost:${stack.smtpPort}`],
      `Subject: ${subject}\r\n\r\nbig token\r\n`,
    );
    expect(smtp.code, smtp.stderr).toBe(0);
    // curl keeps SMTP command lines within 512 octets: a long initial response goes as a continuation.
    expect(authOf(smtp.sent)).toEqual({ mechanism: 'OAUTHBEARER', initialResponse: false });
    expect(await waitForMessage(stack, ALICE, subject)).toContain('big token');
    secret(big, 'access token');
  });
});

/**
 * The private Postfix gives sasl-gate what it relies on in production: password submissions checked
 * by Dovecot SASL, XCLIENT LOGIN from the proxy with the real client's address in the log, master-user
 * submissions on a user's behalf, senders bound to their login, delivery into Dovecot over LMTP,
 * refusal of unauthenticated mail, and clean shutdown.
 */
import { randomBytes } from 'node:crypto';
import { createServer } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startDovecot, type DovecotInstance } from '../../tools/dovecot.js';
import { startPostfix, type PostfixInstance } from '../../tools/postfix.js';
import { RawImap, quoted, saslPlain } from '../support/imap-raw.js';
import { RawSmtp } from '../support/smtp-raw.js';
import { waitFor, waitForLine } from '../support/wait.js';

const DOMAIN = 'example.test';
const ALICE = { name: 'alice@example.test', password: 'correct horse: "battery"' };
const BOB = { name: 'bob@example.test', password: 'bob-secret' };
const MASTER = { user: 'sasl-gate', password: 'master-secret-42' };
const XCLIENT = 'XCLIENT LOGIN=alice@example.test ADDR=203.0.113.7 PORT=40000 HELO=client.example NAME=[UNAVAILABLE]';

/*
 * What Postfix 3.7.11 (Debian bookworm) sends on the submission port with this configuration:
 *
 * Greeting: `220 smtp.example.test ESMTP Postfix`
 *
 * EHLO from the proxy (an smtpd_authorized_xclient_hosts address):
 *   250-smtp.example.test
 *   250-PIPELINING
 *   250-SIZE 52428800
 *   250-VRFY
 *   250-ETRN
 *   250-AUTH PLAIN LOGIN
 *   250-XCLIENT NAME ADDR PROTO HELO REVERSE_NAME PORT LOGIN DESTADDR DESTPORT
 *   250-ENHANCEDSTATUSCODES
 *   250-8BITMIME
 *   250-DSN
 *   250-SMTPUTF8
 *   250 CHUNKING
 * XCLIENT answers with a fresh greeting, `220 smtp.example.test ESMTP Postfix`. The EHLO after it
 * is the same list without the XCLIENT line (the session now belongs to 203.0.113.7, which may not
 * use XCLIENT); AUTH is still offered. The name given in that EHLO replaces XCLIENT's HELO= in the
 * log (`helo=<...>`), so the proxy should repeat the client's own HELO name there.
 *
 * From a client outside smtpd_authorized_xclient_hosts, EHLO lacks the XCLIENT line and XCLIENT gets
 * `550 5.7.0 Error: insufficient authorization` (the session goes on; nothing else is logged).
 *
 * AUTH PLAIN (user or master) `235 2.7.0 Authentication successful`; a wrong password
 * `535 5.7.8 Error: authentication failed: (reason unavailable)` (Dovecot gives Postfix no reason).
 * AUTH LOGIN prompts `334 VXNlcm5hbWU6` then `334 UGFzc3dvcmQ6`.
 * Sending as someone else: `553 5.7.1 <bob@example.test>: Sender address rejected: not owned by user alice@example.test`.
 * Without authentication MAIL FROM is accepted, RCPT TO gets
 * `554 5.7.1 <bob@example.test>: Recipient address rejected: Access denied`.
 *
 * The smtpd log line for an accepted sender (lines start with `<date> smtp postfix/submission/smtpd[pid]: `):
 *   XCLIENT:     `<queue id>: client=unknown[203.0.113.7]:40000, sasl_method=XCLIENT, sasl_username=alice@example.test`
 *   master AUTH: `<queue id>: client=localhost[127.0.0.1]:<port>, sasl_method=PLAIN, sasl_username=alice@example.test`
 * A failed AUTH logs `warning: localhost[127.0.0.1]:<port>: SASL PLAIN authentication failed:
 * (reason unavailable), sasl_username=<authcid>` (the master user's name for a wrong master password),
 * after Dovecot's auth_failure_delay (about 2 s).
 * A session that used XCLIENT ends with a disconnect line that counts the XCLIENT as failed although
 * it succeeded, e.g.
 * `disconnect from unknown[203.0.113.7]:40000 ehlo=2 xclient=0/1 mail=1/2 rcpt=1 data=1 quit=1 commands=6/8`.
 */

function waitForLog(postfix: PostfixInstance, pattern: RegExp): Promise<string> {
  return waitForLine(() => postfix.readLog(), pattern);
}

/** Waits until a message whose Subject holds `token` is in the user's INBOX. */
async function waitForDelivery(dovecot: DovecotInstance, user: typeof BOB, token: string, timeoutMs = 10_000): Promise<void> {
  await waitFor(
    async () => {
      const imap = await RawImap.connect(dovecot.host, dovecot.imapPort);
      try {
        expect((await imap.command(`LOGIN ${quoted(user.name)} ${quoted(user.password)}`)).status).toBe('OK');
        expect((await imap.command('SELECT INBOX')).status).toBe('OK');
        const search = await imap.command(`SEARCH HEADER Subject ${quoted(token)}`);
        return search.untagged.some((line) => /^\* SEARCH \d/.test(line));
      } finally {
        imap.close();
      }
    },
    { timeoutMs, intervalMs: 200, what: `a message "${token}" for ${user.name}` },
  );
}

function canListen(host: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = createServer();
    server.once('error', () => resolve(false));
    server.listen({ host, port, exclusive: true }, () => server.close(() => resolve(true)));
  });
}

const token = (): string => `devstack-${randomBytes(6).toString('hex')}`;

const message = (from: string, to: string, subject: string): string =>
  `From: <${from}>\r\nTo: <${to}>\r\nSubject: ${subject}\r\n\r\nhello from the postfix devstack test\r\n`;

function queueIdOf(reply: { code: number; text: string }): string {
  const match = /^2\.0\.0 Ok: queued as ([0-9A-Za-z]+)$/.exec(reply.text);
  if (reply.code !== 250 || !match?.[1]) throw new Error(`not queued: ${reply.code} ${reply.text}`);
  return match[1];
}

describe('private Postfix for integration tests', () => {
  let dovecot: DovecotInstance;
  let postfix: PostfixInstance;

  beforeAll(async () => {
    dovecot = await startDovecot({ users: [ALICE, BOB], master: MASTER, authPenalty: false });
    postfix = await startPostfix({ dovecot, domain: DOMAIN });
  });

  afterAll(async () => {
    await postfix?.stop();
    await dovecot?.stop();
  });

  const smtp = (): Promise<RawSmtp> => RawSmtp.connect(postfix.host, postfix.submissionPort);

  it('greets and offers AUTH and XCLIENT to the proxy, without TLS', async () => {
    const session = await smtp();
    try {
      expect(session.greeting.lines).toEqual(['220 smtp.example.test ESMTP Postfix']);
      const ehlo = await session.command('EHLO proxy.test');
      expect(ehlo.code).toBe(250);
      expect(ehlo.lines[0]).toBe('250-smtp.example.test');
      expect(ehlo.lines).toContain('250-AUTH PLAIN LOGIN');
      expect(ehlo.lines).toContain('250-XCLIENT NAME ADDR PROTO HELO REVERSE_NAME PORT LOGIN DESTADDR DESTPORT');
      expect(ehlo.lines).toContain('250-SIZE 52428800');
      expect(ehlo.lines.some((l) => l.includes('STARTTLS'))).toBe(false);
    } finally {
      session.close();
    }
  });

  it('takes a password submission (AUTH PLAIN) and delivers it into the recipient mailbox over LMTP', async () => {
    const subject = token();
    const session = await smtp();
    try {
      await session.command('EHLO client.example');
      const auth = await session.command(`AUTH PLAIN ${saslPlain('', ALICE.name, ALICE.password)}`);
      expect(auth.lines).toEqual(['235 2.7.0 Authentication successful']);
      expect((await session.command(`MAIL FROM:<${ALICE.name}>`)).lines).toEqual(['250 2.1.0 Ok']);
      expect((await session.command(`RCPT TO:<${BOB.name}>`)).lines).toEqual(['250 2.1.5 Ok']);
      const queueId = queueIdOf(await session.data(message(ALICE.name, BOB.name, subject)));
      expect((await session.command('QUIT')).code).toBe(221);

      const line = await waitForLog(postfix, new RegExp(`${queueId}: client=`));
      expect(line).toMatch(/: client=localhost\[127\.0\.0\.1\]:\d+, sasl_method=PLAIN, sasl_username=alice@example\.test$/);
      await waitForDelivery(dovecot, BOB, subject);
      const relay = `relay=127\\.0\\.0\\.1\\[127\\.0\\.0\\.1\\]:${dovecot.lmtpPort}`;
      const sent = await waitForLog(postfix, new RegExp(`${queueId}: to=<bob@example\\.test>, ${relay},.* status=sent`));
      expect(sent).toContain('postfix/lmtp[');
    } finally {
      session.close();
    }
    expect(await postfix.readLog()).not.toContain(ALICE.password);
  });

  it('passes AUTH LOGIN to Dovecot and refuses a wrong password', async () => {
    const session = await smtp();
    try {
      await session.command('EHLO client.example');
      expect((await session.command('AUTH LOGIN')).lines).toEqual(['334 VXNlcm5hbWU6']);
      expect((await session.command(Buffer.from(BOB.name).toString('base64'))).lines).toEqual(['334 UGFzc3dvcmQ6']);
      const ok = await session.command(Buffer.from(BOB.password).toString('base64'));
      expect(ok.lines).toEqual(['235 2.7.0 Authentication successful']);
    } finally {
      session.close();
    }
    const bad = await smtp();
    try {
      await bad.command('EHLO client.example');
      const reply = await bad.command(`AUTH PLAIN ${saslPlain('', ALICE.name, 'wrong password')}`);
      expect(reply.lines).toEqual(['535 5.7.8 Error: authentication failed: (reason unavailable)']);
    } finally {
      bad.close();
    }
  });

  it('accepts XCLIENT LOGIN from the proxy; the user sends only as themselves; the log names the real client', async () => {
    const subject = token();
    const session = await smtp();
    try {
      const before = await session.command('EHLO proxy.test');
      expect(before.lines).toContain('250-XCLIENT NAME ADDR PROTO HELO REVERSE_NAME PORT LOGIN DESTADDR DESTPORT');
      const xclient = await session.command(XCLIENT);
      expect(xclient.lines).toEqual(['220 smtp.example.test ESMTP Postfix']);
      const after = await session.command('EHLO client.example');
      expect(after.code).toBe(250);
      expect(after.lines).toContain('250-AUTH PLAIN LOGIN');
      expect(after.lines.some((l) => l.includes('XCLIENT'))).toBe(false);
      // Apart from XCLIENT the capabilities the client will see do not change.
      expect(after.lines).toEqual(before.lines.filter((l) => !l.includes('XCLIENT')));

      expect((await session.command(`MAIL FROM:<${ALICE.name}>`)).lines).toEqual(['250 2.1.0 Ok']);
      expect((await session.command(`RCPT TO:<${BOB.name}>`)).lines).toEqual(['250 2.1.5 Ok']);
      const queueId = queueIdOf(await session.data(message(ALICE.name, BOB.name, subject)));

      const foreign = await session.command(`MAIL FROM:<${BOB.name}>`);
      expect(foreign.lines).toEqual([
        '553 5.7.1 <bob@example.test>: Sender address rejected: not owned by user alice@example.test',
      ]);
      expect((await session.command('QUIT')).code).toBe(221);

      const line = await waitForLog(postfix, new RegExp(`${queueId}: client=`));
      expect(line).toContain(
        `${queueId}: client=unknown[203.0.113.7]:40000, sasl_method=XCLIENT, sasl_username=alice@example.test`,
      );
      expect(line).toContain('postfix/submission/smtpd[');
      const reject = await waitForLog(postfix, /NOQUEUE: reject: MAIL from unknown\[203\.0\.113\.7\]:40000: 553 5\.7\.1 /);
      expect(reject).toContain('from=<bob@example.test> proto=ESMTP helo=<client.example>');
      await waitForDelivery(dovecot, BOB, subject);
    } finally {
      session.close();
    }
  });

  it('lets the master user submit on alice\'s behalf (AUTH PLAIN with authzid) as alice only', async () => {
    const subject = token();
    const session = await smtp();
    try {
      await session.command('EHLO client.example');
      const auth = await session.command(`AUTH PLAIN ${saslPlain(ALICE.name, MASTER.user, MASTER.password)}`);
      expect(auth.lines).toEqual(['235 2.7.0 Authentication successful']);
      const foreign = await session.command(`MAIL FROM:<${BOB.name}>`);
      expect(foreign.lines).toEqual([
        '553 5.7.1 <bob@example.test>: Sender address rejected: not owned by user alice@example.test',
      ]);
      expect((await session.command(`MAIL FROM:<${ALICE.name}>`)).lines).toEqual(['250 2.1.0 Ok']);
      expect((await session.command(`RCPT TO:<${BOB.name}>`)).lines).toEqual(['250 2.1.5 Ok']);
      const queueId = queueIdOf(await session.data(message(ALICE.name, BOB.name, subject)));
      expect((await session.command('QUIT')).code).toBe(221);

      const line = await waitForLog(postfix, new RegExp(`${queueId}: client=`));
      const client = 'client=localhost\\[127\\.0\\.0\\.1\\]:\\d+';
      expect(line).toMatch(new RegExp(`${queueId}: ${client}, sasl_method=PLAIN, sasl_username=alice@example\\.test$`));
      await waitForDelivery(dovecot, BOB, subject);
    } finally {
      session.close();
    }
    expect(await dovecot.readLog()).toContain('Master user logging in as alice@example.test');
    expect(await postfix.readLog()).not.toContain(MASTER.password);

    const wrong = await smtp();
    try {
      await wrong.command('EHLO client.example');
      const reply = await wrong.command(`AUTH PLAIN ${saslPlain(ALICE.name, MASTER.user, 'not-the-master')}`);
      expect(reply.code).toBe(535);
    } finally {
      wrong.close();
    }
  });

  it('refuses mail from a client that neither authenticated nor came through XCLIENT', async () => {
    const session = await smtp();
    try {
      await session.command('EHLO stranger.example');
      // smtpd_sender_restrictions only bind authenticated senders; the recipient check is the gate.
      expect((await session.command(`MAIL FROM:<${ALICE.name}>`)).code).toBe(250);
      const rcpt = await session.command(`RCPT TO:<${BOB.name}>`);
      expect(rcpt.lines).toEqual(['554 5.7.1 <bob@example.test>: Recipient address rejected: Access denied']);
      expect((await session.command('RCPT TO:<someone@example.org>')).code).toBe(554);
      expect((await session.command('DATA')).code).toBe(554);
    } finally {
      session.close();
    }
    await waitForLog(
      postfix,
      /NOQUEUE: reject: RCPT from localhost\[127\.0\.0\.1\]:\d+: 554 5\.7\.1 <bob@example\.test>: Recipient address rejected: Access denied/,
    );
  });

  it('runs beside an instance refusing XCLIENT from outside its list; stop() frees the port and may be repeated', async () => {
    const other = await startPostfix({ dovecot, domain: DOMAIN, xclientHosts: ['127.0.0.1/32'] });
    try {
      expect(other.submissionPort).not.toBe(postfix.submissionPort);
      expect(other.queueDir).not.toBe(postfix.queueDir);
      expect(other.configDir).not.toBe(postfix.configDir);

      const outsider = await RawSmtp.connect(other.host, other.submissionPort, { localAddress: '127.0.0.2' });
      try {
        const ehlo = await outsider.command('EHLO proxy.test');
        expect(ehlo.lines.some((l) => l.includes('XCLIENT'))).toBe(false);
        const xclient = await outsider.command(XCLIENT);
        expect(xclient.lines).toEqual(['550 5.7.0 Error: insufficient authorization']);
        // Nothing changed: the session is still unauthenticated and may not deliver.
        expect((await outsider.command(`MAIL FROM:<${ALICE.name}>`)).code).toBe(250);
        expect((await outsider.command(`RCPT TO:<${BOB.name}>`)).code).toBe(554);
      } finally {
        outsider.close();
      }

      const open = await RawSmtp.connect(other.host, other.submissionPort);
      expect(open.greeting.code).toBe(220);
      // An open session must not keep the port bound after stop().
      await Promise.all([other.stop(), other.stop()]);
      open.close();
    } finally {
      await other.stop();
    }
    await expect(RawSmtp.connect(other.host, other.submissionPort, { timeoutMs: 1_000 })).rejects.toThrow(/ECONNREFUSED/);
    expect(await canListen(other.host, other.submissionPort)).toBe(true);
    expect(await other.readLog()).toMatch(/postfix\/master\[\d+\]: daemon started -- version 3\.\d+\.\d+, configuration /);
    // The first instance is untouched.
    const still = await smtp();
    expect(still.greeting.code).toBe(220);
    still.close();
  }, 40_000);
});

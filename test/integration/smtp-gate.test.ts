/**
 * sasl-gate's SMTPS front door against a real Postfix (delivering into a real Dovecot over LMTP)
 * and a real OpenID provider: a token user submits mail that arrives and can be read back through
 * the IMAPS side, Postfix sees the identity from the token (and only that one), password clients
 * pass through, and every way of misusing a token, the master user or the parser gets the reply
 * RFC 4954 prescribes while the connection lives on.
 */
import { createHash, randomBytes } from 'node:crypto';
import nodemailer from 'nodemailer';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { freePort } from '../../tools/ports.js';
import { bodyOf, readDelivered, type StoredMessage } from '../support/mailbox.js';
import { dataBlock, RawSmtps, type SmtpReply } from '../support/smtps-raw.js';
import {
  MASTER,
  oauthbearer as encodeOauthbearer,
  plain as encodePlain,
  startStack,
  USERS,
  xoauth2 as encodeXoauth2,
  type Stack,
} from '../support/stack.js';
import { sleep, waitForLine } from '../support/wait.js';

const [ALICE, BOB] = USERS as [(typeof USERS)[0], (typeof USERS)[0]];
const MODES = ['xclient', 'master'] as const;
type Mode = (typeof MODES)[number];

/** Postfix's reply when alice tries to send as bob (reject_authenticated_sender_login_mismatch). */
const NOT_OWNED = '553 5.7.1 <bob@example.test>: Sender address rejected: not owned by user alice@example.test';
/** The method Postfix logs for a submission, per backend login mode. */
const SASL_METHOD: Record<Mode, string> = { xclient: 'XCLIENT', master: 'PLAIN' };

const stacks = {} as Record<Mode, Stack> & { unreachable: Stack };
/** Every credential and SASL message sent in this file: none may show up in sasl-gate's log. */
const secrets = new Set<string>([ALICE.password, BOB.password, MASTER.password]);

/** Remembers what must never be logged and returns it. */
function secret<T extends string>(value: T): T {
  secrets.add(value);
  return value;
}

// SASL messages, each remembered as a secret.
const xoauth2 = (user: string, token: string) => secret(encodeXoauth2(user, token));
const oauthbearer = (user: string, token: string, port: number) => secret(encodeOauthbearer(user, token, 'localhost', port));
const plain = (authzid: string, authcid: string, password: string) => secret(encodePlain(authzid, authcid, password));
const b64 = (text: string) => Buffer.from(text, 'latin1').toString('base64');

/**
 * Every test connection comes from 127.0.0.1: without this, sasl-gate's growing delay after
 * failed logins from one address would make the refusal cases below take minutes.
 */
const LIMITS = { limits: { authFailureDelaySeconds: 0 } };

beforeAll(async () => {
  const closed = await freePort();
  const started = await Promise.allSettled([
    startStack({ smtp: { login: 'xclient' }, config: LIMITS }),
    startStack({ smtp: { login: 'master' }, config: LIMITS }),
    // Both backends point at a port nobody listens on, from the start.
    startStack({
      smtp: { login: 'xclient' },
      config: {
        ...LIMITS,
        backends: {
          imap: { host: '127.0.0.1', port: closed, connectTimeoutSeconds: 2 },
          smtp: { host: '127.0.0.1', port: closed, login: 'xclient', connectTimeoutSeconds: 2 },
        },
      },
    }),
  ]);
  const failure = started.find((r) => r.status === 'rejected');
  if (failure) {
    await Promise.all(started.map((r) => (r.status === 'fulfilled' ? r.value.close() : undefined)));
    throw failure.reason;
  }
  const [xclient, master, unreachable] = started.map((r) => (r as PromiseFulfilledResult<Stack>).value) as [Stack, Stack, Stack];
  Object.assign(stacks, { xclient, master, unreachable });
});

afterAll(async () => {
  await Promise.all(Object.values(stacks).map((s) => s.close()));
});

const sha256 = (data: Buffer | string) => createHash('sha256').update(data).digest('hex');
const unique = (what: string) => `${what} ${randomBytes(5).toString('hex')}`;

async function token(stack: Stack, user: string): Promise<string> {
  return secret(await stack.idp.mintAccessToken({ user }));
}

function smtps(stack: Stack): Promise<RawSmtps> {
  return RawSmtps.connect({ host: stack.host, port: stack.smtpPort, ca: stack.ca });
}

/** A raw connection after EHLO and a successful `AUTH XOAUTH2` with an initial response. */
async function loggedIn(stack: Stack, user: string, accessToken: string): Promise<RawSmtps> {
  const c = await smtps(stack);
  expect((await c.command('EHLO client.example')).code).toBe(250);
  expect((await c.command(`AUTH XOAUTH2 ${xoauth2(user, accessToken)}`)).lines).toEqual([
    '235 2.7.0 Authentication successful',
  ]);
  return c;
}

function queueIdOf(reply: string): string {
  // BDAT ... LAST is answered with "Ok: <n> bytes queued as <id>".
  const match = /^250 2\.0\.0 Ok: (?:\d+ bytes )?queued as ([0-9A-Za-z]+)$/.exec(reply.trim());
  if (!match?.[1]) throw new Error(`not queued: ${reply}`);
  return match[1];
}

async function postfixLog(stack: Stack): Promise<string> {
  return stack.postfix!.readLog();
}

/** Waits until Postfix's log has a line matching `pattern` and returns it. */
function waitForPostfixLine(stack: Stack, pattern: RegExp, timeoutMs = 5_000): Promise<string> {
  return waitForLine(() => postfixLog(stack), pattern, { timeoutMs });
}

/** How many SMTP sessions Postfix's submission service has seen so far. */
async function postfixConnections(stack: Stack): Promise<number> {
  return (await postfixLog(stack)).split('\n').filter((l) => /postfix\/submission\/smtpd\[\d+\]: connect from /.test(l)).length;
}

/** The client name and address Postfix logs for a raw connection (XCLIENT ADDR= and PORT= are the client's own). */
const clientOf = (c: RawSmtps) => `client=[^\\s\\[]+\\[127\\.0\\.0\\.1\\]:${c.localPort}`;

/** Waits for the message with `subject` in `user`'s INBOX (Postfix delivers in the background); the message as stored. */
async function readBack(stack: Stack, user: string, accessToken: string, subject: string, timeoutMs = 10_000): Promise<StoredMessage> {
  return (await readDelivered(stack, user, accessToken, [subject], timeoutMs)).get(subject)!;
}

function mailer(stack: Stack, auth: Record<string, unknown>) {
  return nodemailer.createTransport({
    host: stack.host,
    port: stack.smtpPort,
    secure: true,
    name: 'client.example',
    tls: { ca: [stack.ca], servername: 'localhost' },
    auth,
  });
}

function message(subject: string, body: string, from = ALICE.name, to = BOB.name): string {
  return `From: <${from}>\r\nTo: <${to}>\r\nSubject: ${subject}\r\n\r\n${body}`;
}

describe.each(MODES)('token submission through Postfix (backends.smtp.login: %s)', (mode) => {
  let stack: Stack;
  let aliceToken: string;
  let bobToken: string;

  beforeAll(async () => {
    stack = stacks[mode];
    [aliceToken, bobToken] = await Promise.all([token(stack, ALICE.name), token(stack, BOB.name)]);
  });

  it('nodemailer sends with XOAUTH2; bob reads the message through the IMAPS side with OAUTHBEARER', async () => {
    const subject = unique(`nodemailer ${mode}`);
    const text = `Hello Bob,\n\nthis came through sasl-gate (${mode}).\n.a line that starts with a dot\nBye\n`;
    const transport = mailer(stack, { type: 'OAuth2', user: ALICE.name, accessToken: aliceToken });
    const info = await transport.sendMail({ from: ALICE.name, to: BOB.name, subject, text });
    transport.close();
    expect(info.accepted).toEqual([BOB.name]);
    const queueId = queueIdOf(info.response);

    const line = await waitForPostfixLine(stack, new RegExp(`${queueId}: client=`));
    expect(line).toMatch(
      new RegExp(`${queueId}: client=[^\\s\\[]+\\[127\\.0\\.0\\.1\\]:\\d+, sasl_method=${SASL_METHOD[mode]}, sasl_username=alice@example\\.test$`),
    );

    const stored = await readBack(stack, BOB.name, bobToken, subject);
    expect(stored.subject).toBe(subject);
    expect(bodyOf(stored.source).toString('utf8')).toBe(text.replace(/\n/g, '\r\n'));
    // imapflow chose OAUTHBEARER for its token login on the IMAPS side.
    expect(stack.logs).toContainEqual(expect.objectContaining({ msg: 'authenticated', mechanism: 'OAUTHBEARER', user: BOB.name }));
    expect(stack.logs).toContainEqual(expect.objectContaining({ msg: 'authenticated', mechanism: 'XOAUTH2', user: ALICE.name }));
  });

  it('a 10 MB message arrives byte for byte', async () => {
    const subject = unique(`large ${mode}`);
    const payload = randomBytes(7_800_000);
    const body = `${payload.toString('base64').replace(/.{76}/g, '$&\r\n')}\r\n`;
    const raw =
      `From: <${ALICE.name}>\r\nTo: <${BOB.name}>\r\nSubject: ${subject}\r\nMIME-Version: 1.0\r\n` +
      `Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n${body}`;
    expect(raw.length).toBeGreaterThan(10_000_000);
    const transport = mailer(stack, { type: 'OAuth2', user: ALICE.name, accessToken: aliceToken });
    const info = await transport.sendMail({ envelope: { from: ALICE.name, to: [BOB.name] }, raw });
    transport.close();
    queueIdOf(info.response);

    const stored = await readBack(stack, BOB.name, bobToken, subject, 30_000);
    const storedBody = bodyOf(stored.source);
    expect(storedBody.length).toBe(Buffer.byteLength(body));
    expect(sha256(storedBody)).toBe(sha256(body));
    expect(sha256(Buffer.from(storedBody.toString('latin1'), 'base64'))).toBe(sha256(payload));
  }, 60_000);

  it('pipelined MAIL, RCPT and DATA after AUTH, then BDAT chunks, reach Postfix as alice', async () => {
    const c = await loggedIn(stack, ALICE.name, aliceToken);
    try {
      const dataSubject = unique(`pipelined ${mode}`);
      c.write(`MAIL FROM:<${ALICE.name}>\r\nRCPT TO:<${BOB.name}>\r\nDATA\r\n`);
      const [mail, rcpt, data] = await c.readReplies(3);
      expect(mail?.lines).toEqual(['250 2.1.0 Ok']);
      expect(rcpt?.lines).toEqual(['250 2.1.5 Ok']);
      expect(data?.code).toBe(354);
      c.write(dataBlock(message(dataSubject, 'pipelined\r\n.leading dot\r\nend\r\n')));
      const dataQueueId = queueIdOf((await c.readReply()).lines.join('\n'));

      // CHUNKING is advertised (it is Postfix's): BDAT carries bytes without dot-stuffing.
      const bdatSubject = unique(`bdat ${mode}`);
      const first = Buffer.from(`From: <${ALICE.name}>\r\nTo: <${BOB.name}>\r\nSubject: ${bdatSubject}\r\n\r\n`);
      const second = Buffer.from('first line\r\n.second line, not stuffed\r\nlast line\r\n');
      c.write(`MAIL FROM:<${ALICE.name}>\r\nRCPT TO:<${BOB.name}>\r\nBDAT ${first.length}\r\n`);
      c.write(first);
      c.write(`BDAT ${second.length} LAST\r\n`);
      c.write(second);
      const [mail2, rcpt2, chunk, last] = await c.readReplies(4);
      expect(mail2?.lines).toEqual(['250 2.1.0 Ok']);
      expect(rcpt2?.lines).toEqual(['250 2.1.5 Ok']);
      expect(chunk?.lines).toEqual([`250 2.0.0 Ok: ${first.length} bytes`]);
      const bdatQueueId = queueIdOf(last!.lines.join('\n'));
      expect((await c.command('QUIT')).code).toBe(221);
      expect(await c.waitClosed()).toBe(true);

      for (const queueId of [dataQueueId, bdatQueueId]) {
        const line = await waitForPostfixLine(stack, new RegExp(`${queueId}: client=`));
        // The client's own address and port (XCLIENT ADDR/PORT), the mode's method and alice.
        expect(line).toMatch(new RegExp(`${queueId}: ${clientOf(c)}, sasl_method=${SASL_METHOD[mode]}, sasl_username=alice@example\\.test$`));
      }
      expect(bodyOf((await readBack(stack, BOB.name, bobToken, dataSubject)).source).toString()).toBe('pipelined\r\n.leading dot\r\nend\r\n');
      expect(bodyOf((await readBack(stack, BOB.name, bobToken, bdatSubject)).source)).toEqual(second);
    } finally {
      c.close();
    }
  });

  it('commands pipelined behind AUTH in the same write reach Postfix after the login', async () => {
    const c = await smtps(stack);
    try {
      await c.command('EHLO client.example');
      c.write(`AUTH XOAUTH2 ${xoauth2(ALICE.name, aliceToken)}\r\nMAIL FROM:<${ALICE.name}>\r\nRCPT TO:<${BOB.name}>\r\nRSET\r\n`);
      const [auth, mail, rcpt, rset] = await c.readReplies(4);
      expect(auth?.lines).toEqual(['235 2.7.0 Authentication successful']);
      expect(mail?.lines).toEqual(['250 2.1.0 Ok']);
      expect(rcpt?.lines).toEqual(['250 2.1.5 Ok']);
      expect(rset?.lines).toEqual(['250 2.0.0 Ok']);
    } finally {
      c.close();
    }
  });

  it("sending as bob's address while logged in with alice's token is refused by Postfix", async () => {
    const c = await loggedIn(stack, ALICE.name, aliceToken);
    try {
      expect((await c.command(`MAIL FROM:<${BOB.name}>`)).lines).toEqual([NOT_OWNED]);
      // The session is still alice's and still works.
      expect((await c.command(`MAIL FROM:<${ALICE.name}>`)).lines).toEqual(['250 2.1.0 Ok']);
      expect((await c.command('RSET')).code).toBe(250);
      expect((await c.command('QUIT')).code).toBe(221);
    } finally {
      c.close();
    }
    const reject = await waitForPostfixLine(stack, new RegExp(`NOQUEUE: reject: MAIL from [^\\s\\[]+\\[127\\.0\\.0\\.1\\]:${c.localPort}: 553 5\\.7\\.1 `));
    expect(reject).toContain('from=<bob@example.test> proto=ESMTP helo=<client.example>');
  });

  it('a second AUTH after the token login is answered by sasl-gate and never reaches Postfix', async () => {
    const c = await loggedIn(stack, ALICE.name, aliceToken);
    try {
      const again = await c.command(`AUTH PLAIN ${plain('', BOB.name, BOB.password)}`);
      expect(again.lines).toEqual(['503 5.5.1 Error: already authenticated']);
      expect((await c.command(`MAIL FROM:<${BOB.name}>`)).lines).toEqual([NOT_OWNED]);
    } finally {
      c.close();
    }
  });

  it('after login, EHLO shows the extensions promised before it (Postfix answers it now)', async () => {
    const c = await smtps(stack);
    try {
      const before = await c.command('EHLO client.example');
      expect((await c.command(`AUTH OAUTHBEARER ${oauthbearer(ALICE.name, aliceToken, stack.smtpPort)}`)).code).toBe(235);
      const after = await c.command('EHLO client.example');
      expect(after.lines[0]).toBe('250-smtp.example.test');
      const keywords = (r: SmtpReply) => r.lines.slice(1).map((l) => l.slice(4)).filter((e) => !/^(AUTH|XCLIENT)\b/.test(e));
      expect(keywords(after)).toEqual(keywords(before));
    } finally {
      c.close();
    }
  });

  // The relay hands the client a Postfix session whose client address (the client's own, set
  // with XCLIENT ADDR=) may still be in smtpd_authorized_xclient_hosts: were XCLIENT forwarded,
  // the client could send XCLIENT LOGIN= itself and become any user, without a token for them.
  // Every variant of this is in smtp-relay.test.ts.
  it('a token user cannot switch to another identity with XCLIENT after login', async () => {
    const c = await loggedIn(stack, ALICE.name, aliceToken);
    try {
      const xclient = await c.command(`XCLIENT LOGIN=${BOB.name}`);
      if (xclient.code === 220) await c.command('EHLO client.example');
      const mail = await c.command(`MAIL FROM:<${BOB.name}>`);
      expect(xclient.lines).toEqual(['502 5.5.1 Error: command not available']);
      expect(mail.lines).toEqual([NOT_OWNED]);
    } finally {
      c.close();
    }
  });

  it('password clients pass through: AUTH PLAIN and AUTH LOGIN with the user\'s own password', async () => {
    const c = await smtps(stack);
    try {
      await c.command('EHLO client.example');
      expect((await c.command(`AUTH PLAIN ${plain('', ALICE.name, ALICE.password)}`)).lines).toEqual([
        '235 2.7.0 Authentication successful',
      ]);
      const subject = unique(`password ${mode}`);
      expect((await c.command(`MAIL FROM:<${ALICE.name}>`)).code).toBe(250);
      expect((await c.command(`RCPT TO:<${BOB.name}>`)).code).toBe(250);
      expect((await c.command('DATA')).code).toBe(354);
      c.write(dataBlock(message(subject, 'sent with a password\r\n')));
      const queueId = queueIdOf((await c.readReply()).lines.join('\n'));
      const line = await waitForPostfixLine(stack, new RegExp(`${queueId}: client=`));
      // Postfix checked the password itself (through Dovecot): its own AUTH PLAIN, not XCLIENT.
      expect(line).toMatch(new RegExp(`${queueId}: ${clientOf(c)}, sasl_method=PLAIN, sasl_username=alice@example\\.test$`));
      expect((await readBack(stack, BOB.name, bobToken, subject)).subject).toBe(subject);
    } finally {
      c.close();
    }

    const login = await smtps(stack);
    try {
      await login.command('EHLO client.example');
      expect((await login.command('AUTH LOGIN')).lines).toEqual(['334 VXNlcm5hbWU6']);
      expect((await login.command(Buffer.from(BOB.name).toString('base64'))).lines).toEqual(['334 UGFzc3dvcmQ6']);
      const ok = await login.command(secret(b64(BOB.password)));
      expect(ok.lines).toEqual(['235 2.7.0 Authentication successful']);
      expect((await login.command(`MAIL FROM:<${BOB.name}>`)).code).toBe(250);
    } finally {
      login.close();
    }
  });
});

describe('pre-auth SMTP answered by sasl-gate', () => {
  let stack: Stack;
  let aliceToken: string;

  beforeAll(async () => {
    stack = stacks.xclient;
    aliceToken = await token(stack, ALICE.name);
  });

  it("greets with 220 and answers EHLO with Postfix's extensions and its own AUTH list", async () => {
    const c = await smtps(stack);
    try {
      expect(c.greeting.lines).toHaveLength(1);
      expect(c.greeting.lines[0]).toMatch(/^220 \S+ ESMTP/);
      const ehlo = await c.command('EHLO client.example');
      expect(ehlo.code).toBe(250);
      expect(ehlo.lines[0]).toMatch(/^250-\S+/);
      expect(ehlo.lines.at(-1)).toMatch(/^250 /);
      const extensions = ehlo.lines.slice(1).map((l) => l.slice(4));
      expect(extensions).toEqual(
        expect.arrayContaining(['PIPELINING', 'SIZE 52428800', '8BITMIME', 'ENHANCEDSTATUSCODES', 'CHUNKING', 'DSN', 'SMTPUTF8']),
      );
      expect(extensions.filter((e) => /^AUTH\b/i.test(e))).toEqual(['AUTH XOAUTH2 OAUTHBEARER PLAIN LOGIN']);
      for (const hidden of ['STARTTLS', 'XCLIENT', 'XFORWARD', 'AUTH PLAIN LOGIN', 'AUTH=']) {
        expect(extensions.some((e) => e.toUpperCase().startsWith(hidden))).toBe(false);
      }
      const helo = await c.command('HELO client.example');
      expect(helo.code).toBe(250);
      expect(helo.lines).toHaveLength(1);
    } finally {
      c.close();
    }
  });

  it('refuses mail commands before AUTH with 530 5.7.0', async () => {
    const c = await smtps(stack);
    try {
      await c.command('EHLO client.example');
      // BDAT carries its chunk right after the command line (RFC 3030): 8 bytes and the CRLF the
      // helper appends make the 10, skipped unread.
      for (const command of [`MAIL FROM:<${ALICE.name}>`, `RCPT TO:<${BOB.name}>`, 'DATA', 'BDAT 10 LAST\r\n01234567', `VRFY ${BOB.name}`]) {
        const reply = await c.command(command);
        expect(reply.code, command).toBe(530);
        expect(reply.text, command).toMatch(/^5\.7\.0 /);
      }
      expect((await c.command('NOOP')).code).toBe(250);
    } finally {
      c.close();
    }
  });

  it('AUTH before EHLO is 503, an unknown mechanism 504, AUTH without a mechanism 501', async () => {
    const c = await smtps(stack);
    try {
      expect((await c.command(`AUTH XOAUTH2 ${xoauth2(ALICE.name, aliceToken)}`)).code).toBe(503);
      await c.command('EHLO client.example');
      expect((await c.command('AUTH CRAM-MD5')).code).toBe(504);
      expect((await c.command('AUTH GSSAPI')).code).toBe(504);
      expect((await c.command('AUTH')).code).toBe(501);
      // Still usable: mechanism names are case-insensitive.
      expect((await c.command(`AUTH xoauth2 ${xoauth2(ALICE.name, aliceToken)}`)).code).toBe(235);
    } finally {
      c.close();
    }
  });

  it('the SASL exchange: 334 continuation, * cancels with 501, = is the empty response, bad base64 is 501', async () => {
    const c = await smtps(stack);
    try {
      await c.command('EHLO client.example');
      expect((await c.command('AUTH PLAIN')).lines).toEqual(['334 ']);
      const cancelled = await c.command('*');
      expect(cancelled.code).toBe(501);
      expect((await c.command('AUTH LOGIN')).lines).toEqual(['334 VXNlcm5hbWU6']);
      expect((await c.command('*')).code).toBe(501);
      // An empty PLAIN message names nobody: a failed authentication, not a syntax error.
      expect((await c.command('AUTH PLAIN =')).lines[0]).toMatch(/^535 5\.7\.8 /);
      expect((await c.command('AUTH PLAIN not*base64')).code).toBe(501);
      expect((await c.command('AUTH XOAUTH2')).lines).toEqual(['334 ']);
      expect((await c.command('%%%')).code).toBe(501);
      expect((await c.command('NOOP')).code).toBe(250);
      // The continuation form of a token login works.
      expect((await c.command('AUTH XOAUTH2')).lines).toEqual(['334 ']);
      expect((await c.command(xoauth2(ALICE.name, aliceToken))).lines).toEqual(['235 2.7.0 Authentication successful']);
      expect((await c.command(`MAIL FROM:<${ALICE.name}>`)).lines).toEqual(['250 2.1.0 Ok']);
    } finally {
      c.close();
    }

    const bearer = await smtps(stack);
    try {
      await bearer.command('EHLO client.example');
      expect((await bearer.command('AUTH OAUTHBEARER')).lines).toEqual(['334 ']);
      const ok = await bearer.command(oauthbearer(ALICE.name, aliceToken, stack.smtpPort));
      expect(ok.lines).toEqual(['235 2.7.0 Authentication successful']);
    } finally {
      bearer.close();
    }
  });

  it('NOOP, RSET, an unknown command, STARTTLS on the TLS port, QUIT', async () => {
    const c = await smtps(stack);
    try {
      expect((await c.command('NOOP')).lines).toEqual(['250 2.0.0 OK']);
      await c.command('EHLO client.example');
      expect((await c.command('RSET')).code).toBe(250);
      expect((await c.command('FROBNICATE now')).code).toBe(502);
      const starttls = await c.command('STARTTLS');
      expect(starttls.code).toBeGreaterThanOrEqual(500);
      expect((await c.command('NOOP')).code).toBe(250);
      const quit = await c.command('QUIT');
      expect(quit.code).toBe(221);
      expect(await c.waitClosed()).toBe(true);
    } finally {
      c.close();
    }
  });

  // RFC 3030 section 2: after a refused BDAT the server must still read and discard the chunk.
  // sasl-gate answers 530 and then runs the chunk's bytes as commands.
  it('a BDAT chunk refused before AUTH is not run as commands', async () => {
    const c = await smtps(stack);
    try {
      await c.command('EHLO client.example');
      c.write('BDAT 6 LAST\r\nQUIT\r\nNOOP\r\n');
      const refused = await c.readReply();
      expect(refused.code).toBe(530);
      const next = await c.readReply().catch(() => undefined);
      // Either the chunk was discarded and NOOP is answered, or the connection ends; never QUIT's 221.
      expect(next?.code).not.toBe(221);
    } finally {
      c.close();
    }
  });

  it('an over-long command line gets 500 and the connection still works', async () => {
    const c = await smtps(stack);
    try {
      await c.command('EHLO client.example');
      c.write(`NOOP ${'x'.repeat(70_000)}\r\n`);
      const tooLong = await c.readReply();
      expect(tooLong.code).toBe(500);
      expect((await c.command('NOOP')).code).toBe(250);
      // An over-long SASL response as well.
      expect((await c.command('AUTH PLAIN')).lines).toEqual(['334 ']);
      c.write(`${'A'.repeat(70_000)}\r\n`);
      expect((await c.readReply()).code).toBe(500);
      expect((await c.command('NOOP')).code).toBe(250);
      expect((await c.command(`AUTH XOAUTH2 ${xoauth2(ALICE.name, aliceToken)}`)).code).toBe(235);
    } finally {
      c.close();
    }
  });

  it('stops a client that sends too many commands before AUTH', async () => {
    const c = await smtps(stack);
    c.write('NOOP\r\n'.repeat(51));
    const replies: SmtpReply[] = [];
    for (;;) {
      const reply = await c.readReply().catch(() => undefined);
      if (reply === undefined) break;
      replies.push(reply);
    }
    expect(replies.filter((r) => r.code === 250)).toHaveLength(50);
    expect(replies.at(-1)?.code).toBe(421);
    expect(await c.waitClosed()).toBe(true);
    c.close();
  });
});

describe('token misuse is refused with the error challenge and never reaches Postfix', () => {
  let stack: Stack;
  let aliceToken: string;

  beforeAll(async () => {
    stack = stacks.xclient;
    aliceToken = await token(stack, ALICE.name);
  });

  const XOAUTH2_ERROR = { status: '401', schemes: 'bearer', scope: 'openid email' };
  const oauthbearerError = () => ({
    status: 'invalid_token',
    scope: 'openid email',
    'openid-configuration': `${stack.idp.issuer}/.well-known/openid-configuration`,
  });

  /** Sends a token login that must fail; checks the challenge, answers with `dummy`, expects 535 5.7.8. */
  async function refused(c: RawSmtps, mechanism: 'XOAUTH2' | 'OAUTHBEARER', response: string, dummy: string, ir = true): Promise<void> {
    let reply: SmtpReply;
    if (ir) reply = await c.command(`AUTH ${mechanism} ${response}`);
    else {
      expect((await c.command(`AUTH ${mechanism}`)).lines).toEqual(['334 ']);
      reply = await c.command(response);
    }
    expect(reply.code).toBe(334);
    const challenge: unknown = JSON.parse(Buffer.from(reply.text, 'base64').toString('utf8'));
    expect(challenge).toEqual(mechanism === 'XOAUTH2' ? XOAUTH2_ERROR : oauthbearerError());
    const final = await c.command(dummy);
    expect(final.code).toBe(535);
    expect(final.text).toMatch(/^5\.7\.8 /);
  }

  /** After a refused token, the right one on the same connection works (nodemailer retries like this). */
  async function retryWorks(c: RawSmtps, mechanism: 'XOAUTH2' | 'OAUTHBEARER'): Promise<void> {
    const response = mechanism === 'XOAUTH2' ? xoauth2(ALICE.name, aliceToken) : oauthbearer(ALICE.name, aliceToken, stack.smtpPort);
    expect((await c.command(`AUTH ${mechanism} ${response}`)).lines).toEqual(['235 2.7.0 Authentication successful']);
    expect((await c.command(`MAIL FROM:<${BOB.name}>`)).lines).toEqual([NOT_OWNED]);
    expect((await c.command(`MAIL FROM:<${ALICE.name}>`)).lines).toEqual(['250 2.1.0 Ok']);
  }

  it("alice's token used as bob (XOAUTH2 and OAUTHBEARER, each dummy reply), then alice's own on the same connection", async () => {
    const connectionsBefore = await postfixConnections(stack);
    const c = await smtps(stack);
    try {
      await c.command('EHLO client.example');
      await refused(c, 'XOAUTH2', xoauth2(BOB.name, aliceToken), 'AQ==');
      await refused(c, 'XOAUTH2', xoauth2(BOB.name, aliceToken), '', false);
      await refused(c, 'OAUTHBEARER', oauthbearer(BOB.name, aliceToken, stack.smtpPort), '*');
      await refused(c, 'OAUTHBEARER', oauthbearer(BOB.name, aliceToken, stack.smtpPort), '\x01', false);
      expect((await c.command('NOOP')).code).toBe(250);
      // Nothing of these attempts reached Postfix.
      await sleep(100);
      expect(await postfixConnections(stack)).toBe(connectionsBefore);
      expect(await postfixLog(stack)).not.toMatch(/sasl_username=bob@example\.test/);
      await retryWorks(c, 'OAUTHBEARER');
    } finally {
      c.close();
    }
    expect(stack.logs).toContainEqual(expect.objectContaining({ msg: 'authentication failed', reason: 'wrong_user', user: BOB.name }));
  });

  it('an expired token, a foreign audience, a foreign signing key, not a JWT; then the right token', async () => {
    const now = Math.floor(Date.now() / 1000);
    const expired = secret(await stack.idp.signToken({ ...stack.idp.claimsFor(ALICE.name), iat: now - 7200, exp: now - 3600 }));
    const foreignAudience = secret(await stack.idp.mintAccessToken({ user: ALICE.name, audience: 'https://calendar.example.test' }));
    const foreignKey = secret(await stack.idp.signToken(stack.idp.claimsFor(ALICE.name), { key: 'foreign' }));
    const connectionsBefore = await postfixConnections(stack);
    const c = await smtps(stack);
    try {
      await c.command('EHLO client.example');
      await refused(c, 'XOAUTH2', xoauth2(ALICE.name, expired), 'AQ==');
      await refused(c, 'OAUTHBEARER', oauthbearer(ALICE.name, foreignAudience, stack.smtpPort), '');
      await refused(c, 'XOAUTH2', xoauth2(ALICE.name, foreignKey), '*', false);
      await refused(c, 'OAUTHBEARER', oauthbearer(ALICE.name, 'not-a-jwt-at-all', stack.smtpPort), 'AQ==');
      await sleep(100);
      expect(await postfixConnections(stack)).toBe(connectionsBefore);
      await retryWorks(c, 'XOAUTH2');
    } finally {
      c.close();
    }
    for (const reason of ['expired', 'wrong_audience']) {
      expect(stack.logs).toContainEqual(expect.objectContaining({ msg: 'authentication failed', reason }));
    }
  });

  it('nodemailer answers the error challenge, renews its token and sends on the same connection', async () => {
    const now = Math.floor(Date.now() / 1000);
    const stale = secret(await stack.idp.signToken({ ...stack.idp.claimsFor(ALICE.name), iat: now - 7200, exp: now - 3600 }));
    const renewals: boolean[] = [];
    const transport = mailer(stack, {
      type: 'OAuth2',
      user: ALICE.name,
      accessToken: stale,
      provisionCallback: (_user: string, renew: boolean, callback: (err: Error | null, token?: string) => void) => {
        renewals.push(renew);
        void stack.idp.mintAccessToken({ user: ALICE.name }).then(
          (fresh) => callback(null, secret(fresh)),
          (err: Error) => callback(err),
        );
      },
    });
    const subject = unique('renewed');
    const info = await transport.sendMail({ from: ALICE.name, to: BOB.name, subject, text: 'after a renewal\n' });
    transport.close();
    expect(renewals).toEqual([true]);
    expect(info.accepted).toEqual([BOB.name]);
    const queueId = queueIdOf(info.response);
    expect(await waitForPostfixLine(stack, new RegExp(`${queueId}: client=`))).toMatch(/sasl_method=XCLIENT, sasl_username=alice@example\.test$/);
  });
});

describe('password pass-through refusals', () => {
  let stack: Stack;

  beforeAll(() => {
    stack = stacks.xclient;
  });

  it("a wrong password gets Postfix's 535, and the right one then works on the same connection", async () => {
    const c = await smtps(stack);
    try {
      await c.command('EHLO client.example');
      const wrong = await c.command(`AUTH PLAIN ${plain('', ALICE.name, 'not-alices-password')}`);
      expect(wrong.lines).toEqual(['535 5.7.8 Error: authentication failed: (reason unavailable)']);
      const ok = await c.command(`AUTH PLAIN ${plain('', ALICE.name, ALICE.password)}`);
      expect(ok.lines).toEqual(['235 2.7.0 Authentication successful']);
    } finally {
      c.close();
    }
    await waitForPostfixLine(stack, /SASL PLAIN authentication failed: .*sasl_username=alice@example\.test/);
  });

  it.each([
    ['PLAIN with the master user as authcid and alice as authzid', [`AUTH PLAIN ${plain(ALICE.name, MASTER.user, MASTER.password)}`]],
    ['PLAIN with the master user alone', [`AUTH PLAIN ${plain('', MASTER.user, MASTER.password)}`]],
    ['PLAIN with the master user in upper case', [`AUTH PLAIN ${plain('', MASTER.user.toUpperCase(), 'guess')}`]],
    ['PLAIN with the master separator', [`AUTH PLAIN ${plain('', `${BOB.name}*${MASTER.user}`, MASTER.password)}`]],
    ['PLAIN with an authzid other than the authcid', [`AUTH PLAIN ${plain(BOB.name, ALICE.name, ALICE.password)}`]],
    ['PLAIN with a control character in the name', [`AUTH PLAIN ${plain('', 'ali\x07ce@example.test', 'x')}`]],
    ['LOGIN naming the master user', ['AUTH LOGIN', b64(MASTER.user), b64(MASTER.password)]],
    ['LOGIN with the master separator (initial response)', [`AUTH LOGIN ${b64(`${ALICE.name}*${MASTER.user}`)}`, b64(MASTER.password)]],
    ['LOGIN with a NUL in the name', ['AUTH LOGIN', b64('alice\0x@example.test'), b64('pw')]],
    ['LOGIN with CR LF in the name', ['AUTH LOGIN', b64('alice@example.test\r\nMAIL FROM:<x>'), b64('pw')]],
  ])('%s: 535 before any contact with Postfix', async (_name, lines) => {
    for (const l of lines) secret(l.replace(/^AUTH \S+ ?/, ''));
    const logBefore = (await postfixLog(stack)).length;
    const connectionsBefore = await postfixConnections(stack);
    const c = await smtps(stack);
    try {
      await c.command('EHLO client.example');
      let reply: SmtpReply | undefined;
      for (const l of lines) {
        reply = await c.command(l);
        if (reply.code !== 334) break;
      }
      expect(reply?.code).toBe(535);
      expect(reply?.text).toMatch(/^5\.7\.8 /);
      expect((await c.command('NOOP')).code).toBe(250);
    } finally {
      c.close();
    }
    await sleep(100);
    expect(await postfixConnections(stack)).toBe(connectionsBefore);
    expect((await postfixLog(stack)).slice(logBefore)).not.toContain(MASTER.user);
  });
});

describe('a backend that cannot be reached gives a temporary failure, never a rejection', () => {
  it('Postfix unreachable since start: token logins get 454 4.7.0 without an error challenge', async () => {
    const stack = stacks.unreachable;
    const aliceToken = await token(stack, ALICE.name);
    const c = await smtps(stack);
    try {
      expect(c.greeting.code).toBe(220);
      const ehlo = await c.command('EHLO client.example');
      expect(ehlo.code).toBe(250);
      expect(ehlo.lines.at(-1)).toMatch(/^250 AUTH XOAUTH2 OAUTHBEARER\b/);
      const xo = await c.command(`AUTH XOAUTH2 ${xoauth2(ALICE.name, aliceToken)}`);
      expect(xo.code).toBe(454);
      expect(xo.text).toMatch(/^4\.7\.0 /);
      const ob = await c.command(`AUTH OAUTHBEARER ${oauthbearer(ALICE.name, aliceToken, stack.smtpPort)}`);
      expect(ob.code).toBe(454);
      expect((await c.command('NOOP')).code).toBe(250);
    } finally {
      c.close();
    }
    expect(stack.logs).toContainEqual(expect.objectContaining({ reason: 'backend_unavailable' }));
  });

  // With no successful probe the EHLO list is only the token mechanisms, so a password client
  // is told its mechanism does not exist (504, permanent) instead of "try again later".
  it('Postfix unreachable since start: a password client gets 454 4.7.0 too', async () => {
    const stack = stacks.unreachable;
    const c = await smtps(stack);
    try {
      await c.command('EHLO client.example');
      const reply = await c.command(`AUTH PLAIN ${plain('', ALICE.name, ALICE.password)}`);
      expect(reply.code).toBe(454);
      expect(reply.text).toMatch(/^4\.7\.0 /);
    } finally {
      c.close();
    }
  });

  it('Postfix stopped while sasl-gate runs: token and password logins get 454 4.7.0', async () => {
    const stack = stacks.master;
    const aliceToken = await token(stack, ALICE.name);
    await stack.postfix!.stop();
    const c = await smtps(stack);
    try {
      await c.command('EHLO client.example');
      for (const command of [
        `AUTH XOAUTH2 ${xoauth2(ALICE.name, aliceToken)}`,
        `AUTH OAUTHBEARER ${oauthbearer(ALICE.name, aliceToken, stack.smtpPort)}`,
        `AUTH PLAIN ${plain('', ALICE.name, ALICE.password)}`,
      ]) {
        const reply = await c.command(command);
        expect(reply.code, command.slice(0, 16)).toBe(454);
        expect(reply.text).toMatch(/^4\.7\.0 /);
      }
      expect((await c.command('AUTH LOGIN')).code).toBe(334);
      expect((await c.command(Buffer.from(ALICE.name).toString('base64'))).code).toBe(334);
      const login = await c.command(secret(b64(ALICE.password)));
      expect(login.code).toBe(454);
      expect((await c.command('NOOP')).code).toBe(250);
    } finally {
      c.close();
    }
  });
});

describe("sasl-gate's log", () => {
  it('never contains a token, a password, the master secret or a SASL message', () => {
    const all = [...secrets, ...Object.values(stacks).map((s) => s.idp.clientSecret)];
    // A JWT's signature alone is as good as the token for finding it in a log.
    all.push(...all.filter((s) => /^[\w-]+\.[\w-]+\.[\w-]+$/.test(s)).map((t) => t.split('.')[2]!));
    expect(all.length).toBeGreaterThan(40);
    for (const [name, stack] of Object.entries(stacks)) {
      const raw = stack.rawLog();
      expect(raw.length, name).toBeGreaterThan(1000);
      for (const s of all) {
        if (s.length < 8) continue;
        expect(raw.includes(s), `the ${name} stack's log contains a secret (${s.slice(0, 12)}...)`).toBe(false);
      }
    }
    // What it does contain: one line per connection, naming mechanism, user and outcome.
    const ends = stacks.xclient.logs.filter((l) => l['msg'] === 'connection closed');
    expect(ends).toContainEqual(expect.objectContaining({ outcome: 'relayed', mechanism: 'XOAUTH2', user: ALICE.name }));
    expect(ends).toContainEqual(expect.objectContaining({ outcome: 'relayed', mechanism: 'PLAIN', user: ALICE.name }));
  });
});

/**
 * The SMTP session after login against a real Postfix that authorises XCLIENT from sasl-gate's
 * address (the devstack's default), in both login modes. Every way a logged-in client once made
 * Postfix believe it was somebody else is replayed here as a named regression, and Postfix's OWN
 * log is the judge: no `sasl_username=` but alice's, no mail queued as bob. Then what a user
 * notices: several messages per connection (raw pipelining, Python's smtplib, nodemailer's pool,
 * an msmtp queue flush), each read back byte for byte from the recipient's mailbox.
 */
import { randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import nodemailer from 'nodemailer';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { secret } from '../support/evidence.js';
import { bodyOf, readDelivered } from '../support/mailbox.js';
import { RawSmtps, type SmtpReply } from '../support/smtps-raw.js';
import { startSmtpStacks, USERS, xoauth2, type Stack } from '../support/stack.js';
import { ensureProgram, removeWorkDirs, run, tokenFile, workDir } from '../interop/support/clients.js';
import { waitForLine } from '../support/wait.js';

const [ALICE, BOB] = USERS as [(typeof USERS)[0], (typeof USERS)[0]];
const MODES = ['xclient', 'master'] as const;
type Mode = (typeof MODES)[number];
const SASL_METHOD: Record<Mode, string> = { xclient: 'XCLIENT', master: 'PLAIN' };
const NOT_OWNED = '553 5.7.1 <bob@example.test>: Sender address rejected: not owned by user alice@example.test';
const XCLIENT_REFUSED = '502 5.5.1 Error: command not available';

const stacks = {} as Record<Mode, Stack>;

beforeAll(async () => {
  Object.assign(stacks, await startSmtpStacks());
});

afterAll(async () => {
  await Promise.all(Object.values(stacks).map((s) => s.close()));
  removeWorkDirs();
});

const unique = (what: string) => `${what} ${randomBytes(5).toString('hex')}`;

function queueIdOf(reply: SmtpReply | undefined): string {
  const match = /^250 2\.0\.0 Ok: (?:\d+ bytes )?queued as ([0-9A-Za-z]+)$/.exec(reply?.lines.join('\n') ?? '');
  if (!match?.[1]) throw new Error(`not queued: ${JSON.stringify(reply)}`);
  return match[1];
}

/** A raw SMTPS connection logged in as alice with XOAUTH2. */
async function loggedIn(stack: Stack, accessToken: string): Promise<RawSmtps> {
  const c = await RawSmtps.connect({ host: stack.host, port: stack.smtpPort, ca: stack.ca });
  expect((await c.command('EHLO client.example')).code).toBe(250);
  expect((await c.command(`AUTH XOAUTH2 ${xoauth2(ALICE.name, accessToken)}`)).lines).toEqual(['235 2.7.0 Authentication successful']);
  return c;
}

async function quit(c: RawSmtps): Promise<void> {
  expect((await c.command('QUIT')).code).toBe(221);
  expect(await c.waitClosed()).toBe(true);
}

/**
 * Postfix's own word: every session it authenticated is alice's, and nothing was queued as bob.
 * Waits for the queue lines of `queueIds` first, so late lines are seen too.
 */
async function postfixSawOnlyAlice(stack: Stack, mode: Mode, queueIds: string[] = []): Promise<void> {
  for (const id of queueIds) {
    const line = await waitForPostfixLine(stack, new RegExp(`${id}: client=`));
    expect(line).toMatch(new RegExp(`${id}: client=\\S+, sasl_method=${SASL_METHOD[mode]}, sasl_username=alice@example\\.test$`));
  }
  const log = await stack.postfix!.readLog();
  const users = new Set([...log.matchAll(/sasl_username=([^\s,]*)/g)].map((m) => m[1]));
  for (const user of users) expect(user).toBe(ALICE.name);
  expect(log).not.toMatch(/: from=<bob@example\.test>/);
  expect(log).not.toMatch(/sasl_method=XCLIENT, sasl_username=(?!alice@example\.test$)/m);
}

function waitForPostfixLine(stack: Stack, pattern: RegExp): Promise<string> {
  return waitForLine(() => stack.postfix!.readLog(), pattern);
}

/** Reads messages back from bob's INBOX through sasl-gate's IMAPS, by subject; returns each stored source. */
async function readBack(stack: Stack, bobToken: string, subjects: string[], timeoutMs = 15_000): Promise<Map<string, Buffer>> {
  const found = await readDelivered(stack, BOB.name, bobToken, subjects, timeoutMs);
  return new Map([...found].map(([subject, message]) => [subject, message.source]));
}

/**
 * A message with lines that exercise the framing: leading dots, a long line, tabs, trailing spaces.
 * The long line stays under 998 bytes: Postfix's own delivery (smtp_line_length_limit) folds longer ones.
 */
function testMessage(subject: string, n: number): { raw: string; body: string } {
  const body =
    `message ${n}\r\n.leading dot\r\n..two dots\r\n.\tdot and tab\r\n` +
    `trailing spaces   \r\n${'x'.repeat(980 + n)}\r\nBDAT 12\r\nXCLIENT LOGIN=bob@example.test\r\n\r\nlast line\r\n`;
  const raw = `From: <${ALICE.name}>\r\nTo: <${BOB.name}>\r\nSubject: ${subject}\r\n\r\n${body}`;
  return { raw, body };
}

/** RFC 5321 dot-stuffing of a CRLF message, with the end-of-data line. */
function dotStuffed(raw: string): string {
  return `${raw.replace(/(^|\r\n)\./g, '$1..')}.\r\n`;
}

describe.each(MODES)('logged-in SMTP sessions cannot become another user (backends.smtp.login: %s)', (mode) => {
  let stack: Stack;
  let aliceToken: string;
  let bobToken: string;

  beforeAll(async () => {
    stack = stacks[mode];
    [aliceToken, bobToken] = await Promise.all([stack.idp.mintAccessToken({ user: ALICE.name }), stack.idp.mintAccessToken({ user: BOB.name })]);
  });

  it.each([
    ['XCLIENT<TAB>', `XCLIENT\tLOGIN=${BOB.name}`],
    ['a leading space', ` XCLIENT LOGIN=${BOB.name}`],
    ['a leading tab', `\tXCLIENT LOGIN=${BOB.name}`],
    ['XCLIENT<VT>', `XCLIENT\x0bLOGIN=${BOB.name}`],
    ['XCLIENT<FF>', `XCLIENT\x0cLOGIN=${BOB.name}`],
    ['lower case', `xclient LOGIN=${BOB.name}`],
  ])('XCLIENT with %s is answered by sasl-gate; Postfix still knows alice only', async (_name, line) => {
    const c = await loggedIn(stack, aliceToken);
    try {
      expect((await c.command(line)).lines).toEqual([XCLIENT_REFUSED]);
      expect((await c.command(`EHLO client.example`)).code).toBe(250);
      expect((await c.command(`MAIL FROM:<${BOB.name}>`)).lines).toEqual([NOT_OWNED]);
      expect((await c.command(`XFORWARD\tNAME=evil.example`)).lines).toEqual([XCLIENT_REFUSED]);
      await quit(c);
    } finally {
      c.close();
    }
    await postfixSawOnlyAlice(stack, mode);
  });

  it.each([
    ['a bare LF', 'hello\n.\n'],
    ['a dot line with two CRs', 'hello\r\n.\r\r\n'],
  ])('a message ended by %s (an end Postfix also reads), then XCLIENT: the message is alice\'s, XCLIENT is refused', async (_name, ending) => {
    const subject = unique(`line-ends ${mode}`);
    const c = await loggedIn(stack, aliceToken);
    let queueId: string;
    try {
      c.write(`MAIL FROM:<${ALICE.name}>\r\nRCPT TO:<${BOB.name}>\r\nDATA\r\n`);
      expect((await c.readReplies(3)).map((r) => r.code)).toEqual([250, 250, 354]);
      c.write(`Subject: ${subject}\r\n\r\n${ending}XCLIENT LOGIN=${BOB.name}\r\nMAIL FROM:<${BOB.name}>\r\n`);
      const [queued, xclient, mail] = await c.readReplies(3);
      queueId = queueIdOf(queued);
      expect(xclient?.lines).toEqual([XCLIENT_REFUSED]);
      expect(mail?.lines).toEqual([NOT_OWNED]);
      await quit(c);
    } finally {
      c.close();
    }
    await postfixSawOnlyAlice(stack, mode, [queueId]);
    // Line ends became CRLF on the way: what Postfix stored is what sasl-gate read.
    expect(bodyOf((await readBack(stack, bobToken, [subject])).get(subject)!).toString('latin1')).toBe('hello\r\n');
  });

  /** Lines that, read as commands, would make the rest of the connection bob's. */
  const hidden = `.\r\nXCLIENT LOGIN=${BOB.name}\r\nEHLO client.example\r\nMAIL FROM:<${BOB.name}>\r\n`;

  it.each([
    ['DATA<TAB>', `DATA\t`],
    ['lower-case data with trailing space', 'data '],
  ])('%s, then a fake BDAT line in the content hiding `.` and XCLIENT: all of it is content', async (_name, dataLine) => {
    const subject = unique(`data-variant ${mode}`);
    const c = await loggedIn(stack, aliceToken);
    let queueId: string;
    try {
      c.write(`MAIL FROM:<${ALICE.name}>\r\nRCPT TO:<${BOB.name}>\r\n${dataLine}\r\n`);
      expect((await c.readReplies(3)).map((r) => r.code)).toEqual([250, 250, 354]);
      c.write(`Subject: ${subject}\r\n\r\nBDAT ${hidden.length}\r\n${hidden}RCPT TO:<${BOB.name}>\r\nDATA\r\n`);
      const [queued, xclient, ehlo, mail, rcpt, data] = await c.readReplies(6);
      queueId = queueIdOf(queued);
      expect(xclient?.lines).toEqual([XCLIENT_REFUSED]);
      expect(ehlo?.code).toBe(250);
      expect(mail?.lines).toEqual([NOT_OWNED]);
      expect(rcpt?.code).toBe(503);
      expect(data?.code).toBe(503);
      await quit(c);
    } finally {
      c.close();
    }
    await postfixSawOnlyAlice(stack, mode, [queueId]);
    expect(bodyOf((await readBack(stack, bobToken, [subject])).get(subject)!).toString('latin1')).toBe(`BDAT ${hidden.length}\r\n`);
  });

  it('` BDAT n` (leading space) carries a chunk with a fake BDAT line and `.` + XCLIENT: all of it stays chunk data', async () => {
    const subject = unique(`bdat-variant ${mode}`);
    const chunk = `Subject: ${subject}\r\n\r\nBDAT ${hidden.length}\r\n${hidden}`;
    const c = await loggedIn(stack, aliceToken);
    let queueId: string;
    try {
      c.write(`MAIL FROM:<${ALICE.name}>\r\nRCPT TO:<${BOB.name}>\r\n BDAT ${chunk.length} LAST\r\n${chunk}XCLIENT LOGIN=${BOB.name}\r\nMAIL FROM:<${BOB.name}>\r\n`);
      const [mail, rcpt, last, xclient, mailBob] = await c.readReplies(5);
      expect([mail?.code, rcpt?.code]).toEqual([250, 250]);
      queueId = queueIdOf(last);
      expect(xclient?.lines).toEqual([XCLIENT_REFUSED]);
      expect(mailBob?.lines).toEqual([NOT_OWNED]);
      await quit(c);
    } finally {
      c.close();
    }
    await postfixSawOnlyAlice(stack, mode, [queueId]);
    expect(bodyOf((await readBack(stack, bobToken, [subject])).get(subject)!).toString('latin1')).toBe(`BDAT ${hidden.length}\r\n${hidden}`);
  });

  it('the hidden line in the second transaction of a connection: replies stay matched to their commands', async () => {
    const [first, second] = [unique(`txn1 ${mode}`), unique(`txn2 ${mode}`)];
    const c = await loggedIn(stack, aliceToken);
    const queueIds: string[] = [];
    try {
      c.write(`MAIL FROM:<${ALICE.name}>\r\nRCPT TO:<${BOB.name}>\r\nDATA\r\n`);
      expect((await c.readReplies(3)).map((r) => r.code)).toEqual([250, 250, 354]);
      c.write(`Subject: ${first}\r\n\r\none\r\n.\r\nMAIL FROM:<${ALICE.name}>\r\nRCPT TO:<${BOB.name}>\r\nDATA\r\n`);
      const [queued, mail, rcpt, data] = await c.readReplies(4);
      queueIds.push(queueIdOf(queued));
      expect([mail?.code, rcpt?.code, data?.code]).toEqual([250, 250, 354]);
      c.write(`Subject: ${second}\r\n\r\nBDAT ${hidden.length}\r\n${hidden}`);
      const [queued2, xclient, ehlo, mailBob] = await c.readReplies(4);
      queueIds.push(queueIdOf(queued2));
      expect(xclient?.lines).toEqual([XCLIENT_REFUSED]);
      expect(ehlo?.code).toBe(250);
      expect(mailBob?.lines).toEqual([NOT_OWNED]);
      await quit(c);
    } finally {
      c.close();
    }
    await postfixSawOnlyAlice(stack, mode, queueIds);
  });

  it('XCLIENT pipelined in the same packet as AUTH is answered by sasl-gate after the 235', async () => {
    const c = await RawSmtps.connect({ host: stack.host, port: stack.smtpPort, ca: stack.ca });
    try {
      await c.command('EHLO client.example');
      c.write(`AUTH XOAUTH2 ${xoauth2(ALICE.name, aliceToken)}\r\nXCLIENT LOGIN=${BOB.name}\r\nEHLO client.example\r\nMAIL FROM:<${BOB.name}>\r\nMAIL FROM:<${ALICE.name}>\r\n`);
      const [auth, xclient, ehlo, mailBob, mailAlice] = await c.readReplies(5);
      expect(auth?.lines).toEqual(['235 2.7.0 Authentication successful']);
      expect(xclient?.lines).toEqual([XCLIENT_REFUSED]);
      expect(ehlo?.code).toBe(250);
      expect(mailBob?.lines).toEqual([NOT_OWNED]);
      expect(mailAlice?.lines).toEqual(['250 2.1.0 Ok']);
      await quit(c);
    } finally {
      c.close();
    }
    await postfixSawOnlyAlice(stack, mode);
  });

  it('a BDAT Postfix refuses (no MAIL yet) still has its chunk skipped by Postfix, never run as commands', async () => {
    const chunk = `XCLIENT LOGIN=${BOB.name}\r\nEHLO client.example\r\nMAIL FROM:<${BOB.name}>\r\n`;
    const c = await loggedIn(stack, aliceToken);
    try {
      c.write(`BDAT ${chunk.length}\r\n${chunk}NOOP\r\nRSET\r\nMAIL FROM:<${BOB.name}>\r\n`);
      const [bdat, noop, rset, mail] = await c.readReplies(4);
      expect(rset?.code).toBe(250);
      // Refused, and the chunk skipped: had Postfix read it as commands, their replies would be out of step here.
      expect(bdat?.code).toBe(503);
      expect(noop?.code).toBe(250);
      expect(mail?.lines).toEqual([NOT_OWNED]);
      await quit(c);
    } finally {
      c.close();
    }
    await postfixSawOnlyAlice(stack, mode);
  });

  it('command lines with a bare CR, a NUL or over 2048 bytes get 500 from sasl-gate and the session goes on', async () => {
    const c = await loggedIn(stack, aliceToken);
    try {
      c.write(`NOOP\rXCLIENT LOGIN=${BOB.name}\r\nXCLIENT\0LOGIN=${BOB.name}\r\nNOOP ${'x'.repeat(3000)}\r\nMAIL FROM:<${BOB.name}>\r\n`);
      const replies = await c.readReplies(4);
      expect(replies.map((r) => r.lines[0])).toEqual([
        '500 5.5.2 Error: bare CR in command line',
        '500 5.5.2 Error: NUL in command line',
        '500 5.5.2 Error: line too long',
        NOT_OWNED,
      ]);
      await quit(c);
    } finally {
      c.close();
    }
    await postfixSawOnlyAlice(stack, mode);
    expect(stack.logs).toContainEqual(expect.objectContaining({ msg: 'refused commands from a logged-in client', user: ALICE.name }));
  });
});

describe.each(MODES)('several messages on one connection (backends.smtp.login: %s)', (mode) => {
  let stack: Stack;
  let aliceToken: string;
  let bobToken: string;

  beforeAll(async () => {
    stack = stacks[mode];
    [aliceToken, bobToken] = await Promise.all([stack.idp.mintAccessToken({ user: ALICE.name }), stack.idp.mintAccessToken({ user: BOB.name })]);
  });

  async function expectDelivered(messages: Array<{ subject: string; body: string }>): Promise<void> {
    const stored = await readBack(stack, bobToken, messages.map((m) => m.subject));
    for (const m of messages) expect(bodyOf(stored.get(m.subject)!).toString('latin1'), m.subject).toBe(m.body);
  }

  /** Logins by alice since `from` in sasl-gate's log: one per connection. */
  const aliceLogins = (from: number) => stack.logs.slice(from).filter((l) => l['msg'] === 'authenticated' && l['user'] === ALICE.name).length;

  it('pipelined MAIL, RCPT, RSET, NOOP, VRFY, HELP, a second EHLO, DATA and BDAT mixed', async () => {
    const subjects = [unique(`mix-data ${mode}`), unique(`mix-bdat ${mode}`), unique(`mix-data2 ${mode}`)];
    const [m1, m2, m3] = subjects.map((s, i) => ({ subject: s, ...testMessage(s, i) })) as [
      { subject: string; raw: string; body: string },
      { subject: string; raw: string; body: string },
      { subject: string; raw: string; body: string },
    ];
    const c = await loggedIn(stack, aliceToken);
    const queueIds: string[] = [];
    try {
      c.write(
        `MAIL FROM:<${ALICE.name}>\r\nRCPT TO:<${BOB.name}>\r\nRSET\r\nNOOP\r\nVRFY ${BOB.name}\r\nHELP\r\nEHLO client.example\r\n` +
          `MAIL FROM:<${ALICE.name}>\r\nRCPT TO:<${BOB.name}>\r\nDATA\r\n`,
      );
      const [mail, rcpt, rset, noop, vrfy, help, ehlo, mail2, rcpt2, data] = await c.readReplies(10);
      expect([mail, rcpt, rset, noop].map((r) => r?.code)).toEqual([250, 250, 250, 250]);
      expect(vrfy?.code).toBe(252);
      // Postfix has no HELP: its own answer comes back, in its place.
      expect(help?.lines).toEqual(['500 5.5.2 Error: command not recognized']);
      const keywords = ehlo!.lines.slice(1).map((l) => l.slice(4));
      expect(keywords).toEqual(expect.arrayContaining(['PIPELINING', 'CHUNKING']));
      expect(keywords.filter((k) => /^(XCLIENT|XFORWARD|AUTH|STARTTLS)\b/i.test(k))).toEqual([]);
      expect(ehlo!.lines.at(-1)).toMatch(/^250 /);
      expect([mail2, rcpt2, data].map((r) => r?.code)).toEqual([250, 250, 354]);

      const first = Buffer.from(m2.raw.slice(0, 100));
      const rest = Buffer.from(m2.raw.slice(100));
      c.write(
        `${dotStuffed(m1.raw)}MAIL FROM:<${ALICE.name}>\r\nRCPT TO:<${BOB.name}>\r\nBDAT ${first.length}\r\n${first.toString('latin1')}` +
          `BDAT ${rest.length} LAST\r\n${rest.toString('latin1')}RSET\r\nMAIL FROM:<${ALICE.name}>\r\nRCPT TO:<${BOB.name}>\r\nDATA\r\n`,
      );
      const [q1, mail3, rcpt3, chunk, q2, rset2, mail4, rcpt4, data2] = await c.readReplies(9);
      queueIds.push(queueIdOf(q1));
      expect([mail3, rcpt3].map((r) => r?.code)).toEqual([250, 250]);
      expect(chunk?.lines).toEqual([`250 2.0.0 Ok: ${first.length} bytes`]);
      queueIds.push(queueIdOf(q2));
      expect([rset2, mail4, rcpt4, data2].map((r) => r?.code)).toEqual([250, 250, 250, 354]);
      c.write(dotStuffed(m3.raw));
      queueIds.push(queueIdOf(await c.readReply()));
      await quit(c);
    } finally {
      c.close();
    }
    await postfixSawOnlyAlice(stack, mode, queueIds);
    await expectDelivered([m1, m2, m3]);
  });

  it("five messages with Python's smtplib on one connection", async (ctx) => {
    const available = await ensureProgram('python3', 'python3');
    if (!available.ok) ctx.skip();
    const { dir, caPath } = workDir(stack, 'relay-python');
    const messages = Array.from({ length: 5 }, (_, i) => {
      const subject = unique(`smtplib ${mode} ${i}`);
      const m = testMessage(subject, i);
      writeFileSync(join(dir, `m${i}.eml`), m.raw);
      return { subject, body: m.body };
    });
    const script = String.raw`
import json, os, smtplib, ssl
e = os.environ
ctx = ssl.create_default_context(cafile=e['CA'])
s = smtplib.SMTP_SSL('localhost', int(e['PORT']), context=ctx, timeout=20)
s.ehlo('client.example')
s.auth('XOAUTH2', lambda challenge=None: 'user=%s\x01auth=Bearer %s\x01\x01' % (e['MAIL_USER'], e['TOKEN']))
refused = []
for i in range(5):
    with open(os.path.join(e['DIR'], 'm%d.eml' % i), 'rb') as f:
        refused.append(s.sendmail(e['MAIL_USER'], [e['RCPT']], f.read()))
s.quit()
print(json.dumps({'refused': refused}))
`;
    const from = stack.logs.length;
    const result = await run('python3', ['-c', script], {
      env: { CA: caPath, PORT: String(stack.smtpPort), MAIL_USER: ALICE.name, RCPT: BOB.name, TOKEN: aliceToken, DIR: dir },
      timeoutMs: 60_000,
    });
    expect(result.stderr).toBe('');
    expect(JSON.parse(result.stdout)).toEqual({ refused: [{}, {}, {}, {}, {}] });
    expect(aliceLogins(from)).toBe(1);
    await expectDelivered(messages);
    await postfixSawOnlyAlice(stack, mode);
  });

  it("five messages with nodemailer's pooled transport (maxMessages 10) on one connection", async () => {
    const transport = nodemailer.createTransport({
      pool: true,
      maxConnections: 1,
      maxMessages: 10,
      host: stack.host,
      port: stack.smtpPort,
      secure: true,
      name: 'client.example',
      tls: { ca: [stack.ca], servername: 'localhost' },
      auth: { type: 'OAuth2', user: ALICE.name, accessToken: aliceToken },
    });
    const messages = Array.from({ length: 5 }, (_, i) => {
      const subject = unique(`pool ${mode} ${i}`);
      return { subject, ...testMessage(subject, i) };
    });
    const from = stack.logs.length;
    try {
      const infos = await Promise.all(messages.map((m) => transport.sendMail({ envelope: { from: ALICE.name, to: [BOB.name] }, raw: m.raw })));
      for (const info of infos) expect(info.accepted).toEqual([BOB.name]);
    } finally {
      transport.close();
    }
    expect(aliceLogins(from)).toBe(1);
    await expectDelivered(messages);
    await postfixSawOnlyAlice(stack, mode);
  });

  it('an msmtp queue flush: five queued messages sent one msmtp run after another, as msmtpq flushes', async (ctx) => {
    const available = await ensureProgram('msmtp', 'msmtp');
    if (!available.ok) ctx.skip();
    const { dir, caPath } = workDir(stack, 'relay-msmtp');
    const config = join(dir, 'msmtprc');
    writeFileSync(
      config,
      [
        'account gate',
        'host localhost',
        `port ${stack.smtpPort}`,
        'tls on',
        'tls_starttls off',
        `tls_trust_file ${caPath}`,
        'auth xoauth2',
        `user ${ALICE.name}`,
        `from ${ALICE.name}`,
        `passwordeval cat ${tokenFile(dir, secret(aliceToken, 'access token'))}`,
        '',
      ].join('\n'),
      { mode: 0o600 },
    );
    const messages = Array.from({ length: 5 }, (_, i) => {
      const subject = unique(`msmtp ${mode} ${i}`);
      return { subject, ...testMessage(subject, i) };
    });
    for (const m of messages) {
      const sent = await run('msmtp', ['-C', config, '-a', 'gate', BOB.name], { input: m.raw, env: { HOME: dir } });
      expect(sent.code, sent.stderr).toBe(0);
    }
    await expectDelivered(messages);
    await postfixSawOnlyAlice(stack, mode);
  });
});

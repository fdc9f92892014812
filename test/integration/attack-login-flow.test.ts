/**
 * The login flow attacked over the wire, with real Dovecot and Postfix behind sasl-gate (both SMTP
 * login modes): every kind of failure counts towards the growing delay and the per-connection
 * limit, temporary failures do not; an error challenge answered with a command never runs that
 * command; commands pipelined behind a login reach the backend only after it; and whatever the
 * client names, the backends only ever see the token's own user.
 */
import { createServer } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RawSmtps } from '../support/smtps-raw.js';
import { MASTER, oauthbearer, plain, startSmtpStacks, startStack, TlsImap, USERS, xoauth2, type SmtpLoginMode, type Stack } from '../support/stack.js';

const [ALICE, BOB] = USERS as [(typeof USERS)[0], (typeof USERS)[0]];
const LIMITS = { maxAuthFailures: 4, authFailureDelaySeconds: 0.1, authFailureMaxDelaySeconds: 0.4 };

let stacks: Record<SmtpLoginMode, Stack>;
beforeAll(async () => {
  stacks = await startSmtpStacks({ config: { limits: LIMITS } });
}, 180_000);
afterAll(async () => {
  await Promise.all(Object.values(stacks ?? {}).map((s) => s.close()));
});

/** Dovecot's successful logins since `from` (a log offset), by user. */
async function dovecotLogins(stack: Stack, from: number): Promise<string[]> {
  const log = (await stack.dovecot.readLog()).slice(from);
  return [...log.matchAll(/Login: user=<([^>]*)>/g)].map((m) => m[1]!);
}

/** Postfix's SASL-authenticated sessions since `from`, by user (its failure warnings name the user too). */
async function postfixLogins(stack: Stack, from: number): Promise<string[]> {
  const lines = (await stack.postfix!.readLog()).slice(from).split('\n').filter((l) => !/authentication failed/i.test(l));
  return lines.flatMap((l) => [...l.matchAll(/sasl_username=([^,\s]+)/g)].map((m) => m[1]!));
}

async function timed<T>(work: () => Promise<T>): Promise<[T, number]> {
  const started = Date.now();
  const result = await work();
  return [result, Date.now() - started];
}

describe('IMAP: every kind of failure counts, is slowed down, and the fourth ends the connection', () => {
  it('rejected token, bad XOAUTH2 message, master-user name, wrong password; cancel and bad base64 in between do not count', async () => {
    const stack = stacks.master;
    const aliceToken = await stack.idp.mintAccessToken({ user: ALICE.name });
    const mark = (await stack.dovecot.readLog()).length;
    const c = await TlsImap.connect({ ...stack, localAddress: '127.0.0.21' });
    const times: number[] = [];

    // 1: a token for someone else than the named user: error challenge, dummy reply, NO.
    c.write(`f1 AUTHENTICATE XOAUTH2 ${xoauth2(BOB.name, aliceToken)}\r\n`);
    expect(await c.readLine()).toMatch(/^\+ [A-Za-z0-9+/]+=*$/);
    let [reply, ms] = await timed(async () => {
      c.write('AQ==\r\n');
      return (await c.until('f1')).tagged;
    });
    expect(reply).toBe('f1 NO [AUTHENTICATIONFAILED] Authentication failed.');
    times.push(ms);

    // Not counted: a cancelled exchange and bad base64 (no credential was tried).
    c.write('c1 AUTHENTICATE PLAIN\r\n');
    expect(await c.readLine()).toBe('+ ');
    c.write('*\r\n');
    expect((await c.until('c1')).tagged).toBe('c1 BAD Authentication cancelled.');
    expect((await c.command('AUTHENTICATE PLAIN not*base64')).tagged).toMatch(/BAD Invalid base64/);

    // 2: a message that is not XOAUTH2.
    [reply, ms] = await timed(async () => (await c.command(`AUTHENTICATE XOAUTH2 ${Buffer.from('garbage').toString('base64')}`)).tagged);
    expect(reply).toMatch(/NO \[AUTHENTICATIONFAILED\] Invalid XOAUTH2 message/);
    times.push(ms);

    // 3: a password login through the master user's separator: refused by sasl-gate itself.
    [reply, ms] = await timed(async () => (await c.command(`LOGIN "${ALICE.name}*${MASTER.user}" "${MASTER.password}"`)).tagged);
    expect(reply).toMatch(/NO \[AUTHENTICATIONFAILED\]/);
    times.push(ms);

    // 4: a wrong password, refused by Dovecot: one too many.
    [reply, ms] = await timed(async () => (await c.command(`LOGIN "${ALICE.name}" "wrong-password"`)).tagged);
    expect(reply).toMatch(/NO \[AUTHENTICATIONFAILED\]/);
    times.push(ms);
    expect(await c.readLine()).toBe('* BYE Too many authentication failures.');
    expect(await c.waitClosed()).toBe(true);

    // 100, 200, 400, 400 ms (capped): each failure waited, and the waits grew.
    for (const t of times) expect(t).toBeGreaterThanOrEqual(90);
    expect(times[2]!).toBeGreaterThan(times[0]! + 200);
    // The master user was never logged into with the client's guess, nobody was logged in.
    expect(await dovecotLogins(stack, mark)).toEqual([]);
  });
});

describe.each(['xclient', 'master'] as const)('SMTP (login: %s): every kind of failure counts, and the fourth ends the connection', (mode) => {
  it('rejected token, bad XOAUTH2 message, master user in PLAIN, wrong password', async () => {
    const stack = stacks[mode];
    const aliceToken = await stack.idp.mintAccessToken({ user: ALICE.name });
    const mark = (await stack.postfix!.readLog()).length;
    const c = await RawSmtps.connect({ host: stack.host, port: stack.smtpPort, ca: stack.ca, localAddress: '127.0.0.22' });
    const times: number[] = [];
    expect((await c.command('EHLO client.example')).code).toBe(250);

    expect((await c.command(`AUTH XOAUTH2 ${xoauth2(BOB.name, aliceToken)}`)).code).toBe(334);
    let [reply, ms] = await timed(() => c.command(''));
    expect(reply.lines).toEqual(['535 5.7.8 Authentication credentials invalid']);
    times.push(ms);

    expect((await c.command('AUTH PLAIN')).code).toBe(334);
    expect((await c.command('*')).lines).toEqual(['501 5.7.0 Authentication cancelled']);

    [reply, ms] = await timed(() => c.command(`AUTH XOAUTH2 ${Buffer.from('garbage').toString('base64')}`));
    expect(reply.lines[0]).toMatch(/^535 5\.7\.8 Invalid XOAUTH2 message/);
    times.push(ms);

    [reply, ms] = await timed(() => c.command(`AUTH PLAIN ${plain(ALICE.name, MASTER.user, MASTER.password)}`));
    expect(reply.lines).toEqual(['535 5.7.8 Authentication credentials invalid']);
    times.push(ms);

    [reply, ms] = await timed(() => c.command(`AUTH PLAIN ${plain('', ALICE.name, 'wrong-password')}`));
    expect(reply.code).toBe(535);
    times.push(ms);
    expect((await c.readReply()).lines).toEqual(['421 4.7.0 Too many authentication failures, closing connection']);
    expect(await c.waitClosed()).toBe(true);

    // Each failure waited, and the waits grew to the cap (user names carry earlier failures too).
    for (const t of times) expect(t).toBeGreaterThanOrEqual(90);
    expect(times[3]!).toBeGreaterThanOrEqual(390);
    expect(await postfixLogins(stack, mark)).toEqual([]);
  });
});

describe('an error challenge answered with a command: the command is the dummy reply, never run', () => {
  it('IMAP: a LOGIN or a token AUTHENTICATE sent instead of the dummy reply is not run', async () => {
    const stack = stacks.master;
    const aliceToken = await stack.idp.mintAccessToken({ user: ALICE.name });
    const mark = (await stack.dovecot.readLog()).length;
    const c = await TlsImap.connect({ ...stack, localAddress: '127.0.0.23' });
    c.write(`a1 AUTHENTICATE XOAUTH2 ${xoauth2(BOB.name, aliceToken)}\r\n`);
    expect(await c.readLine()).toMatch(/^\+ /);
    c.write(`a2 LOGIN "${BOB.name}" "${BOB.password}"\r\n`);
    expect(await c.readLine()).toBe('a1 NO [AUTHENTICATIONFAILED] Authentication failed.');
    // Pipelined in one write: the good token's command is eaten as the dummy reply, SELECT is pre-login.
    c.write(
      `b1 AUTHENTICATE XOAUTH2 ${xoauth2(BOB.name, aliceToken)}\r\nb2 AUTHENTICATE XOAUTH2 ${xoauth2(ALICE.name, aliceToken)}\r\nb3 SELECT INBOX\r\n`,
    );
    expect(await c.readLine()).toMatch(/^\+ /);
    expect(await c.readLine()).toBe('b1 NO [AUTHENTICATIONFAILED] Authentication failed.');
    expect(await c.readLine()).toBe('b3 BAD SELECT needs a login first.');
    expect((await c.command('NOOP')).tagged).toBe('t1 OK NOOP completed.');
    c.close();
    await new Promise((r) => setTimeout(r, 300));
    expect(await dovecotLogins(stack, mark)).toEqual([]);
  });

  it.each(['xclient', 'master'] as const)('SMTP (login: %s): an AUTH sent instead of the dummy reply is not run; mail stays refused', async (mode) => {
    const stack = stacks[mode];
    const aliceToken = await stack.idp.mintAccessToken({ user: ALICE.name });
    const mark = (await stack.postfix!.readLog()).length;
    const c = await RawSmtps.connect({ host: stack.host, port: stack.smtpPort, ca: stack.ca, localAddress: '127.0.0.24' });
    expect((await c.command('EHLO client.example')).code).toBe(250);
    c.write(
      `AUTH XOAUTH2 ${xoauth2(BOB.name, aliceToken)}\r\nAUTH PLAIN ${plain('', BOB.name, BOB.password)}\r\nMAIL FROM:<${BOB.name}>\r\nAUTH XOAUTH2 ${xoauth2(BOB.name, aliceToken)}\r\nAUTH XOAUTH2 ${xoauth2(ALICE.name, aliceToken)}\r\nRCPT TO:<${ALICE.name}>\r\n`,
    );
    const replies = await c.readReplies(6);
    expect(replies.map((r) => r.code)).toEqual([334, 535, 530, 334, 535, 530]);
    c.close();
    await new Promise((r) => setTimeout(r, 300));
    expect(await postfixLogins(stack, mark)).toEqual([]);
  });
});

describe('commands pipelined behind a login reach the backend only after it, as the logged-in user', () => {
  it('IMAP: SELECT behind SASL-IR, behind a continuation answered early, and behind LOGIN with literals', async () => {
    const stack = stacks.master;
    const aliceToken = await stack.idp.mintAccessToken({ user: ALICE.name });
    const mark = (await stack.dovecot.readLog()).length;

    const a = await TlsImap.connect({ ...stack, localAddress: '127.0.0.26' });
    a.write(`a1 AUTHENTICATE XOAUTH2 ${xoauth2(ALICE.name, aliceToken)}\r\na2 SELECT INBOX\r\n`);
    expect((await a.until('a1')).tagged).toMatch(/^a1 OK /);
    expect((await a.until('a2')).tagged).toMatch(/^a2 OK \[READ-WRITE\]/);
    a.close();

    const b = await TlsImap.connect({ ...stack, localAddress: '127.0.0.26' });
    b.write(`b1 AUTHENTICATE OAUTHBEARER\r\n${oauthbearer(ALICE.name, aliceToken)}\r\nb2 SELECT INBOX\r\n`);
    expect(await b.readLine()).toBe('+ ');
    expect((await b.until('b1')).tagged).toMatch(/^b1 OK /);
    expect((await b.until('b2')).tagged).toMatch(/^b2 OK \[READ-WRITE\]/);
    b.close();

    const d = await TlsImap.connect({ ...stack, localAddress: '127.0.0.26' });
    const user = Buffer.from(BOB.name);
    const password = Buffer.from(BOB.password);
    d.write(`d1 LOGIN {${user.length}+}\r\n${BOB.name} {${password.length}+}\r\n${BOB.password}\r\nd2 SELECT INBOX\r\n`);
    expect((await d.until('d1')).tagged).toMatch(/^d1 OK /);
    expect((await d.until('d2')).tagged).toMatch(/^d2 OK \[READ-WRITE\]/);
    d.close();

    await new Promise((r) => setTimeout(r, 300));
    expect((await dovecotLogins(stack, mark)).sort()).toEqual([ALICE.name, ALICE.name, BOB.name]);
  });
});

describe('whatever name the client gives, a token logs in only as its own user', () => {
  const names = (user: string) => [
    BOB.name,
    `${ALICE.name}*${MASTER.user}`,
    `${BOB.name}*${MASTER.user}`,
    MASTER.user,
    `${MASTER.user}*${ALICE.name}`,
    `${ALICE.name}\u0000${BOB.name}`,
    ` ${ALICE.name}`,
    `${ALICE.name.toUpperCase()}`,
    user,
  ];

  it('IMAP, XOAUTH2 and OAUTHBEARER: only alice ever reaches Dovecot', async () => {
    const stack = stacks.master;
    const aliceToken = await stack.idp.mintAccessToken({ user: ALICE.name });
    const mark = (await stack.dovecot.readLog()).length;
    // All at once: the failure delays of one address overlap instead of adding up.
    const attempts = names(ALICE.name).flatMap((name) => (['XOAUTH2', 'OAUTHBEARER'] as const).map((mechanism) => ({ name, mechanism })));
    const outcomes = await Promise.all(
      attempts.map(async ({ name, mechanism }) => {
        const c = await TlsImap.connect({ ...stack, localAddress: '127.0.0.27' });
        const response = mechanism === 'XOAUTH2' ? xoauth2(name, aliceToken) : oauthbearer(name, aliceToken);
        c.write(`x1 AUTHENTICATE ${mechanism} ${response}\r\n`);
        let line = await c.readLine();
        if (line.startsWith('+ ')) {
          c.write('AQ==\r\n');
          line = (await c.until('x1')).tagged;
        }
        c.close();
        return `${mechanism} ${JSON.stringify(name)}: ${line.split(' ')[1]}`;
      }),
    );
    await new Promise((r) => setTimeout(r, 300));
    const logins = await dovecotLogins(stack, mark);
    // Case differences are the same user: those log in as the token's spelling.
    expect(outcomes.filter((o) => o.endsWith(' OK'))).toEqual([
      `XOAUTH2 ${JSON.stringify(ALICE.name.toUpperCase())}: OK`,
      `OAUTHBEARER ${JSON.stringify(ALICE.name.toUpperCase())}: OK`,
      `XOAUTH2 ${JSON.stringify(ALICE.name)}: OK`,
      `OAUTHBEARER ${JSON.stringify(ALICE.name)}: OK`,
    ]);
    expect(logins).toEqual([ALICE.name, ALICE.name, ALICE.name, ALICE.name]);
  });

  it.each(['xclient', 'master'] as const)('SMTP (login: %s): only alice ever reaches Postfix', async (mode) => {
    const stack = stacks[mode];
    const aliceToken = await stack.idp.mintAccessToken({ user: ALICE.name });
    const mark = (await stack.postfix!.readLog()).length;
    let accepted = 0;
    const attempts = names(ALICE.name).flatMap((name) => (['XOAUTH2', 'OAUTHBEARER'] as const).map((mechanism) => ({ name, mechanism })));
    await Promise.all(
      attempts.map(async ({ name, mechanism }) => {
        const c = await RawSmtps.connect({ host: stack.host, port: stack.smtpPort, ca: stack.ca, localAddress: '127.0.0.28' });
        await c.command('EHLO client.example');
        const response = mechanism === 'XOAUTH2' ? xoauth2(name, aliceToken) : oauthbearer(name, aliceToken);
        let reply = await c.command(`AUTH ${mechanism} ${response}`);
        if (reply.code === 334) reply = await c.command('');
        if (reply.code === 235) {
          accepted += 1;
          // Something Postfix logs with the SASL user: a message to bob, from alice.
          expect((await c.command(`MAIL FROM:<${ALICE.name}>`)).code).toBe(250);
          expect((await c.command(`RCPT TO:<${BOB.name}>`)).code).toBe(250);
          await c.command('RSET');
        }
        await c.command('QUIT').catch(() => undefined);
        c.close();
      }),
    );
    await new Promise((r) => setTimeout(r, 500));
    expect(accepted).toBe(4);
    const logins = await postfixLogins(stack, mark);
    expect(logins.length).toBeGreaterThan(0);
    expect([...new Set(logins)]).toEqual([ALICE.name]);
  });
});

describe('the master password through pass-through, under other spellings of the master name', () => {
  it('IMAP LOGIN and AUTHENTICATE PLAIN: no spelling logs anyone in', async () => {
    const stack = stacks.master;
    const mark = (await stack.dovecot.readLog()).length;
    const spellings = [
      MASTER.user,
      MASTER.user.toUpperCase(),
      ` ${MASTER.user}`,
      `${MASTER.user}@example.test`,
      `${MASTER.user}@`,
      [...MASTER.user].map((ch) => (/[a-z]/.test(ch) ? String.fromCharCode(ch.charCodeAt(0) + 0xfee0) : ch)).join(''),
      `${ALICE.name}*${MASTER.user}`,
      `*${MASTER.user}`,
    ];
    const c = await TlsImap.connect({ ...stack, localAddress: '127.0.0.30' });
    const replies: string[] = [];
    for (const name of spellings.slice(0, 3)) {
      replies.push((await c.command(`AUTHENTICATE PLAIN ${plain('', name, MASTER.password)}`)).tagged);
    }
    c.close();
    replies.push(
      ...(await Promise.all(
        spellings.map(async (name) => {
          const d = await TlsImap.connect({ ...stack, localAddress: '127.0.0.30' });
          const reply = (await d.command(`LOGIN "${name}" "${MASTER.password}"`)).tagged;
          d.close();
          return reply;
        }),
      )),
    );
    for (const reply of replies) expect(reply).toMatch(/^t\d+ NO /);
    await new Promise((r) => setTimeout(r, 300));
    expect(await dovecotLogins(stack, mark)).toEqual([]);
  });
});

describe('temporary failures (provider or backend down) are not the client\'s failures', () => {
  let stack: Stack;
  beforeAll(async () => {
    // A port with nothing behind it, for both the IMAP backend and the OpenID provider.
    const holder = createServer();
    await new Promise<void>((r) => holder.listen(0, '127.0.0.1', r));
    const closed = (holder.address() as { port: number }).port;
    await new Promise<void>((r) => holder.close(() => r()));
    stack = await startStack({
      config: {
        limits: { maxAuthFailures: 2, authFailureDelayMs: 300, authFailureMaxDelayMs: 300 },
        backends: { imap: { host: '127.0.0.1', port: closed } },
      },
      oauth: { issuer: `http://127.0.0.1:${closed}` },
    });
  }, 120_000);
  afterAll(() => stack?.close());

  it('IMAP: more temporary failures than maxAuthFailures, none delayed, the connection lives on', async () => {
    const token = await stack.idp.mintAccessToken({ user: ALICE.name });
    const c = await TlsImap.connect({ ...stack, localAddress: '127.0.0.29' });
    for (let i = 0; i < 3; i++) {
      const [token_, ms1] = await timed(async () => (await c.command(`AUTHENTICATE XOAUTH2 ${xoauth2(ALICE.name, token)}`)).tagged);
      expect(token_).toMatch(/NO \[UNAVAILABLE\] Authentication service temporarily unavailable/);
      expect(ms1).toBeLessThan(250);
      const [password, ms2] = await timed(async () => (await c.command(`LOGIN "${BOB.name}" "${BOB.password}"`)).tagged);
      expect(password).toMatch(/NO \[UNAVAILABLE\]/);
      expect(ms2).toBeLessThan(250);
    }
    expect((await c.command('NOOP')).tagged).toMatch(/OK NOOP completed/);
    c.close();
  });
});

/**
 * sasl-gate's IMAPS front door against a real Dovecot and a real OpenID provider: token logins
 * land in the user's own mailbox, password logins pass through, and every way of misusing a
 * token, the master user or the parser is refused with a clear reply while the connection lives.
 */
import { ImapFlow } from 'imapflow';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { freePort } from '../../tools/ports.js';
import { MASTER, oauthbearer, plain, startStack, TlsImap, tokenLogin, USERS, xoauth2, type Stack } from '../support/stack.js';

const [ALICE, BOB] = USERS as [(typeof USERS)[0], (typeof USERS)[0]];

let stack: Stack;
let aliceToken: string;
let bobToken: string;

beforeAll(async () => {
  stack = await startStack();
  aliceToken = await stack.idp.mintAccessToken({ user: ALICE.name });
  bobToken = await stack.idp.mintAccessToken({ user: BOB.name });
});

afterAll(async () => {
  await stack?.close();
});

function decodeChallenge(line: string): unknown {
  expect(line.startsWith('+ ')).toBe(true);
  return JSON.parse(Buffer.from(line.slice(2), 'base64').toString('utf8'));
}

async function dovecotLogins(user: string): Promise<number> {
  const log = await stack.dovecot.readLog();
  return log.split('\n').filter((l) => l.includes(`Login: user=<${user}>`)).length;
}

describe('pre-login', () => {
  it('greets with the backend capabilities plus its own mechanisms', async () => {
    const c = await TlsImap.connect(stack);
    expect(c.greeting).toMatch(/^\* OK \[CAPABILITY IMAP4rev1 .*\] /);
    const caps = c.greeting.slice(c.greeting.indexOf('[CAPABILITY ') + 12, c.greeting.indexOf(']')).split(' ');
    expect(caps).toEqual(expect.arrayContaining(['SASL-IR', 'AUTH=XOAUTH2', 'AUTH=OAUTHBEARER', 'AUTH=PLAIN', 'AUTH=LOGIN', 'IDLE', 'ID', 'LITERAL+']));
    expect(caps).not.toContain('STARTTLS');
    expect(caps).not.toContain('LOGINDISABLED');
    const r = await c.command('CAPABILITY');
    expect(r.lines[0]).toBe(`* CAPABILITY ${caps.join(' ')}`);
    expect(r.tagged).toMatch(/^t1 OK/);
    expect((await c.command('NOOP')).tagged).toMatch(/^t2 OK/);
    const id = await c.command('ID ("name" "test-client" "version" "1")');
    expect(id.lines[0]).toMatch(/^\* ID \(/);
    expect(id.tagged).toMatch(/^t3 OK/);
    expect((await c.command('SELECT INBOX')).tagged).toMatch(/^t4 BAD/);
    expect((await c.command('FROBNICATE')).tagged).toMatch(/^t5 BAD/);
    expect((await c.command('STARTTLS')).tagged).toMatch(/^t6 BAD/);
    const bye = await c.command('LOGOUT');
    expect(bye.lines[0]).toMatch(/^\* BYE/);
    expect(bye.tagged).toMatch(/^t7 OK/);
    expect(await c.waitClosed()).toBe(true);
  });
});

describe('token logins', () => {
  it('XOAUTH2 with SASL-IR lands in the user\'s own mailbox as that user', async () => {
    const c = await TlsImap.connect(stack);
    const r = await c.command(`AUTHENTICATE XOAUTH2 ${xoauth2(ALICE.name, aliceToken)}`);
    expect(r.tagged).toMatch(/^t1 OK \[CAPABILITY IMAP4rev1 [^\]]*\] /);
    // The post-login list comes from Dovecot: it has capabilities only offered after login.
    expect(r.tagged).toMatch(/ SORT /);
    const select = await c.command('SELECT INBOX');
    expect(select.tagged).toMatch(/^t2 OK/);
    const ns = await c.command('NAMESPACE');
    expect(ns.tagged).toMatch(/^t3 OK/);
    await c.command('LOGOUT');
    expect(await c.waitClosed()).toBe(true);
    const log = await stack.dovecot.readLog();
    expect(log).toMatch(/imap-login: Info: Login: user=<alice@example\.test>, method=PLAIN, rip=127\.0\.0\.1, .*session=<[^>]+>/);
    // Dovecot's session id is sasl-gate's, so one grep follows a login through both logs.
    const ours = stack.logs.filter((l) => l['msg'] === 'authenticated' && l['user'] === ALICE.name).at(-1);
    expect(log).toContain(`session=<${String(ours?.['session'])}>`);
  });

  it('XOAUTH2 with a continuation instead of SASL-IR', async () => {
    const c = await TlsImap.connect(stack);
    const tag = c.tag();
    c.write(`${tag} AUTHENTICATE XOAUTH2\r\n`);
    expect(await c.readLine()).toBe('+ ');
    c.write(`${xoauth2(ALICE.name, aliceToken)}\r\n`);
    expect((await c.until(tag)).tagged).toMatch(new RegExp(`^${tag} OK \\[CAPABILITY `));
    c.close();
  });

  it('OAUTHBEARER with and without SASL-IR, and without a user name', async () => {
    for (const [user, ir] of [[ALICE.name, true], [ALICE.name, false], [undefined, true]] as const) {
      const c = await TlsImap.connect(stack);
      const tag = c.tag();
      const response = oauthbearer(user, aliceToken);
      if (ir) c.write(`${tag} AUTHENTICATE OAUTHBEARER ${response}\r\n`);
      else {
        c.write(`${tag} AUTHENTICATE OAUTHBEARER\r\n`);
        expect(await c.readLine()).toBe('+ ');
        c.write(`${response}\r\n`);
      }
      expect((await c.until(tag)).tagged).toMatch(new RegExp(`^${tag} OK \\[CAPABILITY `));
      c.close();
    }
  });

  it('the SASL user matches the token case-insensitively', async () => {
    const c = await TlsImap.connect(stack);
    const r = await c.command(`AUTHENTICATE XOAUTH2 ${xoauth2('Alice@Example.TEST', aliceToken)}`);
    expect(r.tagged).toMatch(/^t1 OK/);
    c.close();
  });

  it('imapflow: APPEND, SELECT, FETCH and IDLE through the pipe', async () => {
    const client = new ImapFlow({
      host: stack.host,
      port: stack.imapPort,
      secure: true,
      tls: { ca: [stack.ca], servername: 'localhost' },
      auth: { user: BOB.name, accessToken: bobToken },
      logger: false,
    });
    await client.connect();
    const subject = `through sasl-gate ${Date.now()}`;
    const body = `Subject: ${subject}\r\nFrom: bob@example.test\r\nTo: bob@example.test\r\n\r\n${'line of text\r\n'.repeat(2000)}`;
    await client.append('INBOX', body);
    const lock = await client.getMailboxLock('INBOX');
    try {
      const found = (await client.search({ subject })) || [];
      expect(found).toHaveLength(1);
      const message = await client.fetchOne(String(found[0]), { source: true, envelope: true });
      expect(message && message.envelope?.subject).toBe(subject);
      expect(message && message.source?.length).toBe(Buffer.byteLength(body));
      // IDLE: another session appends, this one hears about it.
      const exists = new Promise<number>((resolve) => client.on('exists', (e: { count: number }) => resolve(e.count)));
      const idle = client.idle();
      const other = new ImapFlow({
        host: stack.host,
        port: stack.imapPort,
        secure: true,
        tls: { ca: [stack.ca], servername: 'localhost' },
        auth: { user: BOB.name, pass: BOB.password },
        logger: false,
      });
      await other.connect();
      await other.append('INBOX', 'Subject: second\r\n\r\nhello\r\n');
      await other.logout();
      expect(await exists).toBeGreaterThanOrEqual(2);
      void idle;
    } finally {
      lock.release();
    }
    await client.logout();
  });
});

describe('password logins pass through to Dovecot', () => {
  it.each([
    ['LOGIN with quoted strings', (c: TlsImap) => c.command(`LOGIN "${ALICE.name}" "${ALICE.password}"`)],
    ['AUTHENTICATE PLAIN with SASL-IR', (c: TlsImap) => c.command(`AUTHENTICATE PLAIN ${plain('', ALICE.name, ALICE.password)}`)],
  ])('%s', async (_name, login) => {
    const c = await TlsImap.connect(stack);
    const r = await login(c);
    expect(r.tagged).toMatch(/^t1 OK \[CAPABILITY /);
    expect((await c.command('SELECT INBOX')).tagged).toMatch(/^t2 OK/);
    c.close();
  });

  it('LOGIN with synchronizing and non-synchronizing literals', async () => {
    const c = await TlsImap.connect(stack);
    c.write(`a1 LOGIN {${ALICE.name.length}}\r\n`);
    expect(await c.readLine()).toMatch(/^\+ /);
    c.write(`${ALICE.name} {${ALICE.password.length}+}\r\n${ALICE.password}\r\n`);
    expect((await c.until('a1')).tagged).toMatch(/^a1 OK \[CAPABILITY /);
    c.close();
  });

  it('AUTHENTICATE LOGIN with continuations', async () => {
    const c = await TlsImap.connect(stack);
    c.write('a1 AUTHENTICATE LOGIN\r\n');
    expect(await c.readLine()).toBe('+ VXNlcm5hbWU6');
    c.write(`${Buffer.from(ALICE.name).toString('base64')}\r\n`);
    expect(await c.readLine()).toBe('+ UGFzc3dvcmQ6');
    c.write(`${Buffer.from(ALICE.password).toString('base64')}\r\n`);
    expect((await c.until('a1')).tagged).toMatch(/^a1 OK /);
    c.close();
  });

  it('a wrong password gets Dovecot\'s verdict and the connection stays usable', async () => {
    const c = await TlsImap.connect(stack);
    const r = await c.command(`LOGIN "${ALICE.name}" "wrong-password"`);
    expect(r.tagged).toBe('t1 NO [AUTHENTICATIONFAILED] Authentication failed.');
    const again = await c.command(`AUTHENTICATE PLAIN ${plain('', ALICE.name, ALICE.password)}`);
    expect(again.tagged).toMatch(/^t2 OK/);
    c.close();
  });
});

describe('token misuse is refused with the error challenge and never reaches Dovecot', () => {
  async function expectChallengeThenNo(mechanism: 'XOAUTH2' | 'OAUTHBEARER', response: string, dummy = 'AQ==') {
    const c = await TlsImap.connect(stack);
    const tag = c.tag();
    c.write(`${tag} AUTHENTICATE ${mechanism} ${response}\r\n`);
    const challenge = decodeChallenge(await c.readLine());
    if (mechanism === 'XOAUTH2') {
      expect(challenge).toEqual({ status: '401', schemes: 'bearer', scope: 'openid email' });
    } else {
      expect(challenge).toEqual({
        status: 'invalid_token',
        scope: 'openid email',
        'openid-configuration': `${stack.idp.issuer}/.well-known/openid-configuration`,
      });
    }
    c.write(`${dummy}\r\n`);
    expect((await c.until(tag)).tagged).toBe(`${tag} NO [AUTHENTICATIONFAILED] Authentication failed.`);
    // The connection survives and can still log in properly.
    expect((await c.command('NOOP')).tagged).toMatch(/OK/);
    c.close();
  }

  it('alice\'s token used as bob', async () => {
    const before = [await dovecotLogins(BOB.name), await dovecotLogins(ALICE.name)];
    await expectChallengeThenNo('XOAUTH2', xoauth2(BOB.name, aliceToken));
    await expectChallengeThenNo('OAUTHBEARER', oauthbearer(BOB.name, aliceToken), '');
    expect([await dovecotLogins(BOB.name), await dovecotLogins(ALICE.name)]).toEqual(before);
    const failure = stack.logs.find((l) => l['reason'] === 'wrong_user');
    expect(failure).toMatchObject({ msg: 'authentication failed', user: BOB.name });
  });

  it('an expired token', async () => {
    const now = Math.floor(Date.now() / 1000);
    const expired = await stack.idp.signToken({ ...stack.idp.claimsFor(ALICE.name), iat: now - 7200, exp: now - 3600 });
    await expectChallengeThenNo('XOAUTH2', xoauth2(ALICE.name, expired), '\x01');
    expect(stack.logs.some((l) => l['reason'] === 'expired')).toBe(true);
  });

  it('a token for another audience', async () => {
    const foreign = await stack.idp.mintAccessToken({ user: ALICE.name, audience: 'https://calendar.example.test' });
    await expectChallengeThenNo('OAUTHBEARER', oauthbearer(ALICE.name, foreign), '*');
    expect(stack.logs.some((l) => l['reason'] === 'wrong_audience')).toBe(true);
  });

  it('a token signed by a key the issuer does not publish', async () => {
    const forged = await stack.idp.signToken(stack.idp.claimsFor(ALICE.name), { key: 'foreign' });
    await expectChallengeThenNo('XOAUTH2', xoauth2(ALICE.name, forged));
    const sameKid = await stack.idp.signToken(stack.idp.claimsFor(ALICE.name), { key: 'foreign', kid: stack.idp.kid });
    await expectChallengeThenNo('XOAUTH2', xoauth2(ALICE.name, sameKid));
  });

  it('an unsigned token (alg none) and an HS256 token', async () => {
    const unsigned = await stack.idp.signToken(stack.idp.claimsFor(ALICE.name), { alg: 'none' });
    await expectChallengeThenNo('XOAUTH2', xoauth2(ALICE.name, unsigned));
    expect(stack.logs.some((l) => l['reason'] === 'bad_algorithm')).toBe(true);
  });

  it('a client that answers the challenge with a lone 0x01 and no line end, or not at all, still gets the NO', async () => {
    for (const answer of ['\x01', '']) {
      const c = await TlsImap.connect(stack);
      c.write(`z1 AUTHENTICATE XOAUTH2 ${xoauth2(BOB.name, aliceToken)}\r\n`);
      decodeChallenge(await c.readLine());
      if (answer) c.write(answer);
      const started = Date.now();
      expect(await c.readLine(10_000)).toBe('z1 NO [AUTHENTICATIONFAILED] Authentication failed.');
      expect(Date.now() - started).toBeLessThan(8000);
      // Whatever comes next is a command again.
      expect((await c.command('NOOP')).tagged).toMatch(/OK/);
      c.close();
    }
  });

  it('a token that is not a JWT at all', async () => {
    await expectChallengeThenNo('OAUTHBEARER', oauthbearer(ALICE.name, 'opaque-token-value'));
  });
});

describe('bad input gets a clear protocol error and the connection lives on', () => {
  it('bad base64, bad GS2 header, bad XOAUTH2 message, cancel', async () => {
    const c = await TlsImap.connect(stack);
    expect((await c.command('AUTHENTICATE XOAUTH2 not*base64')).tagged).toMatch(/^t1 BAD .*base64/i);
    const gs2 = Buffer.from(`x,,\x01auth=Bearer ${aliceToken}\x01\x01`).toString('base64');
    expect((await c.command(`AUTHENTICATE OAUTHBEARER ${gs2}`)).tagged).toMatch(/^t2 NO \[AUTHENTICATIONFAILED\] Invalid OAUTHBEARER message/);
    const noUser = Buffer.from(`auth=Bearer ${aliceToken}\x01\x01`).toString('base64');
    expect((await c.command(`AUTHENTICATE XOAUTH2 ${noUser}`)).tagged).toMatch(/^t3 NO \[AUTHENTICATIONFAILED\] Invalid XOAUTH2 message/);
    c.write('x4 AUTHENTICATE PLAIN\r\n');
    expect(await c.readLine()).toBe('+ ');
    c.write('*\r\n');
    expect((await c.until('x4')).tagged).toMatch(/^x4 BAD .*cancel/i);
    expect((await c.command('AUTHENTICATE KERBEROS_V4')).tagged).toMatch(/^t4 NO /);
    expect((await c.command('LOGIN onlyone')).tagged).toMatch(/^t5 BAD /);
    expect((await c.command('LOGIN "unterminated')).tagged).toMatch(/^t6 BAD /);
    expect((await c.command('AUTHENTICATE PLAIN =')).tagged).toMatch(/^t7 NO \[AUTHENTICATIONFAILED\]/);
    const ok = await c.command(`AUTHENTICATE XOAUTH2 ${xoauth2(ALICE.name, aliceToken)}`);
    expect(ok.tagged).toMatch(/^t8 OK/);
    c.close();
  });

  it('an over-long line and an over-size literal', async () => {
    const c = await TlsImap.connect(stack);
    c.write(`long1 LOGIN ${'x'.repeat(70_000)} y\r\n`);
    expect(await c.readLine()).toBe('long1 BAD [TOOBIG] Command line too long.');
    c.write('lit1 LOGIN {100000}\r\n');
    expect(await c.readLine()).toBe('lit1 BAD [TOOBIG] Literal too large.');
    c.write(`lit2 LOGIN {100000+}\r\n${'z'.repeat(100_000)} "pw"\r\n`);
    expect(await c.readLine()).toBe('lit2 BAD [TOOBIG] Literal too large.');
    expect((await c.command('NOOP')).tagged).toMatch(/^t1 OK/);
    expect((await c.command(`LOGIN "${ALICE.name}" "${ALICE.password}"`)).tagged).toMatch(/^t2 OK/);
    c.close();
  });

  it('stops a client that sends too many commands before login', async () => {
    const c = await TlsImap.connect(stack);
    for (let i = 0; i < 50; i++) c.write(`n${i} NOOP\r\n`);
    c.write('n50 NOOP\r\n');
    const lines: string[] = [];
    for (;;) {
      const line = await c.readLine().catch(() => undefined);
      if (line === undefined) break;
      lines.push(line);
    }
    expect(lines.filter((l) => / OK /.test(l))).toHaveLength(50);
    expect(lines.at(-1)).toMatch(/^\* BYE /);
  });
});

describe('the master user can never be reached through pass-through', () => {
  it.each([
    ['the master user as LOGIN name', () => `LOGIN "${MASTER.user}" "${MASTER.password}"`],
    ['the master user in another case', () => `LOGIN "${MASTER.user.toUpperCase()}" "guess"`],
    ['the master separator in the name', () => `LOGIN "${ALICE.name}*${MASTER.user}" "${MASTER.password}"`],
    ['PLAIN with the master as authcid', () => `AUTHENTICATE PLAIN ${plain(ALICE.name, MASTER.user, MASTER.password)}`],
    ['PLAIN with a foreign authzid', () => `AUTHENTICATE PLAIN ${plain(BOB.name, ALICE.name, ALICE.password)}`],
    ['PLAIN with the separator', () => `AUTHENTICATE PLAIN ${plain('', `${BOB.name}*${MASTER.user}`, MASTER.password)}`],
    ['a control character in the name', () => `LOGIN "ali\x07ce@example.test" "x"`],
    ['a NUL in a LOGIN-mechanism name', () => 'AUTHENTICATE LOGIN ' + Buffer.from('alice\0x').toString('base64')],
  ])('%s', async (_name, command) => {
    const logBefore = (await stack.dovecot.readLog()).length;
    const c = await TlsImap.connect(stack);
    const tag = c.tag();
    c.write(`${tag} ${command()}\r\n`);
    let line = await c.readLine();
    if (line.startsWith('+ ')) {
      c.write(`${Buffer.from('pw').toString('base64')}\r\n`);
      line = (await c.until(tag)).tagged;
    }
    expect(line).toMatch(new RegExp(`^${tag} NO \\[AUTHENTICATIONFAILED\\]`));
    expect((await c.command('NOOP')).tagged).toMatch(/OK/);
    c.close();
    // Nothing of the attempt reached Dovecot: no new auth activity at all.
    await new Promise((r) => setTimeout(r, 100));
    const newLog = (await stack.dovecot.readLog()).slice(logBefore);
    expect(newLog).not.toMatch(/auth|Login|Aborted/);
  });
});

describe('a backend that cannot be reached', () => {
  it('gives token and password users a temporary failure, not a rejection', async () => {
    const closed = await freePort();
    const down = await startStack({ config: { backends: { imap: { host: '127.0.0.1', port: closed, connectTimeoutSeconds: 2 } } } });
    try {
      const token = await down.idp.mintAccessToken({ user: ALICE.name });
      const r = await tokenLogin(down, ALICE.name, token);
      expect(r.tagged).toBe('a1 NO [UNAVAILABLE] Mail server temporarily unavailable, try again later.');
      expect(r.challenge).toBeUndefined();
      const c = await TlsImap.connect(down);
      expect((await c.command(`LOGIN "${ALICE.name}" "${ALICE.password}"`)).tagged).toMatch(/^t1 NO \[UNAVAILABLE\]/);
      c.close();
      expect(down.logs.some((l) => l['reason'] === 'backend_unavailable')).toBe(true);
    } finally {
      await down.close();
    }
  });
});

describe('logs', () => {
  it('never contain a token, a password, the master secret or a SASL blob', async () => {
    const raw = stack.rawLog();
    expect(raw.length).toBeGreaterThan(1000);
    const secrets = [
      aliceToken,
      bobToken,
      aliceToken.split('.')[2]!,
      ALICE.password,
      BOB.password,
      MASTER.password,
      stack.idp.clientSecret,
      xoauth2(ALICE.name, aliceToken),
      plain('', ALICE.name, ALICE.password),
      Buffer.from(ALICE.password).toString('base64'),
    ];
    for (const secret of secrets) expect(raw).not.toContain(secret);
    // One line per connection end, with what an admin needs.
    const ends = stack.logs.filter((l) => l['msg'] === 'connection closed');
    expect(ends.length).toBeGreaterThan(10);
    expect(ends.find((l) => l['outcome'] === 'relayed')).toMatchObject({ client: '127.0.0.1', listener: expect.any(String) });
  });
});

import type { SecureContext } from 'node:tls';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { ImapSession, type ImapSessionContext } from '../../../src/imap/session.js';
import { aliveAfterGc, ManualClock, MASTER, scriptedBackend, sessionOptions, sessionRefs, socketPair, TestClient, testCertificate } from '../login/flow-harness.js';

const CAPABILITIES = ['IMAP4rev1', 'ID', 'SASL-IR', 'AUTH=XOAUTH2', 'AUTH=OAUTHBEARER', 'AUTH=PLAIN', 'AUTH=LOGIN'];
const b64 = (text: string) => Buffer.from(text, 'utf8').toString('base64');
const xoauth2 = (user: string, token: string) => b64(`user=${user}\x01auth=Bearer ${token}\x01\x01`);

/** A Dovecot stand-in: ID, then AUTHENTICATE PLAIN or LOGIN; bob's password is `bob-pw`; NOOP after login. */
function dovecot() {
  return scriptedBackend('* OK [CAPABILITY IMAP4rev1 SASL-IR ID AUTH=PLAIN] Dovecot ready.', (line, reply) => {
    const [tag, command, ...args] = line.split(' ');
    if (command === 'ID') {
      reply('* ID NIL');
      reply(`${tag} OK ID completed.`);
    } else if (command === 'AUTHENTICATE') {
      const [authzid, authcid, password] = Buffer.from(args[1] ?? '', 'base64').toString().split('\0');
      const master = authcid === MASTER.user && password === MASTER.password && authzid !== '';
      const bob = authcid === 'bob' && password === 'bob-pw' && authzid === '';
      reply(master || bob ? `${tag} OK [CAPABILITY IMAP4rev1 IDLE] Logged in` : `${tag} NO [AUTHENTICATIONFAILED] Authentication failed.`);
    } else if (command === 'LOGIN') {
      reply(args.join(' ') === '"bob" "bob-pw"' ? `${tag} OK [CAPABILITY IMAP4rev1 IDLE] Logged in` : `${tag} NO [AUTHENTICATIONFAILED] Authentication failed.`);
    } else if (command === 'NOOP') {
      reply(`${tag} OK NOOP answered by the backend.`);
    }
  });
}

let certificate: { context: SecureContext; cleanup(): void };
beforeAll(async () => {
  certificate = await testCertificate();
});
afterAll(() => certificate.cleanup());

const cleanups: Array<() => void> = [];
afterEach(() => {
  for (const cleanup of cleanups.splice(0)) cleanup();
});

async function start(options: { starttls?: boolean; limits?: Partial<ImapSessionContext['limits']> } = {}) {
  const clock = new ManualClock();
  const backend = dovecot();
  const { server, client } = await socketPair();
  const ctx = {
    ...sessionOptions({ ...(options.limits ? { limits: options.limits } : {}), starttls: options.starttls ? () => certificate.context : undefined }),
    capabilities: { current: () => CAPABILITIES },
    connectBackend: backend.connect,
    backendResponseTimeoutMs: 2000,
    clock,
  };
  const session = new ImapSession(server, ctx);
  const running = session.run();
  const test = new TestClient(client);
  cleanups.push(() => {
    test.socket.destroy();
    backend.close();
  });
  return { session, running, client: test, backend, ctx, clock };
}

describe('IMAP dialect: pre-login commands on an implicit-TLS listener', () => {
  it('greets with the capabilities and answers CAPABILITY, NOOP, ID and unknown commands', async () => {
    const { client } = await start();
    expect(await client.line()).toBe(`* OK [CAPABILITY ${CAPABILITIES.join(' ')}] sasl-gate ready.`);
    client.send('a CAPABILITY\r\nb NOOP\r\nc ID ("name" "test")\r\nd SELECT INBOX\r\ne FROB\r\nf CAPABILITY x\r\ng ID\r\nh STARTTLS\r\n');
    expect(await client.lines(10)).toEqual([
      `* CAPABILITY ${CAPABILITIES.join(' ')}`,
      'a OK Capability completed.',
      'b OK NOOP completed.',
      '* ID ("name" "sasl-gate")',
      'c OK ID completed.',
      'd BAD SELECT needs a login first.',
      'e BAD Unknown command.',
      'f BAD CAPABILITY takes no arguments.',
      'g BAD ID expects a parenthesized list or NIL.',
      'h BAD TLS is already active.',
    ]);
  });

  it('answers a syntax error and an over-long line with BAD and goes on', async () => {
    const { client } = await start({ limits: { maxLineLength: 100 } });
    await client.line();
    client.send(`a LOGIN "unterminated\r\nb ${'x'.repeat(200)}\r\nc NOOP\r\n`);
    const [syntax, tooLong, noop] = await client.lines(3);
    expect(syntax).toMatch(/^a BAD Syntax error: .+\.$/);
    expect(tooLong).toBe('b BAD [TOOBIG] Command line too long.');
    expect(noop).toBe('c OK NOOP completed.');
  });

  it('LOGOUT says goodbye and closes', async () => {
    const { client, running } = await start();
    await client.line();
    client.send('a LOGOUT\r\n');
    expect(await client.lines(2)).toEqual(['* BYE Logging out.', 'a OK Logout completed.']);
    await client.closed();
    await running;
  });

  it('closes after too many commands before login', async () => {
    const { client } = await start({ limits: { maxPreAuthCommands: 2 } });
    await client.line();
    client.send('a NOOP\r\nb NOOP\r\nc NOOP\r\n');
    expect(await client.lines(3)).toEqual(['a OK NOOP completed.', 'b OK NOOP completed.', '* BYE Too many commands before login.']);
    await client.closed();
  });
});

describe('IMAP dialect: STARTTLS rules', () => {
  it('before TLS: no mechanisms, LOGINDISABLED, logins refused with PRIVACYREQUIRED', async () => {
    const { client, backend } = await start({ starttls: true });
    expect(await client.line()).toBe('* OK [CAPABILITY IMAP4rev1 ID STARTTLS LOGINDISABLED] sasl-gate ready.');
    client.send(`a LOGIN bob bob-pw\r\nb AUTHENTICATE XOAUTH2 ${xoauth2('alice@example.test', 'alice-token')}\r\nc STARTTLS now\r\n`);
    expect(await client.lines(3)).toEqual([
      'a NO [PRIVACYREQUIRED] Logins are disabled until STARTTLS.',
      'b NO [PRIVACYREQUIRED] Authentication is disabled until STARTTLS.',
      'c BAD STARTTLS takes no arguments.',
    ]);
    expect(backend.received).toEqual([]);
  });

  it('commands injected after STARTTLS, before the handshake, are discarded, never run inside TLS', async () => {
    const { client, backend } = await start({ starttls: true });
    await client.line();
    client.send(`a STARTTLS\r\nb AUTHENTICATE XOAUTH2 ${xoauth2('alice@example.test', 'alice-token')}\r\n`);
    expect(await client.line()).toBe('a OK Begin TLS negotiation now.');
    await client.startTls();
    client.send('c CAPABILITY\r\nd STARTTLS\r\n');
    expect(await client.lines(3)).toEqual([`* CAPABILITY ${CAPABILITIES.join(' ')}`, 'c OK Capability completed.', 'd BAD TLS is already active.']);
    expect(backend.received).toEqual([]);
  });
});

describe('IMAP dialect: logins and their replies', () => {
  it('a token login reaches the backend as the master user acting for the token’s user, then the relay runs', async () => {
    const { client, backend } = await start();
    await client.line();
    client.send(`a AUTHENTICATE XOAUTH2 ${xoauth2('alice@example.test', 'alice-token')}\r\n`);
    expect(await client.line()).toBe('a OK [CAPABILITY IMAP4rev1 IDLE] Logged in');
    const login = backend.received.find((l) => l.includes('AUTHENTICATE'))!;
    expect(Buffer.from(login.split(' ')[3]!, 'base64').toString()).toBe(`alice@example.test\0${MASTER.user}\0${MASTER.password}`);
    client.send('b NOOP\r\n');
    expect(await client.line()).toBe('b OK NOOP answered by the backend.');
  });

  it('once the relay runs, the pre-login session can be collected: only the sockets and the relay stay', async () => {
    const backend = dovecot();
    const { server, client: socket } = await socketPair();
    cleanups.push(() => {
      socket.destroy();
      backend.close();
    });
    // Made in a scope of its own, so the test keeps nothing of the session but a weak reference.
    const open = () => {
      const session = new ImapSession(server, {
        ...sessionOptions(),
        capabilities: { current: () => CAPABILITIES },
        connectBackend: backend.connect,
        backendResponseTimeoutMs: 2000,
        clock: new ManualClock(),
      });
      void session.run();
      return sessionRefs(session);
    };
    const refs = open();
    const client = new TestClient(socket);
    await client.line();
    client.send(`a AUTHENTICATE XOAUTH2 ${xoauth2('alice@example.test', 'alice-token')}\r\n`);
    expect(await client.line()).toBe('a OK [CAPABILITY IMAP4rev1 IDLE] Logged in');
    expect(await aliveAfterGc(refs)).toBe(0);
    client.send('b NOOP\r\n');
    expect(await client.line()).toBe('b OK NOOP answered by the backend.');
  });

  it('a rejected token gets the error challenge, then NO after the dummy reply', async () => {
    const { client, backend } = await start();
    await client.line();
    client.send(`a AUTHENTICATE XOAUTH2 ${xoauth2('alice@example.test', 'stale')}\r\n`);
    const challenge = await client.line();
    expect(JSON.parse(Buffer.from(challenge.slice(2), 'base64').toString())).toMatchObject({ status: '401' });
    client.send('\r\nb NOOP\r\n');
    expect(await client.lines(2)).toEqual(['a NO [AUTHENTICATIONFAILED] Authentication failed.', 'b OK NOOP completed.']);
    expect(backend.received).toEqual([]);
  });

  it('a client that never answers the error challenge gets the NO once the wait has run out', async () => {
    const { client, clock } = await start();
    await client.line();
    client.send(`a AUTHENTICATE OAUTHBEARER ${b64('n,,\x01auth=Bearer stale\x01\x01')}\r\n`);
    expect(await client.line()).toMatch(/^\+ [A-Za-z0-9+/]+=*$/);
    expect(clock.waiting).toBe(1);
    clock.elapse();
    expect(await client.line()).toBe('a NO [AUTHENTICATIONFAILED] Authentication failed.');
    client.send('b NOOP\r\n');
    expect(await client.line()).toBe('b OK NOOP completed.');
  });

  it('a provider outage: NO [UNAVAILABLE], the connection stays usable', async () => {
    const { client } = await start();
    await client.line();
    client.send(`a AUTHENTICATE XOAUTH2 ${xoauth2('alice@example.test', 'outage')}\r\nb NOOP\r\n`);
    expect(await client.lines(2)).toEqual([
      'a NO [UNAVAILABLE] Authentication service temporarily unavailable, try again later.',
      'b OK NOOP completed.',
    ]);
  });

  it('SASL continuation, cancel, bad base64, unsupported mechanism', async () => {
    const { client } = await start();
    await client.line();
    client.send('a AUTHENTICATE PLAIN\r\n');
    expect(await client.line()).toBe('+ ');
    client.send('*\r\nb AUTHENTICATE PLAIN !!!\r\nc AUTHENTICATE CRAM-MD5\r\n');
    expect(await client.lines(3)).toEqual([
      'a BAD Authentication cancelled.',
      'b BAD Invalid base64 in authentication response.',
      'c NO Unsupported authentication mechanism.',
    ]);
  });

  it('a password the backend refuses: its own words; the LOGIN command then works on the same connection', async () => {
    const { client } = await start();
    await client.line();
    client.send(`a AUTHENTICATE PLAIN ${b64('\0bob\0wrong')}\r\n`);
    expect(await client.line()).toBe('a NO [AUTHENTICATIONFAILED] Authentication failed.');
    client.send('b LOGIN bob bob-pw\r\n');
    expect(await client.line()).toBe('b OK [CAPABILITY IMAP4rev1 IDLE] Logged in');
  });

  it('password logins naming the master user are refused by sasl-gate, never sent to the backend', async () => {
    const { client, backend } = await start();
    await client.line();
    client.send(`a LOGIN ${MASTER.user} guess\r\nb AUTHENTICATE PLAIN ${b64(`alice\0${MASTER.user}\0guess`)}\r\n`);
    expect(await client.lines(2)).toEqual(['a NO [AUTHENTICATIONFAILED] Authentication failed.', 'b NO [AUTHENTICATIONFAILED] Authentication failed.']);
    expect(backend.received).toEqual([]);
  });

  it('too many failures: the last NO, then BYE and the close', async () => {
    const { client, running } = await start({ limits: { maxAuthFailures: 2 } });
    await client.line();
    client.send(`a AUTHENTICATE PLAIN ${b64('\0bob\0wrong')}\r\nb AUTHENTICATE PLAIN ${b64('\0bob\0wrong')}\r\n`);
    expect(await client.lines(3)).toEqual([
      'a NO [AUTHENTICATIONFAILED] Authentication failed.',
      'b NO [AUTHENTICATIONFAILED] Authentication failed.',
      '* BYE Too many authentication failures.',
    ]);
    await client.closed();
    await running;
  });
});

import type { SecureContext } from 'node:tls';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { advertisedCapabilities } from '../../../src/pop3/capabilities.js';
import { Pop3Session, type Pop3SessionContext } from '../../../src/pop3/session.js';
import { aliveAfterGc, ManualClock, MASTER, scriptedBackend, sessionRefs, sessionOptions, socketPair, TestClient, testCertificate } from '../login/flow-harness.js';

const BACKEND_CAPA = ['CAPA', 'TOP', 'UIDL', 'RESP-CODES', 'PIPELINING', 'AUTH-RESP-CODE', 'USER', 'SASL PLAIN LOGIN'];
const CAPABILITIES = advertisedCapabilities(BACKEND_CAPA);
const b64 = (text: string) => Buffer.from(text, 'utf8').toString('base64');
const xoauth2 = (user: string, token: string) => b64(`user=${user}\x01auth=Bearer ${token}\x01\x01`);

/** A Dovecot POP3 stand-in: XCLIENT, AUTH PLAIN / LOGIN, USER / PASS; bob's password is `bob pw` (with a space); STAT after login. */
function dovecot(greeting = '+OK [XCLIENT] Dovecot ready.') {
  let loginUser = '';
  let loginStep = 0;
  return scriptedBackend(greeting, (line, reply) => {
    const [command, ...args] = line.split(' ');
    const bob = (user: string, password: string) => user === 'bob' && password === 'bob pw';
    if (loginStep === 1) {
      loginUser = Buffer.from(line, 'base64').toString();
      loginStep = 2;
      reply('+ UGFzc3dvcmQ6');
    } else if (loginStep === 2) {
      loginStep = 0;
      reply(bob(loginUser, Buffer.from(line, 'base64').toString()) ? '+OK Logged in.' : '-ERR [AUTH] Authentication failed.');
    } else if (command === 'XCLIENT') {
      reply('+OK Updated');
    } else if (command === 'AUTH' && args[0] === 'PLAIN') {
      const [authzid, authcid, password] = Buffer.from(args[1] ?? '', 'base64').toString().split('\0');
      const master = authcid === MASTER.user && password === MASTER.password && authzid !== '';
      reply(master || (authzid === '' && bob(authcid!, password!)) ? '+OK Logged in.' : '-ERR [AUTH] Authentication failed.');
    } else if (command === 'AUTH' && args[0] === 'LOGIN') {
      loginStep = 1;
      reply('+ VXNlcm5hbWU6');
    } else if (command === 'USER') {
      loginUser = args.join(' ');
      reply('+OK');
    } else if (command === 'PASS') {
      reply(bob(loginUser, args.join(' ')) ? '+OK Logged in.' : '-ERR [AUTH] Authentication failed.');
    } else if (command === 'STAT') {
      reply('+OK 2 320');
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

async function start(options: { starttls?: boolean; limits?: Partial<Pop3SessionContext['limits']>; greeting?: string; xclient?: boolean } = {}) {
  const clock = new ManualClock();
  const backend = dovecot(options.greeting);
  const { server, client } = await socketPair();
  const ctx: Pop3SessionContext = {
    ...sessionOptions({ ...(options.limits ? { limits: options.limits } : {}), starttls: options.starttls ? () => certificate.context : undefined }),
    capabilities: { current: () => CAPABILITIES },
    connectBackend: backend.connect,
    backendResponseTimeoutMs: 2000,
    xclient: options.xclient ?? true,
    clock,
  };
  const session = new Pop3Session(server, ctx);
  const running = session.run();
  const test = new TestClient(client);
  cleanups.push(() => {
    test.socket.destroy();
    backend.close();
  });
  return { session, running, client: test, backend, ctx, clock };
}

describe('POP3 capabilities', () => {
  it("mirrors Dovecot's CAPA, without its SASL line and XCLIENT, plus the token mechanisms", () => {
    expect(advertisedCapabilities([...BACKEND_CAPA, 'XCLIENT', 'STLS', 'IMPLEMENTATION Dovecot'])).toEqual([
      'CAPA', 'TOP', 'UIDL', 'RESP-CODES', 'PIPELINING', 'AUTH-RESP-CODE', 'IMPLEMENTATION Dovecot', 'USER', 'SASL XOAUTH2 OAUTHBEARER PLAIN LOGIN',
    ]);
    // A backend without USER or LOGIN: neither is offered; the response codes sasl-gate uses always are.
    expect(advertisedCapabilities(['TOP', 'SASL PLAIN'])).toEqual(['TOP', 'CAPA', 'RESP-CODES', 'AUTH-RESP-CODE', 'SASL XOAUTH2 OAUTHBEARER PLAIN']);
  });
});

describe('POP3 dialect: pre-login commands on an implicit-TLS listener', () => {
  it('greets, lists CAPA, lists AUTH mechanisms, refuses the rest with -ERR', async () => {
    const { client } = await start();
    expect(await client.line()).toBe('+OK sasl-gate ready.');
    client.send('CAPA\r\nAUTH\r\nSTAT\r\nFROB\r\nSTLS\r\nAPOP bob abc\r\nPASS x\r\nCAPA x\r\n\r\n');
    expect(await client.lines(CAPABILITIES.length + 2)).toEqual(['+OK Capability list follows', ...CAPABILITIES, '.']);
    expect(await client.lines(6)).toEqual(['+OK Mechanisms follow', 'XOAUTH2', 'OAUTHBEARER', 'PLAIN', 'LOGIN', '.']);
    expect(await client.lines(7)).toEqual([
      '-ERR STAT needs a login first.',
      '-ERR Unknown command.',
      '-ERR TLS is already active.',
      '-ERR APOP is not supported.',
      '-ERR No user name given, send USER first.',
      '-ERR CAPA takes no arguments.',
      '-ERR Unknown command.',
    ]);
  });

  it('an over-long line gets -ERR and the session goes on', async () => {
    const { client } = await start({ limits: { maxLineLength: 1024 } });
    await client.line();
    client.send(`AUTH XOAUTH2 ${'x'.repeat(3000)}\r\nQUIT\r\n`);
    expect(await client.lines(2)).toEqual(['-ERR Command line too long.', '+OK Logging out.']);
    await client.closed();
  });

  it('QUIT says goodbye and closes; too many commands close too', async () => {
    const { client, running } = await start({ limits: { maxPreAuthCommands: 2 } });
    await client.line();
    client.send('CAPA x\r\nCAPA x\r\nCAPA x\r\n');
    expect(await client.lines(3)).toEqual(['-ERR CAPA takes no arguments.', '-ERR CAPA takes no arguments.', '-ERR Too many commands before login.']);
    await client.closed();
    await running;
  });
});

describe('POP3 dialect: STLS rules', () => {
  it('before TLS: STLS offered, no SASL or USER, logins refused without reaching the backend', async () => {
    const { client, backend } = await start({ starttls: true });
    await client.line();
    client.send(`CAPA\r\nUSER bob\r\nPASS bob pw\r\nAUTH XOAUTH2 ${xoauth2('alice@example.test', 'alice-token')}\r\nSTLS now\r\n`);
    // The list before TLS: one line fewer (STLS in, SASL and USER out) plus the status line and the dot.
    const capa = await client.lines(CAPABILITIES.length + 1);
    expect(capa.at(-1)).toBe('.');
    expect(capa).toContain('STLS');
    expect(capa.some((l) => l.startsWith('SASL') || l === 'USER')).toBe(false);
    expect(await client.lines(4)).toEqual([
      '-ERR [AUTH] Plaintext authentication disallowed on non-secure (SSL/TLS) connections, use STLS first.',
      '-ERR [AUTH] Plaintext authentication disallowed on non-secure (SSL/TLS) connections, use STLS first.',
      '-ERR [AUTH] Authentication is disabled until STLS.',
      '-ERR STLS takes no arguments.',
    ]);
    expect(backend.received).toEqual([]);
  });

  it('commands injected after STLS, before the handshake, are discarded, never run inside TLS', async () => {
    const { client, backend } = await start({ starttls: true });
    await client.line();
    client.send(`STLS\r\nAUTH XOAUTH2 ${xoauth2('alice@example.test', 'alice-token')}\r\nUSER bob\r\n`);
    expect(await client.line()).toBe('+OK Begin TLS negotiation now.');
    await client.startTls();
    client.send('PASS bob pw\r\nSTLS\r\n');
    expect(await client.lines(2)).toEqual(['-ERR No user name given, send USER first.', '-ERR TLS is already active.']);
    expect(backend.received).toEqual([]);
  });
});

describe('POP3 dialect: logins and their replies', () => {
  it('a token login: XCLIENT with the client address, then AUTH PLAIN as the master user for the token’s user; then the relay', async () => {
    const { client, backend } = await start();
    await client.line();
    client.send(`AUTH XOAUTH2 ${xoauth2('alice@example.test', 'alice-token')}\r\nSTAT\r\n`);
    expect(await client.lines(2)).toEqual(['+OK Logged in.', '+OK 2 320']);
    expect(backend.received[0]).toMatch(/^XCLIENT ADDR=(127\.0\.0\.1|::1|::ffff:127\.0\.0\.1) PORT=\d+$/);
    expect(backend.received[1]).toBe(`AUTH PLAIN ${b64(`alice@example.test\0${MASTER.user}\0${MASTER.password}`)}`);
    expect(backend.received[2]).toBe('STAT');
  });

  it('no XCLIENT when the backend does not offer it, or when a PROXY header names the client', async () => {
    for (const options of [{ greeting: '+OK Dovecot ready.' }, { xclient: false }]) {
      const { client, backend } = await start(options);
      await client.line();
      client.send(`AUTH XOAUTH2 ${xoauth2('alice@example.test', 'alice-token')}\r\n`);
      expect(await client.line()).toBe('+OK Logged in.');
      expect(backend.received.some((l) => l.startsWith('XCLIENT'))).toBe(false);
    }
  });

  it('AUTH with continuation: the empty challenge, then the token; a rejected token gets the error challenge, then -ERR [AUTH]', async () => {
    const { client, backend } = await start();
    await client.line();
    client.send('AUTH XOAUTH2\r\n');
    expect(await client.line()).toBe('+ ');
    client.send(`${xoauth2('alice@example.test', 'stale')}\r\n`);
    const challenge = await client.line();
    expect(JSON.parse(Buffer.from(challenge.slice(2), 'base64').toString())).toMatchObject({ status: '401' });
    client.send('\r\nCAPA x\r\n');
    expect(await client.lines(2)).toEqual(['-ERR [AUTH] Authentication failed.', '-ERR CAPA takes no arguments.']);
    expect(backend.received).toEqual([]);
  });

  it('an error challenge answered with a command: the command is the dummy reply, never run', async () => {
    const { client, backend } = await start();
    await client.line();
    client.send(`AUTH XOAUTH2 ${xoauth2('alice@example.test', 'stale')}\r\n`);
    expect(await client.line()).toMatch(/^\+ /);
    client.send('USER bob\r\nPASS bob pw\r\n');
    expect(await client.lines(2)).toEqual(['-ERR [AUTH] Authentication failed.', '-ERR No user name given, send USER first.']);
    expect(backend.received).toEqual([]);
  });

  it('OAUTHBEARER refused: RFC 7628 challenge; a silent client gets -ERR once the wait runs out', async () => {
    const { client, clock } = await start();
    await client.line();
    client.send(`AUTH OAUTHBEARER ${b64('n,,\x01auth=Bearer stale\x01\x01')}\r\n`);
    const challenge = await client.line();
    expect(JSON.parse(Buffer.from(challenge.slice(2), 'base64').toString())).toMatchObject({ status: 'invalid_token' });
    expect(clock.waiting).toBe(1);
    clock.elapse();
    expect(await client.line()).toBe('-ERR [AUTH] Authentication failed.');
  });

  it('a provider outage is -ERR [SYS/TEMP]; cancel, bad base64 and unknown mechanisms get -ERR; the connection stays', async () => {
    const { client } = await start();
    await client.line();
    client.send(`AUTH XOAUTH2 ${xoauth2('alice@example.test', 'outage')}\r\nAUTH PLAIN\r\n`);
    expect(await client.lines(2)).toEqual(['-ERR [SYS/TEMP] Authentication service temporarily unavailable, try again later.', '+ ']);
    client.send('*\r\nAUTH PLAIN !!!\r\nAUTH CRAM-MD5\r\nAUTH PLAIN a b c\r\n');
    expect(await client.lines(4)).toEqual([
      '-ERR Authentication cancelled.',
      '-ERR Invalid base64 in authentication response.',
      '-ERR Unsupported authentication mechanism.',
      '-ERR AUTH expects a mechanism and an optional initial response.',
    ]);
  });

  it('USER / PASS pass through (a password with a space); a refused one gets Dovecot’s words and USER again', async () => {
    const { client, backend } = await start();
    await client.line();
    client.send('USER bob\r\nPASS wrong\r\nPASS bob pw\r\nUSER bob\r\nPASS bob pw\r\nSTAT\r\n');
    expect(await client.lines(6)).toEqual([
      '+OK Send your password.',
      '-ERR [AUTH] Authentication failed.',
      '-ERR No user name given, send USER first.',
      '+OK Send your password.',
      '+OK Logged in.',
      '+OK 2 320',
    ]);
    expect(backend.received.filter((l) => !l.startsWith('XCLIENT') && l !== 'QUIT')).toEqual(['USER bob', 'PASS wrong', 'USER bob', 'PASS bob pw', 'STAT']);
  });

  it('AUTH PLAIN and AUTH LOGIN pass through', async () => {
    for (const send of [`AUTH PLAIN ${b64('\0bob\0bob pw')}\r\n`, `AUTH LOGIN ${b64('bob')}\r\n${b64('bob pw')}\r\n`]) {
      const { client } = await start();
      await client.line();
      client.send(send);
      const lines = await client.line();
      const last = lines.startsWith('+ ') ? await client.line() : lines;
      expect(last).toBe('+OK Logged in.');
    }
  });

  it('password logins naming the master user, its separator or another user are refused by sasl-gate, never sent to the backend', async () => {
    const { client, backend } = await start();
    await client.line();
    client.send(
      [
        `USER ${MASTER.user}`,
        'PASS guess',
        `USER alice@example.test*${MASTER.user}`,
        'PASS guess',
        `AUTH PLAIN ${b64(`alice\0${MASTER.user}\0guess`)}`,
        `AUTH PLAIN ${b64(`alice\0bob\0bob pw`)}`,
        `USER bob\x00x`,
        '',
      ].join('\r\n'),
    );
    expect(await client.lines(7)).toEqual([
      '+OK Send your password.',
      '-ERR [AUTH] Authentication failed.',
      '+OK Send your password.',
      '-ERR [AUTH] Authentication failed.',
      '-ERR [AUTH] Authentication failed.',
      '-ERR [AUTH] Authentication failed.',
      '-ERR USER expects a user name.',
    ]);
    expect(backend.received).toEqual([]);
  });

  it('too many failures: the last -ERR, then the farewell and the close', async () => {
    const { client, running } = await start({ limits: { maxAuthFailures: 2 } });
    await client.line();
    client.send(`AUTH PLAIN ${b64('\0bob\0wrong')}\r\nAUTH PLAIN ${b64('\0bob\0wrong')}\r\n`);
    expect(await client.lines(3)).toEqual([
      '-ERR [AUTH] Authentication failed.',
      '-ERR [AUTH] Authentication failed.',
      '-ERR [AUTH] Too many authentication failures.',
    ]);
    await client.closed();
    await running;
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
      const session = new Pop3Session(server, {
        ...sessionOptions(),
        capabilities: { current: () => CAPABILITIES },
        connectBackend: backend.connect,
        backendResponseTimeoutMs: 2000,
        xclient: true,
        clock: new ManualClock(),
      });
      void session.run();
      return sessionRefs(session);
    };
    const refs = open();
    const client = new TestClient(socket);
    await client.line();
    client.send(`AUTH XOAUTH2 ${xoauth2('alice@example.test', 'alice-token')}\r\n`);
    expect(await client.line()).toBe('+OK Logged in.');
    expect(await aliveAfterGc(refs)).toBe(0);
    client.send('STAT\r\n');
    expect(await client.line()).toBe('+OK 2 320');
  });

  it('shutdown before login says so and closes', async () => {
    const { client, session, running } = await start();
    await client.line();
    session.shutdown();
    expect(await client.line()).toBe('-ERR [SYS/TEMP] Server shutting down.');
    await client.closed();
    await running;
  });
});

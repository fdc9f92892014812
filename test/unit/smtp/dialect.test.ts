import type { SecureContext } from 'node:tls';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { SmtpSession, type SmtpSessionContext } from '../../../src/smtp/session.js';
import { aliveAfterGc, ManualClock, MASTER, scriptedBackend, sessionOptions, sessionRefs, socketPair, TestClient, testCertificate } from '../login/flow-harness.js';

const EXTENSIONS = ['PIPELINING', 'ENHANCEDSTATUSCODES', '8BITMIME', 'AUTH XOAUTH2 OAUTHBEARER PLAIN LOGIN'];
const HOST = 'gate.example.test';
const b64 = (text: string) => Buffer.from(text, 'utf8').toString('base64');
const xoauth2 = (user: string, token: string) => b64(`user=${user}\x01auth=Bearer ${token}\x01\x01`);

/** A Postfix stand-in: EHLO, AUTH PLAIN (the master user for anyone, bob with `bob-pw`), NOOP after login. */
function postfix() {
  return scriptedBackend('220 postfix.example.test ESMTP', (line, reply) => {
    const [verb, ...args] = line.split(' ');
    if (verb === 'EHLO') {
      reply('250-postfix.example.test');
      reply('250-PIPELINING');
      reply('250-XCLIENT NAME ADDR PORT PROTO HELO LOGIN');
      reply('250 AUTH PLAIN LOGIN');
    } else if (verb === 'XCLIENT') {
      reply('220 postfix.example.test ESMTP');
    } else if (verb === 'AUTH') {
      const [authzid, authcid, password] = Buffer.from(args[1] ?? '', 'base64').toString().split('\0');
      const master = authcid === MASTER.user && password === MASTER.password && authzid !== '';
      const bob = authcid === 'bob' && password === 'bob-pw';
      reply(master || bob ? '235 2.7.0 Authentication successful' : '535 5.7.8 Error: authentication failed: authentication failure');
    } else if (verb === 'NOOP') {
      reply('250 2.0.0 Ok from the backend');
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

async function start(options: { starttls?: boolean; login?: 'xclient' | 'master'; limits?: Partial<SmtpSessionContext['limits']> } = {}) {
  const clock = new ManualClock();
  const backend = postfix();
  const { server, client } = await socketPair();
  const ctx: SmtpSessionContext = {
    ...sessionOptions({ ...(options.limits ? { limits: options.limits } : {}), starttls: options.starttls ? () => certificate.context : undefined }),
    hostname: HOST,
    login: options.login ?? 'master',
    extensions: { current: () => EXTENSIONS },
    connectBackend: backend.connect,
    backendResponseTimeoutMs: 2000,
    clock,
  };
  const running = new SmtpSession(server, ctx).run();
  const test = new TestClient(client);
  cleanups.push(() => {
    test.socket.destroy();
    backend.close();
  });
  return { running, client: test, backend, clock };
}

const EHLO_REPLY = [`250-${HOST}`, '250-PIPELINING', '250-ENHANCEDSTATUSCODES', '250-8BITMIME', '250 AUTH XOAUTH2 OAUTHBEARER PLAIN LOGIN'];

describe('SMTP dialect: pre-login commands on an implicit-TLS listener', () => {
  it('greets, and answers EHLO, HELO, NOOP, RSET, HELP, mail commands and unknown ones', async () => {
    const { client } = await start();
    expect(await client.line()).toBe(`220 ${HOST} ESMTP ready`);
    client.send('EHLO client.example\r\nHELO client.example\r\nNOOP\r\nRSET\r\nHELP\r\nMAIL FROM:<a@b>\r\nFROB\r\nEHLO\r\n!!\r\nSTARTTLS\r\n');
    expect(await client.lines(14)).toEqual([
      ...EHLO_REPLY,
      `250 ${HOST}`,
      '250 2.0.0 OK',
      '250 2.0.0 OK',
      '214 2.0.0 See RFC 5321 and RFC 4954',
      '530 5.7.0 Authentication required',
      '502 5.5.2 Error: command not recognized',
      '501 5.5.4 Syntax: EHLO hostname',
      '500 5.5.2 Error: command not recognized',
      '503 5.5.1 Error: TLS already active',
    ]);
  });

  it('AUTH needs EHLO first; QUIT says goodbye and closes', async () => {
    const { client, running } = await start();
    await client.line();
    client.send(`AUTH XOAUTH2 ${xoauth2('alice@example.test', 'alice-token')}\r\nQUIT\r\n`);
    expect(await client.lines(2)).toEqual(['503 5.5.1 Error: send EHLO first', '221 2.0.0 Bye']);
    await client.closed();
    await running;
  });

  it('BDAT’s chunk is data, never commands', async () => {
    const { client } = await start();
    await client.line();
    client.send('BDAT 6 LAST\r\nQUIT\r\nNOOP\r\n');
    expect(await client.lines(2)).toEqual(['530 5.7.0 Authentication required', '250 2.0.0 OK']);
  });
});

describe('SMTP dialect: STARTTLS rules', () => {
  it('before TLS: STARTTLS offered, AUTH neither offered nor accepted', async () => {
    const { client, backend } = await start({ starttls: true });
    await client.line();
    client.send(`EHLO c\r\nAUTH XOAUTH2 ${xoauth2('alice@example.test', 'alice-token')}\r\nMAIL FROM:<a@b>\r\nSTARTTLS now\r\n`);
    expect(await client.lines(8)).toEqual([
      `250-${HOST}`,
      '250-PIPELINING',
      '250-ENHANCEDSTATUSCODES',
      '250-8BITMIME',
      '250 STARTTLS',
      '530 5.7.0 Must issue a STARTTLS command first',
      '530 5.7.0 Must issue a STARTTLS command first',
      '501 5.5.4 Syntax: STARTTLS',
    ]);
    expect(backend.received).toEqual([]);
  });

  it('commands injected before the handshake are discarded; after TLS the client starts over with EHLO', async () => {
    const { client, backend } = await start({ starttls: true });
    await client.line();
    client.send(`EHLO c\r\n`);
    await client.lines(5);
    client.send(`STARTTLS\r\nAUTH XOAUTH2 ${xoauth2('alice@example.test', 'alice-token')}\r\n`);
    expect(await client.line()).toBe('220 2.0.0 Ready to start TLS');
    await client.startTls();
    client.send(`AUTH PLAIN ${b64('\0bob\0bob-pw')}\r\nEHLO c\r\nSTARTTLS\r\n`);
    expect(await client.lines(7)).toEqual(['503 5.5.1 Error: send EHLO first', ...EHLO_REPLY, '503 5.5.1 Error: TLS already active']);
    expect(backend.received).toEqual([]);
  });
});

describe('SMTP dialect: AUTH and its replies', () => {
  it('a token login reaches Postfix as the master user acting for the token’s user, then the relay runs', async () => {
    const { client, backend } = await start();
    await client.line();
    client.send('EHLO c\r\n');
    await client.lines(5);
    client.send(`AUTH XOAUTH2 ${xoauth2('alice@example.test', 'alice-token')}\r\n`);
    expect(await client.line()).toBe('235 2.7.0 Authentication successful');
    const auth = backend.received.find((l) => l.startsWith('AUTH PLAIN'))!;
    expect(Buffer.from(auth.split(' ')[2]!, 'base64').toString()).toBe(`alice@example.test\0${MASTER.user}\0${MASTER.password}`);
    client.send('NOOP\r\n');
    expect(await client.line()).toBe('250 2.0.0 Ok from the backend');
  });

  it('once the command relay runs, the pre-login session can be collected', async () => {
    const backend = postfix();
    const { server, client: socket } = await socketPair();
    cleanups.push(() => {
      socket.destroy();
      backend.close();
    });
    // Made in a scope of its own, so the test keeps nothing of the session but weak references.
    const open = () => {
      const session = new SmtpSession(server, {
        ...sessionOptions(),
        hostname: HOST,
        login: 'master',
        extensions: { current: () => EXTENSIONS },
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
    client.send(`EHLO c\r\nAUTH XOAUTH2 ${xoauth2('alice@example.test', 'alice-token')}\r\n`);
    expect((await client.lines(6)).at(-1)).toBe('235 2.7.0 Authentication successful');
    expect(await aliveAfterGc(refs)).toBe(0);
    client.send('NOOP\r\n');
    expect(await client.line()).toBe('250 2.0.0 Ok from the backend');
  });

  it('login: xclient hands Postfix the token’s identity as XCLIENT LOGIN, and nothing the client named otherwise', async () => {
    const { client, backend } = await start({ login: 'xclient' });
    await client.line();
    client.send(`EHLO c\r\nAUTH XOAUTH2 ${xoauth2('mallory@example.test', 'alice-token')}\r\n`);
    await client.lines(5);
    expect(JSON.parse(Buffer.from((await client.line()).slice(4), 'base64').toString())).toMatchObject({ status: '401' });
    client.send('\r\n');
    expect(await client.line()).toBe('535 5.7.8 Authentication credentials invalid');
    expect(backend.received).toEqual([]);
    // The client's spelling of the right name: the token's own spelling is what Postfix gets.
    client.send(`AUTH XOAUTH2 ${xoauth2('ALICE@Example.test', 'alice-token')}\r\n`);
    expect(await client.line()).toBe('235 2.7.0 Authentication successful');
    const xclient = backend.received.find((l) => l.startsWith('XCLIENT'))!;
    expect(xclient).toContain(' LOGIN=alice@example.test');
    expect(xclient).not.toMatch(/ALICE@Example|mallory/);
    expect(xclient).toContain('HELO=c');
    expect(backend.received.some((l) => l.startsWith('AUTH'))).toBe(false);
  });

  it('a rejected token: the 334 error challenge, then 535 after the dummy reply', async () => {
    const { client, backend } = await start();
    await client.line();
    client.send(`EHLO c\r\nAUTH OAUTHBEARER ${b64('n,,\x01auth=Bearer stale\x01\x01')}\r\n`);
    await client.lines(5);
    const challenge = await client.line();
    expect(challenge).toMatch(/^334 /);
    expect(JSON.parse(Buffer.from(challenge.slice(4), 'base64').toString())).toMatchObject({ status: 'invalid_token' });
    client.send('AQ==\r\n');
    expect(await client.line()).toBe('535 5.7.8 Authentication credentials invalid');
    expect(backend.received).toEqual([]);
  });

  it('continuation, cancel, bad base64, unsupported mechanism, provider outage', async () => {
    const { client } = await start();
    await client.line();
    client.send('EHLO c\r\nAUTH PLAIN\r\n');
    await client.lines(5);
    expect(await client.line()).toBe('334 ');
    client.send(`*\r\nAUTH PLAIN !!!\r\nAUTH CRAM-MD5\r\nAUTH XOAUTH2 ${xoauth2('alice@example.test', 'outage')}\r\n`);
    expect(await client.lines(4)).toEqual([
      '501 5.7.0 Authentication cancelled',
      '501 5.5.2 Cannot decode response',
      '504 5.5.4 Unrecognized authentication type',
      '454 4.7.0 Temporary authentication failure, try again later',
    ]);
  });

  it('a password Postfix refuses gets Postfix’s words; the master user is refused before Postfix; too many failures close', async () => {
    const { client, backend, running } = await start({ limits: { maxAuthFailures: 2 } });
    await client.line();
    client.send(`EHLO c\r\nAUTH PLAIN ${b64('\0bob\0wrong')}\r\nAUTH PLAIN ${b64(`\0${MASTER.user}\0guess`)}\r\n`);
    await client.lines(5);
    expect(await client.lines(3)).toEqual([
      '535 5.7.8 Error: authentication failed: authentication failure',
      '535 5.7.8 Authentication credentials invalid',
      '421 4.7.0 Too many authentication failures, closing connection',
    ]);
    expect(backend.received.filter((l) => l.startsWith('AUTH'))).toHaveLength(1);
    await client.closed();
    await running;
  });
});

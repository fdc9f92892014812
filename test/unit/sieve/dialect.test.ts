import type { SecureContext } from 'node:tls';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { advertisedCapabilities } from '../../../src/sieve/capabilities.js';
import { SieveSession, type SieveSessionContext } from '../../../src/sieve/session.js';
import { aliveAfterGc, ManualClock, MASTER, scriptedBackend, sessionOptions, sessionRefs, socketPair, TestClient, testCertificate } from '../login/flow-harness.js';

/** Dovecot 2.3 managesieve's capability block (Pigeonhole 0.5), as it greets. */
const DOVECOT_CAPABILITIES = [
  '"IMPLEMENTATION" "Dovecot Pigeonhole"',
  '"SIEVE" "fileinto reject envelope vacation imap4flags"',
  '"NOTIFY" "mailto"',
  '"SASL" "PLAIN LOGIN"',
  '"STARTTLS"',
  '"VERSION" "1.0"',
  '"XCLIENT"',
];
const ADVERTISED = advertisedCapabilities(DOVECOT_CAPABILITIES);
const b64 = (text: string) => Buffer.from(text, 'utf8').toString('base64');
const xoauth2 = (user: string, token: string) => b64(`user=${user}\x01auth=Bearer ${token}\x01\x01`);
const unquote = (line: string) => JSON.parse(line) as string;

/** A Dovecot managesieve stand-in: AUTHENTICATE "PLAIN" or "LOGIN"; bob's password is `bob-pw`; NOOP after login. */
function dovecot() {
  let login: string[] | undefined;
  const verdict = (authzid: string, authcid: string, password: string) => {
    const master = authcid === MASTER.user && password === MASTER.password && authzid !== '';
    const bob = authcid === 'bob' && password === 'bob-pw' && (authzid === '' || authzid === 'bob');
    return master || bob ? 'OK "Logged in."' : 'NO "Authentication failed."';
  };
  return scriptedBackend([...DOVECOT_CAPABILITIES, 'OK "Dovecot ready."'].join('\r\n'), (line, reply) => {
    if (login) {
      login.push(Buffer.from(unquote(line), 'base64').toString());
      if (login.length === 1) reply('"UGFzc3dvcmQ6"');
      else {
        reply(verdict('', login[0]!, login[1]!));
        login = undefined;
      }
      return;
    }
    const plain = /^AUTHENTICATE "PLAIN" "([^"]*)"$/.exec(line);
    if (plain) {
      const [authzid, authcid, password] = Buffer.from(plain[1]!, 'base64').toString().split('\0');
      reply(verdict(authzid ?? '', authcid ?? '', password ?? ''));
    } else if (line === 'AUTHENTICATE "LOGIN"') {
      login = [];
      reply('"VXNlcm5hbWU6"');
    } else if (line.startsWith('XCLIENT ')) {
      reply('OK "Updated"');
    } else if (line === 'NOOP') {
      reply('OK "NOOP answered by the backend."');
    } else if (line === 'LOGOUT') {
      reply('OK "Logout completed."');
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

async function start(options: { starttls?: boolean; limits?: Partial<SieveSessionContext['limits']> } = {}) {
  const clock = new ManualClock();
  const backend = dovecot();
  const { server, client } = await socketPair();
  const raw: Buffer[] = [];
  client.on('data', (chunk: Buffer) => raw.push(chunk));
  const ctx = {
    ...sessionOptions({ ...(options.limits ? { limits: options.limits } : {}), starttls: options.starttls ? () => certificate.context : undefined }),
    capabilities: { current: () => ADVERTISED },
    connectBackend: backend.connect,
    backendResponseTimeoutMs: 2000,
    clock,
  };
  const session = new SieveSession(server, ctx);
  const running = session.run();
  const test = new TestClient(client);
  cleanups.push(() => {
    test.socket.destroy();
    backend.close();
  });
  return { session, running, client: test, backend, ctx, clock, raw: () => Buffer.concat(raw).toString('latin1') };
}

/** The greeting: every capability line and the OK. */
async function greeting(client: TestClient, lines = ADVERTISED.length): Promise<string[]> {
  return client.lines(lines + 1);
}

describe('ManageSieve dialect: pre-login commands on an implicit-TLS listener', () => {
  it('greets with the backend’s capabilities and sasl-gate’s SASL line, byte for byte', async () => {
    const { client, raw } = await start();
    expect(await greeting(client)).toEqual([
      '"IMPLEMENTATION" "Dovecot Pigeonhole"',
      '"SIEVE" "fileinto reject envelope vacation imap4flags"',
      '"NOTIFY" "mailto"',
      '"SASL" "XOAUTH2 OAUTHBEARER PLAIN LOGIN"',
      '"VERSION" "1.0"',
      'OK "sasl-gate ready."',
    ]);
    expect(raw()).toBe(`${[...ADVERTISED, 'OK "sasl-gate ready."'].join('\r\n')}\r\n`);
  });

  it('answers CAPABILITY, NOOP with and without a tag, commands that need a login, unknown ones and STARTTLS', async () => {
    const { client } = await start();
    await greeting(client);
    client.send('CAPABILITY\r\nNOOP\r\nnoop "a\\"b"\r\nLISTSCRIPTS\r\nPUTSCRIPT "x" {4+}\r\nkeep\r\nFROB\r\nCAPABILITY "x"\r\nSTARTTLS\r\n');
    expect(await client.lines(ADVERTISED.length + 8)).toEqual([
      ...ADVERTISED,
      'OK "Capability completed."',
      'OK "Done"',
      'OK (TAG "a\\"b") "Done"',
      'NO "LISTSCRIPTS needs a login first."',
      'NO "PUTSCRIPT needs a login first."',
      'NO "Unknown command."',
      'NO "CAPABILITY takes no arguments."',
      'NO "TLS is already active."',
    ]);
  });

  it('answers a syntax error and an over-long line or literal with NO, skips the literal’s bytes, and goes on', async () => {
    const { client } = await start({ limits: { maxLineLength: 100, maxLiteralSize: 50 } });
    await greeting(client);
    client.send(`NOOP "unterminated\r\nNOOP ${'x'.repeat(200)}\r\nNOOP {60+}\r\n${'NOOP\r\n'.repeat(10)}\r\nNOOP\r\n`);
    expect(await client.lines(4)).toEqual([
      'NO "Syntax error: Unterminated quoted string."',
      'NO "Command line too long."',
      'NO "Literal too large."',
      'OK "Done"',
    ]);
  });

  it('LOGOUT says OK and closes; too many commands end with BYE', async () => {
    const first = await start();
    await greeting(first.client);
    first.client.send('LOGOUT\r\n');
    expect(await first.client.line()).toBe('OK "Logout completed."');
    await first.client.closed();
    await first.running;

    const second = await start({ limits: { maxPreAuthCommands: 2 } });
    await greeting(second.client);
    second.client.send('NOOP\r\nNOOP\r\nNOOP\r\n');
    expect(await second.client.lines(3)).toEqual(['OK "Done"', 'OK "Done"', 'BYE "Too many commands before login."']);
    await second.client.closed();
  });
});

describe('ManageSieve dialect: STARTTLS', () => {
  it('before TLS: an empty SASL line and STARTTLS; AUTHENTICATE refused; after the handshake the capabilities again, with the mechanisms', async () => {
    const { client, backend } = await start({ starttls: true });
    const plain = ['"IMPLEMENTATION" "Dovecot Pigeonhole"', '"SIEVE" "fileinto reject envelope vacation imap4flags"', '"NOTIFY" "mailto"', '"SASL" ""', '"STARTTLS"', '"VERSION" "1.0"'];
    expect(await greeting(client, plain.length)).toEqual([...plain, 'OK "sasl-gate ready."']);
    client.send(`AUTHENTICATE "XOAUTH2" "${xoauth2('alice@example.test', 'alice-token')}"\r\nSTARTTLS "now"\r\nSTARTTLS\r\n`);
    expect(await client.lines(3)).toEqual([
      'NO (ENCRYPT-NEEDED) "Authentication is disabled until STARTTLS."',
      'NO "STARTTLS takes no arguments."',
      'OK "Begin TLS negotiation now."',
    ]);
    await client.startTls();
    expect(await client.lines(ADVERTISED.length + 1)).toEqual([...ADVERTISED, 'OK "TLS negotiation successful."']);
    client.send('STARTTLS\r\nCAPABILITY\r\n');
    expect(await client.lines(ADVERTISED.length + 2)).toEqual(['NO "TLS is already active."', ...ADVERTISED, 'OK "Capability completed."']);
    expect(backend.received).toEqual([]);
  });

  it('commands injected after STARTTLS, before the handshake, are discarded, never run inside TLS', async () => {
    const { client, backend } = await start({ starttls: true });
    await greeting(client, ADVERTISED.length + 1);
    client.send(`STARTTLS\r\nAUTHENTICATE "XOAUTH2" "${xoauth2('alice@example.test', 'alice-token')}"\r\n`);
    expect(await client.line()).toBe('OK "Begin TLS negotiation now."');
    await client.startTls();
    expect(await client.lines(ADVERTISED.length + 1)).toEqual([...ADVERTISED, 'OK "TLS negotiation successful."']);
    client.send('NOOP\r\n');
    expect(await client.line()).toBe('OK "Done"');
    expect(backend.received).toEqual([]);
  });
});

describe('ManageSieve dialect: logins and their replies', () => {
  it('AUTHENTICATE "XOAUTH2" with a quoted initial response: the master user logs in for alice, then the relay runs', async () => {
    const { client, backend, ctx } = await start();
    await greeting(client);
    client.send(`AUTHENTICATE "XOAUTH2" "${xoauth2('alice@example.test', 'alice-token')}"\r\n`);
    expect(await client.line()).toBe('OK "Logged in."');
    expect(backend.received[0]).toMatch(/^XCLIENT ADDR=127\.0\.0\.1 PORT=\d+ SESSION=[A-Za-z0-9_-]{8}$/);
    const login = /^AUTHENTICATE "PLAIN" "([^"]+)"$/.exec(backend.received[1]!)!;
    expect(Buffer.from(login[1]!, 'base64').toString()).toBe(`alice@example.test\0${MASTER.user}\0${MASTER.password}`);
    client.send('NOOP\r\n');
    expect(await client.line()).toBe('OK "NOOP answered by the backend."');
    // The log names the user, never the token, the SASL message or the master password.
    const log = ctx.logLines.join('\n');
    expect(log).toContain('alice@example.test');
    for (const secret of ['alice-token', xoauth2('alice@example.test', 'alice-token'), MASTER.password, login[1]!]) expect(log).not.toContain(secret);
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
      const session = new SieveSession(server, {
        ...sessionOptions(),
        capabilities: { current: () => ADVERTISED },
        connectBackend: backend.connect,
        backendResponseTimeoutMs: 2000,
        clock: new ManualClock(),
      });
      void session.run();
      return sessionRefs(session);
    };
    const refs = open();
    const client = new TestClient(socket);
    await greeting(client);
    client.send(`AUTHENTICATE "XOAUTH2" "${xoauth2('alice@example.test', 'alice-token')}"\r\n`);
    expect(await client.line()).toBe('OK "Logged in."');
    expect(await aliveAfterGc(refs)).toBe(0);
    client.send('NOOP\r\n');
    expect(await client.line()).toBe('OK "NOOP answered by the backend."');
  });

  it('too many failures: the last NO, then BYE and the close', async () => {
    const { client, running } = await start({ limits: { maxAuthFailures: 2 } });
    await greeting(client);
    client.send(`AUTHENTICATE "PLAIN" "${b64('\0bob\0wrong')}"\r\nAUTHENTICATE "PLAIN" "${b64('\0bob\0wrong')}"\r\n`);
    expect(await client.lines(3)).toEqual(['NO "Authentication failed."', 'NO "Authentication failed."', 'BYE "Too many authentication failures."']);
    await client.closed();
    await running;
  });

  it('the initial response as a literal, and the mechanism as a literal', async () => {
    const { client, backend } = await start();
    await greeting(client);
    const message = xoauth2('alice@example.test', 'alice-token');
    client.send(`AUTHENTICATE {7+}\r\nxoauth2 {${message.length}+}\r\n${message}\r\n`);
    expect(await client.line()).toBe('OK "Logged in."');
    expect(backend.received[1]).toMatch(/^AUTHENTICATE "PLAIN" "/);
  });

  it('without an initial response: an empty challenge, then the response as a literal or a quoted string', async () => {
    const { client } = await start();
    await greeting(client);
    client.send('AUTHENTICATE "OAUTHBEARER"\r\n');
    expect(await client.line()).toBe('""');
    const message = b64('n,a=alice@example.test,\x01auth=Bearer alice-token\x01\x01');
    client.send(`{${message.length}+}\r\n${message}\r\n`);
    expect(await client.line()).toBe('OK "Logged in."');

    const second = await start();
    await greeting(second.client);
    second.client.send('AUTHENTICATE "XOAUTH2"\r\n');
    expect(await second.client.line()).toBe('""');
    second.client.send(`"${xoauth2('alice@example.test', 'alice-token')}"\r\n`);
    expect(await second.client.line()).toBe('OK "Logged in."');
  });

  it('"*" cancels; a mechanism sasl-gate does not offer, an atom for a string and bad base64 are refused', async () => {
    const { client, backend } = await start();
    await greeting(client);
    client.send('AUTHENTICATE "PLAIN"\r\n');
    expect(await client.line()).toBe('""');
    client.send('"*"\r\nAUTHENTICATE "CRAM-MD5"\r\nAUTHENTICATE PLAIN\r\nAUTHENTICATE "PLAIN" "!!!"\r\n');
    expect(await client.lines(4)).toEqual([
      'NO "Authentication cancelled."',
      'NO "Unsupported authentication mechanism."',
      'NO "AUTHENTICATE expects a mechanism and an optional initial response, as strings."',
      'NO "Invalid base64 in authentication response."',
    ]);
    expect(backend.received).toEqual([]);
  });

  it('a rejected token gets the XOAUTH2 error challenge as a string, then NO after the dummy reply', async () => {
    const { client, backend } = await start();
    await greeting(client);
    client.send(`AUTHENTICATE "XOAUTH2" "${xoauth2('alice@example.test', 'stale')}"\r\n`);
    const challenge = unquote(await client.line());
    expect(JSON.parse(Buffer.from(challenge, 'base64').toString())).toEqual({ status: '401', schemes: 'bearer', scope: 'openid email' });
    client.send('""\r\nNOOP\r\n');
    expect(await client.lines(2)).toEqual(['NO "Authentication failed."', 'OK "Done"']);
    expect(backend.received).toEqual([]);
  });

  it('a quoted initial response longer than RFC 5804’s 1024 octets (a real JWT, as Net_Sieve sends it) is read', async () => {
    const { client } = await start();
    await greeting(client);
    const message = xoauth2('alice@example.test', `stale.${'J'.repeat(1500)}`);
    expect(message.length).toBeGreaterThan(1024);
    client.send(`AUTHENTICATE "XOAUTH2" "${message}"\r\n`);
    expect(JSON.parse(Buffer.from(unquote(await client.line()), 'base64').toString())).toMatchObject({ status: '401' });
    client.send('""\r\n');
    expect(await client.line()).toBe('NO "Authentication failed."');
  });

  it('the OAUTHBEARER error challenge; a client that never answers gets the NO when the wait runs out', async () => {
    const { client, clock } = await start();
    await greeting(client);
    client.send(`AUTHENTICATE "OAUTHBEARER" "${b64('n,,\x01auth=Bearer stale\x01\x01')}"\r\n`);
    const challenge = JSON.parse(Buffer.from(unquote(await client.line()), 'base64').toString()) as Record<string, string>;
    expect(challenge).toMatchObject({ status: 'invalid_token', scope: 'openid email' });
    expect(clock.waiting).toBe(1);
    clock.elapse();
    expect(await client.line()).toBe('NO "Authentication failed."');
  });

  it('alice’s token presented as bob is refused, and the backend hears nothing', async () => {
    const { client, backend } = await start();
    await greeting(client);
    client.send(`AUTHENTICATE "XOAUTH2" "${xoauth2('bob@example.test', 'alice-token')}"\r\n`);
    expect(JSON.parse(Buffer.from(unquote(await client.line()), 'base64').toString())).toMatchObject({ status: '401' });
    client.send('"*"\r\n');
    expect(await client.line()).toBe('NO "Authentication failed."');
    expect(backend.received).toEqual([]);
  });

  it('PLAIN naming the master user, as authcid or with an authzid, is refused by sasl-gate and never sent to the backend', async () => {
    const { client, backend } = await start();
    await greeting(client);
    client.send(`AUTHENTICATE "PLAIN" "${b64(`alice\0${MASTER.user}\0guess`)}"\r\nAUTHENTICATE "PLAIN" "${b64(`\0${MASTER.user}\0guess`)}"\r\n`);
    client.send(`AUTHENTICATE "PLAIN" "${b64(`alice\0bob\0bob-pw`)}"\r\n`);
    const replies = await client.lines(3);
    for (const reply of replies) expect(reply).toMatch(/^NO "/);
    expect(backend.received).toEqual([]);
  });

  it('a provider outage is a temporary NO (TRYLATER); the connection stays usable', async () => {
    const { client } = await start();
    await greeting(client);
    client.send(`AUTHENTICATE "XOAUTH2" "${xoauth2('alice@example.test', 'outage')}"\r\nNOOP\r\n`);
    expect(await client.lines(2)).toEqual(['NO (TRYLATER) "Authentication service temporarily unavailable, try again later."', 'OK "Done"']);
  });

  it('password users pass through: the backend’s own NO, then PLAIN and the LOGIN mechanism with the right password', async () => {
    const { client, backend } = await start();
    await greeting(client);
    client.send(`AUTHENTICATE "PLAIN" "${b64('\0bob\0wrong')}"\r\n`);
    expect(await client.line()).toBe('NO "Authentication failed."');
    expect(backend.received).toEqual([expect.stringMatching(/^XCLIENT ADDR=/), `AUTHENTICATE "PLAIN" "${b64('\0bob\0wrong')}"`, 'LOGOUT']);
    client.send('AUTHENTICATE "LOGIN"\r\n');
    expect(unquote(await client.line())).toBe(b64('Username:'));
    client.send(`"${b64('bob')}"\r\n`);
    expect(unquote(await client.line())).toBe(b64('Password:'));
    client.send(`{${b64('bob-pw').length}+}\r\n${b64('bob-pw')}\r\n`);
    expect(await client.line()).toBe('OK "Logged in."');
    client.send('NOOP\r\n');
    expect(await client.line()).toBe('OK "NOOP answered by the backend."');
  });

  it('a backend that cannot be reached is a temporary NO, never a credential rejection', async () => {
    const { client, ctx } = await start();
    ctx.connectBackend = async () => {
      const { BackendError } = await import('../../../src/errors.js');
      throw new BackendError('connect refused');
    };
    await greeting(client);
    client.send(`AUTHENTICATE "XOAUTH2" "${xoauth2('alice@example.test', 'alice-token')}"\r\n`);
    expect(await client.line()).toBe('NO (TRYLATER) "Mail server temporarily unavailable, try again later."');
  });
});

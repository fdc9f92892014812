/**
 * Attacks on sasl-gate's POP3 front door beyond the basic suite, against a real Dovecot POP3 and
 * a real OpenID provider: commands pipelined behind AUTH, cancelled and tampered continuations,
 * STLS injection that spans the handshake, over-long lines and names. Dovecot's own log
 * (`pop3-login: Login: user=<...>`) is the witness of who logged in.
 */
import { connect } from 'node:net';
import { connect as tlsConnect, type TLSSocket } from 'node:tls';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LineReader } from '../support/line-reader.js';
import { MASTER, oauthbearer, plain, startStack, USERS, xoauth2, type Stack } from '../support/stack.js';
import { sleep } from '../support/wait.js';

const [ALICE, BOB] = USERS as [(typeof USERS)[0], (typeof USERS)[0]];

let stack: Stack;
let aliceToken: string;

beforeAll(async () => {
  stack = await startStack({ pop3: true });
  aliceToken = await stack.idp.mintAccessToken({ user: ALICE.name });
});

afterAll(async () => {
  await stack?.close();
});

/** Dovecot's POP3 login lines so far. */
async function pop3Logins(): Promise<string[]> {
  return (await stack.dovecot.readLog()).split('\n').filter((l) => /pop3-login: Info: Login: /.test(l));
}

/** Dovecot's log lines, after `from` characters, that name the master user (other than idle disconnects). */
async function masterMentions(from: number): Promise<string[]> {
  return (await stack.dovecot.readLog())
    .slice(from)
    .split('\n')
    .filter((l) => l.includes(MASTER.user) && !/no auth attempts/.test(l));
}

/** A POP3S connection from `localAddress`, past the greeting. */
async function pop3s(localAddress: string): Promise<{ socket: TLSSocket; reader: LineReader }> {
  const socket = tlsConnect({ host: '127.0.0.1', port: stack.pop3Port, ca: stack.ca, servername: 'localhost', ...{ localAddress } });
  await new Promise<void>((resolve, reject) => {
    socket.once('secureConnect', resolve);
    socket.once('error', reject);
  });
  const reader = new LineReader(socket);
  expect(await reader.next(5000)).toBe('+OK sasl-gate ready.');
  return { socket, reader };
}

const b64 = (text: string) => Buffer.from(text, 'utf8').toString('base64');

describe('POP3: commands pipelined behind AUTH', () => {
  it('behind a token login they run as its user; behind a refused token the first is the dummy reply and the next find no USER', async () => {
    const before = (await pop3Logins()).length;
    const ok = await pop3s('127.0.0.21');
    try {
      ok.socket.write(`AUTH XOAUTH2 ${xoauth2(ALICE.name, aliceToken)}\r\nSTAT\r\nUSER ${BOB.name}\r\nPASS ${BOB.password}\r\n`);
      expect(await ok.reader.next(10_000)).toMatch(/^\+OK /);
      expect(await ok.reader.next(10_000)).toMatch(/^\+OK \d+ \d+$/);
      // Dovecot, already logged in as alice, knows no USER any more.
      expect(await ok.reader.next(10_000)).toMatch(/^-ERR /);
      expect(await ok.reader.next(10_000)).toMatch(/^-ERR /);
    } finally {
      ok.socket.destroy();
    }
    const refused = await pop3s('127.0.0.21');
    try {
      refused.socket.write(`AUTH XOAUTH2 ${xoauth2(BOB.name, aliceToken)}\r\nUSER ${BOB.name}\r\nPASS ${BOB.password}\r\nSTAT\r\n`);
      expect(await refused.reader.next(10_000)).toMatch(/^\+ /);
      expect(await refused.reader.next(10_000)).toBe('-ERR [AUTH] Authentication failed.');
      expect(await refused.reader.next(10_000)).toBe('-ERR No user name given, send USER first.');
      expect(await refused.reader.next(10_000)).toBe('-ERR STAT needs a login first.');
    } finally {
      refused.socket.destroy();
    }
    await sleep(200);
    const logins = (await pop3Logins()).slice(before);
    expect(logins).toHaveLength(1);
    expect(logins[0]).toContain(`user=<${ALICE.name}>`);
  });
});

describe('POP3: AUTH continuations', () => {
  it('* cancels any mechanism; master names and separators in a continuation are refused; nothing reaches Dovecot', async () => {
    const logBefore = (await stack.dovecot.readLog()).length;
    const before = (await pop3Logins()).length;
    const separated = `${ALICE.name}*${MASTER.user}`;
    const { socket, reader } = await pop3s('127.0.0.22');
    const exchange = async (lines: string[]): Promise<string[]> => {
      const replies: string[] = [];
      for (const line of lines) {
        socket.write(`${line}\r\n`);
        replies.push(await reader.next(10_000));
      }
      return replies;
    };
    try {
      for (const mechanism of ['PLAIN', 'LOGIN', 'XOAUTH2', 'OAUTHBEARER']) {
        expect(await exchange([`AUTH ${mechanism}`, '*'])).toEqual([expect.stringMatching(/^\+ ?/), '-ERR Authentication cancelled.']);
      }
      // LOGIN's password prompt cancelled, after a legitimate name.
      expect(await exchange([`AUTH LOGIN ${b64(ALICE.name)}`, '*'])).toEqual(['+ UGFzc3dvcmQ6', '-ERR Authentication cancelled.']);
      // Separator and master name through the continuation, initial response, and case.
      const refusals = [
        await exchange(['AUTH LOGIN', b64(separated), b64(MASTER.password)]),
        await exchange([`AUTH LOGIN ${b64(MASTER.user.toUpperCase())}`, b64(MASTER.password)]),
        await exchange(['AUTH PLAIN', plain('', separated, MASTER.password)]),
        await exchange(['auth plain', plain(`${BOB.name}`, ALICE.name, ALICE.password)]),
      ];
      for (const replies of refusals) expect(replies.at(-1)).toMatch(/^-ERR \[AUTH\] /);
    } finally {
      socket.destroy();
    }
    // Five failures end a connection; a new one: bad base64 and an initial response with trailing words.
    const second = await pop3s('127.0.0.22');
    try {
      second.socket.write(`AUTH PLAIN\r\n${plain('', ALICE.name, ALICE.password)}\r\nAUTH PLAIN ${plain('', ALICE.name, ALICE.password)} ${b64(separated)}\r\nAUTH PLAIN\r\n${b64(`\u0000${ALICE.name}\u0000${ALICE.password}`).slice(0, -1)}!\r\nCAPA\r\n`);
      expect(await second.reader.next(10_000)).toBe('+ ');
      // The first one was alice's own password: a login, and the rest is Dovecot's.
      expect(await second.reader.next(10_000)).toMatch(/^\+OK /);
      expect(await second.reader.next(10_000)).toMatch(/^-ERR /);
    } finally {
      second.socket.destroy();
    }
    const third = await pop3s('127.0.0.22');
    try {
      third.socket.write(`AUTH PLAIN ${plain('', ALICE.name, ALICE.password)} ${b64(separated)}\r\nAUTH PLAIN\r\n${plain('', ALICE.name, ALICE.password).slice(0, -1)}!\r\nCAPA\r\n`);
      expect(await third.reader.next(10_000)).toBe('-ERR AUTH expects a mechanism and an optional initial response.');
      expect(await third.reader.next(10_000)).toBe('+ ');
      expect(await third.reader.next(10_000)).toBe('-ERR Invalid base64 in authentication response.');
      expect(await third.reader.next(10_000)).toBe('+OK Capability list follows');
    } finally {
      third.socket.destroy();
    }
    await sleep(200);
    const logins = (await pop3Logins()).slice(before);
    expect(logins).toHaveLength(1);
    expect(logins[0]).toContain(`user=<${ALICE.name}>`);
    expect(await masterMentions(logBefore)).toEqual([]);
  });
});

describe('POP3: STLS injection that spans the handshake', () => {
  it('a half line, or a USER, sent in clear after STLS never joins what the client sends over TLS', async () => {
    const before = (await pop3Logins()).length;
    for (const injected of [`AUTH PLAIN ${plain('', ALICE.name, ALICE.password)}`, `USER ${ALICE.name}\r\nPASS`, 'AUTH PLAIN']) {
      const plainSocket = connect({ host: '127.0.0.1', port: stack.pop3StarttlsPort, localAddress: '127.0.0.23' });
      const reader = new LineReader(plainSocket);
      try {
        expect(await reader.next(5000)).toBe('+OK sasl-gate ready.');
        plainSocket.write(`STLS\r\n${injected}`);
        expect(await reader.next(5000)).toBe('+OK Begin TLS negotiation now.');
        plainSocket.removeAllListeners('data');
        const secure = tlsConnect({ socket: plainSocket, ca: stack.ca, servername: 'localhost' });
        await new Promise<void>((resolve, reject) => {
          secure.once('secureConnect', resolve);
          secure.once('error', reject);
        });
        const tls = new LineReader(secure);
        // Were the clear-text bytes kept, the first line would complete them (a login, or a PASS).
        secure.write(`\r\n ${ALICE.password}\r\nCAPA\r\n`);
        expect(await tls.next(5000)).toBe('-ERR Unknown command.');
        expect(await tls.next(5000)).toBe('-ERR Unknown command.');
        expect(await tls.next(5000)).toBe('+OK Capability list follows');
        secure.destroy();
      } finally {
        plainSocket.destroy();
      }
    }
    await sleep(200);
    expect((await pop3Logins()).slice(before)).toEqual([]);
  });
});

describe('POP3: over-long input', () => {
  it('an over-long line, AUTH response and name get clear errors; the connection and other sessions go on', async () => {
    const before = (await pop3Logins()).length;
    const { socket, reader } = await pop3s('127.0.0.24');
    try {
      // An over-long line whose tail would be a login if the limit cut it there.
      socket.write(`NOOP ${'x'.repeat(70_000)}\r\nAUTH PLAIN ${plain('', ALICE.name, ALICE.password)}x\r\n`);
      expect(await reader.next(10_000)).toBe('-ERR Command line too long.');
      expect(await reader.next(10_000)).toMatch(/^-ERR /);
      // An over-long continuation.
      socket.write(`AUTH PLAIN\r\n${'A'.repeat(70_000)}\r\n`);
      expect(await reader.next(10_000)).toBe('+ ');
      expect(await reader.next(10_000)).toMatch(/^-ERR (Authentication response too long|Command line too long)\./);
      // A 4 000-byte name (to Dovecot's own line limit) is refused before it reaches Dovecot.
      const long = `${'a'.repeat(4000)}@example.test`;
      socket.write(`USER ${long}\r\nPASS ${ALICE.password}\r\n`);
      expect(await reader.next(10_000)).toBe('+OK Send your password.');
      expect(await reader.next(10_000)).toMatch(/^-ERR \[AUTH\] /);
      // Meanwhile another client logs in.
      const other = await pop3s('127.0.0.25');
      try {
        other.socket.write(`AUTH OAUTHBEARER ${oauthbearer(ALICE.name, aliceToken, 'localhost', stack.pop3Port)}\r\nSTAT\r\n`);
        expect(await other.reader.next(10_000)).toMatch(/^\+OK /);
        expect(await other.reader.next(10_000)).toMatch(/^\+OK \d+ \d+$/);
      } finally {
        other.socket.destroy();
      }
      socket.write('CAPA\r\n');
      expect(await reader.next(10_000)).toBe('+OK Capability list follows');
    } finally {
      socket.destroy();
    }
    await sleep(200);
    const logins = (await pop3Logins()).slice(before);
    expect(logins).toHaveLength(1);
    expect(logins[0]).toContain(`user=<${ALICE.name}>`);
    expect(logins[0]).toContain('rip=127.0.0.25');
  });
});

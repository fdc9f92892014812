/**
 * Attacks on sasl-gate's POP3 front door beyond the basic suite, against a real Dovecot POP3 and
 * a real OpenID provider: commands pipelined behind AUTH, cancelled and tampered continuations,
 * STLS injection that spans the handshake, over-long lines and names. Dovecot's own log
 * (`pop3-login: Login: user=<...>`) is the witness of who logged in.
 */
import { connect } from 'node:net';
import { connect as tlsConnect, type TLSSocket } from 'node:tls';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { dovecotLogins, masterMentions as masterMentionsIn } from '../support/dovecot-log.js';
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

/** Dovecot's pop3 login lines so far. */
const pop3Logins = () => dovecotLogins(stack.dovecot, 'pop3');

/** Dovecot's log lines, after `from` characters, that name the master user (other than idle disconnects). */
const masterMentions = (from: number) => masterMentionsIn(stack.dovecot, MASTER.user, from);

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
      // From sasl-gate's trusted address, XCLIENT or a master login would forge the address or the user.
      ok.socket.write(
        `AUTH XOAUTH2 ${xoauth2(ALICE.name, aliceToken)}\r\nSTAT\r\nUSER ${BOB.name}\r\nPASS ${BOB.password}\r\nXCLIENT ADDR=192.0.2.99 PORT=1\r\nAUTH PLAIN ${plain('', `${BOB.name}*${MASTER.user}`, MASTER.password)}\r\nSTAT\r\n`,
      );
      expect(await ok.reader.next(10_000)).toMatch(/^\+OK /);
      const stat = await ok.reader.next(10_000);
      expect(stat).toMatch(/^\+OK \d+ \d+$/);
      // Dovecot, already logged in as alice, knows none of them any more.
      for (let i = 0; i < 4; i++) expect(await ok.reader.next(10_000)).toMatch(/^-ERR /);
      expect(await ok.reader.next(10_000)).toBe(stat);
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
    expect(logins[0]).toContain('rip=127.0.0.21');
    expect(await stack.dovecot.readLog()).not.toContain('192.0.2.99');
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

describe('generated pre-login POP3 sessions against the real server', () => {
  it('never a login other than the credential’s user, never one without a credential, and sasl-gate keeps serving', async () => {
    const runs = Number(process.env['ATTACK_POP3_RUNS'] ?? 10);
    const seed = Number(process.env['ATTACK_POP3_SEED'] ?? Date.now() % 2 ** 31);
    const separated = `${ALICE.name}*${MASTER.user}`;
    const names = [BOB.name, separated, MASTER.user, `*${MASTER.user}`, MASTER.user.toUpperCase(), `${BOB.name}\r\n`, `\uff53asl-gate-master`];
    const refusedNames = [separated, MASTER.user, `*${MASTER.user}`, MASTER.user.toUpperCase(), `${BOB.name}*${MASTER.user}`];
    const ends = fc.constantFrom('\r\n', '\n', '\r\r\n');
    const attack = fc.oneof(
      fc.constantFrom('CAPA', 'STLS', 'STAT', 'LIST', 'RETR 1', 'QUIT x', 'APOP a b', 'AUTH', 'XCLIENT ADDR=192.0.2.99', 'PASS', 'USER').chain((c) => ends.map((e) => `${c}${e}`)),
      fc.constantFrom(...refusedNames).map((name) => `USER ${name}\r\nPASS ${MASTER.password}\r\n`),
      fc.tuple(fc.constantFrom(...names), fc.constantFrom('XOAUTH2', 'OAUTHBEARER'), fc.boolean()).map(([name, mech, inline]) => {
        const response = mech === 'XOAUTH2' ? xoauth2(name, aliceToken) : oauthbearer(name, aliceToken, 'localhost', stack.pop3Port);
        return inline ? `AUTH ${mech} ${response}\r\n` : `AUTH ${mech}\r\n${response}\r\n`;
      }),
      fc.constantFrom(...refusedNames).map((name) => `AUTH PLAIN ${plain('', name, MASTER.password)}\r\n`),
      fc.constantFrom(...refusedNames).map((name) => `AUTH LOGIN\r\n${b64(name)}\r\n${b64(MASTER.password)}\r\n`),
      fc.constantFrom(`AUTH PLAIN ${plain(BOB.name, ALICE.name, ALICE.password)}\r\n`, `AUTH PLAIN\r\n${plain(MASTER.user, ALICE.name, ALICE.password)}\r\n`),
      fc.constantFrom('AQ==\r\n', '*\r\n', '\r\n', '=\r\n', '\x01', ' \r\n', 'AUTH PLAIN =\r\n', 'AUTH XOAUTH2  x\r\n', '\x00USER a\r\n', '\xff\xfe\r\n'),
      fc.nat({ max: 3000 }).map((n) => `NOOP ${'z'.repeat(66_000 + n)}\r\nAUTH PLAIN ${plain('', ALICE.name, ALICE.password)}x\r\n`),
    );
    const validPiece = fc.constantFrom(`AUTH XOAUTH2 ${xoauth2(ALICE.name, aliceToken)}\r\n`, `USER ${ALICE.name}\r\nPASS ${ALICE.password}\r\n`);
    const session = fc.record({
      pieces: fc.array(attack, { minLength: 1, maxLength: 10 }),
      credential: fc.option(fc.tuple(validPiece, fc.nat({ max: 10 })), { freq: 3 }),
      cuts: fc.array(fc.integer({ min: 1, max: 200 }), { minLength: 1, maxLength: 8 }),
    });
    const before = (await pop3Logins()).length;
    let withCredential = 0;
    await fc.assert(
      fc.asyncProperty(session, async ({ pieces, credential, cuts }) => {
        const script = [...pieces];
        if (credential) {
          withCredential += 1;
          script.splice(Math.min(credential[1], script.length), 0, credential[0]);
        }
        const bytes = Buffer.from(`${script.join('')}*\r\nQUIT\r\n`, 'latin1');
        const { socket, reader } = await pop3s(credential ? '127.0.0.28' : '127.0.0.27');
        try {
          let at = 0;
          for (let i = 0; at < bytes.length; i++) {
            const n = i < cuts.length ? cuts[i]! : bytes.length;
            socket.write(bytes.subarray(at, at + n));
            at += n;
          }
          await reader.waitEnded(1500);
        } finally {
          socket.destroy();
        }
      }),
      { numRuns: runs, seed, endOnFailure: true },
    );
    // A fresh login still works: the process and its listener survived every session.
    const fresh = await pop3s('127.0.0.29');
    try {
      fresh.socket.write(`AUTH XOAUTH2 ${xoauth2(ALICE.name, aliceToken)}\r\n`);
      expect(await fresh.reader.next(10_000)).toMatch(/^\+OK /);
    } finally {
      fresh.socket.destroy();
    }
    await sleep(300);
    const logins = (await pop3Logins()).slice(before);
    const context = `seed ${seed}, ${runs} runs`;
    expect(logins.filter((l) => !l.includes(`user=<${ALICE.name}>`)), context).toEqual([]);
    expect(logins.filter((l) => l.includes('rip=127.0.0.27')), context).toEqual([]);
    expect(logins.filter((l) => l.includes('rip=127.0.0.28')).length, context).toBeLessThanOrEqual(withCredential);
    expect(logins.filter((l) => l.includes('rip=127.0.0.29')), context).toHaveLength(1);
    expect(await stack.dovecot.readLog(), context).not.toContain('192.0.2.99');
  }, 120_000);
});

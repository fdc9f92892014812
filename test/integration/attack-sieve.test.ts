/**
 * Attacks on sasl-gate's ManageSieve front door, against a real Dovecot managesieve and a real
 * OpenID provider. sasl-gate logs token users in as the master user, so any name other than the
 * token's that reaches Dovecot, any master separator in a pass-through login, or any client bytes
 * read as a command where sasl-gate saw data would be an impersonation. Dovecot's own log
 * (`managesieve-login: Login: user=<...>`) is the witness; the client's replies say what a user sees.
 */
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { dovecotLogins, masterMentions as masterMentionsIn } from '../support/dovecot-log.js';
import { secret } from '../support/evidence.js';
import { literal, quoted, RawSieve } from '../support/sieve-raw.js';
import { MASTER, oauthbearer, plain, startStack, USERS, xoauth2, type Stack } from '../support/stack.js';
import { sleep } from '../support/wait.js';

const [ALICE, BOB] = USERS as [(typeof USERS)[0], (typeof USERS)[0]];

let stack: Stack;
let aliceToken: string;

beforeAll(async () => {
  stack = await startStack({ sieve: true });
  aliceToken = await stack.idp.mintAccessToken({ user: ALICE.name });
});

afterAll(async () => {
  await stack?.close();
});

/** Dovecot's managesieve login lines so far. */
const sieveLogins = () => dovecotLogins(stack.dovecot, 'managesieve');

/** Dovecot's log lines, after `from` characters, that name the master user (other than idle disconnects). */
const masterMentions = (from: number) => masterMentionsIn(stack.dovecot, MASTER.user, from);

/** A raw client on the implicit-TLS listener, past the greeting. */
async function tls(localAddress = '127.0.0.1'): Promise<RawSieve> {
  const c = await RawSieve.connect({ port: stack.sievePort, tls: true, ca: stack.ca, localAddress });
  const greeting = await c.readResponse();
  expect(greeting.status).toMatch(/^OK/);
  return c;
}

/** An OAUTHBEARER message with a GS2 header exactly as given (no escaping). */
function rawOauthbearer(gs2: string, token: string): string {
  return secret(Buffer.from(`${gs2}\x01host=localhost\x01port=4190\x01auth=Bearer ${token}\x01\x01`).toString('base64'), 'OAUTHBEARER message');
}

/** Base64 of one LOGIN-mechanism answer. */
const b64 = (text: string) => Buffer.from(text, 'utf8').toString('base64');

/** A login command as a quoted string or as a literal `{N+}`. */
function authenticate(mechanism: string, response: string, form: 'quoted' | 'literal'): Buffer {
  const head = Buffer.from(`AUTHENTICATE ${quoted(mechanism)} `);
  return Buffer.concat([head, form === 'quoted' ? Buffer.from(quoted(response)) : literal(response), Buffer.from('\r\n')]);
}

/** Sends a login and reads to its end: answers an error challenge with the dummy reply. Returns the final line. */
async function login(c: RawSieve, command: Buffer): Promise<string> {
  c.write(command);
  const first = await c.readLine();
  if (!first.startsWith('"')) return first;
  return (await c.command('"AQ=="')).status;
}

describe('ManageSieve identity: a token logs in only as its own user', () => {
  it('alice’s token under other names (XOAUTH2 user=, OAUTHBEARER a=, quoted and literal): only alice reaches Dovecot', async () => {
    const names = [
      BOB.name,
      `${ALICE.name}*${MASTER.user}`,
      `${BOB.name}*${MASTER.user}`,
      MASTER.user,
      `${MASTER.user}*${BOB.name}`,
      `*${BOB.name}`,
      `${ALICE.name}\u0000${BOB.name}`,
      `${BOB.name}\r\n${ALICE.name}`,
      `${ALICE.name}\r\nAUTHENTICATE "PLAIN"`,
      `"${BOB.name}"`,
      `${ALICE.name}"`,
      `${ALICE.name}\\`,
      `${BOB.name}\\"`,
      `${ALICE.name}{5}`,
      `{16}\r\n${BOB.name}`,
      `${'a'.repeat(4000)}@example.test`,
      // Cyrillic а, full-width a, a zero-width space, a trailing space.
      `\u0430lice@example.test`,
      `\uff41lice@example.test`,
      `${ALICE.name}\u200b`,
      `${ALICE.name} `,
      `${BOB.name}\x01auth=Bearer ${aliceToken}`,
      ALICE.name.toUpperCase(),
      ALICE.name,
    ];
    const logBefore = (await stack.dovecot.readLog()).length;
    const before = (await sieveLogins()).length;
    const attempts: Array<{ what: string; command: Buffer }> = [];
    for (const name of names) {
      for (const form of ['quoted', 'literal'] as const) {
        attempts.push({ what: `XOAUTH2 ${form} ${JSON.stringify(name.slice(0, 60))}`, command: authenticate('XOAUTH2', xoauth2(name, aliceToken), form) });
        attempts.push({
          what: `OAUTHBEARER ${form} ${JSON.stringify(name.slice(0, 60))}`,
          command: authenticate('OAUTHBEARER', oauthbearer(name, aliceToken, 'localhost', stack.sievePort), form),
        });
      }
    }
    // GS2 headers a parser might read differently: a second a=, an unescaped comma, an authzid with a separator.
    for (const gs2 of [`n,a=${BOB.name},a=${ALICE.name},`, `n,a=${ALICE.name},a=${BOB.name},`, `n,a=${BOB.name},${ALICE.name},`, `n,a=${ALICE.name}=2C${BOB.name},`, `y,a=${ALICE.name}*${MASTER.user},`]) {
      attempts.push({ what: `OAUTHBEARER gs2 ${JSON.stringify(gs2)}`, command: authenticate('OAUTHBEARER', rawOauthbearer(gs2, aliceToken), 'quoted') });
    }
    const outcomes = await Promise.all(
      attempts.map(async ({ what, command }) => {
        const c = await tls('127.0.0.11');
        try {
          const final = await login(c, command);
          return `${what}: ${final.split(' ')[0]}`;
        } finally {
          c.close();
        }
      }),
    );
    const succeeded = outcomes.filter((o) => o.endsWith(': OK'));
    // Only alice's own address, in any letter case, logs in.
    expect(succeeded).toEqual(
      attempts.filter(({ what }) => new RegExp(`"${ALICE.name}"$`, 'i').test(what)).map(({ what }) => `${what}: OK`),
    );
    expect(succeeded).toHaveLength(8);
    for (const outcome of outcomes) expect(outcome).toMatch(/: (OK|NO)$/);
    await sleep(200);
    const logins = (await sieveLogins()).slice(before);
    expect(logins).toHaveLength(succeeded.length);
    for (const line of logins) expect(line).toContain(`user=<${ALICE.name}>`);
    expect(await masterMentions(logBefore)).toEqual([]);
  }, 60_000);

  it('pass-through PLAIN and LOGIN never carry the master name or separator to Dovecot, in any framing', async () => {
    const logBefore = (await stack.dovecot.readLog()).length;
    const before = (await sieveLogins()).length;
    const gateLogBefore = stack.logs.length;
    const separated = `${ALICE.name}*${MASTER.user}`;
    const plainAttempts = [
      plain('', separated, MASTER.password),
      plain(separated, separated, MASTER.password),
      plain('', `${MASTER.user}*${ALICE.name}`, MASTER.password),
      plain('', MASTER.user.toUpperCase(), MASTER.password),
      plain('', `\u0000${MASTER.user}`, MASTER.password),
      plain('', `${MASTER.user}\r\n`, MASTER.password),
      plain('', `${ALICE.name}\t*${MASTER.user}`, MASTER.password),
      plain(`${ALICE.name}*${MASTER.user}`, ALICE.name, ALICE.password),
      plain(ALICE.name.toUpperCase(), ALICE.name, ALICE.password),
    ];
    const sessions: Array<(c: RawSieve) => Promise<string>> = [
      ...plainAttempts.flatMap((response) =>
        (['quoted', 'literal'] as const).map((form) => async (c: RawSieve) => (await c.command(authenticate('PLAIN', response, form))).status),
      ),
      // PLAIN in a continuation, as a literal.
      async (c) => {
        c.write('AUTHENTICATE "PLAIN"\r\n');
        expect(await c.readLine()).toBe('""');
        return (await c.command(Buffer.concat([literal(plain('', separated, MASTER.password)), Buffer.from('\r\n')]))).status;
      },
      // LOGIN: the name as initial response, or as a continuation (quoted, literal, bare).
      async (c) => {
        c.write(`AUTHENTICATE "LOGIN" ${quoted(b64(separated))}\r\n`);
        expect(await c.readLine()).toBe(quoted('UGFzc3dvcmQ6'));
        return (await c.command(quoted(b64(MASTER.password)))).status;
      },
      async (c) => {
        c.write('AUTHENTICATE "LOGIN"\r\n');
        expect(await c.readLine()).toBe(quoted('VXNlcm5hbWU6'));
        c.write(Buffer.concat([literal(b64(separated)), Buffer.from('\r\n')]));
        expect(await c.readLine()).toBe(quoted('UGFzc3dvcmQ6'));
        return (await c.command(Buffer.concat([literal(b64(MASTER.password)), Buffer.from('\r\n')]))).status;
      },
      async (c) => {
        c.write('AUTHENTICATE "LOGIN"\r\n');
        await c.readLine();
        c.write(`${b64(MASTER.user)}\r\n`);
        await c.readLine();
        return (await c.command(b64(MASTER.password))).status;
      },
      // A NUL in a LOGIN name would become PLAIN's field separator further on.
      async (c) => {
        c.write(`AUTHENTICATE "LOGIN" ${quoted(b64(`${ALICE.name}\u0000${MASTER.user}`))}\r\n`);
        await c.readLine();
        return (await c.command(quoted(b64(MASTER.password)))).status;
      },
    ];
    const replies = await Promise.all(
      sessions.map(async (session) => {
        const c = await tls('127.0.0.12');
        try {
          const status = await session(c);
          // The connection survives the refusal.
          expect((await c.command('CAPABILITY')).status).toMatch(/^OK/);
          return status;
        } finally {
          c.close();
        }
      }),
    );
    for (const reply of replies) expect(reply).toMatch(/^NO /);
    await sleep(200);
    expect((await sieveLogins()).slice(before)).toEqual([]);
    // Not even a failed master login: sasl-gate refused every one of them itself.
    expect(await masterMentions(logBefore)).toEqual([]);
    // All but the three NUL tricks (unreadable SASL) are refused as master-user attempts.
    expect(stack.logs.slice(gateLogBefore).filter((l) => l.reason === 'master_user_refused')).toHaveLength(sessions.length - 3);
  }, 60_000);
});

describe('ManageSieve identity: what the provider signs', () => {
  it('a signed token whose e-mail claim carries the master separator, a line break, quotes or literal syntax logs nobody in', async () => {
    const logBefore = (await stack.dovecot.readLog()).length;
    const before = (await sieveLogins()).length;
    const emails = [
      `${BOB.name}*${MASTER.user}`,
      `${MASTER.user}*${BOB.name}`,
      MASTER.user,
      `${BOB.name}\r\n`,
      `"${BOB.name}"`,
      `bob{5}@example.test`,
      `${BOB.name}\u0000${ALICE.name}`,
    ];
    const outcomes = await Promise.all(
      emails.map(async (email) => {
        const token = await stack.idp.signToken({ ...stack.idp.claimsFor(ALICE.name), email, email_verified: true });
        // Named by the token alone (OAUTHBEARER without a=), and by the claim itself (XOAUTH2).
        const commands = [
          authenticate('OAUTHBEARER', oauthbearer(undefined, token, 'localhost', stack.sievePort), 'literal'),
          authenticate('XOAUTH2', xoauth2(email, token), 'literal'),
        ];
        return Promise.all(
          commands.map(async (command) => {
            const c = await tls('127.0.0.27');
            try {
              return await login(c, command);
            } finally {
              c.close();
            }
          }),
        );
      }),
    );
    const literalSyntax = emails.indexOf('bob{5}@example.test');
    for (const [i, outcome] of outcomes.entries()) {
      // Braces are valid in an address: sasl-gate names that user, inside base64, and Dovecot refuses the name itself.
      if (i === literalSyntax) for (const reply of outcome) expect(reply).toMatch(/^NO /);
      else for (const reply of outcome) expect(reply).toMatch(/^NO "(Authentication failed|Invalid XOAUTH2 message)/);
    }
    await sleep(200);
    expect((await sieveLogins()).slice(before)).toEqual([]);
    // The one name that reached Dovecot arrived whole, and was refused there (auth_username_chars).
    for (const line of await masterMentions(logBefore)) expect(line).toMatch(/username: bob\{5\}@example\.test\)|auth failed/);
  });
});

describe('ManageSieve framing: what is data stays data', () => {
  it('a login hidden in a literal, in a literal of the wrong length, or in an oversized line or literal never runs; the connection goes on', async () => {
    const logBefore = (await stack.dovecot.readLog()).length;
    const before = (await sieveLogins()).length;
    const hidden = `AUTHENTICATE "PLAIN" ${quoted(plain('', ALICE.name, ALICE.password))}\r\n`;
    const c = await tls('127.0.0.13');
    try {
      // NOOP's tag as a literal holding a whole login: echoed, not run.
      const noop = await c.command(Buffer.concat([Buffer.from('NOOP '), literal(hidden), Buffer.from('\r\n')]));
      expect(noop.status).toMatch(/^OK \(TAG "AUTHENTICATE/);
      // A literal announced longer than sent swallows the login that follows: it is NOOP's tag.
      c.write(`NOOP {${hidden.length + 6}+}\r\nshort\r\n${hidden}`);
      expect((await c.readResponse()).status).toMatch(/^OK \(TAG "short\?\?AUTHENTICATE/);
      // Shorter than sent: the rest of the line is no command.
      c.write(`NOOP {2+}\r\nxx${hidden}`);
      expect((await c.readResponse()).status).toMatch(/^NO "Syntax error/);
      // {N} (synchronizing) is read like {N+}: no continuation, the bytes are data.
      expect((await c.command(Buffer.from(`NOOP {${hidden.length}}\r\n${hidden}\r\n`))).status).toMatch(/^OK \(TAG /);
      // An over-long line, with a login where its end would be if the limit cut it.
      c.write(`NOOP "${'x'.repeat(70_000)}"\r\n${hidden.replace('\r\n', '')}x\r\n`);
      expect((await c.readResponse()).status).toBe('NO "Command line too long."');
      expect((await c.readResponse()).status).toMatch(/^NO/);
      // An over-long literal: refused and skipped, the login inside it included.
      const big = `${'y'.repeat(70_000)}\r\n${hidden}`;
      c.write(`NOOP {${big.length}+}\r\n${big}\r\n`);
      expect((await c.readResponse()).status).toBe('NO "Literal too large."');
      // Too many literals on one line.
      c.write(`NOOP ${'{1+}\r\nx '.repeat(5)}{1+}\r\nx\r\n`);
      expect((await c.readResponse()).status).toMatch(/^NO "(Too many literals|Syntax error)/);
      // Still a working, unauthenticated session.
      expect((await c.command('CAPABILITY')).status).toMatch(/^OK/);
      expect((await c.command('LISTSCRIPTS')).status).toMatch(/^NO/);
    } finally {
      c.close();
    }
    await sleep(200);
    expect((await sieveLogins()).slice(before)).toEqual([]);
    expect(await masterMentions(logBefore)).toEqual([]);
  }, 30_000);

  it('a literal announced and never sent, or absurdly large, holds up only its own connection', async () => {
    const before = (await sieveLogins()).length;
    const stalled = await tls('127.0.0.14');
    const absurd = await tls('127.0.0.14');
    try {
      stalled.write('AUTHENTICATE "PLAIN" {200+}\r\nabc');
      absurd.write('NOOP {99999999999999999999+}\r\n');
      expect((await absurd.readResponse()).status).toBe('NO "Literal too large."');
      // Meanwhile another client logs in and works.
      const c = await tls('127.0.0.15');
      try {
        expect((await c.command(authenticate('XOAUTH2', xoauth2(ALICE.name, aliceToken), 'literal'))).status).toMatch(/^OK/);
        expect((await c.command('LISTSCRIPTS')).status).toMatch(/^OK/);
      } finally {
        c.close();
      }
      expect(stalled.ended).toBe(false);
    } finally {
      stalled.close();
      absurd.close();
    }
    await sleep(200);
    const logins = (await sieveLogins()).slice(before);
    expect(logins).toHaveLength(1);
    expect(logins[0]).toContain(`user=<${ALICE.name}>`);
  });

  it('commands pipelined behind AUTHENTICATE run as the token’s user after a login, and are the dummy reply after a refusal', async () => {
    const before = (await sieveLogins()).length;
    const bobLogin = `AUTHENTICATE "PLAIN" ${quoted(plain('', BOB.name, BOB.password))}\r\n`;
    const ok = await tls('127.0.0.16');
    try {
      ok.write(Buffer.concat([authenticate('XOAUTH2', xoauth2(ALICE.name, aliceToken), 'quoted'), Buffer.from(`LISTSCRIPTS\r\n${bobLogin}`)]));
      expect((await ok.readResponse()).status).toMatch(/^OK/);
      expect((await ok.readResponse()).status).toMatch(/^OK/);
      // Dovecot refuses a second login on a logged-in connection.
      expect((await ok.readResponse()).status).toMatch(/^NO/);
    } finally {
      ok.close();
    }
    const refused = await tls('127.0.0.16');
    try {
      // alice's token claimed for bob, with bob's login pipelined where the dummy reply goes.
      refused.write(Buffer.concat([authenticate('XOAUTH2', xoauth2(BOB.name, aliceToken), 'quoted'), Buffer.from(`${bobLogin}LISTSCRIPTS\r\n`)]));
      expect(await refused.readLine()).toMatch(/^"/);
      expect((await refused.readResponse()).status).toBe('NO "Authentication failed."');
      expect((await refused.readResponse()).status).toMatch(/^NO "LISTSCRIPTS needs a login first/);
      // The cancel forms: a quoted "*", a bare *, a literal *.
      for (const cancel of ['"*"\r\n', '*\r\n', '{1+}\r\n*\r\n']) {
        refused.write('AUTHENTICATE "PLAIN"\r\n');
        expect(await refused.readLine()).toBe('""');
        expect((await refused.command(Buffer.from(cancel))).status).toMatch(/^NO "Authentication cancelled/);
      }
      // A continuation literal holding a line break and a command is not base64.
      refused.write('AUTHENTICATE "PLAIN"\r\n');
      expect(await refused.readLine()).toBe('""');
      expect((await refused.command(Buffer.concat([literal(`${plain('', BOB.name, BOB.password)}\r\nLOGOUT`), Buffer.from('\r\n')]))).status).toMatch(/^NO/);
      expect((await refused.command('CAPABILITY')).status).toMatch(/^OK/);
    } finally {
      refused.close();
    }
    await sleep(200);
    const logins = (await sieveLogins()).slice(before);
    expect(logins).toHaveLength(1);
    expect(logins[0]).toContain(`user=<${ALICE.name}>`);
  });

  it('bytes after STARTTLS in the same packet are discarded: a half line or an open literal cannot eat into the TLS session', async () => {
    const before = (await sieveLogins()).length;
    const hiddenLogin = `AUTHENTICATE "PLAIN" ${quoted(plain('', ALICE.name, ALICE.password))}`;
    for (const injected of [`NOOP {5000+}\r\n`, `AUTHENTICATE "PLAIN"\r\n`, hiddenLogin, `NOOP "`]) {
      const c = await RawSieve.connect({ port: stack.sieveStarttlsPort, tls: false, ca: stack.ca, localAddress: '127.0.0.17' });
      try {
        await c.readResponse();
        c.write(`STARTTLS\r\n${injected}`);
        const capabilities = await c.starttlsAfterWrite(stack.ca);
        expect(capabilities.status).toMatch(/^OK/);
        // The first line over TLS is a command of its own, not the end of the injected one.
        expect((await c.command('\r\nCAPABILITY')).status).toMatch(/^NO/);
        expect((await c.readResponse()).status).toMatch(/^OK "Capability completed/);
        expect((await c.command('LISTSCRIPTS')).status).toMatch(/^NO/);
      } finally {
        c.close();
      }
    }
    await sleep(200);
    expect((await sieveLogins()).slice(before)).toEqual([]);
  });
});

describe('after a token login, the way back to Dovecot’s pre-login stays shut', () => {
  it('UNAUTHENTICATE, XCLIENT and a second AUTHENTICATE with the master password reach a logged-in Dovecot, which refuses them', async () => {
    const logBefore = (await stack.dovecot.readLog()).length;
    const before = (await sieveLogins()).length;
    const c = await tls('127.0.0.26');
    try {
      expect((await c.command(authenticate('XOAUTH2', xoauth2(ALICE.name, aliceToken), 'quoted'))).status).toMatch(/^OK/);
      // From sasl-gate's trusted address these would re-open a login with the master password, or forge the client's address.
      expect((await c.command('UNAUTHENTICATE')).status).toMatch(/^NO/);
      expect((await c.command('XCLIENT ADDR=192.0.2.99 PORT=1')).status).toMatch(/^NO/);
      expect((await c.command(`AUTHENTICATE "PLAIN" ${quoted(plain('', `${BOB.name}*${MASTER.user}`, MASTER.password))}`)).status).toMatch(/^NO/);
      expect((await c.command(`AUTHENTICATE "PLAIN" ${quoted(plain(BOB.name, MASTER.user, MASTER.password))}`)).status).toMatch(/^NO/);
      // Still alice's session.
      expect((await c.command('LISTSCRIPTS')).status).toMatch(/^OK/);
    } finally {
      c.close();
    }
    await sleep(200);
    const logins = (await sieveLogins()).slice(before);
    expect(logins).toHaveLength(1);
    expect(logins[0]).toContain(`user=<${ALICE.name}>`);
    expect(logins[0]).toContain('rip=127.0.0.26');
    const log = (await stack.dovecot.readLog()).slice(logBefore);
    expect(log).not.toContain('192.0.2.99');
    expect(await masterMentions(logBefore)).toEqual([]);
  });
});

describe('generated pre-login ManageSieve sessions against the real server', () => {
  it('never a login other than the credential’s user, never one without a credential, and sasl-gate keeps serving', async () => {
    const runs = Number(process.env['ATTACK_SIEVE_RUNS'] ?? 8);
    const seed = Number(process.env['ATTACK_SIEVE_SEED'] ?? Date.now() % 2 ** 31);
    const separated = `${ALICE.name}*${MASTER.user}`;
    const names = [BOB.name, separated, MASTER.user, `${BOB.name}\r\n`, `"${BOB.name}`, `{5}\r\n${BOB.name}`, `\u0430lice@example.test`];
    const valid = xoauth2(ALICE.name, aliceToken);
    const string = (text: string) => fc.constantFrom(quoted(text), literal(text).toString('latin1'), `{${Buffer.byteLength(text)}}\r\n${text}`);
    const mechanism = fc.constantFrom('"XOAUTH2"', '"OAUTHBEARER"', '"PLAIN"', '"LOGIN"', '"xoauth2"', 'XOAUTH2', '"X"');
    const attack = fc.oneof(
      fc.constantFrom('CAPABILITY\r\n', 'NOOP\r\n', 'NOOP "t"\r\n', 'STARTTLS\r\n', 'LISTSCRIPTS\r\n', 'PUTSCRIPT "a" {6+}\r\nkeep;\r\n', 'HAVESPACE "a" 1\r\n'),
      fc.tuple(fc.constantFrom(...names), fc.constantFrom('XOAUTH2', 'OAUTHBEARER')).chain(([name, mech]) =>
        string(mech === 'XOAUTH2' ? xoauth2(name, aliceToken) : oauthbearer(name, aliceToken, 'localhost', stack.sievePort)).map((s) => `AUTHENTICATE "${mech}" ${s}\r\n`),
      ),
      fc.constantFrom(...names).chain((name) => string(plain('', name, MASTER.password)).map((s) => `AUTHENTICATE "PLAIN" ${s}\r\n`)),
      string(plain(BOB.name, ALICE.name, ALICE.password)).map((s) => `AUTHENTICATE "PLAIN" ${s}\r\n`),
      fc.constantFrom(...names).map((name) => `AUTHENTICATE "LOGIN" ${quoted(b64(name))}\r\n${quoted(b64(MASTER.password))}\r\n`),
      mechanism.map((m) => `AUTHENTICATE ${m}\r\n`),
      fc.constantFrom('"AQ=="\r\n', '"*"\r\n', '*\r\n', '\r\n', '"="\r\n', '{1+}\r\n*\r\n', `${b64(separated)}\r\n`, '\x01'),
      fc.nat({ max: 40 }).map((n) => `NOOP {${n}+}\r\n${`AUTHENTICATE "PLAIN" ${quoted(plain('', ALICE.name, ALICE.password))}\r\n`.slice(0, 30)}\r\n`),
      fc.constantFrom('{99999999999+}\r\n', 'NOOP {4294967296}\r\n', '"unterminated\r\n', '()\r\n', '\x00\r\n', '\xff\xfe\r\n', 'NOOP "a" "b"\r\n', 'AUTHENTICATE "PLAIN" "x" "y"\r\n'),
      fc.nat({ max: 3000 }).map((n) => `NOOP "${'z'.repeat(66_000 + n)}"\r\n`),
    );
    const validPiece = fc.constantFrom(`AUTHENTICATE "XOAUTH2" ${quoted(valid)}\r\n`, `AUTHENTICATE "XOAUTH2" ${literal(valid).toString('latin1')}\r\n`);
    const session = fc.record({
      pieces: fc.array(attack, { minLength: 1, maxLength: 10 }),
      credential: fc.option(fc.tuple(validPiece, fc.nat({ max: 10 })), { freq: 3 }),
      cuts: fc.array(fc.integer({ min: 1, max: 200 }), { minLength: 1, maxLength: 8 }),
    });
    const before = (await sieveLogins()).length;
    let withCredential = 0;
    await fc.assert(
      fc.asyncProperty(session, async ({ pieces, credential, cuts }) => {
        const script = [...pieces];
        if (credential) {
          withCredential += 1;
          script.splice(Math.min(credential[1], script.length), 0, credential[0]);
        }
        // A pending challenge gets its answer, then the session ends.
        const bytes = Buffer.from(`${script.join('')}"*"\r\nLOGOUT\r\n`, 'latin1');
        const c = await RawSieve.connect({ port: stack.sievePort, tls: true, ca: stack.ca, localAddress: credential ? '127.0.0.18' : '127.0.0.19' });
        try {
          let at = 0;
          for (let i = 0; at < bytes.length; i++) {
            const n = i < cuts.length ? cuts[i]! : bytes.length;
            c.write(bytes.subarray(at, at + n));
            at += n;
          }
          const deadline = Date.now() + 1500;
          while (!c.ended && Date.now() < deadline) await sleep(20);
        } finally {
          c.close();
        }
      }),
      { numRuns: runs, seed, endOnFailure: true },
    );
    // A fresh login still works: the process and its listener survived every session.
    const fresh = await tls('127.0.0.20');
    try {
      expect((await fresh.command(authenticate('OAUTHBEARER', oauthbearer(ALICE.name, aliceToken, 'localhost', stack.sievePort), 'literal'))).status).toMatch(/^OK/);
    } finally {
      fresh.close();
    }
    await sleep(300);
    const logins = (await sieveLogins()).slice(before);
    const context = `seed ${seed}, ${runs} runs`;
    expect(logins.filter((l) => !l.includes(`user=<${ALICE.name}>`)), context).toEqual([]);
    expect(logins.filter((l) => l.includes('rip=127.0.0.19')), context).toEqual([]);
    expect(logins.filter((l) => l.includes('rip=127.0.0.18')).length, context).toBeLessThanOrEqual(withCredential);
    expect(logins.filter((l) => l.includes('rip=127.0.0.20')), context).toHaveLength(1);
  }, 120_000);
});

/**
 * Attacks on app-password logins against real Dovecot and Postfix: alice's password presented for
 * bob (by name, as authzid, through the master separator, on every protocol and password form), in
 * other spellings of alice, outside its scope, and after revocation. The backends' own logs
 * (`Login: user=<...>`, Postfix's `sasl_username=`) are the witness of who got in.
 */
import { mkdtempSync, statSync } from 'node:fs';
import { connect as tlsConnect } from 'node:tls';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DATABASE_FILE, KEY_FILE } from '../../src/auth/app-passwords-sqlite.js';
import { secret } from '../support/evidence.js';
import { LineReader } from '../support/line-reader.js';
import { quoted as sieveQuoted, RawSieve } from '../support/sieve-raw.js';
import { RawSmtps } from '../support/smtps-raw.js';
import { MASTER, plain, startStack, TlsImap, USERS, type Stack } from '../support/stack.js';
import { sleep, waitFor } from '../support/wait.js';

const [ALICE, BOB] = USERS as [(typeof USERS)[0], (typeof USERS)[0]];
const stateDir = join(mkdtempSync(join(tmpdir(), 'sasl-gate-attack-apppw-')), 'state');

let stack: Stack;
/** alice's password for every protocol. */
let everywhere: string;
/** alice's password for SMTP only. */
let smtpOnly: string;

beforeAll(async () => {
  stack = await startStack({
    smtp: { login: 'master' },
    pop3: true,
    sieve: true,
    config: { storage: { dir: stateDir }, appPasswords: { enabled: true, lastUseWriteSeconds: 0 } },
  });
  const service = stack.gate.appPasswords!;
  everywhere = secret((await service.create({ user: ALICE.name, label: 'everywhere', protocols: ['imap', 'smtp', 'pop3', 'sieve'] })).password, 'app password');
  smtpOnly = secret((await service.create({ user: ALICE.name, label: 'printer', protocols: ['smtp'] })).password, 'app password');
});

afterAll(async () => {
  await stack?.close();
});

/** The users Dovecot logged in (any of its login services) in its log after `from` characters. */
async function dovecotLoginsSince(from: number): Promise<string[]> {
  return [...(await stack.dovecot.readLog()).slice(from).matchAll(/-login: Info: Login: user=<([^>]*)>/g)].map((m) => m[1]!);
}

const dovecotMark = async () => (await stack.dovecot.readLog()).length;

/** One IMAP command on a fresh connection; the tagged reply. */
async function imapOnce(command: string): Promise<string> {
  const imap = await TlsImap.connect(stack);
  try {
    return (await imap.command(command)).tagged;
  } finally {
    imap.close();
  }
}

const imapQuoted = (text: string) => `"${text.replace(/(["\\])/g, '\\$1')}"`;
const b64 = (text: string) => Buffer.from(text, 'utf8').toString('base64');

/** USER/PASS on a fresh POP3S connection; the reply to PASS. */
async function pop3UserPass(user: string, password: string): Promise<string> {
  const socket = tlsConnect({ host: '127.0.0.1', port: stack.pop3Port, ca: stack.ca, servername: 'localhost' });
  await new Promise<void>((resolve, reject) => {
    socket.once('secureConnect', resolve);
    socket.once('error', reject);
  });
  const reader = new LineReader(socket);
  try {
    expect(await reader.next(5000)).toMatch(/^\+OK/);
    socket.write(`USER ${user}\r\n`);
    expect(await reader.next(5000)).toMatch(/^\+OK/);
    socket.write(`PASS ${password}\r\n`);
    return await reader.next(10_000);
  } finally {
    socket.destroy();
  }
}

/** AUTHENTICATE "PLAIN" on a fresh implicit-TLS ManageSieve connection; the final status. */
async function sievePlain(authzid: string, user: string, password: string): Promise<string> {
  const sieve = await RawSieve.connect({ port: stack.sievePort, tls: true, ca: stack.ca });
  try {
    expect((await sieve.readResponse()).status).toMatch(/^OK/);
    return (await sieve.command(`AUTHENTICATE "PLAIN" ${sieveQuoted(plain(authzid, user, password))}`)).status;
  } finally {
    sieve.close();
  }
}

/** AUTH PLAIN on a fresh SMTPS connection; the reply code. */
async function smtpPlain(authzid: string, user: string, password: string): Promise<number> {
  const smtp = await RawSmtps.connect({ host: '127.0.0.1', port: stack.smtpPort, ca: stack.ca });
  try {
    await smtp.command('EHLO attacker.example');
    return (await smtp.command(`AUTH PLAIN ${plain(authzid, user, password)}`)).code;
  } finally {
    smtp.close();
  }
}

describe('alice’s app password never opens bob’s mailbox', () => {
  it('IMAP LOGIN, AUTHENTICATE PLAIN (with and without authzid), LOGIN mechanism, master separator: no login as bob', async () => {
    const mark = await dovecotMark();
    const attempts = [
      `LOGIN ${imapQuoted(BOB.name)} ${imapQuoted(everywhere)}`,
      `LOGIN {${BOB.name.length}+}\r\n${BOB.name} {${everywhere.length}+}\r\n${everywhere}`,
      `AUTHENTICATE PLAIN ${plain('', BOB.name, everywhere)}`,
      // alice's name and password, asking to act as bob.
      `AUTHENTICATE PLAIN ${plain(BOB.name, ALICE.name, everywhere)}`,
      `AUTHENTICATE PLAIN ${plain('', `${BOB.name}*${MASTER.user}`, everywhere)}`,
      `AUTHENTICATE PLAIN ${plain('', `${ALICE.name}*${BOB.name}`, everywhere)}`,
    ];
    const replies = await Promise.all(attempts.map((command) => imapOnce(command)));
    replies.forEach((reply, i) => expect(reply, attempts[i]).toMatch(/^t1 NO /));

    // The LOGIN mechanism, bob's name with alice's password.
    const imap = await TlsImap.connect(stack);
    try {
      imap.write(`t1 AUTHENTICATE LOGIN ${b64(BOB.name)}\r\n`);
      expect(await imap.readLine()).toMatch(/^\+ /);
      imap.write(`${secret(b64(everywhere), 'LOGIN password response')}\r\n`);
      expect(await imap.readLine()).toMatch(/^t1 NO /);
    } finally {
      imap.close();
    }
    await sleep(200);
    expect(await dovecotLoginsSince(mark)).toEqual([]);
  });

  it('POP3 USER/PASS and ManageSieve PLAIN with bob’s name or as bob: no login as bob', async () => {
    const mark = await dovecotMark();
    const [pop3, sieveAsBob, sieveForBob] = await Promise.all([
      pop3UserPass(BOB.name, everywhere),
      sievePlain('', BOB.name, everywhere),
      sievePlain(BOB.name, ALICE.name, everywhere),
    ]);
    expect(pop3).toMatch(/^-ERR /);
    expect(sieveAsBob).toMatch(/^NO/);
    expect(sieveForBob).toMatch(/^NO/);
    await sleep(200);
    expect(await dovecotLoginsSince(mark)).toEqual([]);
  });

  it('SMTP AUTH PLAIN as bob or for bob: refused, and Postfix names no one but alice', async () => {
    const before = (await stack.postfix!.readLog()).length;
    expect(await Promise.all([smtpPlain('', BOB.name, everywhere), smtpPlain(BOB.name, ALICE.name, everywhere), smtpPlain('', ALICE.name, everywhere)])).toEqual([
      535, 535, 235,
    ]);
    await sleep(300);
    const log = (await stack.postfix!.readLog()).slice(before).split('\n');
    // bob's name reaches Postfix only as a failed pass-through login (alice's password is not his).
    const bobLines = log.filter((l) => l.includes('sasl_username=bob@'));
    expect(bobLines.length).toBeGreaterThan(0);
    expect(bobLines.every((l) => /SASL PLAIN authentication failed/.test(l))).toBe(true);
    // One authenticated session in all: alice's own.
    expect(log.filter((l) => /disconnect from .* auth=1\b/.test(l))).toHaveLength(1);
  });
});

describe('other spellings of alice log in as alice, and only as alice', () => {
  it('upper case reaches Dovecot as the stored name; +tag, a trailing dot, surrounding space and look-alikes do not get in', async () => {
    const mark = await dovecotMark();
    expect(await imapOnce(`LOGIN ${imapQuoted(ALICE.name.toUpperCase())} ${imapQuoted(everywhere.toUpperCase())}`)).toMatch(/^t1 OK /);
    expect(await imapOnce(`AUTHENTICATE PLAIN ${plain('', 'Alice@Example.Test', everywhere.replace(/-/g, ' '))}`)).toMatch(/^t1 OK /);
    // Full-width and Turkish dotless letters too: spellings with failure delays of their own.
    const spellings = ['alice+tag@example.test', 'alice@example.test.', 'aIice@example.test', 'alice@examp1e.test', ` ${ALICE.name}`, 'ａlice@example.test', 'alıce@example.test'];
    const replies = await Promise.all(spellings.map((spelling) => imapOnce(`AUTHENTICATE PLAIN ${plain('', spelling, everywhere)}`)));
    replies.forEach((reply, i) => expect(reply, spellings[i]).toMatch(/^t1 (NO|BAD) /));
    // Both successful logins are in Dovecot's log before anything is judged (and before the next test marks it).
    await waitFor(async () => (await dovecotLoginsSince(mark)).length >= 2);
    await sleep(200);
    const logins = await dovecotLoginsSince(mark);
    // Any login that happened named the stored user, spelled as stored.
    expect(logins.every((u) => u === ALICE.name)).toBe(true);
    expect(logins.length).toBeGreaterThanOrEqual(2);
    const apw = stack.logs.filter((l) => l['credential'] === 'app_password' && l['msg'] === 'authenticated');
    expect(apw.length).toBeGreaterThanOrEqual(2);
    expect(apw.every((l) => l['user'] === ALICE.name)).toBe(true);
  });

  it('a password with extra letters, a look-alike letter or full-width letters is not alice’s', async () => {
    const letters = everywhere.replace(/-/g, '');
    const tricks = [
      `${letters}a`,
      letters.slice(1),
      `ı${letters.slice(1)}`,
      `\u212a${letters.slice(1)}`,
      letters.replace(/[a-z]/, (c) => String.fromCharCode(c.charCodeAt(0) + 0xfee0)),
      [...letters].map((c) => String.fromCharCode(c.charCodeAt(0) + 0xfee0)).join(''),
    ];
    const mark = await dovecotMark();
    const replies = await Promise.all(tricks.map((password) => imapOnce(`AUTHENTICATE PLAIN ${plain('', ALICE.name, secret(password, 'app password variant'))}`)));
    replies.forEach((reply, i) => expect(reply, tricks[i]).toMatch(/^t1 NO /));
    await sleep(200);
    expect(await dovecotLoginsSince(mark)).toEqual([]);
  });
});

describe('scope and revocation', () => {
  it('an SMTP-only password opens no IMAP, POP3 or ManageSieve session, and still sends', async () => {
    const mark = await dovecotMark();
    const [login, authenticate, pop3, sieve] = await Promise.all([
      imapOnce(`LOGIN ${imapQuoted(ALICE.name)} ${imapQuoted(smtpOnly)}`),
      imapOnce(`AUTHENTICATE PLAIN ${plain('', ALICE.name, smtpOnly)}`),
      pop3UserPass(ALICE.name, smtpOnly),
      sievePlain('', ALICE.name, smtpOnly),
    ]);
    expect(login).toMatch(/^t1 NO /);
    expect(authenticate).toMatch(/^t1 NO /);
    expect(pop3).toMatch(/^-ERR /);
    expect(sieve).toMatch(/^NO/);
    await sleep(200);
    expect(await dovecotLoginsSince(mark)).toEqual([]);
    expect(await smtpPlain('', ALICE.name, smtpOnly)).toBe(235);
  });

  it('a revoked password ends at once on every protocol, also after its use was recorded', async () => {
    const service = stack.gate.appPasswords!;
    const { password } = await service.create({ user: ALICE.name, label: 'soon revoked', protocols: ['imap', 'smtp', 'pop3', 'sieve'] });
    secret(password, 'app password');
    const before = await dovecotMark();
    expect(await imapOnce(`AUTHENTICATE PLAIN ${plain('', ALICE.name, password)}`)).toMatch(/^t1 OK /);
    // Dovecot's line for that login first, so it is not taken for a later one.
    await waitFor(async () => (await dovecotLoginsSince(before)).length === 1);
    expect(await service.revokeByLabel(ALICE.name.toUpperCase(), 'soon revoked')).toBe(true);
    const mark = await dovecotMark();
    const [imap, pop3, sieve, smtp] = await Promise.all([
      imapOnce(`AUTHENTICATE PLAIN ${plain('', ALICE.name, password)}`),
      pop3UserPass(ALICE.name, password),
      sievePlain('', ALICE.name, password),
      smtpPlain('', ALICE.name, password),
    ]);
    expect(imap).toMatch(/^t1 NO /);
    expect(pop3).toMatch(/^-ERR /);
    expect(sieve).toMatch(/^NO/);
    expect(smtp).toBe(535);
    await sleep(200);
    expect(await dovecotLoginsSince(mark)).toEqual([]);
    expect((await service.list(ALICE.name)).map((r) => r.label)).not.toContain('soon revoked');
  });

  it('the state files are private: directory 0700, database and key 0600', () => {
    expect(statSync(stateDir).mode & 0o777).toBe(0o700);
    expect(statSync(join(stateDir, DATABASE_FILE)).mode & 0o777).toBe(0o600);
    expect(statSync(join(stateDir, KEY_FILE)).mode & 0o777).toBe(0o600);
    for (const extra of ['-wal', '-shm']) {
      const mode = statSync(join(stateDir, `${DATABASE_FILE}${extra}`), { throwIfNoEntry: false })?.mode;
      if (mode !== undefined) expect(mode & 0o077, extra).toBe(0);
    }
  });
});

/**
 * The private Dovecot gives sasl-gate what it relies on in production: password logins, master-user
 * logins with the real client address taken from ID, refusal of unknown users, and clean shutdown.
 */
import { connect, createServer } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startDovecot, type DovecotInstance } from '../../tools/dovecot.js';
import { RawImap, quoted, saslPlain } from '../support/imap-raw.js';
import { waitForLine } from '../support/wait.js';

const ALICE = { name: 'alice@example.test', password: 'correct horse: "battery"' };
const BOB = { name: 'bob@example.test', password: 'bob-secret' };
const MASTER = { user: 'sasl-gate', password: 'master-secret-42' };
const ID_COMMAND = 'ID ("x-originating-ip" "203.0.113.9" "x-originating-port" "50000" "x-session-id" "abc123")';

/*
 * What Dovecot 2.3.19.1 (Debian bookworm) sends with this configuration:
 *
 * Greeting (pre-login capabilities; CAPABILITY before login lists the same and answers
 * "OK Pre-login capabilities listed, post-login capabilities have more."):
 *   * OK [CAPABILITY IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE LITERAL+ AUTH=PLAIN AUTH=LOGIN] Dovecot (Debian) ready.
 *
 * Reply to ID: `* ID ("name" "Dovecot")` then `<tag> OK ID completed.`
 *
 * Successful LOGIN / AUTHENTICATE (also for a master login), post-login capabilities in the code:
 *   <tag> OK [CAPABILITY IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE SORT SORT=DISPLAY THREAD=REFERENCES THREAD=REFS THREAD=ORDEREDSUBJECT MULTIAPPEND URL-PARTIAL CATENATE UNSELECT CHILDREN NAMESPACE UIDPLUS LIST-EXTENDED I18NLEVEL=1 CONDSTORE QRESYNC ESEARCH ESORT SEARCHRES WITHIN CONTEXT=SEARCH LIST-STATUS BINARY MOVE SNIPPET=FUZZY PREVIEW=FUZZY PREVIEW STATUS=SIZE SAVEDATE LITERAL+ NOTIFY] Logged in
 * But when the connection issued CAPABILITY before logging in, Dovecot sends the same list as an
 * untagged `* CAPABILITY ...` line and a bare `<tag> OK Logged in` instead.
 *
 * Failures: wrong password or wrong master password `NO [AUTHENTICATIONFAILED] Authentication failed.`;
 * master login as a user that does not exist `NO [AUTHORIZATIONFAILED] Authorization failed`.
 */

function waitForLog(dovecot: DovecotInstance, pattern: RegExp): Promise<string> {
  return waitForLine(() => dovecot.readLog(), pattern);
}

function canListen(host: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = createServer();
    server.once('error', () => resolve(false));
    server.listen({ host, port, exclusive: true }, () => server.close(() => resolve(true)));
  });
}

/** Talks LMTP line by line: sends each command and returns the final line of each reply (multi-line replies included). */
async function lmtpSession(host: string, port: number, commands: string[]): Promise<string[]> {
  const socket = connect({ host, port });
  const lines: string[] = [];
  let buffered = '';
  let notify: (() => void) | undefined;
  socket.on('data', (chunk: Buffer) => {
    buffered += chunk.toString('latin1');
    for (let end = buffered.indexOf('\r\n'); end >= 0; end = buffered.indexOf('\r\n')) {
      lines.push(buffered.slice(0, end));
      buffered = buffered.slice(end + 2);
    }
    notify?.();
  });
  const finalLine = async (): Promise<string> => {
    for (;;) {
      const line = lines.shift();
      // "250-..." continues a reply, "250 ..." ends it.
      if (line !== undefined && line[3] !== '-') return line;
      if (line === undefined) await new Promise<void>((resolve) => (notify = resolve));
    }
  };
  try {
    const replies = [await finalLine()];
    for (const command of commands) {
      socket.write(`${command}\r\n`, 'latin1');
      replies.push(await finalLine());
    }
    return replies;
  } finally {
    socket.destroy();
  }
}

/** ID that makes Dovecot account the session to `ip`; failures are penalised per address. */
function idCommand(ip: string, sessionId = `t${Date.now()}`): string {
  return `ID ("x-originating-ip" "${ip}" "x-originating-port" "50000" "x-session-id" "${sessionId}")`;
}

describe('private Dovecot for integration tests', () => {
  let dovecot: DovecotInstance;

  beforeAll(async () => {
    dovecot = await startDovecot({ users: [ALICE, BOB], master: MASTER });
  });

  afterAll(async () => {
    await dovecot?.stop();
  });

  it('greets with its pre-login capabilities', async () => {
    const imap = await RawImap.connect(dovecot.host, dovecot.imapPort);
    try {
      expect(imap.greeting).toMatch(/^\* OK \[CAPABILITY IMAP4rev1 .*\bAUTH=PLAIN AUTH=LOGIN\] /);
      expect(imap.greeting).toContain('SASL-IR');
      expect(imap.greeting).toContain(' ID ');
    } finally {
      imap.close();
    }
  });

  it('accepts a user password and refuses a wrong one', async () => {
    const good = await RawImap.connect(dovecot.host, dovecot.imapPort);
    try {
      const reply = await good.command(`LOGIN ${quoted(ALICE.name)} ${quoted(ALICE.password)}`);
      expect(reply.status).toBe('OK');
      expect(reply.untagged).toEqual([]);
      expect(reply.text).toMatch(/^\[CAPABILITY IMAP4rev1 [^\]]*\] Logged in$/);
      const select = await good.command('SELECT INBOX');
      expect(select.status).toBe('OK');
    } finally {
      good.close();
    }

    const bad = await RawImap.connect(dovecot.host, dovecot.imapPort);
    try {
      // A private address per failing test keeps Dovecot's per-IP penalty from slowing the others.
      expect((await bad.command(idCommand('198.51.100.1'))).status).toBe('OK');
      const reply = await bad.command(`LOGIN ${quoted(ALICE.name)} ${quoted('wrong password')}`);
      expect(reply.status).toBe('NO');
      expect(reply.text).toMatch(/^\[AUTHENTICATIONFAILED\]/);
    } finally {
      bad.close();
    }
  });

  it('sends post-login capabilities untagged when CAPABILITY was asked before login', async () => {
    const imap = await RawImap.connect(dovecot.host, dovecot.imapPort);
    try {
      const pre = await imap.command('CAPABILITY');
      expect(pre.untagged).toEqual([imap.greeting.replace(/^\* OK \[(CAPABILITY [^\]]*)\].*$/, '* $1')]);
      const login = await imap.command(`LOGIN ${quoted(BOB.name)} ${quoted(BOB.password)}`);
      expect(login.status).toBe('OK');
      expect(login.text).toBe('Logged in');
      expect(login.untagged).toHaveLength(1);
      expect(login.untagged[0]).toMatch(/^\* CAPABILITY IMAP4rev1 .* NAMESPACE /);
    } finally {
      imap.close();
    }
  });

  it('lets the master user log in as alice and logs the client address from ID', async () => {
    const imap = await RawImap.connect(dovecot.host, dovecot.imapPort);
    try {
      const id = await imap.command(ID_COMMAND);
      expect(id.status).toBe('OK');
      expect(id.untagged).toEqual(['* ID ("name" "Dovecot")']);
      const auth = await imap.command(`AUTHENTICATE PLAIN ${saslPlain(ALICE.name, MASTER.user, MASTER.password)}`);
      expect(auth.status).toBe('OK');
      expect(auth.untagged).toEqual([]);
      expect(auth.text).toMatch(/^\[CAPABILITY IMAP4rev1 [^\]]*\] Logged in$/);
      const select = await imap.command('SELECT INBOX');
      expect(select.status).toBe('OK');
    } finally {
      imap.close();
    }
    const line = await waitForLog(dovecot, /imap-login: Info: Login: user=<alice@example\.test>.*rip=203\.0\.113\.9/);
    expect(line).toContain('method=PLAIN');
    expect(line).toContain('session=<abc123>');
    expect(line).toContain('lip=127.0.0.1');
    expect(await dovecot.readLog()).toContain('auth: Info: Master user logging in as alice@example.test');
    expect(await dovecot.readLog()).not.toContain(MASTER.password);
  });

  it('delivers over LMTP into the mailbox the user then reads over IMAP', async () => {
    const replies = await lmtpSession(dovecot.host, dovecot.lmtpPort, [
      'LHLO devstack.test',
      'MAIL FROM:<sender@example.org>',
      `RCPT TO:<${BOB.name}>`,
      'RCPT TO:<nobody-here@example.test>',
      'DATA',
      'Subject: devstack\r\n\r\nhello bob\r\n.',
      'QUIT',
    ]);
    expect(replies[0]).toMatch(/^220 /);
    expect(replies[3]).toMatch(/^250 /);
    expect(replies[4]).toMatch(/^550 5\.1\.1 /);
    expect(replies[5]).toMatch(/^354 /);
    expect(replies[6]).toMatch(/^250 2\.0\.0 <bob@example\.test> .* Saved$/);

    const imap = await RawImap.connect(dovecot.host, dovecot.imapPort);
    try {
      await imap.command(`LOGIN ${quoted(BOB.name)} ${quoted(BOB.password)}`);
      const select = await imap.command('SELECT INBOX');
      expect(select.untagged).toContain('* 1 EXISTS');
    } finally {
      imap.close();
    }
  });

  it('refuses a master login as a user that does not exist', async () => {
    const imap = await RawImap.connect(dovecot.host, dovecot.imapPort);
    try {
      expect((await imap.command(idCommand('198.51.100.2'))).status).toBe('OK');
      const auth = await imap.command(
        `AUTHENTICATE PLAIN ${saslPlain('nobody-here@example.test', MASTER.user, MASTER.password)}`,
      );
      expect(auth.status).toBe('NO');
      // Authorization, not authentication: the master's password was right.
      expect(auth.text).toBe('[AUTHORIZATIONFAILED] Authorization failed');
    } finally {
      imap.close();
    }
    await waitForLog(dovecot, /imap-login: .*\(authorization failed, .*user=<nobody-here@example\.test>.*rip=198\.51\.100\.2/);
  });

  it('refuses the master user with a wrong master password', async () => {
    const imap = await RawImap.connect(dovecot.host, dovecot.imapPort);
    try {
      expect((await imap.command(idCommand('198.51.100.3'))).status).toBe('OK');
      const auth = await imap.command(`AUTHENTICATE PLAIN ${saslPlain(ALICE.name, MASTER.user, 'not-the-master')}`);
      expect(auth.status).toBe('NO');
      expect(auth.text).toMatch(/^\[AUTHENTICATIONFAILED\]/);
    } finally {
      imap.close();
    }
    // The failure is logged under the master user's name, not the user it tried to become.
    await waitForLog(dovecot, /imap-login: .*\(auth failed, .*user=<sasl-gate>.*rip=198\.51\.100\.3/);
  });

  it('runs beside another instance, and stop() frees the port and may be repeated', async () => {
    const other = await startDovecot({ users: [BOB], master: MASTER, authPenalty: false });
    try {
      expect(other.imapPort).not.toBe(dovecot.imapPort);
      expect(other.dir).not.toBe(dovecot.dir);

      // Without the penalty a second failure from the same address costs only auth_failure_delay (2 s), not 2 + 4 s.
      for (const password of ['wrong-1', 'wrong-2']) {
        const started = Date.now();
        const failing = await RawImap.connect(other.host, other.imapPort);
        const reply = await failing.command(`LOGIN ${quoted(BOB.name)} ${quoted(password)}`);
        failing.close();
        expect(reply.status).toBe('NO');
        expect(Date.now() - started).toBeLessThan(4_000);
      }

      const imap = await RawImap.connect(other.host, other.imapPort);
      const reply = await imap.command(`LOGIN ${quoted(BOB.name)} ${quoted(BOB.password)}`);
      expect(reply.status).toBe('OK');
      // An open session must not keep the port bound after stop().
      await Promise.all([other.stop(), other.stop()]);
      imap.close();
    } finally {
      await other.stop();
    }
    await expect(RawImap.connect(other.host, other.imapPort, 1_000)).rejects.toThrow(/ECONNREFUSED/);
    expect(await canListen(other.host, other.imapPort)).toBe(true);
    expect(await canListen(other.host, other.lmtpPort)).toBe(true);
    expect(await other.readLog()).toContain('Login: user=<bob@example.test>');
    // The first instance is untouched.
    const still = await RawImap.connect(dovecot.host, dovecot.imapPort);
    expect(still.greeting).toMatch(/^\* OK /);
    still.close();
  }, 40_000);
});

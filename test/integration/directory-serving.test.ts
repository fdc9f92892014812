/**
 * The user directory served to the real mail servers: Postfix asks sasl-gate's socketmap
 * (`virtual_mailbox_maps`, `virtual_alias_maps`, `smtpd_sender_login_maps`) and Dovecot reads the
 * passwd-file userdb sasl-gate keeps. A user added to the directory (or created over SCIM) receives
 * mail before ever logging in; an alias delivers to its mailbox; a disabled user keeps receiving
 * for the grace period and is then refused with 550 5.1.1; a directory that cannot answer makes
 * Postfix defer (451), never bounce.
 */
import { randomBytes } from 'node:crypto';
import { chmod, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PasswdFileWriter } from '../../src/directory/dovecot.js';
import { createScimHandler, SCIM_PATCH_OP, SCIM_USER_SCHEMA } from '../../src/directory/scim.js';
import { startSocketmapServer, type SocketmapServer } from '../../src/directory/socketmap.js';
import { startDovecot, type DovecotInstance } from '../../tools/dovecot.js';
import { startPostfix, type PostfixInstance } from '../../tools/postfix.js';
import { RawImap, quoted, saslPlain } from '../support/imap-raw.js';
import { RawSmtp } from '../support/smtp-raw.js';
import { MemoryDirectory } from '../support/memory-directory.js';
import { sleep, waitFor, waitForLine } from '../support/wait.js';


const DOMAIN = 'example.test';
const HOUR = 3_600_000;
const ALICE = { name: 'alice@example.test', password: 'alice-static-Pa55' };
const MASTER = { user: 'sasl-gate', password: 'master-secret-directory-42' };
const SCIM_TOKEN = 'scim-integration-token-5f1e2d3c4b5a6978';
const USER_UNKNOWN = /^550 5\.1\.1 <[^>]+>: Recipient address rejected: User unknown in virtual mailbox table$/;

const subjectToken = (): string => `directory-${randomBytes(6).toString('hex')}`;
const message = (from: string, to: string, subject: string): string =>
  `From: <${from}>\r\nTo: <${to}>\r\nSubject: ${subject}\r\n\r\nhello from the directory test\r\n`;

/**
 * Dovecot notices a replaced passwd-file on the first lookup in a later second than its last
 * check, so a user written now is certain to be seen from the next second on.
 */
const dovecotCatchesUp = (): Promise<void> => sleep(1_100);

describe('the user directory served to real Postfix and Dovecot', () => {
  let dir: string;
  let directory: MemoryDirectory;
  let socketmap: SocketmapServer;
  let dovecot: DovecotInstance;
  let postfix: PostfixInstance;
  let writer: PasswdFileWriter;
  let scim: Server;
  let scimBase: string;
  let usersFile: string;

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'sasl-gate-dirserve-'));
    // Dovecot's auth process (another account) reads the file.
    await chmod(dir, 0o755);
    usersFile = join(dir, 'dovecot-users');
    await writeFile(usersFile, '', { mode: 0o644 });
    directory = new MemoryDirectory(HOUR);
    socketmap = await startSocketmapServer(directory, { host: '127.0.0.1', port: 0 });
    dovecot = await startDovecot({
      users: [ALICE],
      master: MASTER,
      authPenalty: false,
      passwdFiles: [{ path: usersFile, passdb: true }],
    });
    writer = new PasswdFileWriter(directory, {
      path: usersFile,
      uid: dovecot.mailUid,
      gid: dovecot.mailGid,
      home: `${dovecot.dir}/home/{mailbox}`,
      refreshIntervalMs: 1_000,
      debounceMs: 50,
      now: () => directory.now(),
    });
    await writer.start();
    postfix = await startPostfix({
      dovecot,
      domain: DOMAIN,
      inbound: true,
      directoryMaps: { host: socketmap.host, port: socketmap.port, senders: true, staticMailboxes: [ALICE.name] },
    });
    scim = createServer(
      createScimHandler(directory, { token: SCIM_TOKEN, domains: [DOMAIN], onChange: () => writer.schedule() }),
    );
    await new Promise<void>((resolve) => scim.listen(0, '127.0.0.1', resolve));
    scimBase = `http://127.0.0.1:${(scim.address() as AddressInfo).port}/scim/v2`;
  });

  afterAll(async () => {
    await new Promise<void>((resolve) => (scim ? scim.close(() => resolve()) : resolve()));
    await writer?.stop();
    await postfix?.stop();
    await dovecot?.stop();
    await socketmap?.close();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  /** One SMTP transaction on the MX-style port, as mail from the internet arrives; returns the RCPT reply and, when accepted, the queue id. */
  async function deliverFromOutside(rcpt: string, subject = subjectToken()): Promise<{ rcpt: string; queueId?: string; subject: string }> {
    const smtp = await RawSmtp.connect(postfix.host, postfix.inboundPort!);
    try {
      expect((await smtp.command('EHLO mx.example.org')).code).toBe(250);
      expect((await smtp.command('MAIL FROM:<someone@example.org>')).code).toBe(250);
      const reply = await smtp.command(`RCPT TO:<${rcpt}>`);
      const line = reply.lines.at(-1)!;
      if (reply.code !== 250) return { rcpt: line, subject };
      const data = await smtp.data(message('someone@example.org', rcpt, subject));
      const queued = /^2\.0\.0 Ok: queued as ([0-9A-Za-z]+)$/.exec(data.text);
      expect(queued, `DATA answered ${data.code} ${data.text}`).not.toBeNull();
      await smtp.command('QUIT');
      return { rcpt: line, queueId: queued![1]!, subject };
    } finally {
      smtp.close();
    }
  }

  /** Logs into Dovecot as `user` the way sasl-gate does (master user, authzid = user). */
  async function masterLogin(user: string): Promise<{ imap: RawImap; status: string; text: string }> {
    const imap = await RawImap.connect(dovecot.host, dovecot.imapPort);
    const reply = await imap.command(`AUTHENTICATE PLAIN ${saslPlain(user, MASTER.user, MASTER.password)}`);
    return { imap, status: reply.status, text: reply.text };
  }

  async function waitForMail(user: string, subject: string, timeoutMs = 15_000): Promise<void> {
    let postfixLog = '';
    await waitFor(
      async () => {
        const { imap, status, text } = await masterLogin(user);
        try {
          expect(status, `master login as ${user}: ${text}`).toBe('OK');
          expect((await imap.command('SELECT INBOX')).status).toBe('OK');
          const search = await imap.command(`SEARCH HEADER Subject ${quoted(subject)}`);
          if (search.untagged.some((line) => /^\* SEARCH \d/.test(line))) return true;
        } finally {
          imap.close();
        }
        postfixLog = await postfix.readLog();
        return false;
      },
      { timeoutMs, intervalMs: 200, what: () => `a message "${subject}" for ${user}\n--- postfix log ---\n${postfixLog.slice(-3000)}` },
    );
  }

  function waitForLog(pattern: RegExp, timeoutMs = 10_000): Promise<string> {
    return waitForLine(() => postfix.readLog(), pattern, { timeoutMs, intervalMs: 100 });
  }

  /** Talks LMTP to Dovecot directly: the RCPT reply for an address. */
  async function lmtpRcpt(address: string): Promise<string> {
    const socket = connect({ host: dovecot.host, port: dovecot.lmtpPort });
    const lines: string[] = [];
    let buffered = '';
    let wake: (() => void) | undefined;
    socket.on('data', (chunk: Buffer) => {
      buffered += chunk.toString('latin1');
      for (let end = buffered.indexOf('\r\n'); end >= 0; end = buffered.indexOf('\r\n')) {
        lines.push(buffered.slice(0, end));
        buffered = buffered.slice(end + 2);
      }
      wake?.();
    });
    const final = async (): Promise<string> => {
      for (;;) {
        const line = lines.shift();
        if (line !== undefined && line[3] !== '-') return line;
        if (line === undefined) await new Promise<void>((resolve) => (wake = resolve));
      }
    };
    try {
      await final();
      for (const command of ['LHLO test.example', 'MAIL FROM:<someone@example.org>']) {
        socket.write(`${command}\r\n`);
        await final();
      }
      socket.write(`RCPT TO:<${address}>\r\n`);
      return await final();
    } finally {
      socket.destroy();
    }
  }

  async function scimCall(method: string, path: string, body?: unknown): Promise<{ status: number; body: any }> { // eslint-disable-line @typescript-eslint/no-explicit-any
    const res = await fetch(`${scimBase}${path}`, {
      method,
      headers: { authorization: `Bearer ${SCIM_TOKEN}`, 'content-type': 'application/scim+json' },
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
    });
    const text = await res.text();
    return { status: res.status, body: text === '' ? undefined : JSON.parse(text) };
  }

  const fileHolds = async (mailbox: string): Promise<boolean> =>
    (await readFile(usersFile, 'utf8')).split('\n').some((l) => l.startsWith(`${mailbox}:`));

  async function waitForFile(mailbox: string, present: boolean, timeoutMs = 5_000): Promise<void> {
    await waitFor(async () => (await fileHolds(mailbox)) === present, {
      timeoutMs,
      what: `${mailbox} ${present ? 'to appear in' : 'to leave'} ${usersFile}`,
    });
  }

  it('delivers to a user added to the directory who never logged in, and refuses unknown addresses 550 5.1.1', async () => {
    directory.upsert({ id: 'carol-1', mailbox: 'carol@example.test', aliases: ['info@example.test'], active: true, groups: [] });
    await writer.refresh();
    await dovecotCatchesUp();

    const sent = await deliverFromOutside('carol@example.test');
    expect(sent.rcpt).toBe('250 2.1.5 Ok');
    await waitForMail('carol@example.test', sent.subject);
    const relay = `relay=127\\.0\\.0\\.1\\[127\\.0\\.0\\.1\\]:${dovecot.lmtpPort}`;
    await waitForLog(new RegExp(`${sent.queueId}: to=<carol@example\\.test>, ${relay},.* status=sent`));

    const unknown = await deliverFromOutside('nobody@example.test');
    expect(unknown.rcpt).toMatch(USER_UNKNOWN);
    expect(unknown.rcpt).toContain('<nobody@example.test>');
    // Dovecot's own static users still receive through the static map beside the directory.
    expect((await deliverFromOutside(ALICE.name)).rcpt).toBe('250 2.1.5 Ok');
  });

  it('delivers mail for an alias into its mailbox', async () => {
    const sent = await deliverFromOutside('info@example.test');
    expect(sent.rcpt).toBe('250 2.1.5 Ok');
    await waitForMail('carol@example.test', sent.subject);
    await waitForLog(new RegExp(`${sent.queueId}: to=<carol@example\\.test>, orig_to=<info@example\\.test>,.* status=sent`));
  });

  it('lets the master user in as a directory-only user, but nobody in by password', async () => {
    const { imap, status } = await masterLogin('carol@example.test');
    imap.close();
    expect(status).toBe('OK');
    for (const password of ['', '{CRYPT}!']) {
      const direct = await RawImap.connect(dovecot.host, dovecot.imapPort);
      try {
        const reply = await direct.command(`LOGIN ${quoted('carol@example.test')} ${quoted(password)}`);
        expect(reply.status, `password ${JSON.stringify(password)}`).toBe('NO');
      } finally {
        direct.close();
      }
    }
  });

  it('binds senders to their directory addresses on submission (smtpd_sender_login_maps)', async () => {
    const smtp = await RawSmtp.connect(postfix.host, postfix.submissionPort);
    try {
      await smtp.command('EHLO client.example');
      // sasl-gate's `login: master` path: the master user submitting as carol.
      const auth = await smtp.command(`AUTH PLAIN ${saslPlain('carol@example.test', MASTER.user, MASTER.password)}`);
      expect(auth.code).toBe(235);
      expect((await smtp.command('MAIL FROM:<info@example.test>')).lines).toEqual(['250 2.1.0 Ok']);
      await smtp.command('RSET');
      expect((await smtp.command('MAIL FROM:<carol@example.test>')).code).toBe(250);
      await smtp.command('RSET');
      expect((await smtp.command(`MAIL FROM:<${ALICE.name}>`)).lines).toEqual([
        `553 5.7.1 <${ALICE.name}>: Sender address rejected: not owned by user carol@example.test`,
      ]);
    } finally {
      smtp.close();
    }
  });

  it('keeps accepting mail for a disabled user during the grace period, then refuses it 550 5.1.1', async () => {
    directory.upsert({ id: 'dave-1', mailbox: 'dave@example.test', aliases: ['dave.old@example.test'], active: true, groups: [] });
    await writer.refresh();
    await dovecotCatchesUp();
    const before = await deliverFromOutside('dave@example.test');
    expect(before.rcpt).toBe('250 2.1.5 Ok');
    await waitForMail('dave@example.test', before.subject);

    directory.upsert({ ...directory.users.get('dave-1')!, active: false });
    await writer.refresh();
    // Within the grace period: accepted and delivered (Dovecot still knows dave).
    const during = await deliverFromOutside('dave.old@example.test');
    expect(during.rcpt).toBe('250 2.1.5 Ok');
    await waitForMail('dave@example.test', during.subject);
    expect(await fileHolds('dave@example.test')).toBe(true);

    // Past it: Postfix refuses the mailbox and the alias; Dovecot no longer knows the user either.
    directory.offsetMs += 2 * HOUR;
    await writer.refresh();
    expect(await fileHolds('dave@example.test')).toBe(false);
    expect((await deliverFromOutside('dave@example.test')).rcpt).toMatch(USER_UNKNOWN);
    expect((await deliverFromOutside('dave.old@example.test')).rcpt).toMatch(USER_UNKNOWN);
    await dovecotCatchesUp();
    expect(await lmtpRcpt('dave@example.test')).toMatch(/^550 5\.1\.1 /);
    const { imap, status } = await masterLogin('dave@example.test');
    imap.close();
    expect(status).toBe('NO');
    // carol, untouched, still receives.
    expect((await deliverFromOutside('carol@example.test')).rcpt).toBe('250 2.1.5 Ok');
  });

  it('defers (451 4.3.0) rather than bounces while the directory cannot answer', async () => {
    directory.ready = false;
    try {
      const reply = await deliverFromOutside('carol@example.test');
      expect(reply.rcpt).toMatch(/^451 4\.3\.0 /);
    } finally {
      directory.ready = true;
    }
    expect((await deliverFromOutside('carol@example.test')).rcpt).toBe('250 2.1.5 Ok');
  });

  it('delivers to a user created over SCIM, and refuses them after PATCH active=false and the grace period', async () => {
    const created = await scimCall('POST', '/Users', {
      schemas: [SCIM_USER_SCHEMA],
      userName: 'erin',
      name: { formatted: 'Erin Example', givenName: 'Erin', familyName: 'Example' },
      displayName: 'Erin Example',
      photos: [],
      active: true,
      emails: [
        { value: 'erin@example.test', type: 'other', primary: true },
        { value: 'e.example@example.test', type: 'work' },
      ],
      externalId: 'erin-external-id',
    });
    expect(created.status).toBe(201);
    const id = created.body.id as string;
    // The SCIM change reaches Dovecot's userdb without anyone asking.
    await waitForFile('erin@example.test', true);
    await dovecotCatchesUp();

    const sent = await deliverFromOutside('erin@example.test');
    expect(sent.rcpt).toBe('250 2.1.5 Ok');
    await waitForMail('erin@example.test', sent.subject);
    const alias = await deliverFromOutside('e.example@example.test');
    expect(alias.rcpt).toBe('250 2.1.5 Ok');
    await waitForMail('erin@example.test', alias.subject);

    const disabled = await scimCall('PATCH', `/Users/${id}`, {
      schemas: [SCIM_PATCH_OP],
      Operations: [{ op: 'replace', path: 'active', value: false }],
    });
    expect(disabled.status).toBe(200);
    expect(disabled.body.active).toBe(false);
    expect((await deliverFromOutside('erin@example.test')).rcpt).toBe('250 2.1.5 Ok');

    directory.offsetMs += 2 * HOUR;
    expect((await deliverFromOutside('erin@example.test')).rcpt).toMatch(USER_UNKNOWN);
    expect((await deliverFromOutside('e.example@example.test')).rcpt).toMatch(USER_UNKNOWN);
    // The writer's own periodic check drops erin from Dovecot's userdb.
    await waitForFile('erin@example.test', false);

    // Re-enabled over SCIM, mail flows again.
    const enabled = await scimCall('PATCH', `/Users/${id}`, {
      schemas: [SCIM_PATCH_OP],
      Operations: [{ op: 'replace', value: { active: true } }],
    });
    expect(enabled.status).toBe(200);
    await waitForFile('erin@example.test', true);
    await dovecotCatchesUp();
    const again = await deliverFromOutside('erin@example.test');
    expect(again.rcpt).toBe('250 2.1.5 Ok');
    await waitForMail('erin@example.test', again.subject);

    // SCIM DELETE: refused once the grace period is over.
    expect((await scimCall('DELETE', `/Users/${id}`)).status).toBe(204);
    expect((await deliverFromOutside('erin@example.test')).rcpt).toBe('250 2.1.5 Ok');
    directory.offsetMs += 2 * HOUR;
    expect((await deliverFromOutside('erin@example.test')).rcpt).toMatch(USER_UNKNOWN);
  }, 60_000);

  it('never lets the SCIM token or the master password into the servers\' logs', async () => {
    const logs = `${await postfix.readLog()}\n${await dovecot.readLog()}`;
    expect(logs).not.toContain(SCIM_TOKEN);
    expect(logs).not.toContain(MASTER.password);
  });
});

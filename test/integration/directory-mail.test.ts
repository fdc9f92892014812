/**
 * Mail reaches users who never logged in: sasl-gate configured with a directory serves it to a
 * real Postfix (socketmap) and a real Dovecot (passwd-file userdb). A user known only to the
 * directory receives mail, an alias delivers, a disabled user's mail is refused, and after a
 * restart with the source gone the saved directory still decides.
 */
import { chmodSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { stringify } from 'yaml';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config/load.js';
import { startDovecot, type DovecotInstance } from '../../tools/dovecot.js';
import { startDevIdp, type DevIdp } from '../../tools/idp.js';
import { freePort } from '../../tools/ports.js';
import { startPostfix, type PostfixInstance } from '../../tools/postfix.js';
import { createLogger } from '../../src/observe/logger.js';
import { ensureDevCertificate } from '../../src/tls/devcert.js';
import { startGate, type RunningGate } from '../../src/gate.js';
import { keepLog } from '../support/evidence.js';
import { RawImap, saslPlain } from '../support/imap-raw.js';
import { RawSmtp } from '../support/smtp-raw.js';
import { MASTER, USERS } from '../support/stack.js';
import { sleep, waitFor } from '../support/wait.js';

const [ALICE, BOB] = USERS as [(typeof USERS)[0], (typeof USERS)[0]];
const DAVE = 'dave@example.test';

describe('directory served to Postfix and Dovecot', () => {
  const dir = mkdtempSync(join(tmpdir(), 'sasl-gate-dirmail-'));
  const usersFile = join(dir, 'users.yaml');
  const passwdFile = join(dir, 'dovecot-users');
  const stateFile = join(dir, 'state.json');
  let dovecot: DovecotInstance;
  let postfix: PostfixInstance;
  let idp: DevIdp;
  let socketmapPort: number;
  let certs: Awaited<ReturnType<typeof ensureDevCertificate>>;
  let gate: RunningGate | undefined;
  let raw = '';

  async function startWith(directory: Record<string, unknown>): Promise<RunningGate> {
    const file = join(dir, `gate-${Date.now()}.yaml`);
    writeFileSync(
      file,
      stringify({
        listeners: [{ protocol: 'imap', bind: '127.0.0.1:0' }],
        tls: { cert: certs.certPath, key: certs.keyPath },
        backends: { imap: { host: dovecot.host, port: dovecot.imapPort } },
        master: MASTER,
        oauth: { issuer: idp.issuer, audience: ['mail'], clientId: idp.clientId },
        directory: {
          stateFile,
          graceSeconds: 0,
          socketmap: { bind: `127.0.0.1:${socketmapPort}` },
          dovecot: { passwdFile, uid: dovecot.mailUid, gid: dovecot.mailGid, home: `${dovecot.dir}/home/{domain}/{local}` },
          ...directory,
        },
      }),
    );
    const sink = new Writable({
      write(chunk: Buffer, _e, done) {
        raw += chunk.toString();
        done();
      },
    });
    const started = await startGate(loadConfig({ file, env: {} }).config, { log: createLogger({ level: 'debug', destination: sink }) });
    await waitFor(() => started.directory?.directory.isLoaded(), { timeoutMs: 5_000, intervalMs: 100, what: 'the directory to load' });
    // Dovecot re-reads a changed passwd-file at most once a second.
    await sleep(1200);
    return started;
  }

  beforeAll(async () => {
    chmodSync(dir, 0o755);
    writeFileSync(passwdFile, '', { mode: 0o644 });
    writeFileSync(
      usersFile,
      stringify({
        users: [
          { mailbox: ALICE.name, aliases: ['info@example.test'] },
          { mailbox: BOB.name, active: false },
          { mailbox: DAVE },
        ],
      }),
    );
    socketmapPort = await freePort();
    certs = await ensureDevCertificate(join(dir, 'certs'));
    [dovecot, idp] = await Promise.all([
      startDovecot({ users: [ALICE], master: MASTER, authPenalty: false, passwdFiles: [{ path: passwdFile, passdb: true }] }),
      startDevIdp({ users: [{ id: 'alice', email: ALICE.name }], audience: 'mail' }),
    ]);
    postfix = await startPostfix({ dovecot, domain: 'example.test', inbound: true, directoryMaps: { host: '127.0.0.1', port: socketmapPort } });
    gate = await startWith({ source: 'static', static: { file: usersFile } });
  });

  afterAll(async () => {
    keepLog(raw, 'directory-mail');
    await gate?.close(0);
    await Promise.all([postfix?.stop(), dovecot?.stop(), idp?.close()]);
  });

  async function rcpt(address: string): Promise<{ code: number; text: string }> {
    const smtp = await RawSmtp.connect(postfix.host, postfix.inboundPort!);
    try {
      await smtp.command('EHLO mx.example.org');
      await smtp.command('MAIL FROM:<someone@example.org>');
      const reply = await smtp.command(`RCPT TO:<${address}>`);
      if (reply.code === 250) {
        const data = await smtp.data(`From: someone@example.org\r\nTo: ${address}\r\nSubject: for ${address}\r\n\r\nhello\r\n`);
        expect(data.code).toBe(250);
      }
      await smtp.command('QUIT');
      return { code: reply.code, text: reply.text };
    } finally {
      smtp.close();
    }
  }

  async function messagesOf(user: string, subject: string): Promise<number> {
    for (let i = 0; i < 50; i++) {
      const imap = await RawImap.connect(dovecot.host, dovecot.imapPort);
      try {
        const login = await imap.command(`AUTHENTICATE PLAIN ${saslPlain(user, MASTER.user, MASTER.password)}`);
        expect(login.status, login.text).toBe('OK');
        await imap.command('SELECT INBOX');
        const search = await imap.command(`SEARCH HEADER Subject "${subject}"`);
        const found = search.untagged.find((l) => l.startsWith('* SEARCH'))?.split(' ').length ?? 2;
        if (found > 2) return found - 2;
      } finally {
        imap.close();
      }
      await new Promise((r) => setTimeout(r, 200));
    }
    return 0;
  }

  it('delivers to a user who exists only in the directory and never logged in', async () => {
    expect((await rcpt(DAVE)).code).toBe(250);
    expect(await messagesOf(DAVE, `for ${DAVE}`)).toBe(1);
  });

  it('delivers an alias to its mailbox', async () => {
    expect((await rcpt('info@example.test')).code).toBe(250);
    expect(await messagesOf(ALICE.name, 'for info@example.test')).toBe(1);
  });

  it('refuses mail for a user disabled in the provider', async () => {
    const reply = await rcpt(BOB.name);
    expect(reply.code).toBe(550);
    expect(reply.text).toMatch(/5\.1\.1/);
  });

  it('after a restart with the source gone, the saved directory still decides', async () => {
    await gate!.close(0);
    gate = undefined;
    writeFileSync(usersFile, 'this is: [not a valid user file');
    gate = await startWith({ source: 'static', static: { file: usersFile } });
    expect(raw).toContain('directory sync failed; serving the last good set');
    expect((await rcpt(DAVE)).code).toBe(250);
    expect((await rcpt(BOB.name)).code).toBe(550);
  });
});

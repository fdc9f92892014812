/**
 * App passwords against the real parts: a user who has no Dovecot password at all reads mail with
 * curl over IMAPS and sends with curl over SMTPS through sasl-gate, with a password the admin
 * command line created while the gate was running (a separate process on the same database);
 * Dovecot's and Postfix's own logs say who logged in. Scope, `appPasswords.only`, expiry, SCIM
 * deactivation, revocation and failure delays each end or refuse a login as a user would see it.
 */
import { execFile } from 'node:child_process';
import { chmodSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { request } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { promisify } from 'node:util';
import { stringify } from 'yaml';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config/load.js';
import { startGate, type RunningGate } from '../../src/gate.js';
import { createLogger } from '../../src/observe/logger.js';
import { ensureDevCertificate } from '../../src/tls/devcert.js';
import { startDovecot, type DovecotInstance } from '../../tools/dovecot.js';
import { startDevIdp, type DevIdp } from '../../tools/idp.js';
import { startPostfix, type PostfixInstance } from '../../tools/postfix.js';
import { keepLog, secret } from '../support/evidence.js';
import { RawImap, saslPlain } from '../support/imap-raw.js';
import { MASTER, USERS } from '../support/stack.js';
import { sleep, waitFor } from '../support/wait.js';

const run = promisify(execFile);
const BIN = join(import.meta.dirname, '..', '..', 'bin', 'sasl-gate.js');
const [ALICE] = USERS as [(typeof USERS)[0]];
/** Users who exist only in the directory: Dovecot has no password for them. */
const DAVE = 'dave@example.test';
const ERIN = 'erin@example.test';
const SCIM_TOKEN = secret('scim-token-app-passwords-4f2a9c1e7b', 'SCIM token');
const FAILURE_DELAY_SECONDS = 0.3;

describe('app passwords with real Dovecot and Postfix', () => {
  const dir = mkdtempSync(join(tmpdir(), 'sasl-gate-apppw-'));
  const passwdFile = join(dir, 'dovecot-users');
  let dovecot: DovecotInstance;
  let postfix: PostfixInstance;
  let idp: DevIdp;
  let certs: Awaited<ReturnType<typeof ensureDevCertificate>>;
  let gate: RunningGate;
  let onlyGate: RunningGate | undefined;
  let configFile: string;
  let raw = '';
  const scimIds = new Map<string, string>();

  function configYaml(overrides: Record<string, unknown>): Record<string, unknown> {
    return {
      listeners: [
        { protocol: 'imap', bind: '127.0.0.1:0', tls: 'implicit' },
        { protocol: 'smtp', bind: '127.0.0.1:0', tls: 'implicit' },
      ],
      tls: { cert: certs.certPath, key: certs.keyPath },
      backends: {
        imap: { host: dovecot.host, port: dovecot.imapPort },
        smtp: { host: postfix.host, port: postfix.submissionPort, login: 'master' },
      },
      master: MASTER,
      oauth: { issuer: idp.issuer, audience: ['mail'], clientId: idp.clientId },
      storage: { dir: join(dir, 'state') },
      appPasswords: { enabled: true, lastUseWriteSeconds: 0 },
      limits: { authFailureDelaySeconds: FAILURE_DELAY_SECONDS, authFailureMaxDelaySeconds: 0.6 },
      ...overrides,
    };
  }

  async function start(file: string): Promise<RunningGate> {
    const sink = new Writable({
      write(chunk: Buffer, _e, done) {
        raw += chunk.toString();
        done();
      },
    });
    return startGate(loadConfig({ file, env: {} }).config, { log: createLogger({ level: 'debug', destination: sink }) });
  }

  const port = (g: RunningGate, protocol: 'imap' | 'smtp') => g.listeners.find((l) => l.protocol === protocol)!.port;

  function curl(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
    return run('curl', ['-sS', '--max-time', '20', '--cacert', certs.caPath, ...args]).then(
      (r) => ({ code: 0, stdout: r.stdout, stderr: r.stderr }),
      (e: { code: number; stdout: string; stderr: string }) => ({ code: e.code, stdout: e.stdout, stderr: e.stderr }),
    );
  }

  /** curl LIST over IMAPS; exit code 0 with INBOX listed, or curl's error (67: login denied). */
  const imapList = (user: string, password: string, g = gate) => curl(['--login-options', 'AUTH=PLAIN', '--user', `${user}:${password}`, `imaps://localhost:${port(g, 'imap')}/`]);

  /** curl sends one message over SMTPS. */
  function smtpSend(user: string, password: string, subject: string, g = gate) {
    const file = join(dir, `${subject}.eml`);
    writeFileSync(file, `From: ${user}\r\nTo: ${ALICE.name}\r\nSubject: ${subject}\r\n\r\nsent with an app password\r\n`);
    return curl(['--login-options', 'AUTH=PLAIN', '--user', `${user}:${password}`, '--mail-from', user, '--mail-rcpt', ALICE.name, '-T', file, `smtps://localhost:${port(g, 'smtp')}/`]);
  }

  /** The admin command line, as its own process on the same configuration (serve keeps running). */
  function cli(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
    const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('SASL_GATE_')));
    return new Promise((resolve) => {
      const child = execFile(process.execPath, [BIN, 'app-passwords', ...args, '--config', configFile], { env, timeout: 20_000 }, (err, stdout, stderr) =>
        resolve({ code: err ? (typeof err.code === 'number' ? err.code : 1) : 0, stdout, stderr }),
      );
      child.stdin?.end();
    });
  }

  async function cliCreate(user: string, label: string, extra: string[] = []): Promise<string> {
    const created = await cli(['create', '--user', user, '--label', label, ...extra]);
    expect(created.code, created.stderr).toBe(0);
    return secret(created.stdout.trimEnd().split('\n').at(-1)!, 'app password');
  }

  function scim(method: 'POST' | 'PATCH', path: string, body: unknown): Promise<{ status: number; body: string }> {
    const endpoint = gate.directory!.scim!;
    return new Promise((resolve, reject) => {
      const req = request(
        {
          host: '127.0.0.1',
          port: endpoint.port,
          path: `/scim/v2/Users${path}`,
          method,
          ca: readFileSync(certs.caPath, 'utf8'),
          servername: 'localhost',
          headers: { authorization: `Bearer ${SCIM_TOKEN}`, 'content-type': 'application/scim+json' },
        },
        (res) => {
          let text = '';
          res.on('data', (c: Buffer) => (text += c.toString()));
          res.on('end', () => resolve({ status: res.statusCode ?? 0, body: text }));
        },
      );
      req.on('error', reject);
      req.end(JSON.stringify(body));
    });
  }

  async function pushUser(mailbox: string): Promise<void> {
    const created = await scim('POST', '', {
      schemas: ['urn:ietf:params:scim:schemas:core:2.0:User'],
      userName: mailbox.split('@')[0],
      active: true,
      emails: [{ value: mailbox, primary: true }],
    });
    expect(created.status, created.body).toBe(201);
    scimIds.set(mailbox, (JSON.parse(created.body) as { id: string }).id);
  }

  /** Messages in alice's INBOX with this subject, read through the master user directly at Dovecot. */
  async function delivered(subject: string): Promise<number> {
    for (let i = 0; i < 50; i++) {
      const imap = await RawImap.connect(dovecot.host, dovecot.imapPort);
      try {
        await imap.command(`AUTHENTICATE PLAIN ${saslPlain(ALICE.name, MASTER.user, MASTER.password)}`);
        await imap.command('SELECT INBOX');
        const search = await imap.command(`SEARCH HEADER Subject "${subject}"`);
        const found = (search.untagged.find((l) => l.startsWith('* SEARCH'))?.split(' ').length ?? 2) - 2;
        if (found > 0) return found;
      } finally {
        imap.close();
      }
      await sleep(200);
    }
    return 0;
  }

  beforeAll(async () => {
    chmodSync(dir, 0o755);
    writeFileSync(passwdFile, '', { mode: 0o644 });
    certs = await ensureDevCertificate(join(dir, 'certs'));
    [dovecot, idp] = await Promise.all([
      startDovecot({ users: [ALICE], master: MASTER, authPenalty: false, passwdFiles: [{ path: passwdFile, passdb: true }] }),
      startDevIdp({ users: [{ id: 'alice', email: ALICE.name }], audience: 'mail' }),
    ]);
    postfix = await startPostfix({ dovecot, domain: 'example.test' });
    configFile = join(dir, 'sasl-gate.yaml');
    writeFileSync(
      configFile,
      stringify(
        configYaml({
          directory: {
            source: 'scim',
            graceSeconds: 0,
            stateFile: join(dir, 'directory.json'),
            scim: { bind: '127.0.0.1:0', token: SCIM_TOKEN },
            dovecot: { passwdFile, uid: dovecot.mailUid, gid: dovecot.mailGid, home: `${dovecot.dir}/home/{domain}/{local}` },
          },
        }),
      ),
    );
    gate = await start(configFile);
    for (const user of [ALICE.name, DAVE, ERIN]) await pushUser(user);
    // Dovecot reads a changed passwd-file at most once a second.
    await sleep(1200);
  }, 60_000);

  afterAll(async () => {
    keepLog(raw, 'app-passwords');
    await onlyGate?.close(0);
    await gate?.close(0);
    await Promise.all([postfix?.stop(), dovecot?.stop(), idp?.close()]);
  });

  it('a user without a Dovecot password reads and sends mail with a password the CLI made while serve runs', async () => {
    const password = await cliCreate(DAVE, 'phone', ['--protocols', 'imap,smtp']);
    expect(password).toMatch(/^[a-z]{4}(-[a-z]{4}){6}$/);
    // Dovecot itself knows no password for dave.
    expect((await curl(['--user', `${DAVE}:${password}`, `imap://${dovecot.host}:${dovecot.imapPort}/`])).code).toBe(67);
    const dovecotBefore = (await dovecot.readLog()).length;
    for (const spelling of [password, password.toUpperCase(), password.replace(/-/g, '')]) {
      const listed = await imapList(DAVE, spelling);
      expect(listed.stderr).toBe('');
      expect(listed.stdout).toContain('INBOX');
    }
    const dovecotLog = (await dovecot.readLog()).slice(dovecotBefore);
    expect(dovecotLog.match(/auth: Info: Master user logging in as dave@example\.test/g)?.length).toBe(3);
    expect(dovecotLog.match(/imap-login: Info: Login: user=<dave@example\.test>, method=PLAIN/g)?.length).toBe(3);

    const postfixBefore = (await postfix.readLog()).length;
    for (const subject of ['from-dave-1', 'from-dave-2']) {
      const sent = await smtpSend(DAVE, password, subject);
      expect(sent.code, sent.stderr).toBe(0);
    }
    expect(await delivered('from-dave-1')).toBe(1);
    expect(await delivered('from-dave-2')).toBe(1);
    const postfixLog = (await postfix.readLog()).slice(postfixBefore);
    expect(postfixLog.match(/sasl_method=PLAIN, sasl_username=dave@example\.test/g)?.length).toBe(2);

    const logins = raw.split('\n').filter((l) => l.includes('"msg":"authenticated"') && l.includes(DAVE));
    expect(logins.length).toBeGreaterThanOrEqual(5);
    for (const line of logins) expect(JSON.parse(line)).toMatchObject({ mechanism: 'PLAIN', credential: 'app_password', user: DAVE });

    // The admin's list shows the last use, never the password.
    const listed = await cli(['list', '--user', DAVE, '--json']);
    expect(listed.code).toBe(0);
    expect(listed.stdout).not.toContain(password);
    expect(JSON.parse(listed.stdout)).toMatchObject([{ user: DAVE, label: 'phone', protocols: ['imap', 'smtp'], lastUse: { address: '127.0.0.1' } }]);
  });

  it('the CLI revokes it and the very next login fails', async () => {
    const password = await cliCreate(DAVE, 'tablet');
    expect((await imapList(DAVE, password)).stdout).toContain('INBOX');
    const revoked = await cli(['revoke', '--user', DAVE, '--label', 'tablet']);
    expect(revoked.code, revoked.stderr).toBe(0);
    expect((await imapList(DAVE, password)).code).toBe(67);
    expect((await cli(['revoke', '--user', DAVE, '--label', 'tablet'])).code).toBe(1);
  });

  it('an IMAP-only password is refused on SMTP', async () => {
    const { password } = await gate.appPasswords!.create({ user: DAVE, label: 'imap only', protocols: ['imap'] });
    secret(password, 'app password');
    expect((await imapList(DAVE, password)).stdout).toContain('INBOX');
    const postfixBefore = (await postfix.readLog()).length;
    const sent = await smtpSend(DAVE, password, 'imap-only-over-smtp');
    expect(sent.code).toBe(67);
    // Passed through as a password, Postfix (asking Dovecot) refused it: nothing was sent as dave.
    const postfixLog = (await postfix.readLog()).slice(postfixBefore);
    expect(postfixLog).toMatch(/SASL PLAIN authentication failed: .*sasl_username=dave@example\.test/);
    expect(postfixLog).not.toMatch(/sasl_method=PLAIN, sasl_username=dave@example\.test/);
  });

  it('an expired password stops working when it expires', async () => {
    const { password } = await gate.appPasswords!.create({ user: DAVE, label: 'short', protocols: ['imap'], expiresAt: new Date(Date.now() + 1500) });
    secret(password, 'app password');
    expect((await imapList(DAVE, password)).stdout).toContain('INBOX');
    await sleep(1600);
    expect((await imapList(DAVE, password)).code).toBe(67);
  });

  it('a SCIM deactivation ends the user’s passwords at once, and revokes them', async () => {
    const password = await cliCreate(ERIN, 'phone');
    expect((await imapList(ERIN, password)).stdout).toContain('INBOX');
    const patched = await scim('PATCH', `/${scimIds.get(ERIN)!}`, {
      schemas: ['urn:ietf:params:scim:api:messages:2.0:PatchOp'],
      Operations: [{ op: 'replace', path: 'active', value: false }],
    });
    expect(patched.status, patched.body).toBe(200);
    expect((await imapList(ERIN, password)).code).toBe(67);
    await waitFor(async () => (await gate.appPasswords!.list(ERIN)).length === 0, { timeoutMs: 5000, intervalMs: 50, what: 'the revocation' });
    const all = await cli(['list', '--user', ERIN, '--all']);
    expect(all.stdout).toMatch(/erin@example\.test\s+phone\s.*\srevoked$/m);
  });

  it('with appPasswords.only a real Dovecot password is refused by sasl-gate and never reaches Dovecot', async () => {
    const file = join(dir, 'only.yaml');
    writeFileSync(file, stringify(configYaml({ appPasswords: { enabled: true, only: true } })));
    onlyGate = await start(file);
    const password = await cliCreate(DAVE, 'only');
    const dovecotBefore = (await dovecot.readLog()).length;
    const refused = await imapList(ALICE.name, ALICE.password, onlyGate);
    expect(refused.code).toBe(67);
    const refusedSmtp = await smtpSend(ALICE.name, ALICE.password, 'only-refused', onlyGate);
    expect(refusedSmtp.code).toBe(67);
    expect((await imapList(DAVE, password, onlyGate)).stdout).toContain('INBOX');
    const dovecotLog = (await dovecot.readLog()).slice(dovecotBefore);
    expect(dovecotLog).not.toContain('alice@example.test');
    expect(dovecotLog).toMatch(/imap-login: Info: Login: user=<dave@example\.test>, method=PLAIN/);
    expect(raw).toMatch(/"reason":"not_app_password"/);
  });

  it('failed guesses of an app password wait like any failed login, in sasl-gate itself', async () => {
    // Against the `only` gate: the guess never reaches Dovecot, so the wait is sasl-gate's.
    const dovecotBefore = (await dovecot.readLog()).length;
    const guess = secret('zzzz-zzzz-zzzz-zzzz-zzzz-zzzz-zzzz', 'app password guess');
    const times: number[] = [];
    for (let i = 0; i < 2; i++) {
      const started = Date.now();
      expect((await imapList(DAVE, guess, onlyGate)).code).toBe(67);
      times.push(Date.now() - started);
    }
    for (const ms of times) expect(ms).toBeGreaterThanOrEqual(FAILURE_DELAY_SECONDS * 1000);
    expect((await dovecot.readLog()).slice(dovecotBefore)).not.toContain('dave@example.test');
  });

  it('the command line says what is wrong with a call, with exit status 2, before it opens anything', async () => {
    const cases: Array<[string[], RegExp]> = [
      [[], /name an action: create, list, revoke/],
      [['remove', '--user', DAVE, '--label', 'x'], /unknown action "remove"/],
      [['create', '--user', DAVE], /create needs --label LABEL/],
      [['revoke', '--label', 'x'], /revoke needs --user USER/],
      [['create', '--user', DAVE, '--label', 'x', '--expires', '0'], /--expires takes a number of days/],
      [['create', '--user', DAVE, '--label', 'x', '--protocols', 'imap,ftp'], /--protocols takes one or more of imap, smtp, pop3, sieve/],
      [['create', '--user', DAVE, '--label', 'x', '--json'], /--json is an option of list, not of create/],
      [['create', '--user', 'bad\u0001name', '--label', 'x'], /is not a user name/],
    ];
    for (const [argv, message] of cases) {
      const r = await cli(argv);
      expect({ argv, code: r.code, stdout: r.stdout }).toEqual({ argv, code: 2, stdout: '' });
      expect(r.stderr).toMatch(message);
    }
    const refused = await cli(['create', '--user', DAVE, '--label', 'phone']);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toMatch(/not created \(duplicate_label\)/);
    const help = await cli(['--help']);
    expect(help.code).toBe(0);
    expect(help.stdout).toMatch(/^Usage: sasl-gate app-passwords create --config FILE --user USER --label LABEL\n/);
    expect(help.stdout.split('\n').every((line) => line.length <= 100)).toBe(true);
  });
});

/**
 * Two replicas of sasl-gate (two gates, two configurations, `appPasswords.only`) on one PostgreSQL,
 * in front of a real Dovecot: the directory one replica syncs is the one both serve, failed logins
 * through one delay the next attempt through the other, an app password the admin command line
 * made against one's configuration logs in through the other at once, and a frozen database gives
 * app-password logins a temporary failure and failed logins the longest delay while token logins
 * go on; once it answers again all works without a restart.
 */
import { execFile } from 'node:child_process';
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
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
import { startPostgres, type PostgresInstance } from '../../tools/postgres.js';
import { keepLog, secret } from '../support/evidence.js';
import { MASTER, TlsImap, tokenLogin, USERS } from '../support/stack.js';
import { waitFor } from '../support/wait.js';

const run = promisify(execFile);
const BIN = join(import.meta.dirname, '..', '..', 'bin', 'sasl-gate.js');
const [ALICE, BOB] = USERS as [(typeof USERS)[0], (typeof USERS)[0]];
const MALLORY = 'mallory@example.test';
const DELAY_MS = 300;
const MAX_DELAY_MS = 1200;

describe('two replicas on one PostgreSQL', () => {
  const dir = mkdtempSync(join(tmpdir(), 'sasl-gate-replicas-'));
  let dovecot: DovecotInstance;
  let idp: DevIdp;
  let postgres: PostgresInstance;
  let certs: Awaited<ReturnType<typeof ensureDevCertificate>>;
  const gates: RunningGate[] = [];
  const configFiles: string[] = [];
  let raw = '';

  const port = (replica: number) => gates[replica]!.listeners.find((l) => l.protocol === 'imap')!.port;
  const endpoint = (replica: number) => ({ host: '127.0.0.1', imapPort: port(replica), ca: readFileSync(certs.caPath, 'utf8') });

  /** One AUTHENTICATE PLAIN through a replica: its tagged reply and how long it took. */
  async function plainLogin(replica: number, user: string, password: string): Promise<{ tagged: string; ms: number }> {
    const imap = await TlsImap.connect(endpoint(replica));
    try {
      const started = Date.now();
      imap.write(`a1 AUTHENTICATE PLAIN ${Buffer.from(`\0${user}\0${password}`).toString('base64')}\r\n`);
      for (;;) {
        const line = await imap.readLine(20_000);
        if (line.startsWith('a1 ')) return { tagged: line, ms: Date.now() - started };
      }
    } finally {
      imap.socket.destroy();
    }
  }

  /** The admin command line on replica 1's configuration, as its own process. */
  async function cliCreate(user: string, label: string): Promise<string> {
    const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('SASL_GATE_')));
    const { stdout } = await run(process.execPath, [BIN, 'app-passwords', 'create', '--user', user, '--label', label, '--config', configFiles[0]!], { env, timeout: 20_000 });
    return secret(stdout.trimEnd().split('\n').at(-1)!, 'app password');
  }

  beforeAll(async () => {
    chmodSync(dir, 0o755);
    certs = await ensureDevCertificate(join(dir, 'certs'));
    [dovecot, idp, postgres] = await Promise.all([
      startDovecot({ users: [ALICE, BOB], master: MASTER, authPenalty: false }),
      startDevIdp({ users: [{ id: 'alice', email: ALICE.name }, { id: 'mallory', email: MALLORY }], audience: 'mail' }),
      startPostgres(),
    ]);
    secret(postgres.password, 'PostgreSQL password');
    const urlFile = join(dir, 'postgres-url');
    writeFileSync(urlFile, `${postgres.url}\n`, { mode: 0o600 });
    const keyFile = join(dir, 'app-passwords.key');
    writeFileSync(keyFile, Buffer.alloc(32, 9), { mode: 0o600 });
    const sink = new Writable({
      write(chunk: Buffer, _e, done) {
        raw += chunk.toString();
        done();
      },
    });
    for (const replica of [1, 2]) {
      const file = join(dir, `replica-${replica}.yaml`);
      // Each replica's view of the provider; replica 2's (wrongly) lists mallory. Replica 1 starts
      // first, takes the directory lease, and its set is the one both serve.
      const usersFile = join(dir, `users-${replica}.yaml`);
      const mailboxes = replica === 1 ? [ALICE.name, BOB.name] : [ALICE.name, BOB.name, MALLORY];
      writeFileSync(usersFile, stringify({ users: mailboxes.map((mailbox) => ({ mailbox })) }));
      writeFileSync(
        file,
        stringify({
          listeners: [{ protocol: 'imap', bind: '127.0.0.1:0', tls: 'implicit' }],
          tls: { cert: certs.certPath, key: certs.keyPath },
          backends: { imap: { host: dovecot.host, port: dovecot.imapPort } },
          master: MASTER,
          oauth: { issuer: idp.issuer, audience: ['mail'], clientId: idp.clientId },
          // Each replica its own storage.dir (nothing shared there); the key file is the same.
          storage: { dir: join(dir, `state-${replica}`), postgres: { urlFile, timeoutSeconds: 0.5 } },
          appPasswords: { enabled: true, only: true, keyFile, lastUseWriteSeconds: 0 },
          directory: { source: 'static', static: { file: usersFile }, graceSeconds: 0 },
          limits: { authFailureDelaySeconds: DELAY_MS / 1000, authFailureMaxDelaySeconds: MAX_DELAY_MS / 1000 },
        }),
      );
      configFiles.push(file);
      gates.push(await startGate(loadConfig({ file, env: {} }).config, { log: createLogger({ level: 'debug', destination: sink }) }));
    }
  }, 90_000);

  afterAll(async () => {
    keepLog(raw, 'postgres-replicas');
    postgres?.resume();
    for (const gate of gates) await gate.close(0);
    await Promise.all([dovecot?.stop(), idp?.close(), postgres?.stop()]);
    rmSync(dir, { recursive: true, force: true });
  });

  it('failed logins through replica 1 delay the next attempt through replica 2', async () => {
    // With appPasswords.only a guess never reaches Dovecot (whose own failure delay would blur the
    // timing): every wait here is sasl-gate's, counted in PostgreSQL.
    const guess = secret('zzzz-zzzz-zzzz-zzzz-zzzz-zzzz-zzzz', 'app password guess');
    const dovecotBefore = (await dovecot.readLog()).length;
    // The first failure anywhere waits the base delay.
    const first = await plainLogin(1, BOB.name, guess);
    expect(first.tagged).toMatch(/^a1 NO /);
    expect(first.ms).toBeGreaterThanOrEqual(DELAY_MS);
    expect(first.ms).toBeLessThan(MAX_DELAY_MS);
    for (let i = 0; i < 2; i++) expect((await plainLogin(0, BOB.name, guess)).tagged).toMatch(/^a1 NO /);
    // Replica 2 saw one failure itself (alone it would wait 2 x 300 ms); it waits for all four: the ceiling.
    const next = await plainLogin(1, BOB.name, guess);
    expect(next.tagged).toMatch(/^a1 NO /);
    expect(next.ms).toBeGreaterThanOrEqual(MAX_DELAY_MS);
    expect((await dovecot.readLog()).slice(dovecotBefore)).not.toContain('bob@example.test');
  }, 30_000);

  it('an app password the admin made against replica 1’s configuration logs in through replica 2 at once', async () => {
    const password = await cliCreate(ALICE.name, 'phone');
    const dovecotBefore = (await dovecot.readLog()).length;
    expect((await plainLogin(1, ALICE.name, password)).tagged).toMatch(/^a1 OK /);
    expect((await plainLogin(0, ALICE.name, password)).tagged).toMatch(/^a1 OK /);
    const dovecotLog = (await dovecot.readLog()).slice(dovecotBefore);
    // Dovecot saw the master user log in as alice, never alice's app password.
    expect(dovecotLog.match(/Master user logging in as alice@example\.test/g)?.length).toBe(2);
    // Revoked through replica 2's service, it stops at replica 1 on the next login.
    expect(await gates[1]!.appPasswords!.revokeByLabel(ALICE.name, 'phone')).toBe(true);
    expect((await plainLogin(0, ALICE.name, password)).tagged).toMatch(/^a1 NO /);
  }, 30_000);

  it('with PostgreSQL frozen: app passwords fail temporarily, failures wait the longest, tokens work; thawed, all works again', async () => {
    const { password } = await gates[0]!.appPasswords!.create({ user: ALICE.name, label: 'laptop' });
    secret(password, 'app password');
    const token = secret(await idp.mintAccessToken({ user: ALICE.name }), 'access token');
    const wrong = secret('not-a-token-8e4c1f', 'bad token');
    postgres.halt();
    try {
      const unavailable = await plainLogin(1, ALICE.name, password);
      expect(unavailable.tagged).toMatch(/^a1 NO \[UNAVAILABLE\]/);
      // A bad token that cannot be counted is not answered faster: it waits the ceiling.
      const started = Date.now();
      expect((await tokenLogin(endpoint(1), BOB.name, wrong)).tagged).toMatch(/^a1 NO /);
      expect(Date.now() - started).toBeGreaterThanOrEqual(MAX_DELAY_MS);
      // Tokens need no database: validated in each process, as before.
      for (const replica of [0, 1]) expect((await tokenLogin(endpoint(replica), ALICE.name, token)).tagged).toMatch(/^a1 OK /);
    } finally {
      postgres.resume();
    }
    // Back within a second or so (each replica fails fast for a second after a timeout), no restart.
    for (const replica of [0, 1]) {
      await waitFor(async () => /^a1 OK /.test((await plainLogin(replica, ALICE.name, password)).tagged), { timeoutMs: 5000, intervalMs: 200, what: `replica ${replica + 1} back` });
    }
    expect(raw).toMatch(/storage_unavailable/);
  }, 30_000);
  it('one directory for both: replica 2 serves the set replica 1 synced, not its own provider view', async () => {
    await waitFor(() => gates[1]!.directory!.loginVerdict(BOB.name) === 'allowed', { timeoutMs: 10_000, what: 'the shared directory at replica 2' });
    const malloryToken = secret(await idp.mintAccessToken({ user: MALLORY }), 'access token');
    for (const replica of [0, 1]) expect((await tokenLogin(endpoint(replica), MALLORY, malloryToken)).tagged).toMatch(/^a1 NO /);
    expect(gates[1]!.directory!.loginVerdict(MALLORY)).toBe('unknown');
    expect(raw).toMatch(/directory taken from the shared copy|directory loaded from the state file/);
  }, 30_000);
});

/**
 * A cluster on this machine, as an admin runs one: HAProxy (Debian's) in front with PROXY protocol
 * v2 and health checks on `/readyz`, two sasl-gate replicas (`sasl-gate serve`, child processes) on
 * one PostgreSQL, real Dovecot and Postfix behind them. Failure delays are shared, an app password
 * made against one replica works through the other at once, `kill -9` of a replica under load loses
 * only the connections it held, and SIGTERM of a replica under load loses none.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { stringify } from 'yaml';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runLoad } from '../../src/load/cli.js';
import type { LoadReport } from '../../src/load/report.js';
import { ensureDevCertificate } from '../../src/tls/devcert.js';
import { startDovecot, type DovecotInstance } from '../../tools/dovecot.js';
import { startHaproxy, type HaproxyInstance } from '../../tools/haproxy.js';
import { startDevIdp, type DevIdp } from '../../tools/idp.js';
import { freePort } from '../../tools/ports.js';
import { startPostfix, type PostfixInstance } from '../../tools/postfix.js';
import { startPostgres, type PostgresInstance } from '../../tools/postgres.js';
import { keepLog, secret } from '../support/evidence.js';
import { MASTER, TlsImap, USERS, plain } from '../support/stack.js';
import { waitFor } from '../support/wait.js';

const run = promisify(execFile);
const BIN = join(import.meta.dirname, '..', '..', 'bin', 'sasl-gate.js');
const [ALICE, BOB] = USERS as [(typeof USERS)[0], (typeof USERS)[0]];
const DELAY_MS = 300;
const MAX_DELAY_MS = 1200;
const CONCURRENCY = 8;
// sasl-gate's only configuration is its file: SASL_GATE_* variables of the test run must not leak in.
const ENV = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('SASL_GATE_')));

/** One `sasl-gate serve` process on fixed ports, so that HAProxy finds it again after a restart. */
class Replica {
  child: ChildProcess | undefined;
  output = '';
  exit: Promise<number | null> = Promise.resolve(null);

  constructor(
    readonly name: string,
    readonly configFile: string,
    readonly ports: { imaps: number; smtps: number; admin: number },
  ) {}

  /** Starts the process; resolves once it logged that it started. */
  async start(): Promise<void> {
    const seen = this.output.length;
    const child = spawn(process.execPath, [BIN, 'serve', '--config', this.configFile], { env: ENV, stdio: ['ignore', 'pipe', 'pipe'] });
    this.child = child;
    child.stdout!.on('data', (c: Buffer) => (this.output += c.toString()));
    child.stderr!.on('data', (c: Buffer) => (this.output += c.toString()));
    this.exit = new Promise((resolve) => child.once('exit', (code) => resolve(code)));
    await waitFor(() => this.output.slice(seen).includes('"msg":"sasl-gate started"') || child.exitCode !== null, {
      timeoutMs: 30_000,
      what: () => `replica ${this.name} started:\n${this.output.slice(-3000)}`,
    });
    if (child.exitCode !== null) throw new Error(`replica ${this.name} exited at start:\n${this.output.slice(-3000)}`);
  }

  alive(): boolean {
    return this.child !== undefined && this.child.exitCode === null && this.child.signalCode === null;
  }

  /** Its JSON log lines. */
  records(from = 0): Array<Record<string, unknown>> {
    return this.output
      .slice(from)
      .split('\n')
      .filter((l) => l.startsWith('{'))
      .map((l) => JSON.parse(l) as Record<string, unknown>);
  }

  async readyz(): Promise<number> {
    return fetch(`http://127.0.0.1:${this.ports.admin}/readyz`).then(
      (r) => r.status,
      () => 0,
    );
  }
}

/** Runs `sasl-gate load` in this process and returns its report. */
async function load(argv: string[]): Promise<LoadReport> {
  let out = '';
  let err = '';
  const code = await runLoad([...argv, '--json', '--quiet'], {
    stdout: { write: (t: string) => (out += t) },
    stderr: { write: (t: string) => (err += t) },
    signal: new AbortController().signal,
  });
  if (code === 2 || !out.trim()) throw new Error(`sasl-gate load ${argv.join(' ')}: exit ${code}\n${err}`);
  return JSON.parse(out) as LoadReport;
}

describe('a cluster: HAProxy, two replicas, one PostgreSQL, Dovecot and Postfix', () => {
  const dir = mkdtempSync(join(tmpdir(), 'sasl-gate-cluster-'));
  let dovecot: DovecotInstance;
  let postfix: PostfixInstance;
  let idp: DevIdp;
  let postgres: PostgresInstance;
  let haproxy: HaproxyInstance;
  let caPath: string;
  let tokensFile: string;
  const replicas: Replica[] = [];
  const [r1, r2] = [() => replicas[0]!, () => replicas[1]!];

  const imapThroughHaproxy = (localAddress?: string) =>
    TlsImap.connect({ host: haproxy.host, imapPort: haproxy.ports['imaps']!, ca: readFileSync(caPath, 'utf8'), ...(localAddress ? { localAddress } : {}) });

  /** Only `name` takes new connections: the other is put in maintenance, and HAProxy sees `name` up. */
  async function only(name: string): Promise<void> {
    for (const replica of replicas) await haproxy.setServer(replica.name, replica.name === name ? 'ready' : 'maint');
    await haproxy.waitForServer(name, 'UP');
  }

  async function both(): Promise<void> {
    for (const replica of replicas) await haproxy.setServer(replica.name, 'ready');
    for (const replica of replicas) await haproxy.waitForServer(replica.name, 'UP');
  }

  /** A login refused by sasl-gate itself (authzid other than authcid): no backend delay in the timing. */
  async function refusedLogin(localAddress: string): Promise<number> {
    const imap = await imapThroughHaproxy(localAddress);
    try {
      const started = performance.now();
      const { tagged } = await imap.command(`AUTHENTICATE PLAIN ${plain(BOB.name, ALICE.name, 'guess')}`);
      expect(tagged).toMatch(/^t\d+ NO /);
      return performance.now() - started;
    } finally {
      imap.close();
    }
  }

  /**
   * The sessions through `server` still open at `at` (ms since the epoch) or opened after it, from
   * HAProxy's log: after a kill signal sent at `at`, the ones the replica held when it died.
   */
  const openSince = (server: string, at: number) =>
    haproxy.sessions().filter((s) => s.service === 'imaps' && s.server === server && s.connected && s.acceptedAt + s.totalMs >= at).length;

  /** The load through HAProxy: token logins over IMAPS, `CONCURRENCY` at a time, for `seconds`. */
  const loginLoad = (seconds: number) =>
    load(['imap-login', '--target', `imaps://127.0.0.1:${haproxy.ports['imaps']}`, '--ca', caPath, '--mech', 'xoauth2', '--users', tokensFile, '--concurrency', String(CONCURRENCY), '--duration', String(seconds), '--timeout', '10']);

  /** Waits until HAProxy sent `count` more sessions to `server`. */
  async function sessionsReach(server: string, count: number): Promise<void> {
    const total = async () => (await haproxy.servers()).filter((s) => s.server === server && s.service === 'imaps').reduce((n, s) => n + s.total, 0);
    const start = await total();
    await waitFor(async () => (await total()) - start >= count, { timeoutMs: 10_000, what: `${count} sessions through ${server}` });
  }

  beforeAll(async () => {
    chmodSync(dir, 0o755);
    const certs = await ensureDevCertificate(join(dir, 'certs'));
    caPath = certs.caPath;
    [dovecot, idp, postgres] = await Promise.all([
      startDovecot({ users: USERS, master: MASTER, authPenalty: false }),
      startDevIdp({ users: USERS.map((u) => ({ id: u.name.split('@')[0]!, email: u.name })), audience: 'mail' }),
      startPostgres(),
    ]);
    postfix = await startPostfix({ dovecot, domain: 'example.test' });
    secret(postgres.password, 'PostgreSQL password');
    const urlFile = join(dir, 'postgres-url');
    writeFileSync(urlFile, `${postgres.url}\n`, { mode: 0o600 });
    const keyFile = join(dir, 'app-passwords.key');
    writeFileSync(keyFile, Buffer.alloc(32, 7), { mode: 0o600 });
    const tokens = [];
    for (const user of [ALICE, BOB]) tokens.push(`${user.name}\t${secret(await idp.mintAccessToken({ user: user.name }), 'access token')}\n`);
    tokensFile = join(dir, 'tokens.tsv');
    writeFileSync(tokensFile, tokens.join(''), { mode: 0o600 });

    for (const name of ['r1', 'r2']) {
      const ports = { imaps: await freePort(), smtps: await freePort(), admin: await freePort() };
      const file = join(dir, `${name}.yaml`);
      writeFileSync(
        file,
        stringify({
          listeners: [
            // Only HAProxy may connect, and must say who the client is.
            { protocol: 'imap', bind: `127.0.0.1:${ports.imaps}`, tls: 'implicit', proxyProtocol: true, trustedProxies: ['127.0.0.1/32'] },
            { protocol: 'smtp', bind: `127.0.0.1:${ports.smtps}`, tls: 'implicit', proxyProtocol: true, trustedProxies: ['127.0.0.1/32'] },
          ],
          tls: { cert: certs.certPath, key: certs.keyPath },
          backends: {
            imap: { host: dovecot.host, port: dovecot.imapPort },
            smtp: { host: postfix.host, port: postfix.submissionPort, login: 'xclient' },
          },
          master: MASTER,
          oauth: { issuer: idp.issuer, audience: ['mail'], validation: ['jwt'], clientId: idp.clientId, clientSecret: idp.clientSecret },
          admin: { bind: `127.0.0.1:${ports.admin}` },
          // Each replica its own storage.dir; what they share is in PostgreSQL.
          storage: { dir: join(dir, `state-${name}`), postgres: { urlFile } },
          appPasswords: { enabled: true, keyFile },
          limits: {
            authFailureDelaySeconds: DELAY_MS / 1000,
            authFailureMaxDelaySeconds: MAX_DELAY_MS / 1000,
            shutdownGraceSeconds: 10,
            // /readyz answers 503 this long before the listeners close: HAProxy checks every 0.2 s
            // and takes a replica out after 2 failed checks.
            shutdownDelaySeconds: 1,
          },
          workers: 1,
        }),
      );
      replicas.push(new Replica(name, file, ports));
    }
    await Promise.all(replicas.map((r) => r.start()));
    haproxy = await startHaproxy({
      services: ['imaps', 'smtps'],
      replicas: replicas.map((r) => ({ name: r.name, ports: { imaps: r.ports.imaps, smtps: r.ports.smtps }, adminPort: r.ports.admin })),
    });
    for (const replica of replicas) await haproxy.waitForServer(replica.name, 'UP');
  }, 120_000);

  afterAll(async () => {
    for (const replica of replicas) {
      keepLog(replica.output, `cluster-${replica.name}`);
      if (replica.child && replica.child.exitCode === null) replica.child.kill('SIGKILL');
    }
    await haproxy?.stop();
    await Promise.all([dovecot?.stop(), postfix?.stop(), idp?.close(), postgres?.stop()]);
    rmSync(dir, { recursive: true, force: true });
  });

  it('failed logins through replica 1 delay the next attempt through replica 2 (the client address from PROXY v2)', async () => {
    await only('r1');
    const first = await refusedLogin('127.0.0.7');
    const second = await refusedLogin('127.0.0.7');
    expect(first).toBeGreaterThanOrEqual(DELAY_MS - 20);
    expect(second).toBeGreaterThanOrEqual(2 * DELAY_MS - 20);
    const seenAtR2 = r2().output.length;
    await only('r2');
    // Alone, replica 2 would wait 0.3 s for its first failure of this address; it waits for the third.
    const third = await refusedLogin('127.0.0.7');
    expect(third).toBeGreaterThanOrEqual(4 * DELAY_MS - 20);
    expect(third).toBeLessThan(4 * DELAY_MS + 1500);
    // The refusal happened at replica 2, which saw the client's own address through HAProxy.
    const session = await waitFor(() => r2().records(seenAtR2).find((r) => r['msg'] === 'authentication refused')?.['session'] as string | undefined, { what: 'the refusal at replica 2' });
    const closed = await waitFor(() => r2().records(seenAtR2).find((r) => r['session'] === session && r['msg'] === 'connection closed'), { what: 'the connection closed at replica 2' });
    expect(closed['client']).toBe('127.0.0.7');
    await both();
  }, 30_000);

  it('an app password created with the command line on replica 1’s configuration works through replica 2 at once (IMAP and SMTP)', async () => {
    const { stdout } = await run(process.execPath, [BIN, 'app-passwords', 'create', '--user', ALICE.name, '--label', 'phone', '--config', r1().configFile], { env: ENV, timeout: 20_000 });
    const password = secret(stdout.trimEnd().split('\n').at(-1)!, 'app password');
    await only('r2');
    const seenAtR2 = r2().output.length;
    const dovecotBefore = (await dovecot.readLog()).length;
    const imap = await imapThroughHaproxy();
    const { tagged } = await imap.command(`AUTHENTICATE PLAIN ${plain('', ALICE.name, password)}`);
    expect(tagged).toMatch(/^t\d+ OK /);
    expect((await imap.command('SELECT INBOX')).tagged).toMatch(/^t\d+ OK /);
    imap.close();
    // A message submitted through HAProxy's SMTPS frontend, replica 2 and Postfix, with the same password.
    const passwords = join(dir, 'app-password.tsv');
    writeFileSync(passwords, `${ALICE.name}\t${password}\n`, { mode: 0o600 });
    const smtp = await load(['smtp-send', '--target', `smtps://127.0.0.1:${haproxy.ports['smtps']}`, '--ca', caPath, '--mech', 'plain', '--users', passwords, '--count', '2', '--concurrency', '1']);
    expect(smtp.ok).toBe(2);
    expect(smtp.failed).toBe(0);
    const closed = await waitFor(
      () => {
        const found = r2().records(seenAtR2).filter((r) => r['msg'] === 'connection closed' && r['credential'] === 'app_password' && r['outcome'] === 'relayed');
        return found.length >= 2 && found;
      },
      { what: 'both logins at replica 2' },
    );
    expect([...new Set(closed.map((r) => String(r['listener']).split('-')[0]))].sort()).toEqual(['imap', 'smtp']);
    // Dovecot saw the master user log in as alice, never alice's app password.
    expect((await dovecot.readLog()).slice(dovecotBefore)).toMatch(/Master user logging in as alice@example\.test/);
    await both();
  }, 30_000);

  it('kill -9 of a replica under load: only the connections it held fail, the load goes on through the other', async () => {
    await both();
    try {
      const running = loginLoad(5);
      const loadStarted = Date.now();
      await sessionsReach('r1', 20);
      await sessionsReach('r2', 20);
      const killedAt = Date.now();
      r1().child!.kill('SIGKILL');
      await haproxy.waitForServer('r1', 'DOWN', 5000);
      const r2Before = (await haproxy.servers()).find((s) => s.server === 'r2' && s.service === 'imaps')!.total;
      const report = await running;
      const r2After = (await haproxy.servers()).find((s) => s.server === 'r2' && s.service === 'imaps')!.total;
      // The sessions replica 1 held when it died. HAProxy's log shows most as ended normally (the
      // kernel closes a killed process's sockets with a FIN), so they are counted by time.
      const held = openSince('r1', killedAt);
      expect(report.failed).toBeLessThanOrEqual(held);
      expect(held).toBeLessThanOrEqual(CONCURRENCY);
      expect(report.ok).toBeGreaterThan(40);
      // Logins went on after the kill, through replica 2 alone.
      expect(r2After - r2Before).toBeGreaterThan(20);
      expect(report.timeline.filter((p) => p.second > (killedAt - loadStarted) / 1000 + 1).reduce((n, p) => n + p.ok, 0)).toBeGreaterThan(10);
    } finally {
      // Back: replica 1 starts again on the same ports and HAProxy takes it in.
      if (!r1().alive()) await r1().start();
      await haproxy.waitForServer('r1', 'UP');
    }
  }, 60_000);

  it('SIGTERM of a replica under load loses nothing: /readyz goes 503, HAProxy stops sending, the replica drains and exits 0', async () => {
    await both();
    const running = loginLoad(5);
    await sessionsReach('r2', 20);
    await sessionsReach('r1', 20);
    r2().child!.kill('SIGTERM');
    expect(await waitFor(async () => (await r2().readyz()) === 503, { timeoutMs: 2000, what: 'replica 2 unready' })).toBe(true);
    await haproxy.waitForServer('r2', 'DOWN', 5000);
    expect(await r2().exit).toBe(0);
    const report = await running;
    expect(report.failed).toBe(0);
    expect(report.ok).toBeGreaterThan(40);
    expect(r2().output).toContain('"msg":"sasl-gate stopped"');
  }, 60_000);
});

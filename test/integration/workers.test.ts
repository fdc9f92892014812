/**
 * `sasl-gate serve` with `workers: 2`, run as an admin runs it (bin/sasl-gate.js, a child process),
 * in front of a real Dovecot: logins spread over the workers, failure delays and connection limits
 * hold for the instance, a killed worker is replaced, SIGHUP and SIGTERM reach every worker, and
 * one `/metrics` counts every worker's logins once.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { copyFileSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startDovecot, type DovecotInstance } from '../../tools/dovecot.js';
import { startDevIdp, type DevIdp } from '../../tools/idp.js';
import { freePort } from '../../tools/ports.js';
import { ensureDevCertificate, generateDevCertificate } from '../../src/tls/devcert.js';
import { keepLog } from '../support/evidence.js';
import { MASTER, TlsImap, USERS, plain } from '../support/stack.js';

const BIN = join(process.cwd(), 'bin', 'sasl-gate.js');
const [ALICE, BOB] = USERS as [(typeof USERS)[0], (typeof USERS)[0]];

let dir: string;
let dovecot: DovecotInstance;
let idp: DevIdp;
let gate: ChildProcess;
let output = '';
let imapPort: number;
let adminPort: number;
let ca: string;
let certPaths: { cert: string; key: string };

/** Every JSON log line so far. */
function records(): Array<Record<string, unknown>> {
  return output
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => JSON.parse(l) as Record<string, unknown>);
}

function waitFor(test: () => boolean, what: string, timeoutMs = 20_000): Promise<void> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no ${what} in output:\n${output.slice(-4000)}`)), timeoutMs);
    const check = () => {
      if (test()) {
        clearTimeout(timer);
        clearInterval(poll);
        resolve();
      }
    };
    const poll = setInterval(check, 50);
    check();
  });
}

function connect(localAddress = '127.0.0.1'): Promise<TlsImap> {
  return TlsImap.connect({ host: '127.0.0.1', imapPort, ca, localAddress });
}

/** A password login (passed through to Dovecot) on a fresh connection, left open. */
async function login(user = ALICE, localAddress?: string): Promise<TlsImap> {
  const client = await connect(localAddress);
  const { tagged } = await client.command(`AUTHENTICATE PLAIN ${plain('', user.name, user.password)}`);
  expect(tagged).toMatch(/^t\d+ OK /);
  return client;
}

async function admin(path: string): Promise<{ status: number; body: string }> {
  const res = await fetch(`http://127.0.0.1:${adminPort}${path}`);
  return { status: res.status, body: await res.text() };
}

/** The sum of `sasl_gate_authentications_total` samples with `result`. */
async function authentications(result: string): Promise<number> {
  const { body } = await admin('/metrics');
  return body
    .split('\n')
    .filter((l) => l.startsWith('sasl_gate_authentications_total{') && l.includes(`result="${result}"`))
    .reduce((sum, l) => sum + Number(l.split(' ').at(-1)), 0);
}

const workerPids = () => new Set(records().filter((r) => r['msg'] === 'worker started').map((r) => r['pid'] as number));

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'sasl-gate-workers-'));
  const certs = await ensureDevCertificate(join(dir, 'certs'));
  certPaths = { cert: certs.certPath, key: certs.keyPath };
  ca = readFileSync(certs.caPath, 'utf8');
  [dovecot, idp] = await Promise.all([
    startDovecot({ users: USERS, master: MASTER, authPenalty: false }),
    startDevIdp({ users: USERS.map((u) => ({ id: u.name.split('@')[0]!, email: u.name })), audience: 'mail' }),
  ]);
  [imapPort, adminPort] = await Promise.all([freePort(), freePort()]);
  writeFileSync(
    join(dir, 'sasl-gate.yaml'),
    `
listeners:
  - { protocol: imap, bind: "127.0.0.1:${imapPort}", tls: implicit }
tls: { cert: ${certs.certPath}, key: ${certs.keyPath} }
backends:
  imap: { host: 127.0.0.1, port: ${dovecot.imapPort} }
master: { user: ${MASTER.user}, password: "${MASTER.password}" }
oauth: { issuer: "${idp.issuer}", audience: [mail], clientId: ${idp.clientId}, clientSecret: "${idp.clientSecret}" }
admin: { bind: "127.0.0.1:${adminPort}" }
limits: { maxConnectionsPerAddress: 4, authFailureDelaySeconds: 0.1, authFailureMaxDelaySeconds: 5, shutdownGraceSeconds: 20 }
workers: 2
`,
  );
  // Round-robin hands connections to the workers in turn, so each test knows its logins alternate
  // (the default lets the kernel choose, which need not spread a handful of connections).
  gate = spawn(process.execPath, [BIN, 'serve', '--config', join(dir, 'sasl-gate.yaml')], {
    env: { ...process.env, NODE_CLUSTER_SCHED_POLICY: 'rr' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  gate.stdout!.on('data', (c: Buffer) => (output += c.toString()));
  gate.stderr!.on('data', (c: Buffer) => (output += c.toString()));
  await waitFor(() => output.includes('"msg":"sasl-gate started"'), 'all workers started');
  await waitFor(() => records().filter((r) => r['msg'] === 'openid provider discovered').length >= 2, 'discovery in both workers');
});

afterAll(async () => {
  keepLog(output, 'workers');
  if (gate && gate.exitCode === null) gate.kill('SIGKILL');
  await Promise.all([dovecot?.stop(), idp?.close()]);
});

describe('serve with workers: 2', () => {
  it('is ready once both workers are, and spreads logins over them; /metrics counts each login once', async () => {
    let ready = await admin('/readyz');
    for (let i = 0; i < 40 && ready.status !== 200; i++) {
      await new Promise((r) => setTimeout(r, 250));
      ready = await admin('/readyz');
    }
    expect(ready.status).toBe(200);
    expect(ready.body).toContain('workers: 2 of 2 ready');
    const before = await authentications('success');
    for (let i = 0; i < 8; i++) {
      const client = await login(i % 2 ? ALICE : BOB);
      expect((await client.command('NOOP')).tagged).toMatch(/OK/);
      client.close();
    }
    await waitFor(() => records().filter((r) => r['msg'] === 'authenticated').length >= 8, 'eight logins logged');
    const pids = new Set(records().filter((r) => r['msg'] === 'authenticated').map((r) => r['pid']));
    expect(pids.size).toBe(2);
    expect([...pids].every((pid) => workerPids().has(pid as number))).toBe(true);
    expect((await authentications('success')) - before).toBe(8);
  });

  it('delays failed logins spread over the workers as one process would (per address)', async () => {
    const timings: number[] = [];
    const seen = output.length;
    for (let i = 0; i < 4; i++) {
      const client = await connect('127.0.0.5');
      const started = performance.now();
      // Refused by sasl-gate itself (authzid other than authcid): no backend delay in the timing.
      const { tagged } = await client.command(`AUTHENTICATE PLAIN ${plain(BOB.name, ALICE.name, 'guess')}`);
      timings.push(performance.now() - started);
      expect(tagged).toMatch(/^t\d+ NO /);
      client.close();
    }
    const refusals = () => output.slice(seen).split('\n').filter((l) => l.includes('"msg":"authentication refused"'));
    await waitFor(() => refusals().length === 4, 'four refusals logged');
    expect(new Set(refusals().map((l) => (JSON.parse(l) as { pid: number }).pid)).size).toBe(2);
    // 0.1 s doubling per failure of the address: the fourth waits 0.8 s; per worker it would be 0.2 s.
    expect(timings[2]).toBeGreaterThanOrEqual(350);
    expect(timings[3]).toBeGreaterThanOrEqual(750);
    expect(timings[3]).toBeLessThan(3000);
  });

  it('holds the per-address connection limit across workers', async () => {
    const open = await Promise.all([1, 2, 3, 4].map(() => connect('127.0.0.2')));
    expect(open.every((c) => c.greeting.startsWith('* OK'))).toBe(true);
    const fifth = await connect('127.0.0.2');
    expect(fifth.greeting).toMatch(/^\* BYE \[UNAVAILABLE\] Too many connections/);
    fifth.close();
    // Another address is not affected; a freed slot is usable again.
    const other = await connect('127.0.0.3');
    expect(other.greeting).toMatch(/^\* OK/);
    other.close();
    open[0]!.close();
    await new Promise((r) => setTimeout(r, 200));
    const again = await connect('127.0.0.2');
    expect(again.greeting).toMatch(/^\* OK/);
    for (const c of [...open.slice(1), again]) c.close();
  });

  it('restarts a worker killed with SIGKILL: its connections are released, the other worker\'s sessions go on', async () => {
    const sessions = [];
    for (let i = 0; i < 4; i++) sessions.push(await login(ALICE, '127.0.0.4'));
    const [victim] = [...workerPids()];
    process.kill(victim!, 'SIGKILL');
    await waitFor(() => records().some((r) => r['msg'] === 'worker died: starting it again'), 'restart');
    await waitFor(() => workerPids().size === 3, 'a new worker');
    const alive = await Promise.all(sessions.map((s) => s.command('NOOP').then((r) => r.tagged.includes('OK'), () => false)));
    expect(alive.filter(Boolean).length).toBeGreaterThanOrEqual(1);
    expect(alive.filter(Boolean).length).toBeLessThan(4);
    // The dead worker's connections no longer count against 127.0.0.4's limit of 4.
    const fresh = [];
    for (let i = alive.filter(Boolean).length; i < 4; i++) fresh.push(await login(BOB, '127.0.0.4'));
    for (const s of [...sessions, ...fresh]) s.close();
    for (let i = 0; i < 4; i++) (await login(BOB, '127.0.0.6')).close();
    const logins = () => output.split('\n').filter((l) => l.includes('"client":"127.0.0.6"') && l.includes('"msg":"connection closed"'));
    await waitFor(() => logins().length === 4, 'four logins logged');
    const pids = new Set(logins().map((l) => (JSON.parse(l) as { pid: number }).pid));
    expect(pids.size).toBe(2);
    expect(pids.has(victim!)).toBe(false);
  });

  it('SIGHUP loads the new certificate in every worker', async () => {
    const renewed = await generateDevCertificate(join(dir, 'renewed'));
    copyFileSync(renewed.certPath, certPaths.cert);
    copyFileSync(renewed.keyPath, certPaths.key);
    gate.kill('SIGHUP');
    await waitFor(() => records().filter((r) => r['msg'] === 'certificate reloaded').length >= 3, 'reloads');
    ca = readFileSync(renewed.caPath, 'utf8');
    const expected = new X509Certificate(readFileSync(renewed.certPath)).fingerprint256;
    for (let i = 0; i < 6; i++) {
      const client = await connect();
      expect(client.socket.getPeerX509Certificate()?.fingerprint256).toBe(expected);
      client.close();
    }
  });

  it('drains open sessions on SIGTERM and exits 0', async () => {
    const sessions = [await login(ALICE), await login(BOB)];
    const exited = new Promise<number | null>((resolve) => gate.once('exit', (code) => resolve(code)));
    gate.kill('SIGTERM');
    await waitFor(() => records().filter((r) => r['msg'] === 'worker shutting down: no new connections').length >= 2, 'drain');
    for (const s of sessions) expect((await s.command('NOOP')).tagged).toMatch(/OK/);
    for (const s of sessions) {
      await s.command('LOGOUT');
      s.close();
    }
    expect(await exited).toBe(0);
    expect(output).toContain('"msg":"sasl-gate stopped"');
  });
});

/**
 * `workers: 2` with what runs once per instance: the directory (fed over SCIM) and the self-service
 * page run in the supervisor, and every worker judges token logins by the directory the supervisor
 * pushes to it. A user the provider deactivates is refused by every worker at once.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { request } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ensureDevCertificate } from '../../src/tls/devcert.js';
import { startDovecot, type DovecotInstance } from '../../tools/dovecot.js';
import { startDevIdp, type DevIdp } from '../../tools/idp.js';
import { freePort } from '../../tools/ports.js';
import { keepLog, secret } from '../support/evidence.js';
import { MASTER, tokenLogin as stackTokenLogin, USERS } from '../support/stack.js';
import { waitFor } from '../support/wait.js';

const BIN = join(process.cwd(), 'bin', 'sasl-gate.js');
const [ALICE, BOB] = USERS as [(typeof USERS)[0], (typeof USERS)[0]];
const SCIM_TOKEN = secret('scim-token-workers-7c1d0e93aa51-b4f2c8', 'SCIM token');

let dir: string;
let dovecot: DovecotInstance;
let idp: DevIdp;
let gate: ChildProcess;
let output = '';
let ca: string;
let imapPort: number;
let scimPort: number;
let portalPort: number;

/** Every JSON log line so far. */
function records(): Array<Record<string, unknown>> {
  return output
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => JSON.parse(l) as Record<string, unknown>);
}

/** One HTTPS request to a listener of the supervisor, trusting the development CA. */
function https(port: number, method: string, path: string, body?: unknown, headers: Record<string, string> = {}): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, path, method, ca, servername: 'localhost', headers }, (res) => {
      let text = '';
      res.on('data', (c: Buffer) => (text += c.toString()));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: text }));
    });
    req.on('error', reject);
    req.end(body === undefined ? undefined : JSON.stringify(body));
  });
}

const scim = (method: string, path: string, body: unknown) =>
  https(scimPort, method, `/scim/v2/Users${path}`, body, { authorization: `Bearer ${SCIM_TOKEN}`, 'content-type': 'application/scim+json' });

/** Logins one after another (each one's log line is told apart by order), so round-robin alternates the workers. */
async function tokenLogins(count: number, user: string, token: string): Promise<Array<{ tagged: string; pid: unknown; reason: unknown }>> {
  const logins = [];
  for (let i = 0; i < count; i += 1) logins.push(await tokenLogin(user, token));
  return logins;
}

/** A token login on a fresh connection: the tagged answer and the pid of the worker that logged it. */
async function tokenLogin(user: string, token: string): Promise<{ tagged: string; pid: unknown; reason: unknown }> {
  const before = records().length;
  const { tagged } = await stackTokenLogin({ host: '127.0.0.1', imapPort, ca }, user, token);
  const line = await waitFor(
      () => records().slice(before).find((r) => r['msg'] === 'authenticated' || r['msg'] === 'authentication failed') ?? undefined,
      { what: 'the login’s log line' },
    );
  return { tagged, pid: line['pid'], reason: line['reason'] };
}

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'sasl-gate-workers-directory-'));
  const certs = await ensureDevCertificate(join(dir, 'certs'));
  ca = readFileSync(certs.caPath, 'utf8');
  [dovecot, idp] = await Promise.all([
    startDovecot({ users: USERS, master: MASTER, authPenalty: false }),
    startDevIdp({ users: USERS.map((u) => ({ id: u.name.split('@')[0]!, email: u.name })), audience: 'mail' }),
  ]);
  [imapPort, scimPort, portalPort] = await Promise.all([freePort(), freePort(), freePort()]);
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
directory:
  source: scim
  stateFile: ${join(dir, 'directory.json')}
  graceSeconds: 0
  scim: { bind: "127.0.0.1:${scimPort}", token: "${SCIM_TOKEN}" }
storage: { dir: ${join(dir, 'state')} }
appPasswords: { enabled: true }
portal: { bind: "127.0.0.1:${portalPort}", publicUrl: "https://127.0.0.1:${portalPort}" }
limits: { authFailureDelaySeconds: 0 }
workers: 2
`,
  );
  // Round-robin hands connections to the workers in turn, so a few logins reach both.
  gate = spawn(process.execPath, [BIN, 'serve', '--config', join(dir, 'sasl-gate.yaml')], {
    env: { ...process.env, NODE_CLUSTER_SCHED_POLICY: 'rr' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  gate.stdout!.on('data', (c: Buffer) => (output += c.toString()));
  gate.stderr!.on('data', (c: Buffer) => (output += c.toString()));
  await waitFor(() => output.includes('"msg":"sasl-gate started"'), { timeoutMs: 30_000, what: 'all workers started' });
}, 60_000);

afterAll(async () => {
  keepLog(output, 'workers-directory');
  if (gate && gate.exitCode === null) {
    gate.kill('SIGTERM');
    await new Promise((resolve) => gate.once('exit', resolve));
  }
  await Promise.all([dovecot?.stop(), idp?.close()]);
});

describe('workers with a directory and the self-service page', () => {
  it('every worker takes a user the provider pushed, refuses one it never did, and refuses a deactivated one at once', async () => {
    const created = await scim('POST', '', {
      schemas: ['urn:ietf:params:scim:schemas:core:2.0:User'],
      userName: 'alice',
      active: true,
      emails: [{ value: ALICE.name, primary: true }],
    });
    expect(created.status, created.body).toBe(201);
    const aliceId = (JSON.parse(created.body) as { id: string }).id;
    const [aliceToken, bobToken] = await Promise.all([idp.mintAccessToken({ user: ALICE.name }), idp.mintAccessToken({ user: BOB.name })]);
    secret(aliceToken, 'access token');
    secret(bobToken, 'access token');

    // The supervisor pushes the set to the workers right after the change.
    await waitFor(async () => (await tokenLogin(ALICE.name, aliceToken)).tagged.includes(' OK '), { timeoutMs: 5_000, what: 'alice let in' });
    const allowed = await tokenLogins(4, ALICE.name, aliceToken);
    for (const login of allowed) expect(login.tagged).toMatch(/^a1 OK /);
    expect(new Set(allowed.map((l) => l.pid)).size).toBe(2);

    const unknown = await tokenLogins(2, BOB.name, bobToken);
    for (const login of unknown) expect(login).toMatchObject({ tagged: expect.stringMatching(/^a1 NO \[AUTHENTICATIONFAILED\]/), reason: 'unknown_user' });
    expect(new Set(unknown.map((l) => l.pid)).size).toBe(2);

    const patched = await scim('PATCH', `/${aliceId}`, {
      schemas: ['urn:ietf:params:scim:api:messages:2.0:PatchOp'],
      Operations: [{ op: 'replace', path: 'active', value: false }],
    });
    expect(patched.status, patched.body).toBe(200);
    await waitFor(async () => (await tokenLogin(ALICE.name, aliceToken)).reason === 'user_disabled', { timeoutMs: 5_000, what: 'alice refused' });
    const refused = await tokenLogins(4, ALICE.name, aliceToken);
    for (const login of refused) expect(login).toMatchObject({ tagged: expect.stringMatching(/^a1 NO \[AUTHENTICATIONFAILED\]/), reason: 'user_disabled' });
    expect(new Set(refused.map((l) => l.pid)).size).toBe(2);
  });

  it('serves the self-service page from the supervisor', async () => {
    const page = await https(portalPort, 'GET', '/');
    expect(page.status).toBe(200);
    expect(page.body).toMatch(/Sign in/);
    const workerPids = new Set(records().filter((r) => r['msg'] === 'worker started').map((r) => r['pid']));
    const portalLine = records().find((r) => typeof r['msg'] === 'string' && /portal/.test(r['msg'] as string) && /listening/.test(r['msg'] as string));
    expect(portalLine, output.slice(-3000)).toBeDefined();
    expect(workerPids.has(portalLine!['pid'])).toBe(false);
  });
});

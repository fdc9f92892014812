/**
 * `sasl-gate token` as a terminal user meets it: the built command in its own process, run by
 * real msmtp (`passwordeval`) and mbsync (`PassCmd`, with the XOAUTH2 Cyrus SASL plugin) the way
 * their configuration files name it. One device sign-in, completed by the test on the
 * development provider's pages, then no person: mail goes out through sasl-gate's SMTPS to
 * Postfix and comes in through its IMAPS from Dovecot; an expiring token is refreshed (and the
 * rotated refresh token kept), a provider that is down is a temporary failure, and a revoked
 * sign-in is forgotten with exit 4. The helper's client is public: its tokens are for its own
 * client id and pass sasl-gate through `oauth.anyClientWithScope`.
 */
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MAIL_SCOPE } from '../../tools/idp.js';
import { secret } from '../support/evidence.js';
import { oauthbearer, startStack, tokenLogin, xoauth2, type Stack } from '../support/stack.js';
import {
  ALICE,
  BOB,
  appendMessage,
  authenticatedLine,
  ensurePackageFile,
  ensureProgram,
  removeWorkDirs,
  run,
  unique,
  waitForMessage,
  workDir,
} from './support/clients.js';

const ROOT = join(import.meta.dirname, '..', '..');
const BIN = join(ROOT, 'bin', 'sasl-gate.js');
const CLIENT_ID = 'sasl-gate-token';
const SCOPE = `openid email offline_access ${MAIL_SCOPE}`;
const KDE_XOAUTH2 = '/usr/lib/x86_64-linux-gnu/sasl2/libkdexoauth2.so';

let stack: Stack;
let dir: string;
let caPath: string;
let cacheHome: string;

beforeAll(async () => {
  if (!existsSync(join(ROOT, 'dist', 'token-helper', 'cli.js'))) {
    throw new Error('dist/ has no token helper: run npm run build first (npm test does)');
  }
  stack = await startStack({
    smtp: { login: 'master' },
    idp: { publicClient: { clientId: CLIENT_ID } },
    oauth: { anyClientWithScope: MAIL_SCOPE },
  });
  ({ dir, caPath } = workDir(stack, 'token-helper'));
  cacheHome = join(dir, 'cache');
}, 120_000);

afterAll(async () => {
  await stack?.close();
  removeWorkDirs();
});

/** The helper's arguments for a user, as a mail program's configuration would name them. */
function helperArgs(user: string, ...extra: string[]): string[] {
  return ['token', '--issuer', stack.idp.issuer, '--client-id', CLIENT_ID, '--login-hint', user, '--scope', SCOPE, ...extra];
}

/** The same as one shell command line, for passwordeval and PassCmd. */
function helperCommand(user: string): string {
  return [process.execPath, BIN, ...helperArgs(user, '--no-interactive')].map((a) => (/^[\w@./:=-]+$/.test(a) ? a : `'${a}'`)).join(' ');
}

const env = () => ({ XDG_CACHE_HOME: cacheHome, HOME: dir });

/** Registers a token the helper printed, and the SASL messages that carry it, for the log scan. */
function registerToken(token: string): string {
  secret(token, 'access token');
  for (const user of [ALICE.name, BOB.name]) {
    xoauth2(user, token);
    for (const port of [stack.smtpPort, stack.imapPort]) oauthbearer(user, token, 'localhost', port);
  }
  return token;
}

/** The saved sign-in of `user` (read as the user could, to age or revoke it); registers its refresh token. */
function savedFor(user: string): { path: string; data: Record<string, unknown> } {
  for (const file of readdirSync(join(cacheHome, 'sasl-gate')).filter((f) => f.endsWith('.json'))) {
    const path = join(cacheHome, 'sasl-gate', file);
    const data = JSON.parse(readFileSync(path, 'utf8')) as Record<string, unknown>;
    if (data['user'] === user) {
      if (typeof data['refreshToken'] === 'string') secret(data['refreshToken'], 'refresh token');
      return { path, data };
    }
  }
  throw new Error(`no saved sign-in for ${user}`);
}

/** Makes the saved access token of `user` expire `inSeconds` from now. */
function age(user: string, inSeconds: number): void {
  const { path, data } = savedFor(user);
  writeFileSync(path, JSON.stringify({ ...data, expiresAt: Math.floor(Date.now() / 1000) + inSeconds }), { mode: 0o600 });
}

/**
 * Runs the helper interactively, as a person in a terminal: waits for the address it prints on
 * stderr, signs `user` in there on the provider's pages (no person needed), and returns what the
 * helper printed once it ended.
 */
async function signInInteractively(user: string, idpUser: string, ...extra: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const child = spawn(process.execPath, [BIN, ...helperArgs(user, ...extra)], { env: { ...process.env, ...env() }, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d: Buffer) => (stdout += d.toString('utf8')));
  const address = new Promise<string>((resolve, reject) => {
    child.stderr.on('data', (d: Buffer) => {
      stderr += d.toString('utf8');
      const url = /^\s+(http\S+)$/m.exec(stderr)?.[1];
      if (url) resolve(url);
    });
    child.once('close', () => reject(new Error(`the helper ended without a sign-in address: ${stderr}`)));
  });
  const ended = new Promise<number | null>((resolve) => child.once('close', (code) => resolve(code)));
  const timer = setTimeout(() => child.kill('SIGKILL'), 40_000);
  try {
    await stack.idp.signInAt(await address, idpUser);
    const code = await ended;
    return { code, stdout, stderr };
  } finally {
    clearTimeout(timer);
  }
}

async function token(user: string, ...extra: string[]) {
  return run(process.execPath, [BIN, ...helperArgs(user, '--no-interactive', ...extra)], { env: env(), timeoutMs: 30_000 });
}

describe('sasl-gate token with a device sign-in, then msmtp and mbsync without a person', () => {
  let first: string;

  it('without a saved sign-in and --no-interactive: exit 1, nothing on stdout, what to run on stderr', async () => {
    const r = await token(ALICE.name);
    expect({ code: r.code, stdout: r.stdout }).toEqual({ code: 1, stdout: '' });
    expect(r.stderr).toContain(`sasl-gate token --issuer ${stack.idp.issuer} --client-id ${CLIENT_ID} --login-hint ${ALICE.name} --scope '${SCOPE}'`);
    expect(r.stderr).toContain('once in a terminal');
  });

  it('the first call signs in with the device flow and prints the token alone; the sign-in is kept 0600 in 0700', async () => {
    const r = await signInInteractively(ALICE.name, 'alice');
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/^[\w.-]+\n$/);
    first = registerToken(r.stdout.trim());
    expect(r.stderr).toMatch(/open this address in a web browser/);
    expect(r.stderr).toMatch(/code [A-Z]{4}-[A-Z]{4}/);
    expect(r.stderr).toContain(`Signed in as ${ALICE.name}.`);
    const { path, data } = savedFor(ALICE.name);
    expect(statSync(path).mode & 0o777).toBe(0o600);
    expect(statSync(join(cacheHome, 'sasl-gate')).mode & 0o777).toBe(0o700);
    expect(data).toMatchObject({ issuer: stack.idp.issuer, clientId: CLIENT_ID, user: ALICE.name, accessToken: first });
    expect(typeof data['refreshToken']).toBe('string');
    expect(r.stderr).not.toContain(first);
    expect(r.stderr).not.toContain(data['refreshToken'] as string);
    // A token for the helper's own client, which sasl-gate takes for its scope.
    const claims = JSON.parse(Buffer.from(first.split('.')[1]!, 'base64url').toString('utf8')) as Record<string, unknown>;
    expect(claims).toMatchObject({ aud: CLIENT_ID, email: ALICE.name });
    expect(String(claims['scope']).split(' ')).toContain(MAIL_SCOPE);
  }, 60_000);

  it('msmtp with passwordeval sends two messages through SMTPS; the saved token serves both, no provider call', async (ctx) => {
    const msmtp = await ensureProgram('msmtp', 'msmtp');
    if (!msmtp.ok) ctx.skip(msmtp.reason);
    const rc = join(dir, 'msmtprc');
    writeFileSync(
      rc,
      [
        'account gate',
        'host localhost',
        `port ${stack.smtpPort}`,
        'tls on',
        'tls_starttls off',
        `tls_trust_file ${caPath}`,
        'auth oauthbearer',
        `user ${ALICE.name}`,
        `from ${ALICE.name}`,
        `passwordeval "${helperCommand(ALICE.name)}"`,
        '',
      ].join('\n'),
      { mode: 0o600 },
    );
    const tokenCalls = stack.idp.requests.token;
    for (const n of [1, 2]) {
      const subject = unique(`helper msmtp ${n}`);
      const from = stack.logs.length;
      const message = `From: ${ALICE.name}\r\nTo: ${BOB.name}\r\nSubject: ${subject}\r\n\r\nmessage ${n} with a token from sasl-gate token\r\n`;
      const sent = await run('msmtp', ['-C', rc, '-a', 'gate', BOB.name], { input: message, env: env() });
      expect(sent.code, sent.stderr).toBe(0);
      expect(await authenticatedLine(stack, from, ALICE.name)).toMatchObject({ mechanism: 'OAUTHBEARER' });
      expect(await waitForMessage(stack, BOB, subject)).toContain(`message ${n} with a token from sasl-gate token`);
    }
    expect(stack.idp.requests.token).toBe(tokenCalls);
  });

  it('mbsync with PassCmd and XOAUTH2 syncs the mailbox through IMAPS', async (ctx) => {
    const mbsync = await ensureProgram('mbsync', 'isync');
    if (!mbsync.ok) ctx.skip(mbsync.reason);
    const plugin = await ensurePackageFile(KDE_XOAUTH2, 'libsasl2-modules-kdexoauth2');
    if (!plugin.ok) ctx.skip(plugin.reason);
    const subject = unique('helper mbsync');
    await appendMessage(stack, ALICE, subject, 'pulled by mbsync with a token from sasl-gate token');
    const maildir = join(dir, 'maildir');
    mkdirSync(maildir, { recursive: true });
    const rc = join(dir, 'mbsyncrc');
    writeFileSync(
      rc,
      [
        'IMAPAccount gate',
        'Host localhost',
        `Port ${stack.imapPort}`,
        `User ${ALICE.name}`,
        `PassCmd "${helperCommand(ALICE.name)}"`,
        'AuthMechs XOAUTH2',
        'SSLType IMAPS',
        `CertificateFile ${caPath}`,
        '',
        'IMAPStore remote',
        'Account gate',
        '',
        'MaildirStore local',
        `Path ${maildir}/`,
        `Inbox ${maildir}/INBOX`,
        '',
        'Channel sync',
        'Far :remote:',
        'Near :local:',
        'Patterns INBOX',
        'Create Near',
        'Sync Pull',
        'SyncState *',
        '',
      ].join('\n'),
      { mode: 0o600 },
    );
    const from = stack.logs.length;
    const r = await run('mbsync', ['-c', rc, 'sync'], { env: env() });
    expect(r.code, r.stderr).toBe(0);
    const files = ['new', 'cur'].flatMap((d) => readdirSync(join(maildir, 'INBOX', d)).map((f) => join(maildir, 'INBOX', d, f)));
    expect(files.map((f) => readFileSync(f, 'latin1')).join('\n')).toContain('pulled by mbsync with a token from sasl-gate token');
    expect(await authenticatedLine(stack, from, ALICE.name)).toMatchObject({ mechanism: 'XOAUTH2' });
  });

  it('a token about to expire is refreshed: a new token, the rotated refresh token kept, and it logs in', async () => {
    const before = savedFor(ALICE.name).data;
    age(ALICE.name, 30);
    const tokenCalls = stack.idp.requests.token;
    const r = await token(ALICE.name);
    expect(r.code, r.stderr).toBe(0);
    const refreshed = registerToken(r.stdout.trim());
    expect(refreshed).not.toBe(first);
    expect(r.stderr).toBe('');
    expect(stack.idp.requests.token).toBe(tokenCalls + 1);
    const after = savedFor(ALICE.name);
    expect(after.data['accessToken']).toBe(refreshed);
    expect(after.data['refreshToken']).not.toBe(before['refreshToken']);
    expect(after.data['expiresAt']).toBeGreaterThan(Date.now() / 1000 + 3000);
    expect(statSync(after.path).mode & 0o777).toBe(0o600);
    expect((await tokenLogin(stack, ALICE.name, refreshed)).tagged).toMatch(/^a1 OK /);
    // And the next call prints it again without asking the provider.
    const again = await token(ALICE.name);
    expect(again.stdout.trim()).toBe(refreshed);
    expect(stack.idp.requests.token).toBe(tokenCalls + 1);
  });

  it('two programs refreshing at once: one refresh, both get the same working token, the rotation survives', async () => {
    age(ALICE.name, 10);
    const tokenCalls = stack.idp.requests.token;
    const [a, b] = await Promise.all([token(ALICE.name), token(ALICE.name)]);
    expect([a.code, b.code], `${a.stderr}${b.stderr}`).toEqual([0, 0]);
    expect(a.stdout).toBe(b.stdout);
    const shared = registerToken(a.stdout.trim());
    expect(stack.idp.requests.token).toBe(tokenCalls + 1);
    expect((await tokenLogin(stack, ALICE.name, shared)).tagged).toMatch(/^a1 OK /);
    // Had both spent the same refresh token, the provider would have revoked the whole grant.
    age(ALICE.name, 10);
    const next = await token(ALICE.name);
    expect(next.code, next.stderr).toBe(0);
    registerToken(next.stdout.trim());
  });

  it('the provider down while the token needs a refresh: exit 3, the sign-in kept for later', async () => {
    age(ALICE.name, -10);
    await stack.idp.setFault('down');
    try {
      const r = await token(ALICE.name);
      expect({ code: r.code, stdout: r.stdout }).toEqual({ code: 3, stdout: '' });
      expect(r.stderr).toMatch(/ECONNREFUSED|not answer|fetch failed/);
    } finally {
      await stack.idp.setFault(null);
    }
    expect(savedFor(ALICE.name).data['refreshToken']).toEqual(expect.any(String));
    const back = await token(ALICE.name);
    expect(back.code, back.stderr).toBe(0);
    registerToken(back.stdout.trim());
  });

  it('a revoked refresh token: exit 4, the saved sign-in removed, and the message says to sign in again', async () => {
    const { path, data } = savedFor(ALICE.name);
    await stack.idp.revokeRefreshToken(data['refreshToken'] as string);
    age(ALICE.name, -10);
    const r = await token(ALICE.name);
    expect({ code: r.code, stdout: r.stdout }).toEqual({ code: 4, stdout: '' });
    expect(r.stderr).toMatch(/invalid_grant/);
    expect(r.stderr).toContain('once in a terminal to sign in again');
    expect(r.stderr).not.toContain(data['refreshToken'] as string);
    expect(existsSync(path)).toBe(false);
    expect((await token(ALICE.name)).code).toBe(1);
  });
});

describe('sasl-gate token --browser', () => {
  it('signs in with the authorization code flow, PKCE and a loopback redirect; the token logs in', async () => {
    const r = await signInInteractively(BOB.name, 'bob', '--browser');
    expect(r.code, r.stderr).toBe(0);
    const printed = registerToken(r.stdout.trim());
    const address = new URL(/^\s+(http\S+)$/m.exec(r.stderr)![1]!);
    expect(address.searchParams.get('code_challenge_method')).toBe('S256');
    expect(address.searchParams.get('login_hint')).toBe(BOB.name);
    expect(address.searchParams.get('redirect_uri')).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/callback$/);
    expect(savedFor(BOB.name).data).toMatchObject({ user: BOB.name, accessToken: printed, refreshToken: expect.any(String) });
    expect((await tokenLogin(stack, BOB.name, printed, 'OAUTHBEARER')).tagged).toMatch(/^a1 OK /);
    // Alice's token is not Bob's: sasl-gate still binds the identity.
    const wrongUser = await tokenLogin(stack, ALICE.name, printed);
    expect(wrongUser.tagged).toMatch(/^a1 NO /);
  }, 60_000);
});

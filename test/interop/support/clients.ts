/**
 * Shared helpers for the interoperability suite: running real client programs (installing them
 * from Debian's packages when missing), putting mail into a mailbox and reading it back through
 * sasl-gate, tokens that must fail (another user's, expired), and registering every SASL message
 * a client sent as a secret for the end-of-run log scan.
 */
import { spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { aptAvailable, aptInstall } from '../../../tools/apt.js';
import { secret } from '../../support/evidence.js';
import { TlsImap, USERS, type Stack } from '../../support/stack.js';
import { waitFor } from '../../support/wait.js';

export const [ALICE, BOB] = USERS as [(typeof USERS)[0], (typeof USERS)[0]];

/** Outcome of one client run. */
export interface RunResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  ms: number;
  timedOut: boolean;
}

export interface RunOptions {
  input?: string | Buffer;
  /** Keep stdin open (some programs under `script` stop when it ends). */
  holdStdin?: boolean;
  env?: Record<string, string>;
  cwd?: string;
  timeoutMs?: number;
}

/** Runs a program to completion (or kills its process group at the timeout). */
export function run(file: string, args: string[], opts: RunOptions = {}): Promise<RunResult> {
  const started = Date.now();
  return new Promise((resolve) => {
    const child = spawn(file, args, {
      cwd: opts.cwd,
      env: { ...process.env, ...opts.env },
      stdio: ['pipe', 'pipe', 'pipe'],
      detached: true,
    });
    let stdout = '';
    let stderr = '';
    let timedOut = false;
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString('latin1')));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString('latin1')));
    child.stdin.on('error', () => undefined);
    if (opts.input !== undefined) child.stdin.write(opts.input);
    if (!opts.holdStdin) child.stdin.end();
    const timer = setTimeout(() => {
      timedOut = true;
      try {
        if (child.pid) process.kill(-child.pid, 'SIGKILL');
      } catch {
        child.kill('SIGKILL');
      }
    }, opts.timeoutMs ?? 20_000);
    child.on('error', (err) => {
      clearTimeout(timer);
      resolve({ code: null, signal: null, stdout, stderr: `${stderr}${err.message}`, ms: Date.now() - started, timedOut });
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      child.stdin.destroy();
      resolve({ code, signal, stdout, stderr, ms: Date.now() - started, timedOut });
    });
  });
}

function onPath(binary: string): boolean {
  return spawnSync('sh', ['-c', `command -v ${binary}`], { stdio: 'ignore' }).status === 0;
}

const ensured = new Map<string, Promise<{ ok: boolean; reason: string }>>();

/**
 * Makes sure `binary` is installed, installing the Debian package `pkg` when it is missing and
 * this process may (root with apt-get). Resolves with the reason when it is not available.
 */
export function ensureProgram(binary: string, pkg: string): Promise<{ ok: boolean; reason: string }> {
  const key = `${binary}:${pkg}`;
  let pending = ensured.get(key);
  if (!pending) {
    pending = (async () => {
      if (onPath(binary)) return { ok: true, reason: '' };
      if (!(await aptAvailable())) return { ok: false, reason: `${binary} is not installed and apt-get cannot be used here (not root)` };
      try {
        await aptInstall([pkg]);
      } catch (err) {
        return { ok: false, reason: `${binary} is not installed and "apt-get install ${pkg}" failed: ${(err as Error).message.split('\n')[0]}` };
      }
      return onPath(binary) ? { ok: true, reason: '' } : { ok: false, reason: `${pkg} installed but ${binary} is not on PATH` };
    })();
    ensured.set(key, pending);
  }
  return pending;
}

/** Like {@link ensureProgram}, for a package that installs a file rather than a program (a plugin). */
export async function ensurePackageFile(path: string, pkg: string): Promise<{ ok: boolean; reason: string }> {
  if (existsSync(path)) return { ok: true, reason: '' };
  if (!(await aptAvailable())) return { ok: false, reason: `${path} is missing and apt-get cannot be used here (not root)` };
  try {
    await aptInstall([pkg]);
  } catch (err) {
    return { ok: false, reason: `${path} is missing and "apt-get install ${pkg}" failed: ${(err as Error).message.split('\n')[0]}` };
  }
  return existsSync(path) ? { ok: true, reason: '' } : { ok: false, reason: `${pkg} installed but ${path} is still missing` };
}

const workDirs: string[] = [];

/** Removes the directories {@link workDir} made (call from afterAll). */
export function removeWorkDirs(): void {
  for (const dir of workDirs.splice(0)) rmSync(dir, { recursive: true, force: true });
}

/** A private directory with the CA as a file (clients want a path). */
export function workDir(stack: Stack, name: string): { dir: string; caPath: string } {
  const dir = mkdtempSync(join(tmpdir(), `sasl-gate-interop-${name}-`));
  workDirs.push(dir);
  const caPath = join(dir, 'ca.pem');
  writeFileSync(caPath, stack.ca);
  return { dir, caPath };
}

/** Writes a token to a file for `passwordeval`/`PassCmd`-style settings; returns the path. */
export function tokenFile(dir: string, token: string): string {
  const path = join(dir, `token-${randomBytes(4).toString('hex')}`);
  writeFileSync(path, token, { mode: 0o600 });
  return path;
}

export const unique = (what: string) => `${what} ${randomBytes(4).toString('hex')}`;
export { sleep } from '../../support/wait.js';

/** An access token whose `exp` lies an hour in the past, signed by the provider's real key. */
export async function expiredToken(stack: Stack, user: string): Promise<string> {
  const now = Math.floor(Date.now() / 1000);
  return stack.idp.signToken({ ...stack.idp.claimsFor(user), iat: now - 7200, nbf: now - 7200, exp: now - 3600 });
}

/** Puts a message into `user`'s INBOX (password login through sasl-gate, APPEND). */
export async function appendMessage(stack: Stack, user: (typeof USERS)[0], subject: string, body: string): Promise<void> {
  const c = await TlsImap.connect(stack);
  try {
    const login = await c.command(`LOGIN "${user.name}" "${user.password}"`);
    if (!/ OK /.test(login.tagged)) throw new Error(`LOGIN failed: ${login.tagged}`);
    const message = `From: <${user.name}>\r\nTo: <${user.name}>\r\nSubject: ${subject}\r\n\r\n${body}\r\n`;
    const tag = c.tag();
    c.write(`${tag} APPEND INBOX {${Buffer.byteLength(message)}+}\r\n${message}\r\n`);
    const r = await c.until(tag);
    if (!/ OK /.test(r.tagged)) throw new Error(`APPEND failed: ${r.tagged}`);
    await c.command('LOGOUT');
  } finally {
    c.close();
  }
}

/** Reads the whole message with `subject` from `user`'s INBOX (password login), or undefined. */
export async function findMessage(stack: Stack, user: (typeof USERS)[0], subject: string): Promise<string | undefined> {
  const c = await TlsImap.connect(stack);
  try {
    await c.command(`LOGIN "${user.name}" "${user.password}"`);
    await c.command('EXAMINE INBOX');
    const search = await c.command(`SEARCH SUBJECT "${subject}"`);
    const numbers = (search.lines.find((l) => l.startsWith('* SEARCH')) ?? '').split(' ').slice(2).filter(Boolean);
    if (numbers.length === 0) return undefined;
    const fetch = await c.command(`FETCH ${numbers[0]} BODY.PEEK[]`);
    return fetch.lines.join('\n');
  } finally {
    c.close();
  }
}

/** Waits until a message with `subject` has been delivered to `user`; returns its text. */
export function waitForMessage(stack: Stack, user: (typeof USERS)[0], subject: string, timeoutMs = 10_000): Promise<string> {
  return waitFor(() => findMessage(stack, user, subject), { timeoutMs, intervalMs: 150, what: `"${subject}" delivered to ${user.name}` });
}

/** The gate's log lines since `from` (an index into stack.logs). */
export function logsSince(stack: Stack, from: number): Array<Record<string, unknown>> {
  return stack.logs.slice(from);
}

/** Waits until sasl-gate has logged a line matching `match` after index `from`. */
export async function waitForLog(
  stack: Stack,
  from: number,
  match: (line: Record<string, unknown>) => boolean,
  timeoutMs = 5_000,
): Promise<Record<string, unknown>> {
  return waitFor(() => stack.logs.slice(from).find(match), {
    timeoutMs,
    what: () => `a matching log line; got:\n${stack.logs.slice(from).map((l) => JSON.stringify(l)).join('\n')}`,
  });
}

/** The `authenticated` line a successful token login leaves (mechanism and user). */
export function authenticatedLine(stack: Stack, from: number, user: string) {
  return waitForLog(stack, from, (l) => l['msg'] === 'authenticated' && l['user'] === user);
}

/** The `authentication failed` line a refused token leaves. */
export function failedLine(stack: Stack, from: number) {
  return waitForLog(stack, from, (l) => l['msg'] === 'authentication failed');
}

const SASL_COMMAND = /\b(?:AUTHENTICATE|AUTH) (?:XOAUTH2|OAUTHBEARER|PLAIN|LOGIN) ([A-Za-z0-9+/=]{8,})/i;
const BASE64_LINE = /^[A-Za-z0-9+/]{16,}={0,2}$/;

/**
 * Registers every SASL message in a client's output or wire lines as a secret: initial responses
 * after AUTHENTICATE/AUTH and long base64 continuation lines.
 */
export function registerSaslSecrets(lines: Iterable<string>): void {
  for (const raw of lines) {
    const line = raw.replace(/^[<>] /, '').replace(/^-->\s*/, '').trim();
    const m = SASL_COMMAND.exec(line);
    if (m?.[1]) secret(m[1], 'SASL message');
    else if (BASE64_LINE.test(line)) secret(line, 'SASL message');
  }
}

/** Decodes an error challenge line (`+ ...` or `334 ...`). */
export function decodeChallenge(line: string): unknown {
  const b64 = line.replace(/^(?:\+|334) ?/, '');
  return JSON.parse(Buffer.from(b64, 'base64').toString('utf8'));
}

/** The JSON error challenges sasl-gate must send. */
export function expectedChallenge(stack: Stack, mechanism: 'XOAUTH2' | 'OAUTHBEARER'): unknown {
  return mechanism === 'XOAUTH2'
    ? { status: '401', schemes: 'bearer', scope: 'openid email' }
    : {
        status: 'invalid_token',
        scope: 'openid email',
        'openid-configuration': `${stack.idp.issuer}/.well-known/openid-configuration`,
      };
}

/** Which mechanism a client's AUTH line named and whether it carried an initial response. */
export function authCommand(lines: string[]): { mechanism: string; initialResponse: boolean; line: string } | undefined {
  for (const line of lines) {
    const m = /^(?:\S+ AUTHENTICATE|AUTH) (\S+)( \S+)?$/i.exec(line);
    if (m?.[1]) return { mechanism: m[1].toUpperCase(), initialResponse: m[2] !== undefined, line };
  }
  return undefined;
}

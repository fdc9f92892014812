/**
 * `sasl-gate token` against an attacker: a cache directory or file someone else prepared
 * (another owner, world-writable, symbolic links), a malicious or mixed-up provider (another
 * issuer, endpoints over plain HTTP beyond this machine), and requests to the loopback redirect
 * listener that did not come from the sign-in (CSRF). The provider here is a small OpenID
 * provider on 127.0.0.1 that records what reached it.
 */
import { createHash } from 'node:crypto';
import { chmodSync, chownSync, existsSync, lstatSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { connect } from 'node:net';
import type { AddressInfo } from 'node:net';
import { networkInterfaces, tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { cacheFileName, CacheError, SignInCache } from '../../../src/token-helper/cache.js';
import { runTokenCommand } from '../../../src/token-helper/cli.js';
import { obtainToken, TOKEN_EXIT, TokenHelperError, type TokenEndpoints } from '../../../src/token-helper/flow.js';
import { openidEndpoints } from '../../../src/token-helper/provider.js';

/** Another user's id: the tests run as root, which may hand files to it. */
const OTHER_UID = 65534;
const KEY = { issuer: 'https://id.example.test', clientId: 'mail-cli', user: 'alice@example.test' };

const cleanups: (() => void | Promise<void>)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

function tempDir(): string {
  const dir = mkdtempSync(join(tmpdir(), 'sasl-gate-token-attack-'));
  cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

const asRoot = process.getuid?.() === 0;

describe('the saved sign-in, prepared by someone else', () => {
  it.runIf(asRoot)('a cache directory another user owns is refused: nothing is written into it', async () => {
    const base = tempDir();
    const directory = join(base, 'sasl-gate');
    mkdirSync(directory, { mode: 0o777 });
    chmodSync(directory, 0o777);
    chownSync(directory, OTHER_UID, OTHER_UID);
    const cache = new SignInCache(directory, KEY);
    expect(() => cache.write({ ...KEY, refreshToken: 'refresh-secret' })).toThrow(CacheError);
    await expect(cache.withLock(async () => 'ran')).rejects.toThrow(/belongs to another user/);
    expect(existsSync(cache.path)).toBe(false);
    expect(existsSync(`${cache.path}.lock`)).toBe(false);
    // Its mode is the owner's business, not narrowed by this command.
    expect(statSync(directory).mode & 0o777).toBe(0o777);
  });

  it.runIf(asRoot)('a cache directory that is a symbolic link to another user\'s directory is refused', () => {
    const base = tempDir();
    const foreign = join(base, 'foreign');
    mkdirSync(foreign, { mode: 0o700 });
    chownSync(foreign, OTHER_UID, OTHER_UID);
    symlinkSync(foreign, join(base, 'sasl-gate'));
    const cache = new SignInCache(join(base, 'sasl-gate'), KEY);
    expect(() => cache.write({ ...KEY, refreshToken: 'refresh-secret' })).toThrow(/belongs to another user/);
    expect(existsSync(join(foreign, cacheFileName(KEY)))).toBe(false);
  });

  it.runIf(asRoot)('a sign-in planted by another user is not used: its token is never printed (exit 1)', async () => {
    const base = tempDir();
    const directory = join(base, 'sasl-gate');
    mkdirSync(directory, { mode: 0o700 });
    const issuer = 'https://id.example.test';
    const planted = join(directory, cacheFileName({ issuer, clientId: 'mail-cli', user: '' }));
    writeFileSync(planted, JSON.stringify({ version: 1, issuer, clientId: 'mail-cli', user: '', accessToken: 'attacker-access', refreshToken: 'attacker-refresh' }));
    chownSync(planted, OTHER_UID, OTHER_UID);
    const out: string[] = [];
    const err: string[] = [];
    const code = await runTokenCommand(['--issuer', issuer, '--client-id', 'mail-cli', '--no-interactive'], {
      out: (t) => out.push(t),
      err: (t) => err.push(t),
      env: { XDG_CACHE_HOME: base },
    });
    expect(code).toBe(TOKEN_EXIT.signInNeeded);
    expect(out.join('')).toBe('');
    expect(err.join('')).toMatch(/belongs to another user/);
    expect(err.join('')).not.toMatch(/attacker-/);
  });

  it('the cache file as a symbolic link: not read through, and a write replaces the link, not its target', () => {
    const base = tempDir();
    const cache = new SignInCache(join(base, 'sasl-gate'), KEY);
    cache.write({ ...KEY });
    // The link points at a file that looks like this key's sign-in, as an attacker would make it.
    const target = join(base, 'elsewhere.json');
    const decoy = JSON.stringify({ version: 1, ...KEY, accessToken: 'decoy-access', refreshToken: 'decoy-refresh' });
    writeFileSync(target, decoy, { mode: 0o644 });
    rmSync(cache.path);
    symlinkSync(target, cache.path);
    expect(cache.read()).toBeUndefined();
    cache.write({ ...KEY, accessToken: 'mine', refreshToken: 'my-refresh' });
    expect(readFileSync(target, 'utf8')).toBe(decoy);
    expect(statSync(target).mode & 0o777).toBe(0o644);
    expect(lstatSync(cache.path).isSymbolicLink()).toBe(false);
    expect(statSync(cache.path).mode & 0o777).toBe(0o600);
    expect(cache.read()).toMatchObject({ accessToken: 'mine' });
  });

  it('a saved sign-in others can read is narrowed to 0600 when read', () => {
    const cache = new SignInCache(join(tempDir(), 'sasl-gate'), KEY);
    cache.write({ ...KEY, refreshToken: 'r' });
    chmodSync(cache.path, 0o644);
    expect(cache.read()).toMatchObject({ refreshToken: 'r' });
    expect(statSync(cache.path).mode & 0o777).toBe(0o600);
  });

  it('the lock file as a symbolic link: the target is neither truncated nor removed', async () => {
    const base = tempDir();
    const cache = new SignInCache(join(base, 'sasl-gate'), KEY);
    cache.write({ ...KEY });
    const target = join(base, 'precious.txt');
    writeFileSync(target, 'keep me\n');
    symlinkSync(target, `${cache.path}.lock`);
    expect(await cache.withLock(async () => 'ran', 1000)).toBe('ran');
    expect(readFileSync(target, 'utf8')).toBe('keep me\n');
    expect(existsSync(`${cache.path}.lock`)).toBe(false);
  });
});

/** What the fake provider was asked at its token endpoint. */
interface TokenRequest {
  grant_type: string | null;
  code: string | null;
  code_verifier: string | null;
  refresh_token: string | null;
}

/** A small OpenID provider on 127.0.0.1; `metadata` overrides its discovery document. */
async function fakeProvider(metadata: (issuer: string) => Record<string, unknown> = () => ({})) {
  const tokenRequests: TokenRequest[] = [];
  const challenges: string[] = [];
  let issuer = '';
  const server: Server = createServer((req, res) => {
    const url = new URL(req.url ?? '/', issuer);
    const json = (status: number, body: unknown) => res.writeHead(status, { 'content-type': 'application/json', 'cache-control': 'no-store' }).end(JSON.stringify(body));
    if (url.pathname === '/.well-known/openid-configuration') {
      json(200, {
        issuer,
        authorization_endpoint: `${issuer}/authorize`,
        token_endpoint: `${issuer}/token`,
        response_types_supported: ['code'],
        code_challenge_methods_supported: ['S256'],
        ...metadata(issuer),
      });
      return;
    }
    if (url.pathname === '/token' && req.method === 'POST') {
      let body = '';
      req.on('data', (d: Buffer) => (body += d.toString('utf8')));
      req.on('end', () => {
        const form = new URLSearchParams(body);
        const request = { grant_type: form.get('grant_type'), code: form.get('code'), code_verifier: form.get('code_verifier'), refresh_token: form.get('refresh_token') };
        tokenRequests.push(request);
        const verified = challenges.includes(createHash('sha256').update(request.code_verifier ?? '').digest('base64url'));
        if (request.grant_type === 'authorization_code' && request.code === 'good-code' && verified) {
          json(200, { access_token: 'access-from-browser', token_type: 'Bearer', expires_in: 300, refresh_token: 'refresh-from-browser' });
        } else if (request.grant_type === 'refresh_token' && request.refresh_token === 'good-refresh') {
          json(200, { access_token: 'access-refreshed', token_type: 'Bearer', expires_in: 300 });
        } else {
          json(400, { error: 'invalid_grant' });
        }
      });
      return;
    }
    json(404, { error: 'not_found' });
  });
  await new Promise<void>((resolve) => server.listen({ host: '127.0.0.1', port: 0 }, resolve));
  issuer = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  cleanups.push(() => new Promise<void>((resolve) => server.close(() => resolve())));
  return { issuer, tokenRequests, challenges };
}

function endpointsOf(issuer: string) {
  return openidEndpoints({
    issuer: new URL(issuer),
    clientId: 'mail-cli',
    scope: 'email offline_access',
    loginHint: undefined,
    timeoutSeconds: 5,
    browserWaitSeconds: 60,
    now: () => Math.floor(Date.now() / 1000),
  });
}

/** Starts a browser sign-in; resolves once the helper has shown the address to open. */
async function startBrowserSignIn(provider: Awaited<ReturnType<typeof fakeProvider>>) {
  const endpoints = await endpointsOf(provider.issuer);
  let shown!: (url: URL) => void;
  const address = new Promise<URL>((resolve) => (shown = resolve));
  const result = endpoints.signInWithBrowser((url) => shown(new URL(url)));
  result.catch(() => undefined);
  const authorize = await address;
  provider.challenges.push(authorize.searchParams.get('code_challenge') ?? '');
  const redirect = new URL(authorize.searchParams.get('redirect_uri') ?? '');
  const state = authorize.searchParams.get('state') ?? '';
  const visit = async (query: Record<string, string>) => {
    const url = new URL(redirect);
    for (const [k, v] of Object.entries(query)) url.searchParams.set(k, v);
    const response = await fetch(url);
    return { status: response.status, text: await response.text() };
  };
  return { result, redirect, state, visit };
}

describe('the loopback redirect of --browser', () => {
  it('a redirect without the state, or with another, neither ends the sign-in nor reaches the provider (CSRF)', async () => {
    const provider = await fakeProvider();
    const { result, state, visit } = await startBrowserSignIn(provider);
    expect((await visit({ code: 'attacker-code' })).status).toBe(400);
    expect((await visit({ code: 'attacker-code', state: 'guessed' })).status).toBe(400);
    expect((await visit({ error: 'access_denied', state: `${state}x` })).status).toBe(400);
    expect(provider.tokenRequests).toEqual([]);
    // The real redirect still completes the sign-in.
    const real = await visit({ code: 'good-code', state });
    expect(real.status).toBe(200);
    expect(await result).toMatchObject({ accessToken: 'access-from-browser', refreshToken: 'refresh-from-browser' });
    expect(provider.tokenRequests.map((r) => r.code)).toEqual(['good-code']);
    expect(real.text).not.toMatch(/access-from-browser|refresh-from-browser/);
  });

  it('an authorization response naming another issuer (mix-up) is refused without spending the code', async () => {
    const provider = await fakeProvider();
    const { result, state, visit } = await startBrowserSignIn(provider);
    const answer = await visit({ code: 'good-code', state, iss: 'https://evil.example' });
    expect(answer.status).toBeGreaterThanOrEqual(400);
    expect(answer.text).toMatch(/Sign-in failed/);
    await expect(result).rejects.toBeInstanceOf(TokenHelperError);
    expect(provider.tokenRequests).toEqual([]);
  });

  it('a provider that promises iss in its redirects (RFC 9207): a redirect without it is refused without spending the code', async () => {
    const provider = await fakeProvider(() => ({ authorization_response_iss_parameter_supported: true }));
    const { result, state, visit } = await startBrowserSignIn(provider);
    expect((await visit({ code: 'good-code', state })).status).toBeGreaterThanOrEqual(400);
    await expect(result).rejects.toBeInstanceOf(TokenHelperError);
    expect(provider.tokenRequests).toEqual([]);
  });

  it('listens on 127.0.0.1 only', async () => {
    const provider = await fakeProvider();
    const { result, redirect, state, visit } = await startBrowserSignIn(provider);
    expect(redirect.hostname).toBe('127.0.0.1');
    const port = Number(redirect.port);
    const outside = Object.values(networkInterfaces())
      .flat()
      .filter((i) => i !== undefined && !i.internal)
      .map((i) => i!.address);
    for (const host of ['::1', ...outside]) {
      const reached = await new Promise<boolean>((resolve) => {
        const socket = connect({ host, port });
        socket.once('connect', () => {
          socket.destroy();
          resolve(true);
        });
        socket.once('error', () => resolve(false));
      });
      expect(reached, `port ${port} reachable on ${host}`).toBe(false);
    }
    await visit({ code: 'good-code', state });
    await result;
  });
});

describe('a malicious or mixed-up provider', () => {
  it('a discovery document naming another issuer is refused before any sign-in', async () => {
    const provider = await fakeProvider(() => ({ issuer: 'https://evil.example' }));
    const err = await endpointsOf(provider.issuer).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(TokenHelperError);
    expect(provider.tokenRequests).toEqual([]);
  });

  it.each(['token_endpoint', 'authorization_endpoint', 'device_authorization_endpoint'])(
    'a development provider whose %s is plain HTTP beyond this machine is refused',
    async (name) => {
      const provider = await fakeProvider(() => ({ [name]: 'http://id.example.net/steal' }));
      await expect(endpointsOf(provider.issuer)).rejects.toMatchObject({ code: 'provider_unavailable', message: expect.stringContaining(name) });
    },
  );

  it('an issuer over plain HTTP beyond this machine is a usage error (exit 2) before any request', async () => {
    for (const issuer of ['http://id.example.net', 'http://127.0.0.1.example.net', 'http://localhost.example.net', 'ftp://127.0.0.1']) {
      const err: string[] = [];
      const code = await runTokenCommand(['--issuer', issuer, '--client-id', 'mail-cli'], { out: () => undefined, err: (t) => err.push(t), env: { XDG_CACHE_HOME: tempDir() } });
      expect(code, issuer).toBe(TOKEN_EXIT.usage);
    }
  });
});

describe('exit codes and what is printed', () => {
  /** Runs the command with a saved sign-in holding `refreshToken` and an expired access token. */
  async function withSaved(issuer: string, refreshToken: string) {
    const base = tempDir();
    const cache = new SignInCache(join(base, 'sasl-gate'), { issuer, clientId: 'mail-cli', user: '' });
    cache.write({ ...cache.key, accessToken: 'old-access', expiresAt: Math.floor(Date.now() / 1000) - 10, refreshToken });
    const out: string[] = [];
    const err: string[] = [];
    const code = await runTokenCommand(['--issuer', issuer, '--client-id', 'mail-cli', '--no-interactive'], {
      out: (t) => out.push(t),
      err: (t) => err.push(t),
      env: { XDG_CACHE_HOME: base },
    });
    return { code, out: out.join(''), err: err.join(''), cache };
  }

  it('a refresh: exit 0, the new token alone on stdout, nothing secret on stderr', async () => {
    const provider = await fakeProvider();
    const run = await withSaved(provider.issuer, 'good-refresh');
    expect(run).toMatchObject({ code: TOKEN_EXIT.printed, out: 'access-refreshed\n' });
    expect(run.err).not.toMatch(/good-refresh|access-/);
  });

  it('a refused refresh: exit 4, nothing on stdout, the refresh token on neither stream, the sign-in forgotten', async () => {
    const provider = await fakeProvider();
    const run = await withSaved(provider.issuer, 'revoked-refresh-token');
    expect(run.code).toBe(TOKEN_EXIT.refused);
    expect(run.out).toBe('');
    expect(run.err).toMatch(/invalid_grant/);
    expect(run.err).not.toMatch(/revoked-refresh-token|old-access/);
    expect(run.cache.read()).toBeUndefined();
  });

  it('the provider unreachable: exit 3, nothing on stdout, the sign-in kept', async () => {
    const provider = await fakeProvider();
    const issuer = provider.issuer;
    await cleanups.pop()!();
    const run = await withSaved(issuer, 'kept-refresh-token');
    expect(run.code).toBe(TOKEN_EXIT.unavailable);
    expect(run.out).toBe('');
    expect(run.err).not.toMatch(/kept-refresh-token|old-access/);
    expect(run.cache.read()).toMatchObject({ refreshToken: 'kept-refresh-token' });
  });
});

describe('what a provider sends to the terminal', () => {
  it('escape sequences and bidirectional overrides in the device prompt and the signed-in address are not passed through', async () => {
    const ESC = '\x1b]0;owned\x07\x1b[2J';
    const endpoints: TokenEndpoints = {
      refresh: () => Promise.reject(new Error('unexpected')),
      signInWithBrowser: () => Promise.reject(new Error('unexpected')),
      async signInWithDevice(show) {
        show({ verificationUri: `https://id.example.test/device${ESC}`, verificationUriComplete: undefined, userCode: `AB${ESC}CD\u202e`, expiresInSeconds: 600 });
        return { accessToken: 'access-1', expiresAt: undefined, refreshToken: 'refresh-1', signedInAs: `mallory${ESC}@example.test` };
      },
    };
    const said: string[] = [];
    const cache = new SignInCache(join(tempDir(), 'sasl-gate'), { ...KEY, user: 'alice@example.test' });
    const token = await obtainToken(
      { interactive: true, browser: false, marginSeconds: 60, signInCommand: 'sasl-gate token' },
      { cache, endpoints: async () => endpoints, now: () => 1_800_000_000, say: (line) => said.push(line) },
    );
    expect(token).toBe('access-1');
    const text = said.join('\n');
    expect(text).not.toMatch(/[\x00-\x09\x0b-\x1f\x7f-\x9f\u202a-\u202e]/);
    expect(text).toContain('AB?]0;owned??[2JCD?');
    expect(text).toMatch(/signed in as mallory\?.*@example\.test, not as alice@example\.test/);
  });
});

describe('a lock taken over while a refresh runs', () => {
  it('a refresh refused because another process spent the token keeps that process\'s new sign-in', async () => {
    const now = 1_800_000_000;
    const cache = new SignInCache(join(tempDir(), 'sasl-gate'), { ...KEY, user: '' });
    cache.write({ ...cache.key, accessToken: 'access-1', refreshToken: 'refresh-1', expiresAt: now - 5 });
    const endpoints: TokenEndpoints = {
      async refresh() {
        // The other process, which judged the lock stale, refreshed first and saved the rotation.
        cache.write({ ...cache.key, accessToken: 'access-2', refreshToken: 'refresh-2', expiresAt: now + 3600 });
        throw new TokenHelperError('refused', 'refreshing the token failed: invalid_grant');
      },
      signInWithDevice: () => Promise.reject(new Error('unexpected')),
      signInWithBrowser: () => Promise.reject(new Error('unexpected')),
    };
    const token = await obtainToken(
      { interactive: false, browser: false, marginSeconds: 60, signInCommand: 'sasl-gate token' },
      { cache, endpoints: async () => endpoints, now: () => now, say: () => undefined },
    );
    expect(token).toBe('access-2');
    expect(cache.read()).toMatchObject({ refreshToken: 'refresh-2' });
  });
});

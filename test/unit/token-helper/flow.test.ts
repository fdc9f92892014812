import { chmodSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { cacheDirectory, cacheFileName, CacheError, SignInCache, type CacheSeams } from '../../../src/token-helper/cache.js';
import { TOKEN_HELP } from '../../../src/token-helper/cli.js';
import { obtainToken, TokenHelperError, type TokenEndpoints, type TokenSet } from '../../../src/token-helper/flow.js';
import { classify } from '../../../src/token-helper/provider.js';

const KEY = { issuer: 'https://id.example.test', clientId: 'mail-cli', user: 'alice@example.test' };
const T0 = 1_800_000_000;

const dirs: string[] = [];
afterEach(() => {
  for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true });
});

/** A clock that only moves when the code waits. */
function seams(start = T0 * 1000): CacheSeams & { clock: { ms: number }; liveProcesses: Set<number> } {
  const clock = { ms: start };
  const liveProcesses = new Set<number>([process.pid]);
  return {
    clock,
    liveProcesses,
    now: () => clock.ms,
    sleep: async (ms) => {
      clock.ms += ms;
    },
    alive: (pid) => liveProcesses.has(pid),
  };
}

function newCache(s = seams()): SignInCache {
  const dir = mkdtempSync(join(tmpdir(), 'sasl-gate-token-unit-'));
  dirs.push(dir);
  return new SignInCache(join(dir, 'sasl-gate'), KEY, s);
}

/** A provider behind the seam that records what it was asked. */
function provider(answers: { refresh?: () => TokenSet; device?: () => TokenSet; browser?: () => TokenSet } = {}) {
  const calls: string[] = [];
  let made = 0;
  const endpoints: TokenEndpoints = {
    async refresh(refreshToken) {
      calls.push(`refresh ${refreshToken}`);
      if (!answers.refresh) throw new Error('unexpected refresh');
      return answers.refresh();
    },
    async signInWithDevice(show) {
      calls.push('device');
      show({ verificationUri: 'https://id.example.test/device', verificationUriComplete: 'https://id.example.test/device?user_code=WDJB-MJHT', userCode: 'WDJB-MJHT', expiresInSeconds: 600 });
      if (!answers.device) throw new Error('unexpected device sign-in');
      return answers.device();
    },
    async signInWithBrowser(show) {
      calls.push('browser');
      show('https://id.example.test/auth?client_id=mail-cli');
      if (!answers.browser) throw new Error('unexpected browser sign-in');
      return answers.browser();
    },
  };
  return {
    calls,
    get made() {
      return made;
    },
    endpoints: async () => {
      made += 1;
      return endpoints;
    },
  };
}

const OPTIONS = { interactive: true, browser: false, marginSeconds: 60, signInCommand: 'sasl-gate token --issuer https://id.example.test --client-id mail-cli' };

function obtain(cache: SignInCache, p: ReturnType<typeof provider>, opts: Partial<typeof OPTIONS> = {}, now = T0) {
  const said: string[] = [];
  const result = obtainToken({ ...OPTIONS, ...opts }, { cache, endpoints: p.endpoints, now: () => now, say: (line) => said.push(line) });
  return { result, said };
}

const tokens = (n: number, extra: Partial<TokenSet> = {}): TokenSet => ({
  accessToken: `access-${n}`,
  expiresAt: T0 + 3600,
  refreshToken: `refresh-${n}`,
  signedInAs: 'alice@example.test',
  ...extra,
});

describe('obtainToken', () => {
  it('a fresh saved token is printed without reaching the provider at all', async () => {
    const cache = newCache();
    cache.write({ ...KEY, accessToken: 'access-1', refreshToken: 'refresh-1', expiresAt: T0 + 61 });
    const p = provider();
    expect(await obtain(cache, p).result).toBe('access-1');
    expect(p.made).toBe(0);
  });

  it('a token expiring within the margin is refreshed; the rotated refresh token replaces the spent one', async () => {
    const cache = newCache();
    cache.write({ ...KEY, accessToken: 'access-1', refreshToken: 'refresh-1', expiresAt: T0 + 60 });
    const p = provider({ refresh: () => tokens(2) });
    const { result, said } = obtain(cache, p);
    expect(await result).toBe('access-2');
    expect(p.calls).toEqual(['refresh refresh-1']);
    expect(cache.read()).toMatchObject({ accessToken: 'access-2', refreshToken: 'refresh-2', expiresAt: T0 + 3600 });
    expect(said).toEqual([]);
  });

  it('a refresh without a new refresh token keeps the old one', async () => {
    const cache = newCache();
    cache.write({ ...KEY, accessToken: 'access-1', refreshToken: 'refresh-1', expiresAt: T0 - 5 });
    const p = provider({ refresh: () => tokens(2, { refreshToken: undefined, signedInAs: undefined }) });
    expect(await obtain(cache, p).result).toBe('access-2');
    expect(cache.read()).toMatchObject({ accessToken: 'access-2', refreshToken: 'refresh-1' });
  });

  it('a refused refresh forgets the sign-in and says how to sign in again (exit 4)', async () => {
    const cache = newCache();
    cache.write({ ...KEY, accessToken: 'access-1', refreshToken: 'refresh-1', expiresAt: T0 - 5 });
    const p = provider({
      refresh: () => {
        throw new TokenHelperError('refused', 'refreshing the token failed: invalid_grant');
      },
    });
    const err = (await obtain(cache, p).result.catch((e: unknown) => e)) as TokenHelperError;
    expect(err).toBeInstanceOf(TokenHelperError);
    expect(err.exitCode).toBe(4);
    expect(err.message).toContain(`run "${OPTIONS.signInCommand}" once in a terminal to sign in again`);
    expect(err.message).not.toContain('refresh-1');
    expect(existsSync(cache.path)).toBe(false);
  });

  it('the provider away: the saved token while it still works (with a warning), else exit 3 keeping the sign-in', async () => {
    const away = () => {
      throw new TokenHelperError('provider_unavailable', 'refreshing the token failed: fetch failed (ECONNREFUSED)');
    };
    const cache = newCache();
    cache.write({ ...KEY, accessToken: 'access-1', refreshToken: 'refresh-1', expiresAt: T0 + 30 });
    const soon = obtain(cache, provider({ refresh: away }));
    expect(await soon.result).toBe('access-1');
    expect(soon.said.join('\n')).toMatch(/warning: could not refresh/);

    cache.write({ ...KEY, accessToken: 'access-1', refreshToken: 'refresh-1', expiresAt: T0 - 1 });
    const err = (await obtain(cache, provider({ refresh: away })).result.catch((e: unknown) => e)) as TokenHelperError;
    expect(err.exitCode).toBe(3);
    expect(cache.read()).toMatchObject({ refreshToken: 'refresh-1' });
  });

  it('no saved sign-in and --no-interactive: exit 1 without reaching the provider', async () => {
    const cache = newCache();
    const p = provider();
    const err = (await obtain(cache, p, { interactive: false }).result.catch((e: unknown) => e)) as TokenHelperError;
    expect(err.exitCode).toBe(1);
    expect(err.message).toContain(OPTIONS.signInCommand);
    expect(p.made).toBe(0);
  });

  it('--no-interactive gives up after 30 s while another call holds the sign-in (a temporary failure)', async () => {
    const s = seams();
    const cache = newCache(s);
    cache.write({ ...KEY, accessToken: 'access-1', refreshToken: 'refresh-1', expiresAt: T0 - 5 });
    s.liveProcesses.add(4242);
    writeFileSync(`${cache.path}.lock`, `4242 ${s.clock.ms}\n`);
    const started = s.clock.ms;
    const err = (await obtain(cache, provider(), { interactive: false }).result.catch((e: unknown) => e)) as CacheError;
    expect(err).toBeInstanceOf(CacheError);
    expect(err.temporary).toBe(true);
    expect(s.clock.ms - started).toBe(30_000);
  });

  it('signs in with the device flow: the address and code on stderr, never a token; the sign-in saved', async () => {
    const cache = newCache();
    const p = provider({ device: () => tokens(1) });
    const { result, said } = obtain(cache, p);
    expect(await result).toBe('access-1');
    const text = said.join('\n');
    expect(text).toContain('https://id.example.test/device?user_code=WDJB-MJHT');
    expect(text).toContain('WDJB-MJHT');
    expect(text).toContain('Signed in as alice@example.test.');
    expect(text).not.toMatch(/access-1|refresh-1/);
    expect(cache.read()).toMatchObject({ ...KEY, accessToken: 'access-1', refreshToken: 'refresh-1', signedInAs: 'alice@example.test' });
  });

  it('--browser signs in through the browser; warns about another user and a missing refresh token', async () => {
    const cache = newCache();
    const p = provider({ browser: () => tokens(1, { signedInAs: 'mallory@example.test', refreshToken: undefined }) });
    const { result, said } = obtain(cache, p, { browser: true });
    expect(await result).toBe('access-1');
    expect(p.calls).toEqual(['browser']);
    const text = said.join('\n');
    expect(text).toContain('https://id.example.test/auth?client_id=mail-cli');
    expect(text).toMatch(/signed in as mallory@example.test, not as alice@example.test/);
    expect(text).toMatch(/no refresh token/);
  });
});

describe('SignInCache', () => {
  it('writes 0600 in a 0700 directory, atomically, leaving no temporary file', () => {
    const cache = newCache();
    cache.write({ ...KEY, accessToken: 'a', refreshToken: 'r', expiresAt: T0 });
    cache.write({ ...KEY, accessToken: 'b', refreshToken: 'r', expiresAt: T0 });
    expect(statSync(cache.path).mode & 0o777).toBe(0o600);
    expect(statSync(cache.directory).mode & 0o777).toBe(0o700);
    expect(readdirSync(cache.directory)).toEqual([cacheFileName(KEY)]);
    expect(cache.read()).toMatchObject({ accessToken: 'b' });
  });

  it('one file per issuer, client and user; a torn or foreign file is no sign-in', () => {
    expect(new Set([cacheFileName(KEY), cacheFileName({ ...KEY, user: 'bob@example.test' }), cacheFileName({ ...KEY, clientId: 'x' }), cacheFileName({ ...KEY, issuer: 'https://id.example.test/' })]).size).toBe(4);
    const cache = newCache();
    cache.write({ ...KEY, accessToken: 'a' });
    writeFileSync(cache.path, '{"version":1,"issuer":');
    expect(cache.read()).toBeUndefined();
    writeFileSync(cache.path, JSON.stringify({ version: 1, ...KEY, user: 'bob@example.test', accessToken: 'a' }));
    expect(cache.read()).toBeUndefined();
    writeFileSync(cache.path, JSON.stringify({ version: 1, ...KEY, accessToken: 42 }));
    expect(cache.read()).toBeUndefined();
  });

  it('narrows an existing directory to 0700', () => {
    const cache = newCache();
    cache.write({ ...KEY });
    chmodSync(cache.directory, 0o755);
    cache.write({ ...KEY });
    expect(statSync(cache.directory).mode & 0o777).toBe(0o700);
  });

  it('the lock: waits for a live holder, takes over a dead one, and gives up after the wait', async () => {
    const s = seams();
    const cache = newCache(s);
    cache.write({ ...KEY });
    const lock = `${cache.path}.lock`;
    // A process that is gone left its lock behind.
    writeFileSync(lock, `999999 ${s.clock.ms}\n`);
    expect(await cache.withLock(async () => 'ran')).toBe('ran');
    expect(existsSync(lock)).toBe(false);
    // A live one holds it: the caller waits, then says so.
    s.liveProcesses.add(4242);
    writeFileSync(lock, `4242 ${s.clock.ms}\n`);
    const err = await cache.withLock(async () => 'ran', 2000).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(CacheError);
    expect(readFileSync(lock, 'utf8')).toMatch(/^4242 /);
    // A lock older than any sign-in is stale even when its process id is taken again.
    s.clock.ms += 16 * 60_000;
    expect(await cache.withLock(async () => 'ran')).toBe('ran');
  });

  it('lives in $XDG_CACHE_HOME/sasl-gate, else ~/.cache/sasl-gate', () => {
    expect(cacheDirectory({ XDG_CACHE_HOME: '/var/cache/me' }, () => '/home/me')).toBe('/var/cache/me/sasl-gate');
    expect(cacheDirectory({}, () => '/home/me')).toBe('/home/me/.cache/sasl-gate');
    expect(cacheDirectory({ XDG_CACHE_HOME: 'relative' }, () => '/home/me')).toBe('/home/me/.cache/sasl-gate');
  });
});

describe('classify', () => {
  it('network failures are temporary (exit 3), with the system reason', () => {
    const refused = new TypeError('fetch failed', { cause: Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:1'), { code: 'ECONNREFUSED' }) });
    const err = classify(refused, 'refreshing the token failed');
    expect(err.exitCode).toBe(3);
    expect(err.message).toMatch(/ECONNREFUSED/);
    expect(classify(new DOMException('timed out', 'TimeoutError'), 'x').message).toMatch(/did not answer in time/);
  });
});

describe('help', () => {
  it('fits a terminal and documents every exit code', () => {
    expect(TOKEN_HELP.split('\n').every((line) => line.length <= 100)).toBe(true);
    for (const code of [0, 1, 2, 3, 4]) expect(TOKEN_HELP).toMatch(new RegExp(`\\n  ${code}   `));
  });
});

import { Writable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { createPortalApp, sameOrigin, type PortalRequest, type PortalResponse, type PortalSettings } from '../../../src/portal/app.js';
import { escapeHtml } from '../../../src/portal/html.js';
import { CookieSigner, SESSION_COOKIE, SIGNIN_COOKIE } from '../../../src/portal/session.js';
import type { SignInClient } from '../../../src/portal/signin.js';
import { configSchema } from '../../../src/config/schema.js';
import { GateError } from '../../../src/errors.js';
import { createLogger } from '../../../src/observe/logger.js';
import { MemoryAppPasswords } from '../../support/memory-app-passwords.js';

const ORIGIN = 'https://mail.example.test';
const START = Date.UTC(2026, 0, 10, 12, 0, 0);

const oauth = configSchema.parse({
  listeners: [{ protocol: 'imap', bind: '127.0.0.1:993' }],
  tls: { development: true },
  backends: { imap: { host: '127.0.0.1', port: 143 } },
  master: { user: 'master', password: 'master-secret' },
  oauth: { issuer: 'https://idp.example.test', clientId: 'mail', allowedEmailDomains: ['example.test'] },
}).oauth;

interface Harness {
  app: ReturnType<typeof createPortalApp>;
  service: MemoryAppPasswords;
  clock: { now: number };
  /** What the provider says at the next callback. */
  provider: { claims: Record<string, unknown>; authTime: number | undefined; lastMaxAge: number | undefined };
  jar: Map<string, string>;
  logs: () => string;
  verdict: { value: 'allowed' | 'disabled' | 'unknown' | 'not_loaded' };
  request(method: string, url: string, options?: { form?: Record<string, string | string[]>; origin?: string | null; referer?: string; cookies?: boolean }): Promise<PortalResponse>;
  signIn(): Promise<void>;
  csrf(): Promise<string>;
}

function harness(overrides: Partial<PortalSettings> & { directory?: boolean } = {}): Harness {
  const clock = { now: START };
  const provider: Harness['provider'] = {
    claims: { sub: 'alice', email: 'alice@example.test', email_verified: true },
    authTime: undefined,
    lastMaxAge: undefined,
  };
  const signIn: SignInClient = {
    async authorizationUrl({ state, nonce, maxAge }) {
      const url = new URL('https://idp.example.test/authorize');
      url.searchParams.set('state', state);
      url.searchParams.set('nonce', nonce);
      if (maxAge !== undefined) url.searchParams.set('max_age', String(maxAge));
      return url;
    },
    async complete(url, checks) {
      if (url.searchParams.get('state') !== checks.state) throw new Error('state mismatch');
      provider.lastMaxAge = checks.maxAge;
      return { claims: provider.claims, authTime: provider.authTime ?? Math.floor(clock.now / 1000) };
    },
    origins: () => ['https://idp.example.test'],
  };
  let out = '';
  const log = createLogger({
    level: 'debug',
    destination: new Writable({
      write(chunk: Buffer, _e, done) {
        out += chunk.toString();
        done();
      },
    }),
  });
  const service = new MemoryAppPasswords({ now: () => clock.now });
  const verdict: Harness['verdict'] = { value: 'allowed' };
  const app = createPortalApp(
    {
      publicUrl: ORIGIN,
      providerName: 'Example ID',
      sessionIdleSeconds: 1800,
      recentSignInSeconds: 300,
      identity: { claims: ['email'], masterSeparator: '*', domains: ['example.test'] },
      oauth,
      defaultProtocols: ['imap', 'smtp'],
      servers: [
        { protocol: 'imap', port: 993, tls: 'implicit' },
        { protocol: 'smtp', port: 465, tls: 'implicit' },
        { protocol: 'smtp', port: 587, tls: 'starttls' },
        { protocol: 'pop3', port: 995, tls: 'implicit' },
      ],
      ...overrides,
    },
    {
      service,
      signIn,
      signer: new CookieSigner(Buffer.alloc(32, 7)),
      log,
      now: () => clock.now,
      ...(overrides.directory ? { directoryVerdict: () => verdict.value } : {}),
    },
  );
  const jar = new Map<string, string>();
  const h: Harness = {
    app,
    service,
    clock,
    provider,
    jar,
    verdict,
    logs: () => out,
    async request(method, url, options = {}) {
      const headers: PortalRequest['headers'] = {};
      if (options.cookies !== false && jar.size > 0) headers['cookie'] = [...jar].map(([k, v]) => `${k}=${v}`).join('; ');
      if (method === 'POST' && options.origin !== null) headers['origin'] = options.origin ?? ORIGIN;
      if (options.referer) headers['referer'] = options.referer;
      const form = new URLSearchParams();
      for (const [k, v] of Object.entries(options.form ?? {})) for (const value of [v].flat()) form.append(k, value);
      const response = await app.handle({ method, url, headers, body: form.toString() });
      for (const cookie of [response.headers['set-cookie'] ?? []].flat()) {
        const [pair] = cookie.split(';');
        const [name, ...value] = pair!.split('=');
        if (/Max-Age=0\b/.test(cookie)) jar.delete(name!);
        else jar.set(name!, value.join('='));
      }
      return response;
    },
    async signIn() {
      const start = await h.request('GET', '/signin');
      const state = new URL(String(start.headers['location'])).searchParams.get('state')!;
      const back = await h.request('GET', `/callback?code=the-code&state=${state}`);
      expect(back.status).toBe(303);
    },
    async csrf() {
      const page = await h.request('GET', '/');
      return /name="csrf" value="([^"]+)"/.exec(page.body)![1]!;
    },
  };
  return h;
}

describe('the self-service page', () => {
  it('shows a signed-out visitor a sign-in button, with the security headers on every page', async () => {
    const h = harness();
    const page = await h.request('GET', '/');
    expect(page.status).toBe(200);
    expect(page.body).toContain('Sign in with Example ID');
    expect(page.body).toContain('href="/signin"');
    expect(page.body).toContain('<meta name="viewport"');
    const csp = String(page.headers['content-security-policy']);
    expect(csp).toContain("frame-ancestors 'none'");
    expect(csp).toContain("script-src 'self'");
    expect(csp).not.toContain('unsafe-inline');
    expect(csp).toContain("form-action 'self' https://idp.example.test");
    expect(page.headers['cache-control']).toBe('no-store');
    expect(page.headers['strict-transport-security']).toMatch(/max-age=\d+/);
    expect(page.headers['referrer-policy']).toBe('same-origin');
    expect(page.headers['x-frame-options']).toBe('DENY');
    expect(page.body).not.toMatch(/<script>|\son\w+="/);
  });

  it('sends the browser to the provider with state and nonce in a signed, flagged cookie', async () => {
    const h = harness();
    const res = await h.request('GET', '/signin');
    expect(res.status).toBe(302);
    const to = new URL(String(res.headers['location']));
    expect(to.origin).toBe('https://idp.example.test');
    expect(to.searchParams.get('state')).toMatch(/^[\w-]{43}$/);
    expect(to.searchParams.has('max_age')).toBe(false);
    const cookie = [res.headers['set-cookie']].flat()[0]!;
    expect(cookie).toMatch(new RegExp(`^${SIGNIN_COOKIE}=`));
    for (const flag of ['Secure', 'HttpOnly', 'SameSite=Lax', 'Path=/']) expect(cookie).toContain(`; ${flag}`);
    expect(cookie).not.toContain(to.searchParams.get('state')!);
  });

  it('signs the user in at the callback, with a __Host- session cookie, and lists their passwords', async () => {
    const h = harness();
    await h.service.create({ user: 'alice@example.test', label: 'old phone', protocols: ['imap'] });
    await h.service.create({ user: 'bob@example.test', label: 'bobs laptop' });
    await h.signIn();
    expect(h.jar.has(SIGNIN_COOKIE)).toBe(false);
    expect(h.jar.has(SESSION_COOKIE)).toBe(true);
    const page = await h.request('GET', '/');
    expect(page.body).toContain('alice@example.test');
    expect(page.body).toContain('old phone');
    expect(page.body).not.toContain('bobs laptop');
    const cookie = [page.headers['set-cookie']].flat()[0]!;
    expect(cookie).toMatch(/^__Host-sasl-gate-session=[^;]+; Max-Age=1800; Path=\/; Secure; HttpOnly; SameSite=Lax$/);
  });

  it('refuses a callback without the sign-in cookie, or with another state', async () => {
    const h = harness();
    expect((await h.request('GET', '/callback?code=x&state=y')).status).toBe(400);
    await h.request('GET', '/signin');
    const res = await h.request('GET', '/callback?code=x&state=forged');
    expect(res.status).toBe(400);
    expect(h.jar.has(SESSION_COOKIE)).toBe(false);
  });

  it('names the user by the token rules: an address of an accepted domain, not marked unverified', async () => {
    for (const claims of [
      { sub: 'eve', email: 'eve@elsewhere.test', email_verified: true },
      { sub: 'eve', email: 'alice@example.test', email_verified: false },
      { sub: 'eve', preferred_username: 'alice' },
      { sub: 'eve', email: 'alice*master@example.test' },
    ]) {
      const h = harness();
      h.provider.claims = claims;
      const start = await h.request('GET', '/signin');
      const state = new URL(String(start.headers['location'])).searchParams.get('state')!;
      const res = await h.request('GET', `/callback?code=c&state=${state}`);
      expect(res.status, JSON.stringify(claims)).toBe(403);
      expect(h.jar.has(SESSION_COOKIE)).toBe(false);
    }
  });

  it('lets in only users the directory allows, and drops a session once the directory disables its user', async () => {
    const h = harness({ directory: true });
    h.verdict.value = 'unknown';
    const start = await h.request('GET', '/signin');
    const state = new URL(String(start.headers['location'])).searchParams.get('state')!;
    expect((await h.request('GET', `/callback?code=c&state=${state}`)).status).toBe(403);
    h.verdict.value = 'allowed';
    await h.signIn();
    expect((await h.request('GET', '/')).body).toContain('Your app passwords');
    h.verdict.value = 'disabled';
    const after = await h.request('GET', '/');
    expect(after.body).toContain('Sign in with');
    expect(h.jar.has(SESSION_COOKIE)).toBe(false);
  });

  it('ends a session after sessionIdleSeconds without a request, and keeps it while used', async () => {
    const h = harness();
    await h.signIn();
    for (let i = 0; i < 3; i++) {
      h.clock.now += 1700_000;
      expect((await h.request('GET', '/')).body).toContain('Your app passwords');
    }
    h.clock.now += 1801_000;
    expect((await h.request('GET', '/')).body).toContain('Sign in with');
  });

  it('takes no altered or swapped cookie for a session', async () => {
    const h = harness();
    await h.signIn();
    const sealed = h.jar.get(SESSION_COOKIE)!;
    const [payload, mac] = sealed.split('.');
    const claims = JSON.parse(Buffer.from(payload!, 'base64url').toString()) as Record<string, unknown>;
    const forged = Buffer.from(JSON.stringify({ ...claims, user: 'bob@example.test' })).toString('base64url');
    h.jar.set(SESSION_COOKIE, `${forged}.${mac}`);
    expect((await h.request('GET', '/')).body).toContain('Sign in with');
    // A value signed for the sign-in cookie is no session.
    const signer = new CookieSigner(Buffer.alloc(32, 7));
    h.jar.set(SESSION_COOKIE, signer.seal(SIGNIN_COOKIE, claims));
    expect((await h.request('GET', '/')).body).toContain('Sign in with');
    h.jar.set(SESSION_COOKIE, signer.seal(SESSION_COOKIE, claims));
    expect((await h.request('GET', '/')).body).toContain('Your app passwords');
  });

  it('creates a password after a recent sign-in and shows it once, with the servers to type in', async () => {
    const h = harness();
    await h.signIn();
    const csrf = await h.csrf();
    const res = await h.request('POST', '/create', { form: { csrf, label: 'phone', protocols: ['imap', 'smtp'], expires: '30' } });
    expect(res.status).toBe(200);
    expect(res.headers['cache-control']).toBe('no-store');
    const password = h.service.created[0]!;
    expect(password).toMatch(/^([a-z]{4}-){6}[a-z]{4}$/);
    expect(res.body).toContain(password);
    expect(res.body).toContain('alice@example.test');
    expect(res.body).toContain('<td>mail.example.test</td><td>993</td><td>SSL/TLS</td>');
    expect(res.body).toContain('<td>mail.example.test</td><td>587</td><td>STARTTLS</td>');
    expect(res.body).not.toContain('POP3</th>');
    const [record] = await h.service.list('alice@example.test');
    expect(record!.protocols).toEqual(['imap', 'smtp']);
    expect(record!.expiresAt!.getTime()).toBe(START + 30 * 86_400_000);
    const list = await h.request('GET', '/');
    expect(list.body).toContain('phone');
    expect(list.body).not.toContain(password);
    expect(h.logs()).not.toContain(password);
    expect(h.logs()).not.toContain(csrf);
    expect(h.logs()).not.toContain(h.jar.get(SESSION_COOKIE)!);
  });

  it('offers the listeners\u2019 protocols as checkboxes, the default ones checked', async () => {
    const h = harness();
    await h.signIn();
    const page = (await h.request('GET', '/')).body;
    expect(page).toContain('value="imap" checked');
    expect(page).toContain('value="smtp" checked');
    expect(page).toMatch(/value="pop3">/);
    expect(page).not.toContain('value="sieve"');
    expect(page).toMatch(/<label for="label">/);
  });

  it('sends a sign-in older than recentSignInSeconds back to the provider with max_age, then back to the filled form', async () => {
    const h = harness();
    h.provider.authTime = Math.floor(START / 1000);
    await h.signIn();
    h.clock.now += 301_000;
    const csrf = await h.csrf();
    const res = await h.request('POST', '/create', { form: { csrf, label: 'tablet', protocols: 'imap', expires: '' } });
    expect(res.status).toBe(302);
    const to = new URL(String(res.headers['location']));
    expect(to.searchParams.get('max_age')).toBe('300');
    expect(await h.service.list()).toEqual([]);
    h.provider.authTime = Math.floor(h.clock.now / 1000);
    const back = await h.request('GET', `/callback?code=c&state=${to.searchParams.get('state')}`);
    expect(h.provider.lastMaxAge).toBe(300);
    expect(back.status).toBe(303);
    const form = await h.request('GET', String(back.headers['location']));
    expect(form.body).toContain('value="tablet"');
    expect(form.body).toContain('value="imap" checked');
    expect(form.body).toMatch(/value="smtp">/);
    expect(form.body).toContain('You signed in again');
    const csrf2 = /name="csrf" value="([^"]+)"/.exec(form.body)![1]!;
    expect((await h.request('POST', '/create', { form: { csrf: csrf2, label: 'tablet', protocols: 'imap' } })).status).toBe(200);
  });

  it('refuses a form without the session CSRF token, or from another origin', async () => {
    const h = harness();
    await h.signIn();
    const csrf = await h.csrf();
    const cases: Array<[string, Parameters<Harness['request']>[2]]> = [
      ['no token', { form: { label: 'a', protocols: 'imap' } }],
      ['wrong token', { form: { csrf: `${csrf.slice(0, -2)}xx`, label: 'a', protocols: 'imap' } }],
      ['foreign origin', { form: { csrf, label: 'a', protocols: 'imap' }, origin: 'https://evil.test' }],
      ['null origin', { form: { csrf, label: 'a', protocols: 'imap' }, origin: 'null' }],
      ['no origin, foreign referer', { form: { csrf, label: 'a', protocols: 'imap' }, origin: null, referer: 'https://evil.test/x' }],
      ['neither origin nor referer', { form: { csrf, label: 'a', protocols: 'imap' }, origin: null }],
    ];
    for (const [what, options] of cases) {
      const res = await h.request('POST', '/create', options);
      expect(res.status, what).toBe(403);
    }
    const [id] = [(await h.service.create({ user: 'alice@example.test', label: 'keep' })).record.id];
    expect((await h.request('POST', '/revoke', { form: { id } })).status).toBe(403);
    expect((await h.request('POST', '/signout', { form: {}, origin: 'https://evil.test' })).status).toBe(403);
    expect((await h.service.list()).map((r) => r.label)).toEqual(['keep']);
    expect((await h.request('POST', '/create', { form: { csrf, label: 'a', protocols: 'imap' }, origin: null, referer: `${ORIGIN}/` })).status).toBe(200);
  });

  it('revokes a password of the user, never another user\u2019s', async () => {
    const h = harness();
    const mine = await h.service.create({ user: 'alice@example.test', label: 'phone' });
    const theirs = await h.service.create({ user: 'bob@example.test', label: 'phone' });
    await h.signIn();
    const csrf = await h.csrf();
    const other = await h.request('POST', '/revoke', { form: { csrf, id: theirs.record.id } });
    expect(other.headers['location']).toBe('/?done=gone');
    const res = await h.request('POST', '/revoke', { form: { csrf, id: mine.record.id } });
    expect(res.status).toBe(303);
    expect(res.headers['location']).toBe('/?done=revoked');
    expect((await h.service.list()).map((r) => r.user)).toEqual(['bob@example.test']);
    expect((await h.request('GET', '/?done=revoked')).body).toContain('was revoked');
  });

  it('says why a password was not created, keeping what was typed', async () => {
    const h = harness();
    await h.signIn();
    const csrf = await h.csrf();
    await h.request('POST', '/create', { form: { csrf, label: 'phone', protocols: 'imap' } });
    const dup = await h.request('POST', '/create', { form: { csrf, label: 'phone', protocols: 'imap' } });
    expect(dup.status).toBe(400);
    expect(dup.body).toContain('already have an app password with this label');
    const invalid: Array<Record<string, string | string[]>> = [
      { csrf, label: '', protocols: 'imap' },
      { csrf, label: 'x', protocols: [] },
      { csrf, label: 'x', protocols: 'sieve' },
      { csrf, label: 'x', protocols: 'imap', expires: '0' },
      { csrf, label: 'x', protocols: 'imap', expires: '1.5' },
    ];
    for (const form of invalid) {
      const res = await h.request('POST', '/create', { form });
      expect(res.status, JSON.stringify(form)).toBe(400);
      expect(res.body).toContain('role="alert"');
    }
    expect(await h.service.list()).toHaveLength(1);
  });

  it('escapes every value it shows', async () => {
    expect(escapeHtml(`<a href="x" onclick='y'>&</a>`)).toBe('&#60;a href=&#34;x&#34; onclick=&#39;y&#39;&#62;&#38;&#60;/a&#62;');
    const h = harness();
    await h.service.create({ user: 'alice@example.test', label: '<script>alert("x")</script>' });
    await h.signIn();
    const page = await h.request('GET', '/');
    expect(page.body).not.toContain('<script>alert');
    expect(page.body).toContain('&#60;script&#62;alert(&#34;x&#34;)&#60;/script&#62;');
    const resumed = await h.request('GET', '/?resume=1&label=%22%3E%3Cimg%20src%3Dx%3E');
    expect(resumed.body).not.toContain('"><img');
    const notice = await h.request('GET', '/?done=%3Cb%3Ehi');
    expect(notice.body).not.toContain('<b>hi');
  });

  it('signs out: the session cookie is cleared and the page is signed out', async () => {
    const h = harness();
    await h.signIn();
    const csrf = await h.csrf();
    const res = await h.request('POST', '/signout', { form: { csrf } });
    expect(res.status).toBe(303);
    expect([res.headers['set-cookie']].flat()[0]).toMatch(/^__Host-sasl-gate-session=; Max-Age=0;/);
    expect((await h.request('GET', res.headers['location'] as string)).body).toContain('You are signed out');
  });

  it('routes: static files, 404 for unknown paths, 405 for the wrong method, and a path prefix of publicUrl', async () => {
    const h = harness();
    const css = await h.request('GET', '/static/portal.css');
    expect(css.headers['content-type']).toMatch(/^text\/css/);
    const js = await h.request('GET', '/static/portal.js');
    expect(js.headers['content-type']).toMatch(/^text\/javascript/);
    expect(js.body).toContain('clipboard');
    expect((await h.request('GET', '/nope')).status).toBe(404);
    expect((await h.request('GET', '/create')).status).toBe(405);
    expect((await h.request('PUT', '/')).status).toBe(405);
    expect((await h.request('HEAD', '/')).status).toBe(200);
    const prefixed = harness({ publicUrl: `${ORIGIN}/apps/` });
    expect((await prefixed.request('GET', '/')).status).toBe(404);
    const page = await prefixed.request('GET', '/apps/');
    expect(page.status).toBe(200);
    expect(page.body).toContain('href="/apps/signin"');
    expect(page.body).toContain('href="/apps/static/portal.css"');
  });

  it('says the provider cannot be reached, with a temporary status, when its discovery fails', async () => {
    const h = harness();
    const down = createPortalApp(
      {
        publicUrl: ORIGIN,
        providerName: 'Example ID',
        sessionIdleSeconds: 1800,
        recentSignInSeconds: 300,
        identity: { claims: ['email'], masterSeparator: '*', domains: [] },
        oauth,
        defaultProtocols: ['imap'],
        servers: [],
      },
      {
        service: h.service,
        signIn: {
          authorizationUrl: () => Promise.reject(new GateError('provider_unavailable', 'discovery failed: ECONNREFUSED', { temporary: true })),
          complete: () => Promise.reject(new Error('not reached')),
          origins: () => [],
        },
        signer: new CookieSigner(Buffer.alloc(32, 3)),
        log: createLogger({ level: 'silent' }),
      },
    );
    const res = await down.handle({ method: 'GET', url: '/signin', headers: {}, body: '' });
    expect(res.status).toBe(503);
    expect(res.body).toContain('Example ID cannot be reached just now');
    expect(res.headers['set-cookie']).toBeUndefined();
  });

  it('tells a form of this page from a foreign one by Origin, else Referer', () => {
    const req = (headers: Record<string, string>): PortalRequest => ({ method: 'POST', url: '/', headers, body: '' });
    expect(sameOrigin(req({ origin: ORIGIN }), ORIGIN)).toBe(true);
    expect(sameOrigin(req({ origin: `${ORIGIN}:8443` }), ORIGIN)).toBe(false);
    expect(sameOrigin(req({ origin: ORIGIN, referer: 'https://evil.test/' }), ORIGIN)).toBe(true);
    expect(sameOrigin(req({ origin: 'https://evil.test', referer: `${ORIGIN}/` }), ORIGIN)).toBe(false);
    expect(sameOrigin(req({ referer: `${ORIGIN}/x` }), ORIGIN)).toBe(true);
    expect(sameOrigin(req({ referer: 'not a url' }), ORIGIN)).toBe(false);
    expect(sameOrigin(req({}), ORIGIN)).toBe(false);
  });
});

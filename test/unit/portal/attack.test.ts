/**
 * Attacks on the self-service page, in process with the real SQLite store: a session replayed after
 * sign-out, forged or foreign forms, tampered cookies, another user's password, markup in labels and
 * claims, stale sign-ins, redirects and Host tricks. Each test fails if the attack works.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { afterEach, describe, expect, it } from 'vitest';
import { openAppPasswordService, type SqliteAppPasswordService } from '../../../src/auth/app-passwords-sqlite.js';
import { configSchema } from '../../../src/config/schema.js';
import { createLogger } from '../../../src/observe/logger.js';
import { createPortalApp, type PortalRequest, type PortalResponse } from '../../../src/portal/app.js';
import { CookieSigner, SESSION_COOKIE, SIGNIN_COOKIE } from '../../../src/portal/session.js';
import type { SignInClient } from '../../../src/portal/signin.js';

const ORIGIN = 'https://mail.example.test';
const START = Date.UTC(2026, 0, 10, 12, 0, 0);
const SIGNER_KEY = Buffer.alloc(32, 9);

const oauth = configSchema.parse({
  listeners: [{ protocol: 'imap', bind: '127.0.0.1:993' }],
  tls: { development: true },
  backends: { imap: { host: '127.0.0.1', port: 143 } },
  master: { user: 'master', password: 'master-secret' },
  oauth: { issuer: 'https://idp.example.test', clientId: 'mail', allowedEmailDomains: ['example.test'] },
}).oauth;

const cleanups: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0)) await c();
});

type Jar = Map<string, string>;

/** One page over one real store; browsers are cookie jars. */
function portal(options: { maxPerUser?: number } = {}) {
  const dir = mkdtempSync(join(tmpdir(), 'sasl-gate-portal-attack-'));
  const clock = { now: START };
  const service: SqliteAppPasswordService = openAppPasswordService({
    dir: join(dir, 'state'),
    keyFile: undefined,
    defaultProtocols: ['imap', 'smtp'],
    maxPerUser: options.maxPerUser ?? 10,
    lastUseWriteSeconds: 300,
    now: () => new Date(clock.now),
  });
  cleanups.push(async () => {
    await service.close();
    rmSync(dir, { recursive: true, force: true });
  });
  /** What the provider says at the next callback. */
  const provider: { claims: Record<string, unknown>; authTime: number | undefined; maxAges: Array<number | undefined> } = {
    claims: { sub: 'alice', email: 'alice@example.test', email_verified: true },
    authTime: undefined,
    maxAges: [],
  };
  const signInClient: SignInClient = {
    async authorizationUrl({ state, maxAge }) {
      const url = new URL('https://idp.example.test/authorize');
      url.searchParams.set('state', state);
      if (maxAge !== undefined) url.searchParams.set('max_age', String(maxAge));
      return url;
    },
    async complete(url, checks) {
      if (url.searchParams.get('state') !== checks.state) throw new Error('state mismatch');
      provider.maxAges.push(checks.maxAge);
      return { claims: provider.claims, authTime: provider.authTime ?? Math.floor(clock.now / 1000) };
    },
    origins: () => ['https://idp.example.test'],
  };
  let logs = '';
  const log = createLogger({
    level: 'debug',
    destination: new Writable({
      write(chunk: Buffer, _e, done) {
        logs += chunk.toString();
        done();
      },
    }),
  });
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
      ],
    },
    { service, signIn: signInClient, signer: new CookieSigner(SIGNER_KEY), log, now: () => clock.now },
  );

  async function request(
    jar: Jar,
    method: string,
    url: string,
    options: { form?: Record<string, string | string[]>; headers?: Record<string, string>; origin?: string | null; cookie?: string } = {},
  ): Promise<PortalResponse> {
    const headers: PortalRequest['headers'] = { ...options.headers };
    const cookie = options.cookie ?? [...jar].map(([k, v]) => `${k}=${v}`).join('; ');
    if (cookie) headers['cookie'] = cookie;
    if (method === 'POST' && options.origin !== null) headers['origin'] = options.origin ?? ORIGIN;
    const form = new URLSearchParams();
    for (const [k, v] of Object.entries(options.form ?? {})) for (const value of [v].flat()) form.append(k, value);
    const response = await app.handle({ method, url, headers, body: form.toString() });
    for (const set of [response.headers['set-cookie'] ?? []].flat()) {
      const [pair] = set.split(';');
      const [name, ...value] = pair!.split('=');
      if (/Max-Age=0\b/.test(set)) jar.delete(name!);
      else jar.set(name!, value.join('='));
    }
    return response;
  }

  async function signIn(jar: Jar, email = 'alice@example.test'): Promise<void> {
    provider.claims = { sub: email.split('@')[0], email, email_verified: true };
    const start = await request(jar, 'GET', '/signin');
    const state = new URL(String(start.headers['location'])).searchParams.get('state')!;
    const back = await request(jar, 'GET', `/callback?code=code-${email}&state=${state}`);
    expect(back.status).toBe(303);
  }

  async function csrf(jar: Jar): Promise<string> {
    const page = await request(jar, 'GET', '/');
    return /name="csrf" value="([^"]+)"/.exec(page.body)![1]!;
  }

  const create = async (jar: Jar, label: string, extra: { origin?: string | null; csrf?: string } = {}) =>
    request(jar, 'POST', '/create', { form: { csrf: extra.csrf ?? (await csrf(jar)), label, protocols: ['imap'] }, ...(extra.origin !== undefined ? { origin: extra.origin } : {}) });

  return { app, service, clock, provider, request, signIn, csrf, create, logs: () => logs };
}

const signedIn = (page: PortalResponse) => /name="csrf"/.test(page.body);

describe('sessions', () => {
  it('a session cookie copied before sign-out opens nothing afterwards', async () => {
    const p = portal();
    const alice: Jar = new Map();
    await p.signIn(alice);
    const token = await p.csrf(alice);
    const stolen = `${SESSION_COOKIE}=${alice.get(SESSION_COOKIE)!}`;
    const out = await p.request(alice, 'POST', '/signout', { form: { csrf: token } });
    expect(out.status).toBe(303);
    expect(alice.has(SESSION_COOKIE)).toBe(false);

    const attacker: Jar = new Map();
    p.clock.now += 60_000;
    expect(signedIn(await p.request(attacker, 'GET', '/', { cookie: stolen }))).toBe(false);
    const created = await p.request(attacker, 'POST', '/create', { cookie: stolen, form: { csrf: token, label: 'attacker', protocols: ['imap'] } });
    expect(created.status).toBe(303);
    expect(created.body).not.toMatch(/[a-z]{4}(-[a-z]{4}){6}/);
    expect(await p.service.list('alice@example.test')).toEqual([]);
    // Signing in again gives a new, working session.
    await p.signIn(alice);
    expect(signedIn(await p.request(alice, 'GET', '/'))).toBe(true);
  });

  it('a tampered session cookie, or the sign-in cookie passed off as a session, is no session', async () => {
    const p = portal();
    const alice: Jar = new Map();
    await p.signIn(alice);
    const [payload, mac] = alice.get(SESSION_COOKIE)!.split('.');
    const session = JSON.parse(Buffer.from(payload!, 'base64url').toString()) as Record<string, unknown>;
    const forged = Buffer.from(JSON.stringify({ ...session, user: 'bob@example.test' })).toString('base64url');
    const page = await p.request(new Map(), 'GET', '/', { cookie: `${SESSION_COOKIE}=${forged}.${mac}` });
    expect(signedIn(page)).toBe(false);
    expect(page.body).not.toContain('bob@example.test');
    // A value sealed for the sign-in cookie does not open as a session.
    const pending = new CookieSigner(SIGNER_KEY).seal(SIGNIN_COOKIE, { ...session });
    expect(signedIn(await p.request(new Map(), 'GET', '/', { cookie: `${SESSION_COOKIE}=${pending}` }))).toBe(false);
  });

  it('a sign-in that is not recent creates nothing, even when the provider ignores max_age', async () => {
    const p = portal();
    const alice: Jar = new Map();
    await p.signIn(alice);
    p.clock.now += 301_000;
    const res = await p.create(alice, 'phone');
    expect(res.status).toBe(302);
    const to = new URL(String(res.headers['location']));
    expect(to.origin).toBe('https://idp.example.test');
    expect(to.searchParams.get('max_age')).toBe('300');
    // The provider answers with the old sign-in time all the same.
    p.provider.authTime = Math.floor(START / 1000);
    const back = await p.request(alice, 'GET', `/callback?code=again&state=${to.searchParams.get('state')}`);
    expect(back.status).toBe(303);
    expect(p.provider.maxAges.at(-1)).toBe(300);
    const again = await p.create(alice, 'phone');
    expect(again.status).toBe(302);
    expect(await p.service.list('alice@example.test')).toEqual([]);
  });

  it('the callback without its sign-in cookie, or with another browser’s, signs nobody in', async () => {
    const p = portal();
    const victim: Jar = new Map();
    const start = await p.request(victim, 'GET', '/signin');
    const state = new URL(String(start.headers['location'])).searchParams.get('state')!;
    const attacker: Jar = new Map();
    const res = await p.request(attacker, 'GET', `/callback?code=the-code&state=${state}`);
    expect(res.status).toBe(400);
    expect(attacker.has(SESSION_COOKIE)).toBe(false);
    // The attacker's own sign-in cookie with the victim's state does not pass either.
    await p.request(attacker, 'GET', '/signin');
    const crossed = await p.request(attacker, 'GET', `/callback?code=the-code&state=${state}`);
    expect(crossed.status).toBe(400);
    expect(attacker.has(SESSION_COOKIE)).toBe(false);
  });
});

describe('forms from elsewhere', () => {
  it('refuses a create without the token, with another session’s token, from another origin, from Origin null, or with neither Origin nor Referer', async () => {
    const p = portal();
    const alice: Jar = new Map();
    const bob: Jar = new Map();
    await p.signIn(alice);
    await p.signIn(bob, 'bob@example.test');
    const bobToken = await p.csrf(bob);
    const aliceToken = await p.csrf(alice);
    const attempts: Array<Promise<PortalResponse>> = [
      p.request(alice, 'POST', '/create', { form: { label: 'no-token', protocols: ['imap'] } }),
      p.create(alice, 'other-token', { csrf: bobToken }),
      p.create(alice, 'evil-origin', { csrf: aliceToken, origin: 'https://evil.example' }),
      p.create(alice, 'null-origin', { csrf: aliceToken, origin: 'null' }),
      p.create(alice, 'no-origin', { csrf: aliceToken, origin: null }),
      p.request(alice, 'POST', '/create', { origin: null, headers: { referer: 'https://evil.example/mail.example.test/' }, form: { csrf: aliceToken, label: 'evil-referer', protocols: ['imap'] } }),
      p.create(alice, 'http-origin', { csrf: aliceToken, origin: 'http://mail.example.test' }),
    ];
    for (const res of await Promise.all(attempts)) {
      expect(res.status).toBe(403);
      expect(res.body).not.toMatch(/[a-z]{4}(-[a-z]{4}){6}/);
    }
    expect(await p.service.list()).toEqual([]);
    // The same form from the page itself works.
    expect((await p.create(alice, 'phone')).status).toBe(200);
  });

  it('cannot revoke, or see, another user’s password by its id', async () => {
    const p = portal();
    const { record } = await p.service.create({ user: 'bob@example.test', label: 'bob-phone' });
    const alice: Jar = new Map();
    await p.signIn(alice);
    const page = await p.request(alice, 'GET', '/');
    expect(page.body).not.toContain('bob-phone');
    expect(page.body).not.toContain(record.id);
    const res = await p.request(alice, 'POST', '/revoke', { form: { csrf: await p.csrf(alice), id: record.id } });
    expect(String(res.headers['location'])).toBe('/?done=gone');
    expect((await p.service.list('bob@example.test')).map((r) => r.id)).toEqual([record.id]);
  });
});

describe('what the page shows', () => {
  it('a label with markup is shown as text, in the list, the created page and the revoke button', async () => {
    const p = portal();
    const alice: Jar = new Map();
    await p.signIn(alice);
    const label = `"><script>alert(1)</script><img src=x onerror=alert(2)>'`;
    const created = await p.create(alice, label);
    expect(created.status).toBe(200);
    const list = await p.request(alice, 'GET', '/');
    for (const body of [created.body, list.body]) {
      expect(body).not.toContain('<script>alert');
      expect(body).not.toContain('<img src=x');
      // Inside a tag, not as escaped text.
      expect(body.replace(/"[^"]*"/g, '""')).not.toMatch(/<[^>]*\son\w+=/);
      expect(body.match(/<script\b/g)).toHaveLength(1);
    }
    expect(list.body).toContain('&#34;&#62;&#60;script&#62;');
  });

  it('a claim with markup names no user and is not echoed', async () => {
    const p = portal();
    const jar: Jar = new Map();
    p.provider.claims = { sub: 'x', email: '<script>alert(1)</script>@example.test', email_verified: true };
    const start = await p.request(jar, 'GET', '/signin');
    const state = new URL(String(start.headers['location'])).searchParams.get('state')!;
    const res = await p.request(jar, 'GET', `/callback?code=c&state=${state}`);
    expect(res.status).toBe(403);
    expect(res.body).not.toContain('<script>alert');
    expect(jar.has(SESSION_COOKIE)).toBe(false);
  });

  it('the created page is never stored, names the configured host whatever Host says, and its password reaches no log', async () => {
    const p = portal();
    const alice: Jar = new Map();
    await p.signIn(alice);
    const res = await p.request(alice, 'POST', '/create', {
      headers: { host: 'evil.example', 'x-forwarded-host': 'evil.example' },
      form: { csrf: await p.csrf(alice), label: 'phone', protocols: ['imap', 'smtp'] },
    });
    expect(res.status).toBe(200);
    const password = /[a-z]{4}(-[a-z]{4}){6}/.exec(res.body)![0];
    expect(res.headers['cache-control']).toBe('no-store');
    expect(res.body).not.toContain('evil.example');
    expect(res.body).toContain('mail.example.test');
    expect(p.logs()).not.toContain(password);
    expect(p.logs()).not.toContain(password.replace(/-/g, ''));
    // Shown once: the list after it has no password in it.
    expect((await p.request(alice, 'GET', '/')).body).not.toContain(password);
  });

  it('no redirect leaves the page or the provider, whatever return, next or a crafted path ask', async () => {
    const p = portal();
    const jar: Jar = new Map();
    for (const url of ['/signin?return=https://evil.example', '/signin?next=//evil.example', '/signin?returnTo=%2F%2Fevil.example']) {
      const res = await p.request(jar, 'GET', url);
      expect(new URL(String(res.headers['location'])).origin).toBe('https://idp.example.test');
      const state = new URL(String(res.headers['location'])).searchParams.get('state')!;
      const back = await p.request(jar, 'GET', `/callback?code=c&state=${state}&return=https://evil.example&next=//evil.example`);
      expect(back.status).toBe(303);
      expect(String(back.headers['location'])).toBe('/');
    }
    for (const url of ['//evil.example/', '/\\evil.example', '/?done=https://evil.example']) {
      const res = await p.request(jar, 'GET', url);
      expect(res.headers['location']).toBeUndefined();
      expect(res.body).not.toContain('evil.example');
    }
  });

  it('many passwords stop at maxPerUser, huge labels are refused, and the page survives both', async () => {
    const p = portal({ maxPerUser: 3 });
    const alice: Jar = new Map();
    await p.signIn(alice);
    for (const label of ['a', 'b', 'c']) expect((await p.create(alice, label)).status).toBe(200);
    const fourth = await p.create(alice, 'd');
    expect(fourth.status).toBe(400);
    expect(fourth.body).toContain('as many app passwords as allowed');
    const huge = await p.create(alice, 'x'.repeat(10_000));
    expect(huge.status).toBe(400);
    expect(huge.body).not.toContain('x'.repeat(201));
    expect((await p.service.list('alice@example.test')).map((r) => r.label).sort()).toEqual(['a', 'b', 'c']);
  });
});

import { execFile } from 'node:child_process';
import { createPublicKey, type JsonWebKey as NodeJsonWebKey } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import * as https from 'node:https';
import { createConnection } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import {
  createLocalJWKSet,
  createRemoteJWKSet,
  decodeJwt,
  decodeProtectedHeader,
  errors as joseErrors,
  jwtVerify,
  type JSONWebKeySet,
  type JWK,
} from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { devGrantType, startDevIdp, type DevIdp } from '../../tools/idp.js';
import { generateDevCertificate } from '../../src/tls/devcert.js';

const execFileAsync = promisify(execFile);

const USERS = [
  { id: 'alice', email: 'alice@example.test', name: 'Alice Example' },
  { id: 'bob', email: 'Bob@Example.test', preferredUsername: 'bobby' },
];

function basic(idp: DevIdp, secret = idp.clientSecret): string {
  return `Basic ${Buffer.from(`${idp.clientId}:${secret}`).toString('base64')}`;
}

async function tokenRequest(idp: DevIdp, form: Record<string, string>, secret?: string) {
  const res = await fetch(idp.tokenEndpoint, {
    method: 'POST',
    headers: { authorization: basic(idp, secret), 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams(form),
  });
  return { status: res.status, body: (await res.json()) as Record<string, unknown> };
}

/** RFC 7662 request authenticated the way a resource server configured for `auth` would. */
async function introspect(idp: DevIdp, token: string, auth: 'basic' | 'post' = 'basic', secret = idp.clientSecret) {
  const form = new URLSearchParams({ token });
  if (auth === 'post') {
    form.set('client_id', idp.clientId);
    form.set('client_secret', secret);
  }
  const res = await fetch(idp.introspectionEndpoint, {
    method: 'POST',
    headers: {
      ...(auth === 'basic' ? { authorization: basic(idp, secret) } : {}),
      accept: 'application/json',
      'content-type': 'application/x-www-form-urlencoded',
    },
    body: form,
  });
  return { status: res.status, body: (await res.json()) as Record<string, unknown> };
}

async function userinfo(idp: DevIdp, token: string) {
  const res = await fetch(idp.userinfoEndpoint, { headers: { authorization: `Bearer ${token}` } });
  return { status: res.status, body: (await res.json()) as Record<string, unknown> };
}

async function fetchJwks(idp: DevIdp): Promise<JSONWebKeySet> {
  return (await (await fetch(idp.jwksUri)).json()) as JSONWebKeySet;
}

function isJwt(token: string): boolean {
  try {
    decodeProtectedHeader(token);
    return true;
  } catch {
    return false;
  }
}

/** Resolves to the error a request ends with, or `answered` if it got a response. */
async function outcome(url: string, timeoutMs = 2_000): Promise<unknown> {
  try {
    await fetch(url, { signal: AbortSignal.timeout(timeoutMs) });
    return 'answered';
  } catch (err) {
    return err;
  }
}

function tcpConnect(port: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = createConnection({ host: '127.0.0.1', port }, () => {
      socket.destroy();
      resolve('connected');
    });
    socket.on('error', reject);
  });
}

describe('development IdP over HTTP', () => {
  let idp: DevIdp;
  let jwks: ReturnType<typeof createRemoteJWKSet>;

  beforeAll(async () => {
    idp = await startDevIdp({ users: USERS });
    jwks = createRemoteJWKSet(new URL(idp.jwksUri));
  });
  afterAll(async () => {
    await idp.close();
  });

  it('serves discovery whose issuer is exactly the issuer, and a public JWKS', async () => {
    expect(idp.issuer).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
    expect(idp.discoveryUrl).toBe(`${idp.issuer}/.well-known/openid-configuration`);
    const res = await fetch(idp.discoveryUrl);
    expect(res.status).toBe(200);
    const doc = (await res.json()) as Record<string, unknown>;
    expect(doc['issuer']).toBe(idp.issuer);
    expect(doc['jwks_uri']).toBe(idp.jwksUri);
    expect(doc['token_endpoint']).toBe(idp.tokenEndpoint);
    expect(doc['grant_types_supported']).toContain(devGrantType);
    expect(doc['grant_types_supported']).toContain('authorization_code');

    const set = (await (await fetch(idp.jwksUri)).json()) as JSONWebKeySet;
    expect(set.keys).toHaveLength(1);
    const [key] = set.keys;
    expect(key).toMatchObject({ kty: 'RSA', kid: idp.kid, alg: 'RS256', use: 'sig' });
    for (const priv of ['d', 'p', 'q', 'dp', 'dq', 'qi']) expect(key).not.toHaveProperty(priv);
  });

  it('mints a real RS256 JWT access token that verifies against the JWKS', async () => {
    const before = Math.floor(Date.now() / 1000);
    const token = await idp.mintAccessToken({ user: 'alice' });
    expect(decodeProtectedHeader(token)).toEqual({ alg: 'RS256', typ: 'at+jwt', kid: idp.kid });
    const { payload } = await jwtVerify(token, jwks, { issuer: idp.issuer, audience: 'mail' });
    expect(Object.keys(payload).sort()).toEqual(
      [
        'aud', 'client_id', 'email', 'email_verified', 'exp', 'iat', 'iss', 'jti', 'name',
        'preferred_username', 'scope', 'sub',
      ].sort(),
    );
    expect(payload).toMatchObject({
      iss: idp.issuer,
      aud: 'mail',
      sub: 'alice',
      email: 'alice@example.test',
      email_verified: true,
      preferred_username: 'alice',
      name: 'Alice Example',
      client_id: 'mail',
      scope: 'openid email profile',
    });
    expect(payload.exp).toBeGreaterThanOrEqual(before + 3600);
    expect(payload.exp).toBeLessThanOrEqual(before + 3600 + 5);
  });

  it('mints by email, with audience, lifetime and scope as asked', async () => {
    const token = await idp.mintAccessToken({
      user: 'bob@example.TEST',
      audience: 'https://calendar.example.test',
      ttlSeconds: 120,
      scope: 'openid email',
    });
    const { payload } = await jwtVerify(token, jwks, {
      issuer: idp.issuer,
      audience: 'https://calendar.example.test',
    });
    expect(payload).toMatchObject({ sub: 'bob', email: 'Bob@Example.test', preferred_username: 'bobby', scope: 'openid email' });
    expect(payload).not.toHaveProperty('name');
    expect(payload.exp! - payload.iat!).toBe(120);
    await expect(jwtVerify(token, jwks, { issuer: idp.issuer, audience: 'mail' })).rejects.toBeInstanceOf(
      joseErrors.JWTClaimValidationFailed,
    );
  });

  it('refuses unknown users when minting', async () => {
    await expect(idp.mintAccessToken({ user: 'mallory' })).rejects.toThrow(/invalid_grant/);
  });

  it('answers the development grant at the token endpoint with client_secret_basic', async () => {
    const ok = await tokenRequest(idp, { grant_type: devGrantType, username: 'alice', expires_in: '300' });
    expect(ok.status).toBe(200);
    expect(ok.body).toMatchObject({ token_type: 'Bearer', expires_in: 300, scope: 'openid email profile' });
    const { payload } = await jwtVerify(ok.body['access_token'] as string, jwks, {
      issuer: idp.issuer,
      audience: 'mail',
    });
    expect(payload['email']).toBe('alice@example.test');

    const badSecret = await tokenRequest(idp, { grant_type: devGrantType, username: 'alice' }, 'wrong');
    expect(badSecret.status).toBe(401);
    expect(badSecret.body['error']).toBe('invalid_client');

    const unknown = await tokenRequest(idp, { grant_type: devGrantType, username: 'mallory' });
    expect(unknown.status).toBe(400);
    expect(unknown.body['error']).toBe('invalid_grant');

    const missing = await tokenRequest(idp, { grant_type: devGrantType });
    expect(missing.status).toBe(400);
    expect(missing.body['error']).toBe('invalid_request');

    const badTtl = await tokenRequest(idp, { grant_type: devGrantType, username: 'alice', expires_in: '-5' });
    expect(badTtl.status).toBe(400);
  });

  it('signs with the provider key so that tampered claims still verify cryptographically', async () => {
    const now = Math.floor(Date.now() / 1000);
    const claims = idp.claimsFor('alice');
    expect(Object.keys(claims).sort()).toEqual(Object.keys(decodeJwt(await idp.mintAccessToken({ user: 'alice' }))).sort());

    const valid = await idp.signToken(claims);
    await expect(jwtVerify(valid, jwks, { issuer: idp.issuer, audience: 'mail' })).resolves.toBeDefined();

    const expired = await idp.signToken({ ...claims, iat: now - 7200, exp: now - 3600 });
    await expect(jwtVerify(expired, jwks, { issuer: idp.issuer, audience: 'mail' })).rejects.toBeInstanceOf(
      joseErrors.JWTExpired,
    );
    const early = await idp.signToken({ ...claims, nbf: now + 3600 });
    await expect(jwtVerify(early, jwks, { issuer: idp.issuer, audience: 'mail' })).rejects.toBeInstanceOf(
      joseErrors.JWTClaimValidationFailed,
    );
    const wrongAud = await idp.signToken({ ...claims, aud: 'other' });
    await expect(jwtVerify(wrongAud, jwks, { issuer: idp.issuer, audience: 'mail' })).rejects.toBeInstanceOf(
      joseErrors.JWTClaimValidationFailed,
    );
  });

  it('signs with a foreign key that the JWKS does not know, even under the provider kid', async () => {
    const claims = idp.claimsFor('alice');
    const foreign = await idp.signToken(claims, { key: 'foreign' });
    expect(decodeProtectedHeader(foreign).kid).not.toBe(idp.kid);
    await expect(jwtVerify(foreign, jwks, { issuer: idp.issuer, audience: 'mail' })).rejects.toBeInstanceOf(
      joseErrors.JWKSNoMatchingKey,
    );

    const impostor = await idp.signToken(claims, { key: 'foreign', kid: idp.kid });
    expect(decodeProtectedHeader(impostor).kid).toBe(idp.kid);
    await expect(jwtVerify(impostor, jwks, { issuer: idp.issuer, audience: 'mail' })).rejects.toBeInstanceOf(
      joseErrors.JWSSignatureVerificationFailed,
    );

    const ec = await idp.signToken(claims, { key: 'foreign', alg: 'ES256' });
    expect(decodeProtectedHeader(ec).alg).toBe('ES256');
    await expect(jwtVerify(ec, jwks)).rejects.toThrow();

    const unsigned = await idp.signToken(claims, { alg: 'none' });
    expect(decodeProtectedHeader(unsigned)).toEqual({ alg: 'none' });
    expect(unsigned.endsWith('.')).toBe(true);
    await expect(jwtVerify(unsigned, jwks)).rejects.toThrow();
  });

  it('publishes introspection and revocation, and takes client_secret_basic and client_secret_post there', async () => {
    const doc = (await (await fetch(idp.discoveryUrl)).json()) as Record<string, unknown>;
    expect(doc['introspection_endpoint']).toBe(idp.introspectionEndpoint);
    expect(doc['revocation_endpoint']).toBe(idp.revocationEndpoint);
    expect(doc['userinfo_endpoint']).toBe(idp.userinfoEndpoint);
    expect(doc['introspection_endpoint_auth_methods_supported']).toEqual(['client_secret_basic', 'client_secret_post']);

    const token = await idp.mintAccessToken({ user: 'bob' });
    const viaBasic = await introspect(idp, token, 'basic');
    const viaPost = await introspect(idp, token, 'post');
    expect(viaBasic.status).toBe(200);
    expect(viaPost).toEqual(viaBasic);
    const claims = decodeJwt(token);
    expect(viaBasic.body).toEqual({
      active: true,
      sub: 'bob',
      email: 'Bob@Example.test',
      email_verified: true,
      preferred_username: 'bobby',
      username: 'bobby',
      client_id: 'mail',
      scope: 'openid email profile',
      aud: 'mail',
      iss: idp.issuer,
      iat: claims.iat,
      exp: claims.exp,
      token_type: 'Bearer',
    });

    for (const auth of ['basic', 'post'] as const) {
      const wrong = await introspect(idp, token, auth, 'wrong');
      expect(wrong.status).toBe(401);
      expect(wrong.body['error']).toBe('invalid_client');
    }
    const anonymous = await fetch(idp.introspectionEndpoint, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ token }),
    });
    expect(anonymous.status).toBe(400);
    expect(await anonymous.json()).toMatchObject({ error: 'invalid_request' });
  });

  it('answers introspection of JWTs it did not issue with active: false', async () => {
    const claims = idp.claimsFor('alice');
    const tampered = await idp.signToken(claims);
    await expect(jwtVerify(tampered, jwks, { issuer: idp.issuer, audience: 'mail' })).resolves.toBeDefined();
    expect((await introspect(idp, tampered)).body).toEqual({ active: false });
    expect((await introspect(idp, await idp.signToken(claims, { key: 'foreign' }))).body).toEqual({ active: false });
    expect((await introspect(idp, await idp.signToken(claims, { alg: 'none' }))).body).toEqual({ active: false });
    expect((await introspect(idp, 'no-such-token')).body).toEqual({ active: false });
  });

  it('issues opaque access tokens that userinfo and introspection resolve', async () => {
    const token = await idp.mintAccessToken({ user: 'alice', format: 'opaque', ttlSeconds: 600 });
    expect(isJwt(token)).toBe(false);
    expect(token).toMatch(/^[\w-]{40,}$/);

    const info = await userinfo(idp, token);
    expect(info.status).toBe(200);
    expect(info.body).toEqual({
      sub: 'alice',
      email: 'alice@example.test',
      email_verified: true,
      preferred_username: 'alice',
      name: 'Alice Example',
    });
    const posted = await fetch(idp.userinfoEndpoint, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ access_token: token }),
    });
    expect(posted.status).toBe(200);

    const { status, body } = await introspect(idp, token);
    expect(status).toBe(200);
    expect(body).toMatchObject({
      active: true,
      sub: 'alice',
      client_id: 'mail',
      scope: 'openid email profile',
      iss: idp.issuer,
      email: 'alice@example.test',
      preferred_username: 'alice',
      username: 'alice',
      token_type: 'Bearer',
    });
    expect(body['exp'] as number - (body['iat'] as number)).toBe(600);
    // A userinfo token has no audience; the provider's userinfo endpoint accepts no other.
    expect(body).not.toHaveProperty('aud');

    const narrow = await idp.mintAccessToken({ user: 'bob', format: 'opaque', scope: 'openid email' });
    expect((await userinfo(idp, narrow)).body).toEqual({ sub: 'bob', email: 'Bob@Example.test', email_verified: true });

    const withAudience = await idp.mintAccessToken({ user: 'alice', format: 'opaque', audience: 'mail' });
    expect((await introspect(idp, withAudience)).body).toMatchObject({ active: true, aud: 'mail', sub: 'alice' });
    expect((await userinfo(idp, withAudience)).status).toBe(401);

    expect((await userinfo(idp, 'no-such-token')).status).toBe(401);
    // JWT access tokens carry an audience, so they are for resource servers, not userinfo.
    expect((await userinfo(idp, await idp.mintAccessToken({ user: 'alice' }))).status).toBe(401);
  });

  it('revokes JWT and opaque tokens: introspection turns inactive, userinfo refuses, others stay valid', async () => {
    const jwt = await idp.mintAccessToken({ user: 'alice' });
    const opaque = await idp.mintAccessToken({ user: 'alice', format: 'opaque' });
    const bystander = await idp.mintAccessToken({ user: 'alice', format: 'opaque' });
    expect((await introspect(idp, jwt)).body['active']).toBe(true);
    expect((await introspect(idp, opaque)).body['active']).toBe(true);

    await idp.revoke(jwt);
    await idp.revoke(opaque);
    expect((await introspect(idp, jwt)).body).toEqual({ active: false });
    expect((await introspect(idp, opaque)).body).toEqual({ active: false });
    const refused = await userinfo(idp, opaque);
    expect(refused.status).toBe(401);
    expect(refused.body['error']).toBe('invalid_token');

    expect((await introspect(idp, bystander)).body['active']).toBe(true);
    expect((await userinfo(idp, bystander)).status).toBe(200);
    // Revoking says nothing about a token's signature: only providers that ask the IdP notice.
    await expect(jwtVerify(jwt, jwks, { issuer: idp.issuer, audience: 'mail' })).resolves.toBeDefined();
    // RFC 7009: unknown tokens are no error.
    await expect(idp.revoke('no-such-token')).resolves.toBeUndefined();
  });

  it('mints lightweight JWTs without user claims that introspection still resolves', async () => {
    const token = await idp.mintAccessToken({ user: 'bob', lightweight: true });
    expect(decodeProtectedHeader(token)).toEqual({ alg: 'RS256', typ: 'at+jwt', kid: idp.kid });
    const { payload } = await jwtVerify(token, jwks, { issuer: idp.issuer, audience: 'mail' });
    expect(Object.keys(payload).sort()).toEqual(['aud', 'client_id', 'exp', 'iat', 'iss', 'jti', 'scope', 'sub']);
    expect(payload).toMatchObject({ sub: 'bob', client_id: 'mail', scope: 'openid email profile' });
    expect(Object.keys(idp.claimsFor('bob', { lightweight: true })).sort()).toEqual(Object.keys(payload).sort());

    const { body } = await introspect(idp, token);
    expect(body).toMatchObject({
      active: true,
      sub: 'bob',
      email: 'Bob@Example.test',
      preferred_username: 'bobby',
      username: 'bobby',
      aud: 'mail',
    });

    await expect(idp.mintAccessToken({ user: 'bob', lightweight: true, format: 'opaque' })).rejects.toThrow(
      /invalid_request/,
    );
  });

  it('counts the calls each endpoint receives', async () => {
    idp.resetCounters();
    expect(idp.requests).toEqual({ discovery: 0, jwks: 0, token: 0, introspection: 0, userinfo: 0, revocation: 0 });
    await fetch(idp.discoveryUrl);
    await fetch(`${idp.issuer}/.well-known/oauth-authorization-server`);
    await fetch(`${idp.jwksUri}?cache-buster=1`);
    const token = await idp.mintAccessToken({ user: 'alice', format: 'opaque' });
    await introspect(idp, token);
    await introspect(idp, token, 'post');
    await userinfo(idp, token);
    await idp.revoke(token);
    await fetch(`${idp.issuer}/nowhere`);
    expect(idp.requests).toEqual({ discovery: 2, jwks: 1, token: 1, introspection: 2, userinfo: 1, revocation: 1 });
    idp.resetCounters();
    expect(idp.requests).toEqual({ discovery: 0, jwks: 0, token: 0, introspection: 0, userinfo: 0, revocation: 0 });
  });

  it('signs HS256/384/512 with a shared secret, as Authentik does without a signing key', async () => {
    const claims = idp.claimsFor('alice');
    const secret = idp.clientSecret;
    const hs256 = await idp.signToken(claims, { secret });
    expect(decodeProtectedHeader(hs256)).toEqual({ alg: 'HS256', typ: 'at+jwt' });
    const { payload } = await jwtVerify(hs256, new TextEncoder().encode(secret), {
      issuer: idp.issuer,
      audience: 'mail',
      algorithms: ['HS256'],
    });
    expect(payload['email']).toBe('alice@example.test');
    await expect(jwtVerify(hs256, new TextEncoder().encode('wrong'))).rejects.toBeInstanceOf(
      joseErrors.JWSSignatureVerificationFailed,
    );
    await expect(jwtVerify(hs256, jwks)).rejects.toThrow();

    const hs512 = await idp.signToken(claims, { secret, alg: 'HS512', typ: 'JWT', kid: 'authentik' });
    expect(decodeProtectedHeader(hs512)).toEqual({ alg: 'HS512', typ: 'JWT', kid: 'authentik' });
    await expect(jwtVerify(hs512, new TextEncoder().encode(secret))).resolves.toBeDefined();

    await expect(idp.signToken(claims, { secret, alg: 'RS256' })).rejects.toThrow(/HS256/);
    await expect(idp.signToken(claims, { secret, key: 'foreign' })).rejects.toThrow(/either/);
  });

  it('signs with the public key as HMAC secret, the algorithm-confusion attack', async () => {
    const forged = await idp.signToken(idp.claimsFor('alice'), { key: 'public-as-secret' });
    expect(decodeProtectedHeader(forged)).toEqual({ alg: 'HS256', typ: 'at+jwt', kid: idp.kid });
    // Everything the attacker needs is public: the JWKS entry, exported the usual way.
    const published = (await fetchJwks(idp)).keys.find((k) => k.kid === idp.kid) as JWK;
    const pem = createPublicKey({ key: published as NodeJsonWebKey, format: 'jwk' })
      .export({ type: 'spki', format: 'pem' })
      .toString();
    await expect(jwtVerify(forged, new TextEncoder().encode(pem))).resolves.toBeDefined();
    await expect(jwtVerify(forged, jwks)).rejects.toThrow();
    expect((await introspect(idp, forged)).body).toEqual({ active: false });
  });

  it('runs the browser authorization code flow with the dev login and consent pages', async () => {
    const redirectUri = 'http://127.0.0.1:8765/callback';
    const jar = new Map<string, string>();
    const go = async (url: string, form?: Record<string, string>): Promise<Response> => {
      const res = await fetch(new URL(url, idp.issuer), {
        method: form ? 'POST' : 'GET',
        redirect: 'manual',
        headers: {
          cookie: [...jar].map(([k, v]) => `${k}=${v}`).join('; '),
          ...(form ? { 'content-type': 'application/x-www-form-urlencoded' } : {}),
        },
        ...(form ? { body: new URLSearchParams(form) } : {}),
      });
      for (const c of res.headers.getSetCookie()) {
        const pair = c.split(';')[0]!;
        const eq = pair.indexOf('=');
        jar.set(pair.slice(0, eq), pair.slice(eq + 1));
      }
      return res;
    };
    // Follows redirects until a page renders or the client's redirect URI is reached.
    const follow = async (res: Response): Promise<Response | URL> => {
      while (res.status >= 300 && res.status < 400) {
        const next = new URL(res.headers.get('location')!, idp.issuer);
        if (next.href.startsWith(redirectUri)) return next;
        res = await go(next.href);
      }
      return res;
    };
    const formAction = async (res: Response | URL): Promise<string> => {
      expect(res).toBeInstanceOf(Response);
      const html = await (res as Response).text();
      const action = /<form[^>]*action="([^"]+)"/.exec(html)?.[1];
      expect(action).toBeDefined();
      return action!;
    };

    let step = await follow(
      await go(
        `/auth?${new URLSearchParams({
          client_id: idp.clientId,
          response_type: 'code',
          scope: 'openid email profile',
          redirect_uri: redirectUri,
          state: 'xyz',
        })}`,
      ),
    );
    step = await follow(await go(await formAction(step), { prompt: 'login', login: 'alice', password: 'any' }));
    if (step instanceof Response) {
      step = await follow(await go(await formAction(step), { prompt: 'consent' }));
    }
    expect(step).toBeInstanceOf(URL);
    const callback = step as URL;
    expect(callback.searchParams.get('state')).toBe('xyz');
    const code = callback.searchParams.get('code');
    expect(code).toBeTruthy();

    const exchanged = await tokenRequest(idp, {
      grant_type: 'authorization_code',
      code: code!,
      redirect_uri: redirectUri,
    });
    expect(exchanged.status).toBe(200);
    const { payload } = await jwtVerify(exchanged.body['access_token'] as string, jwks, {
      issuer: idp.issuer,
      audience: 'mail',
    });
    expect(payload).toMatchObject({ sub: 'alice', email: 'alice@example.test', preferred_username: 'alice' });
    const idToken = decodeJwt(exchanged.body['id_token'] as string);
    expect(idToken).toMatchObject({ sub: 'alice', email: 'alice@example.test', email_verified: true, name: 'Alice Example' });
  });
});

describe('development IdP instances', () => {
  it('run side by side with their own keys, and close frees the port', async () => {
    const a = await startDevIdp({ users: USERS });
    const b = await startDevIdp({ users: USERS, clientId: 'other', clientSecret: 's3cret', audience: 'imap' });
    try {
      expect(a.issuer).not.toBe(b.issuer);
      expect(a.kid).not.toBe(b.kid);
      expect(b.clientSecret).toBe('s3cret');
      const tokenB = await b.mintAccessToken({ user: 'alice' });
      expect(decodeJwt(tokenB)).toMatchObject({ aud: 'imap', client_id: 'other', iss: b.issuer });
      const keysA = createLocalJWKSet((await (await fetch(a.jwksUri)).json()) as JSONWebKeySet);
      await expect(jwtVerify(tokenB, keysA)).rejects.toBeInstanceOf(joseErrors.JWKSNoMatchingKey);
    } finally {
      await a.close();
      await b.close();
    }
    const port = Number(new URL(a.issuer).port);
    await expect(
      new Promise((resolve, reject) => {
        const socket = createConnection({ host: '127.0.0.1', port }, () => {
          socket.destroy();
          resolve('connected');
        });
        socket.on('error', reject);
      }),
    ).rejects.toMatchObject({ code: 'ECONNREFUSED' });
    await a.close();
  });
});

describe('development IdP with opaque access tokens by default', () => {
  it('mints opaque tokens unless a JWT is asked for', async () => {
    const idp = await startDevIdp({ users: USERS, accessTokenFormat: 'opaque' });
    try {
      const opaque = await idp.mintAccessToken({ user: 'alice' });
      expect(isJwt(opaque)).toBe(false);
      expect((await userinfo(idp, opaque)).body).toMatchObject({ sub: 'alice', email: 'alice@example.test' });
      expect(decodeJwt(await idp.mintAccessToken({ user: 'alice', format: 'jwt' }))).toMatchObject({
        aud: 'mail',
        email: 'alice@example.test',
      });
      expect(decodeJwt(await idp.mintAccessToken({ user: 'alice', lightweight: true }))).not.toHaveProperty('email');
    } finally {
      await idp.close();
    }
    await expect(startDevIdp({ users: USERS, accessTokenFormat: 'paseto' as 'jwt' })).rejects.toThrow(RangeError);
  });
});

describe('development IdP key rotation', () => {
  let idp: DevIdp;
  beforeAll(async () => {
    idp = await startDevIdp({ users: USERS });
  });
  afterAll(async () => {
    await idp.close();
  });

  it('signs new tokens with a new key and keeps publishing the old one', async () => {
    const oldKid = idp.kid;
    const oldJwt = await idp.mintAccessToken({ user: 'alice' });
    const oldOpaque = await idp.mintAccessToken({ user: 'alice', format: 'opaque' });
    const issuer = idp.issuer;

    const newKid = await idp.rotateKeys();
    expect(newKid).not.toBe(oldKid);
    expect(idp.kid).toBe(newKid);
    expect(idp.issuer).toBe(issuer);
    const set = await fetchJwks(idp);
    expect(set.keys.map((k) => k.kid)).toEqual([newKid, oldKid]);

    const newJwt = await idp.mintAccessToken({ user: 'alice' });
    expect(decodeProtectedHeader(newJwt).kid).toBe(newKid);
    expect(decodeProtectedHeader(await idp.signToken(idp.claimsFor('alice'))).kid).toBe(newKid);
    const keys = createLocalJWKSet(set);
    for (const token of [oldJwt, newJwt]) {
      await expect(jwtVerify(token, keys, { issuer, audience: 'mail' })).resolves.toBeDefined();
    }
    // A verifier that cached the JWKS before the rotation does not know the new kid yet.
    await expect(
      jwtVerify(newJwt, createLocalJWKSet({ keys: set.keys.filter((k) => k.kid === oldKid) })),
    ).rejects.toBeInstanceOf(joseErrors.JWKSNoMatchingKey);

    // The provider behind the server is a new object; what it stored is still there.
    expect((await introspect(idp, oldJwt)).body).toMatchObject({ active: true, sub: 'alice' });
    expect((await userinfo(idp, oldOpaque)).status).toBe(200);
    const idToken = decodeProtectedHeader(
      (await tokenRequest(idp, { grant_type: devGrantType, username: 'bob' })).body['access_token'] as string,
    );
    expect(idToken.kid).toBe(newKid);
  });

  it('drops the old keys on request, so their tokens no longer verify', async () => {
    const before = await idp.mintAccessToken({ user: 'bob' });
    const oldKid = idp.kid;
    const newKid = await idp.rotateKeys({ dropOld: true });
    const set = await fetchJwks(idp);
    expect(set.keys.map((k) => k.kid)).toEqual([newKid]);
    expect(set.keys.map((k) => k.kid)).not.toContain(oldKid);
    await expect(jwtVerify(before, createLocalJWKSet(set))).rejects.toBeInstanceOf(joseErrors.JWKSNoMatchingKey);
    expect((await introspect(idp, before)).body).toEqual({ active: false });
    const after = await idp.mintAccessToken({ user: 'bob' });
    await expect(jwtVerify(after, createLocalJWKSet(set), { audience: 'mail' })).resolves.toBeDefined();
  });
});

describe('development IdP faults', () => {
  let idp: DevIdp;
  beforeAll(async () => {
    idp = await startDevIdp({ users: USERS });
  });
  afterAll(async () => {
    await idp.close();
  });

  it('answers 500 with a JSON error on the chosen endpoints only, and mints meanwhile', async () => {
    await idp.setFault('http500', { endpoints: ['jwks', 'introspection'] });
    const res = await fetch(idp.jwksUri);
    expect(res.status).toBe(500);
    expect(res.headers.get('content-type')).toMatch(/^application\/json/);
    expect(await res.json()).toMatchObject({ error: 'server_error' });
    const token = await idp.mintAccessToken({ user: 'alice' });
    expect((await introspect(idp, token)).status).toBe(500);
    expect((await fetch(idp.discoveryUrl)).status).toBe(200);
    await idp.setFault(null);
    expect((await fetch(idp.jwksUri)).status).toBe(200);
    expect((await introspect(idp, token)).body['active']).toBe(true);

    // In effect at once, for callers that do not wait.
    void idp.setFault('http500', { endpoints: ['userinfo'] });
    expect((await fetch(idp.userinfoEndpoint)).status).toBe(500);
    await idp.setFault(null);
  });

  it('answers 200 with a body that is not the JSON it claims to be', async () => {
    await idp.setFault('garbage', { endpoints: ['discovery'] });
    const res = await fetch(idp.discoveryUrl);
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toBe('application/json');
    await expect(res.json()).rejects.toBeInstanceOf(SyntaxError);
    expect((await fetch(idp.jwksUri)).status).toBe(200);
    await idp.setFault('garbage');
    await expect(idp.mintAccessToken({ user: 'alice' })).rejects.toThrow(/HTTP 200/);
    await idp.setFault(null);
    expect((await fetch(idp.discoveryUrl)).status).toBe(200);
  });

  it('hangs requests until the fault is cleared, then drops them', async () => {
    const token = await idp.mintAccessToken({ user: 'alice', format: 'opaque' });
    await idp.setFault('hang', { endpoints: ['userinfo'] });
    expect(await outcome(idp.userinfoEndpoint, 300)).toMatchObject({ name: 'TimeoutError' });
    const pending = outcome(idp.userinfoEndpoint, 10_000);
    await new Promise((resolve) => setTimeout(resolve, 100));
    expect((await fetch(idp.discoveryUrl)).status).toBe(200);
    const started = Date.now();
    await idp.setFault(null);
    const dropped = await pending;
    expect(dropped).toBeInstanceOf(TypeError);
    expect(dropped).not.toMatchObject({ name: 'TimeoutError' });
    expect(Date.now() - started).toBeLessThan(5_000);
    expect((await userinfo(idp, token)).status).toBe(200);
  });

  it('refuses connections while down, and listens on the same port again when cleared', async () => {
    const port = Number(new URL(idp.issuer).port);
    const token = await idp.mintAccessToken({ user: 'alice' });
    await idp.setFault('down');
    await expect(tcpConnect(port)).rejects.toMatchObject({ code: 'ECONNREFUSED' });
    expect(await outcome(idp.discoveryUrl)).toBeInstanceOf(TypeError);
    await expect(idp.mintAccessToken({ user: 'alice' })).rejects.toThrow();
    await idp.setFault(null);
    await expect(tcpConnect(port)).resolves.toBe('connected');
    const doc = (await (await fetch(idp.discoveryUrl)).json()) as Record<string, unknown>;
    expect(doc['issuer']).toBe(idp.issuer);
    expect((await introspect(idp, token)).body['active']).toBe(true);
  });

  it('drops the connections of single endpoints when they are down', async () => {
    await idp.setFault('down', { endpoints: ['jwks'] });
    expect(await outcome(idp.jwksUri)).toBeInstanceOf(TypeError);
    expect((await fetch(idp.discoveryUrl)).status).toBe(200);
    await expect(idp.mintAccessToken({ user: 'bob' })).resolves.toBeTruthy();
    await idp.setFault(null);
    expect((await fetch(idp.jwksUri)).status).toBe(200);
  });

  it('closes while requests hang and while down', async () => {
    const hanging = await startDevIdp({ users: USERS });
    await hanging.setFault('hang');
    const pending = outcome(hanging.discoveryUrl, 10_000);
    await new Promise((resolve) => setTimeout(resolve, 100));
    await hanging.close();
    expect(await pending).toBeInstanceOf(TypeError);

    const down = await startDevIdp({ users: USERS });
    await down.setFault('down');
    await expect(down.close()).resolves.toBeUndefined();
    await expect(down.setFault(null)).rejects.toThrow(/closed/);
  });
});

describe('development IdP over HTTPS', () => {
  let dir: string;
  let idp: DevIdp;
  let caPath: string;

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'sasl-gate-devidp-'));
    const certs = await generateDevCertificate(dir);
    caPath = certs.caPath;
    idp = await startDevIdp({
      users: USERS,
      https: {
        cert: readFileSync(certs.certPath, 'utf8'),
        key: readFileSync(certs.keyPath, 'utf8'),
        ca: readFileSync(certs.caPath, 'utf8'),
      },
    });
  });
  afterAll(async () => {
    await idp?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('serves discovery to a client that trusts the development CA', async () => {
    expect(idp.issuer).toMatch(/^https:\/\/127\.0\.0\.1:\d+$/);
    const script =
      'fetch(process.argv[1]).then((r) => r.json()).then((d) => console.log(d.issuer), (e) => { console.error(e.cause?.code ?? e.message); process.exit(3); })';
    const { stdout } = await execFileAsync(process.execPath, ['-e', script, idp.discoveryUrl], {
      env: { ...process.env, NODE_EXTRA_CA_CERTS: caPath },
    });
    expect(stdout.trim()).toBe(idp.issuer);

    const untrusted = execFileAsync(process.execPath, ['-e', script, idp.discoveryUrl], {
      env: { ...process.env, NODE_EXTRA_CA_CERTS: '' },
    });
    await expect(untrusted).rejects.toMatchObject({ code: 3 });
  });

  it('mints over HTTPS, and the JWKS is fetched with the CA as trust anchor', async () => {
    const token = await idp.mintAccessToken({ user: 'alice' });
    const body = await new Promise<string>((resolve, reject) => {
      https
        .get(idp.jwksUri, { ca: readFileSync(caPath) }, (res) => {
          let text = '';
          res.setEncoding('utf8');
          res.on('data', (chunk: string) => (text += chunk));
          res.on('end', () => resolve(text));
        })
        .on('error', reject);
    });
    const keys = createLocalJWKSet(JSON.parse(body) as JSONWebKeySet);
    const { payload } = await jwtVerify(token, keys, { issuer: idp.issuer, audience: 'mail' });
    expect(payload['email']).toBe('alice@example.test');
  });

  it('introspects and revokes over HTTPS', async () => {
    const token = await idp.mintAccessToken({ user: 'alice' });
    const post = (url: string, form: Record<string, string>) =>
      new Promise<{ status: number; body: string }>((resolve, reject) => {
        const body = new URLSearchParams(form).toString();
        https
          .request(
            url,
            {
              method: 'POST',
              ca: readFileSync(caPath),
              headers: { authorization: basic(idp), 'content-type': 'application/x-www-form-urlencoded' },
            },
            (res) => {
              let text = '';
              res.setEncoding('utf8');
              res.on('data', (chunk: string) => (text += chunk));
              res.on('end', () => resolve({ status: res.statusCode ?? 0, body: text }));
            },
          )
          .on('error', reject)
          .end(body);
      });
    const active = await post(idp.introspectionEndpoint, { token });
    expect(active.status).toBe(200);
    expect(JSON.parse(active.body)).toMatchObject({ active: true, sub: 'alice', email: 'alice@example.test' });
    await idp.revoke(token);
    expect(JSON.parse((await post(idp.introspectionEndpoint, { token })).body)).toEqual({ active: false });
  });

  it('mints over HTTPS when only the certificate is given', async () => {
    const certs = { cert: readFileSync(join(dir, 'server.crt'), 'utf8'), key: readFileSync(join(dir, 'server.key'), 'utf8') };
    const leafOnly = await startDevIdp({ users: USERS, https: certs });
    try {
      const token = await leafOnly.mintAccessToken({ user: 'bob' });
      expect(decodeJwt(token)).toMatchObject({ iss: leafOnly.issuer, sub: 'bob' });
    } finally {
      await leafOnly.close();
    }
  });
});

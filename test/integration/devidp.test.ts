import { execFile } from 'node:child_process';
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
} from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { devGrantType, startDevIdp, type DevIdp } from '../../src/devstack/idp.js';
import { generateDevCertificate } from '../../src/server/devcert.js';

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

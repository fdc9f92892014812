/**
 * Token shapes of the providers people run, through sasl-gate's IMAPS front door against a real
 * Dovecot and a real oidc-provider: JWTs (Authentik- and Keycloak-shaped, HS256, lightweight),
 * opaque tokens by introspection or userinfo, key rotation, revocation, and provider outages
 * that must give temporary failures while cached and password users keep working.
 */
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { plain, startStack, TlsImap, tokenLogin, USERS, type Stack } from '../support/stack.js';

const [ALICE, BOB] = USERS as [(typeof USERS)[0], (typeof USERS)[0]];
const OK = /^a1 OK \[CAPABILITY /;
const REFUSED = 'a1 NO [AUTHENTICATIONFAILED] Authentication failed.';
const UNAVAILABLE = /^a1 NO \[UNAVAILABLE\] /;

function lastReason(stack: Stack): unknown {
  return stack.logs.filter((l) => l['msg'] === 'authentication failed').at(-1)?.['reason'];
}

describe('JWT access tokens', () => {
  let stack: Stack;
  beforeAll(async () => {
    stack = await startStack({
      oauth: { algorithms: ['RS256', 'ES256', 'HS256'], jwksRefetchCooldownSeconds: 2 },
    });
  });
  afterAll(() => stack?.close());

  it('accepts an Authentik-shaped token (aud = client id, groups)', async () => {
    const now = Math.floor(Date.now() / 1000);
    const token = await stack.idp.signToken({
      iss: stack.idp.issuer,
      sub: 'a9f3c1d2e4',
      aud: stack.idp.clientId,
      exp: now + 300,
      iat: now,
      auth_time: now,
      acr: 'goauthentik.io/providers/oauth2/default',
      email: ALICE.name,
      email_verified: true,
      name: 'Alice',
      given_name: 'Alice',
      preferred_username: 'alice',
      nickname: 'alice',
      groups: ['authentik Admins', 'mail-users'],
      azp: stack.idp.clientId,
      uid: 'QmFzZTY0',
    });
    expect((await tokenLogin(stack, ALICE.name, token)).tagged).toMatch(OK);
  });

  it('accepts a Keycloak-shaped token (aud = account, client in azp, roles nested)', async () => {
    const now = Math.floor(Date.now() / 1000);
    const token = await stack.idp.signToken({
      exp: now + 300,
      iat: now,
      jti: randomBytes(8).toString('hex'),
      iss: stack.idp.issuer,
      aud: 'account',
      sub: '7d2c9a1e-3b4f-4c5d-8e6f-0a1b2c3d4e5f',
      typ: 'Bearer',
      azp: 'mail',
      session_state: 'c0ffee',
      'allowed-origins': ['https://webmail.example.test'],
      realm_access: { roles: ['offline_access', 'default-roles-mail', 'mail'] },
      resource_access: { account: { roles: ['manage-account'] } },
      scope: 'openid email profile',
      sid: 'c0ffee',
      email_verified: true,
      name: 'Bob',
      preferred_username: 'bob',
      given_name: 'Bob',
      email: BOB.name,
    }, { typ: 'JWT' });
    expect((await tokenLogin(stack, BOB.name, token, 'OAUTHBEARER')).tagged).toMatch(OK);
  });

  it('accepts HS256 signed with the client secret, when allowed', async () => {
    const token = await stack.idp.signToken(stack.idp.claimsFor(ALICE.name), { alg: 'HS256', secret: stack.idp.clientSecret });
    expect((await tokenLogin(stack, ALICE.name, token)).tagged).toMatch(OK);
  });

  it('rejects HS256 signed with the provider\'s public key as secret (algorithm confusion)', async () => {
    const token = await stack.idp.signToken(stack.idp.claimsFor(ALICE.name), { alg: 'HS256', key: 'public-as-secret' });
    const r = await tokenLogin(stack, ALICE.name, token);
    expect(r.tagged).toBe(REFUSED);
    expect(lastReason(stack)).toBe('bad_token');
  });

  it('follows a key rotation: new tokens verify, old ones too while published', async () => {
    const before = await stack.idp.mintAccessToken({ user: ALICE.name });
    const newKid = await stack.idp.rotateKeys();
    // The keys were fetched moments ago; a new kid is looked up once the cooldown has passed.
    await new Promise((r) => setTimeout(r, 2100));
    const after = await stack.idp.mintAccessToken({ user: ALICE.name });
    expect(JSON.parse(Buffer.from(after.split('.')[0]!, 'base64url').toString()).kid).toBe(newKid);
    expect((await tokenLogin(stack, ALICE.name, after)).tagged).toMatch(OK);
    expect((await tokenLogin(stack, ALICE.name, before)).tagged).toMatch(OK);
  });

  it('a flood of unknown key ids does not hammer the provider', async () => {
    stack.idp.resetCounters();
    for (let i = 0; i < 30; i++) {
      const token = await stack.idp.signToken(stack.idp.claimsFor(ALICE.name), { key: 'foreign', kid: `kid-${i}` });
      expect((await tokenLogin(stack, ALICE.name, token)).tagged).toBe(REFUSED);
    }
    // At most one refetch per cooldown (2 s here), however many unknown kids arrive.
    expect(stack.idp.requests.jwks).toBeLessThanOrEqual(2);
  });

  it('makes one provider call per token, however many logins reuse it', async () => {
    const token = await stack.idp.mintAccessToken({ user: BOB.name });
    stack.idp.resetCounters();
    await Promise.all(Array.from({ length: 20 }, () => tokenLogin(stack, BOB.name, token)));
    expect(stack.idp.requests.jwks + stack.idp.requests.introspection + stack.idp.requests.userinfo).toBe(0);
  });
});

describe('JWT with admin requirements', () => {
  let stack: Stack;
  beforeAll(async () => {
    stack = await startStack({
      oauth: { requiredClaim: { name: 'groups', value: 'mail-users' }, requireEmailVerified: true, allowedEmailDomains: ['example.test'] },
    });
  });
  afterAll(() => stack?.close());

  it('refuses a token without the required group, accepts one with it', async () => {
    const claims = stack.idp.claimsFor(ALICE.name);
    const without = await stack.idp.signToken({ ...claims, groups: ['staff'] });
    expect((await tokenLogin(stack, ALICE.name, without)).tagged).toBe(REFUSED);
    expect(lastReason(stack)).toBe('missing_claim');
    const member = await stack.idp.signToken({ ...claims, groups: ['staff', 'mail-users'] });
    expect((await tokenLogin(stack, ALICE.name, member)).tagged).toMatch(OK);
    const unverified = await stack.idp.signToken({ ...claims, groups: ['mail-users'], email_verified: false });
    expect((await tokenLogin(stack, ALICE.name, unverified)).tagged).toBe(REFUSED);
    expect(lastReason(stack)).toBe('email_not_verified');
  });
});

describe('opaque tokens and lightweight JWTs by introspection', () => {
  let stack: Stack;
  beforeAll(async () => {
    stack = await startStack({
      oauth: { validation: ['jwt', 'introspection'], cache: { maxTtlSeconds: 3 }, requestTimeoutSeconds: 1, breaker: { failureThreshold: 100 } },
    });
  });
  afterAll(() => stack?.close());

  it('accepts an opaque token the provider says is active', async () => {
    const token = await stack.idp.mintAccessToken({ user: ALICE.name, format: 'opaque' });
    expect(token.split('.')).toHaveLength(1);
    expect((await tokenLogin(stack, ALICE.name, token)).tagged).toMatch(OK);
  });

  it('accepts a lightweight JWT whose user claims only introspection knows', async () => {
    const token = await stack.idp.mintAccessToken({ user: BOB.name, lightweight: true });
    const payload = JSON.parse(Buffer.from(token.split('.')[1]!, 'base64url').toString()) as Record<string, unknown>;
    expect(payload['email']).toBeUndefined();
    expect((await tokenLogin(stack, BOB.name, token)).tagged).toMatch(OK);
    const stolen = await tokenLogin(stack, ALICE.name, token);
    expect(stolen.tagged).toBe(REFUSED);
  });

  it('stops accepting a revoked token once the short cache maximum has passed', async () => {
    const token = await stack.idp.mintAccessToken({ user: ALICE.name, format: 'opaque' });
    expect((await tokenLogin(stack, ALICE.name, token)).tagged).toMatch(OK);
    await stack.idp.revoke(token);
    await new Promise((r) => setTimeout(r, 3100));
    expect((await tokenLogin(stack, ALICE.name, token)).tagged).toBe(REFUSED);
    expect(lastReason(stack)).toBe('inactive');
  });

  it('introspects a reused token once per cache period', async () => {
    const token = await stack.idp.mintAccessToken({ user: ALICE.name, format: 'opaque' });
    stack.idp.resetCounters();
    await Promise.all(Array.from({ length: 10 }, () => tokenLogin(stack, ALICE.name, token)));
    expect(stack.idp.requests.introspection).toBe(1);
  });

  it.each(['down', 'hang', 'http500', 'garbage'] as const)(
    'provider %s: a temporary failure, while cached tokens and passwords keep working',
    async (fault) => {
      const cached = await stack.idp.mintAccessToken({ user: BOB.name, format: 'opaque' });
      const fresh = await stack.idp.mintAccessToken({ user: ALICE.name, format: 'opaque' });
      // Warm the cache for one token (maximum 1 s), then break the provider.
      const c = await TlsImap.connect(stack);
      expect((await tokenLogin(stack, BOB.name, cached)).tagged).toMatch(OK);
      await stack.idp.setFault(fault, { endpoints: ['introspection'] });
      try {
        const started = Date.now();
        const r = await tokenLogin(stack, ALICE.name, fresh);
        expect(r.tagged).toMatch(UNAVAILABLE);
        expect(r.challenge).toBeUndefined();
        expect(Date.now() - started).toBeLessThan(10_000);
        expect(lastReason(stack)).toBe('provider_unavailable');
        expect((await tokenLogin(stack, BOB.name, cached)).tagged).toMatch(OK);
        const password = await c.command(`AUTHENTICATE PLAIN ${plain('', ALICE.name, ALICE.password)}`);
        expect(password.tagged).toMatch(/^t1 OK/);
      } finally {
        await stack.idp.setFault(null);
        c.close();
      }
      // And it recovers by itself.
      expect((await tokenLogin(stack, ALICE.name, fresh)).tagged).toMatch(OK);
    },
  );
});

describe('opaque tokens by userinfo only', () => {
  let stack: Stack;
  beforeAll(async () => {
    stack = await startStack({ oauth: { validation: ['userinfo'] } });
  });
  afterAll(() => stack?.close());

  it('accepts a token userinfo accepts, for its own user only', async () => {
    const token = await stack.idp.mintAccessToken({ user: BOB.name, format: 'opaque' });
    expect((await tokenLogin(stack, BOB.name, token)).tagged).toMatch(OK);
    expect((await tokenLogin(stack, ALICE.name, token)).tagged).toBe(REFUSED);
    expect(lastReason(stack)).toBe('wrong_user');
  });

  it('refuses a token userinfo refuses', async () => {
    expect((await tokenLogin(stack, BOB.name, randomBytes(32).toString('base64url'))).tagged).toBe(REFUSED);
    expect(lastReason(stack)).toBe('bad_token');
  });
});

describe('provider unreachable from the start', () => {
  it('gives temporary failures to token users and serves password users', async () => {
    const stack = await startStack({ idp: {} });
    try {
      await stack.idp.setFault('down');
      // A second gate, started while the provider is down, pointing at the same issuer.
      const other = await startStack({ oauth: { issuer: stack.idp.issuer, clientId: stack.idp.clientId, clientSecret: stack.idp.clientSecret } });
      try {
        const token = await stack.idp.signToken(stack.idp.claimsFor(ALICE.name));
        expect((await tokenLogin(other, ALICE.name, token)).tagged).toMatch(UNAVAILABLE);
        const c = await TlsImap.connect(other);
        expect((await c.command(`LOGIN "${ALICE.name}" "${ALICE.password}"`)).tagged).toMatch(/^t1 OK/);
        c.close();
        await stack.idp.setFault(null);
        await new Promise((r) => setTimeout(r, 2500));
        expect((await tokenLogin(other, ALICE.name, token)).tagged).toMatch(OK);
      } finally {
        await other.close();
      }
    } finally {
      await stack.close();
    }
  });
});

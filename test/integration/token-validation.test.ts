/**
 * Token shapes of the providers people run, through sasl-gate's IMAPS front door against a real
 * Dovecot and a real oidc-provider: JWTs (Authentik- and Keycloak-shaped, HS256, lightweight),
 * opaque tokens by introspection or userinfo, key rotation, revocation, and provider outages
 * that must give temporary failures while cached and password users keep working.
 */
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { secret } from '../support/evidence.js';
import { startRawIntrospection } from '../support/raw-introspection.js';
import { plain, startStack, TlsImap, tokenLogin, USERS, xoauth2, type Stack } from '../support/stack.js';

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

/** Lines of Dovecot's log that show a login as `user` (a master login names the user it logs in as). */
async function dovecotLoginsAs(stack: Stack, user: string): Promise<string[]> {
  const log = await stack.dovecot.readLog();
  return log.split('\n').filter((l) => l.includes(`user=<${user}>`) && /Login:/.test(l));
}

describe('who a token names, with the default usernameClaims [email]', () => {
  let stack: Stack;
  beforeAll(async () => {
    stack = await startStack();
  });
  afterAll(() => stack?.close());

  /** Alice's token, reshaped by `change` (claims left undefined are dropped), signed by the provider. */
  const aliceWith = async (change: Record<string, unknown>, header: { typ?: string } = {}) => {
    const claims: Record<string, unknown> = { ...stack.idp.claimsFor(ALICE.name), ...change };
    for (const [name, value] of Object.entries(claims)) if (value === undefined) delete claims[name];
    return stack.idp.signToken(claims, header);
  };

  it('never takes the user from preferred_username when email is missing or empty', async () => {
    const before = await dovecotLoginsAs(stack, BOB.name);
    for (const email of [undefined, '']) {
      // A client that did not ask for the email scope, with a user name the user chose at the provider.
      const token = await aliceWith({ email, email_verified: undefined, preferred_username: BOB.name });
      for (const mechanism of ['XOAUTH2', 'OAUTHBEARER'] as const) {
        expect((await tokenLogin(stack, BOB.name, token, mechanism)).tagged).toBe(REFUSED);
        expect(lastReason(stack)).toBe('no_identity');
      }
    }
    expect(await dovecotLoginsAs(stack, BOB.name)).toEqual(before);
  });

  it('refuses a token that marks the address unverified', async () => {
    const before = await dovecotLoginsAs(stack, BOB.name);
    const token = await aliceWith({ email: BOB.name, email_verified: false });
    expect((await tokenLogin(stack, BOB.name, token)).tagged).toBe(REFUSED);
    expect(lastReason(stack)).toBe('email_not_verified');
    expect(await dovecotLoginsAs(stack, BOB.name)).toEqual(before);
  });

  it('refuses an email claim that is not a plain mail address', async () => {
    const before = await dovecotLoginsAs(stack, BOB.name);
    for (const email of [`alice@evil.test@${BOB.name.split('@')[1]}`, 'bob', `"bob"@example.test`, 'bob%example.test@example.test']) {
      const token = await aliceWith({ email });
      // The client names the same user, so only the identity rule can refuse it.
      expect((await tokenLogin(stack, email, token, 'OAUTHBEARER')).tagged).toBe(REFUSED);
      expect(lastReason(stack)).toBe('bad_identity');
    }
    expect(await dovecotLoginsAs(stack, BOB.name)).toEqual(before);
  });

  it('refuses ID tokens and others that say they are not access tokens', async () => {
    const before = await dovecotLoginsAs(stack, BOB.name);
    const bob = stack.idp.claimsFor(BOB.name);
    const keycloakId = await stack.idp.signToken({ ...bob, typ: 'ID', azp: 'mail', at_hash: undefined }, { typ: 'JWT' });
    const keycloakRefresh = await stack.idp.signToken({ ...bob, typ: 'Refresh', azp: 'mail' }, { typ: 'JWT' });
    const withAtHash = await stack.idp.signToken({ ...bob, at_hash: 'x4Q8wnW1x0Eh2CcjU4jJhQ', nonce: 'n-0S6_WzA2Mj' }, { typ: 'JWT' });
    const explicitlyTyped = await stack.idp.signToken(bob, { typ: 'id_token+jwt' });
    for (const token of [keycloakId, keycloakRefresh, withAtHash, explicitlyTyped]) {
      expect((await tokenLogin(stack, BOB.name, token)).tagged).toBe(REFUSED);
      expect(lastReason(stack)).toBe('wrong_token_type');
    }
    expect(await dovecotLoginsAs(stack, BOB.name)).toEqual(before);
    // Real access tokens of the same shapes still work: Keycloak's typ Bearer, a plain JWT header.
    const keycloakAccess = await stack.idp.signToken({ ...bob, typ: 'Bearer', azp: 'mail', nonce: 'n-0S6_WzA2Mj' }, { typ: 'JWT' });
    expect((await tokenLogin(stack, BOB.name, keycloakAccess)).tagged).toMatch(OK);
    expect(await dovecotLoginsAs(stack, BOB.name)).toHaveLength(before.length + 1);
  });

  it('goes on after a refusal: the same connection logs in with a good token', async () => {
    const bad = await aliceWith({ email: undefined, preferred_username: BOB.name });
    const good = await stack.idp.mintAccessToken({ user: ALICE.name });
    const c = await TlsImap.connect(stack);
    try {
      c.write(`a1 AUTHENTICATE XOAUTH2 ${xoauth2(BOB.name, bad)}\r\n`);
      expect(await c.readLine()).toMatch(/^\+ /);
      c.write('AQ==\r\n');
      expect((await c.until('a1')).tagged).toBe(REFUSED);
      c.write(`a2 AUTHENTICATE XOAUTH2 ${xoauth2(ALICE.name, good)}\r\n`);
      expect((await c.until('a2')).tagged).toMatch(/^a2 OK \[CAPABILITY /);
      expect((await c.command('SELECT INBOX')).tagged).toMatch(/^t1 OK/);
    } finally {
      c.close();
    }
  });
});

describe('who a token names, with a listed fallback claim and accepted domains', () => {
  let stack: Stack;
  beforeAll(async () => {
    stack = await startStack({ oauth: { usernameClaims: ['email', 'preferred_username'], allowedEmailDomains: ['Example.TEST'] } });
  });
  afterAll(() => stack?.close());

  const bobWith = (change: Record<string, unknown>) => {
    const claims: Record<string, unknown> = { ...stack.idp.claimsFor(BOB.name), ...change };
    for (const [name, value] of Object.entries(claims)) if (value === undefined) delete claims[name];
    return stack.idp.signToken(claims);
  };

  it('takes the listed fallback claim only when it is a verified address of an accepted domain', async () => {
    const before = await dovecotLoginsAs(stack, BOB.name);
    const cases: Array<[Record<string, unknown>, string]> = [
      [{ email: undefined, email_verified: undefined, preferred_username: 'bob' }, 'bad_identity'],
      [{ email: '', preferred_username: 'bob@example.test\r\nx' }, 'bad_identity'],
      [{ email: undefined, preferred_username: BOB.name, email_verified: false }, 'email_not_verified'],
      [{ email: undefined, preferred_username: 'bob@evil.test' }, 'domain_not_allowed'],
      [{ email: 'bob@example.test.evil.test', preferred_username: BOB.name }, 'domain_not_allowed'],
      [{ email: 'bob@mail.example.test' }, 'domain_not_allowed'],
    ];
    for (const [change, reason] of cases) {
      const token = await bobWith(change);
      const named = String(change['email'] || change['preferred_username']).replace(/\r\n.*/, '');
      expect((await tokenLogin(stack, named, token, 'OAUTHBEARER')).tagged, reason).toBe(REFUSED);
      expect(lastReason(stack)).toBe(reason);
    }
    expect(await dovecotLoginsAs(stack, BOB.name)).toEqual(before);

    // Listed, well-formed and of an accepted domain: the fallback names the user.
    const fallback = await bobWith({ email: undefined, email_verified: undefined, preferred_username: BOB.name });
    expect((await tokenLogin(stack, BOB.name, fallback)).tagged).toMatch(OK);
    expect(await dovecotLoginsAs(stack, BOB.name)).toHaveLength(before.length + 1);
  });
});

describe('introspection with client_secret_basic and a client id with - . _ ~', () => {
  const clientId = 'mail-gate.v2_prod~1';
  const clientSecret = secret('Se-cr.et_~9aZ0-introspection', 'client secret');

  it('is accepted by a provider that decodes the credentials (oidc-provider) and by one that reads them raw', async () => {
    const decoding = await startStack({ idp: { clientId, clientSecret }, oauth: { audience: [clientId], validation: ['introspection'] } });
    const raw = await startRawIntrospection(decoding.idp, clientId, clientSecret);
    // A second gate in front of the same provider, whose introspection endpoint reads the credentials raw.
    const rawGate = await startStack({
      oauth: {
        issuer: decoding.idp.issuer,
        audience: [clientId],
        clientId,
        clientSecret,
        validation: ['introspection'],
        introspectionEndpoint: raw.url,
      },
    });
    try {
      const token = await decoding.idp.mintAccessToken({ user: ALICE.name, format: 'opaque' });
      expect((await tokenLogin(decoding, ALICE.name, token)).tagged).toMatch(OK);
      expect((await tokenLogin(rawGate, ALICE.name, token)).tagged).toMatch(OK);
      expect(raw.seen.at(-1)).toEqual({ clientId, clientSecret });
      // The wrong user's login still fails on the answer, not on the credentials.
      expect((await tokenLogin(rawGate, BOB.name, token)).tagged).toBe(REFUSED);
      expect(lastReason(rawGate)).toBe('wrong_user');
    } finally {
      await rawGate.close();
      await raw.close();
      await decoding.close();
    }
  });
});

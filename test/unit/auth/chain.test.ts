import { exportJWK, generateKeyPair, SignJWT, type CryptoKey, type JWK, type JWTPayload } from 'jose';
import { beforeAll, describe, expect, it } from 'vitest';
import { ChainValidator, type StrategyReport } from '../../../src/auth/chain.js';
import { configSchema } from '../../../src/config/schema.js';

const ISSUER = 'https://idp.example';

let signingKey: CryptoKey;
let publicJwk: JWK;

beforeAll(async () => {
  const pair = await generateKeyPair('RS256');
  signingKey = pair.privateKey;
  publicJwk = { ...(await exportJWK(pair.publicKey)), kid: 'k1', alg: 'RS256', use: 'sig' };
});

/** A JWT signed by the provider's key; `exp` one hour ahead unless the claims say otherwise. */
function jwt(claims: JWTPayload): Promise<string> {
  return new SignJWT({ iss: ISSUER, aud: 'mail', exp: Math.floor(Date.now() / 1000) + 3600, ...claims })
    .setProtectedHeader({ alg: 'RS256', kid: 'k1', typ: 'at+jwt' })
    .sign(signingKey);
}

type Endpoint = 'discovery' | 'jwks' | 'introspection' | 'userinfo';

/**
 * An OpenID provider behind an injected fetch, no network: discovery, JWKS, introspection and
 * userinfo answer from the tables the test fills; `down` makes an endpoint fail like a dead host.
 */
function provider() {
  const calls: Record<Endpoint, number> = { discovery: 0, jwks: 0, introspection: 0, userinfo: 0 };
  const down = new Set<Endpoint>();
  const introspection = new Map<string, Record<string, unknown>>();
  const userinfo = new Map<string, Record<string, unknown>>();
  const json = (body: unknown, status = 200) =>
    new Response(JSON.stringify(body), { status, headers: { 'content-type': 'application/json' } });
  const fetch = async (input: string | URL | Request, init?: RequestInit): Promise<Response> => {
    const request = new Request(input, init);
    const url = new URL(request.url);
    const endpoint = (
      {
        '/.well-known/openid-configuration': 'discovery',
        '/jwks': 'jwks',
        '/introspect': 'introspection',
        '/userinfo': 'userinfo',
      } as Record<string, Endpoint>
    )[url.pathname];
    if (!endpoint) return json({ error: 'not found' }, 404);
    calls[endpoint] += 1;
    if (down.has(endpoint)) throw new TypeError('fetch failed');
    switch (endpoint) {
      case 'discovery':
        return json({
          issuer: ISSUER,
          jwks_uri: `${ISSUER}/jwks`,
          introspection_endpoint: `${ISSUER}/introspect`,
          userinfo_endpoint: `${ISSUER}/userinfo`,
          authorization_endpoint: `${ISSUER}/authorize`,
          token_endpoint: `${ISSUER}/token`,
        });
      case 'jwks':
        return json({ keys: [publicJwk] });
      case 'introspection': {
        const token = new URLSearchParams(await request.text()).get('token') ?? '';
        return json(introspection.get(token) ?? { active: false });
      }
      case 'userinfo': {
        const token = (request.headers.get('authorization') ?? '').replace(/^Bearer /, '');
        const claims = userinfo.get(token);
        if (!claims) return new Response(null, { status: 401, headers: { 'www-authenticate': 'Bearer error="invalid_token"' } });
        return json(claims);
      }
    }
  };
  return { fetch: fetch as typeof globalThis.fetch, calls, down, introspection, userinfo };
}

function validator(idp: ReturnType<typeof provider>, oauth: Record<string, unknown> = {}) {
  const config = configSchema.parse({
    listeners: [{ protocol: 'imap', bind: '0.0.0.0:993' }],
    tls: { development: true },
    backends: { imap: { host: 'x' } },
    master: { user: 'm', password: 'p' },
    oauth: { issuer: ISSUER, audience: ['mail'], clientId: 'mail', clientSecret: 'client-secret', allowedEmailDomains: ['example.test'], ...oauth },
  });
  const verdicts: Array<[string, StrategyReport['verdict']]> = [];
  const chain = new ChainValidator(config.oauth, {
    masterSeparator: '*',
    fetch: idp.fetch,
    onStrategy: (strategy, seconds, verdict) => {
      expect(seconds).toBeGreaterThanOrEqual(0);
      verdicts.push([strategy, verdict]);
    },
  });
  return { chain, verdicts };
}

/** The rejection of `promise`, with the strategy reports the chain attached to it. */
async function failure(promise: Promise<unknown>): Promise<{ code: string; temporary: boolean; reports: StrategyReport[] }> {
  const err = (await promise.then(
    () => expect.fail('the token was accepted'),
    (e: unknown) => e,
  )) as { code: string; temporary: boolean; reports: StrategyReport[] };
  return err;
}

describe('ChainValidator', () => {
  it('accepts a signed JWT locally: keys fetched once, the result cached per token', async () => {
    const idp = provider();
    const { chain, verdicts } = validator(idp);
    expect(chain.isReady()).toBe(false);
    const token = await jwt({ email: 'alice@example.test' });
    const first = await chain.validate(token);
    expect(first).toMatchObject({ identity: 'alice@example.test', claim: 'email', strategy: 'jwt' });
    expect(first.expiresAt!.getTime()).toBeGreaterThan(Date.now());
    expect(chain.isReady()).toBe(true);
    await chain.validate(token);
    await chain.validate(await jwt({ email: 'bob@example.test' }));
    // One discovery, one JWKS fetch, and no provider call per login.
    expect(idp.calls).toEqual({ discovery: 1, jwks: 1, introspection: 0, userinfo: 0 });
    // The repeated token was answered from the cache: the strategy ran twice for three logins.
    expect(verdicts).toEqual([
      ['jwt', 'accepted'],
      ['jwt', 'accepted'],
    ]);
    expect(chain.cache.stats).toMatchObject({ hits: 1 });
  });

  it('tries the strategies in order: an opaque token passes jwt on to introspection', async () => {
    const idp = provider();
    const { chain } = validator(idp, { validation: ['jwt', 'introspection'] });
    idp.introspection.set('opaque-1', { active: true, aud: 'mail', email: 'alice@example.test', exp: Math.floor(Date.now() / 1000) + 60 });
    const { result, reports } = await chain.explain('opaque-1');
    expect(result).toMatchObject({ identity: 'alice@example.test', strategy: 'introspection' });
    expect(reports).toEqual([
      { strategy: 'jwt', verdict: 'skipped', reason: 'not a JWT' },
      { strategy: 'introspection', verdict: 'accepted' },
    ]);
    expect(idp.calls.jwks).toBe(0);
  });

  it('a JWT that names nobody is passed on; the next strategy adds the user, the claims are merged', async () => {
    const idp = provider();
    const { chain } = validator(idp, { validation: ['jwt', 'userinfo'] });
    const token = await jwt({ sub: 'u-1', scope: 'mail' });
    idp.userinfo.set(token, { sub: 'u-1', email: 'alice@example.test' });
    const { result, reports } = await chain.explain(token);
    expect(result).toMatchObject({ identity: 'alice@example.test', strategy: 'userinfo', claims: { sub: 'u-1', scope: 'mail', aud: 'mail' } });
    expect(reports.map((r) => [r.strategy, r.verdict, r.code])).toEqual([
      ['jwt', 'no identity', 'no_identity'],
      ['userinfo', 'accepted', undefined],
    ]);
  });

  it('a definite rejection ends the search: later strategies are never asked', async () => {
    const idp = provider();
    const { chain, verdicts } = validator(idp, { validation: ['jwt', 'userinfo'] });
    const expired = await jwt({ email: 'alice@example.test', exp: Math.floor(Date.now() / 1000) - 3600 });
    idp.userinfo.set(expired, { email: 'alice@example.test' });
    const err = await failure(chain.validate(expired));
    expect(err).toMatchObject({ code: 'expired', temporary: false });
    expect(err.reports).toEqual([{ strategy: 'jwt', verdict: 'rejected', reason: 'token expired', code: 'expired' }]);
    expect(idp.calls.userinfo).toBe(0);
    expect(verdicts).toEqual([['jwt', 'rejected']]);
  });

  it.each([
    ['another audience', { active: true, aud: 'calendar', email: 'alice@example.test' }, 'wrong_audience'],
    ['an inactive token', { active: false }, 'inactive'],
    ['a user of another domain', { active: true, aud: 'mail', email: 'alice@elsewhere.test' }, 'domain_not_allowed'],
    ['an unverified address', { active: true, aud: 'mail', email: 'alice@example.test', email_verified: false }, 'email_not_verified'],
    ['a missing scope', { active: true, aud: 'mail', email: 'alice@example.test', scope: 'openid' }, 'insufficient_scope'],
  ])('introspection of %s is a rejection with its reason', async (_, answer, code) => {
    const idp = provider();
    const { chain } = validator(idp, { validation: ['introspection'], requiredScopes: ['mail'] });
    idp.introspection.set('opaque', answer);
    const err = await failure(chain.validate('opaque'));
    expect(err).toMatchObject({ code, temporary: false });
    expect(err.reports).toEqual([expect.objectContaining({ strategy: 'introspection', verdict: 'rejected', code })]);
  });

  it('a token the userinfo endpoint refuses is bad, not a provider failure', async () => {
    const idp = provider();
    const { chain } = validator(idp, { validation: ['userinfo'] });
    const err = await failure(chain.validate('unknown-token'));
    expect(err).toMatchObject({ code: 'bad_token', temporary: false });
  });

  it('a provider outage is a temporary failure, is not passed on to a weaker strategy, and is not cached', async () => {
    const idp = provider();
    const { chain } = validator(idp, { validation: ['introspection', 'userinfo'] });
    idp.userinfo.set('opaque', { email: 'alice@example.test' });
    idp.introspection.set('opaque', { active: true, aud: 'mail', email: 'alice@example.test' });
    idp.down.add('introspection');
    const err = await failure(chain.validate('opaque'));
    expect(err).toMatchObject({ code: 'provider_unavailable', temporary: true });
    expect(err.reports).toEqual([expect.objectContaining({ strategy: 'introspection', verdict: 'unavailable', code: 'provider_unavailable' })]);
    expect(idp.calls.userinfo).toBe(0);
    // Back up: the next login is validated afresh, not answered with the remembered failure.
    idp.down.delete('introspection');
    await expect(chain.validate('opaque')).resolves.toMatchObject({ identity: 'alice@example.test', strategy: 'introspection' });
  });

  it('keys that cannot be fetched are a temporary failure, not a bad token', async () => {
    const idp = provider();
    const { chain } = validator(idp);
    idp.down.add('jwks');
    const err = await failure(chain.validate(await jwt({ email: 'alice@example.test' })));
    expect(err).toMatchObject({ code: 'provider_unavailable', temporary: true });
    expect(err.reports).toEqual([expect.objectContaining({ strategy: 'jwt', verdict: 'unavailable' })]);
  });

  it('a token no strategy can judge is bad, and the reasons of each are in the message', async () => {
    const idp = provider();
    const { chain } = validator(idp, { validation: ['jwt'] });
    const err = await failure(chain.validate('not-a-jwt'));
    expect(err).toMatchObject({ code: 'bad_token', temporary: false, message: expect.stringContaining('jwt: not a JWT') });
    expect(err.reports).toEqual([{ strategy: 'jwt', verdict: 'skipped', reason: 'not a JWT' }]);
  });

  it('a JWT signed by another key is refused, and so is one for another issuer', async () => {
    const idp = provider();
    const { chain } = validator(idp);
    const other = await generateKeyPair('RS256');
    const forged = await new SignJWT({ iss: ISSUER, aud: 'mail', exp: Math.floor(Date.now() / 1000) + 60, email: 'alice@example.test' })
      .setProtectedHeader({ alg: 'RS256', kid: 'k1' })
      .sign(other.privateKey);
    expect(await failure(chain.validate(forged))).toMatchObject({ code: 'bad_token', temporary: false });
    const foreign = await jwt({ iss: 'https://other.example', email: 'alice@example.test' });
    expect(await failure(chain.validate(foreign))).toMatchObject({ code: 'wrong_issuer' });
  });

  describe('oauth.anyClientWithScope', () => {
    const MAIL_SCOPE = 'urn:ietf:params:oauth:scope:mail';

    it('accepts a JWT for another client carrying the scope; everything else is still checked', async () => {
      const idp = provider();
      const { chain } = validator(idp, { anyClientWithScope: MAIL_SCOPE });
      const publicClientToken = await jwt({ aud: 'sasl-gate-token', scope: `openid ${MAIL_SCOPE}`, email: 'alice@example.test' });
      expect(await chain.validate(publicClientToken)).toMatchObject({ identity: 'alice@example.test', strategy: 'jwt' });
      const noScope = await jwt({ aud: 'sasl-gate-token', scope: 'openid email', email: 'alice@example.test' });
      expect(await failure(chain.validate(noScope))).toMatchObject({ code: 'wrong_audience', temporary: false });
      const expired = await jwt({ aud: 'sasl-gate-token', scope: MAIL_SCOPE, email: 'alice@example.test', exp: Math.floor(Date.now() / 1000) - 3600 });
      expect(await failure(chain.validate(expired))).toMatchObject({ code: 'expired' });
      const otherIssuer = await jwt({ iss: 'https://evil.example', aud: 'sasl-gate-token', scope: MAIL_SCOPE, email: 'alice@example.test' });
      expect(await failure(chain.validate(otherIssuer))).toMatchObject({ code: 'wrong_issuer' });
      const foreignDomain = await jwt({ aud: 'sasl-gate-token', scope: MAIL_SCOPE, email: 'alice@elsewhere.test' });
      expect((await failure(chain.validate(foreignDomain))).code).not.toBe('wrong_audience');
    });

    it('without the setting, the same token is refused for its audience', async () => {
      const idp = provider();
      const { chain } = validator(idp);
      const token = await jwt({ aud: 'sasl-gate-token', scope: `openid ${MAIL_SCOPE}`, email: 'alice@example.test' });
      expect(await failure(chain.validate(token))).toMatchObject({ code: 'wrong_audience' });
    });

    it('applies to introspection answers too', async () => {
      const idp = provider();
      const exp = Math.floor(Date.now() / 1000) + 60;
      idp.introspection.set('opaque-public', { active: true, client_id: 'fairemail', scope: MAIL_SCOPE, email: 'bob@example.test', exp });
      idp.introspection.set('opaque-other', { active: true, client_id: 'calendar', scope: 'openid', email: 'bob@example.test', exp });
      const on = validator(idp, { validation: ['introspection'], anyClientWithScope: MAIL_SCOPE }).chain;
      expect(await on.validate('opaque-public')).toMatchObject({ identity: 'bob@example.test', strategy: 'introspection' });
      expect(await failure(on.validate('opaque-other'))).toMatchObject({ code: 'wrong_audience' });
      const off = validator(idp, { validation: ['introspection'] }).chain;
      expect(await failure(off.validate('opaque-public'))).toMatchObject({ code: 'wrong_audience' });
    });
  });
});

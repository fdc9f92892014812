/**
 * `oauth.anyClientWithScope` against the token shapes an attacker would try: the scope hidden in
 * a claim other than `scope`/`scp`, in a nested list, or merely contained in a longer scope; ID
 * tokens; introspection answers without a scope, for another client, or not quite active.
 */
import { describe, expect, it } from 'vitest';
import { checkAudience, checkRequirements, checkTokenType, grantedScopes } from '../../../src/auth/claims.js';
import type { ProviderClient } from '../../../src/auth/provider.js';
import { IntrospectionStrategy } from '../../../src/auth/remote.js';
import { configSchema } from '../../../src/config/schema.js';

const MAIL_SCOPE = 'urn:ietf:params:oauth:scope:mail';

function oauth(extra: Record<string, unknown> = {}) {
  return configSchema.parse({
    listeners: [{ protocol: 'imap', bind: '0.0.0.0:993' }],
    tls: { development: true },
    backends: { imap: { host: 'x' } },
    master: { user: 'm', password: 'p' },
    oauth: { issuer: 'https://idp.example', audience: ['mail'], ...extra },
  }).oauth;
}

/** Whether checkAudience lets `claims` through; `rule` null: the rule unset. */
const accepts = (claims: Record<string, unknown>, rule: string | null = MAIL_SCOPE) => {
  try {
    checkAudience(claims, ['mail'], rule ?? undefined);
    return true;
  } catch (err) {
    expect(err).toMatchObject({ code: 'wrong_audience' });
    return false;
  }
};

describe('the scope the rule names, and nothing like it', () => {
  it.each([
    ['only in another claim', { aud: 'fairemail', scopes: MAIL_SCOPE }],
    ['only in roles', { aud: 'fairemail', roles: [MAIL_SCOPE] }],
    ['nested under another claim', { aud: 'fairemail', authorization: { scope: MAIL_SCOPE } }],
    ['as a prefix of a longer scope', { aud: 'fairemail', scope: `${MAIL_SCOPE}-extra` }],
    ['as a suffix of a longer scope', { aud: 'fairemail', scope: `x${MAIL_SCOPE}` }],
    ['as a part after a colon', { aud: 'fairemail', scope: `${MAIL_SCOPE}:read` }],
    ['joined by a tab, which does not separate scopes', { aud: 'fairemail', scope: `openid\t${MAIL_SCOPE}` }],
    ['joined by a comma', { aud: 'fairemail', scp: `openid,${MAIL_SCOPE}` }],
    ['in another case', { aud: 'fairemail', scope: MAIL_SCOPE.toUpperCase() }],
    ['with a trailing NUL', { aud: 'fairemail', scope: `${MAIL_SCOPE}\0` }],
    ['inside a nested list', { aud: 'fairemail', scp: [[MAIL_SCOPE]] }],
    ['inside an object in the list', { aud: 'fairemail', scope: [{ toString: (): string => MAIL_SCOPE }] }],
    ['in scp while scope says otherwise', { aud: 'fairemail', scope: 'openid email', scp: [MAIL_SCOPE] }],
    ['as a number or object scope', { aud: 'fairemail', scope: { [MAIL_SCOPE]: true } }],
  ])('%s: refused', (_what, claims) => {
    expect(accepts(claims)).toBe(false);
  });

  it.each([
    ['scope as a string', { aud: 'fairemail', scope: `openid ${MAIL_SCOPE}` }],
    ['scp as a list', { aud: 'fairemail', scp: ['openid', MAIL_SCOPE] }],
    ['scp as a string', { aud: 'fairemail', scp: `openid ${MAIL_SCOPE}` }],
    ['scope with doubled spaces', { aud: 'fairemail', scope: `openid  ${MAIL_SCOPE} ` }],
  ])('%s: accepted (the shapes providers really use)', (_what, claims) => {
    expect(accepts(claims)).toBe(true);
  });

  it('the rule unset: another client\'s token with the scope is refused in every shape', () => {
    for (const claims of [{ aud: 'fairemail', scope: MAIL_SCOPE }, { aud: 'fairemail', scp: [MAIL_SCOPE] }, { client_id: 'fairemail', scope: MAIL_SCOPE }]) {
      expect(accepts(claims, null)).toBe(false);
    }
  });

  it('requiredScopes reads the same way: a nested list grants nothing', () => {
    expect([...grantedScopes({ scp: [['mail'], 'email'] })]).toEqual(['email']);
    expect(() => checkRequirements({ scp: [['mail']] }, oauth({ requiredScopes: ['mail'] }))).toThrow(expect.objectContaining({ code: 'insufficient_scope' }));
  });
});

describe('an ID token carrying the scope', () => {
  it.each([
    ['typed id_token+jwt', { typ: 'id_token+jwt' }, { aud: 'fairemail', scope: MAIL_SCOPE }],
    ['with at_hash', { typ: 'JWT' }, { aud: 'fairemail', scope: MAIL_SCOPE, at_hash: 'x', nonce: 'n' }],
    ['Keycloak typ ID', {}, { aud: 'fairemail', azp: 'fairemail', typ: 'ID', scope: MAIL_SCOPE }],
  ])('%s: refused before the scope is looked at', (_what, header, claims) => {
    // The order JwtStrategy checks in: the token type first.
    expect(() => {
      checkTokenType(header, claims);
      checkAudience(claims, ['mail'], MAIL_SCOPE);
    }).toThrow(expect.objectContaining({ code: 'wrong_token_type' }));
  });
});

describe('introspection answers under the rule', () => {
  const strategy = (answer: Record<string, unknown>, rule: string | null = MAIL_SCOPE) =>
    new IntrospectionStrategy(oauth(rule === null ? {} : { anyClientWithScope: rule }), {
      introspect: async () => answer,
    } as unknown as ProviderClient);
  const exp = () => Math.floor(Date.now() / 1000) + 300;

  it.each([
    ['without a scope', { active: true, client_id: 'fairemail', exp: exp() }, 'wrong_audience'],
    ['for another client, with another scope', { active: true, client_id: 'calendar', scope: 'openid calendar', exp: exp() }, 'wrong_audience'],
    ['for another resource, the scope only in a nested list', { active: true, aud: 'calendar', scp: [[MAIL_SCOPE]], exp: exp() }, 'wrong_audience'],
    ['"active": "true" as a string', { active: 'true', client_id: 'fairemail', scope: MAIL_SCOPE, exp: exp() }, 'inactive'],
    ['inactive, though it names the scope', { active: false, client_id: 'fairemail', scope: MAIL_SCOPE }, 'inactive'],
    ['an ID token Keycloak introspects', { active: true, client_id: 'fairemail', typ: 'ID', scope: MAIL_SCOPE, exp: exp() }, 'wrong_token_type'],
  ])('%s: refused (%s)', async (_what, answer, code) => {
    await expect(strategy(answer).check('opaque')).rejects.toMatchObject({ code });
  });

  it('another client with the scope passes only with the rule', async () => {
    const answer = { active: true, client_id: 'fairemail', scope: `openid ${MAIL_SCOPE}`, exp: exp() };
    await expect(strategy(answer).check('opaque')).resolves.toMatchObject({ claims: { client_id: 'fairemail' } });
    await expect(strategy(answer, null).check('opaque')).rejects.toMatchObject({ code: 'wrong_audience' });
  });
});

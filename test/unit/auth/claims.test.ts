import { describe, expect, it } from 'vitest';
import { checkAudience, checkRequirements } from '../../../src/auth/claims.js';
import { bindIdentity, identityFromClaims } from '../../../src/auth/identity.js';
import { configSchema } from '../../../src/config/schema.js';

function oauth(extra: Record<string, unknown> = {}) {
  return configSchema.parse({
    listeners: [{ protocol: 'imap', bind: ':993' }],
    backends: { imap: { host: 'x' } },
    master: { user: 'm', password: 'p' },
    oauth: { issuer: 'https://idp.example', audience: ['mail'], ...extra },
  }).oauth;
}

describe('checkAudience', () => {
  it.each([
    [{ aud: 'mail' }, true],
    [{ aud: ['other', 'mail'] }, true],
    [{ aud: 'account', azp: 'mail' }, true], // Keycloak
    [{ client_id: 'mail' }, true], // introspection answer without aud
    [{ aud: 'calendar', client_id: 'mail' }, false],
    [{ aud: 'account', azp: 'other' }, false],
    [{ aud: 'MAIL' }, false],
    [{}, false],
    [{ aud: ['mail2'] }, false],
  ])('%j -> %s', (claims, accepted) => {
    const run = () => checkAudience(claims, ['mail']);
    if (accepted) expect(run).not.toThrow();
    else expect(run).toThrow(expect.objectContaining({ code: 'wrong_audience' }));
  });
});

describe('checkRequirements', () => {
  it('requires scopes', () => {
    const o = oauth({ requiredScopes: ['mail', 'email'] });
    expect(() => checkRequirements({ scope: 'openid email mail' }, o)).not.toThrow();
    expect(() => checkRequirements({ scp: ['mail', 'email'] }, o)).not.toThrow();
    expect(() => checkRequirements({ scope: 'openid email' }, o)).toThrow(expect.objectContaining({ code: 'insufficient_scope' }));
  });
  it('requires a verified e-mail when asked', () => {
    const o = oauth({ requireEmailVerified: true });
    expect(() => checkRequirements({ email_verified: true }, o)).not.toThrow();
    expect(() => checkRequirements({ email_verified: false }, o)).toThrow(expect.objectContaining({ code: 'email_not_verified' }));
    expect(() => checkRequirements({}, o)).toThrow(expect.objectContaining({ code: 'email_not_verified' }));
  });
  it('limits e-mail domains', () => {
    const o = oauth({ allowedEmailDomains: ['example.org'] });
    expect(() => checkRequirements({ email: 'a@Example.ORG' }, o)).not.toThrow();
    expect(() => checkRequirements({ email: 'a@example.org.evil.test' }, o)).toThrow(expect.objectContaining({ code: 'domain_not_allowed' }));
    expect(() => checkRequirements({ email: 'a@evil.test@example.org' }, o)).not.toThrow();
    expect(() => checkRequirements({}, o)).toThrow(expect.objectContaining({ code: 'domain_not_allowed' }));
  });
  it('requires a group or a nested role', () => {
    const groups = oauth({ requiredClaim: { name: 'groups', value: 'mail-users' } });
    expect(() => checkRequirements({ groups: ['staff', 'mail-users'] }, groups)).not.toThrow();
    expect(() => checkRequirements({ groups: ['staff'] }, groups)).toThrow(expect.objectContaining({ code: 'missing_claim' }));
    const roles = oauth({ requiredClaim: { name: 'realm_access.roles', value: 'mail' } });
    expect(() => checkRequirements({ realm_access: { roles: ['mail'] } }, roles)).not.toThrow();
    expect(() => checkRequirements({ realm_access: { roles: ['mailx'] } }, roles)).toThrow(expect.objectContaining({ code: 'missing_claim' }));
  });
});

describe('identity', () => {
  it('takes the first present claim', () => {
    expect(identityFromClaims({ preferred_username: 'al', email: 'al@x.test' }, ['email', 'preferred_username'], '*')).toEqual({
      identity: 'al@x.test',
      claim: 'email',
    });
    expect(identityFromClaims({ email: '', preferred_username: 'al' }, ['email', 'preferred_username'], '*').identity).toBe('al');
    expect(() => identityFromClaims({ email: 42 }, ['email'], '*')).toThrow(expect.objectContaining({ code: 'no_identity' }));
  });
  it('refuses an e-mail identity the provider marks unverified', () => {
    expect(() => identityFromClaims({ email: 'bob@x.test', email_verified: false }, ['email'], '*')).toThrow(
      expect.objectContaining({ code: 'email_not_verified' }),
    );
    expect(identityFromClaims({ email: 'bob@x.test', email_verified: true }, ['email'], '*').identity).toBe('bob@x.test');
    expect(identityFromClaims({ email: 'bob@x.test' }, ['email'], '*').identity).toBe('bob@x.test');
    expect(identityFromClaims({ preferred_username: 'bob', email_verified: false }, ['preferred_username'], '*').identity).toBe('bob');
  });

  it('refuses identities that could trick the backend', () => {
    expect(() => identityFromClaims({ email: 'bob@x.test*master' }, ['email'], '*')).toThrow(expect.objectContaining({ code: 'bad_identity' }));
    expect(() => identityFromClaims({ email: 'bob\r\n@x' }, ['email'], '*')).toThrow(expect.objectContaining({ code: 'bad_identity' }));
  });
  it('binds the SASL user case-insensitively, and only to the same user', () => {
    expect(bindIdentity('Alice@X.test', 'alice@x.test')).toBe('alice@x.test');
    expect(bindIdentity(undefined, 'alice@x.test')).toBe('alice@x.test');
    expect(() => bindIdentity('bob@x.test', 'alice@x.test')).toThrow(expect.objectContaining({ code: 'wrong_user' }));
    expect(() => bindIdentity('alice@x.tes', 'alice@x.test')).toThrow(expect.objectContaining({ code: 'wrong_user' }));
  });
});

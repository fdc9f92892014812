import { describe, expect, it } from 'vitest';
import { checkAudience, checkRequirements, checkTokenType } from '../../../src/auth/claims.js';
import { bindIdentity, identityFromClaims } from '../../../src/auth/identity.js';
import { acceptedDomains, configSchema, openSettingsWarnings } from '../../../src/config/schema.js';

function oauth(extra: Record<string, unknown> = {}) {
  return configSchema.parse({
    listeners: [{ protocol: 'imap', bind: '0.0.0.0:993' }],
    tls: { development: true },
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

describe('checkAudience with oauth.anyClientWithScope', () => {
  const MAIL_SCOPE = 'urn:ietf:params:oauth:scope:mail';
  it.each([
    [{ aud: 'sasl-gate-token', scope: `openid ${MAIL_SCOPE} offline_access` }, true],
    [{ aud: 'thunderbird', scp: ['email', MAIL_SCOPE] }, true],
    [{ client_id: 'fairemail', scope: MAIL_SCOPE }, true], // introspection answer
    [{ aud: 'mail' }, true], // the listed audience needs no scope
    [{ aud: 'sasl-gate-token', scope: 'openid email' }, false],
    [{ aud: 'sasl-gate-token', scope: `${MAIL_SCOPE}x` }, false],
    [{ aud: 'sasl-gate-token', scope: MAIL_SCOPE.toUpperCase() }, false],
    [{ aud: 'sasl-gate-token', scope: ['a', MAIL_SCOPE].join(',') }, false],
    [{ aud: 'sasl-gate-token' }, false],
  ])('%j -> %s', (claims, accepted) => {
    const run = () => checkAudience(claims, ['mail'], MAIL_SCOPE);
    if (accepted) expect(run).not.toThrow();
    else expect(run).toThrow(expect.objectContaining({ code: 'wrong_audience' }));
  });

  it('is off by default: another client\'s token with the scope is refused', () => {
    const o = oauth();
    expect(o.anyClientWithScope).toBeUndefined();
    expect(() => checkAudience({ aud: 'sasl-gate-token', scope: MAIL_SCOPE }, ['mail'], o.anyClientWithScope)).toThrow(
      expect.objectContaining({ code: 'wrong_audience' }),
    );
  });

  it('takes one scope without spaces', () => {
    expect(oauth({ anyClientWithScope: MAIL_SCOPE }).anyClientWithScope).toBe(MAIL_SCOPE);
    expect(() => oauth({ anyClientWithScope: 'mail imap' })).toThrow(/one scope/);
    expect(() => oauth({ anyClientWithScope: '' })).toThrow();
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
  it('requires a group or a nested role', () => {
    const groups = oauth({ requiredClaim: { name: 'groups', value: 'mail-users' } });
    expect(() => checkRequirements({ groups: ['staff', 'mail-users'] }, groups)).not.toThrow();
    expect(() => checkRequirements({ groups: ['staff'] }, groups)).toThrow(expect.objectContaining({ code: 'missing_claim' }));
    const roles = oauth({ requiredClaim: { name: 'realm_access.roles', value: 'mail' } });
    expect(() => checkRequirements({ realm_access: { roles: ['mail'] } }, roles)).not.toThrow();
    expect(() => checkRequirements({ realm_access: { roles: ['mailx'] } }, roles)).toThrow(expect.objectContaining({ code: 'missing_claim' }));
  });
});

const RULES = { claims: ['email'], masterSeparator: '*', domains: [] as string[] };
const rules = (extra: Partial<typeof RULES> = {}) => ({ ...RULES, ...extra });
const refusal = (code: string) => expect.objectContaining({ code });

describe('identity', () => {
  it('takes the first present claim, and only listed claims', () => {
    const both = rules({ claims: ['email', 'preferred_username'] });
    expect(identityFromClaims({ preferred_username: 'al@x.test', email: 'alice@x.test' }, both)).toEqual({ identity: 'alice@x.test', claim: 'email' });
    expect(identityFromClaims({ email: '', preferred_username: 'al@x.test' }, both)).toEqual({ identity: 'al@x.test', claim: 'preferred_username' });
    // The default lists only email: a token without one names nobody, whatever else it carries.
    expect(() => identityFromClaims({ preferred_username: 'bob@x.test' }, rules())).toThrow(refusal('no_identity'));
    expect(() => identityFromClaims({ email: '', preferred_username: 'bob@x.test' }, rules())).toThrow(refusal('no_identity'));
    expect(() => identityFromClaims({ email: 42 }, rules())).toThrow(refusal('no_identity'));
    expect(() => identityFromClaims({ email: ['bob@x.test'] }, rules())).toThrow(refusal('no_identity'));
  });

  it('refuses every identity of a token that marks the address unverified, whichever claim it came from', () => {
    const both = rules({ claims: ['email', 'preferred_username'] });
    for (const flag of [false, 'false']) {
      expect(() => identityFromClaims({ email: 'bob@x.test', email_verified: flag }, rules())).toThrow(refusal('email_not_verified'));
      expect(() => identityFromClaims({ preferred_username: 'bob@x.test', email_verified: flag }, both)).toThrow(refusal('email_not_verified'));
      expect(() => identityFromClaims({ email: '', preferred_username: 'bob@x.test', email_verified: flag }, both)).toThrow(
        refusal('email_not_verified'),
      );
    }
    expect(identityFromClaims({ email: 'bob@x.test', email_verified: true }, rules()).identity).toBe('bob@x.test');
    expect(identityFromClaims({ email: 'bob@x.test' }, rules()).identity).toBe('bob@x.test');
  });

  it.each([
    'bob',
    'bob@',
    '@x.test',
    'bob@@x.test',
    'alice@evil.test@x.test',
    'bob x@x.test',
    'bob@x..test',
    'bob@.x.test',
    'bob@x.test.',
    'bob@-x.test',
    'bob@x_y.test',
    '.bob@x.test',
    'bob.@x.test',
    'b..ob@x.test',
    '"bob"@x.test',
    'bob%evil.test@x.test',
    '../bob@x.test',
    'bob/..@x.test',
    'bob\\@x.test',
    'bob,carol@x.test',
    'bob<@x.test',
    'bob@[127.0.0.1]',
    'bob@x.test\u2028',
    'bob\u0000@x.test',
    'bob\r\n@x.test',
    ' bob@x.test',
    'bob@x.test*master',
    `${'b'.repeat(65)}@x.test`,
    `bob@${'x'.repeat(64)}.test`,
    `bob@${Array.from({ length: 60 }, () => 'abcd').join('.')}.test`,
  ])('refuses %j: not a plain mail address', (value) => {
    expect(() => identityFromClaims({ email: value }, rules())).toThrow(refusal('bad_identity'));
    // Whichever claim it comes from.
    expect(() => identityFromClaims({ upn: value }, rules({ claims: ['upn'] }))).toThrow(refusal('bad_identity'));
  });

  it.each(["o'brien+tag@x.test", 'a.b-c_d@sub.x-y.test', 'jörg@bücher.example', 'ALICE@X.TEST', 'a@localhost'])('accepts %j', (value) => {
    expect(identityFromClaims({ email: value }, rules()).identity).toBe(value);
  });

  it('accepts only the accepted domains, without regard to case or IDNA spelling', () => {
    const only = rules({ domains: ['x.test', 'Bücher.example'], claims: ['email', 'preferred_username'] });
    expect(identityFromClaims({ email: 'a@X.TEST' }, only).identity).toBe('a@X.TEST');
    expect(identityFromClaims({ email: 'a@xn--bcher-kva.example' }, only).identity).toBe('a@xn--bcher-kva.example');
    expect(identityFromClaims({ email: 'a@bücher.example' }, only).identity).toBe('a@bücher.example');
    for (const value of ['a@x.test.evil.test', 'a@evil-x.test', 'a@sub.x.test', 'a@evil.test']) {
      expect(() => identityFromClaims({ email: value }, only)).toThrow(refusal('domain_not_allowed'));
      // A fallback claim is held to the same domains.
      expect(() => identityFromClaims({ preferred_username: value }, only)).toThrow(refusal('domain_not_allowed'));
    }
  });

  it('binds the SASL user case-insensitively, and only to the same user', () => {
    expect(bindIdentity('Alice@X.test', 'alice@x.test')).toBe('alice@x.test');
    expect(bindIdentity(undefined, 'alice@x.test')).toBe('alice@x.test');
    expect(() => bindIdentity('bob@x.test', 'alice@x.test')).toThrow(refusal('wrong_user'));
    expect(() => bindIdentity('alice@x.tes', 'alice@x.test')).toThrow(refusal('wrong_user'));
  });
});

describe('acceptedDomains', () => {
  const config = (oauthExtra: Record<string, unknown>, directory?: Record<string, unknown>) =>
    configSchema.parse({
      listeners: [{ protocol: 'imap', bind: '0.0.0.0:993' }],
      tls: { development: true },
      backends: { imap: { host: 'x' } },
      master: { user: 'm', password: 'p' },
      oauth: { issuer: 'https://idp.example', audience: ['mail'], ...oauthExtra },
      ...(directory ? { directory } : {}),
    });
  const directory = (domains: string[]) => ({ source: 'static', static: { file: '/dev/null' }, domains });

  it('is oauth.allowedEmailDomains, else the directory domains, else every domain with a warning', () => {
    expect(acceptedDomains(config({ allowedEmailDomains: ['a.test'] }, directory(['b.test'])))).toEqual(['a.test']);
    expect(acceptedDomains(config({}, directory(['b.test'])))).toEqual(['b.test']);
    expect(acceptedDomains(config({}))).toEqual([]);
    const open = openSettingsWarnings(config({}));
    expect(open.filter((w) => w.includes('oauth.allowedEmailDomains'))).toHaveLength(1);
    expect(openSettingsWarnings(config({ allowedEmailDomains: ['a.test'] })).filter((w) => w.includes('allowedEmailDomains'))).toEqual([]);
    // A directory limits logins to its users, whatever their domain.
    expect(openSettingsWarnings(config({}, directory([]))).filter((w) => w.includes('allowedEmailDomains'))).toEqual([]);
  });

  it('defaults to the email claim alone', () => {
    expect(config({}).oauth.usernameClaims).toEqual(['email']);
  });
});

describe('checkTokenType', () => {
  const keycloakAccess = { typ: 'Bearer', azp: 'mail', email: 'a@x.test' };
  it.each([
    [{ typ: 'JWT' }, keycloakAccess],
    [{ typ: 'at+jwt' }, { client_id: 'mail' }],
    [{ typ: 'application/at+JWT' }, {}],
    [{}, { azp: 'mail', uid: 'x', nonce: 'n', c_hash: 'c' }],
    [{ typ: 'JWT' }, { typ: 'something-else' }],
  ])('lets an access token through: header %j, claims %j', (header, claims) => {
    expect(() => checkTokenType(header, claims)).not.toThrow();
  });

  it.each([
    [{ typ: 'id_token+jwt' }, {}],
    [{ typ: 'application/id_token+jwt' }, {}],
    [{ typ: 'logout+jwt' }, {}],
    [{ typ: 'dpop+jwt' }, {}],
    [{ typ: 'JWT' }, { typ: 'ID' }],
    [{ typ: 'JWT' }, { typ: 'id' }],
    [{}, { typ: 'Refresh' }],
    [{}, { typ: 'Offline' }],
    [{}, { typ: 'Logout' }],
    [{ typ: 'JWT' }, { at_hash: 'abc' }],
  ])('refuses a token that declares another type: header %j, claims %j', (header, claims) => {
    expect(() => checkTokenType(header, claims)).toThrow(refusal('wrong_token_type'));
  });
});

describe('look-alike spellings and unverified addresses', () => {
  it('refuses compatibility characters and non-canonical domains, even when IDNA would fold them into an accepted one', () => {
    const local = rules({ domains: ['example.test'] });
    for (const email of ['eve@\uff45xample.test', '\uff42ob@example.test', 'bob@example\u3002test', 'bob@ex\ufb00ample.test']) {
      expect(() => identityFromClaims({ email }, local), email).toThrow(refusal('bad_identity'));
      expect(() => identityFromClaims({ email }, rules()), email).toThrow(refusal('bad_identity'));
    }
  });

  it('still accepts upper case and international domains in either canonical spelling', () => {
    const idn = rules({ domains: ['b\u00fccher.test'] });
    expect(identityFromClaims({ email: 'Alice@Example.TEST' }, rules({ domains: ['example.test'] })).identity).toBe('Alice@Example.TEST');
    expect(identityFromClaims({ email: 'anna@b\u00fccher.test' }, idn).identity).toBe('anna@b\u00fccher.test');
    expect(identityFromClaims({ email: 'anna@xn--bcher-kva.test' }, idn).identity).toBe('anna@xn--bcher-kva.test');
  });

  it('takes only true (or "true") as a verified address; any other email_verified refuses, an absent one does not', () => {
    for (const flag of [false, 'false', 'False', 'FALSE', 'TRUE', ' true', 0, 'no', '']) {
      expect(() => identityFromClaims({ email: 'alice@x.test', email_verified: flag }, rules()), String(flag)).toThrow(refusal('email_not_verified'));
    }
    for (const flag of [true, 'true', undefined]) {
      expect(identityFromClaims({ email: 'alice@x.test', email_verified: flag }, rules()).identity).toBe('alice@x.test');
    }
  });
});

import { describe, expect, it } from 'vitest';
import { AuthError, SaslError } from '../../src/errors.js';
import { checkPasswordLogin, type PasswordPolicy } from '../../src/auth/password-policy.js';

const policy: PasswordPolicy = { masterUser: 'sasl-gate', masterSeparator: '*' };

function refusal(login: { authzid?: string; authcid: string }, withPolicy = policy): unknown {
  try {
    checkPasswordLogin(login, withPolicy);
    return undefined;
  } catch (error) {
    return error;
  }
}

describe('checkPasswordLogin', () => {
  it.each<[string, { authzid?: string; authcid: string }]>([
    ['plain user', { authcid: 'alice' }],
    ['e-mail address', { authcid: 'alice@example.org' }],
    ['empty authzid', { authzid: '', authcid: 'alice@example.org' }],
    ['authzid equal to authcid', { authzid: 'alice@example.org', authcid: 'alice@example.org' }],
    ['unicode user', { authcid: 'jürgen@exämple.de' }],
    ['name that merely contains the master user', { authcid: 'sasl-gate-fan@example.org' }],
    ['master user as a domain', { authcid: 'bob@sasl-gate' }],
  ])('lets through %s', (_name, login) => {
    expect(() => checkPasswordLogin(login, policy)).not.toThrow();
  });

  it.each<[string, { authzid?: string; authcid: string }]>([
    ['the master user', { authcid: 'sasl-gate' }],
    ['the master user in upper case', { authcid: 'SASL-GATE' }],
    ['the master user in mixed case', { authcid: 'Sasl-Gate' }],
    ['the master user with surrounding space', { authcid: ' sasl-gate ' }],
    ['the master user with a trailing tab', { authcid: 'sasl-gate\t' }],
    ['the master user in full-width letters', { authcid: 'ｓａｓｌ－ｇａｔｅ' }],
    ['the master user acting as bob (PLAIN authzid)', { authzid: 'bob', authcid: 'sasl-gate' }],
    ['Dovecot master login form bob*sasl-gate', { authcid: 'bob*sasl-gate' }],
    ['bob*SASL-GATE', { authcid: 'bob*SASL-GATE' }],
    ['separator alone', { authcid: '*' }],
    ['separator in the authzid', { authzid: 'bob*sasl-gate', authcid: 'bob*sasl-gate' }],
    ['separator only in the authzid', { authzid: 'alice*x', authcid: 'alice' }],
    ['alice acting as bob', { authzid: 'bob', authcid: 'alice' }],
    ['authzid differing only in case', { authzid: 'Alice', authcid: 'alice' }],
    ['authzid with a trailing space', { authzid: 'alice ', authcid: 'alice' }],
    ['authzid naming the master user', { authzid: 'sasl-gate', authcid: 'alice' }],
  ])('refuses %s with master_user_refused', (_name, login) => {
    const error = refusal(login);
    expect(error).toBeInstanceOf(AuthError);
    expect((error as AuthError).code).toBe('master_user_refused');
    expect((error as AuthError).temporary).toBe(false);
  });

  it('honours a configured separator', () => {
    const percent: PasswordPolicy = { masterUser: 'proxy', masterSeparator: '%' };
    expect((refusal({ authcid: 'bob%proxy' }, percent) as AuthError).code).toBe('master_user_refused');
    expect(() => checkPasswordLogin({ authcid: 'bob*proxy' }, percent)).not.toThrow();
    expect(() => checkPasswordLogin({ authcid: 'bob+proxy' }, percent)).not.toThrow();
  });

  it('falls back to "*" when the separator is empty instead of refusing everyone', () => {
    const unset: PasswordPolicy = { masterUser: 'sasl-gate', masterSeparator: '' };
    expect(() => checkPasswordLogin({ authcid: 'alice' }, unset)).not.toThrow();
    expect((refusal({ authcid: 'bob*sasl-gate' }, unset) as AuthError).code).toBe('master_user_refused');
  });

  it.each<[string, { authzid?: string; authcid: string }]>([
    ['empty authcid', { authcid: '' }],
    ['CR/LF in authcid', { authcid: 'alice\r\nA1 LOGOUT' }],
    ['LF in authcid', { authcid: 'alice\n' }],
    ['NUL in authcid', { authcid: 'alice\0' }],
    ['leading space in authcid', { authcid: ' alice' }],
    ['over-long authcid', { authcid: 'a'.repeat(256) }],
    ['CR/LF in authzid equal to authcid', { authzid: 'alice\r\n', authcid: 'alice\r\n' }],
    ['NUL in authzid equal to authcid', { authzid: 'a\0b', authcid: 'a\0b' }],
  ])('lets the user-name check reject %s with a SaslError', (_name, login) => {
    const error = refusal(login);
    expect(error).toBeInstanceOf(SaslError);
    expect((error as SaslError).message).toBe('invalid user name');
  });

  it('never puts the master user name into the client-visible message', () => {
    const error = refusal({ authcid: 'SASL-GATE' }) as AuthError;
    expect(error.clientMessage).toBeUndefined();
  });
});

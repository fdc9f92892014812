/**
 * Pass-through PLAIN/LOGIN reaches the backend from the gate's trusted address, where the master
 * user is accepted. These rules keep that path from becoming a way to guess the master password
 * or to log in as someone else with it.
 */
import { AuthError } from '../errors.js';
import { checkUsername } from '../sasl/username.js';

/** How the backend recognises master-user logins. */
export interface PasswordPolicy {
  masterUser: string;
  /** Dovecot's master_user_separator; default '*'. */
  masterSeparator: string;
}

const DEFAULT_MASTER_SEPARATOR = '*';

/**
 * Folds the spellings a backend may treat as the same account: surrounding space, letter case and
 * Unicode compatibility forms (e.g. full-width letters).
 */
function foldAccountName(name: string): string {
  return name.normalize('NFKC').trim().toLowerCase();
}

/** Throws AuthError('master_user_refused') for a password login that could reach the master user. */
export function checkPasswordLogin(
  login: { authzid?: string; authcid: string },
  policy: PasswordPolicy,
): void {
  const authzid = login.authzid ?? '';
  const { authcid } = login;
  // An empty separator would match every name; fall back to the default rather than disable the rule.
  const separator = policy.masterSeparator === '' ? DEFAULT_MASTER_SEPARATOR : policy.masterSeparator;

  if (foldAccountName(authcid) === foldAccountName(policy.masterUser)) {
    throw new AuthError('master_user_refused', 'password login names the master user');
  }
  if (authcid.includes(separator) || authzid.includes(separator)) {
    throw new AuthError('master_user_refused', 'password login contains the master separator');
  }
  if (authzid.length > 0 && authzid !== authcid) {
    throw new AuthError('master_user_refused', 'password login asks to act as another user');
  }

  checkUsername(authcid);
  if (authzid.length > 0) checkUsername(authzid);
}

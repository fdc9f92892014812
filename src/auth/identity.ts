import { AuthError, SaslError } from '../errors.js';
import { checkUsername } from '../sasl/username.js';

/** The first present, non-empty string claim of `claimNames`; throws `no_identity` when none is. */
export function identityFromClaims(claims: Record<string, unknown>, claimNames: readonly string[], masterSeparator: string): {
  identity: string;
  claim: string;
} {
  for (const claim of claimNames) {
    const value = claims[claim];
    if (typeof value !== 'string' || value.trim() === '') continue;
    try {
      checkUsername(value);
    } catch (err) {
      if (err instanceof SaslError) throw new AuthError('bad_identity', `claim ${claim} is not a usable user name`);
      throw err;
    }
    if (claim === 'email' && (claims['email_verified'] === false || claims['email_verified'] === 'false')) {
      // Where users may edit their own address, an unverified one could name someone else's mailbox.
      throw new AuthError('email_not_verified', 'the e-mail address in the token is marked unverified');
    }
    if (value.includes(masterSeparator)) {
      throw new AuthError('bad_identity', `claim ${claim} contains the master separator`);
    }
    return { identity: value, claim };
  }
  throw new AuthError('no_identity', `token has none of the claims ${claimNames.join(', ')}`);
}

/**
 * Binds the SASL user to the token's identity. The comparison ignores case, as mail systems
 * do for addresses; a client that names no user (OAUTHBEARER without `a=`) gets the token's.
 */
export function bindIdentity(saslUser: string | undefined, tokenIdentity: string): string {
  if (saslUser === undefined || saslUser === '') return tokenIdentity;
  if (saslUser.normalize('NFC').toLowerCase() !== tokenIdentity.normalize('NFC').toLowerCase()) {
    throw new AuthError('wrong_user', 'the token belongs to another user than the one named');
  }
  return tokenIdentity;
}

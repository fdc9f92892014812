import { domainToASCII, domainToUnicode } from 'node:url';
import { AuthError, SaslError } from '../errors.js';
import { checkUsername } from '../sasl/username.js';

/** What a token's identity must be: where it comes from and which domains it may name. */
export interface IdentityRules {
  /** `oauth.usernameClaims`: only these claims, in this order, may name the user. */
  claims: readonly string[];
  /** Dovecot's master separator, which no identity may contain. */
  masterSeparator: string;
  /** Accepted mail domains; empty accepts every domain. */
  domains: readonly string[];
}

/** One spelling of a domain for comparisons: lower case, IDNA A-labels, no trailing dot. */
function comparableDomain(domain: string): string {
  const lower = domain.trim().toLowerCase().replace(/\.$/, '');
  return domainToASCII(lower) || lower;
}

/**
 * RFC 5321 dot-atom local part, with UTF-8 letters (RFC 6531), but without `%` and `/`: source
 * routes (`user%host`) and path separators have no business in a mailbox name Dovecot builds
 * paths from.
 */
const LOCAL_PART = /^[\p{L}\p{M}\p{N}!#$&'*+=?^_`{|}~-]+(?:\.[\p{L}\p{M}\p{N}!#$&'*+=?^_`{|}~-]+)*$/u;
const DOMAIN_LABEL = /^[\p{L}\p{M}\p{N}](?:[\p{L}\p{M}\p{N}-]{0,61}[\p{L}\p{M}\p{N}])?$/u;
/** RFC 5321's limits: 64 octets of local part, 254 of address (the 256 of a path less `<>`). */
const MAX_LOCAL_BYTES = 64;
const MAX_ADDRESS_BYTES = 254;

/** The domain of `value` when it is a plain mail address (`local@domain`), else undefined. */
export function mailAddressDomain(value: string): string | undefined {
  if (Buffer.byteLength(value, 'utf8') > MAX_ADDRESS_BYTES) return undefined;
  const at = value.indexOf('@');
  if (at < 0 || at !== value.lastIndexOf('@')) return undefined;
  const local = value.slice(0, at);
  const domain = value.slice(at + 1);
  if (Buffer.byteLength(local, 'utf8') > MAX_LOCAL_BYTES || !LOCAL_PART.test(local)) return undefined;
  const labels = domain.split('.');
  if (!labels.every((label) => DOMAIN_LABEL.test(label))) return undefined;
  return domain;
}

/** Whether an `email_verified` claim vouches for the address: `true`, or the string `"true"` some providers send. */
export function vouchesForEmail(value: unknown): boolean {
  return value === true || value === 'true';
}

/** Whether an `email_verified` claim says no: present and not vouching; an absent claim says nothing. */
function markedUnverified(value: unknown): boolean {
  return value !== undefined && value !== null && !vouchesForEmail(value);
}

/**
 * Whether a domain is written the one way the backend will see it: no compatibility characters
 * (a full-width `ｅ` that IDNA would fold into `e`), and unchanged by IDNA mapping but for case,
 * so that the domain checked here and the name Dovecot or Postfix receive are the same string.
 */
function canonicalDomain(domain: string): boolean {
  const lower = domain.toLowerCase();
  if (lower.normalize('NFKC') !== lower) return false;
  const ascii = domainToASCII(lower);
  if (ascii === '') return false;
  return ascii === lower || domainToUnicode(ascii) === lower;
}

/**
 * The token's user: the first present, non-empty string claim of `rules.claims`. It must be a
 * mail address that cannot break a protocol line, does not contain the master separator, and
 * belongs to an accepted domain; a token that marks its e-mail address unverified names nobody,
 * whichever claim the user came from. Throws `no_identity` when no listed claim is present, else
 * `bad_identity`, `email_not_verified` or `domain_not_allowed`.
 */
export function identityFromClaims(claims: Record<string, unknown>, rules: IdentityRules): { identity: string; claim: string } {
  let found: { identity: string; claim: string } | undefined;
  for (const claim of rules.claims) {
    const value = claims[claim];
    if (typeof value === 'string' && value.trim() !== '') {
      found = { identity: value, claim };
      break;
    }
  }
  if (!found) throw new AuthError('no_identity', `token has none of the claims ${rules.claims.join(', ')}`);
  const { identity, claim } = found;
  try {
    checkUsername(identity);
  } catch (err) {
    if (err instanceof SaslError) throw new AuthError('bad_identity', `claim ${claim} is not a usable user name`);
    throw err;
  }
  if (identity.includes(rules.masterSeparator)) {
    throw new AuthError('bad_identity', `claim ${claim} contains the master separator`);
  }
  // Where users may edit their own address (or user name), an unverified one could name someone
  // else's mailbox; the flag speaks for the account, so it counts whichever claim names the user.
  if (markedUnverified(claims['email_verified'])) {
    throw new AuthError('email_not_verified', 'the token marks the e-mail address unverified');
  }
  // Look-alikes that mail systems fold (full-width letters, ligatures) would name one mailbox
  // here and another in a backend that compares loosely: only the canonical spelling is a user.
  if (identity.normalize('NFKC') !== identity) {
    throw new AuthError('bad_identity', `claim ${claim} holds compatibility characters (a look-alike spelling)`);
  }
  const domain = mailAddressDomain(identity);
  if (domain === undefined) throw new AuthError('bad_identity', `claim ${claim} is not a mail address`);
  if (!canonicalDomain(domain)) throw new AuthError('bad_identity', `the domain of claim ${claim} is not in its canonical spelling`);
  if (rules.domains.length > 0) {
    const wanted = comparableDomain(domain);
    if (!rules.domains.some((d) => comparableDomain(d) === wanted)) {
      throw new AuthError('domain_not_allowed', `the domain of claim ${claim} is not one this server accepts`);
    }
  }
  return found;
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

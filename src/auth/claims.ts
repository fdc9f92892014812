import type { OAuthConfig } from '../config/schema.js';
import { AuthError } from '../errors.js';
import { vouchesForEmail } from './identity.js';

/** The audiences a token must be for: `oauth.audience`, or the client id when that is empty. */
export function acceptedAudiences(oauth: OAuthConfig): string[] {
  return oauth.audience.length > 0 ? [...oauth.audience] : oauth.clientId ? [oauth.clientId] : [];
}

/**
 * The scopes a token carries, from `scope` (space-separated) or `scp` (a list, or a string).
 * Only strings in a list count: `String()` would read a nested list `[["mail"]]` as `mail`.
 */
export function grantedScopes(claims: Record<string, unknown>): Set<string> {
  const scope = claims['scope'] ?? claims['scp'];
  return new Set(
    typeof scope === 'string'
      ? scope.split(' ').filter(Boolean)
      : Array.isArray(scope)
        ? scope.filter((s): s is string => typeof s === 'string')
        : [],
  );
}

/**
 * `aud` must contain an accepted audience, or the authorized party `azp` be one (Keycloak names
 * the client there and puts `account` in `aud`). An introspection answer without `aud` names
 * the client in `client_id` instead; `client_id` never overrides an `aud` that names another
 * resource. With `anyClientWithScope` (opt-in, `oauth.anyClientWithScope`), a token for any other
 * client of the issuer passes too when it carries that scope: public and dynamically registered
 * clients get their own client id as audience.
 */
export function checkAudience(
  claims: Record<string, unknown>,
  audiences: readonly string[],
  anyClientWithScope?: string,
): void {
  const raw = claims['aud'];
  const aud = typeof raw === 'string' ? [raw] : Array.isArray(raw) ? raw.map(String) : [];
  const parties = [claims['azp'], aud.length === 0 ? claims['client_id'] : undefined].filter(
    (p): p is string => typeof p === 'string',
  );
  if (audiences.some((a) => aud.includes(a) || parties.includes(a))) return;
  if (anyClientWithScope !== undefined && grantedScopes(claims).has(anyClientWithScope)) return;
  throw new AuthError('wrong_audience', 'token issued for another audience');
}

/** Reads a claim by a dotted path (`realm_access.roles`), as Keycloak nests its roles. */
export function claimAt(claims: Record<string, unknown>, path: string): unknown {
  if (path in claims) return claims[path];
  let node: unknown = claims;
  for (const part of path.split('.')) {
    if (node === null || typeof node !== 'object') return undefined;
    node = (node as Record<string, unknown>)[part];
  }
  return node;
}

/** The admin's extra requirements: scopes, a verified e-mail, a group or role (domains: see identity.ts). */
export function checkRequirements(claims: Record<string, unknown>, oauth: OAuthConfig): void {
  if (oauth.requiredScopes.length > 0) {
    const granted = grantedScopes(claims);
    const missing = oauth.requiredScopes.filter((s) => !granted.has(s));
    if (missing.length > 0) throw new AuthError('insufficient_scope', `token lacks scope ${missing.join(', ')}`);
  }
  if (oauth.requireEmailVerified && !vouchesForEmail(claims['email_verified'])) {
    throw new AuthError('email_not_verified', 'the e-mail address in the token is not verified');
  }
  if (oauth.requiredClaim) {
    const { name, value } = oauth.requiredClaim;
    const found = claimAt(claims, name);
    const values = Array.isArray(found) ? found.map(String) : typeof found === 'string' ? found.split(' ') : [];
    if (!values.includes(value)) throw new AuthError('missing_claim', `token lacks ${name} = ${value}`);
  }
}

/** Keycloak's `typ` claim of tokens that are not access tokens (its access tokens say `Bearer`). */
const KEYCLOAK_OTHER_TYPES = new Set(['id', 'refresh', 'offline', 'logout']);

/**
 * Refuses a token that declares itself something other than an access token (`wrong_token_type`):
 * an explicitly typed JWT other than RFC 9068's `at+jwt` (`id_token+jwt`, `logout+jwt`,
 * `dpop+jwt`, ...), Keycloak's `typ` claim of an ID, refresh or logout token, or an `at_hash`
 * claim, which only an ID token issued alongside an access token carries. A plain `JWT` or
 * missing header `typ` says nothing either way (Authentik's and Keycloak's access tokens).
 */
export function checkTokenType(header: { typ?: unknown }, claims: Record<string, unknown>): void {
  if (typeof header.typ === 'string') {
    const typ = header.typ.trim().toLowerCase().replace(/^application\//, '');
    if (typ.endsWith('+jwt') && typ !== 'at+jwt') {
      throw new AuthError('wrong_token_type', `the token is a ${header.typ}, not an access token`);
    }
  }
  const keycloakType = claims['typ'];
  if (typeof keycloakType === 'string' && KEYCLOAK_OTHER_TYPES.has(keycloakType.trim().toLowerCase())) {
    throw new AuthError('wrong_token_type', `the token is of type ${keycloakType}, not an access token`);
  }
  if (claims['at_hash'] !== undefined) {
    throw new AuthError('wrong_token_type', 'the token carries at_hash: it is an ID token, not an access token');
  }
}

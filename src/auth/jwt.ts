import { decodeProtectedHeader, errors as joseErrors, jwtVerify, type JWTPayload, type JWTVerifyOptions } from 'jose';
import type { OAuthConfig } from '../config/schema.js';
import { AuthError } from '../errors.js';
import { acceptedAudiences, checkAudience, checkTokenType } from './claims.js';
import { describeError, type ProviderClient } from './provider.js';
import type { Strategy, StrategyOutcome } from './strategy.js';

/** Turns jose's verdicts into reason codes; anything about reaching the provider is temporary. */
function classify(err: unknown): AuthError {
  if (err instanceof AuthError) return err;
  if (err instanceof joseErrors.JWTExpired) return new AuthError('expired', 'token expired');
  if (err instanceof joseErrors.JWTClaimValidationFailed) {
    if (err.claim === 'iss') return new AuthError('wrong_issuer', 'token from another issuer');
    if (err.claim === 'nbf' || err.claim === 'iat') return new AuthError('not_yet_valid', 'token not yet valid');
    return new AuthError('bad_token', `token claim ${err.claim} rejected: ${err.reason}`);
  }
  if (err instanceof joseErrors.JOSEAlgNotAllowed) return new AuthError('bad_algorithm', 'token algorithm not allowed');
  if (err instanceof joseErrors.JWKSNoMatchingKey) {
    return new AuthError('unknown_key', 'token signed by a key the issuer does not publish');
  }
  if (err instanceof joseErrors.JWSSignatureVerificationFailed) return new AuthError('bad_token', 'token signature invalid');
  if (err instanceof joseErrors.JWKSTimeout) return new AuthError('provider_unavailable', 'JWKS request timed out', { cause: err });
  if (err instanceof joseErrors.JWKSInvalid) {
    return new AuthError('provider_unavailable', `issuer JWKS unusable: ${err.message}`, { cause: err });
  }
  if (err instanceof joseErrors.JOSEError) return new AuthError('bad_token', `token rejected: ${err.code}`);
  // Network failures and HTTP errors of the JWKS fetch are not the token's fault.
  return new AuthError('provider_unavailable', `cannot fetch the issuer's keys: ${describeError(err)}`, { cause: err });
}

const JWT_SHAPE = /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$/;

/** Whether a bearer token has the compact JWS shape (three base64url parts). */
export function looksLikeJwt(token: string): boolean {
  return JWT_SHAPE.test(token);
}

/**
 * Local JWT validation: keys from the issuer's JWKS, signature, `iss`, `aud`/`azp`, `exp`/`nbf`
 * with skew, and an algorithm allow-list. HMAC algorithms, when allowed, are verified with the
 * client secret only, never with a published key. No provider call per login once the keys
 * are known.
 */
export class JwtStrategy implements Strategy {
  readonly name = 'jwt' as const;
  private readonly audiences: string[];
  private readonly secret: Uint8Array | undefined;

  constructor(
    private readonly oauth: OAuthConfig,
    private readonly provider: ProviderClient,
  ) {
    this.audiences = acceptedAudiences(oauth);
    this.secret =
      oauth.clientSecret && oauth.algorithms.some((a) => a.startsWith('HS'))
        ? new TextEncoder().encode(oauth.clientSecret)
        : undefined;
  }

  /**
   * Verifies with the issuer's keys. A token without `kid` may match several published keys
   * (during a rotation): each candidate is tried, and the token is good if one verifies it.
   */
  private async verifyWithPublishedKeys(token: string, options: JWTVerifyOptions): Promise<JWTPayload> {
    const keys = await this.provider.keys();
    try {
      return (await jwtVerify(token, keys, options)).payload;
    } catch (err) {
      if (!(err instanceof joseErrors.JWKSMultipleMatchingKeys)) throw err;
      for await (const key of err) {
        try {
          return (await jwtVerify(token, key, options)).payload;
        } catch (inner) {
          if (!(inner instanceof joseErrors.JWSSignatureVerificationFailed)) throw inner;
        }
      }
      throw new joseErrors.JWSSignatureVerificationFailed();
    }
  }

  async check(token: string): Promise<StrategyOutcome> {
    if (!looksLikeJwt(token)) return { skip: 'not a JWT' };
    let header: ReturnType<typeof decodeProtectedHeader>;
    try {
      header = decodeProtectedHeader(token);
    } catch {
      return { skip: 'not a JWT (header unreadable)' };
    }
    const alg = typeof header.alg === 'string' ? header.alg : '';
    if (!(this.oauth.algorithms as readonly string[]).includes(alg)) {
      throw new AuthError('bad_algorithm', `token algorithm ${alg || '(none)'} not allowed`);
    }
    const { issuer } = await this.provider.endpoints();
    const options = {
      issuer,
      algorithms: [...this.oauth.algorithms],
      clockTolerance: this.oauth.clockSkewSeconds,
      requiredClaims: ['exp'],
    };
    let payload: JWTPayload;
    try {
      payload = alg.startsWith('HS')
        ? (await jwtVerify(token, this.secret!, options)).payload
        : await this.verifyWithPublishedKeys(token, options);
    } catch (err) {
      throw classify(err);
    }
    // Before the audience: an ID token is for the client, so it would otherwise often pass.
    checkTokenType(header, payload);
    checkAudience(payload, this.audiences, this.oauth.anyClientWithScope);
    return { claims: payload, expiresAt: new Date((payload.exp as number) * 1000) };
  }
}

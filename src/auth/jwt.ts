import * as client from 'openid-client';
import {
  createRemoteJWKSet,
  customFetch as joseCustomFetch,
  decodeProtectedHeader,
  errors as joseErrors,
  jwtVerify,
  type JWTPayload,
  type JWTVerifyGetKey,
} from 'jose';
import type { OAuthConfig } from '../config/schema.js';
import { AuthError } from '../errors.js';
import { identityFromClaims } from './identity.js';
import type { TokenIdentity, TokenValidator } from './validator.js';

/** The issuer's metadata that validation needs. */
export interface IssuerMetadata {
  issuer: string;
  jwksUri: string;
}

export interface JwtValidatorOptions {
  oauth: OAuthConfig;
  masterSeparator: string;
  /** Injected for tests; defaults to the global fetch. */
  fetch?: typeof fetch;
  /** How long to wait before trying discovery again after it failed. */
  retryAfterFailureMs?: number;
}

function isLoopbackHttp(url: URL): boolean {
  return url.protocol === 'http:' && ['localhost', '127.0.0.1', '[::1]'].includes(url.hostname);
}

/** Fetches the issuer's OpenID configuration and checks that it names the same issuer. */
export async function discoverIssuer(oauth: OAuthConfig, fetchImpl?: typeof fetch): Promise<IssuerMetadata> {
  const issuerUrl = new URL(oauth.issuer);
  const options: client.DiscoveryRequestOptions = { timeout: oauth.discoveryTimeoutSeconds };
  if (isLoopbackHttp(issuerUrl)) options.execute = [client.allowInsecureRequests];
  if (fetchImpl) options[client.customFetch] = fetchImpl as client.CustomFetch;
  let configuration: client.Configuration;
  try {
    configuration = await client.discovery(issuerUrl, oauth.clientId ?? 'sasl-gate', undefined, undefined, options);
  } catch (err) {
    throw new AuthError('provider_unavailable', `OpenID discovery at ${oauth.issuer} failed: ${describe(err)}`, {
      cause: err,
    });
  }
  const metadata = configuration.serverMetadata();
  if (!metadata.jwks_uri) {
    throw new AuthError('provider_unavailable', `the discovery document of ${oauth.issuer} has no jwks_uri`);
  }
  return { issuer: metadata.issuer, jwksUri: metadata.jwks_uri };
}

function describe(err: unknown): string {
  if (!(err instanceof Error)) return String(err);
  const cause = err.cause instanceof Error ? `: ${err.cause.message}` : '';
  return `${err.message}${cause}`;
}

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
  if (err instanceof joseErrors.JWKSNoMatchingKey) return new AuthError('unknown_key', 'token signed by a key the issuer does not publish');
  if (err instanceof joseErrors.JWSSignatureVerificationFailed) return new AuthError('bad_token', 'token signature invalid');
  if (err instanceof joseErrors.JWKSTimeout) return new AuthError('provider_unavailable', 'JWKS request timed out', { cause: err });
  if (err instanceof joseErrors.JWKSInvalid || err instanceof joseErrors.JWKSMultipleMatchingKeys) {
    return new AuthError('provider_unavailable', `issuer JWKS unusable: ${err.message}`, { cause: err });
  }
  if (err instanceof joseErrors.JOSEError) return new AuthError('bad_token', `token rejected: ${err.code}`);
  // Network failures and HTTP errors from the JWKS fetch are not the token's fault.
  return new AuthError('provider_unavailable', `cannot reach the issuer: ${describe(err)}`, { cause: err });
}

const JWT_SHAPE = /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$/;

/** Whether a bearer token has the compact JWS shape (three base64url parts). */
export function looksLikeJwt(token: string): boolean {
  return JWT_SHAPE.test(token);
}

/**
 * Local JWT validation: keys from the issuer's JWKS (cached by jose, refetched on an unknown
 * `kid` at most once per cooldown), signature, `iss`, `aud`/`azp`, `exp`/`nbf` with skew, and
 * an algorithm allow-list. No provider call per login once the keys are known.
 */
export class JwtValidator implements TokenValidator {
  private metadata: Promise<{ meta: IssuerMetadata; keys: JWTVerifyGetKey }> | undefined;
  private loaded = false;
  private readonly audiences: string[];
  private readonly secret: Uint8Array | undefined;

  constructor(private readonly options: JwtValidatorOptions) {
    const { oauth } = options;
    this.audiences = oauth.audience.length > 0 ? [...oauth.audience] : oauth.clientId ? [oauth.clientId] : [];
    this.secret =
      oauth.clientSecret && oauth.algorithms.some((a) => a.startsWith('HS'))
        ? new TextEncoder().encode(oauth.clientSecret)
        : undefined;
  }

  /** Loads discovery and keys now (at start) so the first login does not wait for them. */
  async warmUp(): Promise<IssuerMetadata> {
    return (await this.load()).meta;
  }

  isReady(): boolean {
    return this.loaded;
  }

  private load(): Promise<{ meta: IssuerMetadata; keys: JWTVerifyGetKey }> {
    if (!this.metadata) {
      const attempt = discoverIssuer(this.options.oauth, this.options.fetch).then((meta) => {
        const jwksOptions: Parameters<typeof createRemoteJWKSet>[1] = {
          timeoutDuration: this.options.oauth.discoveryTimeoutSeconds * 1000,
          cooldownDuration: 30_000,
          cacheMaxAge: 10 * 60_000,
        };
        if (this.options.fetch) jwksOptions[joseCustomFetch] = this.options.fetch;
        this.loaded = true;
        return { meta, keys: createRemoteJWKSet(new URL(meta.jwksUri), jwksOptions) };
      });
      this.metadata = attempt;
      // A failed discovery is retried by a later login, not cached forever.
      attempt.catch(() => {
        setTimeout(() => {
          if (this.metadata === attempt) this.metadata = undefined;
        }, this.options.retryAfterFailureMs ?? 2000).unref();
      });
    }
    return this.metadata;
  }

  async validate(token: string): Promise<TokenIdentity> {
    if (!looksLikeJwt(token)) throw new AuthError('bad_token', 'token is not a JWT');
    let header: ReturnType<typeof decodeProtectedHeader>;
    try {
      header = decodeProtectedHeader(token);
    } catch {
      throw new AuthError('bad_token', 'token header unreadable');
    }
    const { oauth } = this.options;
    const alg = typeof header.alg === 'string' ? header.alg : '';
    if (!(oauth.algorithms as readonly string[]).includes(alg)) {
      throw new AuthError('bad_algorithm', `token algorithm ${alg || '(none)'} not allowed`);
    }
    const { meta, keys } = await this.load();
    let payload: JWTPayload;
    try {
      const key = alg.startsWith('HS') ? this.secret : undefined;
      const verified = key
        ? await jwtVerify(token, key, this.verifyOptions(meta))
        : await jwtVerify(token, keys, this.verifyOptions(meta));
      payload = verified.payload;
    } catch (err) {
      throw classify(err);
    }
    this.checkAudience(payload);
    const { identity, claim } = identityFromClaims(payload, oauth.usernameClaims, this.options.masterSeparator);
    return {
      identity,
      claim,
      strategy: 'jwt',
      expiresAt: typeof payload.exp === 'number' ? new Date(payload.exp * 1000) : undefined,
      claims: payload,
    };
  }

  private verifyOptions(meta: IssuerMetadata) {
    return {
      issuer: meta.issuer,
      algorithms: [...this.options.oauth.algorithms],
      clockTolerance: this.options.oauth.clockSkewSeconds,
      requiredClaims: ['exp'],
    };
  }

  /** `aud` must contain one of the accepted audiences, or `azp` be one (Keycloak's shape). */
  private checkAudience(payload: JWTPayload): void {
    const aud = typeof payload.aud === 'string' ? [payload.aud] : Array.isArray(payload.aud) ? payload.aud : [];
    const azp = typeof payload['azp'] === 'string' ? payload['azp'] : undefined;
    const accepted = this.audiences.some((a) => aud.includes(a) || a === azp);
    if (!accepted) throw new AuthError('wrong_audience', 'token issued for another audience');
  }
}

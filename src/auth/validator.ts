/** What a validated token says about its holder. */
export interface TokenIdentity {
  /** The user name taken from the first present claim of `oauth.usernameClaims`. */
  identity: string;
  /** The claim the identity came from. */
  claim: string;
  /** Which strategy accepted the token. */
  strategy: 'jwt' | 'introspection' | 'userinfo';
  expiresAt: Date | undefined;
  claims: Record<string, unknown>;
}

/** The provider a validator asks, as the readiness page and the metrics see it. */
export interface ValidatorProvider {
  /** Runs discovery now, so the first login does not wait for it; resolves with the endpoints found. */
  warmUp(): Promise<{ issuer: string; jwksUri?: string | undefined; introspectionEndpoint?: string | undefined; userinfoEndpoint?: string | undefined }>;
  /** Asks the provider now, past every cache; rejects with the reason when it does not answer. */
  probe(): Promise<void>;
  /** Whether the provider's metadata and keys have been loaded. */
  isReady(): boolean;
  /** The circuit breaker's state now. */
  breakerState(): 'closed' | 'open' | 'half-open';
  /** The token cache's counters and size. */
  cacheStats(): { hits: number; misses: number; joined: number; size: number };
}

/**
 * Validates a bearer token. Resolves with the identity, or rejects with an AuthError whose code
 * says why (`expired`, `wrong_audience`, ...; `provider_unavailable` when it could not decide).
 */
export interface TokenValidator {
  validate(token: string): Promise<TokenIdentity>;
  /** Whether the provider's metadata and keys have been loaded. */
  isReady?(): boolean;
  /** The OpenID provider behind the validator, for readiness and metrics; absent for a validator without one. */
  providerStatus?(): ValidatorProvider;
}

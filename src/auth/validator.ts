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

/**
 * Validates a bearer token. Resolves with the identity, or rejects with an AuthError whose code
 * says why (`expired`, `wrong_audience`, ...; `provider_unavailable` when it could not decide).
 */
export interface TokenValidator {
  validate(token: string): Promise<TokenIdentity>;
  /** Whether the provider's metadata and keys have been loaded. */
  isReady?(): boolean;
}

/** What one validation strategy concluded about a token it could judge, or why it could not. */
export type StrategyOutcome =
  | {
      /** Verified claims about the token's holder. */
      claims: Record<string, unknown>;
      expiresAt: Date | undefined;
    }
  | { skip: string };

/**
 * One way to validate a bearer token. `check` resolves with the token's claims, or with `skip`
 * when this strategy cannot judge the token (an opaque token for `jwt`), and rejects with an
 * AuthError when the token is bad or the provider could not be asked.
 */
export interface Strategy {
  readonly name: 'jwt' | 'introspection' | 'userinfo';
  check(token: string): Promise<StrategyOutcome>;
}

import type { OAuthConfig } from '../config/schema.js';
import { AuthError } from '../errors.js';
import { acceptedAudiences, checkAudience, checkTokenType } from './claims.js';
import type { ProviderClient } from './provider.js';
import type { Strategy, StrategyOutcome } from './strategy.js';

/** RFC 7662: the provider says whether the token is active, for whom and for which client. */
export class IntrospectionStrategy implements Strategy {
  readonly name = 'introspection' as const;
  private readonly audiences: string[];

  constructor(
    private readonly oauth: OAuthConfig,
    private readonly provider: ProviderClient,
  ) {
    this.audiences = acceptedAudiences(oauth);
  }

  async check(token: string): Promise<StrategyOutcome> {
    const answer = await this.provider.introspect(token);
    if (answer.active !== true) throw new AuthError('inactive', 'the provider says the token is not active');
    if (typeof answer.exp === 'number' && answer.exp * 1000 < Date.now()) {
      throw new AuthError('expired', 'token expired');
    }
    const claims: Record<string, unknown> = { ...answer };
    // Keycloak introspects its ID tokens too, and says so in `typ`.
    checkTokenType({}, claims);
    checkAudience(claims, this.audiences, this.oauth.anyClientWithScope);
    return { claims, expiresAt: typeof answer.exp === 'number' ? new Date(answer.exp * 1000) : undefined };
  }
}

/**
 * The userinfo endpoint answers only for a token it accepts, so a 200 proves the token valid.
 * It cannot tell which client the token was issued for: the audience is not checked here.
 */
export class UserinfoStrategy implements Strategy {
  readonly name = 'userinfo' as const;

  constructor(private readonly provider: ProviderClient) {}

  async check(token: string): Promise<StrategyOutcome> {
    const claims = await this.provider.userinfo(token);
    if (!claims) throw new AuthError('bad_token', 'the provider refused the token at its userinfo endpoint');
    return { claims: { ...claims }, expiresAt: undefined };
  }
}

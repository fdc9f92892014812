import type { Logger } from 'pino';
import type { OAuthConfig } from '../config/schema.js';
import { AuthError } from '../errors.js';
import { TokenCache } from './cache.js';
import { checkRequirements } from './claims.js';
import { identityFromClaims, type IdentityRules } from './identity.js';
import { JwtStrategy } from './jwt.js';
import { ProviderClient } from './provider.js';
import { IntrospectionStrategy, UserinfoStrategy } from './remote.js';
import type { Strategy } from './strategy.js';
import { ValidationError } from './validation-error.js';
import type { TokenIdentity, TokenValidator, ValidatorProvider } from './validator.js';

/** One strategy's verdict, for `check-token` and for logs. */
export interface StrategyReport {
  strategy: Strategy['name'];
  verdict: 'accepted' | 'skipped' | 'rejected' | 'unavailable' | 'no identity';
  reason?: string;
  code?: string;
}

/**
 * Validates a token with the strategies of `oauth.validation`, in order. A strategy that cannot
 * judge the token (an opaque token for `jwt`) or whose claims name no user (a lightweight JWT)
 * passes it to the next; a definite rejection ends the search, and so does a provider failure,
 * which is answered as a temporary failure, never as a rejection.
 */
export class ChainValidator implements TokenValidator {
  readonly provider: ProviderClient;
  readonly cache: TokenCache;
  private readonly strategies: Strategy[];

  constructor(
    private readonly oauth: OAuthConfig,
    options: {
      masterSeparator: string;
      /** Accepted mail domains of identities (see acceptedDomains); default `oauth.allowedEmailDomains`. */
      domains?: readonly string[];
      fetch?: typeof fetch;
      log?: Logger;
      provider?: ProviderClient;
      /** Told how long each strategy took and what it concluded (for metrics). */
      onStrategy?: (strategy: Strategy['name'], seconds: number, verdict: StrategyReport['verdict']) => void;
    },
  ) {
    this.identityRules = {
      claims: oauth.usernameClaims,
      masterSeparator: options.masterSeparator,
      domains: options.domains ?? oauth.allowedEmailDomains,
    };
    this.onStrategy = options.onStrategy;
    this.provider = options.provider ?? new ProviderClient(oauth, options.fetch ? { fetch: options.fetch } : {});
    this.strategies = oauth.validation.map((name) => {
      if (name === 'jwt') return new JwtStrategy(oauth, this.provider);
      if (name === 'introspection') return new IntrospectionStrategy(oauth, this.provider);
      return new UserinfoStrategy(this.provider);
    });
    this.cache = new TokenCache({
      maxEntries: oauth.cache.maxEntries,
      maxTtlMs: oauth.cache.maxTtlSeconds * 1000,
      negativeTtlMs: oauth.cache.negativeTtlSeconds * 1000,
    });
  }

  private readonly identityRules: IdentityRules;
  private readonly onStrategy: ((strategy: Strategy['name'], seconds: number, verdict: StrategyReport['verdict']) => void) | undefined;

  isReady(): boolean {
    return this.provider.isReady();
  }

  /** The provider and the token cache, for readiness and the metrics. */
  providerStatus(): ValidatorProvider {
    return {
      warmUp: () => this.provider.warmUp(),
      probe: () => this.provider.probe(),
      isReady: () => this.provider.isReady(),
      breakerState: () => this.provider.breaker.state,
      cacheStats: () => ({ ...this.cache.stats, size: this.cache.size }),
    };
  }

  validate(token: string): Promise<TokenIdentity> {
    return this.cache.get(token, () => this.explain(token).then((r) => r.result));
  }

  /** Runs the strategies without the cache and reports what each one concluded. */
  async explain(token: string): Promise<{ result: TokenIdentity; reports: StrategyReport[] }> {
    const reports: StrategyReport[] = [];
    let verified: Record<string, unknown> = {};
    let noIdentity: AuthError | undefined;
    for (const strategy of this.strategies) {
      let outcome;
      const started = performance.now();
      const timed = (verdict: StrategyReport['verdict']) => this.onStrategy?.(strategy.name, (performance.now() - started) / 1000, verdict);
      try {
        outcome = await strategy.check(token);
      } catch (err) {
        timed(err instanceof AuthError && err.temporary ? 'unavailable' : 'rejected');
        const error = err instanceof AuthError ? err : new AuthError('provider_unavailable', String(err), { cause: err });
        if (error.temporary) {
          // Not passed on: a later strategy may check less (userinfo cannot check the audience),
          // and an outage must not make a token that one strategy could not judge acceptable.
          reports.push({ strategy: strategy.name, verdict: 'unavailable', reason: error.message, code: error.code });
          throw new ValidationError(error, reports);
        }
        reports.push({ strategy: strategy.name, verdict: 'rejected', reason: error.message, code: error.code });
        throw new ValidationError(error, reports);
      }
      timed('skip' in outcome ? 'skipped' : 'accepted');
      if ('skip' in outcome) {
        reports.push({ strategy: strategy.name, verdict: 'skipped', reason: outcome.skip });
        continue;
      }
      verified = { ...verified, ...outcome.claims };
      let identity;
      try {
        identity = identityFromClaims(verified, this.identityRules);
      } catch (err) {
        if (err instanceof AuthError && err.code === 'no_identity') {
          reports.push({ strategy: strategy.name, verdict: 'no identity', reason: err.message, code: err.code });
          noIdentity = err;
          continue;
        }
        if (err instanceof AuthError) {
          reports.push({ strategy: strategy.name, verdict: 'rejected', reason: err.message, code: err.code });
          throw new ValidationError(err, reports);
        }
        throw err;
      }
      try {
        checkRequirements(verified, this.oauth);
      } catch (err) {
        if (!(err instanceof AuthError)) throw err;
        reports.push({ strategy: strategy.name, verdict: 'rejected', reason: err.message, code: err.code });
        throw new ValidationError(err, reports);
      }
      reports.push({ strategy: strategy.name, verdict: 'accepted' });
      return {
        reports,
        result: { ...identity, strategy: strategy.name, expiresAt: outcome.expiresAt, claims: verified },
      };
    }
    const error =
      noIdentity ??
      new AuthError('bad_token', `no strategy could judge the token (${reports.map((r) => `${r.strategy}: ${r.reason}`).join('; ')})`);
    throw new ValidationError(error, reports);
  }
}

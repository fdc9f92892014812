import * as client from 'openid-client';
import { createRemoteJWKSet, customFetch as joseCustomFetch, type JWTVerifyGetKey } from 'jose';
import type { OAuthConfig } from '../config/schema.js';
import { AuthError } from '../errors.js';
import { CircuitBreaker } from './breaker.js';

/** The provider's endpoints as discovered, with configured overrides applied. */
export interface ProviderEndpoints {
  issuer: string;
  jwksUri: string | undefined;
  introspectionEndpoint: string | undefined;
  userinfoEndpoint: string | undefined;
}

interface Loaded {
  endpoints: ProviderEndpoints;
  configuration: client.Configuration;
  keys: JWTVerifyGetKey | undefined;
}

function isLoopbackHttp(url: URL): boolean {
  return url.protocol === 'http:' && ['localhost', '127.0.0.1', '[::1]'].includes(url.hostname);
}

/** Where the issuer's OpenID configuration is, for the RFC 7628 error challenge. */
export function openidConfigurationUrl(issuer: string): string {
  return `${issuer.replace(/\/$/, '')}/.well-known/openid-configuration`;
}

/** The reason of a failed provider call in one line, with its cause (e.g. ECONNREFUSED). */
export function describeError(err: unknown): string {
  if (!(err instanceof Error)) return String(err);
  const cause = err.cause instanceof Error ? `: ${err.cause.message}` : '';
  return `${err.message}${cause}`;
}

/**
 * RFC 6749 2.3.1 form-encodes the client id and secret before Base64, and servers that follow it
 * (oidc-provider, Keycloak) decode them; Authentik compares them raw. Unreserved characters
 * (RFC 3986: letters, digits, `-._~`) read the same either way, so they go as they are; anything
 * else is percent-encoded, which only a decoding server can accept (no choice suits both).
 */
export function basicCredential(value: string): string {
  return encodeURIComponent(value).replace(/[!'()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`);
}

/** The `Authorization: Basic` value for a client id and secret, encoded as {@link basicCredential} says. */
export function basicAuthorization(clientId: string, clientSecret: string): string {
  return `Basic ${Buffer.from(`${basicCredential(clientId)}:${basicCredential(clientSecret)}`).toString('base64')}`;
}

/** `client_secret_basic` that both decoding and raw-reading servers accept for unreserved characters. */
function clientSecretBasic(clientSecret: string | undefined): client.ClientAuth {
  return (_server, metadata, _body, headers) => {
    headers.set('authorization', basicAuthorization(metadata.client_id, clientSecret ?? ''));
  };
}

/**
 * Everything sasl-gate asks of the OpenID provider: discovery (once, retried after a failure),
 * the signing keys, introspection and userinfo. Calls go through one circuit breaker and have
 * timeouts; Node's fetch keeps connections alive between them.
 */
export class ProviderClient {
  private loading: Promise<Loaded> | undefined;
  private loadedOnce = false;
  readonly breaker: CircuitBreaker;

  constructor(
    private readonly oauth: OAuthConfig,
    private readonly options: { fetch?: typeof fetch; retryAfterFailureMs?: number } = {},
  ) {
    this.breaker = new CircuitBreaker({
      failureThreshold: oauth.breaker.failureThreshold,
      openMs: oauth.breaker.openSeconds * 1000,
    });
  }

  /** Whether discovery has succeeded at least once. */
  isReady(): boolean {
    return this.loadedOnce;
  }

  /** Discovery result; loads it on first use. */
  async endpoints(): Promise<ProviderEndpoints> {
    return (await this.load()).endpoints;
  }

  /** The issuer's signing keys (cached; an unknown `kid` refetches at most once per cooldown). */
  async keys(): Promise<JWTVerifyGetKey> {
    const { keys } = await this.load();
    if (!keys) throw new AuthError('provider_unavailable', 'the provider publishes no jwks_uri; set oauth.jwksUri');
    return keys;
  }

  /** RFC 7662 introspection with the configured client authentication. */
  async introspect(token: string): Promise<client.IntrospectionResponse> {
    const { configuration, endpoints } = await this.load();
    if (!endpoints.introspectionEndpoint) {
      throw new AuthError('provider_unavailable', 'the provider has no introspection endpoint; set oauth.introspectionEndpoint');
    }
    return this.breaker.run('introspection', async () => {
      try {
        return await client.tokenIntrospection(configuration, token, { token_type_hint: 'access_token' });
      } catch (err) {
        throw new AuthError('provider_unavailable', `introspection failed: ${describeError(err)}`, { cause: err });
      }
    });
  }

  /**
   * The userinfo claims for a token; undefined when the provider says the token is not valid
   * (401), a temporary failure for anything else that went wrong.
   */
  async userinfo(token: string): Promise<client.UserInfoResponse | undefined> {
    const { configuration, endpoints } = await this.load();
    if (!endpoints.userinfoEndpoint) {
      throw new AuthError('provider_unavailable', 'the provider has no userinfo endpoint; set oauth.userinfoEndpoint');
    }
    return this.breaker.run('userinfo', async () => {
      try {
        return await client.fetchUserInfo(configuration, token, client.skipSubjectCheck);
      } catch (err) {
        const status = (err as { status?: number }).status;
        if (err instanceof client.WWWAuthenticateChallengeError && (status === 401 || status === 403)) return undefined;
        throw new AuthError('provider_unavailable', `userinfo failed: ${describeError(err)}`, { cause: err });
      }
    });
  }

  /**
   * Asks the provider now, past every cache, for its discovery document and signing keys: a
   * readiness probe. Rejects with the reason when either does not answer 2xx in time.
   */
  async probe(): Promise<void> {
    const { jwksUri } = await this.endpoints();
    const get = this.options.fetch ?? fetch;
    for (const url of [openidConfigurationUrl(this.oauth.issuer), jwksUri]) {
      if (url === undefined) continue;
      let status: number;
      try {
        const response = await get(url, { signal: AbortSignal.timeout(this.oauth.requestTimeoutSeconds * 1000) });
        status = response.status;
        await response.arrayBuffer();
      } catch (err) {
        throw new AuthError('provider_unavailable', `${url}: ${describeError(err)}`, { cause: err });
      }
      if (status < 200 || status > 299) throw new AuthError('provider_unavailable', `${url} answered HTTP ${status}`);
    }
  }

  /** Runs discovery now, so the first login does not wait for it. */
  async warmUp(): Promise<ProviderEndpoints> {
    return this.endpoints();
  }

  private load(): Promise<Loaded> {
    if (!this.loading) {
      const attempt = this.breaker.run('discovery', () => this.discover());
      this.loading = attempt;
      attempt.then(
        () => (this.loadedOnce = true),
        () =>
          setTimeout(() => {
            if (this.loading === attempt) this.loading = undefined;
          }, this.options.retryAfterFailureMs ?? 2000).unref(),
      );
    }
    return this.loading;
  }

  private async discover(): Promise<Loaded> {
    const oauth = this.oauth;
    const issuerUrl = new URL(oauth.issuer);
    const insecure = isLoopbackHttp(issuerUrl);
    const options: client.DiscoveryRequestOptions = { timeout: oauth.requestTimeoutSeconds };
    if (insecure) options.execute = [client.allowInsecureRequests];
    if (this.options.fetch) options[client.customFetch] = this.options.fetch as client.CustomFetch;
    let discovered: client.Configuration;
    try {
      discovered = await client.discovery(issuerUrl, oauth.clientId ?? 'sasl-gate', undefined, undefined, options);
    } catch (err) {
      throw new AuthError('provider_unavailable', `OpenID discovery at ${oauth.issuer} failed: ${describeError(err)}`, {
        cause: err,
      });
    }
    const metadata = { ...discovered.serverMetadata() };
    if (oauth.jwksUri) metadata.jwks_uri = oauth.jwksUri;
    if (oauth.introspectionEndpoint) metadata.introspection_endpoint = oauth.introspectionEndpoint;
    if (oauth.userinfoEndpoint) metadata.userinfo_endpoint = oauth.userinfoEndpoint;
    const authentication =
      oauth.clientAuthMethod === 'client_secret_post'
        ? client.ClientSecretPost(oauth.clientSecret)
        : clientSecretBasic(oauth.clientSecret);
    const configuration = new client.Configuration(metadata, oauth.clientId ?? 'sasl-gate', undefined, authentication);
    configuration.timeout = oauth.requestTimeoutSeconds;
    if (insecure) client.allowInsecureRequests(configuration);
    if (this.options.fetch) configuration[client.customFetch] = this.options.fetch as client.CustomFetch;

    let keys: JWTVerifyGetKey | undefined;
    if (metadata.jwks_uri) {
      const jwksOptions: Parameters<typeof createRemoteJWKSet>[1] = {
        timeoutDuration: oauth.requestTimeoutSeconds * 1000,
        cooldownDuration: oauth.jwksRefetchCooldownSeconds * 1000,
        cacheMaxAge: 10 * 60_000,
      };
      if (this.options.fetch) jwksOptions[joseCustomFetch] = this.options.fetch;
      keys = createRemoteJWKSet(new URL(metadata.jwks_uri), jwksOptions);
    }
    return {
      configuration,
      keys,
      endpoints: {
        issuer: metadata.issuer,
        jwksUri: metadata.jwks_uri,
        introspectionEndpoint: metadata.introspection_endpoint,
        userinfoEndpoint: metadata.userinfo_endpoint,
      },
    };
  }
}

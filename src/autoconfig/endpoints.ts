import { openidConfigurationUrl } from '../auth/provider.js';
import { isLoopbackHost, type AutoconfigConfig } from '../config/schema.js';
import { AuthError } from '../errors.js';
import type { OAuthEndpoints } from './documents.js';

/** How long a discovered pair of endpoints is reused. */
const CACHE_MS = 10 * 60 * 1000;

/** Reads `authorization_endpoint` and `token_endpoint` from an OpenID discovery document. */
export function endpointsFromDiscovery(document: unknown, issuer: string): OAuthEndpoints {
  const d = (document ?? {}) as Record<string, unknown>;
  if (d['issuer'] !== issuer) throw new AuthError('provider_unavailable', `the discovery document names issuer ${String(d['issuer']).slice(0, 200)}, not ${issuer}`);
  const authorization = d['authorization_endpoint'];
  const token = d['token_endpoint'];
  if (typeof authorization !== 'string' || typeof token !== 'string') {
    throw new AuthError('provider_unavailable', 'the discovery document has no authorization_endpoint or token_endpoint');
  }
  for (const url of [authorization, token]) {
    if (!URL.canParse(url)) throw new AuthError('provider_unavailable', `the discovery document's endpoint ${url.slice(0, 200)} is not a URL`);
    // Published to every mail app: https only (plain http for a provider on the loopback address).
    const { protocol, hostname } = new URL(url);
    if (!(protocol === 'https:' || (protocol === 'http:' && isLoopbackHost(hostname.replace(/^\[|\]$/g, ''))))) {
      throw new AuthError('provider_unavailable', `the discovery document's endpoint ${url.slice(0, 200)} is not an https:// URL`);
    }
  }
  return { authorizationEndpoint: authorization, tokenEndpoint: token };
}

/**
 * The endpoints mail apps sign in at: `autoconfig.authorizationEndpoint` / `tokenEndpoint` when
 * both are set, else the provider's discovery document, fetched with a deadline and kept a while.
 */
export class OAuthEndpointSource {
  private cached: { endpoints: OAuthEndpoints; until: number } | undefined;
  private loading: Promise<OAuthEndpoints> | undefined;

  constructor(
    private readonly issuer: string,
    private readonly autoconfig: AutoconfigConfig,
    private readonly options: { fetch?: typeof fetch; timeoutSeconds?: number; now?: () => number } = {},
  ) {}

  /** The endpoints; rejects with a temporary `AuthError` when the provider cannot say. */
  async get(): Promise<OAuthEndpoints> {
    const { authorizationEndpoint, tokenEndpoint } = this.autoconfig;
    if (authorizationEndpoint !== undefined && tokenEndpoint !== undefined) return { authorizationEndpoint, tokenEndpoint };
    const now = (this.options.now ?? Date.now)();
    if (this.cached && this.cached.until > now) return this.cached.endpoints;
    this.loading ??= this.discover().finally(() => (this.loading = undefined));
    const discovered = await this.loading;
    return {
      authorizationEndpoint: authorizationEndpoint ?? discovered.authorizationEndpoint,
      tokenEndpoint: tokenEndpoint ?? discovered.tokenEndpoint,
    };
  }

  private async discover(): Promise<OAuthEndpoints> {
    const doFetch = this.options.fetch ?? fetch;
    const url = openidConfigurationUrl(this.issuer);
    let document: unknown;
    let status: number;
    try {
      const response = await doFetch(url, { signal: AbortSignal.timeout((this.options.timeoutSeconds ?? 5) * 1000), headers: { accept: 'application/json' } });
      status = response.status;
      document = response.ok ? await response.json() : undefined;
    } catch (err) {
      throw new AuthError('provider_unavailable', `GET ${url}: ${(err as Error).message}`, { cause: err });
    }
    if (document === undefined) throw new AuthError('provider_unavailable', `GET ${url}: HTTP ${status}`);
    const endpoints = endpointsFromDiscovery(document, this.issuer);
    this.cached = { endpoints, until: (this.options.now ?? Date.now)() + CACHE_MS };
    return endpoints;
  }
}

/**
 * The autoconfiguration routes of the portal listener, answered without a sign-in: Thunderbird's
 * `config-v1.1.xml` (at the well-known path a domain serves and at the `autoconfig.<domain>` path)
 * and the PACC document. Public documents: cacheable, readable from any origin, no cookies.
 */
import type { Logger } from 'pino';
import { paccDocument, requestedDomain, thunderbirdConfigXml, type AutoconfigSettings, type OAuthEndpoints } from '../autoconfig/documents.js';
import type { PortalRequest, PortalResponse } from './app.js';

/** The paths Thunderbird asks (RFC-less, but fixed by its account setup). */
export const THUNDERBIRD_PATHS = ['/.well-known/autoconfig/mail/config-v1.1.xml', '/mail/config-v1.1.xml'] as const;
/** The well-known path of draft-ietf-mailmaint-pacc. */
export const PACC_PATH = '/.well-known/user-agent-configuration.json';

/** What the routes need. */
export interface AutoconfigRouteSettings {
  settings: AutoconfigSettings;
  /** The provider's endpoints, for the `<oAuth2>` block; rejects when the provider cannot say. */
  endpoints: () => Promise<OAuthEndpoints>;
  cacheSeconds: number;
  log: Logger;
}

/** Answers an autoconfiguration request, or undefined for any other path. */
export type AutoconfigRoutes = (request: PortalRequest) => Promise<PortalResponse | undefined>;

function publicHeaders(contentType: string, cacheSeconds: number): Record<string, string> {
  return {
    'content-type': contentType,
    'cache-control': cacheSeconds > 0 ? `public, max-age=${cacheSeconds}` : 'no-cache',
    'access-control-allow-origin': '*',
    'x-content-type-options': 'nosniff',
    'strict-transport-security': 'max-age=31536000',
    'content-security-policy': "default-src 'none'; frame-ancestors 'none'",
  };
}

function plain(status: number, text: string, extra: Record<string, string> = {}): PortalResponse {
  return {
    status,
    headers: { 'content-type': 'text/plain; charset=utf-8', 'cache-control': 'no-store', 'x-content-type-options': 'nosniff', ...extra },
    body: `${text}\n`,
  };
}

/** Builds the routes; paths are matched at the root and under `base` (the path of `portal.publicUrl`). */
export function autoconfigRoutes(options: AutoconfigRouteSettings, base = ''): AutoconfigRoutes {
  const { settings, cacheSeconds, log } = options;
  const pacc = paccDocument(settings);
  const strip = (path: string) => (base !== '' && path.startsWith(`${base}/`) ? path.slice(base.length) : path);
  const wantsOAuth = settings.clientId !== undefined;

  return async (request) => {
    const url = new URL(request.url, 'https://portal.invalid');
    const path = strip(url.pathname);
    const isThunderbird = (THUNDERBIRD_PATHS as readonly string[]).includes(path);
    if (!isThunderbird && path !== PACC_PATH) return undefined;
    const method = request.method.toUpperCase();
    if (method !== 'GET' && method !== 'HEAD') return plain(405, 'only GET is answered here', { allow: 'GET, HEAD' });

    if (path === PACC_PATH) return { status: 200, headers: publicHeaders('application/json', cacheSeconds), body: pacc };

    const address = url.searchParams.get('emailaddress');
    let domain: string | undefined;
    if (address !== null) {
      domain = requestedDomain(address, settings.domains);
      if (domain === undefined) return plain(404, 'no configuration for this address');
    }
    let endpoints: OAuthEndpoints | undefined;
    if (wantsOAuth) {
      try {
        endpoints = await options.endpoints();
      } catch (err) {
        // Without the endpoints the document would offer no OAuth; a client must not cache that.
        log.warn({ err: (err as Error).message }, 'autoconfig: the provider\'s endpoints are unknown');
        return plain(503, 'the sign-in provider cannot be reached just now; try again in a minute', { 'retry-after': '60' });
      }
    }
    return {
      status: 200,
      headers: publicHeaders('application/xml; charset=utf-8', cacheSeconds),
      body: thunderbirdConfigXml(settings, endpoints, domain),
    };
  };
}

import * as client from 'openid-client';
import { basicAuthorization, describeError } from '../auth/provider.js';
import { GateError } from '../errors.js';

/** What a sign-in at the provider yields: the user's claims and when they last proved themselves. */
export interface SignInResult {
  claims: Record<string, unknown>;
  /** The ID token's `auth_time`, seconds; undefined when the provider did not say. */
  authTime: number | undefined;
}

/** The provider as the page needs it: where to send the browser, and what came back. */
export interface SignInClient {
  /** The provider's authorization URL for a sign-in with these checks. */
  authorizationUrl(request: { state: string; nonce: string; verifier: string; maxAge: number | undefined }): Promise<URL>;
  /**
   * Exchanges the code of the callback URL (with PKCE) and checks the ID token (signature, issuer,
   * audience, nonce, `max_age`); the claims are the ID token's, completed from userinfo when it
   * names nobody.
   */
  complete(callbackUrl: URL, checks: { state: string; nonce: string; verifier: string; maxAge: number | undefined }): Promise<SignInResult>;
  /** Origins the browser is sent to for a sign-in (for the page's `form-action`). */
  origins(): string[];
}

/** Settings of {@link openIdSignIn}. */
export interface OpenIdSignInSettings {
  issuer: string;
  clientId: string;
  clientSecret: string | undefined;
  redirectUri: string;
  scope: string;
  timeoutSeconds: number;
  /** Claims that name the user: when the ID token carries none, userinfo is asked. */
  usernameClaims: readonly string[];
  fetch?: typeof fetch;
}

function isLoopbackHttp(url: URL): boolean {
  return url.protocol === 'http:' && ['localhost', '127.0.0.1', '[::1]'].includes(url.hostname);
}

/** The page's sign-in through openid-client: discovery (retried after a failure), code flow with PKCE S256. */
export function openIdSignIn(settings: OpenIdSignInSettings): SignInClient {
  const issuerUrl = new URL(settings.issuer);
  const insecure = isLoopbackHttp(issuerUrl);
  let loading: Promise<client.Configuration> | undefined;
  let authorizationOrigin: string | undefined;
  const authentication: client.ClientAuth =
    settings.clientSecret === undefined
      ? client.None()
      : (_server, metadata, _body, headers) => {
          headers.set('authorization', basicAuthorization(metadata.client_id, settings.clientSecret!));
        };

  const configuration = (): Promise<client.Configuration> => {
    if (!loading) {
      const options: client.DiscoveryRequestOptions = { timeout: settings.timeoutSeconds };
      if (insecure) options.execute = [client.allowInsecureRequests];
      if (settings.fetch) options[client.customFetch] = settings.fetch as client.CustomFetch;
      const attempt = client.discovery(issuerUrl, settings.clientId, undefined, authentication, options).then((config) => {
        config.timeout = settings.timeoutSeconds;
        const endpoint = config.serverMetadata().authorization_endpoint;
        if (endpoint) authorizationOrigin = new URL(endpoint).origin;
        return config;
      });
      loading = attempt;
      attempt.catch(() => {
        if (loading === attempt) loading = undefined;
      });
    }
    return loading.catch((err: unknown) => {
      throw new GateError('provider_unavailable', `OpenID discovery at ${settings.issuer} failed: ${describeError(err)}`, { temporary: true, cause: err });
    });
  };

  return {
    async authorizationUrl({ state, nonce, verifier, maxAge }) {
      const config = await configuration();
      const parameters: Record<string, string> = {
        redirect_uri: settings.redirectUri,
        scope: settings.scope,
        response_type: 'code',
        code_challenge: await client.calculatePKCECodeChallenge(verifier),
        code_challenge_method: 'S256',
        state,
        nonce,
      };
      if (maxAge !== undefined) parameters['max_age'] = String(maxAge);
      return client.buildAuthorizationUrl(config, parameters);
    },

    async complete(callbackUrl, { state, nonce, verifier, maxAge }) {
      const config = await configuration();
      const tokens = await client.authorizationCodeGrant(config, callbackUrl, {
        expectedState: state,
        expectedNonce: nonce,
        pkceCodeVerifier: verifier,
        idTokenExpected: true,
        ...(maxAge !== undefined ? { maxAge } : {}),
      });
      const idClaims = tokens.claims();
      if (!idClaims) throw new GateError('no_id_token', 'the provider returned no ID token');
      let claims: Record<string, unknown> = { ...idClaims };
      const namesUser = settings.usernameClaims.some((c) => typeof claims[c] === 'string' && claims[c] !== '');
      if (!namesUser && config.serverMetadata().userinfo_endpoint) {
        // Providers that keep profile claims out of the ID token (oidc-provider by default) give them here.
        const info = await client.fetchUserInfo(config, tokens.access_token, idClaims.sub);
        claims = { ...info, ...idClaims, ...Object.fromEntries(settings.usernameClaims.filter((c) => c in info).map((c) => [c, info[c]])) };
        if ('email_verified' in info) claims['email_verified'] = info['email_verified'];
      }
      return { claims, authTime: typeof idClaims.auth_time === 'number' ? idClaims.auth_time : undefined };
    },

    origins() {
      return [...new Set([issuerUrl.origin, ...(authorizationOrigin ? [authorizationOrigin] : [])])];
    },
  };
}

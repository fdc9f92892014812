/**
 * The OpenID provider for the token helper, through openid-client: discovery, the device
 * authorization grant (RFC 8628), the authorization code flow with PKCE and a loopback
 * redirect on a random port (RFC 8252), and refresh. The client is public: no secret.
 */
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import * as client from 'openid-client';
import { TokenHelperError, type DevicePrompt, type TokenEndpoints, type TokenSet } from './flow.js';

/** Options of {@link openidEndpoints}. */
export interface ProviderOptions {
  issuer: URL;
  clientId: string;
  scope: string;
  /** Sent as `login_hint` in the browser flow. */
  loginHint: string | undefined;
  /** Seconds each request to the provider may take. */
  timeoutSeconds: number;
  /** How long a browser sign-in may take before giving up. */
  browserWaitSeconds: number;
  /** Seconds since the epoch. */
  now: () => number;
}

/** Loopback hosts, where plain HTTP to a provider is allowed (development providers). */
export function isLoopbackHost(hostname: string): boolean {
  return hostname === 'localhost' || hostname === '[::1]' || /^127(\.\d{1,3}){3}$/.test(hostname);
}

/** Discovers the provider; resolves to the helper's view of it. */
export async function openidEndpoints(o: ProviderOptions): Promise<TokenEndpoints> {
  let config: client.Configuration;
  try {
    config = await client.discovery(o.issuer, o.clientId, undefined, client.None(), {
      timeout: o.timeoutSeconds,
      ...(o.issuer.protocol === 'http:' ? { execute: [client.allowInsecureRequests] } : {}),
    });
  } catch (err) {
    throw classify(err, `cannot read the provider's configuration at ${o.issuer.href}`);
  }
  // Plain HTTP is allowed for a development provider on this machine, never for a host beyond it.
  const metadata = config.serverMetadata();
  for (const name of ['authorization_endpoint', 'token_endpoint', 'device_authorization_endpoint'] as const) {
    const endpoint = metadata[name];
    if (endpoint === undefined) continue;
    const url = URL.canParse(endpoint) ? new URL(endpoint) : undefined;
    if (!url || !(url.protocol === 'https:' || (url.protocol === 'http:' && isLoopbackHost(url.hostname)))) {
      throw new TokenHelperError('provider_unavailable', `the provider's configuration names its ${name} ${printable(endpoint)}: only https:// (or http:// on this machine) is used`);
    }
  }
  const tokenSet = (tokens: client.TokenEndpointResponse & client.TokenEndpointResponseHelpers): TokenSet => {
    const expiresIn = tokens.expiresIn();
    const email = tokens.claims()?.['email'];
    return {
      accessToken: tokens.access_token,
      expiresAt: expiresIn === undefined ? undefined : o.now() + expiresIn,
      refreshToken: tokens.refresh_token,
      signedInAs: typeof email === 'string' ? email : undefined,
    };
  };

  return {
    async refresh(refreshToken) {
      try {
        return tokenSet(await client.refreshTokenGrant(config, refreshToken));
      } catch (err) {
        throw classify(err, 'refreshing the token failed');
      }
    },

    async signInWithDevice(show: (prompt: DevicePrompt) => void) {
      if (!config.serverMetadata().device_authorization_endpoint) {
        throw new TokenHelperError('refused', 'the provider offers no device sign-in (device_authorization_endpoint): use --browser');
      }
      let started: client.DeviceAuthorizationResponse;
      try {
        started = await client.initiateDeviceAuthorization(config, { scope: o.scope });
      } catch (err) {
        throw classify(err, 'the provider did not start a device sign-in');
      }
      show({
        verificationUri: started.verification_uri,
        verificationUriComplete: started.verification_uri_complete,
        userCode: started.user_code,
        expiresInSeconds: started.expires_in,
      });
      try {
        return tokenSet(await client.pollDeviceAuthorizationGrant(config, started));
      } catch (err) {
        throw classify(err, 'the device sign-in did not finish');
      }
    },

    async signInWithBrowser(show: (url: string) => void) {
      const redirect = await LoopbackRedirect.listen();
      try {
        const verifier = client.randomPKCECodeVerifier();
        const state = client.randomState();
        const url = client.buildAuthorizationUrl(config, {
          redirect_uri: redirect.uri,
          scope: o.scope,
          code_challenge: await client.calculatePKCECodeChallenge(verifier),
          code_challenge_method: 'S256',
          state,
          // Most providers issue a refresh token to a browser sign-in only after an explicit consent.
          ...(o.scope.split(' ').includes('offline_access') ? { prompt: 'consent' } : {}),
          ...(o.loginHint ? { login_hint: o.loginHint } : {}),
        });
        show(url.href);
        const callback = await redirect.next(state, o.browserWaitSeconds * 1000);
        try {
          const tokens = await client.authorizationCodeGrant(config, callback.url, {
            pkceCodeVerifier: verifier,
            expectedState: state,
          });
          callback.answer(200, 'Signed in: you can close this window and return to the terminal.');
          return tokenSet(tokens);
        } catch (err) {
          const failure = classify(err, 'the browser sign-in failed');
          callback.answer(failure.code === 'provider_unavailable' ? 502 : 400, `Sign-in failed: ${failure.message}`);
          throw failure;
        }
      } finally {
        await redirect.close();
      }
    },
  };
}

/** The one-shot HTTP listener on 127.0.0.1 that receives the browser's redirect. */
class LoopbackRedirect {
  private pending: { state: string; deliver: (request: { url: URL; answer: (status: number, text: string) => void }) => void } | undefined;

  private constructor(
    private readonly server: http.Server,
    readonly uri: string,
  ) {
    server.on('request', (req, res) => {
      const url = new URL(req.url ?? '/', uri);
      const answer = (status: number, text: string) => {
        res.writeHead(status, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store' });
        res.end(`<!doctype html><meta charset="utf-8"><title>sasl-gate token</title><p>${escapeHtml(text)}</p>\n`);
      };
      // Browsers also ask for /favicon.ico and the like; only the redirect counts.
      if (url.pathname !== '/callback' || !this.pending) {
        answer(404, 'Not found.');
        return;
      }
      // Any web page can send a browser here: a redirect without this sign-in's state is not
      // its answer, and must neither end the sign-in nor reach the provider (CSRF, RFC 6749 10.12).
      if (url.searchParams.get('state') !== this.pending.state) {
        answer(400, 'This is not the sign-in sasl-gate token started; it keeps waiting for that one.');
        return;
      }
      const { deliver } = this.pending;
      this.pending = undefined;
      deliver({ url, answer });
    });
  }

  static async listen(): Promise<LoopbackRedirect> {
    const server = http.createServer();
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen({ host: '127.0.0.1', port: 0 }, () => {
        server.off('error', reject);
        resolve();
      });
    });
    const { port } = server.address() as AddressInfo;
    return new LoopbackRedirect(server, `http://127.0.0.1:${port}/callback`);
  }

  /** The first redirect that carries `state`; others are answered and ignored. */
  next(state: string, timeoutMs: number): Promise<{ url: URL; answer: (status: number, text: string) => void }> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending = undefined;
        reject(new TokenHelperError('refused', `the sign-in did not finish within ${Math.round(timeoutMs / 60_000)} minutes`));
      }, timeoutMs);
      this.pending = {
        state,
        deliver: (request) => {
          clearTimeout(timer);
          resolve(request);
        },
      };
    });
  }

  close(): Promise<void> {
    return new Promise((resolve) => {
      this.server.close(() => resolve());
      this.server.closeAllConnections();
    });
  }
}

/**
 * The provider's answers by what they mean for the caller: an OAuth error from the provider
 * (`invalid_grant`, `access_denied`, `expired_token`, ...) is a refusal; anything about reaching
 * it (refused connection, timeout, HTTP 5xx, an answer that is no OAuth response) is temporary.
 */
export function classify(err: unknown, doing: string): TokenHelperError {
  if (err instanceof TokenHelperError) return err;
  if (err instanceof client.ResponseBodyError) {
    if (err.status >= 500) return new TokenHelperError('provider_unavailable', `${doing}: the provider answered HTTP ${err.status}`, { cause: err });
    const description = err.error_description ? ` (${printable(err.error_description)})` : '';
    return new TokenHelperError('refused', `${doing}: ${printable(err.error)}${description}`, { cause: err });
  }
  if (err instanceof client.AuthorizationResponseError) {
    return new TokenHelperError('refused', `${doing}: ${printable(err.error)}`, { cause: err });
  }
  return new TokenHelperError('provider_unavailable', `${doing}: ${describeCause(err)}`, { cause: err });
}

/** The innermost useful reason of a network failure (`ECONNREFUSED`, a timeout). */
function describeCause(err: unknown): string {
  let reason = err instanceof Error ? err.message : String(err);
  let current: unknown = err;
  for (let depth = 0; depth < 5 && current instanceof Error; depth += 1) {
    const code = (current as NodeJS.ErrnoException).code;
    if (typeof code === 'string' && /^E[A-Z]+$/.test(code)) return `${reason} (${code})`;
    if (current.name === 'TimeoutError' || current.name === 'AbortError') return 'the provider did not answer in time';
    current = current.cause;
    if (current instanceof Error && current.message) reason = current.message;
  }
  return reason;
}

/** Provider-chosen text, kept to one printable line. */
function printable(text: string): string {
  return text.replace(/[^\x20-\x7e]/g, '?').slice(0, 200);
}

function escapeHtml(text: string): string {
  return text.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

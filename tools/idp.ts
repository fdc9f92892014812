/**
 * A development OpenID provider: the real `oidc-provider` on a loopback port with a fixed
 * user list, one confidential client, RS256 JWT (or opaque) access tokens, introspection,
 * revocation, userinfo and a development grant that hands out a token for a named user
 * without a browser. Optionally a web client, and a public client for command-line token
 * helpers (device flow, PKCE, rotating refresh tokens) whose sign-ins a test completes over
 * HTTP. Tests can rotate its signing key, count the calls it receives and make
 * it fail like a provider in trouble. Integration tests, the demo and the load harness use
 * it; it has no place in production (anyone holding the client secret can get a token for
 * any listed user).
 */
import {
  createHmac,
  createPrivateKey,
  createPublicKey,
  randomBytes,
  type JsonWebKey,
  type KeyObject,
} from 'node:crypto';
import * as http from 'node:http';
import * as https from 'node:https';
import { isIP, type AddressInfo, type Socket } from 'node:net';
import {
  SignJWT,
  UnsecuredJWT,
  calculateJwkThumbprint,
  createLocalJWKSet,
  decodeProtectedHeader,
  exportJWK,
  generateKeyPair,
  jwtVerify,
  type CryptoKey,
  type JWK,
} from 'jose';
import type {
  AccessToken,
  Adapter,
  Configuration,
  GrantContext,
  Provider,
  ProviderClient,
  ResourceServerInfo,
  StructuredToken,
} from 'oidc-provider';

/** A user the development IdP knows. */
export interface DevIdpUser {
  /** Account id, the tokens' `sub`. */
  id: string;
  email: string;
  /** Defaults to `id`. */
  preferredUsername?: string;
  name?: string;
}

/** `jwt`: RFC 9068 JWTs anyone can verify with the JWKS; `opaque`: handles only the provider can resolve. */
export type AccessTokenFormat = 'jwt' | 'opaque';

/** Options of {@link startDevIdp}. */
export interface DevIdpOptions {
  users: DevIdpUser[];
  /** Interface to listen on; default 127.0.0.1. */
  host?: string;
  /** Default 0: a free port. */
  port?: number;
  /** Default `mail`. */
  clientId?: string;
  /** Default: random. */
  clientSecret?: string;
  /**
   * Serve HTTPS with these PEMs. `ca` is the PEM of the authority that issued `cert`; the IdP
   * calls its own token endpoint when minting and needs to trust it (default: `cert` itself).
   */
  https?: { cert: string; key: string; ca?: string };
  /** `aud` of access tokens; default = client id. */
  audience?: string;
  /** Redirect URIs of the client for browser flows; loopback ones accept any port. */
  redirectUris?: string[];
  /** Lifetime of access tokens unless asked otherwise; default 3600 s. */
  accessTokenTtlSeconds?: number;
  /**
   * Format of access tokens unless a mint asks otherwise; default `jwt`. With `opaque`, browser
   * flows without a `resource` parameter get tokens for the userinfo endpoint (no `aud`).
   */
  accessTokenFormat?: AccessTokenFormat;
  /**
   * A second client, for a web sign-in page such as sasl-gate's portal: authorization code with
   * PKCE to these redirect URIs, `auth_time` in every ID token. Users sign in on the provider's
   * development login page (any password; the login is a user id or address of `users`).
   */
  webClient?: { clientId: string; clientSecret?: string; redirectUris: string[] };
  /**
   * A public client (no secret), as a command-line token helper or a mail app registers: the
   * device authorization grant (RFC 8628), authorization code with PKCE to loopback redirects
   * on any port (RFC 8252), and refresh tokens with `offline_access`, rotated on every use.
   * Its access tokens are JWTs for its own client id (not `audience`), carrying
   * {@link MAIL_SCOPE} when asked for it, like a public or dynamically registered client gets.
   */
  publicClient?: { clientId: string; accessTokenTtlSeconds?: number };
}

/** Options of {@link DevIdp.mintAccessToken}. */
export interface MintOptions {
  /** User id or email. */
  user: string;
  /**
   * Default: the IdP's audience for JWTs, none for opaque tokens (the provider's userinfo
   * endpoint only accepts tokens without audience, so an opaque token with one is for
   * introspection only).
   */
  audience?: string;
  ttlSeconds?: number;
  /** Default `openid email profile`. */
  scope?: string;
  /** Default: the IdP's `accessTokenFormat`, or `jwt` when `lightweight`. */
  format?: AccessTokenFormat;
  /**
   * A JWT without user claims, like Keycloak's lightweight access tokens: only introspection
   * (or userinfo) tells who the user is.
   */
  lightweight?: boolean;
}

/** Options of {@link DevIdp.signToken}. */
export interface SignOptions {
  /** Default: the provider key's kid (also for `public-as-secret`), a random one for a foreign key, none with `secret`. */
  kid?: string;
  /** Default RS256 (HS256 with `secret` or `public-as-secret`); `none` produces an unsigned token. */
  alg?: string;
  /**
   * `provider`: the current key published in the JWKS (default); `foreign`: a key nobody
   * publishes; `public-as-secret`: HMAC with the provider's public key PEM (SPKI) as secret,
   * the algorithm-confusion attack.
   */
  key?: 'provider' | 'foreign' | 'public-as-secret';
  /** HMAC secret for HS256/384/512, e.g. the client secret as Authentik uses it without a signing key. */
  secret?: string;
  /** JWS `typ` header; default `at+jwt` like the provider's own access tokens. */
  typ?: string;
}

/** A provider endpoint whose calls are counted and can be made to fail. */
export type DevIdpEndpoint = 'discovery' | 'jwks' | 'token' | 'introspection' | 'userinfo' | 'revocation';

/**
 * `down`: connections refused (for some endpoints only: connections dropped); `hang`: requests
 * accepted and never answered; `http500`: a 500 with a JSON error; `garbage`: a 200 claiming
 * JSON that is not.
 */
export type DevIdpFault = 'down' | 'hang' | 'http500' | 'garbage';

/** Options of {@link DevIdp.setFault}. */
export interface FaultOptions {
  /** Default `['all']`: every request, the token endpoint (and so minting) included. */
  endpoints?: Array<DevIdpEndpoint | 'all'>;
}

/** Calls each endpoint received, the IdP's own minting and revoking included. */
export type DevIdpRequestCounts = Record<DevIdpEndpoint, number>;

/** A running development IdP. */
export interface DevIdp {
  /** Issuer identifier, no trailing slash; equals the discovery document's `issuer`. */
  issuer: string;
  clientId: string;
  clientSecret: string;
  /** The default `aud` of minted JWTs. */
  audience: string;
  discoveryUrl: string;
  tokenEndpoint: string;
  jwksUri: string;
  /** RFC 7662 endpoint; takes client_secret_basic or client_secret_post. */
  introspectionEndpoint: string;
  /** RFC 7009 endpoint. */
  revocationEndpoint: string;
  userinfoEndpoint: string;
  /** The web client's id and secret, when one was asked for. */
  webClient: { clientId: string; clientSecret: string } | undefined;
  /** The public client's id, when one was asked for. */
  publicClientId: string | undefined;
  /**
   * Signs `user` in at a page of the provider without a person, over plain HTTP requests: a
   * device verification URL (`verification_uri_complete`) or an authorization URL. Follows the
   * development login and consent pages to the end, a loopback redirect included; resolves
   * with the URL it ended on.
   */
  signInAt(url: string, user: string): Promise<string>;
  /** Revokes a refresh token and its whole grant, as a user removing the app's access would. */
  revokeRefreshToken(token: string): Promise<void>;
  /** `kid` of the provider's current signing key. */
  readonly kid: string;
  /** Live request counts per endpoint. */
  readonly requests: Readonly<DevIdpRequestCounts>;
  /** Sets every request count to zero. */
  resetCounters(): void;
  /** A real access token from the provider's token endpoint (development grant). */
  mintAccessToken(opts: MintOptions): Promise<string>;
  /** The claim set a minted JWT for `user` would carry, to tamper with and {@link signToken}. */
  claimsFor(user: string, opts?: Omit<MintOptions, 'user'>): Record<string, unknown>;
  /** Signs arbitrary claims with the provider's key, a foreign one or a shared secret. */
  signToken(claims: Record<string, unknown>, opts?: SignOptions): Promise<string>;
  /** Revokes an access token (JWT or opaque) at the provider's revocation endpoint. */
  revoke(token: string): Promise<void>;
  /**
   * Makes a new RSA key the signing key, published first in the JWKS; the previous keys stay
   * published unless `dropOld`. Resolves to the new kid.
   */
  rotateKeys(opts?: { dropOld?: boolean }): Promise<string>;
  /** Makes endpoints fail (or, with `null`, work again); resolves once that is in effect. */
  setFault(fault: DevIdpFault | null, opts?: FaultOptions): Promise<void>;
  /** Stops listening, drops open connections. */
  close(): Promise<void>;
}

/** Grant type of the development login at the token endpoint (params: username, audience, scope, expires_in, format, lightweight). */
export const devGrantType = 'urn:sasl-gate:params:oauth:grant-type:dev-login';

const DEFAULT_SCOPE = 'openid email profile';
/** The scope of draft-ietf-mailmaint-oauth-public: access to the user's mail (IMAP, SMTP). */
export const MAIL_SCOPE = 'urn:ietf:params:oauth:scope:mail';
const DEVICE_CODE_GRANT = 'urn:ietf:params:oauth:grant-type:device_code';
const SIGNING_ALG = 'RS256';
const MAX_TTL_SECONDS = 7 * 24 * 3600;
const HMAC_ALGS = new Set(['HS256', 'HS384', 'HS512']);
/** Bodies this large are no legitimate introspection or revocation request. */
const MAX_FORM_BYTES = 64 * 1024;
const OWN_REQUEST_TIMEOUT_MS = 10_000;
const CONFIDENTIAL_AUTH_METHODS = ['client_secret_basic', 'client_secret_post'];

interface SigningKey {
  jwk: JWK;
  publicJwk: JWK;
  kid: string;
  keyObject: KeyObject;
  publicPem: string;
}

interface ActiveFault {
  kind: DevIdpFault;
  all: boolean;
  endpoints: Set<DevIdpEndpoint>;
}

/** Starts a development OpenID provider; resolves once it listens. */
export async function startDevIdp(opts: DevIdpOptions): Promise<DevIdp> {
  const users = new UserDirectory(opts.users);
  const host = opts.host ?? '127.0.0.1';
  const clientId = opts.clientId ?? 'mail';
  const clientSecret = opts.clientSecret ?? randomBytes(24).toString('base64url');
  const webClient = opts.webClient
    ? { ...opts.webClient, clientSecret: opts.webClient.clientSecret ?? randomBytes(24).toString('base64url') }
    : undefined;
  if (webClient && webClient.clientId === clientId) throw new Error('the web client needs a client id of its own');
  const publicClient = opts.publicClient;
  if (publicClient && (publicClient.clientId === clientId || publicClient.clientId === webClient?.clientId)) {
    throw new Error('the public client needs a client id of its own');
  }
  const publicTtl = publicClient?.accessTokenTtlSeconds;
  if (publicTtl !== undefined) checkTtl(publicTtl, 'publicClient.accessTokenTtlSeconds');
  const audience = opts.audience ?? clientId;
  const defaultTtl = opts.accessTokenTtlSeconds ?? 3600;
  checkTtl(defaultTtl, 'accessTokenTtlSeconds');
  const defaultFormat = opts.accessTokenFormat ?? 'jwt';
  if (defaultFormat !== 'jwt' && defaultFormat !== 'opaque') {
    throw new RangeError('accessTokenFormat must be jwt or opaque');
  }

  // Newest first: the provider signs with the first key that fits, and the JWKS lists them in
  // this order.
  let signingKeys: SigningKey[] = [await createSigningKey()];
  const currentKey = (): SigningKey => signingKeys[0]!;
  let publishedKeys = createLocalJWKSet({ keys: signingKeys.map((k) => k.publicJwk) });

  // Owned here rather than by a provider object, so that rebuilding the provider for a key
  // rotation keeps grants, sessions and tokens.
  const storage = memoryAdapterFactory();
  const shadowSecret = randomBytes(32);
  const lightweightTokens = new WeakSet<AccessToken>();

  const requests: DevIdpRequestCounts = {
    discovery: 0,
    jwks: 0,
    token: 0,
    introspection: 0,
    userinfo: 0,
    revocation: 0,
  };
  const endpointByPath = new Map<string, DevIdpEndpoint>();
  let fault: ActiveFault | null = null;
  const hungSockets = new Set<Socket>();
  const releaseHungSockets = () => {
    for (const socket of hungSockets) socket.destroy();
    hungSockets.clear();
  };

  // The issuer must contain the port, which is only known after listening, and the provider
  // needs the issuer at construction: listen first, answer 503 until the provider is there.
  let handler: http.RequestListener | undefined;
  let resolveTokens: ((req: http.IncomingMessage) => Promise<http.IncomingMessage>) | undefined;
  const listener: http.RequestListener = (req, res) => {
    const endpoint = endpointByPath.get(pathOf(req.url));
    if (endpoint) requests[endpoint] += 1;
    if (fault && (fault.all || (endpoint !== undefined && fault.endpoints.has(endpoint)))) {
      injectFault(fault.kind, req, res, hungSockets);
      return;
    }
    if (!handler) {
      res.statusCode = 503;
      res.end();
      return;
    }
    const serve = handler;
    if (resolveTokens && req.method === 'POST' && (endpoint === 'introspection' || endpoint === 'revocation')) {
      resolveTokens(req).then(
        (replay) => serve(replay, res),
        () => {
          if (!res.headersSent) res.writeHead(400, { 'content-type': 'application/json' });
          res.end(JSON.stringify({ error: 'invalid_request', error_description: 'unreadable request body' }));
        },
      );
      return;
    }
    serve(req, res);
  };
  const server = opts.https
    ? https.createServer({ cert: opts.https.cert, key: opts.https.key }, listener)
    : http.createServer(listener);
  await listen(server, host, opts.port ?? 0);

  try {
    const { port } = server.address() as AddressInfo;
    const scheme = opts.https ? 'https' : 'http';
    const issuer = `${scheme}://${isIP(host) === 6 ? `[${host}]` : host}:${port}`;

    // Loaded lazily so that importing this module (the CLI does) neither costs the load time
    // nor prints the library's runtime notice unless a development IdP is really started.
    const { default: ProviderClass, errors } = await import('oidc-provider');

    const defaultResource = resourceIndicatorFor(audience);
    const publicResource = publicClient ? resourceIndicatorFor(publicClient.clientId) : undefined;
    const resourceServerInfo = (aud: string, scope: string, format: AccessTokenFormat): ResourceServerInfo => ({
      scope,
      audience: aud,
      accessTokenFormat: format,
      // Pinning the kid keeps tokens on the current key whatever order the library prefers.
      ...(format === 'jwt' ? { jwt: { sign: { alg: SIGNING_ALG, kid: currentKey().kid } } } : {}),
    });

    /** Handle under which the provider keeps the record of a JWT access token with this `jti`. */
    const shadowIdFor = (jti: string): string =>
      createHmac('sha256', shadowSecret).update(jti).digest('base64url');

    /**
     * The provider keeps no record of JWT access tokens and refuses them at introspection and
     * revocation. Storing the token's record as if it were an opaque one, under a handle only
     * this process can derive from the JWT's `jti`, lets those endpoints treat the JWT like
     * the opaque token it would otherwise have been.
     */
    const rememberJwt = async (token: AccessToken, payload: Record<string, unknown>): Promise<void> => {
      const { jti, iat, exp } = payload;
      if (typeof jti !== 'string' || typeof iat !== 'number' || typeof exp !== 'number') return;
      const fields = token as unknown as Record<string, unknown>;
      const record: Record<string, unknown> = {};
      for (const name of (token.constructor as typeof AccessToken).IN_PAYLOAD) {
        if (fields[name] !== undefined) record[name] = fields[name];
      }
      const id = shadowIdFor(jti);
      Object.assign(record, { jti: id, kind: 'AccessToken', iat, exp });
      await storage('AccessToken').upsert(id, record, Math.max(1, exp - Math.floor(Date.now() / 1000)));
    };

    /**
     * Swaps a JWT in an introspection or revocation form for the handle of its record. A JWT
     * whose signature does not check out against the published keys becomes a handle that
     * matches nothing, so the provider answers `active: false` as RFC 7662 wants for tokens it
     * does not know. The body has been consumed by then, so the request is always replayed.
     */
    async function resolveStructuredTokens(req: http.IncomingMessage): Promise<http.IncomingMessage> {
      const body = await readBody(req, MAX_FORM_BYTES);
      const mediaType = req.headers['content-type']?.split(';')[0]?.trim().toLowerCase();
      if (mediaType !== 'application/x-www-form-urlencoded') return replayWithBody(req, body);
      const form = new URLSearchParams(body.toString('utf8'));
      const tokens = form.getAll('token');
      // Duplicates are left for the provider to reject.
      if (tokens.length !== 1 || !looksLikeJwt(tokens[0]!)) return replayWithBody(req, body);
      let handle = randomBytes(32).toString('base64url');
      try {
        const { payload } = await jwtVerify(tokens[0]!, publishedKeys, { issuer, algorithms: [SIGNING_ALG] });
        if (typeof payload.jti === 'string') handle = shadowIdFor(payload.jti);
      } catch {
        // Forged, tampered, expired or signed with a dropped key: unknown to the provider.
      }
      form.set('token', handle);
      return replayWithBody(req, Buffer.from(form.toString(), 'utf8'));
    }

    const customizeJwt = async (_ctx: unknown, token: AccessToken, jwt: StructuredToken): Promise<void> => {
      await rememberJwt(token, jwt.payload);
      // `username` is an introspection response member (RFC 7662), not an access token claim.
      delete jwt.payload['username'];
      if (lightweightTokens.has(token)) {
        // `extra` holds exactly the user claims (see extraTokenClaims); the record above keeps
        // them for introspection.
        for (const claim of Object.keys(token.extra ?? {})) delete jwt.payload[claim];
      }
    };

    const cookieKey = randomBytes(32).toString('base64url');
    const configuration = (): Configuration => ({
      adapter: storage,
      jwks: { keys: signingKeys.map((k) => ({ ...k.jwk })) },
      cookies: { keys: [cookieKey] },
      clients: [
        {
          client_id: clientId,
          client_secret: clientSecret,
          // Mail clients are native apps: loopback redirects with any port, as RFC 8252 asks.
          application_type: 'native',
          grant_types: ['authorization_code', 'refresh_token', devGrantType],
          response_types: ['code'],
          redirect_uris: opts.redirectUris ?? ['http://127.0.0.1/callback', 'http://localhost/callback'],
          // The provider accepts client_secret_post from this client as well.
          token_endpoint_auth_method: 'client_secret_basic',
        },
        ...(webClient
          ? [
              {
                client_id: webClient.clientId,
                client_secret: webClient.clientSecret,
                application_type: 'web' as const,
                grant_types: ['authorization_code'],
                response_types: ['code'],
                redirect_uris: webClient.redirectUris,
                token_endpoint_auth_method: 'client_secret_basic',
                // The page asks for a recent sign-in before it creates a password.
                require_auth_time: true,
              },
            ]
          : []),
        ...(publicClient
          ? [
              {
                client_id: publicClient.clientId,
                application_type: 'native' as const,
                grant_types: ['authorization_code', 'refresh_token', DEVICE_CODE_GRANT],
                response_types: ['code'],
                redirect_uris: ['http://127.0.0.1/callback', 'http://[::1]/callback'],
                token_endpoint_auth_method: 'none',
              },
            ]
          : []),
      ],
      scopes: ['openid', 'offline_access', 'email', 'profile', MAIL_SCOPE],
      responseTypes: ['code'],
      claims: {
        openid: ['sub'],
        email: ['email', 'email_verified'],
        profile: ['preferred_username', 'name'],
      },
      discovery: {
        claim_types_supported: ['normal'],
        introspection_endpoint_auth_methods_supported: CONFIDENTIAL_AUTH_METHODS,
        revocation_endpoint_auth_methods_supported: CONFIDENTIAL_AUTH_METHODS,
      },
      async findAccount(_ctx: unknown, id: string) {
        const user = users.find(id);
        if (!user) return undefined;
        // The browser login takes whatever was typed as the account id; keeping it as `sub`
        // keeps session, grant and code consistent inside the provider.
        return { accountId: id, claims: async () => ({ sub: id, ...userClaims(user) }) };
      },
      async extraTokenClaims(_ctx: unknown, token: AccessToken) {
        const user = token.accountId === undefined ? undefined : users.find(token.accountId);
        // Introspection answers with these as well, where `username` is what RFC 7662 names it.
        return user ? { ...userClaims(user), username: preferredUsername(user) } : undefined;
      },
      formats: { customizers: { jwt: customizeJwt } },
      features: {
        devInteractions: { enabled: true },
        deviceFlow: {
          enabled: true,
          // Plain pages of our own: the library's defaults load web fonts and print a notice.
          async userCodeInputSource(ctx: { body: unknown }, form: string) {
            ctx.body = devicePage('Enter the code shown on your device', form, 'op.deviceInputForm');
          },
          async userCodeConfirmSource(ctx: { body: unknown }, form: string, _client: unknown, _info: unknown, userCode: string) {
            ctx.body = devicePage(`Confirm the code ${escapeHtml(userCode)}`, form, 'op.deviceConfirmForm');
          },
          async successSource(ctx: { body: unknown }) {
            ctx.body = devicePage('Signed in: you can close this page', '', undefined);
          },
        },
        introspection: {
          enabled: true,
          // The library's default, stated so that it does not print a notice: confidential
          // clients may introspect any token, public ones only their own.
          async allowedPolicy(_ctx: unknown, client: ProviderClient, token: AccessToken) {
            return client.clientAuthMethod !== 'none' || token.clientId === client.clientId;
          },
        },
        revocation: {
          enabled: true,
          // RFC 7009 2.1: only the client a token was issued to may revoke it.
          async allowedPolicy(_ctx: unknown, client: ProviderClient, token: AccessToken) {
            return token.clientId === client.clientId;
          },
        },
        resourceIndicators: {
          enabled: true,
          // Browser flows get a mail token without having to know about `resource`; in the
          // opaque set-up a userinfo token, which must not have an audience.
          async defaultResource(_ctx: unknown, client: ProviderClient, oneOf?: string[]) {
            if (oneOf) return oneOf[0];
            if (publicResource && client.clientId === publicClient?.clientId) return publicResource;
            return defaultFormat === 'opaque' ? undefined : defaultResource;
          },
          async useGrantedResource() {
            return true;
          },
          async getResourceServerInfo(_ctx: unknown, indicator: string) {
            if (indicator === publicResource && publicClient) {
              return {
                ...resourceServerInfo(publicClient.clientId, `${DEFAULT_SCOPE} offline_access ${MAIL_SCOPE}`, 'jwt'),
                ...(publicTtl === undefined ? {} : { accessTokenTTL: publicTtl }),
              };
            }
            const aud = indicator === defaultResource ? audience : indicator;
            return resourceServerInfo(aud, `${DEFAULT_SCOPE} offline_access`, defaultFormat);
          },
        },
      },
      clientBasedCORS: () => false,
      ttl: {
        AccessToken: (_ctx: unknown, token: AccessToken) =>
          token.resourceServer?.accessTokenTTL ?? defaultTtl,
        AuthorizationCode: 60,
        IdToken: 3600,
        RefreshToken: 24 * 3600,
        DeviceCode: 600,
        Interaction: 3600,
        Session: 24 * 3600,
        Grant: 24 * 3600,
      },
      renderError(ctx: { type: string; body: unknown }, out: Record<string, unknown>) {
        ctx.type = 'html';
        ctx.body = `<!doctype html><title>sasl-gate dev IdP</title><pre>${escapeHtml(
          JSON.stringify(out, null, 2),
        )}</pre>`;
      },
    });
    const devGrant = (provider: Provider) => async (ctx: GrantContext) => {
      const { params, client } = ctx.oidc;
      const username = stringParam(params, 'username');
      if (!username) throw new errors.InvalidRequest('missing required parameter: username');
      const user = users.find(username);
      if (!user) throw new errors.CustomOIDCProviderError('invalid_grant', 'unknown user');
      const scope = normalizeScope(stringParam(params, 'scope') ?? DEFAULT_SCOPE);
      const ttlParam = stringParam(params, 'expires_in');
      let ttl = defaultTtl;
      if (ttlParam !== undefined) {
        ttl = Number(ttlParam);
        if (!isValidTtl(ttl)) {
          throw new errors.InvalidRequest(`expires_in must be an integer from 1 to ${MAX_TTL_SECONDS}`);
        }
      }
      const lightweightParam = stringParam(params, 'lightweight');
      if (lightweightParam !== undefined && lightweightParam !== 'true' && lightweightParam !== 'false') {
        throw new errors.InvalidRequest('lightweight must be true or false');
      }
      const lightweight = lightweightParam === 'true';
      const formatParam = stringParam(params, 'format');
      if (formatParam !== undefined && formatParam !== 'jwt' && formatParam !== 'opaque') {
        throw new errors.InvalidRequest('format must be jwt or opaque');
      }
      if (lightweight && formatParam === 'opaque') {
        throw new errors.InvalidRequest('lightweight tokens are JWTs');
      }
      const format: AccessTokenFormat = formatParam ?? (lightweight ? 'jwt' : defaultFormat);
      const aud = stringParam(params, 'audience') || (format === 'jwt' ? audience : undefined);

      // A grant per token, as a browser login would leave: userinfo releases claims only
      // under one, and revoking a token takes its grant's other tokens along.
      const grant = new provider.Grant({ accountId: user.id, clientId: client.clientId, expiresIn: ttl });
      if (scope) grant.addOIDCScope(scope);
      const grantId = await grant.save();

      const token = new provider.AccessToken({
        accountId: user.id,
        client,
        grantId,
        gty: devGrantType,
        scope: scope || undefined,
        expiresIn: ttl,
        ...(aud === undefined
          ? {}
          : {
              resourceServer: new provider.ResourceServer(
                resourceIndicatorFor(aud),
                resourceServerInfo(aud, scope, format),
              ),
            }),
      });
      if (lightweight) lightweightTokens.add(token);
      ctx.oidc.entity('AccessToken', token);
      const value = await token.save();
      ctx.body = {
        access_token: value,
        token_type: token.tokenType,
        expires_in: token.expiration,
        ...(scope ? { scope } : {}),
      };
    };

    const buildProvider = (): Provider => {
      const provider: Provider = new ProviderClass(issuer, configuration());
      provider.registerGrantType(devGrantType, devGrant(provider), [
        'username',
        'audience',
        'scope',
        'expires_in',
        'format',
        'lightweight',
      ]);
      return provider;
    };

    let provider = buildProvider();
    const endpointUrl = (name: string) => provider.urlFor(name);
    const tokenEndpoint = endpointUrl('token');
    const jwksUri = endpointUrl('jwks');
    const introspectionEndpoint = endpointUrl('introspection');
    const revocationEndpoint = endpointUrl('revocation');
    const userinfoEndpoint = endpointUrl('userinfo');
    const discoveryUrl = `${issuer}/.well-known/openid-configuration`;
    for (const [url, endpoint] of [
      [discoveryUrl, 'discovery'],
      [`${issuer}/.well-known/oauth-authorization-server`, 'discovery'],
      [jwksUri, 'jwks'],
      [tokenEndpoint, 'token'],
      [introspectionEndpoint, 'introspection'],
      [revocationEndpoint, 'revocation'],
      [userinfoEndpoint, 'userinfo'],
    ] as const) {
      endpointByPath.set(new URL(url).pathname, endpoint);
    }
    handler = provider.callback();
    resolveTokens = resolveStructuredTokens;

    const agent = opts.https
      ? new https.Agent({
          keepAlive: true,
          ca: opts.https.ca ?? opts.https.cert,
          // Lets a leaf certificate given as `ca` act as its own trust anchor.
          allowPartialTrustChain: true,
        })
      : new http.Agent({ keepAlive: true });
    const basicAuth = Buffer.from(
      `${encodeURIComponent(clientId)}:${encodeURIComponent(clientSecret)}`,
    ).toString('base64');

    const foreignKeys = new Map<string, Promise<{ key: CryptoKey; kid: string }>>();

    const claimsFor = (user: string, o: Omit<MintOptions, 'user'> = {}): Record<string, unknown> => {
      const found = users.find(user);
      if (!found) throw new Error(`unknown development user: ${user}`);
      const now = Math.floor(Date.now() / 1000);
      return {
        ...(o.lightweight ? {} : userClaims(found)),
        jti: randomBytes(16).toString('base64url'),
        sub: found.id,
        iat: now,
        exp: now + (o.ttlSeconds ?? defaultTtl),
        scope: normalizeScope(o.scope ?? DEFAULT_SCOPE) || undefined,
        client_id: clientId,
        iss: issuer,
        aud: o.audience ?? audience,
      };
    };

    let serverDown = false;
    let faultChange: Promise<void> = Promise.resolve();
    let closed = false;

    const stopListening = () =>
      new Promise<void>((resolve, reject) => {
        server.close((err) => (err ? reject(err) : resolve()));
        server.closeAllConnections();
      });

    return {
      issuer,
      clientId,
      clientSecret,
      webClient: webClient ? { clientId: webClient.clientId, clientSecret: webClient.clientSecret } : undefined,
      publicClientId: publicClient?.clientId,
      audience,
      discoveryUrl,
      tokenEndpoint,
      jwksUri,
      introspectionEndpoint,
      revocationEndpoint,
      userinfoEndpoint,
      get kid() {
        return currentKey().kid;
      },
      requests,

      resetCounters(): void {
        for (const endpoint of Object.keys(requests) as DevIdpEndpoint[]) requests[endpoint] = 0;
      },

      async mintAccessToken(o: MintOptions): Promise<string> {
        if (o.ttlSeconds !== undefined) checkTtl(o.ttlSeconds, 'ttlSeconds');
        const form = new URLSearchParams({ grant_type: devGrantType, username: o.user });
        if (o.audience !== undefined) form.set('audience', o.audience);
        if (o.scope !== undefined) form.set('scope', o.scope);
        if (o.ttlSeconds !== undefined) form.set('expires_in', String(o.ttlSeconds));
        if (o.format !== undefined) form.set('format', o.format);
        if (o.lightweight !== undefined) form.set('lightweight', String(o.lightweight));
        const { status, body } = await postForm(new URL(tokenEndpoint), form, basicAuth, agent);
        let parsed: unknown;
        try {
          parsed = JSON.parse(body);
        } catch {
          parsed = undefined;
        }
        const record = (parsed ?? {}) as Record<string, unknown>;
        if (status !== 200 || typeof record['access_token'] !== 'string') {
          const reason = [record['error'], record['error_description']].filter(Boolean).join(': ');
          throw new Error(`dev IdP token request failed (HTTP ${status}${reason ? `, ${reason}` : ''})`);
        }
        return record['access_token'];
      },

      claimsFor,

      signInAt(url: string, user: string): Promise<string> {
        return signInOverHttp(new URL(url), user, issuer, agent);
      },

      async revokeRefreshToken(token: string): Promise<void> {
        const refreshToken = await provider.RefreshToken.find(token, { ignoreExpiration: true });
        if (!refreshToken) throw new Error('dev IdP: no such refresh token');
        // The adapter indexes every model's records by grant: one call takes them all.
        if (refreshToken.grantId) await storage('Grant').revokeByGrantId!(refreshToken.grantId);
        await refreshToken.destroy();
      },

      async signToken(claims: Record<string, unknown>, o: SignOptions = {}): Promise<string> {
        const keyChoice = o.key ?? 'provider';
        const hmac = o.secret !== undefined || keyChoice === 'public-as-secret';
        if (o.secret !== undefined && keyChoice !== 'provider') {
          throw new Error('signToken: give either a secret or a key, not both');
        }
        const alg = o.alg ?? (hmac ? 'HS256' : SIGNING_ALG);
        const typ = o.typ ?? 'at+jwt';
        if (alg === 'none') {
          // Unsecured tokens have no key to name, so neither kid nor typ is set.
          return new UnsecuredJWT(claims).encode();
        }
        if (hmac) {
          if (!HMAC_ALGS.has(alg)) throw new Error(`signToken: a shared secret signs HS256/384/512, not ${alg}`);
          const secret = o.secret ?? currentKey().publicPem;
          // The confusion attack names the RSA key so that a careless verifier picks it up.
          const kid = o.kid ?? (o.secret === undefined ? currentKey().kid : undefined);
          return new SignJWT(claims)
            .setProtectedHeader({ alg, typ, ...(kid === undefined ? {} : { kid }) })
            .sign(new TextEncoder().encode(secret));
        }
        let key: KeyObject | CryptoKey;
        let kid: string;
        if (keyChoice === 'provider') {
          key = currentKey().keyObject;
          kid = o.kid ?? currentKey().kid;
        } else {
          let pending = foreignKeys.get(alg);
          if (!pending) {
            pending = generateKeyPair(alg).then(({ privateKey }) => ({
              key: privateKey,
              kid: `foreign-${randomBytes(8).toString('hex')}`,
            }));
            foreignKeys.set(alg, pending);
          }
          const foreign = await pending;
          key = foreign.key;
          kid = o.kid ?? foreign.kid;
        }
        return new SignJWT(claims).setProtectedHeader({ alg, kid, typ }).sign(key);
      },

      async revoke(token: string): Promise<void> {
        const form = new URLSearchParams({ token, token_type_hint: 'access_token' });
        const { status, body } = await postForm(new URL(revocationEndpoint), form, basicAuth, agent);
        if (status !== 200) {
          throw new Error(`dev IdP revocation failed (HTTP ${status}): ${body.slice(0, 200)}`);
        }
      },

      async rotateKeys(o: { dropOld?: boolean } = {}): Promise<string> {
        const fresh = await createSigningKey();
        signingKeys = o.dropOld ? [fresh] : [fresh, ...signingKeys];
        publishedKeys = createLocalJWKSet({ keys: signingKeys.map((k) => k.publicJwk) });
        // oidc-provider reads its keys once, at construction. A new provider object behind the
        // same server, issuer and storage is the same provider to everyone outside.
        provider = buildProvider();
        handler = provider.callback();
        return fresh.kid;
      },

      setFault(kind: DevIdpFault | null, o: FaultOptions = {}): Promise<void> {
        if (closed) return Promise.reject(new Error('dev IdP is closed'));
        // The fault itself takes effect at once, so that a caller who does not await still
        // sees it on the next request; only stopping or resuming listening takes a moment.
        releaseHungSockets();
        const endpoints = o.endpoints ?? ['all'];
        fault =
          kind === null
            ? null
            : {
                kind,
                all: endpoints.includes('all'),
                endpoints: new Set(endpoints.filter((e): e is DevIdpEndpoint => e !== 'all')),
              };
        // Converges on whatever fault is current when it runs, so overlapping calls settle
        // on the last one.
        const converge = async () => {
          const down = fault?.kind === 'down' && fault.all;
          if (closed) return;
          if (down && !serverDown) {
            serverDown = true;
            await stopListening();
          } else if (!down && serverDown) {
            await listen(server, host, port);
            serverDown = false;
          }
        };
        faultChange = faultChange.then(converge, converge);
        return faultChange;
      },

      async close(): Promise<void> {
        if (closed) return;
        closed = true;
        await faultChange.catch(() => undefined);
        fault = null;
        releaseHungSockets();
        agent.destroy();
        if (server.listening) await stopListening();
      },
    };
  } catch (err) {
    server.closeAllConnections();
    server.close();
    throw err;
  }
}

/** Looks users up by id or (case-insensitively) by email. */
class UserDirectory {
  private readonly byId = new Map<string, DevIdpUser>();
  private readonly byEmail = new Map<string, DevIdpUser>();

  constructor(users: DevIdpUser[]) {
    for (const user of users) {
      if (!user.id || !user.email) throw new Error('every development user needs an id and an email');
      if (this.byId.has(user.id)) throw new Error(`duplicate development user id: ${user.id}`);
      this.byId.set(user.id, { ...user });
      this.byEmail.set(user.email.toLowerCase(), { ...user });
    }
  }

  find(idOrEmail: string): DevIdpUser | undefined {
    return this.byId.get(idOrEmail) ?? this.byEmail.get(idOrEmail.toLowerCase());
  }
}

/** Identity claims of a user, shared by userinfo, ID tokens and access tokens. */
function userClaims(user: DevIdpUser): Record<string, unknown> {
  return {
    email: user.email,
    email_verified: true,
    preferred_username: preferredUsername(user),
    ...(user.name === undefined ? {} : { name: user.name }),
  };
}

function preferredUsername(user: DevIdpUser): string {
  return user.preferredUsername ?? user.id;
}

/** RFC 8707 wants an absolute URI as resource indicator; plain audiences like `mail` get a URN. */
function resourceIndicatorFor(audience: string): string {
  return URL.canParse(audience) ? audience : `urn:sasl-gate:audience:${encodeURIComponent(audience)}`;
}

async function createSigningKey(): Promise<SigningKey> {
  const { privateKey } = await generateKeyPair(SIGNING_ALG, { extractable: true, modulusLength: 2048 });
  const exported = await exportJWK(privateKey);
  const kid = await calculateJwkThumbprint(exported);
  const jwk: JWK = { ...exported, kid, alg: SIGNING_ALG, use: 'sig' };
  const { d: _d, p: _p, q: _q, dp: _dp, dq: _dq, qi: _qi, ...publicJwk } = jwk;
  // A KeyObject signs with any RSA JWS algorithm; the CryptoKey is bound to RS256.
  const keyObject = createPrivateKey({ key: jwk as JsonWebKey, format: 'jwk' });
  const publicPem = createPublicKey(keyObject).export({ type: 'spki', format: 'pem' }).toString();
  return { jwk, publicJwk, kid, keyObject, publicPem };
}

/**
 * Per-instance model storage: the library's default one prints a warning at every start, and
 * several instances in one process must not see each other's data. Expired entries go when
 * touched or in an occasional sweep on write, so no timers are left behind.
 */
function memoryAdapterFactory(): (model: string) => Adapter {
  interface Entry {
    payload: Record<string, unknown>;
    expiresAt: number;
  }
  const entries = new Map<string, Entry>();
  const uidIndex = new Map<string, string>();
  const userCodeIndex = new Map<string, string>();
  const grantMembers = new Map<string, Set<string>>();

  let writesSinceSweep = 0;
  // Keeps a long-running demo from accumulating expired sessions and codes, without a timer.
  const sweep = () => {
    const now = Date.now();
    for (const [key, entry] of entries) if (entry.expiresAt <= now) entries.delete(key);
    for (const index of [uidIndex, userCodeIndex]) {
      for (const [value, key] of index) if (!entries.has(key)) index.delete(value);
    }
    for (const [grantId, members] of grantMembers) {
      for (const key of members) if (!entries.has(key)) members.delete(key);
      if (members.size === 0) grantMembers.delete(grantId);
    }
  };

  const live = (key: string): Entry | undefined => {
    const entry = entries.get(key);
    if (entry && entry.expiresAt <= Date.now()) {
      entries.delete(key);
      return undefined;
    }
    return entry;
  };

  return (model: string): Adapter => {
    const keyOf = (id: string) => `${model}:${id}`;
    return {
      async upsert(id, payload, expiresIn) {
        if (++writesSinceSweep >= 1000) {
          writesSinceSweep = 0;
          sweep();
        }
        const key = keyOf(id);
        const expiresAt = typeof expiresIn === 'number' ? Date.now() + expiresIn * 1000 : Infinity;
        entries.set(key, { payload, expiresAt });
        if (typeof payload['uid'] === 'string' && model === 'Session') uidIndex.set(payload['uid'], key);
        if (typeof payload['userCode'] === 'string') userCodeIndex.set(payload['userCode'], key);
        if (typeof payload['grantId'] === 'string') {
          const members = grantMembers.get(payload['grantId']) ?? new Set<string>();
          members.add(key);
          grantMembers.set(payload['grantId'], members);
        }
      },
      async find(id) {
        return live(keyOf(id))?.payload;
      },
      async findByUid(uid) {
        const key = uidIndex.get(uid);
        return key === undefined ? undefined : live(key)?.payload;
      },
      async findByUserCode(userCode) {
        const key = userCodeIndex.get(userCode);
        return key === undefined ? undefined : live(key)?.payload;
      },
      async consume(id) {
        const entry = live(keyOf(id));
        if (entry) entry.payload['consumed'] = Math.floor(Date.now() / 1000);
      },
      async destroy(id) {
        entries.delete(keyOf(id));
      },
      async revokeByGrantId(grantId) {
        for (const key of grantMembers.get(grantId) ?? []) entries.delete(key);
        grantMembers.delete(grantId);
      },
    };
  };
}

function listen(server: http.Server, host: string, port: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const onError = (err: Error) => reject(err);
    server.once('error', onError);
    server.listen({ host, port }, () => {
      server.off('error', onError);
      resolve();
    });
  });
}

function pathOf(url: string | undefined): string {
  const path = url ?? '/';
  const query = path.indexOf('?');
  return query === -1 ? path : path.slice(0, query);
}

/** Answers (or deliberately does not answer) a request the way a provider in trouble would. */
function injectFault(
  kind: DevIdpFault,
  req: http.IncomingMessage,
  res: http.ServerResponse,
  hungSockets: Set<Socket>,
): void {
  switch (kind) {
    case 'down':
      // Refusing connections is per server; for single endpoints the nearest thing is a
      // connection that dies without an answer.
      req.socket.destroy();
      return;
    case 'hang': {
      const { socket } = req;
      hungSockets.add(socket);
      socket.once('close', () => hungSockets.delete(socket));
      return;
    }
    case 'http500':
      res.writeHead(500, { 'content-type': 'application/json', 'cache-control': 'no-store' });
      res.end(JSON.stringify({ error: 'server_error', error_description: 'injected fault' }));
      return;
    case 'garbage':
      // What a misconfigured proxy in front of a provider sends: HTML labelled as JSON.
      res.writeHead(200, { 'content-type': 'application/json', 'cache-control': 'no-store' });
      res.end('<html><body><h1>502 Bad Gateway</h1></body></html>\n');
      return;
  }
}

async function readBody(req: http.IncomingMessage, limit: number): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > limit) throw new Error('request body too large');
    chunks.push(chunk);
  }
  return Buffer.concat(chunks, size);
}

/**
 * A copy of an already consumed request with another body, for the provider to read as if it
 * had come from the client. Bound to the client's socket, so address and TLS state stay true.
 */
function replayWithBody(req: http.IncomingMessage, body: Buffer): http.IncomingMessage {
  const replay = new http.IncomingMessage(req.socket);
  replay.method = req.method;
  replay.url = req.url;
  replay.httpVersion = req.httpVersion;
  replay.httpVersionMajor = req.httpVersionMajor;
  replay.httpVersionMinor = req.httpVersionMinor;
  const headers: http.IncomingHttpHeaders = { ...req.headers, 'content-length': String(body.length) };
  delete headers['transfer-encoding'];
  replay.headers = headers;
  replay.rawHeaders = Object.entries(headers).flatMap(([name, value]) =>
    value === undefined ? [] : (Array.isArray(value) ? value : [value]).flatMap((v) => [name, v]),
  );
  replay.complete = true;
  if (body.length > 0) replay.push(body);
  replay.push(null);
  return replay;
}

/** The provider's own test for "structured token", which it refuses at introspection and revocation. */
function looksLikeJwt(token: string): boolean {
  try {
    decodeProtectedHeader(token);
    return true;
  } catch {
    return false;
  }
}

function postForm(
  url: URL,
  form: URLSearchParams,
  basicAuth: string,
  agent: http.Agent,
): Promise<{ status: number; body: string }> {
  const body = form.toString();
  const request = url.protocol === 'https:' ? https.request : http.request;
  return new Promise((resolve, reject) => {
    const req = request(
      url,
      {
        method: 'POST',
        agent,
        headers: {
          accept: 'application/json',
          authorization: `Basic ${basicAuth}`,
          'content-type': 'application/x-www-form-urlencoded',
          'content-length': Buffer.byteLength(body),
        },
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (chunk: Buffer) => chunks.push(chunk));
        res.on('end', () =>
          resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString('utf8') }),
        );
        res.on('error', reject);
      },
    );
    // An injected `hang` fault must fail the IdP's own calls instead of stalling a test.
    req.setTimeout(OWN_REQUEST_TIMEOUT_MS, () => req.destroy(new Error('dev IdP request timed out')));
    req.on('error', reject);
    req.end(body);
  });
}

function stringParam(params: Record<string, unknown>, name: string): string | undefined {
  const value = params[name];
  return typeof value === 'string' ? value : undefined;
}

function normalizeScope(scope: string): string {
  return [...new Set(scope.split(' ').filter(Boolean))].join(' ');
}

function isValidTtl(ttl: number): boolean {
  return Number.isSafeInteger(ttl) && ttl >= 1 && ttl <= MAX_TTL_SECONDS;
}

function checkTtl(ttl: number, name: string): void {
  if (!isValidTtl(ttl)) throw new RangeError(`${name} must be an integer from 1 to ${MAX_TTL_SECONDS}`);
}

/** A bare page for the device flow's steps; `formId` names the form its button submits. */
function devicePage(heading: string, form: string, formId: string | undefined): string {
  const button = formId ? `<button type="submit" form="${formId}">Continue</button>` : '';
  return `<!doctype html><meta charset="utf-8"><title>sasl-gate dev IdP</title><h1>${heading}</h1>${form}${button}`;
}

const MAX_SIGN_IN_STEPS = 20;

/**
 * Walks the provider's development pages the way a browser would: follows redirects, keeps the
 * cookies per origin, and submits each page's form (the device code form and its confirmation,
 * the auto-posting form of a redirect, the login with `user`, the consent). Ends on the first
 * page without a form, or on a redirect leaving the provider (a client's loopback redirect),
 * which it fetches once.
 */
async function signInOverHttp(start: URL, user: string, issuer: string, agent: http.Agent): Promise<string> {
  const origin = new URL(issuer).origin;
  const cookies = new Map<string, string>();
  let method = 'GET';
  let url = start;
  let body: URLSearchParams | undefined;
  for (let step = 0; step < MAX_SIGN_IN_STEPS; step += 1) {
    if (url.origin !== origin) {
      // The client's redirect URI: what the browser does last.
      const res = await fetch(url, { redirect: 'manual' });
      await res.arrayBuffer();
      return url.href;
    }
    const res = await httpRequest(url, method, body, cookies, agent);
    if (res.status >= 300 && res.status < 400 && res.location) {
      url = new URL(res.location, url);
      method = 'GET';
      body = undefined;
      continue;
    }
    if (res.status !== 200) throw new Error(`dev IdP sign-in: HTTP ${res.status} at ${url.pathname}: ${res.body.slice(0, 300)}`);
    const form = /<form\b[^>]*>[\s\S]*?<\/form>/i.exec(res.body)?.[0];
    if (!form) return url.href;
    const action = /action="([^"]*)"/i.exec(form)?.[1];
    const fields = new URLSearchParams();
    for (const input of form.matchAll(/<input\b[^>]*>/gi)) {
      const name = /name="([^"]*)"/i.exec(input[0])?.[1];
      const value = /value="([^"]*)"/i.exec(input[0])?.[1] ?? '';
      if (name) fields.set(name, unescapeHtml(value));
    }
    if (fields.has('login')) {
      fields.set('login', user);
      fields.set('password', 'any password');
    }
    url = new URL(unescapeHtml(action ?? url.href), url);
    method = 'POST';
    body = fields;
  }
  throw new Error(`dev IdP sign-in: no end after ${MAX_SIGN_IN_STEPS} pages`);
}

function httpRequest(
  url: URL,
  method: string,
  form: URLSearchParams | undefined,
  cookies: Map<string, string>,
  agent: http.Agent,
): Promise<{ status: number; location: string | undefined; body: string }> {
  const body = form?.toString();
  const request = url.protocol === 'https:' ? https.request : http.request;
  return new Promise((resolve, reject) => {
    const req = request(
      url,
      {
        method,
        agent,
        headers: {
          accept: 'text/html',
          ...(cookies.size > 0 ? { cookie: [...cookies].map(([k, v]) => `${k}=${v}`).join('; ') } : {}),
          ...(body === undefined
            ? {}
            : { 'content-type': 'application/x-www-form-urlencoded', 'content-length': Buffer.byteLength(body) }),
        },
      },
      (res) => {
        for (const line of res.headers['set-cookie'] ?? []) {
          const [pair] = line.split(';');
          const eq = pair!.indexOf('=');
          if (eq > 0) cookies.set(pair!.slice(0, eq).trim(), pair!.slice(eq + 1).trim());
        }
        const chunks: Buffer[] = [];
        res.on('data', (chunk: Buffer) => chunks.push(chunk));
        res.on('end', () =>
          resolve({
            status: res.statusCode ?? 0,
            location: res.headers.location,
            body: Buffer.concat(chunks).toString('utf8'),
          }),
        );
        res.on('error', reject);
      },
    );
    req.setTimeout(OWN_REQUEST_TIMEOUT_MS, () => req.destroy(new Error('dev IdP request timed out')));
    req.on('error', reject);
    req.end(body);
  });
}

function unescapeHtml(text: string): string {
  return text
    .replace(/&#(\d+);/g, (_, code: string) => String.fromCharCode(Number(code)))
    .replace(/&#x([0-9a-f]+);/gi, (_, code: string) => String.fromCharCode(parseInt(code, 16)))
    .replace(/&quot;/g, '"')
    .replace(/&lt;/g, '<')
    .replace(/&gt;/g, '>')
    .replace(/&amp;/g, '&');
}

function escapeHtml(text: string): string {
  return text.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

/**
 * A development OpenID provider: the real `oidc-provider` on a loopback port with a fixed
 * user list, one confidential client, RS256 JWT access tokens and a development grant that
 * hands out a token for a named user without a browser. Integration tests, the demo and the
 * load harness use it; it has no place in production (anyone holding the client secret can
 * get a token for any listed user).
 */
import { createPrivateKey, randomBytes, type JsonWebKey, type KeyObject } from 'node:crypto';
import * as http from 'node:http';
import * as https from 'node:https';
import { isIP, type AddressInfo } from 'node:net';
import {
  SignJWT,
  UnsecuredJWT,
  calculateJwkThumbprint,
  exportJWK,
  generateKeyPair,
  type CryptoKey,
  type JWK,
} from 'jose';
import type {
  AccessToken,
  Adapter,
  Configuration,
  GrantContext,
  Provider,
  ResourceServerInfo,
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
}

/** Options of {@link DevIdp.mintAccessToken}. */
export interface MintOptions {
  /** User id or email. */
  user: string;
  /** Default: the IdP's audience. */
  audience?: string;
  ttlSeconds?: number;
  /** Default `openid email profile`. */
  scope?: string;
}

/** Options of {@link DevIdp.signToken}. */
export interface SignOptions {
  /** Default: the provider key's kid, or a random one for a foreign key. */
  kid?: string;
  /** Default RS256; `none` produces an unsigned token. */
  alg?: string;
  /** `provider`: the key published in the JWKS (default); `foreign`: a key nobody publishes. */
  key?: 'provider' | 'foreign';
  /** JWS `typ` header; default `at+jwt` like the provider's own access tokens. */
  typ?: string;
}

/** A running development IdP. */
export interface DevIdp {
  /** Issuer identifier, no trailing slash; equals the discovery document's `issuer`. */
  issuer: string;
  clientId: string;
  clientSecret: string;
  /** The default `aud` of minted tokens. */
  audience: string;
  discoveryUrl: string;
  tokenEndpoint: string;
  jwksUri: string;
  /** `kid` of the provider's signing key. */
  kid: string;
  /** A real JWT access token from the provider's token endpoint (development grant). */
  mintAccessToken(opts: MintOptions): Promise<string>;
  /** The claim set a minted token for `user` would carry, to tamper with and {@link signToken}. */
  claimsFor(user: string, opts?: Omit<MintOptions, 'user'>): Record<string, unknown>;
  /** Signs arbitrary claims with the provider's key or a foreign one. */
  signToken(claims: Record<string, unknown>, opts?: SignOptions): Promise<string>;
  /** Stops listening, drops open connections. */
  close(): Promise<void>;
}

/** Grant type of the development login at the token endpoint (params: username, audience, scope, expires_in). */
export const devGrantType = 'urn:sasl-gate:params:oauth:grant-type:dev-login';

const DEFAULT_SCOPE = 'openid email profile';
const SIGNING_ALG = 'RS256';
const MAX_TTL_SECONDS = 7 * 24 * 3600;

/** Starts a development OpenID provider; resolves once it listens. */
export async function startDevIdp(opts: DevIdpOptions): Promise<DevIdp> {
  const users = new UserDirectory(opts.users);
  const host = opts.host ?? '127.0.0.1';
  const clientId = opts.clientId ?? 'mail';
  const clientSecret = opts.clientSecret ?? randomBytes(24).toString('base64url');
  const audience = opts.audience ?? clientId;
  const defaultTtl = opts.accessTokenTtlSeconds ?? 3600;
  checkTtl(defaultTtl, 'accessTokenTtlSeconds');

  const signingKey = await createSigningKey();

  // The issuer must contain the port, which is only known after listening, and the provider
  // needs the issuer at construction: listen first, answer 503 until the provider is there.
  let handler: http.RequestListener = (_req, res) => {
    res.statusCode = 503;
    res.end();
  };
  const listener: http.RequestListener = (req, res) => handler(req, res);
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
    const resourceServerInfo = (aud: string, scope: string, ttl?: number): ResourceServerInfo => ({
      scope,
      audience: aud,
      accessTokenFormat: 'jwt',
      jwt: { sign: { alg: SIGNING_ALG } },
      ...(ttl === undefined ? {} : { accessTokenTTL: ttl }),
    });

    const configuration: Configuration = {
      adapter: memoryAdapterFactory(),
      jwks: { keys: [signingKey.jwk] },
      cookies: { keys: [randomBytes(32).toString('base64url')] },
      clients: [
        {
          client_id: clientId,
          client_secret: clientSecret,
          // Mail clients are native apps: loopback redirects with any port, as RFC 8252 asks.
          application_type: 'native',
          grant_types: ['authorization_code', 'refresh_token', devGrantType],
          response_types: ['code'],
          redirect_uris: opts.redirectUris ?? ['http://127.0.0.1/callback', 'http://localhost/callback'],
          token_endpoint_auth_method: 'client_secret_basic',
        },
      ],
      responseTypes: ['code'],
      claims: {
        openid: ['sub'],
        email: ['email', 'email_verified'],
        profile: ['preferred_username', 'name'],
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
        return user ? userClaims(user) : undefined;
      },
      features: {
        devInteractions: { enabled: true },
        resourceIndicators: {
          enabled: true,
          // Browser flows get a mail token without having to know about `resource`.
          async defaultResource(_ctx: unknown, _client: unknown, oneOf?: string[]) {
            return oneOf ? oneOf[0] : defaultResource;
          },
          async useGrantedResource() {
            return true;
          },
          async getResourceServerInfo(_ctx: unknown, indicator: string) {
            const aud = indicator === defaultResource ? audience : indicator;
            return resourceServerInfo(aud, `${DEFAULT_SCOPE} offline_access`);
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
    };

    const provider: Provider = new ProviderClass(issuer, configuration);

    provider.registerGrantType(
      devGrantType,
      async (ctx: GrantContext) => {
        const { params, client } = ctx.oidc;
        const username = stringParam(params, 'username');
        if (!username) throw new errors.InvalidRequest('missing required parameter: username');
        const user = users.find(username);
        if (!user) throw new errors.CustomOIDCProviderError('invalid_grant', 'unknown user');
        const aud = stringParam(params, 'audience') || audience;
        const scope = normalizeScope(stringParam(params, 'scope') ?? DEFAULT_SCOPE);
        const ttlParam = stringParam(params, 'expires_in');
        let ttl: number | undefined;
        if (ttlParam !== undefined) {
          ttl = Number(ttlParam);
          if (!isValidTtl(ttl)) {
            throw new errors.InvalidRequest(`expires_in must be an integer from 1 to ${MAX_TTL_SECONDS}`);
          }
        }
        const token = new provider.AccessToken({
          accountId: user.id,
          client,
          gty: devGrantType,
          scope: scope || undefined,
          resourceServer: new provider.ResourceServer(
            resourceIndicatorFor(aud),
            resourceServerInfo(aud, scope, ttl),
          ),
        });
        ctx.oidc.entity('AccessToken', token);
        const value = await token.save();
        ctx.body = {
          access_token: value,
          token_type: token.tokenType,
          expires_in: token.expiration,
          ...(scope ? { scope } : {}),
        };
      },
      ['username', 'audience', 'scope', 'expires_in'],
    );

    handler = provider.callback();

    const tokenEndpoint = provider.urlFor('token');
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
        ...userClaims(found),
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

    let closed = false;
    return {
      issuer,
      clientId,
      clientSecret,
      audience,
      discoveryUrl: `${issuer}/.well-known/openid-configuration`,
      tokenEndpoint,
      jwksUri: provider.urlFor('jwks'),
      kid: signingKey.kid,

      async mintAccessToken(o: MintOptions): Promise<string> {
        if (o.ttlSeconds !== undefined) checkTtl(o.ttlSeconds, 'ttlSeconds');
        const form = new URLSearchParams({ grant_type: devGrantType, username: o.user });
        if (o.audience !== undefined) form.set('audience', o.audience);
        if (o.scope !== undefined) form.set('scope', o.scope);
        if (o.ttlSeconds !== undefined) form.set('expires_in', String(o.ttlSeconds));
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

      async signToken(claims: Record<string, unknown>, o: SignOptions = {}): Promise<string> {
        const alg = o.alg ?? SIGNING_ALG;
        const typ = o.typ ?? 'at+jwt';
        if (alg === 'none') {
          // Unsecured tokens have no key to name, so neither kid nor typ is set.
          return new UnsecuredJWT(claims).encode();
        }
        let key: KeyObject | CryptoKey;
        let kid: string;
        if ((o.key ?? 'provider') === 'provider') {
          key = signingKey.keyObject;
          kid = o.kid ?? signingKey.kid;
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

      async close(): Promise<void> {
        if (closed) return;
        closed = true;
        agent.destroy();
        await new Promise<void>((resolve, reject) => {
          server.close((err) => (err ? reject(err) : resolve()));
          server.closeAllConnections();
        });
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
    preferred_username: user.preferredUsername ?? user.id,
    ...(user.name === undefined ? {} : { name: user.name }),
  };
}

/** RFC 8707 wants an absolute URI as resource indicator; plain audiences like `mail` get a URN. */
function resourceIndicatorFor(audience: string): string {
  return URL.canParse(audience) ? audience : `urn:sasl-gate:audience:${encodeURIComponent(audience)}`;
}

async function createSigningKey(): Promise<{ jwk: JWK; kid: string; keyObject: KeyObject }> {
  const { privateKey } = await generateKeyPair(SIGNING_ALG, { extractable: true, modulusLength: 2048 });
  const exported = await exportJWK(privateKey);
  const kid = await calculateJwkThumbprint(exported);
  const jwk: JWK = { ...exported, kid, alg: SIGNING_ALG, use: 'sig' };
  // A KeyObject signs with any RSA JWS algorithm; the CryptoKey is bound to RS256.
  const keyObject = createPrivateKey({ key: jwk as JsonWebKey, format: 'jwk' });
  return { jwk, kid, keyObject };
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

function escapeHtml(text: string): string {
  return text.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

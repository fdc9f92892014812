/**
 * The small part of `oidc-provider` (which ships no types) that the development IdP uses.
 * Option objects stay loose on purpose: the library validates them itself at start.
 */
declare module 'oidc-provider' {
  import type { IncomingMessage, ServerResponse } from 'node:http';

  /** A client as the provider resolved and authenticated it. */
  export interface ProviderClient {
    readonly clientId: string;
    /** How the client authenticated at this request (`none` for public clients). */
    readonly clientAuthMethod?: string;
  }

  /** The `ctx.oidc` part of a Koa context seen by a grant handler. */
  export interface GrantContext {
    oidc: {
      params: Record<string, unknown>;
      client: ProviderClient;
      entity(name: string, value: unknown): void;
    };
    body: unknown;
  }

  /** What `features.resourceIndicators.getResourceServerInfo` returns. */
  export interface ResourceServerInfo {
    scope: string;
    audience?: string;
    accessTokenTTL?: number;
    accessTokenFormat?: 'opaque' | 'jwt';
    jwt?: { sign?: { alg?: string; kid?: string } | false };
  }

  export class ResourceServer {
    constructor(identifier: string, info: ResourceServerInfo);
    readonly audience: string | undefined;
    readonly accessTokenTTL: number | undefined;
    identifier(): string;
  }

  /** The fields of an access token that the development IdP reads or sets. */
  export interface AccessTokenFields {
    accountId?: string;
    clientId?: string;
    client?: ProviderClient;
    grantId?: string;
    gty?: string;
    scope?: string;
    resourceServer?: ResourceServer;
    kind?: string;
    /** Lifetime in seconds, overriding `ttl.AccessToken`. */
    expiresIn?: number;
  }

  export class AccessToken implements AccessTokenFields {
    constructor(fields: AccessTokenFields);
    /** Names of the fields the provider persists for this model. */
    static readonly IN_PAYLOAD: string[];
    accountId?: string;
    clientId?: string;
    grantId?: string;
    gty?: string;
    scope?: string;
    kind?: string;
    jti?: string;
    aud?: string | string[];
    /** What `extraTokenClaims` returned, set while the token is being saved. */
    extra?: Record<string, unknown>;
    resourceServer?: ResourceServer;
    readonly expiration: number;
    readonly tokenType: string;
    save(): Promise<string>;
  }

  /** What `formats.customizers.jwt` may change before a JWT access token is signed. */
  export interface StructuredToken {
    header: Record<string, unknown> | undefined;
    payload: Record<string, unknown>;
  }

  /** The consent record behind tokens: which account allowed which client which scopes. */
  export class Grant {
    constructor(fields: { accountId: string; clientId: string; expiresIn?: number });
    addOIDCScope(scope: string): void;
    addResourceScope(resource: string, scope: string): void;
    /** Stores the grant; resolves to its id. */
    save(): Promise<string>;
  }

  /** A refresh token as the provider stores it. */
  export class RefreshToken {
    static find(value: string, options?: { ignoreExpiration?: boolean }): Promise<RefreshToken | undefined>;
    grantId?: string;
    destroy(): Promise<void>;
  }

  /** Model storage, one instance per model name. */
  export interface Adapter {
    upsert(id: string, payload: Record<string, unknown>, expiresIn?: number): Promise<void>;
    find(id: string): Promise<Record<string, unknown> | undefined>;
    findByUserCode(userCode: string): Promise<Record<string, unknown> | undefined>;
    findByUid(uid: string): Promise<Record<string, unknown> | undefined>;
    consume(id: string): Promise<void>;
    destroy(id: string): Promise<void>;
    revokeByGrantId(grantId: string): Promise<void>;
  }

  export type Configuration = Record<string, unknown>;

  export class Provider {
    constructor(issuer: string, configuration?: Configuration);
    readonly issuer: string;
    readonly AccessToken: typeof AccessToken;
    readonly Grant: typeof Grant;
    readonly RefreshToken: typeof RefreshToken;
    readonly ResourceServer: typeof ResourceServer;
    callback(): (req: IncomingMessage, res: ServerResponse) => void;
    registerGrantType(
      name: string,
      handler: (ctx: GrantContext) => Promise<void>,
      parameters?: string[] | Set<string>,
      allowedDuplicateParameters?: string[] | Set<string>,
    ): void;
    urlFor(name: string, options?: Record<string, unknown>): string;
    on(event: string, listener: (...args: unknown[]) => void): this;
  }

  export namespace errors {
    class OIDCProviderError extends Error {
      readonly error: string;
      readonly status: number;
    }
    class InvalidRequest extends OIDCProviderError {
      constructor(description?: string);
    }
    class CustomOIDCProviderError extends OIDCProviderError {
      constructor(error: string, description?: string);
    }
  }

  export default Provider;
}

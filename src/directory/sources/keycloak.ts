/**
 * Users from Keycloak's admin REST API, `GET {url}/admin/realms/{realm}/users` (or a group's
 * `/groups/{id}/members` when mail users are selected by group), paged with `first` / `max`.
 * sasl-gate authenticates as a confidential client with a service account (client credentials
 * at the realm's token endpoint, found by OpenID discovery) that holds `realm-management`'s
 * `view-users` role.
 */
import * as client from 'openid-client';
import type { DirectorySource, DirectoryUser } from '../model.js';
import {
  aliasesFrom,
  attributeValue,
  cleanAliases,
  DirectorySourceError,
  getJson,
  HttpStatusError,
  isSelected,
  joinUrl,
  mailboxOf,
  reason,
  type HttpSourceOptions,
  type MailboxMapping,
  type MailUserSelection,
} from './common.js';

/** Options of {@link KeycloakSource}. */
export interface KeycloakSourceOptions extends HttpSourceOptions {
  /** Keycloak's base URL, e.g. `https://sso.example.com` (with `/auth` for Keycloak before 17). */
  url: string;
  realm: string;
  /** A confidential client with "Service accounts roles" on and `view-users` granted. */
  clientId: string;
  clientSecret: string;
  /** Default `client_secret_basic`. */
  clientAuthMethod?: 'client_secret_basic' | 'client_secret_post';
  /** Default 100. */
  pageSize?: number;
  /** Default: the `email` field. */
  mailbox?: MailboxMapping;
  /** User attribute holding alias addresses; unset, no aliases. */
  aliasAttribute?: string;
  /**
   * `group` is a group name or path (`mail-users`, `/staff/mail`): only its direct members are
   * listed, through the group members endpoint.
   */
  selection?: MailUserSelection;
  /** Default `keycloak`. */
  name?: string;
}

interface KeycloakUser {
  id?: unknown;
  username?: unknown;
  email?: unknown;
  enabled?: unknown;
  attributes?: Record<string, unknown> | null;
}

interface Token {
  value: string;
  /** ms since the epoch after which a new token is fetched. */
  renewAt: number;
}

const MAX_PAGES = 100_000;
/** Tokens are renewed this long before they expire, so a page request never carries a dying one. */
const TOKEN_MARGIN_MS = 30_000;

function isLoopbackHttp(url: URL): boolean {
  return url.protocol === 'http:' && ['localhost', '127.0.0.1', '[::1]'].includes(url.hostname);
}

/** The Keycloak admin API as a directory source. */
export class KeycloakSource implements DirectorySource {
  readonly name: string;
  private readonly pageSize: number;
  private readonly mailbox: MailboxMapping;
  private readonly adminBase: string;
  private configuration: client.Configuration | undefined;
  private token: Token | undefined;

  constructor(private readonly options: KeycloakSourceOptions) {
    this.name = options.name ?? 'keycloak';
    this.pageSize = options.pageSize ?? 100;
    this.mailbox = options.mailbox ?? { from: 'email' };
    this.adminBase = joinUrl(options.url, 'admin', 'realms', options.realm).href;
  }

  /** The realm's issuer, where discovery and the token endpoint live. */
  get issuer(): string {
    return joinUrl(this.options.url, 'realms', this.options.realm).href;
  }

  /** Every mail user of the realm (or of the selected group), active or disabled. */
  async fetchAll(): Promise<DirectoryUser[]> {
    const group = this.options.selection?.group;
    let users: KeycloakUser[];
    let groups: string[] = [];
    if (group !== undefined) {
      const id = await this.groupId(group);
      users = await this.pages(['groups', id, 'members']);
      groups = [group];
    } else {
      // Offset paging skips a user when an earlier one is deleted meanwhile; a changed total
      // count tells, and one more pass is cheaper than a user wrongly refused for an interval.
      users = await this.consistentUserList();
    }
    const seen = new Set<string>();
    const out: DirectoryUser[] = [];
    for (const user of users) {
      if (typeof user.id !== 'string' || seen.has(user.id)) continue;
      seen.add(user.id);
      const attributes = user.attributes ?? undefined;
      // The group condition was met by listing the group's members.
      const selection = this.options.selection && { ...this.options.selection, group: undefined };
      if (!isSelected(selection, { groups, attributes })) continue;
      const mailbox = mailboxOf(this.mailbox, user);
      if (mailbox === undefined) continue;
      const aliases = this.options.aliasAttribute
        ? aliasesFrom(attributeValue(attributes, this.options.aliasAttribute))
        : [];
      out.push({
        id: user.id,
        mailbox: mailbox.toLowerCase(),
        aliases: cleanAliases(mailbox, aliases),
        active: user.enabled === true,
        groups,
      });
    }
    return out;
  }

  private async consistentUserList(): Promise<KeycloakUser[]> {
    for (let attempt = 1; attempt <= 3; attempt += 1) {
      const before = await this.count();
      const users = await this.pages(['users']);
      const after = await this.count();
      if (before === after) return users;
    }
    throw new DirectorySourceError(`Keycloak's user list in realm ${this.options.realm} kept changing while it was read`);
  }

  private async count(): Promise<number> {
    const body = await this.get(['users', 'count'], {});
    if (typeof body !== 'number') throw new DirectorySourceError('Keycloak /users/count did not answer a number');
    return body;
  }

  /** The id of a group given by name or path; an unknown group is an error, not "no members". */
  private async groupId(group: string): Promise<string> {
    const path = group.replace(/^\/+/, '').split('/');
    const body = (await this.get(['group-by-path', ...path], {}).catch((err: unknown) => {
      if (err instanceof HttpStatusError && err.status === 404) {
        throw new DirectorySourceError(`Keycloak realm ${this.options.realm} has no group ${group}`, { cause: err });
      }
      throw err;
    })) as { id?: unknown } | null;
    if (typeof body !== 'object' || body === null || typeof body.id !== 'string') {
      throw new DirectorySourceError(`Keycloak did not answer a group for ${group}`);
    }
    return body.id;
  }

  private async pages(path: string[]): Promise<KeycloakUser[]> {
    const all: KeycloakUser[] = [];
    const seen = new Set<string>();
    for (let n = 0; n < MAX_PAGES; n += 1) {
      const page = await this.get(path, {
        first: String(n * this.pageSize),
        max: String(this.pageSize),
        briefRepresentation: 'false',
      });
      if (!Array.isArray(page)) throw new DirectorySourceError(`Keycloak's /${path.join('/')} did not answer a list`);
      let fresh = 0;
      for (const user of page as KeycloakUser[]) {
        if (typeof user !== 'object' || user === null || typeof user.id !== 'string') {
          throw new DirectorySourceError('Keycloak answered a user without id');
        }
        if (!seen.has(user.id)) fresh += 1;
        seen.add(user.id);
        all.push(user);
      }
      if (page.length < this.pageSize) return all;
      // A server that ignores `first` would hand out page one forever.
      if (fresh === 0) throw new DirectorySourceError(`Keycloak's paging of /${path.join('/')} does not advance`);
    }
    throw new DirectorySourceError(`Keycloak's /${path.join('/')} has more than ${MAX_PAGES} pages`);
  }

  /** An admin API GET with the service account's token; a 401 renews the token once. */
  private async get(path: string[], query: Record<string, string>): Promise<unknown> {
    const url = joinUrl(this.adminBase, ...path);
    for (const [k, v] of Object.entries(query)) url.searchParams.set(k, v);
    for (let attempt = 1; ; attempt += 1) {
      const token = await this.accessToken();
      try {
        return await getJson(url, {
          timeoutMs: this.options.timeoutMs,
          fetch: this.options.fetch,
          headers: { authorization: `Bearer ${token}` },
        });
      } catch (err) {
        // The token may have been revoked or the realm keys rotated before it expired.
        if (err instanceof HttpStatusError && err.status === 401 && attempt === 1) {
          this.token = undefined;
          continue;
        }
        throw err;
      }
    }
  }

  private async accessToken(): Promise<string> {
    if (this.token && Date.now() < this.token.renewAt) return this.token.value;
    const configuration = await this.discover();
    let response: Awaited<ReturnType<typeof client.clientCredentialsGrant>>;
    try {
      response = await client.clientCredentialsGrant(configuration);
    } catch (err) {
      throw new DirectorySourceError(`client credentials grant at ${this.issuer} failed: ${reason(err)}`, {
        cause: err,
      });
    }
    const expiresIn = response.expiresIn();
    this.token = {
      value: response.access_token,
      renewAt: expiresIn === undefined ? 0 : Date.now() + Math.max(0, expiresIn * 1000 - TOKEN_MARGIN_MS),
    };
    return response.access_token;
  }

  private async discover(): Promise<client.Configuration> {
    if (this.configuration) return this.configuration;
    const issuer = new URL(this.issuer);
    const insecure = isLoopbackHttp(issuer);
    const options: client.DiscoveryRequestOptions = { timeout: Math.max(1, Math.ceil(this.options.timeoutMs / 1000)) };
    if (insecure) options.execute = [client.allowInsecureRequests];
    if (this.options.fetch) options[client.customFetch] = this.options.fetch as client.CustomFetch;
    const authentication =
      this.options.clientAuthMethod === 'client_secret_post'
        ? client.ClientSecretPost(this.options.clientSecret)
        : client.ClientSecretBasic(this.options.clientSecret);
    try {
      const configuration = await client.discovery(issuer, this.options.clientId, undefined, authentication, options);
      configuration.timeout = options.timeout;
      if (this.options.fetch) configuration[client.customFetch] = this.options.fetch as client.CustomFetch;
      this.configuration = configuration;
      return configuration;
    } catch (err) {
      throw new DirectorySourceError(`OpenID discovery at ${this.issuer} failed: ${reason(err)}`, { cause: err });
    }
  }
}

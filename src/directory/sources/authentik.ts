/**
 * Users from Authentik's API: `GET /api/v3/core/users/` with an API token (Bearer), paged with
 * `page` and `page_size` until `pagination.next` is 0. The token belongs to a user or service
 * account allowed to view users (`authentik_core.view_user`).
 */
import type { DirectorySource, DirectoryUser } from '../model.js';
import {
  aliasesFrom,
  attributeValue,
  cleanAliases,
  DirectorySourceError,
  getJson,
  isSelected,
  joinUrl,
  mailboxOf,
  type HttpSourceOptions,
  type MailboxMapping,
  type MailUserSelection,
} from './common.js';

/** Options of {@link AuthentikSource}. */
export interface AuthentikSourceOptions extends HttpSourceOptions {
  /** Authentik's base URL, e.g. `https://auth.example.com` (the API is under `/api/v3/`). */
  url: string;
  /** An API token (intent "API") of an account that may view users. */
  token: string;
  /** Default 100. */
  pageSize?: number;
  /** Default: the `email` field. */
  mailbox?: MailboxMapping;
  /** Key in the user's `attributes` holding alias addresses (a string or a list); unset, no aliases. */
  aliasAttribute?: string;
  selection?: MailUserSelection;
  /** Default `authentik`. */
  name?: string;
}

interface AuthentikUser {
  pk: number | string;
  uuid?: string;
  username?: string;
  email?: string;
  is_active?: boolean;
  type?: string;
  groups_obj?: Array<{ name?: unknown }> | null;
  attributes?: Record<string, unknown> | null;
}

interface AuthentikPage {
  pagination: { next: number; current?: number; count?: number; total_pages?: number };
  results: AuthentikUser[];
}

/** Accounts that are machines, not people: Authentik's service accounts and its outposts' own. */
const SERVICE_TYPES = new Set(['service_account', 'internal_service_account']);
/** Each attempt may see users added or deleted while it pages; a second attempt usually does not. */
const ATTEMPTS = 3;
const MAX_PAGES = 100_000;

function isPage(value: unknown): value is AuthentikPage {
  const page = value as Partial<AuthentikPage> | null;
  return (
    typeof page === 'object' &&
    page !== null &&
    typeof page.pagination === 'object' &&
    page.pagination !== null &&
    typeof page.pagination.next === 'number' &&
    Array.isArray(page.results)
  );
}

/** The Authentik API as a directory source. */
export class AuthentikSource implements DirectorySource {
  readonly name: string;
  private readonly pageSize: number;
  private readonly mailbox: MailboxMapping;

  constructor(private readonly options: AuthentikSourceOptions) {
    this.name = options.name ?? 'authentik';
    this.pageSize = options.pageSize ?? 100;
    this.mailbox = options.mailbox ?? { from: 'email' };
  }

  /** Every mail user Authentik knows, active or disabled; rejects when any page cannot be read. */
  async fetchAll(): Promise<DirectoryUser[]> {
    let lastInconsistency = '';
    for (let attempt = 1; attempt <= ATTEMPTS; attempt += 1) {
      const { users, consistent, detail } = await this.fetchOnce();
      if (consistent) return users.flatMap((u) => this.toDirectoryUser(u));
      lastInconsistency = detail;
    }
    throw new DirectorySourceError(`Authentik's user list kept changing while it was read (${lastInconsistency})`);
  }

  /**
   * One pass over all pages. Page-number paging shifts when users are added or deleted meanwhile,
   * and a user skipped that way would look removed (and be refused login), so a pass whose total
   * count changed is reported as inconsistent and repeated.
   */
  private async fetchOnce(): Promise<{ users: AuthentikUser[]; consistent: boolean; detail: string }> {
    const byId = new Map<string, AuthentikUser>();
    let firstCount: number | undefined;
    let lastCount: number | undefined;
    let page = 1;
    for (let n = 0; n < MAX_PAGES; n += 1) {
      const url = joinUrl(this.options.url, 'api', 'v3', 'core', 'users', '');
      url.searchParams.set('page', String(page));
      url.searchParams.set('page_size', String(this.pageSize));
      // groups_obj is left out when this is false (newer Authentik); ask for it explicitly.
      url.searchParams.set('include_groups', 'true');
      const body = await getJson(url, {
        timeoutMs: this.options.timeoutMs,
        fetch: this.options.fetch,
        headers: { authorization: `Bearer ${this.options.token}` },
      });
      if (!isPage(body)) {
        throw new DirectorySourceError(`Authentik's ${url.pathname} did not answer a page of users (no pagination / results)`);
      }
      for (const user of body.results) {
        if (typeof user !== 'object' || user === null || (typeof user.pk !== 'number' && typeof user.pk !== 'string')) {
          throw new DirectorySourceError('Authentik answered a user without pk');
        }
        byId.set(idOf(user), user);
      }
      const count = body.pagination.count;
      if (typeof count === 'number') {
        firstCount ??= count;
        lastCount = count;
      }
      const next = body.pagination.next;
      if (!next) {
        const counted = lastCount === undefined || byId.size === lastCount;
        const consistent = firstCount === lastCount && counted;
        return {
          users: [...byId.values()],
          consistent,
          detail: `count ${firstCount} then ${lastCount}, ${byId.size} distinct users`,
        };
      }
      if (!Number.isInteger(next) || next <= page) {
        throw new DirectorySourceError(`Authentik's pagination does not advance (page ${page}, next ${next})`);
      }
      page = next;
    }
    throw new DirectorySourceError(`Authentik's user list has more than ${MAX_PAGES} pages`);
  }

  private toDirectoryUser(user: AuthentikUser): DirectoryUser[] {
    if (user.type !== undefined && SERVICE_TYPES.has(user.type)) return [];
    const groups = (user.groups_obj ?? [])
      .map((g) => g?.name)
      .filter((name): name is string => typeof name === 'string');
    if (!isSelected(this.options.selection, { groups, attributes: user.attributes })) return [];
    const mailbox = mailboxOf(this.mailbox, user);
    if (mailbox === undefined) return [];
    const aliases = this.options.aliasAttribute
      ? aliasesFrom(attributeValue(user.attributes, this.options.aliasAttribute))
      : [];
    return [
      {
        id: idOf(user),
        mailbox: mailbox.toLowerCase(),
        aliases: cleanAliases(mailbox, aliases),
        // Authentik defaults is_active to true; a missing field is an old or trimmed serializer.
        active: user.is_active !== false,
        groups,
      },
    ];
  }
}

/** The uuid where Authentik sends one (stable across exports), else the numeric pk. */
function idOf(user: AuthentikUser): string {
  return typeof user.uuid === 'string' && user.uuid !== '' ? user.uuid : String(user.pk);
}

/**
 * What the directory sources share: who counts as a mail user, how a provider's user becomes a
 * mailbox and aliases, and HTTP calls with timeouts that fail loudly (a source must reject, never
 * answer an empty list, when the provider cannot be read).
 */
import { GateError } from '../../errors.js';

/** A source could not produce the complete user list; the directory keeps its last good set. */
export class DirectorySourceError extends GateError {
  constructor(message: string, options: { cause?: unknown } = {}) {
    super('directory_source_unavailable', message, { temporary: true, cause: options.cause });
    this.name = 'DirectorySourceError';
  }
}

/**
 * Who is a mail user. Both set: both must hold. Neither: every user with a mailbox.
 * `attribute` without `value` asks for a present, non-empty value other than false / "false".
 */
export interface MailUserSelection {
  group?: string;
  attribute?: { name: string; value?: string };
}

/** Where a user's mailbox comes from. */
export interface MailboxMapping {
  from: 'email' | 'username';
  /** Appended as `@domain` to a user name without `@` (with `from: username`). */
  domain?: string;
}

/** Common options of the HTTP sources. */
export interface HttpSourceOptions {
  /** Each HTTP request may take this long, in milliseconds. */
  timeoutMs: number;
  /** Replaces the global fetch (tests, proxies). */
  fetch?: typeof fetch;
}

/** The value at `key` in an attribute map: the key as written, else a dotted path into nested objects. */
export function attributeValue(attributes: Record<string, unknown> | undefined | null, key: string): unknown {
  if (!attributes || typeof attributes !== 'object') return undefined;
  if (Object.hasOwn(attributes, key)) return attributes[key];
  let current: unknown = attributes;
  for (const part of key.split('.')) {
    if (typeof current !== 'object' || current === null || !Object.hasOwn(current, part)) return undefined;
    current = (current as Record<string, unknown>)[part];
  }
  return current;
}

/** Scalar strings in an attribute value: a string, a number or boolean, or lists of them at any depth. */
function scalars(value: unknown): string[] {
  if (typeof value === 'string') return [value];
  if (typeof value === 'number' || typeof value === 'boolean') return [String(value)];
  if (Array.isArray(value)) return value.flatMap(scalars);
  return [];
}

/**
 * Alias addresses from an attribute value: a string or a list of strings, each of which may hold
 * several addresses separated by commas or white space (as admins type them into one field).
 */
export function aliasesFrom(value: unknown): string[] {
  return scalars(value)
    .flatMap((s) => s.split(/[\s,;]+/))
    .map((s) => s.trim())
    .filter((s) => s !== '');
}

/** Whether an attribute map satisfies the selection's attribute condition. */
export function matchesAttribute(
  attributes: Record<string, unknown> | undefined | null,
  condition: { name: string; value?: string },
): boolean {
  const values = scalars(attributeValue(attributes, condition.name)).map((v) => v.trim());
  if (condition.value === undefined) {
    return values.some((v) => v !== '' && v.toLowerCase() !== 'false' && v !== '0');
  }
  return values.includes(condition.value);
}

/** Whether a user with these groups and attributes is a mail user under the selection. */
export function isSelected(
  selection: MailUserSelection | undefined,
  user: { groups: string[]; attributes?: Record<string, unknown> | null },
): boolean {
  if (!selection) return true;
  if (selection.group !== undefined && !user.groups.includes(selection.group)) return false;
  if (selection.attribute && !matchesAttribute(user.attributes, selection.attribute)) return false;
  return true;
}

/** The mailbox of a provider user under the mapping; undefined when the user has none. */
export function mailboxOf(mapping: MailboxMapping, user: { email?: unknown; username?: unknown }): string | undefined {
  const raw = mapping.from === 'email' ? user.email : user.username;
  if (typeof raw !== 'string' || raw.trim() === '') return undefined;
  const value = raw.trim();
  if (mapping.from === 'username' && mapping.domain && !value.includes('@')) return `${value}@${mapping.domain}`;
  return value;
}

/** Lower case, deduplicated, the mailbox itself left out. */
export function cleanAliases(mailbox: string, aliases: string[]): string[] {
  const own = mailbox.toLowerCase();
  return [...new Set(aliases.map((a) => a.toLowerCase()))].filter((a) => a !== own);
}

/** A URL with the path segments appended, each percent-encoded (a realm or group name may hold anything). */
export function joinUrl(base: string, ...segments: string[]): URL {
  const url = new URL(base);
  const path = url.pathname.replace(/\/+$/, '');
  url.pathname = `${path}/${segments.map((s) => encodeURIComponent(s)).join('/')}`;
  return url;
}

/** The URL without query and credentials, for error messages. */
export function describeUrl(url: URL): string {
  return `${url.origin}${url.pathname}`;
}

/** Thrown for a non-2xx answer, so callers can react to 401 (a stale token) specifically. */
export class HttpStatusError extends DirectorySourceError {
  constructor(
    readonly status: number,
    url: URL,
  ) {
    const hint =
      status === 401
        ? ' (credentials refused)'
        : status === 403
          ? ' (refused: a wrong token, or an account without permission to view users)'
          : status === 404
            ? ' (not found: check the URL, realm or group)'
            : '';
    super(`GET ${describeUrl(url)} answered ${status}${hint}`);
    this.name = 'HttpStatusError';
  }
}

/**
 * GET a JSON document with a timeout. Any failure (network, timeout, non-2xx, not JSON) rejects
 * with a {@link DirectorySourceError} whose message holds no credential.
 */
export async function getJson(
  url: URL,
  options: HttpSourceOptions & { headers: Record<string, string> },
): Promise<unknown> {
  const doFetch = options.fetch ?? fetch;
  let response: Response;
  try {
    response = await doFetch(url, {
      method: 'GET',
      headers: { accept: 'application/json', ...options.headers },
      signal: AbortSignal.timeout(options.timeoutMs),
      redirect: 'error',
    });
  } catch (err) {
    throw new DirectorySourceError(`GET ${describeUrl(url)} failed: ${reason(err)}`, { cause: err });
  }
  if (!response.ok) {
    await response.body?.cancel().catch(() => undefined);
    throw new HttpStatusError(response.status, url);
  }
  try {
    return (await response.json()) as unknown;
  } catch (err) {
    throw new DirectorySourceError(`GET ${describeUrl(url)}: the answer is not JSON (${reason(err)})`, {
      cause: err,
    });
  }
}

/** One line for an error, with its cause (ECONNREFUSED, a timeout). */
export function reason(err: unknown): string {
  if (!(err instanceof Error)) return String(err);
  if (err.name === 'TimeoutError') return 'timed out';
  const cause = err.cause instanceof Error ? `: ${err.cause.message}` : '';
  return `${err.message}${cause}`;
}

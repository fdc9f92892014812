/**
 * A SCIM 2.0 service provider (RFC 7643, RFC 7644) for identity providers that push users, as
 * Authentik's SCIM provider does: it creates, replaces, patches and deletes `/Users` (and keeps
 * `/Groups` memberships) and turns each user into a {@link DirectoryUser}:
 *
 * - mailbox: the primary email (else the first one), or the userName when it is an address;
 * - aliases: the other emails, and `aliases` of the extension schema {@link SCIM_MAIL_EXTENSION};
 * - active: `active` (true when absent);
 * - groups: the display names of the `/Groups` the user is a member of, or of a `groups`
 *   attribute when the provider sends one.
 *
 * With `domains` set, only addresses in those domains count (others are ignored). Requests need
 * `Authorization: Bearer <token>`, compared in constant time; the token is never logged. Errors use
 * the SCIM error schema. Ids are derived from the userName, so a provider that lost track of a user
 * (after a restart of sasl-gate, say) finds it again under the same id.
 *
 * The SCIM-only attributes (userName, name, externalId, the emails as sent) are kept in memory;
 * after a restart a user's resource is rebuilt from the directory (userName = mailbox) until the
 * provider sends it again, which Authentik does at least hourly.
 */
import { createHash, randomUUID, timingSafeEqual } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Logger } from 'pino';
import { ConfigError, GateError } from '../errors.js';
import { parseNetworks } from '../net/networks.js';
import { safeAddress } from './dovecot.js';
import type { AddressVerdict, DirectoryUser } from './model.js';

// ---------------------------------------------------------------------------------------------
// The directory as the SCIM endpoint sees it.
// ---------------------------------------------------------------------------------------------

/** What the SCIM endpoint needs from the directory (the `Directory` class offers it). */
export interface DirectoryView {
  lookup(address: string): AddressVerdict | Promise<AddressVerdict>;
  upsert(user: DirectoryUser): void | Promise<void>;
  /** Removes a user (the directory decides about grace for mail). */
  remove(id: string): void | Promise<void>;
  /** Every user the directory holds, active or not; not removed ones. */
  list(): Iterable<DirectoryUser> | Promise<Iterable<DirectoryUser>>;
  /** One user by id; when absent, `list()` is searched. */
  get?(id: string): DirectoryUser | undefined | Promise<DirectoryUser | undefined>;
}

export const SCIM_USER_SCHEMA = 'urn:ietf:params:scim:schemas:core:2.0:User';
export const SCIM_GROUP_SCHEMA = 'urn:ietf:params:scim:schemas:core:2.0:Group';
/** sasl-gate's extension for mail aliases: `{ "<urn>": { "aliases": ["info@example.com"] } }`. */
export const SCIM_MAIL_EXTENSION = 'urn:sasl-gate:params:scim:schemas:extension:mail:2.0:User';
export const SCIM_LIST_RESPONSE = 'urn:ietf:params:scim:api:messages:2.0:ListResponse';
export const SCIM_PATCH_OP = 'urn:ietf:params:scim:api:messages:2.0:PatchOp';
export const SCIM_ERROR = 'urn:ietf:params:scim:api:messages:2.0:Error';
const SCIM_SPC_SCHEMA = 'urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig';
const SCIM_RESOURCE_TYPE_SCHEMA = 'urn:ietf:params:scim:schemas:core:2.0:ResourceType';
const SCIM_SCHEMA_SCHEMA = 'urn:ietf:params:scim:schemas:core:2.0:Schema';
const SCIM_SEARCH_REQUEST = 'urn:ietf:params:scim:api:messages:2.0:SearchRequest';
const CONTENT_TYPE = 'application/scim+json; charset=utf-8';

export interface ScimOptions {
  /** The bearer token the provider sends (Authentik: the provider's "Token"). */
  token: string;
  /** Where the endpoint lives; `/scim/v2` by default (Authentik's provider URL is `https://host/scim/v2`). */
  basePath?: string;
  /** Mail domains: addresses elsewhere are ignored. Unset, every address counts. */
  domains?: readonly string[];
  /** Client addresses or CIDR blocks allowed to connect (403 for others); unset, any. */
  allowFrom?: readonly string[];
  /** Largest request body; 1 MiB by default. */
  maxBodyBytes?: number;
  /** Most resources in one list response; 1000 by default. */
  maxResults?: number;
  /** Called after every change with the ids of the users whose directory entry changed (e.g. to rewrite the Dovecot passwd-file). */
  onChange?: (ids: string[]) => void;
  log?: Pick<Logger, 'info' | 'warn' | 'debug'>;
  /** Clock, for tests. */
  now?: () => Date;
}

/** A node:http request listener. */
export type ScimHandler = (req: IncomingMessage, res: ServerResponse) => void;

// ---------------------------------------------------------------------------------------------
// Errors.
// ---------------------------------------------------------------------------------------------

export type ScimErrorType =
  | 'invalidFilter'
  | 'tooMany'
  | 'uniqueness'
  | 'mutability'
  | 'invalidSyntax'
  | 'invalidPath'
  | 'noTarget'
  | 'invalidValue'
  | 'invalidVers'
  | 'sensitive';

/** Stable codes of SCIM refusals, by HTTP status. */
const SCIM_CODES: Record<number, string> = {
  400: 'scim_bad_request',
  401: 'scim_unauthorized',
  403: 'scim_forbidden',
  404: 'scim_not_found',
  405: 'scim_method_not_allowed',
  409: 'scim_conflict',
  413: 'scim_too_large',
  501: 'scim_not_implemented',
};

/** A SCIM request refused with a status and a SCIM error body (RFC 7644 3.12); the detail is shown to the client. */
export class ScimError extends GateError {
  constructor(
    readonly status: number,
    readonly detail: string,
    readonly scimType?: ScimErrorType,
  ) {
    super(SCIM_CODES[status] ?? 'scim_internal', detail, { clientMessage: detail });
    this.name = 'ScimError';
  }

  toJSON(): Record<string, unknown> {
    return {
      schemas: [SCIM_ERROR],
      status: String(this.status),
      ...(this.scimType === undefined ? {} : { scimType: this.scimType }),
      detail: this.detail,
    };
  }
}

const badValue = (detail: string): ScimError => new ScimError(400, detail, 'invalidValue');
const badSyntax = (detail: string): ScimError => new ScimError(400, detail, 'invalidSyntax');
const notFound = (what: string): ScimError => new ScimError(404, `${what} not found`);

// ---------------------------------------------------------------------------------------------
// Small value helpers.
// ---------------------------------------------------------------------------------------------

type Json = Record<string, unknown>;

const isObject = (v: unknown): v is Json => typeof v === 'object' && v !== null && !Array.isArray(v);

/** Looks a key up case-insensitively (SCIM attribute names are case-insensitive). */
function field(obj: Json, name: string): unknown {
  if (name in obj) return obj[name];
  const lower = name.toLowerCase();
  for (const [k, v] of Object.entries(obj)) if (k.toLowerCase() === lower) return v;
  return undefined;
}

function optionalString(v: unknown, what: string, max = 1024): string | undefined {
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'string') throw badValue(`${what} must be a string`);
  if (v.length > max) throw badValue(`${what} is longer than ${max} characters`);
  return v;
}

/** Booleans, and the strings "True"/"False" some providers (Entra ID) send. */
function toBoolean(v: unknown, what: string): boolean {
  if (typeof v === 'boolean') return v;
  if (typeof v === 'string') {
    const lower = v.trim().toLowerCase();
    if (lower === 'true') return true;
    if (lower === 'false') return false;
  }
  throw badValue(`${what} must be true or false`);
}

const asArray = (v: unknown): unknown[] => (v === undefined || v === null ? [] : Array.isArray(v) ? v : [v]);

/** A stable, UUID-shaped id for a name (so a provider finds the same resource again). */
function stableId(kind: 'user' | 'group', name: string): string {
  const hex = createHash('sha256').update(`sasl-gate scim ${kind}\0${name}`, 'utf8').digest('hex');
  // Shaped like a version-5-style UUID (hash based).
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-5${hex.slice(13, 16)}-${((parseInt(hex.slice(16, 17), 16) & 0x3) | 0x8).toString(16)}${hex.slice(17, 20)}-${hex.slice(20, 32)}`;
}

export const scimUserId = (userName: string): string => stableId('user', userName.trim().toLowerCase());
export const scimGroupId = (displayName: string): string => stableId('group', displayName);

// ---------------------------------------------------------------------------------------------
// Filters (`attr eq value`) and PATCH paths.
// ---------------------------------------------------------------------------------------------

export interface ScimFilter {
  /** Attribute path, lower case, without a schema URN prefix (e.g. `username`, `emails.value`). */
  attribute: string;
  value: string | boolean | number | null;
}

const CORE_PREFIXES = [SCIM_USER_SCHEMA, SCIM_GROUP_SCHEMA].map((u) => `${u.toLowerCase()}:`);

function stripCorePrefix(path: string): string {
  const lower = path.toLowerCase();
  for (const p of CORE_PREFIXES) if (lower.startsWith(p)) return path.slice(p.length);
  return path;
}

/**
 * Parses the filters providers send when looking a resource up: `<attribute> eq <value>`, the
 * value quoted (`"alice"`) or, as Authentik sends it, bare (`userName eq alice`).
 */
export function parseScimFilter(text: string): ScimFilter {
  const match = /^\s*([A-Za-z][\w$:.-]*)\s+([A-Za-z]{2})\s+(.*?)\s*$/s.exec(text);
  if (!match) throw new ScimError(400, `unsupported filter ${JSON.stringify(text.slice(0, 200))}`, 'invalidFilter');
  const [, attr, op, raw] = match as unknown as [string, string, string, string];
  if (op.toLowerCase() !== 'eq') throw new ScimError(400, `only "eq" filters are supported, not "${op}"`, 'invalidFilter');
  let value: ScimFilter['value'];
  if (raw.startsWith('"')) {
    try {
      value = JSON.parse(raw) as string;
    } catch {
      throw new ScimError(400, 'the filter value is not a valid quoted string', 'invalidFilter');
    }
    if (typeof value !== 'string') throw new ScimError(400, 'the filter value is not a valid quoted string', 'invalidFilter');
  } else if (/^(true|false)$/i.test(raw)) value = raw.toLowerCase() === 'true';
  else if (/^null$/i.test(raw)) value = null;
  else if (raw === '') throw new ScimError(400, 'the filter has no value', 'invalidFilter');
  else value = raw;
  return { attribute: stripCorePrefix(attr).toLowerCase(), value };
}

interface PatchPath {
  /** The attribute of sasl-gate's extension (`aliases`), not of the core schema. */
  extension: boolean;
  /** Some other schema's attribute: accepted and ignored. */
  foreign: boolean;
  attribute: string;
  filter?: ScimFilter;
  sub?: string;
}

export function parsePatchPath(path: string): PatchPath {
  let rest = path.trim();
  let extension = false;
  const lower = rest.toLowerCase();
  const ext = `${SCIM_MAIL_EXTENSION.toLowerCase()}:`;
  if (lower.startsWith(ext)) {
    extension = true;
    rest = rest.slice(ext.length);
  } else if (CORE_PREFIXES.some((p) => lower.startsWith(p))) {
    rest = stripCorePrefix(rest);
  } else if (lower.startsWith('urn:')) {
    return { extension: false, foreign: true, attribute: rest.toLowerCase() };
  }
  const match = /^([A-Za-z][\w$-]*)(?:\[(.+)\])?(?:\.([A-Za-z][\w$-]*))?$/s.exec(rest);
  if (!match) throw new ScimError(400, `unsupported path ${JSON.stringify(path.slice(0, 200))}`, 'invalidPath');
  const [, attribute, filterText, sub] = match;
  return {
    extension,
    foreign: false,
    attribute: attribute!.toLowerCase(),
    ...(filterText === undefined ? {} : { filter: parseScimFilter(filterText) }),
    ...(sub === undefined ? {} : { sub: sub.toLowerCase() }),
  };
}

/** A key of a PATCH value object as a path, or undefined when it is no attribute path (such keys are ignored). */
function tryParsePatchPath(key: string): PatchPath | undefined {
  try {
    return parsePatchPath(key);
  } catch {
    return undefined;
  }
}

// ---------------------------------------------------------------------------------------------
// Users: SCIM state ⇄ directory user.
// ---------------------------------------------------------------------------------------------

interface Email {
  value: string;
  type?: string;
  primary?: boolean;
}

/** A user as SCIM sees it (what the provider sent, normalised). */
interface UserState {
  userName: string;
  externalId?: string;
  displayName?: string;
  name?: Record<string, string>;
  active: boolean;
  emails: Email[];
  /** From sasl-gate's extension. */
  aliases: string[];
  /** Group names; undefined keeps what the directory has. */
  groups?: string[];
}

interface UserRecord {
  state: UserState;
  /** What the state mapped to, to tell whether the directory changed the user since. */
  mailbox: string;
  aliases: string[];
  created: string;
  lastModified: string;
}

const NAME_KEYS = ['formatted', 'familyName', 'givenName', 'middleName', 'honorificPrefix', 'honorificSuffix'];

function parseName(v: unknown): Record<string, string> | undefined {
  if (v === undefined || v === null) return undefined;
  if (!isObject(v)) throw badValue('name must be an object');
  const out: Record<string, string> = {};
  for (const key of NAME_KEYS) {
    const s = optionalString(field(v, key), `name.${key}`);
    if (s !== undefined) out[key] = s;
  }
  return out;
}

function parseEmail(v: unknown): Email {
  if (typeof v === 'string') return { value: v.trim().toLowerCase() };
  if (!isObject(v)) throw badValue('emails must be objects with a value');
  const value = optionalString(field(v, 'value'), 'emails.value', 320);
  if (value === undefined || value.trim() === '') throw badValue('an email has no value');
  const type = optionalString(field(v, 'type'), 'emails.type', 64);
  const primary = field(v, 'primary');
  return {
    value: value.trim().toLowerCase(),
    ...(type === undefined ? {} : { type }),
    ...(primary === undefined || primary === null ? {} : { primary: toBoolean(primary, 'emails.primary') }),
  };
}

function parseAliases(v: unknown): string[] {
  return asArray(v).map((a) => {
    const s = typeof a === 'string' ? a : isObject(a) ? field(a, 'value') : undefined;
    if (typeof s !== 'string' || s.trim() === '') throw badValue('aliases must be addresses');
    return s.trim().toLowerCase();
  });
}

function parseGroupNames(v: unknown): string[] {
  return asArray(v).map((g) => {
    const s = typeof g === 'string' ? g : isObject(g) ? (field(g, 'display') ?? field(g, 'value')) : undefined;
    if (typeof s !== 'string' || s.trim() === '') throw badValue('groups must have a display name');
    return s.trim();
  });
}

/** The state a POST or PUT body describes. */
function userStateFromBody(body: Json): UserState {
  const userName = optionalString(field(body, 'userName'), 'userName', 320)?.trim();
  if (userName === undefined || userName === '') throw badValue('userName is required');
  const active = field(body, 'active');
  const extension = body[SCIM_MAIL_EXTENSION] ?? field(body, SCIM_MAIL_EXTENSION);
  if (extension !== undefined && !isObject(extension)) throw badValue(`${SCIM_MAIL_EXTENSION} must be an object`);
  const groups = field(body, 'groups');
  const externalId = optionalString(field(body, 'externalId'), 'externalId');
  const displayName = optionalString(field(body, 'displayName'), 'displayName');
  const name = parseName(field(body, 'name'));
  return {
    userName,
    ...(externalId === undefined ? {} : { externalId }),
    ...(displayName === undefined ? {} : { displayName }),
    ...(name === undefined ? {} : { name }),
    active: active === undefined || active === null ? true : toBoolean(active, 'active'),
    emails: asArray(field(body, 'emails')).map(parseEmail),
    aliases: extension === undefined ? [] : parseAliases(field(extension, 'aliases')),
    ...(groups === undefined || groups === null ? {} : { groups: parseGroupNames(groups) }),
  };
}

/** The state of a user the directory has but this process has no SCIM record of (e.g. after a restart). */
function userStateFromDirectory(user: DirectoryUser): UserState {
  return {
    userName: user.mailbox,
    active: user.active,
    emails: [{ value: user.mailbox, type: 'work', primary: true }],
    aliases: [...user.aliases],
  };
}

function inDomains(address: string, domains: readonly string[] | undefined): boolean {
  if (domains === undefined || domains.length === 0) return true;
  const domain = address.slice(address.lastIndexOf('@') + 1);
  return domains.includes(domain);
}

/** Mailbox and aliases for a state; throws a SCIM 400 when it names no usable address. */
function addressesOf(state: UserState, domains: readonly string[] | undefined): { mailbox: string; aliases: string[] } {
  const check = (address: string, what: string): boolean => {
    if (safeAddress(address) === undefined) throw badValue(`${what} ${JSON.stringify(address.slice(0, 320))} is not a mail address sasl-gate can serve`);
    return inDomains(address, domains);
  };
  const emails = state.emails.filter((e) => check(e.value, 'email'));
  const primary = emails.find((e) => e.primary === true) ?? emails.find((e) => e.type?.toLowerCase() === 'work') ?? emails[0];
  const userName = state.userName.toLowerCase();
  const userNameIsAddress = userName.includes('@') && safeAddress(userName) !== undefined && inDomains(userName, domains);
  const mailbox = primary?.value ?? (userNameIsAddress ? userName : undefined);
  if (mailbox === undefined) {
    throw badValue(
      domains === undefined || domains.length === 0
        ? 'the user has no email and its userName is no mail address'
        : `the user has no address in the mail domains (${domains.join(', ')})`,
    );
  }
  const extension = state.aliases.filter((a) => check(a, 'alias'));
  const aliases = [...new Set([...emails.map((e) => e.value), ...extension])].filter((a) => a !== mailbox).sort();
  return { mailbox, aliases };
}

// ---------------------------------------------------------------------------------------------
// PATCH on a user state.
// ---------------------------------------------------------------------------------------------

type PatchOpName = 'add' | 'replace' | 'remove';

function matchesFilter(entry: Json | Email, filter: ScimFilter): boolean {
  const actual = field(entry as Json, filter.attribute);
  if (typeof actual === 'string' && typeof filter.value === 'string') return actual.toLowerCase() === filter.value.toLowerCase();
  return actual === filter.value || (actual === undefined && filter.value === null);
}

function patchEmails(state: UserState, op: PatchOpName, path: PatchPath, value: unknown): void {
  if (path.filter === undefined && path.sub === undefined) {
    if (op === 'remove') {
      if (value === undefined) state.emails = [];
      else {
        const drop = new Set(asArray(value).map(parseEmail).map((e) => e.value));
        state.emails = state.emails.filter((e) => !drop.has(e.value));
      }
      return;
    }
    const incoming = asArray(value).map(parseEmail);
    if (op === 'replace') state.emails = incoming;
    else {
      for (const e of incoming) {
        const existing = state.emails.find((x) => x.value === e.value);
        if (existing) Object.assign(existing, e);
        else state.emails.push(e);
      }
    }
    // At most one primary (RFC 7643 2.4): the newest wins.
    const primaries = state.emails.filter((e) => e.primary === true);
    for (const e of primaries.slice(0, -1)) e.primary = false;
    return;
  }
  const targets = path.filter === undefined ? state.emails.slice(0, 1) : state.emails.filter((e) => matchesFilter(e, path.filter!));
  if (op === 'remove') {
    if (path.sub === undefined || path.sub === 'value') state.emails = state.emails.filter((e) => !targets.includes(e));
    else for (const t of targets) delete (t as unknown as Json)[path.sub];
    return;
  }
  const apply = (entry: Email): void => {
    if (path.sub === undefined) {
      if (!isObject(value)) throw badValue('an email must be an object');
      Object.assign(entry, parseEmail({ ...entry, ...value }));
    } else if (path.sub === 'value') {
      if (typeof value !== 'string' || value.trim() === '') throw badValue('emails.value must be an address');
      entry.value = value.trim().toLowerCase();
    } else if (path.sub === 'primary') entry.primary = toBoolean(value, 'emails.primary');
    else if (path.sub === 'type') entry.type = optionalString(value, 'emails.type', 64) ?? '';
  };
  if (targets.length > 0) {
    for (const t of targets) apply(t);
    return;
  }
  // `replace emails[type eq "work"].value` on a user without a work address creates one (as Entra ID expects).
  const seed: Email = { value: '' };
  if (path.filter !== undefined && typeof path.filter.value === 'string' && path.filter.attribute === 'type') seed.type = path.filter.value;
  if (path.filter !== undefined && typeof path.filter.value === 'string' && path.filter.attribute === 'value') seed.value = path.filter.value.toLowerCase();
  if (path.filter !== undefined && path.filter.attribute === 'primary' && path.filter.value === true) seed.primary = true;
  apply(seed);
  if (seed.value === '') throw new ScimError(400, 'no email matches the path', 'noTarget');
  state.emails.push(seed);
}

function patchList(current: string[], op: PatchOpName, incoming: string[] | undefined): string[] {
  if (op === 'remove') {
    if (incoming === undefined) return [];
    const drop = new Set(incoming.map((s) => s.toLowerCase()));
    return current.filter((s) => !drop.has(s.toLowerCase()));
  }
  if (op === 'replace') return incoming ?? [];
  return [...new Set([...current, ...(incoming ?? [])])];
}

function patchUserAttribute(state: UserState, op: PatchOpName, rawPath: string, value: unknown): void {
  const path = parsePatchPath(rawPath);
  if (path.foreign) {
    // Another schema's attribute: the enterprise extension, say. Only an object naming ours matters.
    return;
  }
  if (path.extension) {
    if (path.attribute !== 'aliases') return;
    state.aliases = patchList(state.aliases, op, op === 'remove' && value === undefined ? undefined : parseAliases(value));
    return;
  }
  const removing = op === 'remove';
  switch (path.attribute) {
    case 'active':
      state.active = removing ? true : toBoolean(value, 'active');
      return;
    case 'username': {
      if (removing) throw new ScimError(400, 'userName is required and cannot be removed', 'mutability');
      const userName = optionalString(value, 'userName', 320)?.trim();
      if (!userName) throw badValue('userName is required');
      state.userName = userName;
      return;
    }
    case 'externalid':
    case 'displayname': {
      const key = path.attribute === 'externalid' ? 'externalId' : 'displayName';
      const s = removing ? undefined : optionalString(value, key);
      if (s === undefined) delete state[key];
      else state[key] = s;
      return;
    }
    case 'name': {
      if (path.sub === undefined) {
        if (removing) delete state.name;
        else {
          const name = parseName(value) ?? {};
          state.name = op === 'add' ? { ...state.name, ...name } : name;
        }
        return;
      }
      const key = NAME_KEYS.find((k) => k.toLowerCase() === path.sub);
      if (key === undefined) return;
      const name = { ...state.name };
      const s = removing ? undefined : optionalString(value, `name.${key}`);
      if (s === undefined) delete name[key];
      else name[key] = s;
      state.name = name;
      return;
    }
    case 'emails':
      patchEmails(state, op, path, value);
      return;
    case 'groups': {
      const incoming = removing && value === undefined ? undefined : parseGroupNames(value);
      state.groups = patchList(state.groups ?? [], op, incoming);
      return;
    }
    default:
      // Attributes sasl-gate does not keep (title, phoneNumbers, locale, ...) are accepted and ignored.
      return;
  }
}

/** Applies a PatchOp request body to a user state (in place). */
export function applyUserPatch(state: UserState, body: unknown): void {
  const operations = isObject(body) ? field(body, 'Operations') : undefined;
  if (!Array.isArray(operations)) throw badSyntax('a PATCH body needs an "Operations" array');
  if (operations.length > 1000) throw new ScimError(400, 'too many operations in one PATCH', 'tooMany');
  for (const raw of operations) {
    if (!isObject(raw)) throw badSyntax('each operation must be an object');
    const opText = field(raw, 'op');
    const op = typeof opText === 'string' ? opText.toLowerCase() : '';
    if (op !== 'add' && op !== 'replace' && op !== 'remove') throw badSyntax(`unknown operation ${JSON.stringify(opText)}`);
    const path = field(raw, 'path');
    const value = field(raw, 'value');
    if (path !== undefined && path !== null && path !== '') {
      if (typeof path !== 'string') throw new ScimError(400, 'path must be a string', 'invalidPath');
      patchUserAttribute(state, op, path, value);
      continue;
    }
    if (op === 'remove') throw new ScimError(400, 'a remove operation needs a path', 'noTarget');
    if (!isObject(value)) throw badValue('an operation without a path needs an object value');
    for (const [key, v] of Object.entries(value)) {
      if (key.toLowerCase() === SCIM_MAIL_EXTENSION.toLowerCase()) {
        if (!isObject(v)) throw badValue(`${SCIM_MAIL_EXTENSION} must be an object`);
        for (const [extKey, extValue] of Object.entries(v)) patchUserAttribute(state, op, `${SCIM_MAIL_EXTENSION}:${extKey}`, extValue);
      } else if (key.toLowerCase() === 'schemas' || key.toLowerCase() === 'id' || key.toLowerCase() === 'meta') {
        continue;
      } else if (tryParsePatchPath(key) !== undefined) {
        // Keys may be paths themselves (`name.givenName`, `emails[type eq "work"].value`); others are not ours.
        patchUserAttribute(state, op, key, v);
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------
// The handler.
// ---------------------------------------------------------------------------------------------

interface GroupRecord {
  displayName: string;
  externalId?: string;
  created: string;
  lastModified: string;
}

interface Request {
  method: string;
  segments: string[];
  query: URLSearchParams;
  body: unknown;
  baseUrl: string;
}

interface Reply {
  status: number;
  body?: unknown;
  location?: string;
}

const sameText = (a: string, b: string): boolean => a.toLowerCase() === b.toLowerCase();

/** Reads a request body up to `limit` bytes; rejects with a 413 ScimError beyond it. */
function readBody(req: IncomingMessage, limit: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const declared = Number(req.headers['content-length']);
    if (Number.isFinite(declared) && declared > limit) {
      reject(new ScimError(413, `the request body exceeds ${limit} bytes`));
      return;
    }
    const chunks: Buffer[] = [];
    let size = 0;
    let done = false;
    req.on('data', (chunk: Buffer) => {
      if (done) return;
      size += chunk.length;
      if (size > limit) {
        done = true;
        reject(new ScimError(413, `the request body exceeds ${limit} bytes`));
        return;
      }
      chunks.push(chunk);
    });
    req.on('end', () => {
      if (!done) {
        done = true;
        resolve(Buffer.concat(chunks));
      }
    });
    req.on('error', (err) => {
      if (!done) {
        done = true;
        reject(err);
      }
    });
  });
}

/** Compares the presented token with the configured one in constant time (both hashed to equal length). */
function tokenMatches(header: string | undefined, expected: Buffer): boolean {
  if (header === undefined) return false;
  const match = /^Bearer\s+(\S+)\s*$/i.exec(header);
  const presented = createHash('sha256').update(match?.[1] ?? '', 'utf8').digest();
  return timingSafeEqual(presented, expected) && match !== null;
}

/**
 * Creates the SCIM endpoint as a node:http request listener. Requests outside `basePath` get a
 * SCIM 404, so mount it on its own listener or route `basePath` to it.
 */
export function createScimHandler(directory: DirectoryView, options: ScimOptions): ScimHandler {
  if (options.token.length === 0) throw new ConfigError('directory.scim.token', 'the SCIM token must not be empty');
  const expected = createHash('sha256').update(options.token, 'utf8').digest();
  const basePath = (options.basePath ?? '/scim/v2').replace(/\/+$/, '');
  const maxBodyBytes = options.maxBodyBytes ?? 1024 * 1024;
  const maxResults = options.maxResults ?? 1000;
  const domains = options.domains?.map((d) => d.toLowerCase());
  const allowed = options.allowFrom === undefined ? undefined : parseNetworks(options.allowFrom);
  const now = options.now ?? (() => new Date());
  const log = options.log;
  const startedAt = now().toISOString();

  const users = new Map<string, UserRecord>();
  const groups = new Map<string, GroupRecord>();
  /** Mutations run one at a time: a PATCH reads, changes and writes a user. */
  let lock: Promise<unknown> = Promise.resolve();
  const exclusive = <T>(fn: () => Promise<T>): Promise<T> => {
    const run = lock.then(fn, fn);
    lock = run.catch(() => undefined);
    return run;
  };

  const changed = (ids: string[]): void => {
    if (ids.length === 0) return;
    try {
      options.onChange?.(ids);
    } catch {
      // A listener's failure is not the provider's.
    }
  };

  const allUsers = async (): Promise<DirectoryUser[]> => [...(await directory.list())];
  const getUser = async (id: string): Promise<DirectoryUser | undefined> =>
    directory.get !== undefined ? directory.get(id) : (await allUsers()).find((u) => u.id === id);

  // --- users ------------------------------------------------------------------------------

  const stateOf = (user: DirectoryUser): UserState => {
    const record = users.get(user.id);
    // A record that no longer maps to what the directory holds (another source changed the user) is stale.
    if (record !== undefined && record.mailbox === user.mailbox && record.aliases.join(',') === [...user.aliases].sort().join(',')) {
      return structuredClone(record.state);
    }
    return { ...userStateFromDirectory(user), ...(record === undefined ? {} : { userName: record.state.userName }) };
  };

  const userResource = (user: DirectoryUser, baseUrl: string): Json => {
    const record = users.get(user.id);
    const state = stateOf(user);
    const location = `${baseUrl}/Users/${user.id}`;
    return {
      schemas: [SCIM_USER_SCHEMA, SCIM_MAIL_EXTENSION],
      id: user.id,
      ...(state.externalId === undefined ? {} : { externalId: state.externalId }),
      userName: state.userName,
      ...(state.name === undefined ? {} : { name: state.name }),
      ...(state.displayName === undefined ? {} : { displayName: state.displayName }),
      active: user.active,
      emails: state.emails,
      groups: user.groups.map((g) => ({ value: groupIdOf(g), display: g, $ref: `${baseUrl}/Groups/${groupIdOf(g)}` })),
      [SCIM_MAIL_EXTENSION]: { aliases: state.aliases },
      meta: {
        resourceType: 'User',
        created: record?.created ?? startedAt,
        lastModified: record?.lastModified ?? startedAt,
        location,
      },
    };
  };

  /** Maps, checks for conflicts and stores a user state under `id`. */
  const storeUser = async (id: string, state: UserState, previous: DirectoryUser | undefined): Promise<DirectoryUser> => {
    const { mailbox, aliases } = addressesOf(state, domains);
    for (const address of [mailbox, ...aliases]) {
      const verdict = await directory.lookup(address);
      if (verdict.kind === 'unknown' || verdict.user.id === id) continue;
      // A removed user's addresses, still delivered during their grace period, may go to a new user;
      // those of a user who exists (disabled or not) may not.
      if (verdict.kind === 'grace' && (await getUser(verdict.user.id)) === undefined) continue;
      throw new ScimError(409, `the address ${address} belongs to another user`, 'uniqueness');
    }
    for (const [otherId, record] of users) {
      if (otherId !== id && sameText(record.state.userName, state.userName) && (await getUser(otherId)) !== undefined) {
        throw new ScimError(409, `the userName ${state.userName} is taken`, 'uniqueness');
      }
    }
    const user: DirectoryUser = {
      id,
      mailbox,
      aliases,
      active: state.active,
      groups: [...new Set(state.groups ?? previous?.groups ?? [])],
    };
    try {
      await directory.upsert(user);
    } catch (err) {
      // The directory refusing the user as input (not failing) is the provider's 400.
      if (err instanceof GateError && !err.temporary) throw badValue(err.clientMessage ?? err.message);
      throw err;
    }
    const stamp = now().toISOString();
    const kept: UserState = { ...state };
    delete kept.groups;
    users.set(id, {
      state: kept,
      mailbox,
      aliases,
      created: users.get(id)?.created ?? (previous === undefined ? stamp : startedAt),
      lastModified: stamp,
    });
    return user;
  };

  const userMatches = (user: DirectoryUser, filter: ScimFilter): boolean => {
    const state = stateOf(user);
    const value = filter.value;
    switch (filter.attribute) {
      case 'username':
        return typeof value === 'string' && (sameText(state.userName, value) || scimUserId(value) === user.id);
      case 'id':
        return value === user.id;
      case 'externalid':
        return value === state.externalId;
      case 'emails':
      case 'emails.value':
        return typeof value === 'string' && (user.mailbox === value.toLowerCase() || user.aliases.includes(value.toLowerCase()));
      case 'active':
        return value === user.active;
      case 'displayname':
        return typeof value === 'string' && state.displayName !== undefined && sameText(state.displayName, value);
      default:
        throw new ScimError(400, `filtering on ${filter.attribute} is not supported`, 'invalidFilter');
    }
  };

  // --- groups -----------------------------------------------------------------------------

  const groupIdOf = (name: string): string => {
    for (const [id, g] of groups) if (g.displayName === name) return id;
    return scimGroupId(name);
  };

  /** Known groups: registered ones, and the names users carry (after a restart, say). */
  const allGroups = async (): Promise<Map<string, GroupRecord>> => {
    const out = new Map(groups);
    const names = new Set([...groups.values()].map((g) => g.displayName));
    for (const user of await allUsers()) {
      for (const name of user.groups) {
        if (!names.has(name)) {
          names.add(name);
          out.set(scimGroupId(name), { displayName: name, created: startedAt, lastModified: startedAt });
        }
      }
    }
    return out;
  };

  const findGroup = async (id: string): Promise<GroupRecord | undefined> => groups.get(id) ?? (await allGroups()).get(id);

  const groupResource = async (id: string, group: GroupRecord, baseUrl: string): Promise<Json> => {
    const members = (await allUsers())
      .filter((u) => u.groups.includes(group.displayName))
      .map((u) => ({ value: u.id, display: u.mailbox, $ref: `${baseUrl}/Users/${u.id}` }));
    return {
      schemas: [SCIM_GROUP_SCHEMA],
      id,
      ...(group.externalId === undefined ? {} : { externalId: group.externalId }),
      displayName: group.displayName,
      // Always present, even empty: Authentik only adds members to a group that lists some.
      members,
      meta: { resourceType: 'Group', created: group.created, lastModified: group.lastModified, location: `${baseUrl}/Groups/${id}` },
    };
  };

  /** Sets group membership for users (add, remove, or exactly these), returning the ids changed. */
  const setMembership = async (
    name: string,
    memberIds: string[],
    mode: 'add' | 'remove' | 'exact',
  ): Promise<string[]> => {
    const wanted = new Set(memberIds);
    const changedIds: string[] = [];
    for (const user of await allUsers()) {
      const has = user.groups.includes(name);
      const should = mode === 'exact' ? wanted.has(user.id) : mode === 'add' ? has || wanted.has(user.id) : has && !wanted.has(user.id);
      if (has === should) continue;
      await directory.upsert({ ...user, groups: should ? [...user.groups, name] : user.groups.filter((g) => g !== name) });
      changedIds.push(user.id);
    }
    return changedIds;
  };

  const renameGroup = async (from: string, to: string): Promise<string[]> => {
    if (from === to) return [];
    const changedIds: string[] = [];
    for (const user of await allUsers()) {
      if (!user.groups.includes(from)) continue;
      await directory.upsert({ ...user, groups: [...new Set(user.groups.map((g) => (g === from ? to : g)))] });
      changedIds.push(user.id);
    }
    return changedIds;
  };

  const memberIdsOf = (v: unknown): string[] =>
    asArray(v).map((m) => {
      const id = typeof m === 'string' ? m : isObject(m) ? field(m, 'value') : undefined;
      if (typeof id !== 'string' || id === '') throw badValue('members need a value (the user id)');
      return id;
    });

  const groupNameFrom = (body: Json): string => {
    const name = optionalString(field(body, 'displayName'), 'displayName', 256)?.trim();
    if (!name) throw badValue('displayName is required');
    return name;
  };

  // --- routes -----------------------------------------------------------------------------

  const list = async (resources: Json[], query: URLSearchParams): Promise<Reply> => {
    const startIndex = Math.max(1, Number.parseInt(query.get('startIndex') ?? '1', 10) || 1);
    const countText = query.get('count');
    const parsedCount = countText === null ? maxResults : Number.parseInt(countText, 10);
    const count = Math.min(maxResults, Math.max(0, Number.isNaN(parsedCount) ? maxResults : parsedCount));
    const page = resources.slice(startIndex - 1, startIndex - 1 + count);
    return {
      status: 200,
      body: { schemas: [SCIM_LIST_RESPONSE], totalResults: resources.length, startIndex, itemsPerPage: page.length, Resources: page },
    };
  };

  const searchUsers = async (query: URLSearchParams, baseUrl: string): Promise<Reply> => {
    const filterText = query.get('filter');
    const filter = filterText === null || filterText.trim() === '' ? undefined : parseScimFilter(filterText);
    const found = (await allUsers())
      .filter((u) => filter === undefined || userMatches(u, filter))
      .sort((a, b) => (a.mailbox < b.mailbox ? -1 : a.mailbox > b.mailbox ? 1 : 0));
    return list(found.map((u) => userResource(u, baseUrl)), query);
  };

  const searchGroups = async (query: URLSearchParams, baseUrl: string): Promise<Reply> => {
    const filterText = query.get('filter');
    const filter = filterText === null || filterText.trim() === '' ? undefined : parseScimFilter(filterText);
    const entries = [...(await allGroups())].filter(([id, g]) => {
      if (filter === undefined) return true;
      switch (filter.attribute) {
        case 'displayname':
          return typeof filter.value === 'string' && sameText(g.displayName, filter.value);
        case 'id':
          return filter.value === id;
        case 'externalid':
          return filter.value === g.externalId;
        default:
          throw new ScimError(400, `filtering groups on ${filter.attribute} is not supported`, 'invalidFilter');
      }
    });
    entries.sort(([, a], [, b]) => (a.displayName < b.displayName ? -1 : 1));
    return list(await Promise.all(entries.map(([id, g]) => groupResource(id, g, baseUrl))), query);
  };

  const requireObject = (body: unknown): Json => {
    if (!isObject(body)) throw badSyntax('the request body must be a JSON object');
    return body;
  };

  const route = async (r: Request): Promise<Reply> => {
    const [resource, id, extra] = r.segments;
    if (extra !== undefined) throw notFound('resource');
    switch (resource) {
      case 'ServiceProviderConfig':
        if (r.method !== 'GET' || id !== undefined) break;
        return { status: 200, body: serviceProviderConfig(r.baseUrl, maxResults) };
      case 'ResourceTypes': {
        if (r.method !== 'GET') break;
        const types = resourceTypes(r.baseUrl);
        if (id === undefined) return list(types, r.query);
        const type = types.find((t) => t.id === id);
        if (type === undefined) throw notFound('resource type');
        return { status: 200, body: type };
      }
      case 'Schemas': {
        if (r.method !== 'GET') break;
        const schemas = schemaDefinitions(r.baseUrl);
        if (id === undefined) return list(schemas, r.query);
        const schema = schemas.find((s) => s.id === id);
        if (schema === undefined) throw notFound('schema');
        return { status: 200, body: schema };
      }
      case 'Users':
        return routeUsers(r, id);
      case 'Groups':
        return routeGroups(r, id);
      case 'Bulk':
        throw new ScimError(501, 'bulk operations are not supported');
      case 'Me':
        throw new ScimError(501, '/Me is not supported');
      default:
        throw notFound('resource');
    }
    throw new ScimError(405, `${r.method} is not supported here`);
  };

  const routeUsers = async (r: Request, id: string | undefined): Promise<Reply> => {
    if (id === undefined) {
      if (r.method === 'GET') return searchUsers(r.query, r.baseUrl);
      if (r.method !== 'POST') throw new ScimError(405, `${r.method} is not supported on /Users`);
      const state = userStateFromBody(requireObject(r.body));
      return exclusive(async () => {
        let newId = scimUserId(state.userName);
        const existing = await getUser(newId);
        if (existing !== undefined) {
          const record = users.get(newId);
          // The same userName: the provider creates what exists (409 tells it to look it up).
          if (record === undefined || sameText(record.state.userName, state.userName)) {
            throw new ScimError(409, `a user with userName ${state.userName} exists`, 'uniqueness');
          }
          // The id's first owner was renamed since; this new user gets a random id.
          newId = randomUUID();
        }
        const user = await storeUser(newId, state, undefined);
        log?.info({ event: 'scim_user_created', id: newId, mailbox: user.mailbox, active: user.active }, 'SCIM user created');
        changed([newId]);
        const body = userResource(user, r.baseUrl);
        return { status: 201, body, location: `${r.baseUrl}/Users/${newId}` };
      });
    }
    if (id === '.search') {
      if (r.method !== 'POST') throw new ScimError(405, 'use POST for .search');
      const body = requireObject(r.body);
      const query = new URLSearchParams();
      for (const key of ['filter', 'startIndex', 'count']) {
        const v = field(body, key);
        if (v !== undefined && v !== null) query.set(key, String(v));
      }
      return searchUsers(query, r.baseUrl);
    }
    switch (r.method) {
      case 'GET': {
        const user = await getUser(id);
        if (user === undefined) throw notFound('user');
        return { status: 200, body: userResource(user, r.baseUrl) };
      }
      case 'PUT': {
        const state = userStateFromBody(requireObject(r.body));
        return exclusive(async () => {
          const previous = await getUser(id);
          if (previous === undefined) throw notFound('user');
          const user = await storeUser(id, state, previous);
          log?.info({ event: 'scim_user_replaced', id, mailbox: user.mailbox, active: user.active }, 'SCIM user replaced');
          changed([id]);
          return { status: 200, body: userResource(user, r.baseUrl) };
        });
      }
      case 'PATCH': {
        const body = requireObject(r.body);
        return exclusive(async () => {
          const previous = await getUser(id);
          if (previous === undefined) throw notFound('user');
          const state = stateOf(previous);
          state.groups = [...previous.groups];
          applyUserPatch(state, body);
          const user = await storeUser(id, state, previous);
          log?.info({ event: 'scim_user_patched', id, mailbox: user.mailbox, active: user.active }, 'SCIM user patched');
          changed([id]);
          return { status: 200, body: userResource(user, r.baseUrl) };
        });
      }
      case 'DELETE':
        return exclusive(async () => {
          const previous = await getUser(id);
          if (previous === undefined) throw notFound('user');
          await directory.remove(id);
          users.delete(id);
          log?.info({ event: 'scim_user_deleted', id, mailbox: previous.mailbox }, 'SCIM user deleted');
          changed([id]);
          return { status: 204 };
        });
      default:
        throw new ScimError(405, `${r.method} is not supported on a user`);
    }
  };

  const routeGroups = async (r: Request, id: string | undefined): Promise<Reply> => {
    if (id === undefined) {
      if (r.method === 'GET') return searchGroups(r.query, r.baseUrl);
      if (r.method !== 'POST') throw new ScimError(405, `${r.method} is not supported on /Groups`);
      const body = requireObject(r.body);
      const name = groupNameFrom(body);
      const memberIds = memberIdsOf(field(body, 'members'));
      const externalId = optionalString(field(body, 'externalId'), 'externalId');
      return exclusive(async () => {
        // A name already known (a group users carry after a restart, say) is taken over, not refused.
        let groupId = scimGroupId(name);
        for (const [known, g] of groups) if (g.displayName === name) groupId = known;
        const stamp = now().toISOString();
        const group: GroupRecord = {
          displayName: name,
          ...(externalId === undefined ? {} : { externalId }),
          created: groups.get(groupId)?.created ?? stamp,
          lastModified: stamp,
        };
        groups.set(groupId, group);
        const ids = await setMembership(name, memberIds, 'add');
        log?.info({ event: 'scim_group_created', id: groupId, group: name, members: memberIds.length }, 'SCIM group created');
        changed(ids);
        return { status: 201, body: await groupResource(groupId, group, r.baseUrl), location: `${r.baseUrl}/Groups/${groupId}` };
      });
    }
    switch (r.method) {
      case 'GET': {
        const group = await findGroup(id);
        if (group === undefined) throw notFound('group');
        return { status: 200, body: await groupResource(id, group, r.baseUrl) };
      }
      case 'PUT': {
        const body = requireObject(r.body);
        const name = groupNameFrom(body);
        const members = field(body, 'members');
        const externalId = optionalString(field(body, 'externalId'), 'externalId');
        return exclusive(async () => {
          const group = await findGroup(id);
          if (group === undefined) throw notFound('group');
          const ids = await renameGroup(group.displayName, name);
          const updated: GroupRecord = {
            displayName: name,
            ...(externalId === undefined ? {} : { externalId }),
            created: group.created,
            lastModified: now().toISOString(),
          };
          groups.set(id, updated);
          if (members !== undefined) ids.push(...(await setMembership(name, memberIdsOf(members), 'exact')));
          changed([...new Set(ids)]);
          return { status: 200, body: await groupResource(id, updated, r.baseUrl) };
        });
      }
      case 'PATCH': {
        const body = requireObject(r.body);
        const operations = field(body, 'Operations');
        if (!Array.isArray(operations)) throw badSyntax('a PATCH body needs an "Operations" array');
        if (operations.length > 10_000) throw new ScimError(400, 'too many operations in one PATCH', 'tooMany');
        return exclusive(async () => {
          const group = await findGroup(id);
          if (group === undefined) throw notFound('group');
          const current: GroupRecord = { ...group };
          const ids: string[] = [];
          const members = async (op: PatchOpName, value: unknown, filter: ScimFilter | undefined): Promise<void> => {
            if (op === 'remove' && filter !== undefined) {
              if (filter.attribute !== 'value' || typeof filter.value !== 'string') throw new ScimError(400, 'members can be filtered by value only', 'invalidFilter');
              ids.push(...(await setMembership(current.displayName, [filter.value], 'remove')));
            } else if (op === 'remove' && value === undefined) {
              ids.push(...(await setMembership(current.displayName, [], 'exact')));
            } else {
              ids.push(...(await setMembership(current.displayName, memberIdsOf(value), op === 'replace' ? 'exact' : op)));
            }
          };
          for (const raw of operations) {
            if (!isObject(raw)) throw badSyntax('each operation must be an object');
            const opText = field(raw, 'op');
            const op = typeof opText === 'string' ? opText.toLowerCase() : '';
            if (op !== 'add' && op !== 'replace' && op !== 'remove') throw badSyntax(`unknown operation ${JSON.stringify(opText)}`);
            const pathText = field(raw, 'path');
            const value = field(raw, 'value');
            const entries: Array<[PatchPath, unknown]> = [];
            if (typeof pathText === 'string' && pathText !== '') entries.push([parsePatchPath(pathText), value]);
            else {
              if (op === 'remove') throw new ScimError(400, 'a remove operation needs a path', 'noTarget');
              if (!isObject(value)) throw badValue('an operation without a path needs an object value');
              for (const [k, v] of Object.entries(value)) {
                const path = tryParsePatchPath(k);
                if (path !== undefined) entries.push([path, v]);
              }
            }
            for (const [path, v] of entries) {
              if (path.attribute === 'members') await members(op, v, path.filter);
              else if (path.attribute === 'displayname' && op !== 'remove') {
                const name = optionalString(v, 'displayName', 256)?.trim();
                if (!name) throw badValue('displayName is required');
                ids.push(...(await renameGroup(current.displayName, name)));
                current.displayName = name;
              } else if (path.attribute === 'externalid') {
                const ext = op === 'remove' ? undefined : optionalString(v, 'externalId');
                if (ext === undefined) delete current.externalId;
                else current.externalId = ext;
              }
            }
          }
          current.lastModified = now().toISOString();
          groups.set(id, current);
          changed([...new Set(ids)]);
          return { status: 200, body: await groupResource(id, current, r.baseUrl) };
        });
      }
      case 'DELETE':
        return exclusive(async () => {
          const group = await findGroup(id);
          if (group === undefined) throw notFound('group');
          const ids = await setMembership(group.displayName, [], 'exact');
          groups.delete(id);
          log?.info({ event: 'scim_group_deleted', id, group: group.displayName }, 'SCIM group deleted');
          changed(ids);
          return { status: 204 };
        });
      default:
        throw new ScimError(405, `${r.method} is not supported on a group`);
    }
  };

  // --- HTTP -------------------------------------------------------------------------------

  const send = (res: ServerResponse, reply: Reply, close = false): void => {
    if (res.headersSent) return;
    const headers: Record<string, string> = { 'cache-control': 'no-store' };
    if (reply.location !== undefined) headers.location = reply.location;
    if (close) headers.connection = 'close';
    if (reply.body === undefined) {
      res.writeHead(reply.status, headers).end();
      return;
    }
    const text = JSON.stringify(reply.body);
    headers['content-type'] = CONTENT_TYPE;
    headers['content-length'] = String(Buffer.byteLength(text));
    res.writeHead(reply.status, headers).end(text);
  };

  const handle = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    const url = new URL(req.url ?? '/', 'http://scim.invalid');
    const method = (req.method ?? 'GET').toUpperCase();
    if (url.pathname !== basePath && !url.pathname.startsWith(`${basePath}/`)) {
      send(res, { status: 404, body: notFound('resource').toJSON() });
      req.resume();
      return;
    }
    if (allowed !== undefined && !allowed.contains(req.socket.remoteAddress ?? '')) {
      log?.warn({ event: 'scim_refused', client: req.socket.remoteAddress, method }, 'SCIM request from a client outside allowFrom refused');
      send(res, { status: 403, body: new ScimError(403, 'this address may not use the SCIM endpoint').toJSON() });
      req.resume();
      return;
    }
    if (!tokenMatches(req.headers.authorization, expected)) {
      log?.warn({ event: 'scim_unauthorized', client: req.socket.remoteAddress, method }, 'SCIM request without the right bearer token');
      res.setHeader('www-authenticate', 'Bearer realm="sasl-gate SCIM"');
      send(res, { status: 401, body: new ScimError(401, 'a valid bearer token is required').toJSON() });
      req.resume();
      return;
    }
    const encrypted = (req.socket as { encrypted?: boolean }).encrypted === true;
    const forwarded = req.headers['x-forwarded-proto'];
    const proto = encrypted || forwarded === 'https' ? 'https' : 'http';
    const host = /^[A-Za-z0-9.:[\]-]+$/.test(req.headers.host ?? '') ? req.headers.host! : 'localhost';
    const baseUrl = `${proto}://${host}${basePath}`;
    const segments = url.pathname
      .slice(basePath.length)
      .split('/')
      .filter((s) => s !== '')
      .map(decodeSegment);

    let body: unknown;
    if (method === 'POST' || method === 'PUT' || method === 'PATCH') {
      let raw: Buffer;
      try {
        raw = await readBody(req, maxBodyBytes);
      } catch (err) {
        if (err instanceof ScimError) {
          send(res, { status: err.status, body: err.toJSON() }, true);
          req.resume();
          return;
        }
        throw err;
      }
      try {
        body = raw.length === 0 ? undefined : (JSON.parse(raw.toString('utf8')) as unknown);
      } catch {
        throw badSyntax('the request body is not valid JSON');
      }
      if (isObject(body) && method === 'PATCH') {
        const schemas = field(body, 'schemas');
        if (Array.isArray(schemas) && !schemas.includes(SCIM_PATCH_OP)) throw badSyntax(`a PATCH body must use the ${SCIM_PATCH_OP} schema`);
      }
      if (isObject(body) && segments[1] === '.search') {
        const schemas = field(body, 'schemas');
        if (Array.isArray(schemas) && !schemas.includes(SCIM_SEARCH_REQUEST)) throw badSyntax(`a search body must use the ${SCIM_SEARCH_REQUEST} schema`);
      }
    } else {
      req.resume();
    }
    const reply = await route({ method, segments, query: url.searchParams, body, baseUrl });
    send(res, reply);
    log?.debug({ event: 'scim_request', method, resource: segments[0], status: reply.status }, 'SCIM request');
  };

  return (req, res) => {
    handle(req, res).catch((err: unknown) => {
      if (err instanceof ScimError) {
        send(res, { status: err.status, body: err.toJSON() });
        if (err.status >= 500 && err.status !== 501) log?.warn({ event: 'scim_error', status: err.status, detail: err.detail }, 'SCIM request failed');
        return;
      }
      log?.warn({ event: 'scim_error', status: 500, err: err instanceof Error ? err.message : String(err) }, 'SCIM request failed');
      send(res, { status: 500, body: new ScimError(500, 'internal error').toJSON() });
    });
  };
}

/** A percent-decoded path segment; a malformed escape (`%zz`, a cut UTF-8 sequence) is the client's error. */
function decodeSegment(segment: string): string {
  try {
    return decodeURIComponent(segment);
  } catch {
    throw badSyntax('the request path has a malformed percent-encoding');
  }
}

// ---------------------------------------------------------------------------------------------
// Discovery documents.
// ---------------------------------------------------------------------------------------------

function serviceProviderConfig(baseUrl: string, maxResults: number): Json {
  return {
    schemas: [SCIM_SPC_SCHEMA],
    patch: { supported: true },
    bulk: { supported: false, maxOperations: 0, maxPayloadSize: 0 },
    filter: { supported: true, maxResults },
    changePassword: { supported: false },
    sort: { supported: false },
    etag: { supported: false },
    authenticationSchemes: [
      {
        type: 'oauthbearertoken',
        name: 'Bearer token',
        description: 'The static token configured in sasl-gate, sent as "Authorization: Bearer <token>".',
        primary: true,
      },
    ],
    meta: { resourceType: 'ServiceProviderConfig', location: `${baseUrl}/ServiceProviderConfig` },
  };
}

function resourceTypes(baseUrl: string): Json[] {
  return [
    {
      schemas: [SCIM_RESOURCE_TYPE_SCHEMA],
      id: 'User',
      name: 'User',
      endpoint: '/Users',
      description: 'A mail user: the primary email is the mailbox, other emails are aliases.',
      schema: SCIM_USER_SCHEMA,
      schemaExtensions: [{ schema: SCIM_MAIL_EXTENSION, required: false }],
      meta: { resourceType: 'ResourceType', location: `${baseUrl}/ResourceTypes/User` },
    },
    {
      schemas: [SCIM_RESOURCE_TYPE_SCHEMA],
      id: 'Group',
      name: 'Group',
      endpoint: '/Groups',
      description: 'A group; its display name becomes a group of its members in the directory.',
      schema: SCIM_GROUP_SCHEMA,
      meta: { resourceType: 'ResourceType', location: `${baseUrl}/ResourceTypes/Group` },
    },
  ];
}

const attribute = (name: string, type: string, extra: Json = {}): Json => ({
  name,
  type,
  multiValued: false,
  required: false,
  caseExact: false,
  mutability: 'readWrite',
  returned: 'default',
  uniqueness: 'none',
  ...extra,
});

function schemaDefinitions(baseUrl: string): Json[] {
  const meta = (id: string): Json => ({ resourceType: 'Schema', location: `${baseUrl}/Schemas/${id}` });
  return [
    {
      schemas: [SCIM_SCHEMA_SCHEMA],
      id: SCIM_USER_SCHEMA,
      name: 'User',
      description: 'User account',
      attributes: [
        attribute('userName', 'string', { required: true, uniqueness: 'server' }),
        attribute('externalId', 'string', { caseExact: true }),
        attribute('name', 'complex', {
          subAttributes: ['formatted', 'familyName', 'givenName', 'middleName', 'honorificPrefix', 'honorificSuffix'].map((n) => attribute(n, 'string')),
        }),
        attribute('displayName', 'string'),
        attribute('active', 'boolean'),
        attribute('emails', 'complex', {
          multiValued: true,
          subAttributes: [attribute('value', 'string'), attribute('type', 'string'), attribute('primary', 'boolean')],
        }),
        attribute('groups', 'complex', {
          multiValued: true,
          mutability: 'readOnly',
          subAttributes: [attribute('value', 'string', { mutability: 'readOnly' }), attribute('display', 'string', { mutability: 'readOnly' })],
        }),
      ],
      meta: meta(SCIM_USER_SCHEMA),
    },
    {
      schemas: [SCIM_SCHEMA_SCHEMA],
      id: SCIM_GROUP_SCHEMA,
      name: 'Group',
      description: 'Group',
      attributes: [
        attribute('displayName', 'string', { required: true }),
        attribute('externalId', 'string', { caseExact: true }),
        attribute('members', 'complex', {
          multiValued: true,
          subAttributes: [attribute('value', 'string', { mutability: 'immutable' }), attribute('display', 'string', { mutability: 'readOnly' })],
        }),
      ],
      meta: meta(SCIM_GROUP_SCHEMA),
    },
    {
      schemas: [SCIM_SCHEMA_SCHEMA],
      id: SCIM_MAIL_EXTENSION,
      name: 'MailUser',
      description: 'sasl-gate mail attributes',
      attributes: [attribute('aliases', 'string', { multiValued: true, description: 'Further addresses that deliver to the mailbox.' })],
      meta: meta(SCIM_MAIL_EXTENSION),
    },
  ];
}

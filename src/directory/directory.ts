/**
 * The in-memory mail-user directory: the current users from one source, indexed by every address
 * they receive mail at, plus the users who recently stopped being mail users (disabled, removed,
 * or taken out of the mail group), who keep receiving mail for a grace period but may no longer
 * log in. Pure and synchronous: the clock is injected, and I/O (fetching, persisting) lives in
 * sync.ts and store.ts.
 */
import { GateError } from '../errors.js';
import type { AddressVerdict, DirectorySnapshot, DirectoryUser } from './model.js';

/** Options of {@link Directory}. */
export interface DirectoryOptions {
  /** How long mail to a disabled or removed user is still accepted, in seconds. */
  graceSeconds: number;
  /** A full sync that would take away more than this share (0..1) of the active users is held back. */
  maxRemovalShare: number;
  /**
   * A full sync that takes away at most this many users always passes, so that in a small
   * directory removing one person is not a "mass removal". Default 2.
   */
  maxRemovalsAlwaysAllowed?: number;
  /** Milliseconds since the epoch; default Date.now. */
  now?: () => number;
  /** Called for every event, synchronously; exceptions it throws are ignored. */
  onEvent?: (event: DirectoryEvent) => void;
}

/** What a full sync changed (users counted by id). */
export interface ReplaceCounts {
  /** Users that became mail users (new, or re-enabled). */
  added: number;
  /** Active users that are gone from the new set. */
  removed: number;
  /** Active users that are disabled in the new set. */
  disabled: number;
  /** Users whose addresses, groups or flags changed otherwise. */
  changed: number;
  /** Users in the new set, active or not. */
  total: number;
  /** Active users in the new set. */
  active: number;
  /** Users dropped because their mailbox is not a usable address. */
  skippedUsers: number;
  /** Aliases dropped because they are not usable addresses. */
  skippedAliases: number;
}

/** The outcome of {@link Directory.replace}. */
export type ReplaceResult =
  | ({ applied: true } & ReplaceCounts)
  | {
      applied: false;
      reason: 'mass_removal';
      /** Active users the sync would remove or disable. */
      removals: number;
      /** Active users now. */
      activeBefore: number;
      /** removals / activeBefore. */
      share: number;
      maxRemovalShare: number;
      /** Up to ten mailboxes that would go, for the log. */
      sample: string[];
    };

/** Something the caller may want to log or react to (a Dovecot passwd-file writer, metrics). */
export type DirectoryEvent =
  | ({ type: 'replaced'; source: string; forced: boolean } & ReplaceCounts)
  | ({ type: 'held'; source: string } & Omit<Extract<ReplaceResult, { applied: false }>, 'applied'>)
  | { type: 'upserted'; id: string; mailbox: string; active: boolean; created: boolean }
  | { type: 'removed'; id: string; mailbox: string }
  /** An active user stopped being one (emitted before the change's own event): their logins end now. */
  | { type: 'departed'; user: DirectoryUser; how: 'disabled' | 'removed' }
  | { type: 'restored'; source: string; users: number }
  | { type: 'expired'; count: number };

/** A user who stopped being a mail user, and since when (ms since the epoch). */
interface Departure {
  user: DirectoryUser;
  since: number;
}

/** The persistable state: the current set plus the departures that decide grace periods. */
export interface DirectoryState {
  snapshot: DirectorySnapshot;
  /** Users in their grace period: disabled or removed at `since` (ISO time). */
  departed: Array<{ user: DirectoryUser; since: string }>;
}

/** One user as the mail server needs them, for listings (a passwd-file, a userdb iteration). */
export interface DirectoryEntry {
  user: DirectoryUser;
  state: 'active' | 'grace';
  /** End of the grace period, for `grace`. */
  until?: Date;
}

/** Numbers for health output and metrics. */
export interface DirectoryStats {
  /** Whether the directory holds a set at all (from a sync, the store, or incremental updates). */
  loaded: boolean;
  source: string | undefined;
  /** ISO time of the last full set. */
  fetchedAt: string | undefined;
  /** Users in the current set, active or not. */
  users: number;
  active: number;
  inactive: number;
  /** Distinct addresses that deliver to an active user. */
  addresses: number;
  /** Users past their departure but still within the grace period. */
  inGrace: number;
  /** Addresses claimed by more than one active user (the mailbox, then the lowest id, wins). */
  conflicts: number;
  /** The last full sync that was held back, if it has not been superseded by an applied one. */
  held: { at: string; removals: number; activeBefore: number } | undefined;
}

/** An incremental update named a user the directory cannot serve; the caller answers it as bad input. */
export class DirectoryInputError extends GateError {
  constructor(message: string) {
    super('directory_invalid_user', message, { clientMessage: message });
    this.name = 'DirectoryInputError';
  }
}

const DEFAULT_MAX_REMOVALS_ALWAYS_ALLOWED = 2;
const MAX_ADDRESS_LENGTH = 254;

/**
 * An address as stored and compared: trimmed, lower case; undefined when it cannot be served.
 * Refused: control characters, whitespace, `,` (Postfix splits alias results on it), `/` and `\`
 * (Dovecot builds mail paths from user names), an empty local part or domain, over 254 bytes.
 */
export function normalizeAddress(value: unknown): string | undefined {
  if (typeof value !== 'string') return undefined;
  const address = value.trim().toLowerCase();
  if (address === '' || Buffer.byteLength(address) > MAX_ADDRESS_LENGTH) return undefined;
  if (/[\x00-\x20\x7f,/\\]|\s/u.test(address)) return undefined;
  const at = address.lastIndexOf('@');
  if (at === 0 || at === address.length - 1) return undefined;
  return address;
}

/** A user normalized for storage, with what had to be dropped; undefined when unusable. */
function normalizeUser(user: DirectoryUser): { user: DirectoryUser; skippedAliases: number } | undefined {
  const id = typeof user.id === 'string' ? user.id.trim() : '';
  const mailbox = normalizeAddress(user.mailbox);
  if (id === '' || mailbox === undefined) return undefined;
  const aliases = new Set<string>();
  let skippedAliases = 0;
  for (const raw of Array.isArray(user.aliases) ? user.aliases : []) {
    const alias = normalizeAddress(raw);
    if (alias === undefined) skippedAliases += 1;
    else if (alias !== mailbox) aliases.add(alias);
  }
  const groups = [...new Set((Array.isArray(user.groups) ? user.groups : []).filter((g) => typeof g === 'string'))];
  // Frozen, because lookups hand these objects to other modules and a stray mutation would
  // silently desynchronize them from the address index.
  return {
    user: Object.freeze({
      id,
      mailbox,
      aliases: Object.freeze([...aliases].sort()) as string[],
      active: user.active === true,
      groups: Object.freeze(groups.sort()) as string[],
    }),
    skippedAliases,
  };
}

function sameUser(a: DirectoryUser, b: DirectoryUser): boolean {
  return (
    a.mailbox === b.mailbox &&
    a.active === b.active &&
    a.aliases.length === b.aliases.length &&
    a.aliases.every((x, i) => x === b.aliases[i]) &&
    a.groups.length === b.groups.length &&
    a.groups.every((x, i) => x === b.groups[i])
  );
}

/** Which users claim which address, so conflicts resolve the same way on every lookup. */
class AddressIndex {
  private readonly claims = new Map<string, Map<string, 'mailbox' | 'alias'>>();

  add(user: DirectoryUser): void {
    this.claim(user.mailbox, user.id, 'mailbox');
    for (const alias of user.aliases) this.claim(alias, user.id, 'alias');
  }

  delete(user: DirectoryUser): void {
    for (const address of [user.mailbox, ...user.aliases]) {
      const owners = this.claims.get(address);
      owners?.delete(user.id);
      if (owners?.size === 0) this.claims.delete(address);
    }
  }

  clear(): void {
    this.claims.clear();
  }

  /** The owner of an address: a mailbox claim beats an alias claim, then the lowest id. */
  resolve(address: string): { id: string; kind: 'mailbox' | 'alias' } | undefined {
    const owners = this.claims.get(address);
    if (!owners) return undefined;
    let best: { id: string; kind: 'mailbox' | 'alias' } | undefined;
    for (const [id, kind] of owners) {
      if (!best || (kind === 'mailbox' && best.kind === 'alias') || (kind === best.kind && id < best.id)) {
        best = { id, kind };
      }
    }
    return best;
  }

  /** Every claimant of an address, in the order {@link resolve} prefers them. */
  claimants(address: string): string[] {
    const owners = this.claims.get(address);
    if (!owners) return [];
    return [...owners]
      .sort(([idA, kindA], [idB, kindB]) => (kindA === kindB ? (idA < idB ? -1 : idA > idB ? 1 : 0) : kindA === 'mailbox' ? -1 : 1))
      .map(([id]) => id);
  }

  get size(): number {
    return this.claims.size;
  }

  conflicts(): number {
    let n = 0;
    for (const owners of this.claims.values()) if (owners.size > 1) n += 1;
    return n;
  }

  private claim(address: string, id: string, kind: 'mailbox' | 'alias'): void {
    let owners = this.claims.get(address);
    if (!owners) this.claims.set(address, (owners = new Map()));
    // A user listing one address as both mailbox and alias is normalized away; keep the mailbox.
    if (owners.get(id) !== 'mailbox') owners.set(id, kind);
  }
}

/**
 * The mail users sasl-gate serves to Postfix and Dovecot and checks token logins against.
 * Full syncs go through {@link replace} (with the mass-removal guard), SCIM-style updates
 * through {@link upsert} and {@link remove}.
 */
export class Directory {
  private readonly graceMs: number;
  private readonly maxRemovalShare: number;
  private readonly maxRemovalsAlwaysAllowed: number;
  private readonly now: () => number;
  private readonly listeners = new Set<(event: DirectoryEvent) => void>();

  private readonly users = new Map<string, DirectoryUser>();
  private readonly departed = new Map<string, Departure>();
  private readonly activeIndex = new AddressIndex();
  private readonly graceIndex = new AddressIndex();
  /** Addresses of users the provider lists as disabled, so a refused login can say why. */
  private readonly inactiveIndex = new AddressIndex();
  private meta: { source: string; fetchedAt: string } | undefined;
  private held: DirectoryStats['held'];

  constructor(options: DirectoryOptions) {
    if (!(options.graceSeconds >= 0)) throw new RangeError('graceSeconds must be >= 0');
    if (!(options.maxRemovalShare >= 0 && options.maxRemovalShare <= 1)) {
      throw new RangeError('maxRemovalShare must be between 0 and 1');
    }
    this.graceMs = options.graceSeconds * 1000;
    this.maxRemovalShare = options.maxRemovalShare;
    this.maxRemovalsAlwaysAllowed = options.maxRemovalsAlwaysAllowed ?? DEFAULT_MAX_REMOVALS_ALWAYS_ALLOWED;
    this.now = options.now ?? Date.now;
    if (options.onEvent) this.listeners.add(options.onEvent);
  }

  /** Registers an event listener; returns the function that removes it. */
  subscribe(listener: (event: DirectoryEvent) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /**
   * Whether the directory holds any set yet. Until it does, an `unknown` verdict means "not known
   * yet", not "no such user": callers should answer with a temporary failure, never a rejection.
   */
  isLoaded(): boolean {
    return this.meta !== undefined;
  }

  /** Same as {@link isLoaded}, under the name the socketmap and userdb writers ask for. */
  isReady(): boolean {
    return this.isLoaded();
  }

  /** What the directory says about an address (compared without regard to case). */
  lookup(address: string): AddressVerdict {
    const key = normalizeAddress(address);
    if (key === undefined) return { kind: 'unknown' };
    const owner = this.activeIndex.resolve(key);
    if (owner) {
      const user = this.users.get(owner.id);
      if (user) return { kind: owner.kind, user };
    }
    // Expired departures are pruned only now and then, so one of them must not hide another
    // departed user's address that is still in its grace period.
    const now = this.now();
    for (const id of this.graceIndex.claimants(key)) {
      const departure = this.departed.get(id);
      if (!departure) continue;
      const until = departure.since + this.graceMs;
      if (now < until) return { kind: 'grace', user: departure.user, until: new Date(until) };
    }
    return { kind: 'unknown' };
  }

  /**
   * Whether a token login as this identity may go on: only for an active user's mailbox or alias.
   * Disabled and removed users are refused at once, without a grace period, because a token
   * issued before the provider disabled them may still be valid for a while.
   */
  isLoginAllowed(identity: string): boolean {
    return this.loginVerdict(identity) === 'allowed';
  }

  /**
   * What the directory says about a token login as this identity: `allowed` for an active user's
   * mailbox or alias, `disabled` for a user the provider disabled or removed (while it is still
   * remembered: listed as disabled, or within its grace period), `unknown` for anyone else.
   */
  loginVerdict(identity: string): 'allowed' | 'disabled' | 'unknown' {
    // Stricter than lookup: an identity is compared as the token carries it, never tidied up.
    if (typeof identity !== 'string' || identity !== identity.trim()) return 'unknown';
    const key = normalizeAddress(identity);
    if (key === undefined) return 'unknown';
    if (this.activeIndex.resolve(key) !== undefined) return 'allowed';
    if (this.inactiveIndex.resolve(key) !== undefined || this.lookup(key).kind === 'grace') return 'disabled';
    return 'unknown';
  }

  /**
   * Applies a full sync. When it would remove or disable more than `maxRemovalShare` of the active
   * users (and more than `maxRemovalsAlwaysAllowed`), or empty a non-empty directory, nothing is
   * changed and the result says so: a provider that answers an empty or truncated list (a renamed
   * group, a token that lost its permissions) must not bounce everybody's mail. `force` applies it
   * anyway, for an admin who meant it.
   */
  replace(snapshot: DirectorySnapshot, options: { force?: boolean } = {}): ReplaceResult {
    const incoming = new Map<string, DirectoryUser>();
    let skippedUsers = 0;
    let skippedAliases = 0;
    for (const raw of snapshot.users) {
      const normalized = normalizeUser(raw);
      if (!normalized) {
        skippedUsers += 1;
        continue;
      }
      skippedAliases += normalized.skippedAliases;
      incoming.set(normalized.user.id, normalized.user);
    }

    // A user who comes back under another id (the source was switched, say from the Authentik
    // API to SCIM) but with the same mailbox is not leaving: matching on the mailbox too keeps
    // such a switch from looking like everybody left.
    const incomingMailboxes = new Set<string>();
    for (const user of incoming.values()) if (user.active) incomingMailboxes.add(user.mailbox);
    const leaving: DirectoryUser[] = [];
    let activeBefore = 0;
    for (const user of this.users.values()) {
      if (!user.active) continue;
      activeBefore += 1;
      if (incoming.get(user.id)?.active !== true && !incomingMailboxes.has(user.mailbox)) leaving.push(user);
    }
    const share = activeBefore === 0 ? 0 : leaving.length / activeBefore;
    const emptied = incoming.size === 0 && activeBefore > 0 && this.maxRemovalShare < 1;
    const tooMany = leaving.length > this.maxRemovalsAlwaysAllowed && share > this.maxRemovalShare;
    if (!options.force && (emptied || tooMany)) {
      const details = {
        reason: 'mass_removal' as const,
        removals: leaving.length,
        activeBefore,
        share,
        maxRemovalShare: this.maxRemovalShare,
        sample: leaving.slice(0, 10).map((u) => u.mailbox),
      };
      this.held = { at: new Date(this.now()).toISOString(), removals: leaving.length, activeBefore };
      this.emit({ type: 'held', source: snapshot.source, ...details });
      return { applied: false, ...details };
    }

    const now = this.now();
    const counts: ReplaceCounts = {
      added: 0,
      removed: 0,
      disabled: 0,
      changed: 0,
      total: incoming.size,
      active: 0,
      skippedUsers,
      skippedAliases,
    };
    const departures: Array<Extract<DirectoryEvent, { type: 'departed' }>> = [];
    for (const [id, old] of this.users) {
      if (incoming.has(id)) continue;
      if (old.active) {
        counts.removed += 1;
        this.departed.set(id, { user: old, since: now });
        if (!incomingMailboxes.has(old.mailbox)) departures.push({ type: 'departed', user: old, how: 'removed' });
      }
      // An already disabled user keeps the departure time it got when it was disabled.
    }
    for (const [id, user] of incoming) {
      const old = this.users.get(id);
      if (user.active) {
        counts.active += 1;
        this.departed.delete(id);
        if (!old?.active) counts.added += 1;
        else if (!sameUser(old, user)) counts.changed += 1;
      } else if (old?.active) {
        counts.disabled += 1;
        this.departed.set(id, { user, since: now });
        if (!incomingMailboxes.has(old.mailbox)) departures.push({ type: 'departed', user: old, how: 'disabled' });
      } else {
        const departure = this.departed.get(id);
        if (departure) departure.user = user;
        if (old && !sameUser(old, user)) counts.changed += 1;
        // A user first seen disabled gets no grace: nobody knows when they were disabled.
      }
    }

    this.users.clear();
    for (const [id, user] of incoming) this.users.set(id, user);
    this.meta = { source: snapshot.source, fetchedAt: snapshot.fetchedAt };
    this.held = undefined;
    this.pruneDepartures(now);
    this.rebuildIndexes();
    for (const departure of departures) this.emit(departure);
    this.emit({ type: 'replaced', source: snapshot.source, forced: options.force === true, ...counts });
    return { applied: true, ...counts };
  }

  /**
   * Adds or updates one user (an incremental update, e.g. from SCIM). Throws a
   * {@link DirectoryInputError} when the user has no id or no usable mailbox; nothing is stored then.
   */
  upsert(raw: DirectoryUser): void {
    const normalized = normalizeUser(raw);
    if (!normalized) {
      throw new DirectoryInputError(
        typeof raw?.id === 'string' && raw.id.trim() !== '' ? 'the mailbox is not a usable address' : 'the user has no id',
      );
    }
    const user = normalized.user;
    const old = this.users.get(user.id);
    const now = this.now();
    if (old) this.unindex(old);
    if (user.active) {
      const departure = this.departed.get(user.id);
      if (departure) this.unindexDeparture(departure);
      this.departed.delete(user.id);
    } else if (old?.active) {
      this.setDeparture(user.id, { user, since: now });
    } else {
      const departure = this.departed.get(user.id);
      if (departure) this.setDeparture(user.id, { user, since: departure.since });
    }
    this.users.set(user.id, user);
    if (user.active) this.activeIndex.add(user);
    else this.inactiveIndex.add(user);
    this.meta ??= { source: 'incremental', fetchedAt: new Date(now).toISOString() };
    if (old?.active && !user.active) this.emit({ type: 'departed', user: old, how: 'disabled' });
    this.emit({ type: 'upserted', id: user.id, mailbox: user.mailbox, active: user.active, created: !old });
  }

  /**
   * Removes one user (an incremental delete; an unknown id changes nothing). Mail to them is still
   * accepted for the grace period.
   */
  remove(id: string): void {
    const old = this.users.get(id);
    if (!old) return;
    this.unindex(old);
    this.users.delete(id);
    if (old.active) {
      this.setDeparture(id, { user: old, since: this.now() });
      this.emit({ type: 'departed', user: old, how: 'removed' });
    }
    this.emit({ type: 'removed', id, mailbox: old.mailbox });
  }

  /** Every user in the current set, active or not (users in grace after removal are not in it). */
  list(): DirectoryUser[] {
    return [...this.users.values()];
  }

  /** The user with this source id, active or not. */
  get(id: string): DirectoryUser | undefined {
    return this.users.get(id);
  }

  /** Every user mail is delivered to now: active users, then those in their grace period. */
  entries(): DirectoryEntry[] {
    const now = this.now();
    const out: DirectoryEntry[] = [];
    for (const user of this.users.values()) if (user.active) out.push({ user, state: 'active' });
    for (const { user, since } of this.departed.values()) {
      const until = since + this.graceMs;
      if (now < until) out.push({ user, state: 'grace', until: new Date(until) });
    }
    return out;
  }

  /** Forgets departures whose grace period is over; returns how many (an `expired` event when any). */
  prune(): number {
    const count = this.pruneDepartures(this.now());
    if (count > 0) this.emit({ type: 'expired', count });
    return count;
  }

  /** The state to persist: the set and the departures, so a restart keeps grace periods. */
  exportState(): DirectoryState {
    const now = this.now();
    return {
      snapshot: {
        source: this.meta?.source ?? 'none',
        fetchedAt: this.meta?.fetchedAt ?? new Date(now).toISOString(),
        users: [...this.users.values()].map((u) => ({ ...u, aliases: [...u.aliases], groups: [...u.groups] })),
      },
      departed: [...this.departed.values()]
        .filter((d) => now < d.since + this.graceMs)
        .map((d) => ({
          user: { ...d.user, aliases: [...d.user.aliases], groups: [...d.user.groups] },
          since: new Date(d.since).toISOString(),
        })),
    };
  }

  /**
   * Loads a persisted state as it was, without the mass-removal guard (it is the last good set,
   * not news from the provider). Replaces whatever the directory held.
   */
  restore(state: DirectoryState): void {
    this.users.clear();
    this.departed.clear();
    for (const raw of state.snapshot.users) {
      const normalized = normalizeUser(raw);
      if (normalized) this.users.set(normalized.user.id, normalized.user);
    }
    for (const d of state.departed) {
      const normalized = normalizeUser(d.user);
      const since = Date.parse(d.since);
      if (!normalized || Number.isNaN(since)) continue;
      if (this.users.get(normalized.user.id)?.active) continue;
      this.departed.set(normalized.user.id, { user: normalized.user, since });
    }
    this.meta = { source: state.snapshot.source, fetchedAt: state.snapshot.fetchedAt };
    this.pruneDepartures(this.now());
    this.rebuildIndexes();
    this.emit({ type: 'restored', source: state.snapshot.source, users: this.users.size });
  }

  /** Counts for health output and metrics. */
  stats(): DirectoryStats {
    const now = this.now();
    let active = 0;
    for (const user of this.users.values()) if (user.active) active += 1;
    let inGrace = 0;
    for (const d of this.departed.values()) if (now < d.since + this.graceMs) inGrace += 1;
    return {
      loaded: this.meta !== undefined,
      source: this.meta?.source,
      fetchedAt: this.meta?.fetchedAt,
      users: this.users.size,
      active,
      inactive: this.users.size - active,
      addresses: this.activeIndex.size,
      inGrace,
      conflicts: this.activeIndex.conflicts(),
      held: this.held,
    };
  }

  private setDeparture(id: string, departure: Departure): void {
    const previous = this.departed.get(id);
    if (previous) this.unindexDeparture(previous);
    this.departed.set(id, departure);
    this.graceIndex.add(departure.user);
  }

  private unindexDeparture(departure: Departure): void {
    this.graceIndex.delete(departure.user);
  }

  private unindex(user: DirectoryUser): void {
    if (user.active) this.activeIndex.delete(user);
    else this.inactiveIndex.delete(user);
  }

  private pruneDepartures(now: number): number {
    let count = 0;
    for (const [id, d] of this.departed) {
      if (now >= d.since + this.graceMs) {
        this.graceIndex.delete(d.user);
        this.departed.delete(id);
        count += 1;
      }
    }
    return count;
  }

  private rebuildIndexes(): void {
    this.activeIndex.clear();
    this.graceIndex.clear();
    this.inactiveIndex.clear();
    for (const user of this.users.values()) (user.active ? this.activeIndex : this.inactiveIndex).add(user);
    for (const d of this.departed.values()) this.graceIndex.add(d.user);
  }

  private emit(event: DirectoryEvent): void {
    for (const listener of this.listeners) {
      try {
        listener(event);
      } catch {
        // A failing logger or metrics hook must not leave the directory half-updated.
      }
    }
  }
}

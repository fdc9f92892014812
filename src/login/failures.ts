import { clientAddressKey } from '../net/networks.js';

/** Settings for {@link FailureTracker}; every field has a safe default. */
export interface FailureTrackerOptions {
  /** Delay after the first recent failure; it doubles with each further one. */
  baseDelayMs?: number;
  /** Ceiling for any delay. */
  maxDelayMs?: number;
  /** A record is forgotten this long after its last failure. */
  forgetAfterMs?: number;
  /** Most records kept for addresses, and separately for user names. */
  maxEntries?: number;
  now?: () => number;
}

interface Entry {
  key: string;
  failures: number;
  /** Time of the last failure; successes do not move it, so they cannot prolong a record. */
  last: number;
  older: Entry | undefined;
  newer: Entry | undefined;
}

/**
 * Records by key, also chained from the oldest last failure to the newest. The chain exists
 * because a Map's own order is slow to consume from the front: V8 leaves deleted slots in
 * place, so every fresh iterator walks past all of them and a flood turns quadratic.
 */
class Records {
  private readonly byKey = new Map<string, Entry>();
  private oldest: Entry | undefined;
  private newest: Entry | undefined;

  get size(): number {
    return this.byKey.size;
  }

  get(key: string): Entry | undefined {
    return this.byKey.get(key);
  }

  first(): Entry | undefined {
    return this.oldest;
  }

  /** Adds a record whose key is not held yet, as the newest. */
  add(entry: Entry): void {
    this.link(entry);
    this.byKey.set(entry.key, entry);
  }

  /** Makes a held record the newest. */
  touch(entry: Entry): void {
    if (entry === this.newest) return;
    this.unlink(entry);
    this.link(entry);
  }

  /** Drops a held record. */
  remove(entry: Entry): void {
    this.byKey.delete(entry.key);
    this.unlink(entry);
  }

  private link(entry: Entry): void {
    entry.older = this.newest;
    entry.newer = undefined;
    if (this.newest) this.newest.newer = entry;
    else this.oldest = entry;
    this.newest = entry;
  }

  private unlink(entry: Entry): void {
    if (entry.older) entry.older.newer = entry.newer;
    else this.oldest = entry.newer;
    if (entry.newer) entry.newer.older = entry.older;
    else this.newest = entry.older;
    entry.older = undefined;
    entry.newer = undefined;
  }
}

/** Longest user name key; longer names are cut, so a giant name costs no more than this. */
export const MAX_USER_KEY_LENGTH = 256;

// Only this much of a name is normalised: NFC and case folding of a megabyte would cost more
// than any key is worth, and names this long are garbage anyway.
const MAX_USER_INPUT = MAX_USER_KEY_LENGTH * 4;
// 2^60 times any sane base delay exceeds any sane cap, and keeps base 0 from becoming 0 * Infinity.
const MAX_EXPONENT = 60;

/**
 * The key under which failures for `user` are counted: NFC, lower case, at most
 * {@link MAX_USER_KEY_LENGTH} characters; `undefined` for a missing or empty name.
 */
export function userNameKey(user: string | undefined): string | undefined {
  if (user === undefined) return undefined;
  let key = user.slice(0, MAX_USER_INPUT).normalize('NFC').toLowerCase().slice(0, MAX_USER_KEY_LENGTH);
  // A cut between the halves of a surrogate pair would leave half a character in the key.
  const lastCode = key.charCodeAt(key.length - 1);
  if (lastCode >= 0xd800 && lastCode <= 0xdbff) key = key.slice(0, -1);
  return key === '' ? undefined : key;
}

/** The delay after `failures` recent failures: none for 0, else `baseDelayMs * 2^(failures-1)` capped at `maxDelayMs`. */
export function failureDelay(failures: number, baseDelayMs: number, maxDelayMs: number): number {
  if (failures <= 0) return 0;
  return Math.min(maxDelayMs, baseDelayMs * 2 ** Math.min(failures - 1, MAX_EXPONENT));
}

/**
 * Where authentication failures are counted: this process's memory ({@link FailureTracker}), or a
 * store that every worker of an instance, or every replica, shares.
 */
export interface FailureStore {
  /**
   * Counts a failed authentication from `address` (and for `user`) and resolves to the delay, in
   * milliseconds, before it is answered. Never rejects: a store that cannot count answers with its
   * longest delay, so an outage never lets a guesser through faster.
   */
  failed(address: string, user?: string): Promise<number>;
  /** Counts a successful authentication; never rejects. */
  succeeded(address: string, user?: string): Promise<void>;
}

/**
 * Remembers recent authentication failures per client address and per user name and says how
 * long to wait before answering the next attempt, so sprayers and guessers are slowed down.
 *
 * Rules:
 * - n recent failures give a delay of 0 for n = 0, else `baseDelayMs * 2^(n-1)` capped at
 *   `maxDelayMs`; an attempt waits the larger of its address's and its user's delay.
 * - A record is forgotten `forgetAfterMs` after its last failure (all at once, not gradually).
 * - A success clears the user's record (the owner has proven the password, and should not keep
 *   paying for someone else's guesses) but only halves the address's count: the address may
 *   have failed for many other names, and a sprayer who owns one account must not be able to
 *   wipe its penalty by logging into it.
 * - Addresses and user names live in separate maps of at most `maxEntries` each; when one is
 *   full, the record whose last failure is oldest goes first, so a flood of random names or
 *   addresses costs bounded memory (at the price of forgetting older records in that map).
 */
export class FailureTracker implements FailureStore {
  private readonly baseDelayMs: number;
  private readonly maxDelayMs: number;
  private readonly forgetAfterMs: number;
  private readonly maxEntries: number;
  private readonly now: () => number;
  // Ordered by last failure, so the oldest record is both the one to evict and the first to expire.
  private readonly addresses = new Records();
  private readonly users = new Records();

  constructor(options: FailureTrackerOptions = {}) {
    this.baseDelayMs = options.baseDelayMs ?? 500;
    this.maxDelayMs = options.maxDelayMs ?? 15_000;
    this.forgetAfterMs = options.forgetAfterMs ?? 15 * 60_000;
    this.maxEntries = options.maxEntries ?? 100_000;
    this.now = options.now ?? Date.now;
    for (const [name, value] of [
      ['baseDelayMs', this.baseDelayMs],
      ['maxDelayMs', this.maxDelayMs],
      ['forgetAfterMs', this.forgetAfterMs],
    ] as const) {
      if (!Number.isFinite(value) || value < 0) throw new RangeError(`${name} must be a finite number >= 0`);
    }
    if (!Number.isInteger(this.maxEntries) || this.maxEntries < 1) {
      throw new RangeError('maxEntries must be an integer >= 1');
    }
  }

  /** Counts a failed authentication from `address`, and for `user` when a name was given. */
  recordFailure(address: string, user?: string): void {
    const now = this.now();
    this.bump(this.addresses, clientAddressKey(address), now);
    const userKey = userNameKey(user);
    if (userKey !== undefined) this.bump(this.users, userKey, now);
  }

  /** Clears `user`'s record and halves the address's count, as the class comment explains. */
  recordSuccess(address: string, user?: string): void {
    const now = this.now();
    const entry = this.live(this.addresses, clientAddressKey(address), now);
    if (entry) {
      entry.failures = Math.floor(entry.failures / 2);
      if (entry.failures === 0) this.addresses.remove(entry);
    }
    const userKey = userNameKey(user);
    const userEntry = userKey === undefined ? undefined : this.users.get(userKey);
    if (userEntry) this.users.remove(userEntry);
  }

  /** Milliseconds to wait before answering an authentication from `address` for `user`. */
  delayFor(address: string, user?: string): number {
    const now = this.now();
    const byAddress = this.live(this.addresses, clientAddressKey(address), now)?.failures ?? 0;
    const userKey = userNameKey(user);
    const byUser = userKey === undefined ? 0 : (this.live(this.users, userKey, now)?.failures ?? 0);
    return failureDelay(Math.max(byAddress, byUser), this.baseDelayMs, this.maxDelayMs);
  }

  /** {@link FailureStore.failed}: counts the failure and answers its delay. */
  failed(address: string, user?: string): Promise<number> {
    this.recordFailure(address, user);
    return Promise.resolve(this.delayFor(address, user));
  }

  /** {@link FailureStore.succeeded}. */
  succeeded(address: string, user?: string): Promise<void> {
    this.recordSuccess(address, user);
    return Promise.resolve();
  }

  /** Records held now (after forgetting expired ones), for metrics. */
  stats(): { addresses: number; users: number } {
    const now = this.now();
    this.sweep(this.addresses, now);
    this.sweep(this.users, now);
    return { addresses: this.addresses.size, users: this.users.size };
  }

  private expired(entry: Entry, now: number): boolean {
    return now - entry.last >= this.forgetAfterMs;
  }

  private live(records: Records, key: string, now: number): Entry | undefined {
    const entry = records.get(key);
    if (entry && this.expired(entry, now)) {
      records.remove(entry);
      return undefined;
    }
    return entry;
  }

  private bump(records: Records, key: string, now: number): void {
    const held = records.get(key);
    if (held) {
      held.failures = this.expired(held, now) ? 1 : held.failures + 1;
      held.last = now;
      records.touch(held);
      return;
    }
    this.sweep(records, now);
    // A full map gives up its oldest record, whose object is reused: a flood then allocates
    // nothing but its keys.
    let entry: Entry | undefined;
    for (let oldest = records.first(); oldest && records.size >= this.maxEntries; oldest = records.first()) {
      records.remove(oldest);
      entry = oldest;
    }
    if (entry) {
      entry.key = key;
      entry.failures = 1;
      entry.last = now;
    } else {
      entry = { key, failures: 1, last: now, older: undefined, newer: undefined };
    }
    records.add(entry);
  }

  private sweep(records: Records, now: number): void {
    for (let oldest = records.first(); oldest && this.expired(oldest, now); oldest = records.first()) {
      records.remove(oldest);
    }
  }
}

/**
 * The app-password rules every store follows, whatever its database: canonical user spellings,
 * label and protocol checks, the new password's row, the record built from a row, keyed hashes
 * compared in constant time, and the throttled last use. No database here: each store keeps its SQL
 * and its transactions.
 */
import { randomBytes, timingSafeEqual } from 'node:crypto';
import { PROTOCOLS, type MailProtocol } from '../config/schema.js';
import { GateError } from '../errors.js';
import {
  AppPasswordError,
  type AppPasswordRecord,
  type AppPasswordRequest,
  type AppPasswordUse,
  type CreatedAppPassword,
} from './app-passwords.js';
import { generateAppPassword, hashAppPassword, normalizeAppPassword } from './app-passwords-format.js';

const MAX_LABEL = 64;

/** Why a password is no longer live, for the admin's full list. */
export type AppPasswordStatus = 'live' | 'expired' | 'revoked';

/** A record with its status and, once revoked, when and by whom. */
export interface AppPasswordHistoryRecord extends AppPasswordRecord {
  status: AppPasswordStatus;
  createdBy: string;
  revokedAt: Date | undefined;
  revokedBy: string | undefined;
}

/**
 * A row of `app_passwords` as a database gives it back: times are epoch milliseconds, as numbers
 * (SQLite) or as the strings PostgreSQL gives for a bigint.
 */
export interface AppPasswordRow {
  id: string;
  user: string;
  label: string;
  hash: Uint8Array;
  protocols: string;
  created_at: number | string;
  created_by: string;
  expires_at: number | string | null;
  revoked_at: number | string | null;
  revoked_by: string | null;
  last_used_at: number | string | null;
  last_used_address: string | null;
  last_used_protocol: string | null;
}

/** A checked new password: the values of its row and what the caller gets back once it is stored. */
export interface NewAppPassword {
  userKey: string;
  /** Epoch milliseconds: the clock's time when the request passed its first checks. */
  createdAt: number;
  label: string;
  /**
   * The row's values in the order `id, user, user_key, label, hash, protocols, created_at,
   * created_by, expires_at`.
   */
  values: [string, string, string, string, Buffer, string, number, string, number | null];
  created: CreatedAppPassword;
}

/** The spelling-insensitive form of a user name the passwords are found by. */
export function userKey(user: string): string {
  return user.normalize('NFKC').trim().toLowerCase();
}

/** Whether `user` is written as logins may name it: no surrounding space, unchanged by NFKC. */
export function isCanonicalSpelling(user: string): boolean {
  return user !== '' && user === user.trim() && user === user.normalize('NFKC');
}

/** The label as stored: trimmed, 1 to 64 printable characters. */
export function checkLabel(label: string): string {
  const trimmed = label.trim();
  const length = [...trimmed].length;
  if (length === 0 || length > MAX_LABEL || /\p{C}/u.test(trimmed)) {
    throw new AppPasswordError('bad_label', `a label is 1 to ${MAX_LABEL} printable characters`);
  }
  return trimmed;
}

/** The protocols, each once, in the usual order; at least one, each one sasl-gate speaks. */
export function checkProtocols(protocols: readonly string[]): MailProtocol[] {
  const known: readonly string[] = PROTOCOLS;
  if (protocols.length === 0 || protocols.some((p) => !known.includes(p))) {
    throw new AppPasswordError('bad_protocols', `protocols are one or more of ${PROTOCOLS.join(', ')}`);
  }
  return PROTOCOLS.filter((p) => protocols.includes(p));
}

/**
 * Checks a request and draws the password and its id: the row to insert and the caller's answer.
 * Throws GateError for a caller's mistake (user spelling, past expiry), AppPasswordError otherwise.
 */
export function newAppPassword(input: AppPasswordRequest, key: Buffer, defaultProtocols: readonly MailProtocol[], clock: () => Date): NewAppPassword {
  const user = input.user.trim();
  if (!isCanonicalSpelling(user)) {
    // Not a refusal a user can cause (the page's users are canonical identities): a caller's mistake.
    throw new GateError('bad_user', 'an app password is for a user name in its canonical spelling (NFKC, no compatibility characters)');
  }
  const label = checkLabel(input.label);
  const protocols = checkProtocols(input.protocols ?? [...defaultProtocols]);
  const now = clock().getTime();
  if (input.expiresAt !== undefined && input.expiresAt.getTime() <= now) {
    // Not a refusal a user can cause (the page and the command line offer days from now): a caller's mistake.
    throw new GateError('bad_expiry', 'an app password must expire in the future');
  }
  const password = generateAppPassword();
  const id = randomBytes(9).toString('base64url');
  const keyOfUser = userKey(user);
  const expiresAt = input.expiresAt?.getTime() ?? null;
  const record: AppPasswordRecord = {
    id,
    user,
    label,
    protocols,
    createdAt: new Date(now),
    expiresAt: expiresAt === null ? undefined : new Date(expiresAt),
    lastUse: undefined,
  };
  return {
    userKey: keyOfUser,
    createdAt: now,
    label,
    values: [id, user, keyOfUser, label, hashAppPassword(key, normalizeAppPassword(password)!), protocols.join(','), now, input.createdBy ?? 'user', expiresAt],
    created: { password, record },
  };
}

/** Refuses a new password whose label a live one of the user has, or one past `maxPerUser`. */
export function checkRoom(liveLabels: readonly string[], label: string, maxPerUser: number): void {
  if (liveLabels.includes(label)) throw new AppPasswordError('duplicate_label', `there is already a password named "${label}"`);
  if (liveLabels.length >= maxPerUser) {
    throw new AppPasswordError('too_many', `at most ${maxPerUser} app passwords per user: revoke one first`);
  }
}

/** The record a row stands for; a pending last use newer than the stored one wins. */
export function recordFromRow(row: AppPasswordRow, pending: AppPasswordUse | undefined): AppPasswordRecord {
  const stored: AppPasswordUse | undefined =
    row.last_used_at === null
      ? undefined
      : { at: new Date(Number(row.last_used_at)), address: row.last_used_address ?? '', protocol: row.last_used_protocol as MailProtocol };
  return {
    id: row.id,
    user: row.user,
    label: row.label,
    protocols: row.protocols.split(',') as MailProtocol[],
    createdAt: new Date(Number(row.created_at)),
    expiresAt: row.expires_at === null ? undefined : new Date(Number(row.expires_at)),
    lastUse: pending && (!stored || pending.at >= stored.at) ? pending : stored,
  };
}

/** The admin's view of a row: its record with its status at `now` and who revoked it, when. */
export function historyRecord(row: AppPasswordRow, record: AppPasswordRecord, now: number): AppPasswordHistoryRecord {
  return {
    ...record,
    status: row.revoked_at !== null ? 'revoked' : row.expires_at !== null && Number(row.expires_at) <= now ? 'expired' : 'live',
    createdBy: row.created_by,
    revokedAt: row.revoked_at === null ? undefined : new Date(Number(row.revoked_at)),
    revokedBy: row.revoked_by ?? undefined,
  };
}

/**
 * The keyed hash a login's password is looked for by; undefined when `password` cannot be an app
 * password, or `user` is not a canonical spelling.
 */
export function loginHash(key: Buffer, user: string, password: string): Buffer | undefined {
  const normalized = normalizeAppPassword(password);
  if (normalized === undefined) return undefined;
  // Only a spelling that differs from the stored user by case finds its passwords: a look-alike
  // (full-width letters, a space around it) would open them under a failure count of its own.
  if (!isCanonicalSpelling(user)) return undefined;
  return hashAppPassword(key, normalized);
}

/** The live row whose hash is `hash`, when `protocol` is in its scope. */
export function matchLiveRow<R extends AppPasswordRow>(liveRows: readonly R[], hash: Buffer, protocol: MailProtocol): R | undefined {
  let found: R | undefined;
  // Every live row is compared, in constant time each, whichever matches.
  for (const row of liveRows) {
    const stored = Buffer.from(row.hash.buffer, row.hash.byteOffset, row.hash.byteLength);
    if (stored.length === hash.length && timingSafeEqual(stored, hash) && found === undefined) found = row;
  }
  if (found === undefined || !found.protocols.split(',').includes(protocol)) return undefined;
  return found;
}

/**
 * The last uses kept in memory until they are written, at most every `writeSeconds` (a login
 * should not wait for a write each time).
 */
export class LastUseBuffer {
  private readonly pending = new Map<string, AppPasswordUse>();
  private lastWriteAt = -Infinity;

  constructor(
    private readonly writeSeconds: number,
    private readonly now: () => Date,
  ) {}

  /** Keeps `use` of password `id`; true when a write is due. */
  note(id: string, use: AppPasswordUse): boolean {
    this.pending.set(id, use);
    return use.at.getTime() - this.lastWriteAt >= this.writeSeconds * 1000;
  }

  /** The use of `id` not yet written, if any. */
  get(id: string): AppPasswordUse | undefined {
    return this.pending.get(id);
  }

  /** Starts a write: the uses to write, no longer kept; a write is not due again for `writeSeconds`. */
  take(): Array<[string, AppPasswordUse]> {
    this.lastWriteAt = this.now().getTime();
    const taken = [...this.pending];
    this.pending.clear();
    return taken;
  }

  /** Keeps uses a failed write did not store, unless a newer use of the same password came meanwhile. */
  restore(uses: ReadonlyArray<[string, AppPasswordUse]>): void {
    for (const [id, use] of uses) if (!this.pending.has(id)) this.pending.set(id, use);
  }

  /** A timer that calls `write` every `writeSeconds`, not keeping the process alive; none when `enabled` is false. */
  startTimer(enabled: boolean | undefined, write: () => void): NodeJS.Timeout | undefined {
    if (!enabled || this.writeSeconds <= 0) return undefined;
    const timer = setInterval(write, this.writeSeconds * 1000);
    timer.unref();
    return timer;
  }
}

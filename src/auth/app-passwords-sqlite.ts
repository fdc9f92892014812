/** The app-password service on the embedded SQLite database in `storage.dir`. */
import { randomBytes, timingSafeEqual } from 'node:crypto';
import type { DatabaseSync, StatementSync } from 'node:sqlite';
import { PROTOCOLS, type AppPasswordsConfig, type MailProtocol, type StorageConfig } from '../config/schema.js';
import { GateError } from '../errors.js';
import { openDatabase, StorageError, type Migration } from '../storage/database.js';
import { loadOrCreateKey } from '../storage/key-file.js';
import {
  AppPasswordError,
  type AppPasswordRecord,
  type AppPasswordService,
  type AppPasswordUse,
  type CreatedAppPassword,
} from './app-passwords.js';
import { generateAppPassword, hashAppPassword, normalizeAppPassword } from './app-passwords-format.js';

/** The database file in `storage.dir`. */
export const DATABASE_FILE = 'sasl-gate.db';
/** The generated server key in `storage.dir`, when `appPasswords.keyFile` is unset. */
export const KEY_FILE = 'app-passwords.key';
const MAX_LABEL = 64;

/** The schema, step by step; never edit a released step, add one. */
export const MIGRATIONS: readonly Migration[] = [
  {
    version: 1,
    sql: `
      CREATE TABLE app_passwords (
        id TEXT PRIMARY KEY,
        user TEXT NOT NULL,
        user_key TEXT NOT NULL,
        label TEXT NOT NULL,
        hash BLOB NOT NULL,
        protocols TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        created_by TEXT NOT NULL,
        expires_at INTEGER,
        revoked_at INTEGER,
        revoked_by TEXT,
        last_used_at INTEGER,
        last_used_address TEXT,
        last_used_protocol TEXT
      );
      CREATE INDEX app_passwords_by_user ON app_passwords (user_key, revoked_at);
    `,
  },
];

/** Why a password is no longer live, for the admin's full list. */
export type AppPasswordStatus = 'live' | 'expired' | 'revoked';

/** A record with its status and, once revoked, when and by whom. */
export interface AppPasswordHistoryRecord extends AppPasswordRecord {
  status: AppPasswordStatus;
  createdBy: string;
  revokedAt: Date | undefined;
  revokedBy: string | undefined;
}

/** What the service is built from. */
export interface SqliteAppPasswordOptions {
  /** `storage.dir`. */
  dir: string;
  /** `appPasswords.keyFile`; unset: a key generated once in `dir`. */
  keyFile: string | undefined;
  defaultProtocols: readonly MailProtocol[];
  maxPerUser: number;
  lastUseWriteSeconds: number;
  /** The time, injected for tests. */
  now?: () => Date;
  /** Whether a timer writes pending last uses every `lastUseWriteSeconds` (serve: yes; tests and the CLI: no). */
  flushTimer?: boolean;
}

interface Row {
  id: string;
  user: string;
  label: string;
  hash: Uint8Array;
  protocols: string;
  created_at: number;
  created_by: string;
  expires_at: number | null;
  revoked_at: number | null;
  revoked_by: string | null;
  last_used_at: number | null;
  last_used_address: string | null;
  last_used_protocol: string | null;
}

/** The spelling-insensitive form of a user name the passwords are found by. */
export function userKey(user: string): string {
  return user.normalize('NFKC').trim().toLowerCase();
}

/** The service as the configuration sets it up (`storage.dir`, `appPasswords.*`); throws StorageError when it cannot be opened. */
export function openConfiguredAppPasswords(
  config: { storage: StorageConfig; appPasswords: AppPasswordsConfig },
  options: { flushTimer: boolean },
): SqliteAppPasswordService {
  const { dir } = config.storage;
  if (dir === undefined) throw new StorageError('app passwords are kept in a database: set storage.dir');
  const { keyFile, defaultProtocols, maxPerUser, lastUseWriteSeconds } = config.appPasswords;
  return openAppPasswordService({ dir, keyFile, defaultProtocols, maxPerUser, lastUseWriteSeconds, flushTimer: options.flushTimer });
}

/** Opens the database and the key; throws StorageError when either cannot be had. */
export function openAppPasswordService(options: SqliteAppPasswordOptions): SqliteAppPasswordService {
  const key = loadOrCreateKey({ keyFile: options.keyFile, dir: options.dir, name: KEY_FILE, setting: 'appPasswords.keyFile' });
  const db = openDatabase(options.dir, DATABASE_FILE, MIGRATIONS);
  return new SqliteAppPasswordService(db, key, options);
}

/**
 * App passwords in SQLite. No list is cached: every call reads the database, so the command line's
 * changes count at once. Only the last use is kept in memory and written at most every
 * `lastUseWriteSeconds` (and at close).
 */
export class SqliteAppPasswordService implements AppPasswordService {
  private readonly now: () => Date;
  private readonly pendingUse = new Map<string, AppPasswordUse>();
  private lastWriteAt = -Infinity;
  private readonly timer: NodeJS.Timeout | undefined;
  private closed = false;
  private readonly liveOfUser: StatementSync;
  private readonly writeUse: StatementSync;

  constructor(
    private readonly db: DatabaseSync,
    private readonly key: Buffer,
    private readonly options: SqliteAppPasswordOptions,
  ) {
    this.now = options.now ?? (() => new Date());
    this.liveOfUser = db.prepare(
      'SELECT * FROM app_passwords WHERE user_key = ? AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > ?) ORDER BY created_at DESC, rowid DESC',
    );
    this.writeUse = db.prepare(
      'UPDATE app_passwords SET last_used_at = ?, last_used_address = ?, last_used_protocol = ? WHERE id = ? AND (last_used_at IS NULL OR last_used_at <= ?)',
    );
    if (options.flushTimer && options.lastUseWriteSeconds > 0) {
      this.timer = setInterval(() => this.writePendingUses(), options.lastUseWriteSeconds * 1000);
      this.timer.unref();
    }
  }

  async create(input: { user: string; label: string; protocols?: MailProtocol[]; expiresAt?: Date; createdBy?: 'user' | 'admin' }): Promise<CreatedAppPassword> {
    const user = input.user.trim();
    if (!isCanonicalSpelling(user)) {
      // Not a refusal a user can cause (the page's users are canonical identities): a caller's mistake.
      throw new GateError('bad_user', 'an app password is for a user name in its canonical spelling (NFKC, no compatibility characters)');
    }
    const label = checkLabel(input.label);
    const protocols = checkProtocols(input.protocols ?? [...this.options.defaultProtocols]);
    const now = this.now().getTime();
    if (input.expiresAt !== undefined && input.expiresAt.getTime() <= now) {
      // Not a refusal a user can cause (the page and the command line offer days from now): a caller's mistake.
      throw new GateError('bad_expiry', 'an app password must expire in the future');
    }
    const password = generateAppPassword();
    const id = randomBytes(9).toString('base64url');
    return this.transaction(() => {
      const live = this.liveOfUser.all(userKey(user), now) as unknown as Row[];
      if (live.some((row) => row.label === label)) throw new AppPasswordError('duplicate_label', `there is already a password named "${label}"`);
      if (live.length >= this.options.maxPerUser) {
        throw new AppPasswordError('too_many', `at most ${this.options.maxPerUser} app passwords per user: revoke one first`);
      }
      this.db
        .prepare(
          'INSERT INTO app_passwords (id, user, user_key, label, hash, protocols, created_at, created_by, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)',
        )
        .run(id, user, userKey(user), label, hashAppPassword(this.key, normalizeAppPassword(password)!), protocols.join(','), now, input.createdBy ?? 'user', input.expiresAt?.getTime() ?? null);
      const record: AppPasswordRecord = {
        id,
        user,
        label,
        protocols,
        createdAt: new Date(now),
        expiresAt: input.expiresAt === undefined ? undefined : new Date(input.expiresAt.getTime()),
        lastUse: undefined,
      };
      return { password, record };
    });
  }

  async list(user?: string): Promise<AppPasswordRecord[]> {
    const now = this.now().getTime();
    const rows = (
      user === undefined
        ? this.db.prepare('SELECT * FROM app_passwords WHERE revoked_at IS NULL AND (expires_at IS NULL OR expires_at > ?) ORDER BY created_at DESC, rowid DESC').all(now)
        : this.liveOfUser.all(userKey(user), now)
    ) as unknown as Row[];
    return rows.map((row) => this.record(row));
  }

  /** Every password, revoked and expired ones too, with its status (the admin's `list --all`). */
  history(user?: string): AppPasswordHistoryRecord[] {
    const rows = (
      user === undefined
        ? this.db.prepare('SELECT * FROM app_passwords ORDER BY created_at DESC, rowid DESC').all()
        : this.db.prepare('SELECT * FROM app_passwords WHERE user_key = ? ORDER BY created_at DESC, rowid DESC').all(userKey(user))
    ) as unknown as Row[];
    const now = this.now().getTime();
    return rows.map((row) => ({
      ...this.record(row),
      status: row.revoked_at !== null ? 'revoked' : row.expires_at !== null && row.expires_at <= now ? 'expired' : 'live',
      createdBy: row.created_by,
      revokedAt: row.revoked_at === null ? undefined : new Date(row.revoked_at),
      revokedBy: row.revoked_by ?? undefined,
    }));
  }

  async revokeById(user: string, id: string): Promise<boolean> {
    return this.revokeWhere('id = ?', [id], user, 'user') > 0;
  }

  async revokeByLabel(user: string, label: string): Promise<boolean> {
    return this.revokeWhere('label = ?', [label.trim()], user, 'user') > 0;
  }

  async revokeAll(user: string, reason: 'directory' | 'admin'): Promise<number> {
    return this.revokeWhere('1 = 1', [], user, reason);
  }

  async verify(user: string, password: string, protocol: MailProtocol, address: string): Promise<AppPasswordRecord | undefined> {
    const normalized = normalizeAppPassword(password);
    if (normalized === undefined) return undefined;
    // Only a spelling that differs from the stored user by case finds its passwords: a look-alike
    // (full-width letters, a space around it) would open them under a failure count of its own.
    if (!isCanonicalSpelling(user)) return undefined;
    const hash = hashAppPassword(this.key, normalized);
    const nowDate = this.now();
    const now = nowDate.getTime();
    let found: Row | undefined;
    // Every live row is compared, in constant time each, whichever matches.
    for (const row of this.liveOfUser.all(userKey(user), now) as unknown as Row[]) {
      const stored = Buffer.from(row.hash.buffer, row.hash.byteOffset, row.hash.byteLength);
      if (stored.length === hash.length && timingSafeEqual(stored, hash) && found === undefined) found = row;
    }
    if (found === undefined || !found.protocols.split(',').includes(protocol)) return undefined;
    const use: AppPasswordUse = { at: nowDate, address, protocol };
    this.pendingUse.set(found.id, use);
    if (now - this.lastWriteAt >= this.options.lastUseWriteSeconds * 1000) this.writePendingUses();
    return this.record(found);
  }

  async close(): Promise<void> {
    if (this.closed) return;
    clearInterval(this.timer);
    this.writePendingUses();
    this.closed = true;
    this.db.close();
  }

  /** Writes the last uses kept in memory; a newer one another process wrote is left alone. */
  writePendingUses(): void {
    if (this.closed) return;
    this.lastWriteAt = this.now().getTime();
    if (this.pendingUse.size === 0) return;
    const pending = [...this.pendingUse];
    this.pendingUse.clear();
    this.transaction(() => {
      for (const [id, use] of pending) this.writeUse.run(use.at.getTime(), use.address, use.protocol, id, use.at.getTime());
    });
  }

  private revokeWhere(condition: string, values: string[], user: string, by: string): number {
    const result = this.db
      .prepare(`UPDATE app_passwords SET revoked_at = ?, revoked_by = ? WHERE user_key = ? AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > ?) AND ${condition}`)
      .run(this.now().getTime(), by, userKey(user), this.now().getTime(), ...values);
    return Number(result.changes);
  }

  private record(row: Row): AppPasswordRecord {
    const pending = this.pendingUse.get(row.id);
    const stored: AppPasswordUse | undefined =
      row.last_used_at === null ? undefined : { at: new Date(row.last_used_at), address: row.last_used_address ?? '', protocol: row.last_used_protocol as MailProtocol };
    return {
      id: row.id,
      user: row.user,
      label: row.label,
      protocols: row.protocols.split(',') as MailProtocol[],
      createdAt: new Date(row.created_at),
      expiresAt: row.expires_at === null ? undefined : new Date(row.expires_at),
      lastUse: pending && (!stored || pending.at >= stored.at) ? pending : stored,
    };
  }

  /** Runs `work` in a write transaction taken at once (another process waits for the busy timeout). */
  private transaction<T>(work: () => T): T {
    this.db.exec('BEGIN IMMEDIATE');
    try {
      const result = work();
      this.db.exec('COMMIT');
      return result;
    } catch (err) {
      this.db.exec('ROLLBACK');
      throw err;
    }
  }
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

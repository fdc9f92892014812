/** The app-password service on the embedded SQLite database in `storage.dir`. */
import type { DatabaseSync, StatementSync } from 'node:sqlite';
import type { AppPasswordsConfig, MailProtocol, StorageConfig } from '../config/schema.js';
import { openDatabase, StorageError, type Migration } from '../storage/database.js';
import { loadOrCreateKey } from '../storage/key-file.js';
import {
  checkRoom,
  historyRecord,
  LastUseBuffer,
  loginHash,
  matchLiveRow,
  newAppPassword,
  recordFromRow,
  userKey,
  type AppPasswordHistoryRecord,
  type AppPasswordRow,
} from './app-password-rules.js';
import type { AppPasswordRecord, AppPasswordRequest, AppPasswordService, CreatedAppPassword } from './app-passwords.js';

/** The database file in `storage.dir`. */
export const DATABASE_FILE = 'sasl-gate.db';
/** The generated server key in `storage.dir`, when `appPasswords.keyFile` is unset. */
export const KEY_FILE = 'app-passwords.key';

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

const LIVE = 'revoked_at IS NULL AND (expires_at IS NULL OR expires_at > ?)';
const NEWEST_FIRST = 'ORDER BY created_at DESC, rowid DESC';

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
  private readonly lastUses: LastUseBuffer;
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
    this.liveOfUser = db.prepare(`SELECT * FROM app_passwords WHERE user_key = ? AND ${LIVE} ${NEWEST_FIRST}`);
    this.writeUse = db.prepare(
      'UPDATE app_passwords SET last_used_at = ?, last_used_address = ?, last_used_protocol = ? WHERE id = ? AND (last_used_at IS NULL OR last_used_at <= ?)',
    );
    this.lastUses = new LastUseBuffer(options.lastUseWriteSeconds, this.now);
    this.timer = this.lastUses.startTimer(options.flushTimer, () => this.writePendingUsesQuietly());
  }

  async create(input: AppPasswordRequest): Promise<CreatedAppPassword> {
    const created = newAppPassword(input, this.key, this.options.defaultProtocols, this.now);
    return this.transaction(() => {
      const live = this.liveOfUser.all(created.userKey, created.createdAt) as unknown as AppPasswordRow[];
      checkRoom(
        live.map((row) => row.label),
        created.label,
        this.options.maxPerUser,
      );
      this.db
        .prepare(
          'INSERT INTO app_passwords (id, user, user_key, label, hash, protocols, created_at, created_by, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)',
        )
        .run(...created.values);
      return created.created;
    });
  }

  async list(user?: string): Promise<AppPasswordRecord[]> {
    const now = this.now().getTime();
    const rows = (
      user === undefined
        ? this.db.prepare(`SELECT * FROM app_passwords WHERE ${LIVE} ${NEWEST_FIRST}`).all(now)
        : this.liveOfUser.all(userKey(user), now)
    ) as unknown as AppPasswordRow[];
    return rows.map((row) => this.record(row));
  }

  /** Every password, revoked and expired ones too, with its status (the admin's `list --all`). */
  history(user?: string): AppPasswordHistoryRecord[] {
    const rows = (
      user === undefined
        ? this.db.prepare(`SELECT * FROM app_passwords ${NEWEST_FIRST}`).all()
        : this.db.prepare(`SELECT * FROM app_passwords WHERE user_key = ? ${NEWEST_FIRST}`).all(userKey(user))
    ) as unknown as AppPasswordRow[];
    const now = this.now().getTime();
    return rows.map((row) => historyRecord(row, this.record(row), now));
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
    const hash = loginHash(this.key, user, password);
    if (hash === undefined) return undefined;
    const now = this.now();
    const found = matchLiveRow(this.liveOfUser.all(userKey(user), now.getTime()) as unknown as AppPasswordRow[], hash, protocol);
    if (found === undefined) return undefined;
    // A last use that cannot be written now is kept for the next write; the login stands.
    if (this.lastUses.note(found.id, { at: now, address, protocol })) this.writePendingUsesQuietly();
    return this.record(found);
  }

  async close(): Promise<void> {
    if (this.closed) return;
    clearInterval(this.timer);
    this.writePendingUsesQuietly();
    this.closed = true;
    this.db.close();
  }

  /** Writes the last uses kept in memory; a newer one another process wrote is left alone. */
  writePendingUses(): void {
    if (this.closed) return;
    const pending = this.lastUses.take();
    if (pending.length === 0) return;
    try {
      this.transaction(() => {
        for (const [id, use] of pending) this.writeUse.run(use.at.getTime(), use.address, use.protocol, id, use.at.getTime());
      });
    } catch (err) {
      this.lastUses.restore(pending);
      throw err;
    }
  }

  /** {@link writePendingUses} where a failure must not escape (a timer, a login that matched, close). */
  private writePendingUsesQuietly(): void {
    try {
      this.writePendingUses();
    } catch {
      // Kept in memory (restored) for the next write.
    }
  }

  private revokeWhere(condition: string, values: string[], user: string, by: string): number {
    const now = this.now().getTime();
    const result = this.db
      .prepare(`UPDATE app_passwords SET revoked_at = ?, revoked_by = ? WHERE user_key = ? AND ${LIVE} AND ${condition}`)
      .run(now, by, userKey(user), now, ...values);
    return Number(result.changes);
  }

  private record(row: AppPasswordRow): AppPasswordRecord {
    return recordFromRow(row, this.lastUses.get(row.id));
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

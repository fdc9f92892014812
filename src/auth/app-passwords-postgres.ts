/**
 * The app-password service on PostgreSQL (`storage.postgres`), shared by every replica: the same
 * rules as the SQLite service (canonical user spellings, keyed hashes compared in constant time,
 * throttled last use, expiry by the injected clock). A database that cannot answer makes `verify`
 * reject with a temporary StorageError, so the login fails temporarily and the client retries.
 */
import { randomBytes, timingSafeEqual } from 'node:crypto';
import type { MailProtocol } from '../config/schema.js';
import { GateError } from '../errors.js';
import type { PostgresPool } from '../storage/postgres.js';
import { AppPasswordError, type AppPasswordRecord, type AppPasswordService, type AppPasswordUse, type CreatedAppPassword } from './app-passwords.js';
import { generateAppPassword, hashAppPassword, normalizeAppPassword } from './app-passwords-format.js';
import { checkLabel, checkProtocols, isCanonicalSpelling, userKey, type AppPasswordHistoryRecord } from './app-passwords-sqlite.js';

/** What the service is built from, beside the pool and the key. */
export interface PostgresAppPasswordOptions {
  defaultProtocols: readonly MailProtocol[];
  maxPerUser: number;
  lastUseWriteSeconds: number;
  /** The time, injected for tests. */
  now?: () => Date;
  /** Whether a timer writes pending last uses every `lastUseWriteSeconds` (serve: yes; tests and the command line: no). */
  flushTimer?: boolean;
}

interface Row {
  id: string;
  user: string;
  label: string;
  hash: Buffer;
  protocols: string;
  created_at: string;
  created_by: string;
  expires_at: string | null;
  revoked_at: string | null;
  revoked_by: string | null;
  last_used_at: string | null;
  last_used_address: string | null;
  last_used_protocol: string | null;
}

const LIVE = 'revoked_at IS NULL AND (expires_at IS NULL OR expires_at > $2)';
const NEWEST_FIRST = 'ORDER BY created_at DESC, seq DESC';

/**
 * App passwords in PostgreSQL. No list is cached: every call reads the database, so another
 * replica's (or the command line's) change counts at once. Only the last use is kept in memory and
 * written at most every `lastUseWriteSeconds` (and at close). Closing leaves the pool to its owner.
 */
export class PostgresAppPasswordService implements AppPasswordService {
  private readonly now: () => Date;
  private readonly pendingUse = new Map<string, AppPasswordUse>();
  private lastWriteAt = -Infinity;
  private readonly timer: NodeJS.Timeout | undefined;
  private closed = false;

  constructor(
    private readonly db: PostgresPool,
    private readonly key: Buffer,
    private readonly options: PostgresAppPasswordOptions,
  ) {
    this.now = options.now ?? (() => new Date());
    if (options.flushTimer && options.lastUseWriteSeconds > 0) {
      this.timer = setInterval(() => void this.writePendingUses().catch(() => undefined), options.lastUseWriteSeconds * 1000);
      this.timer.unref();
    }
  }

  async create(input: { user: string; label: string; protocols?: MailProtocol[]; expiresAt?: Date; createdBy?: 'user' | 'admin' }): Promise<CreatedAppPassword> {
    const user = input.user.trim();
    if (!isCanonicalSpelling(user)) {
      throw new GateError('bad_user', 'an app password is for a user name in its canonical spelling (NFKC, no compatibility characters)');
    }
    const label = checkLabel(input.label);
    const protocols = checkProtocols(input.protocols ?? [...this.options.defaultProtocols]);
    const now = this.now().getTime();
    if (input.expiresAt !== undefined && input.expiresAt.getTime() <= now) {
      throw new GateError('bad_expiry', 'an app password must expire in the future');
    }
    const password = generateAppPassword();
    const id = randomBytes(9).toString('base64url');
    const key = userKey(user);
    return this.db.transaction(async (client) => {
      // One create per user at a time across replicas, so two cannot both pass the limit or the label check.
      await client.query('SELECT pg_advisory_xact_lock(1, hashtext($1))', [key]);
      const { rows: live } = await client.query<Row>(`SELECT label FROM app_passwords WHERE user_key = $1 AND ${LIVE}`, [key, now]);
      if (live.some((row) => row.label === label)) throw new AppPasswordError('duplicate_label', `there is already a password named "${label}"`);
      if (live.length >= this.options.maxPerUser) {
        throw new AppPasswordError('too_many', `at most ${this.options.maxPerUser} app passwords per user: revoke one first`);
      }
      await client.query(
        'INSERT INTO app_passwords (id, "user", user_key, label, hash, protocols, created_at, created_by, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)',
        [id, user, key, label, hashAppPassword(this.key, normalizeAppPassword(password)!), protocols.join(','), now, input.createdBy ?? 'user', input.expiresAt?.getTime() ?? null],
      );
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
    return (await this.liveRows(user)).map((row) => this.record(row));
  }

  /** Every password, revoked and expired ones too, with its status (the admin's `list --all`). */
  async history(user?: string): Promise<AppPasswordHistoryRecord[]> {
    const { rows } =
      user === undefined
        ? await this.db.query<Row>(`SELECT * FROM app_passwords ${NEWEST_FIRST}`)
        : await this.db.query<Row>(`SELECT * FROM app_passwords WHERE user_key = $1 ${NEWEST_FIRST}`, [userKey(user)]);
    const now = this.now().getTime();
    return rows.map((row) => ({
      ...this.record(row),
      status: row.revoked_at !== null ? 'revoked' : row.expires_at !== null && Number(row.expires_at) <= now ? 'expired' : 'live',
      createdBy: row.created_by,
      revokedAt: row.revoked_at === null ? undefined : new Date(Number(row.revoked_at)),
      revokedBy: row.revoked_by ?? undefined,
    }));
  }

  async revokeById(user: string, id: string): Promise<boolean> {
    return (await this.revokeWhere('id = $4', [id], user, 'user')) > 0;
  }

  async revokeByLabel(user: string, label: string): Promise<boolean> {
    return (await this.revokeWhere('label = $4', [label.trim()], user, 'user')) > 0;
  }

  async revokeAll(user: string, reason: 'directory' | 'admin'): Promise<number> {
    return this.revokeWhere('TRUE', [], user, reason);
  }

  async verify(user: string, password: string, protocol: MailProtocol, address: string): Promise<AppPasswordRecord | undefined> {
    const normalized = normalizeAppPassword(password);
    if (normalized === undefined) return undefined;
    // As in the SQLite service: a look-alike spelling of the user finds nothing.
    if (!isCanonicalSpelling(user)) return undefined;
    const hash = hashAppPassword(this.key, normalized);
    const nowDate = this.now();
    let found: Row | undefined;
    // Every live row is compared, in constant time each, whichever matches.
    for (const row of await this.liveRows(user)) {
      if (row.hash.length === hash.length && timingSafeEqual(row.hash, hash) && found === undefined) found = row;
    }
    if (found === undefined || !found.protocols.split(',').includes(protocol)) return undefined;
    this.pendingUse.set(found.id, { at: nowDate, address, protocol });
    if (nowDate.getTime() - this.lastWriteAt >= this.options.lastUseWriteSeconds * 1000) {
      // The login has succeeded: a last use that cannot be written now is written next time.
      await this.writePendingUses().catch(() => undefined);
    }
    return this.record(found);
  }

  async close(): Promise<void> {
    if (this.closed) return;
    clearInterval(this.timer);
    await this.writePendingUses().catch(() => undefined);
    this.closed = true;
  }

  /** Writes the last uses kept in memory; a newer one another replica wrote is left alone. */
  async writePendingUses(): Promise<void> {
    if (this.closed) return;
    this.lastWriteAt = this.now().getTime();
    if (this.pendingUse.size === 0) return;
    const pending = [...this.pendingUse];
    this.pendingUse.clear();
    try {
      await this.db.query(
        `UPDATE app_passwords AS p SET last_used_at = u.at, last_used_address = u.address, last_used_protocol = u.protocol
         FROM unnest($1::text[], $2::bigint[], $3::text[], $4::text[]) AS u(id, at, address, protocol)
         WHERE p.id = u.id AND (p.last_used_at IS NULL OR p.last_used_at <= u.at)`,
        [pending.map(([id]) => id), pending.map(([, use]) => use.at.getTime()), pending.map(([, use]) => use.address), pending.map(([, use]) => use.protocol)],
      );
    } catch (err) {
      // Kept for the next write, unless a newer use of the same password came meanwhile.
      for (const [id, use] of pending) if (!this.pendingUse.has(id)) this.pendingUse.set(id, use);
      throw err;
    }
  }

  private async liveRows(user: string | undefined): Promise<Row[]> {
    const now = this.now().getTime();
    const { rows } =
      user === undefined
        ? await this.db.query<Row>(`SELECT * FROM app_passwords WHERE ${LIVE.replace('$2', '$1')} ${NEWEST_FIRST}`, [now])
        : await this.db.query<Row>(`SELECT * FROM app_passwords WHERE user_key = $1 AND ${LIVE} ${NEWEST_FIRST}`, [userKey(user), now]);
    return rows;
  }

  private async revokeWhere(condition: string, values: string[], user: string, by: string): Promise<number> {
    const now = this.now().getTime();
    const result = await this.db.query(
      `UPDATE app_passwords SET revoked_at = $2, revoked_by = $3 WHERE user_key = $1 AND ${LIVE} AND ${condition}`,
      [userKey(user), now, by, ...values],
    );
    return result.rowCount ?? 0;
  }

  private record(row: Row): AppPasswordRecord {
    const pending = this.pendingUse.get(row.id);
    const stored: AppPasswordUse | undefined =
      row.last_used_at === null ? undefined : { at: new Date(Number(row.last_used_at)), address: row.last_used_address ?? '', protocol: row.last_used_protocol as MailProtocol };
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
}

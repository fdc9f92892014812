/**
 * The app-password service on PostgreSQL (`storage.postgres`), shared by every replica: the same
 * rules as the SQLite service (canonical user spellings, keyed hashes compared in constant time,
 * throttled last use, expiry by the injected clock). A database that cannot answer makes `verify`
 * reject with a temporary StorageError, so the login fails temporarily and the client retries.
 */
import type { MailProtocol } from '../config/schema.js';
import type { PostgresPool } from '../storage/postgres.js';
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

const LIVE = 'revoked_at IS NULL AND (expires_at IS NULL OR expires_at > $2)';
const NEWEST_FIRST = 'ORDER BY created_at DESC, seq DESC';

/**
 * App passwords in PostgreSQL. No list is cached: every call reads the database, so another
 * replica's (or the command line's) change counts at once. Only the last use is kept in memory and
 * written at most every `lastUseWriteSeconds` (and at close). Closing leaves the pool to its owner.
 */
export class PostgresAppPasswordService implements AppPasswordService {
  private readonly now: () => Date;
  private readonly lastUses: LastUseBuffer;
  private readonly timer: NodeJS.Timeout | undefined;
  private closed = false;

  constructor(
    private readonly db: PostgresPool,
    private readonly key: Buffer,
    private readonly options: PostgresAppPasswordOptions,
  ) {
    this.now = options.now ?? (() => new Date());
    this.lastUses = new LastUseBuffer(options.lastUseWriteSeconds, this.now);
    this.timer = this.lastUses.startTimer(options.flushTimer, () => void this.writePendingUses().catch(() => undefined));
  }

  async create(input: AppPasswordRequest): Promise<CreatedAppPassword> {
    const created = newAppPassword(input, this.key, this.options.defaultProtocols, this.now);
    return this.db.transaction(async (client) => {
      // One create per user at a time across replicas, so two cannot both pass the limit or the label check.
      await client.query('SELECT pg_advisory_xact_lock(1, hashtext($1))', [created.userKey]);
      const { rows: live } = await client.query<{ label: string }>(`SELECT label FROM app_passwords WHERE user_key = $1 AND ${LIVE}`, [
        created.userKey,
        created.createdAt,
      ]);
      checkRoom(
        live.map((row) => row.label),
        created.label,
        this.options.maxPerUser,
      );
      await client.query(
        'INSERT INTO app_passwords (id, "user", user_key, label, hash, protocols, created_at, created_by, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)',
        created.values,
      );
      return created.created;
    });
  }

  async list(user?: string): Promise<AppPasswordRecord[]> {
    return (await this.liveRows(user)).map((row) => this.record(row));
  }

  /** Every password, revoked and expired ones too, with its status (the admin's `list --all`). */
  async history(user?: string): Promise<AppPasswordHistoryRecord[]> {
    const { rows } =
      user === undefined
        ? await this.db.query<AppPasswordRow>(`SELECT * FROM app_passwords ${NEWEST_FIRST}`)
        : await this.db.query<AppPasswordRow>(`SELECT * FROM app_passwords WHERE user_key = $1 ${NEWEST_FIRST}`, [userKey(user)]);
    const now = this.now().getTime();
    return rows.map((row) => historyRecord(row, this.record(row), now));
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
    const hash = loginHash(this.key, user, password);
    if (hash === undefined) return undefined;
    const now = this.now();
    const found = matchLiveRow(await this.liveRows(user), hash, protocol);
    if (found === undefined) return undefined;
    if (this.lastUses.note(found.id, { at: now, address, protocol })) {
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
    const pending = this.lastUses.take();
    if (pending.length === 0) return;
    try {
      await this.db.query(
        `UPDATE app_passwords AS p SET last_used_at = u.at, last_used_address = u.address, last_used_protocol = u.protocol
         FROM unnest($1::text[], $2::bigint[], $3::text[], $4::text[]) AS u(id, at, address, protocol)
         WHERE p.id = u.id AND (p.last_used_at IS NULL OR p.last_used_at <= u.at)`,
        [pending.map(([id]) => id), pending.map(([, use]) => use.at.getTime()), pending.map(([, use]) => use.address), pending.map(([, use]) => use.protocol)],
      );
    } catch (err) {
      this.lastUses.restore(pending);
      throw err;
    }
  }

  private async liveRows(user: string | undefined): Promise<AppPasswordRow[]> {
    const now = this.now().getTime();
    const { rows } =
      user === undefined
        ? await this.db.query<AppPasswordRow>(`SELECT * FROM app_passwords WHERE ${LIVE.replace('$2', '$1')} ${NEWEST_FIRST}`, [now])
        : await this.db.query<AppPasswordRow>(`SELECT * FROM app_passwords WHERE user_key = $1 AND ${LIVE} ${NEWEST_FIRST}`, [userKey(user), now]);
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

  private record(row: AppPasswordRow): AppPasswordRecord {
    return recordFromRow(row, this.lastUses.get(row.id));
  }
}

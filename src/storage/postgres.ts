/**
 * PostgreSQL that several replicas share (`storage.postgres`): a connection pool with timeouts on
 * connecting and on every query, so an unreachable database fails fast instead of hanging logins,
 * and schema migrations at start, recorded in a version table and serialised across replicas that
 * start at once by an advisory lock.
 */
import pg from 'pg';
import { GateError } from '../errors.js';
import { StorageError, type Migration } from './database.js';

/** What the pool is built from (`storage.postgres`). */
export interface PostgresSettings {
  url: string;
  maxConnections: number;
  timeoutSeconds: number;
}

/** The advisory lock key migrations hold: any constant the application does not use otherwise. */
const MIGRATION_LOCK = 0x5a5147;

/** After the database failed to answer, how long queries fail at once instead of each waiting for the timeout. */
const FAIL_FAST_MS = 1000;

/**
 * A pool whose failures are StorageErrors that never show the URL (it holds a password). Once the
 * database has not answered (a timeout, a refused or broken connection), queries fail at once for
 * a second, so an outage costs each login at most one timeout per second, not one each.
 */
export class PostgresPool {
  readonly pool: pg.Pool;
  private downUntil = 0;

  constructor(settings: PostgresSettings) {
    const timeoutMs = Math.round(settings.timeoutSeconds * 1000);
    this.pool = new pg.Pool({
      connectionString: settings.url,
      max: settings.maxConnections,
      connectionTimeoutMillis: timeoutMs,
      // Client side: a frozen or partitioned server answers nothing, and the server's own timeout never fires.
      query_timeout: timeoutMs,
      statement_timeout: timeoutMs,
      idleTimeoutMillis: 30_000,
      keepAlive: true,
      application_name: 'sasl-gate',
    });
    // A pooled connection the server dropped reports here; the pool replaces it on next use.
    this.pool.on('error', () => undefined);
  }

  /** Runs one statement; rejects with a StorageError (code `storage`, temporary) when the database cannot answer. */
  async query<R extends pg.QueryResultRow = pg.QueryResultRow>(text: string, values: unknown[] = []): Promise<pg.QueryResult<R>> {
    this.checkUp();
    try {
      return await this.pool.query<R>(text, values);
    } catch (err) {
      throw this.failed(err);
    }
  }

  /** Runs `work` in one transaction on one connection; rolled back when it throws. */
  async transaction<T>(work: (client: pg.PoolClient) => Promise<T>): Promise<T> {
    this.checkUp();
    let client: pg.PoolClient;
    try {
      client = await this.pool.connect();
    } catch (err) {
      throw this.failed(err);
    }
    let broken = false;
    try {
      await client.query('BEGIN');
      const result = await work(client);
      await client.query('COMMIT');
      return result;
    } catch (err) {
      await client.query('ROLLBACK').catch(() => {
        broken = true;
      });
      // Refusals the work made on purpose (GateErrors) pass unchanged; the driver's become StorageErrors.
      throw err instanceof GateError ? err : this.failed(err);
    } finally {
      client.release(broken);
    }
  }

  private checkUp(): void {
    if (Date.now() < this.downUntil) throw new StorageError('PostgreSQL did not answer a moment ago; trying again shortly');
  }

  /** The error to throw; one the server did not send itself (no answer) starts the fail-fast second. */
  private failed(err: unknown): StorageError {
    if (!(err instanceof pg.DatabaseError) && !(err instanceof StorageError)) this.downUntil = Date.now() + FAIL_FAST_MS;
    return unavailable(err);
  }

  /** Closes every connection. */
  async close(): Promise<void> {
    await this.pool.end().catch(() => undefined);
  }
}

/** A database failure as a StorageError, with the driver's message (which never holds the URL). */
export function unavailable(err: unknown): StorageError {
  if (err instanceof StorageError) return err;
  return new StorageError(`PostgreSQL: ${(err as Error).message}`, { cause: err });
}

/**
 * Brings the schema up to the last of `migrations` (each step in its own transaction); a schema
 * newer than the migrations known here is refused. Replicas starting at once take turns.
 */
export async function migratePostgres(db: PostgresPool, migrations: readonly Migration[]): Promise<void> {
  const ordered = [...migrations].sort((a, b) => a.version - b.version);
  ordered.forEach((m, i) => {
    if (m.version !== i + 1) throw new StorageError(`migration versions must count up from 1 (found ${m.version} at position ${i + 1})`);
  });
  const known = ordered.at(-1)?.version ?? 0;
  await db.transaction(async (client) => {
    // Transaction-scoped: released at commit or rollback, even if this process dies.
    await client.query('SELECT pg_advisory_xact_lock($1)', [MIGRATION_LOCK]);
    await client.query('CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY, applied_at BIGINT NOT NULL)');
    const { rows } = await client.query<{ version: number | null }>('SELECT max(version) AS version FROM schema_version');
    const current = rows[0]?.version ?? 0;
    if (current > known) throw new StorageError(`the database has schema version ${current}, newer than this sasl-gate knows (${known}): upgrade sasl-gate`);
    for (const migration of ordered) {
      if (migration.version <= current) continue;
      await client.query(migration.sql);
      await client.query('INSERT INTO schema_version (version, applied_at) VALUES ($1, $2)', [migration.version, Date.now()]);
    }
  });
}

/** The schema sasl-gate keeps in PostgreSQL, step by step; never edit a released step, add one. */
export const POSTGRES_MIGRATIONS: readonly Migration[] = [
  {
    version: 1,
    sql: `
      CREATE TABLE app_passwords (
        seq BIGSERIAL UNIQUE,
        id TEXT PRIMARY KEY,
        "user" TEXT NOT NULL,
        user_key TEXT NOT NULL,
        label TEXT NOT NULL,
        hash BYTEA NOT NULL,
        protocols TEXT NOT NULL,
        created_at BIGINT NOT NULL,
        created_by TEXT NOT NULL,
        expires_at BIGINT,
        revoked_at BIGINT,
        revoked_by TEXT,
        last_used_at BIGINT,
        last_used_address TEXT,
        last_used_protocol TEXT
      );
      CREATE INDEX app_passwords_by_user ON app_passwords (user_key, revoked_at);
      CREATE TABLE auth_failures (
        kind CHAR(1) NOT NULL,
        key TEXT NOT NULL,
        failures INTEGER NOT NULL,
        last_at BIGINT NOT NULL,
        PRIMARY KEY (kind, key)
      );
      CREATE INDEX auth_failures_by_age ON auth_failures (kind, last_at);
    `,
  },
  {
    version: 2,
    sql: `
      CREATE TABLE directory_state (
        id SMALLINT PRIMARY KEY CHECK (id = 1),
        state JSONB NOT NULL,
        version BIGINT NOT NULL,
        saved_at BIGINT NOT NULL
      );
      CREATE TABLE directory_lease (
        id SMALLINT PRIMARY KEY CHECK (id = 1),
        holder TEXT NOT NULL,
        expires_at BIGINT NOT NULL
      );
    `,
  },
];

/** Opens the pool and migrates the schema; throws StorageError when the database cannot be reached or migrated. */
export async function openPostgres(settings: PostgresSettings): Promise<PostgresPool> {
  const db = new PostgresPool(settings);
  try {
    await migratePostgres(db, POSTGRES_MIGRATIONS);
  } catch (err) {
    await db.close();
    throw err instanceof StorageError ? err : unavailable(err);
  }
  return db;
}

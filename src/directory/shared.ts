/**
 * The directory shared through PostgreSQL (`storage.postgres`): one replica syncs from the
 * provider while it holds a lease (a row with an expiry in the database's own clock, renewed at
 * every sync, released at shutdown, taken over by another replica once it lapses); every replica
 * serves from the last good set in the database, picking up a newer one by a short poll of its
 * version. A database that cannot answer changes nothing: each replica serves what it has.
 */
import { randomBytes } from 'node:crypto';
import type { PostgresPool } from '../storage/postgres.js';
import type { Directory, DirectoryState } from './directory.js';
import { DirectoryStoreError, parseState, stateDocument, type DirectoryPersistence } from './store.js';

/** The database's clock in milliseconds: every replica's lease is judged by the same clock. */
const DB_NOW_MS = '(extract(epoch from clock_timestamp()) * 1000)::bigint';

/** The last good directory in PostgreSQL, with a version every save counts up. */
export class PostgresDirectoryStore implements DirectoryPersistence {
  readonly file = 'PostgreSQL (storage.postgres)';
  /** The version this replica last loaded or saved. */
  private knownVersion = 0;

  /** `lease`: the lease of the replica that syncs; a save is then refused unless it holds it. */
  constructor(
    private readonly db: PostgresPool,
    private readonly lease?: DirectoryLease,
  ) {}

  async load(): Promise<DirectoryState | undefined> {
    const { rows } = await this.db.query<{ state: unknown; version: string }>('SELECT state, version FROM directory_state WHERE id = 1');
    const row = rows[0];
    if (!row) return undefined;
    const state = parseState(row.state);
    this.knownVersion = Number(row.version);
    return state;
  }

  async save(state: DirectoryState): Promise<void> {
    const document = JSON.stringify(stateDocument(state));
    // With a lease, only its holder writes: a replica that froze after it took the lease and woke
    // up after another replica synced must not put its older set back over the newer one.
    const { rows } = this.lease
      ? await this.db.query<{ version: string }>(
          `INSERT INTO directory_state (id, state, version, saved_at)
           SELECT 1, $1, 1, ${DB_NOW_MS} WHERE EXISTS (SELECT 1 FROM directory_lease WHERE holder = $2 AND expires_at > ${DB_NOW_MS})
           ON CONFLICT (id) DO UPDATE SET state = EXCLUDED.state, version = directory_state.version + 1, saved_at = EXCLUDED.saved_at
           RETURNING version`,
          [document, this.lease.holder],
        )
      : await this.db.query<{ version: string }>(
          `INSERT INTO directory_state (id, state, version, saved_at) VALUES (1, $1, 1, ${DB_NOW_MS})
           ON CONFLICT (id) DO UPDATE SET state = EXCLUDED.state, version = directory_state.version + 1, saved_at = EXCLUDED.saved_at
           RETURNING version`,
          [document],
        );
    if (!rows[0]) {
      // The shared set wins; the follower restores it over the one this replica just applied.
      this.knownVersion = 0;
      throw new DirectoryStoreError('the directory lease passed to another replica during this sync; its shared set is kept');
    }
    this.knownVersion = Number(rows[0].version);
  }

  /** The saved state when another replica saved a newer one than this replica knows; else undefined. */
  async loadIfNewer(): Promise<DirectoryState | undefined> {
    const { rows } = await this.db.query<{ version: string }>('SELECT version FROM directory_state WHERE id = 1');
    if (!rows[0] || Number(rows[0].version) <= this.knownVersion) return undefined;
    return this.load();
  }
}

/** Who syncs the directory: the replica that holds the lease row. */
export class DirectoryLease {
  /** This process's name in the lease row (random, so a restarted replica is a new holder). */
  readonly holder = `${process.pid}-${randomBytes(6).toString('hex')}`;

  /** `ttlMs`: how long a lease lasts unrenewed; longer than the longest wait between two syncs. */
  constructor(
    private readonly db: PostgresPool,
    private readonly ttlMs: number,
  ) {}

  /** Takes or renews the lease; true when this replica holds it now. False when the database cannot answer. */
  async acquire(): Promise<boolean> {
    try {
      const result = await this.db.query(
        `INSERT INTO directory_lease (id, holder, expires_at) VALUES (1, $1, ${DB_NOW_MS} + $2)
         ON CONFLICT (id) DO UPDATE SET holder = EXCLUDED.holder, expires_at = EXCLUDED.expires_at
         WHERE directory_lease.holder = $1 OR directory_lease.expires_at <= ${DB_NOW_MS}
         RETURNING holder`,
        [this.holder, this.ttlMs],
      );
      return result.rowCount === 1;
    } catch {
      return false;
    }
  }

  /** Gives the lease up (at shutdown), so another replica takes over at its next sync. */
  async release(): Promise<void> {
    await this.db.query('DELETE FROM directory_lease WHERE holder = $1', [this.holder]).catch(() => undefined);
  }
}

/** The part of a pino logger the follower uses. */
interface FollowLogger {
  info(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
}

/**
 * Polls the shared copy every `pollMs` and restores a newer one into `directory` (another replica
 * synced). Returns a function that stops it.
 */
export function followSharedDirectory(directory: Directory, store: PostgresDirectoryStore, pollMs: number, log: FollowLogger): () => void {
  let busy = false;
  let failing = false;
  const timer = setInterval(() => {
    if (busy) return;
    busy = true;
    void store
      .loadIfNewer()
      .then((state) => {
        if (failing) log.info({}, 'the shared directory is reachable again');
        failing = false;
        if (!state) return;
        directory.restore(state);
        log.info({ source: state.snapshot.source, fetchedAt: state.snapshot.fetchedAt, users: state.snapshot.users.length }, 'directory taken from the shared copy');
      })
      .catch((err: unknown) => {
        if (!failing) {
          const reason = err instanceof DirectoryStoreError ? err.message : (err as Error).message;
          log.warn({ reason }, 'cannot read the shared directory; serving the set held here');
        }
        failing = true;
      })
      .finally(() => {
        busy = false;
      });
  }, pollMs);
  timer.unref();
  return () => clearInterval(timer);
}

/**
 * The embedded database in `storage.dir`: opened in WAL mode with a busy timeout, so a second
 * process (the admin command line) can read and write while `serve` runs; schema migrations are
 * applied at open, recorded in a version table.
 */
import { chmodSync, closeSync, mkdirSync, openSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { GateError } from '../errors.js';

/** One schema step; `version` counts up from 1 without gaps. */
export interface Migration {
  version: number;
  /** SQL statements run in one transaction. */
  sql: string;
}

/** How long a statement waits for another process's write lock before it fails. */
const BUSY_TIMEOUT_MS = 5000;

/** A storage failure: the directory or database could not be opened or migrated. */
export class StorageError extends GateError {
  constructor(message: string, options: { cause?: unknown } = {}) {
    super('storage', message, { cause: options.cause });
    this.name = 'StorageError';
  }
}

/**
 * Creates `dir` with mode 0700 when missing (parents too); an existing one is left as it is, unless
 * other users may write to it.
 */
export function ensureStorageDir(dir: string): void {
  try {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    const stat = statSync(dir);
    if (!stat.isDirectory()) throw new StorageError(`${dir} is not a directory`);
    // Whoever can write there can replace the key or plant a -wal file, and so any password.
    if ((stat.mode & 0o002) !== 0) {
      throw new StorageError(`storage.dir ${dir} is writable by every local user (mode 0${(stat.mode & 0o7777).toString(8)}): give sasl-gate a directory of its own (0700)`);
    }
  } catch (err) {
    if (err instanceof StorageError) throw err;
    throw new StorageError(`cannot create storage.dir ${dir}: ${(err as Error).message}`, { cause: err });
  }
}

/**
 * Opens (creating when missing, mode 0600) the database `name` in `dir` and brings its schema up to
 * the last of `migrations`. A database newer than the migrations known here is refused.
 */
export function openDatabase(dir: string, name: string, migrations: readonly Migration[]): DatabaseSync {
  ensureStorageDir(dir);
  const path = join(dir, name);
  let db: DatabaseSync;
  try {
    // Created here with 0600 so SQLite never makes it with the umask's mode; its -wal and -shm
    // files take the database file's mode.
    closeSync(openSync(path, 'a', 0o600));
    chmodSync(path, 0o600);
    db = new DatabaseSync(path);
    db.exec(`PRAGMA busy_timeout = ${BUSY_TIMEOUT_MS}`);
    db.exec('PRAGMA journal_mode = WAL');
    db.exec('PRAGMA synchronous = NORMAL');
  } catch (err) {
    throw new StorageError(`cannot open the database ${path}: ${(err as Error).message}`, { cause: err });
  }
  try {
    migrate(db, migrations);
  } catch (err) {
    db.close();
    if (err instanceof StorageError) throw err;
    throw new StorageError(`cannot migrate the database ${path}: ${(err as Error).message}`, { cause: err });
  }
  return db;
}

/** The schema version recorded in `db`; 0 for a new database. */
export function schemaVersion(db: DatabaseSync): number {
  const row = db.prepare('SELECT max(version) AS version FROM schema_version').get() as { version: number | null } | undefined;
  return row?.version ?? 0;
}

/** Applies the migrations `db` has not had yet, each in its own write transaction. */
export function migrate(db: DatabaseSync, migrations: readonly Migration[]): void {
  db.exec('CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL)');
  const known = migrations.length === 0 ? 0 : Math.max(...migrations.map((m) => m.version));
  const ordered = [...migrations].sort((a, b) => a.version - b.version);
  ordered.forEach((m, i) => {
    if (m.version !== i + 1) throw new StorageError(`migration versions must count up from 1 (found ${m.version} at position ${i + 1})`);
  });
  for (const migration of ordered) {
    // IMMEDIATE: two processes starting at once do not both apply the same step.
    db.exec('BEGIN IMMEDIATE');
    try {
      const current = schemaVersion(db);
      if (current > known) throw new StorageError(`the database has schema version ${current}, newer than this sasl-gate knows (${known}): upgrade sasl-gate`);
      if (current < migration.version) {
        db.exec(migration.sql);
        db.prepare('INSERT INTO schema_version (version, applied_at) VALUES (?, ?)').run(migration.version, Date.now());
      }
      db.exec('COMMIT');
    } catch (err) {
      db.exec('ROLLBACK');
      throw err;
    }
  }
  if (ordered.length === 0 && schemaVersion(db) > 0) {
    throw new StorageError('the database has a schema this sasl-gate does not know: upgrade sasl-gate');
  }
}

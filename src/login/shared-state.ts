/**
 * Where the state logins need lives: in this process and the embedded database in `storage.dir`
 * (the default, for one replica), or in PostgreSQL that every replica shares (`storage.postgres`).
 * The one place that chooses.
 */
import type { AppPasswordHistoryRecord } from '../auth/app-password-rules.js';
import type { AppPasswordService } from '../auth/app-passwords.js';
import { PostgresAppPasswordService } from '../auth/app-passwords-postgres.js';
import { openConfiguredAppPasswords } from '../auth/app-passwords-sqlite.js';
import type { AppPasswordsConfig, Config, StorageConfig } from '../config/schema.js';
import { StorageError } from '../storage/database.js';
import { loadOrCreateKey } from '../storage/key-file.js';
import { openPostgres, type PostgresPool } from '../storage/postgres.js';
import { FailureTracker, type FailureStore } from './failures.js';
import { PostgresFailureStore } from './failures-postgres.js';

/** How often stale failure rows are pruned in PostgreSQL besides every thousand failures. */
const PRUNE_EVERY_MS = 60_000;

/** The state a gate's logins share. */
export interface SharedState {
  /** `postgres` when `storage.postgres` is set, else `local`. */
  where: 'local' | 'postgres';
  failures: FailureStore;
  /** The app-password service the gate opened (with `appPasswords.enabled` and none injected). */
  appPasswords: AppPasswordService | undefined;
  /** The pool, with `storage.postgres`. */
  postgres: PostgresPool | undefined;
  /** Writes what is pending and releases what was opened here. */
  close(): Promise<void>;
}

type StateConfig = Pick<Config, 'storage' | 'appPasswords' | 'limits'>;

/**
 * Opens the shared state the configuration asks for: PostgreSQL (pool, migrations) with
 * `storage.postgres`, else memory and `storage.dir`. An injected app-password service or failure
 * store (a worker's, counted by its supervisor) is used as it is, and none is opened here in its
 * place. Throws StorageError when the store cannot be opened.
 */
export async function openSharedState(
  config: StateConfig,
  options: { injectedAppPasswords?: AppPasswordService | undefined; injectedFailures?: FailureStore | undefined } = {},
): Promise<SharedState> {
  const delays = {
    baseDelayMs: Math.round(config.limits.authFailureDelaySeconds * 1000),
    maxDelayMs: Math.round(config.limits.authFailureMaxDelaySeconds * 1000),
  };
  const wantAppPasswords = config.appPasswords.enabled && !options.injectedAppPasswords;
  if (!config.storage.postgres) {
    const appPasswords = wantAppPasswords ? openConfiguredAppPasswords(config, { flushTimer: true }) : undefined;
    return { where: 'local', failures: options.injectedFailures ?? new FailureTracker(delays), appPasswords, postgres: undefined, close: async () => appPasswords?.close() };
  }
  const key = wantAppPasswords ? sharedKey(config) : undefined;
  const db = await openPostgres(postgresSettings(config.storage));
  const ownFailures = options.injectedFailures ? undefined : new PostgresFailureStore(db, { ...delays, pruneEveryMs: PRUNE_EVERY_MS });
  const appPasswords = key ? new PostgresAppPasswordService(db, key, { ...appPasswordOptions(config.appPasswords), flushTimer: true }) : undefined;
  return {
    where: 'postgres',
    failures: options.injectedFailures ?? ownFailures!,
    appPasswords,
    postgres: db,
    async close() {
      ownFailures?.close();
      await appPasswords?.close();
      await db.close();
    },
  };
}

/** The app-password service with the admin's full history, as `sasl-gate app-passwords` uses it. */
export interface AdminAppPasswords extends AppPasswordService {
  history(user?: string): AppPasswordHistoryRecord[] | Promise<AppPasswordHistoryRecord[]>;
}

/** The app-password service of the configured store, for the admin's command line (no timers); closing releases the store. */
export async function openAdminAppPasswords(config: Pick<Config, 'storage' | 'appPasswords'>): Promise<AdminAppPasswords> {
  if (!config.storage.postgres) return openConfiguredAppPasswords(config, { flushTimer: false });
  const key = sharedKey(config);
  const db = await openPostgres(postgresSettings(config.storage));
  const service = new PostgresAppPasswordService(db, key, appPasswordOptions(config.appPasswords));
  const close = service.close.bind(service);
  service.close = async () => {
    await close();
    await db.close();
  };
  return service;
}

/** Whether app passwords have a store configured (`storage.dir` or `storage.postgres`). */
export function appPasswordStoreConfigured(storage: StorageConfig): boolean {
  return storage.dir !== undefined || storage.postgres !== undefined;
}

function postgresSettings(storage: StorageConfig): { url: string; maxConnections: number; timeoutSeconds: number } {
  const settings = storage.postgres!;
  if (settings.url === undefined) throw new StorageError('storage.postgres.url is not set');
  return { url: settings.url, maxConnections: settings.maxConnections, timeoutSeconds: settings.timeoutSeconds };
}

/** Every replica must hash with the same key: only `appPasswords.keyFile` gives one. */
function sharedKey(config: { storage: StorageConfig; appPasswords: AppPasswordsConfig }): Buffer {
  const { keyFile } = config.appPasswords;
  if (keyFile === undefined) throw new StorageError('with storage.postgres every replica needs the same key: set appPasswords.keyFile');
  return loadOrCreateKey({ keyFile, dir: config.storage.dir ?? '', name: '', setting: 'appPasswords.keyFile' });
}

function appPasswordOptions(config: AppPasswordsConfig) {
  return { defaultProtocols: config.defaultProtocols, maxPerUser: config.maxPerUser, lastUseWriteSeconds: config.lastUseWriteSeconds };
}

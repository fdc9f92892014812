/**
 * Keeps the directory fed: loads the last good set from the state file at start, then pulls the
 * full user list from the source on a jittered schedule, applies it (the directory's mass-removal
 * guard may hold it back), and saves every applied set. When the source fails, the directory keeps
 * serving what it has and the failure is logged; retries come sooner than the regular interval.
 */
import type { Directory, ReplaceResult } from './directory.js';
import type { DirectorySource } from './model.js';
import { DirectorySourceError } from './sources/common.js';
import type { DirectoryPersistence } from './store.js';

/** The part of a pino logger the sync uses. */
export interface DirectoryLogger {
  info(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
  error(obj: object, msg: string): void;
}

/** Options of {@link DirectorySync}. */
export interface DirectorySyncOptions {
  directory: Directory;
  source: DirectorySource;
  /** Where applied sets are saved and loaded from at start; unset, nothing is persisted. */
  store?: DirectoryPersistence;
  /** Seconds between full syncs. */
  intervalSeconds: number;
  /**
   * Each wait is varied by up to this share either way (default 0.1), so that several sasl-gate
   * instances do not ask the provider in lockstep.
   */
  jitter?: number;
  /** The first retry after a failure comes this many seconds later, doubling up to the interval. Default 30. */
  retrySeconds?: number;
  logger?: DirectoryLogger;
  /** Default Math.random; tests fix it. */
  random?: () => number;
  /**
   * With several replicas: a sync runs only while this replica holds the lease (taken or renewed
   * at each attempt); otherwise another replica syncs, and this one tries again after `retrySeconds`.
   */
  lease?: { acquire(): Promise<boolean> };
}

/** The outcome of one sync. A held-back set is `ok` (the source answered) with `result.applied` false. */
export type SyncOutcome =
  | { ok: true; result: ReplaceResult; durationMs: number }
  | { ok: false; error: string; durationMs: number };

/** What the sync has done lately, for health output. */
export interface SyncStatus {
  source: string;
  lastAttemptAt: string | undefined;
  /** Last time the source answered and its set was applied. */
  lastSuccessAt: string | undefined;
  lastError: string | undefined;
  consecutiveFailures: number;
  /** Last time a set was held back by the mass-removal guard, while that is still the latest news. */
  heldSince: string | undefined;
  nextSyncAt: string | undefined;
}

const silent: DirectoryLogger = { info() {}, warn() {}, error() {} };

function message(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/** Runs full syncs from a source into a directory, on a schedule and on demand. */
export class DirectorySync {
  private readonly log: DirectoryLogger;
  private readonly random: () => number;
  private readonly jitter: number;
  private readonly intervalMs: number;
  private readonly retryMs: number;
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<SyncOutcome> | undefined;
  private started = false;
  private lastAttemptAt: number | undefined;
  private lastSuccessAt: number | undefined;
  private lastError: string | undefined;
  private heldSince: number | undefined;
  private failures = 0;
  private nextAt: number | undefined;

  constructor(private readonly options: DirectorySyncOptions) {
    if (!(options.intervalSeconds > 0)) throw new RangeError('intervalSeconds must be > 0');
    this.log = options.logger ?? silent;
    this.random = options.random ?? Math.random;
    this.jitter = Math.min(Math.max(options.jitter ?? 0.1, 0), 0.5);
    this.intervalMs = options.intervalSeconds * 1000;
    this.retryMs = Math.min((options.retrySeconds ?? 30) * 1000, this.intervalMs);
  }

  /**
   * Loads the saved set into the directory (unless it already holds one), so it serves at once
   * even when the provider is down. Returns whether a set was loaded; a missing or unusable file
   * is logged, never thrown.
   */
  async loadStored(): Promise<boolean> {
    const store = this.options.store;
    if (!store || this.options.directory.isLoaded()) return false;
    try {
      const state = await store.load();
      if (!state) {
        this.log.info({ file: store.file }, 'no saved directory yet');
        return false;
      }
      this.options.directory.restore(state);
      const stats = this.options.directory.stats();
      this.log.info(
        { file: store.file, source: stats.source, fetchedAt: stats.fetchedAt, users: stats.users, active: stats.active },
        'directory loaded from the state file',
      );
      return true;
    } catch (err) {
      this.log.error({ file: store.file, reason: message(err) }, 'could not load the saved directory');
      return false;
    }
  }

  /** Loads the saved set, runs the first sync and keeps syncing on schedule until {@link stop}. */
  async start(): Promise<SyncOutcome> {
    this.started = true;
    await this.loadStored();
    return this.syncNow();
  }

  /** Stops the schedule; a sync under way finishes, and no new one starts by itself. */
  stop(): void {
    this.started = false;
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    this.nextAt = undefined;
  }

  /**
   * Syncs now (joining one already under way). `force` applies the set even when the mass-removal
   * guard would hold it back: for an admin who confirms that those users really are gone.
   */
  syncNow(options: { force?: boolean } = {}): Promise<SyncOutcome> {
    if (this.running && !options.force) return this.running;
    const previous = this.running ?? Promise.resolve(undefined);
    const run = previous.then(() => this.runOnce(options.force === true));
    this.running = run;
    void run.finally(() => {
      if (this.running === run) this.running = undefined;
    });
    return run;
  }

  /** What the sync has done lately. */
  status(): SyncStatus {
    const iso = (t: number | undefined) => (t === undefined ? undefined : new Date(t).toISOString());
    return {
      source: this.options.source.name,
      lastAttemptAt: iso(this.lastAttemptAt),
      lastSuccessAt: iso(this.lastSuccessAt),
      lastError: this.lastError,
      consecutiveFailures: this.failures,
      heldSince: iso(this.heldSince),
      nextSyncAt: iso(this.nextAt),
    };
  }

  private async runOnce(force: boolean): Promise<SyncOutcome> {
    const { directory, source, store } = this.options;
    const started = Date.now();
    if (this.options.lease && !(await this.options.lease.acquire())) {
      // Another replica syncs (or the shared database cannot say): this one serves the shared copy.
      this.schedule(this.retryMs);
      return { ok: false, error: 'another replica holds the directory lease', durationMs: Date.now() - started };
    }
    this.lastAttemptAt = started;
    let outcome: SyncOutcome;
    try {
      const users = await source.fetchAll();
      if (!Array.isArray(users)) throw new DirectorySourceError(`source ${source.name} answered no user list`);
      const result = directory.replace({ source: source.name, fetchedAt: new Date().toISOString(), users }, { force });
      outcome = { ok: true, result, durationMs: Date.now() - started };
    } catch (err) {
      outcome = { ok: false, error: message(err), durationMs: Date.now() - started };
    }

    if (outcome.ok && outcome.result.applied) {
      this.failures = 0;
      this.lastError = undefined;
      this.heldSince = undefined;
      this.lastSuccessAt = Date.now();
      const { applied: _applied, ...counts } = outcome.result;
      this.log.info({ source: source.name, forced: force, ...counts, durationMs: outcome.durationMs }, 'directory synced');
      directory.prune();
      if (store) {
        try {
          await store.save(directory.exportState());
        } catch (err) {
          this.log.error({ file: store.file, reason: message(err) }, 'could not save the directory; a restart would serve an older set');
        }
      }
    } else if (outcome.ok && !outcome.result.applied) {
      // The source answered, so this is not a failure to retry quickly: the same answer would come.
      this.failures = 0;
      this.heldSince ??= Date.now();
      const held = outcome.result;
      this.lastError = `held back: ${held.removals} of ${held.activeBefore} active users would be removed or disabled`;
      this.log.warn(
        {
          source: source.name,
          removals: held.removals,
          activeBefore: held.activeBefore,
          share: Number(held.share.toFixed(3)),
          maxRemovalShare: held.maxRemovalShare,
          sample: held.sample,
        },
        'directory sync held back: it would remove too many users; serving the previous set until a sync is forced',
      );
    } else if (!outcome.ok) {
      this.failures += 1;
      this.lastError = outcome.error;
      const stats = directory.stats();
      this.log.warn(
        {
          source: source.name,
          reason: outcome.error,
          consecutiveFailures: this.failures,
          servingUsers: stats.active,
          servingSince: stats.fetchedAt,
        },
        'directory sync failed; serving the last good set',
      );
    }
    this.schedule(outcome.ok ? this.intervalMs : Math.min(this.intervalMs, this.retryMs * 2 ** (this.failures - 1)));
    return outcome;
  }

  private schedule(baseMs: number): void {
    if (!this.started) return;
    if (this.timer) clearTimeout(this.timer);
    const delay = Math.max(1000, Math.round(baseMs * (1 + this.jitter * (2 * this.random() - 1))));
    this.nextAt = Date.now() + delay;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      void this.syncNow();
    }, delay);
    this.timer.unref();
  }
}

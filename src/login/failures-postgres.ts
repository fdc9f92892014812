/**
 * Failure delays in PostgreSQL, shared by every replica: the rules of FailureTracker (a delay that
 * doubles per recent failure, forgotten after `forgetAfterMs`, a success clears the user and halves
 * the address), one statement per event. Rows past their time are pruned, and each kind is held to
 * `maxEntries` rows, so a flood of random names costs bounded space. A database that cannot answer
 * gives the longest delay: an outage never lets a guesser through faster.
 */
import { clientAddressKey } from '../net/networks.js';
import type { PostgresPool } from '../storage/postgres.js';
import { failureDelay, userNameKey, type FailureStore } from './failures.js';

/** Settings; the delays and the forgetting time as FailureTracker's. */
export interface PostgresFailureOptions {
  baseDelayMs?: number;
  maxDelayMs?: number;
  forgetAfterMs?: number;
  /** Most rows kept for addresses, and separately for user names. */
  maxEntries?: number;
  /** Failures between two prunings (a timer prunes too, when `pruneEveryMs` is set). */
  pruneEveryFailures?: number;
  pruneEveryMs?: number;
  /** The time, injected for tests; by default the database's own clock, the same for every replica. */
  now?: () => number;
}

/**
 * The time in the parameter `param`, or the database's clock when that is null: judged by each
 * replica's own clock, one running ahead would restart every count it touches and prune every
 * replica's rows as stale.
 */
const nowMs = (param: string) => `COALESCE(${param}::bigint, (extract(epoch from statement_timestamp()) * 1000)::bigint)`;

/**
 * Counts a failure for the address (`a`) and the user (`u`) in one UPSERT and returns the counts
 * after it; a row older than the forgetting time starts again at one.
 */
const FAILED = `
  INSERT INTO auth_failures AS f (kind, key, failures, last_at)
  SELECT kind, key, 1, ${nowMs('$3')} FROM unnest($1::text[], $2::text[]) AS e(kind, key)
  ON CONFLICT (kind, key) DO UPDATE
    SET failures = CASE WHEN f.last_at <= ${nowMs('$3')} - $4::bigint THEN 1 ELSE f.failures + 1 END, last_at = ${nowMs('$3')}
  RETURNING failures`;

/** Clears the user's row and halves the address's count (a stale one drops to zero), in one statement. */
const SUCCEEDED = `
  WITH cleared AS (DELETE FROM auth_failures WHERE kind = 'u' AND key = $2)
  UPDATE auth_failures SET failures = CASE WHEN last_at <= ${nowMs('$3')} - $4::bigint THEN 0 ELSE failures / 2 END
  WHERE kind = 'a' AND key = $1`;

/** Rows past their time, or counted down to zero, and the oldest beyond `maxEntries` per kind. */
const PRUNE_STALE = `DELETE FROM auth_failures WHERE last_at <= ${nowMs('$2')} - $1::bigint OR failures = 0`;
const PRUNE_OLDEST = `
  DELETE FROM auth_failures WHERE kind = $1 AND last_at < (
    SELECT last_at FROM auth_failures WHERE kind = $1 ORDER BY last_at DESC OFFSET $2 LIMIT 1)`;

/** A FailureStore every replica shares through PostgreSQL. */
export class PostgresFailureStore implements FailureStore {
  private readonly baseDelayMs: number;
  private readonly maxDelayMs: number;
  private readonly forgetAfterMs: number;
  private readonly maxEntries: number;
  private readonly pruneEveryFailures: number;
  private readonly now: () => number | null;
  private failuresSincePrune = 0;
  private pruning: Promise<void> | undefined;
  private readonly timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly db: PostgresPool,
    options: PostgresFailureOptions = {},
  ) {
    this.baseDelayMs = options.baseDelayMs ?? 500;
    this.maxDelayMs = options.maxDelayMs ?? 15_000;
    this.forgetAfterMs = options.forgetAfterMs ?? 15 * 60_000;
    this.maxEntries = options.maxEntries ?? 100_000;
    this.pruneEveryFailures = options.pruneEveryFailures ?? 1000;
    this.now = options.now ?? (() => null);
    if (options.pruneEveryMs !== undefined) {
      this.timer = setInterval(() => void this.prune(), options.pruneEveryMs);
      this.timer.unref();
    }
  }

  async failed(address: string, user?: string): Promise<number> {
    const userKey = userNameKey(user);
    const kinds = userKey === undefined ? ['a'] : ['a', 'u'];
    const keys = userKey === undefined ? [clientAddressKey(address)] : [clientAddressKey(address), userKey];
    try {
      const { rows } = await this.db.query<{ failures: number }>(FAILED, [kinds, keys, this.now(), this.forgetAfterMs]);
      if (++this.failuresSincePrune >= this.pruneEveryFailures) void this.prune();
      return failureDelay(Math.max(0, ...rows.map((r) => r.failures)), this.baseDelayMs, this.maxDelayMs);
    } catch {
      return this.maxDelayMs;
    }
  }

  async succeeded(address: string, user?: string): Promise<void> {
    try {
      await this.db.query(SUCCEEDED, [clientAddressKey(address), userNameKey(user) ?? '', this.now(), this.forgetAfterMs]);
    } catch {
      // Nothing is lost that matters: an uncleared count only makes its own user wait.
    }
  }

  /** Deletes stale rows and the oldest beyond `maxEntries` per kind; never rejects. */
  prune(): Promise<void> {
    this.failuresSincePrune = 0;
    this.pruning ??= (async () => {
      try {
        await this.db.query(PRUNE_STALE, [this.forgetAfterMs, this.now()]);
        for (const kind of ['a', 'u']) await this.db.query(PRUNE_OLDEST, [kind, this.maxEntries - 1]);
      } catch {
        // The next pruning tries again.
      } finally {
        this.pruning = undefined;
      }
    })();
    return this.pruning;
  }

  /** Stops the pruning timer (the pool is its owner's to close). */
  close(): void {
    clearInterval(this.timer);
  }
}

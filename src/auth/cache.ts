import { createHash } from 'node:crypto';
import { AuthError } from '../errors.js';
import type { TokenIdentity } from './validator.js';

type Entry =
  | { ok: true; identity: TokenIdentity; until: number }
  | { ok: false; error: AuthError; until: number };

export interface TokenCacheOptions {
  maxEntries: number;
  /** Longest a positive result is kept, whatever the token's own expiry. */
  maxTtlMs: number;
  /** How long a rejection is remembered. */
  negativeTtlMs: number;
  now?: () => number;
}

/** Counters for metrics and benchmarks. */
export interface TokenCacheStats {
  hits: number;
  misses: number;
  /** Lookups that joined a validation already in flight for the same token. */
  joined: number;
}

/**
 * Validation results by a hash of the token (the token itself is never kept): positive ones
 * until the token expires or `maxTtlMs` passes, rejections briefly, temporary failures not at
 * all. Concurrent lookups of the same token share one validation. Bounded: the oldest entries
 * are dropped first.
 */
export class TokenCache {
  private readonly entries = new Map<string, Entry>();
  private readonly inFlight = new Map<string, Promise<TokenIdentity>>();
  readonly stats: TokenCacheStats = { hits: 0, misses: 0, joined: 0 };

  constructor(private readonly options: TokenCacheOptions) {}

  /** The cached result for `token`, or the result of `validate`, cached as described. */
  async get(token: string, validate: () => Promise<TokenIdentity>): Promise<TokenIdentity> {
    const key = createHash('sha256').update(token).digest('base64url');
    const now = this.now();
    const entry = this.entries.get(key);
    if (entry && entry.until > now) {
      this.stats.hits += 1;
      if (entry.ok) return entry.identity;
      throw entry.error;
    }
    if (entry) this.entries.delete(key);
    const running = this.inFlight.get(key);
    if (running) {
      this.stats.joined += 1;
      return running;
    }
    this.stats.misses += 1;
    const attempt = validate().then(
      (identity) => {
        const expiry = identity.expiresAt?.getTime() ?? Infinity;
        this.store(key, { ok: true, identity, until: Math.min(expiry, this.now() + this.options.maxTtlMs) });
        return identity;
      },
      (err: unknown) => {
        if (err instanceof AuthError && !err.temporary) {
          this.store(key, { ok: false, error: err, until: this.now() + this.options.negativeTtlMs });
        }
        throw err;
      },
    );
    this.inFlight.set(key, attempt);
    try {
      return await attempt;
    } finally {
      this.inFlight.delete(key);
    }
  }

  /** Number of cached results. */
  get size(): number {
    return this.entries.size;
  }

  private store(key: string, entry: Entry): void {
    if (this.options.maxEntries === 0 || entry.until <= this.now()) return;
    this.entries.delete(key);
    this.entries.set(key, entry);
    while (this.entries.size > this.options.maxEntries) {
      const oldest = this.entries.keys().next().value as string;
      this.entries.delete(oldest);
    }
  }

  private now(): number {
    return (this.options.now ?? Date.now)();
  }
}

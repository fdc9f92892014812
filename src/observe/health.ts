/**
 * Readiness that means "reachable now": each dependency (a backend, the OpenID provider) keeps
 * the outcome of its most recent probe or connection, and `/readyz` reports them one per line.
 */

/** Where an outcome came from: a probe sasl-gate ran itself, or a client's login needing the dependency. */
export type OutcomeSource = 'probe' | 'login';

/** One line of `/readyz`: whether the check passes, and what to print after its name. */
export interface CheckResult {
  ok: boolean;
  text: string;
}

/** Longest failure reason shown on a readiness line. */
const MAX_REASON = 160;

/**
 * The recent record of one dependency: the last outcome wins, so one success after an outage
 * makes it ready again and one failure after a good spell makes it unready.
 */
export class DependencyHealth {
  private state: 'unknown' | 'ok' | 'failing' = 'unknown';
  private since = 0;
  private lastEvent = 0;
  private reason = '';
  private failedBy: OutcomeSource = 'probe';
  private everOk = false;

  constructor(private readonly now: () => number = Date.now) {}

  /** A probe or connection worked. */
  succeeded(): void {
    const now = this.now();
    if (this.state !== 'ok') this.since = now;
    this.state = 'ok';
    this.everOk = true;
    this.lastEvent = now;
  }

  /** A probe or connection failed; `reason` is shown on the readiness page (no secrets in it). */
  failed(reason: string, source: OutcomeSource = 'probe'): void {
    const now = this.now();
    if (this.state !== 'failing') this.since = now;
    this.state = 'failing';
    this.lastEvent = now;
    this.reason = reason.replace(/[\r\n]+/g, ' ').slice(0, MAX_REASON);
    this.failedBy = source;
  }

  /** Whether nothing has been heard for `ms` (a probe is due). */
  isStale(ms: number): boolean {
    return this.now() - this.lastEvent >= ms;
  }

  /** Whether the last outcome was a failure, and which kind. */
  get failing(): OutcomeSource | undefined {
    return this.state === 'failing' ? this.failedBy : undefined;
  }

  /** The readiness line for this dependency. */
  check(): CheckResult {
    if (this.state === 'unknown') return { ok: false, text: 'not reachable yet' };
    if (this.state === 'ok') return { ok: true, text: 'ok' };
    if (!this.everOk) return { ok: false, text: `not reachable yet: ${this.reason}` };
    const seconds = Math.max(0, Math.round((this.now() - this.since) / 1000));
    return { ok: false, text: `failing for ${seconds} s: ${this.reason}` };
  }
}

/** Every readiness check by name, in the order they were added. */
export class Readiness {
  private readonly checks: Array<[string, () => CheckResult]> = [];

  /** Adds a check shown as `name: ...`. */
  add(name: string, check: () => CheckResult): void {
    this.checks.push([name, check]);
  }

  /** The `/readyz` answer: ready only when every check passes; one line per check. */
  report(): { ready: boolean; body: string } {
    const results = this.checks.map(([name, check]) => [name, check()] as const);
    return {
      ready: results.every(([, result]) => result.ok),
      body: results.map(([name, result]) => `${name}: ${result.text}\n`).join(''),
    };
  }
}

/** Runs a promise-returning function and records its outcome in `health`. */
export async function tracked<T>(health: DependencyHealth, source: OutcomeSource, run: () => Promise<T>): Promise<T> {
  try {
    const result = await run();
    health.succeeded();
    return result;
  } catch (err) {
    health.failed(err instanceof Error ? err.message : String(err), source);
    throw err;
  }
}

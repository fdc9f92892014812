import { AuthError } from '../errors.js';

/**
 * A circuit breaker for calls to the OpenID provider. After `failureThreshold` temporary
 * failures in a row it opens: calls fail at once (a temporary failure) instead of piling up
 * behind a dead or hanging provider. After `openMs` one trial call is let through; its success
 * closes the circuit.
 */
export class CircuitBreaker {
  private failures = 0;
  private openUntil = 0;
  private trialInFlight = false;

  constructor(
    private readonly options: { failureThreshold: number; openMs: number; now?: () => number },
  ) {}

  /** `closed`, `open` (failing fast) or `half-open` (a trial may pass). */
  get state(): 'closed' | 'open' | 'half-open' {
    if (this.failures < this.options.failureThreshold) return 'closed';
    return this.now() < this.openUntil ? 'open' : 'half-open';
  }

  /** Runs `call` unless the circuit is open; temporary AuthErrors count as failures. */
  async run<T>(what: string, call: () => Promise<T>): Promise<T> {
    const state = this.state;
    if (state === 'open' || (state === 'half-open' && this.trialInFlight)) {
      throw new AuthError('provider_unavailable', `${what}: provider marked unavailable after repeated failures`);
    }
    const trial = state === 'half-open';
    if (trial) this.trialInFlight = true;
    try {
      const result = await call();
      this.failures = 0;
      return result;
    } catch (err) {
      if (err instanceof AuthError && err.temporary) {
        this.failures += 1;
        if (this.failures >= this.options.failureThreshold) this.openUntil = this.now() + this.options.openMs;
      } else {
        // The provider answered properly (for example "inactive token"): it is alive.
        this.failures = 0;
      }
      throw err;
    } finally {
      if (trial) this.trialInFlight = false;
    }
  }

  private now(): number {
    return (this.options.now ?? Date.now)();
  }
}

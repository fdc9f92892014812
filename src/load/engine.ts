/**
 * Runs transactions: `concurrency` virtual users, each starting its next transaction as soon as
 * the previous one ended, until `--count` transactions were started or `--duration` passed.
 * With `--rate`, starts follow a fixed schedule (open-loop pacing: start n is due at
 * n / rate seconds) and a virtual user waits for the next due start; when all of them are busy
 * the schedule slips, and the report says by how much (`startLagMs`).
 */
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import { toLoadError } from './errors.js';
import type { Recorder } from './recorder.js';

/** How much work a run does. */
export interface Plan {
  concurrency: number;
  /** Transactions to start in all; with `durationMs` unset. */
  count?: number | undefined;
  /** How long to keep starting transactions; with `count` unset. */
  durationMs?: number | undefined;
  /** Most transaction starts per second. */
  rate?: number | undefined;
  /** Stops starting new transactions (those in flight finish, bounded by their timeouts). */
  signal: AbortSignal;
}

/** Hands out transaction starts: an index and the time it is due. */
export class Pacer {
  private issued = 0;
  private readonly t0 = performance.now();
  private readonly deadline: number | undefined;

  constructor(private readonly plan: Pick<Plan, 'count' | 'durationMs' | 'rate'>) {
    this.deadline = plan.durationMs === undefined ? undefined : this.t0 + plan.durationMs;
  }

  /** The next start, or undefined when the run has started all it should. */
  next(now = performance.now()): { index: number; dueAt: number } | undefined {
    if (this.plan.count !== undefined && this.issued >= this.plan.count) return undefined;
    if (this.deadline !== undefined && now >= this.deadline) return undefined;
    const dueAt = this.plan.rate ? this.t0 + (this.issued * 1000) / this.plan.rate : now;
    if (this.deadline !== undefined && dueAt >= this.deadline) return undefined;
    const index = this.issued;
    this.issued += 1;
    return { index, dueAt };
  }
}

/** Waits `ms`, or less if `signal` aborts; never throws. */
export async function pause(ms: number, signal?: AbortSignal): Promise<void> {
  if (ms <= 0 || signal?.aborted) return;
  try {
    await sleep(ms, undefined, signal ? { signal } : undefined);
  } catch {
    // Aborted.
  }
}

/**
 * Runs `transaction(index)` under the plan, recording each one's outcome and duration. Every
 * virtual user's loop ends when the pacer runs dry or the signal aborts.
 */
export async function runTransactions(plan: Plan, recorder: Recorder, transaction: (index: number) => Promise<void>): Promise<void> {
  const pacer = new Pacer(plan);
  const user = async (): Promise<void> => {
    for (;;) {
      if (plan.signal.aborted) return;
      const start = pacer.next();
      if (!start) return;
      await pause(start.dueAt - performance.now(), plan.signal);
      if (plan.signal.aborted) return;
      const began = performance.now();
      if (plan.rate) recorder.startLag.record(Math.max(0, began - start.dueAt));
      recorder.active += 1;
      try {
        await transaction(start.index);
        recorder.recordOk(performance.now() - began);
      } catch (err) {
        recorder.recordFailure(toLoadError(err), performance.now() - began);
      } finally {
        recorder.active -= 1;
      }
    }
  };
  await Promise.all(Array.from({ length: plan.concurrency }, user));
}

/**
 * What a run measured: outcomes, the latency of whole transactions and of their steps, errors by
 * kind (with one example message each), and a timeline in one-second buckets for the report's
 * charts. Buckets are closed as time moves on, so a long run keeps only a few numbers per second.
 */
import { performance } from 'node:perf_hooks';
import { ERROR_KINDS, type ErrorKind, type LoadError } from './errors.js';
import { LatencyHistogram } from './histogram.js';

/** One second of the run. */
export interface TimelinePoint {
  /** Seconds since the start (the bucket covers [second, second + 1)). */
  second: number;
  /** Transactions that ended well / badly in this second. */
  ok: number;
  failed: number;
  /** Latency of this second's successful transactions, in ms; null without any. */
  p50: number | null;
  p99: number | null;
  max: number | null;
  /** Transactions in flight (or connections held) at the end of the second. */
  active: number;
  /**
   * Set on the last bucket when the run ended inside it: the seconds it covers (under 1), so
   * that its lower counts are not read as a slowdown.
   */
  partialSeconds?: number;
}

/** Longest example message kept per error kind. */
const SAMPLE_LENGTH = 300;

export class Recorder {
  readonly startedAt = new Date();
  private readonly t0 = performance.now();
  private endT: number | undefined;
  ok = 0;
  failed = 0;
  /** Transactions in flight, or connections held. */
  active = 0;
  /** Latency of successful transactions. */
  readonly latency = new LatencyHistogram();
  /** Time from the start of each failed transaction until it failed. */
  readonly failedLatency = new LatencyHistogram();
  readonly steps = new Map<string, LatencyHistogram>();
  readonly errors = Object.fromEntries(ERROR_KINDS.map((k) => [k, 0])) as Record<ErrorKind, number>;
  readonly samples: Partial<Record<ErrorKind, string>> = {};
  readonly timeline: TimelinePoint[] = [];
  /** How late transactions started against the `--rate` schedule. */
  readonly startLag = new LatencyHistogram();
  private bucket = 0;
  private bucketOk = 0;
  private bucketFailed = 0;
  private readonly bucketLatency = new LatencyHistogram();
  /** Closes each second's bucket close to its end, so `active` is sampled then. */
  private readonly ticker: NodeJS.Timeout;

  constructor() {
    this.ticker = setInterval(() => this.advance(), 200);
    this.ticker.unref();
  }

  /** Milliseconds since the start. */
  elapsedMs(): number {
    return (this.endT ?? performance.now()) - this.t0;
  }

  /** A successful transaction that took `ms`. */
  recordOk(ms: number): void {
    this.advance();
    this.ok += 1;
    this.bucketOk += 1;
    this.latency.record(ms);
    this.bucketLatency.record(ms);
  }

  /** A failed transaction, and how long it took to fail when known. */
  recordFailure(err: LoadError, ms?: number): void {
    this.advance();
    if (ms !== undefined) this.failedLatency.record(ms);
    this.failed += 1;
    this.bucketFailed += 1;
    this.errors[err.kind] += 1;
    this.samples[err.kind] ??= err.message.slice(0, SAMPLE_LENGTH);
  }

  /**
   * A transaction counted as ok turned out to fail later (a held connection the server closed):
   * it moves from ok to failed. Its latency stays recorded.
   */
  demote(err: LoadError): void {
    this.ok -= 1;
    this.recordFailure(err);
  }

  /** One step of a transaction (connect, tls, auth, select, ...) that took `ms`. */
  step(name: string, ms: number): void {
    let h = this.steps.get(name);
    if (!h) {
      h = new LatencyHistogram();
      this.steps.set(name, h);
    }
    h.record(ms);
  }

  /** Closes the buckets of the seconds that have passed. */
  tick(): void {
    this.advance();
  }

  /** Ends the run: closes the last (partial) bucket. */
  finish(): void {
    if (this.endT !== undefined) return;
    clearInterval(this.ticker);
    this.advance();
    this.endT = performance.now();
    if (this.bucketOk + this.bucketFailed > 0 || this.timeline.length === 0) {
      const covered = (this.endT - this.t0) / 1000 - this.bucket;
      this.closeBucket(covered < 0.999 ? Math.max(0.001, Math.round(covered * 1000) / 1000) : undefined);
    }
  }

  /** Successful transactions in the last complete second (the live rate). */
  lastSecondOk(): number {
    return this.timeline.at(-1)?.ok ?? this.bucketOk;
  }

  private advance(): void {
    if (this.endT !== undefined) return;
    const now = Math.floor((performance.now() - this.t0) / 1000);
    // Bounded by the seconds elapsed since the last call.
    while (this.bucket < now) this.closeBucket();
  }

  private closeBucket(partialSeconds?: number): void {
    const s = this.bucketLatency.count > 0 ? this.bucketLatency.summary() : undefined;
    this.timeline.push({
      second: this.bucket,
      ok: this.bucketOk,
      failed: this.bucketFailed,
      p50: s ? s.p50 : null,
      p99: s ? s.p99 : null,
      max: s ? s.max : null,
      active: this.active,
      ...(partialSeconds === undefined ? {} : { partialSeconds }),
    });
    this.bucket += 1;
    this.bucketOk = 0;
    this.bucketFailed = 0;
    this.bucketLatency.reset();
  }
}

/** Something to write text to: process.stdout / stderr, or a test's collector. */
export interface Writer {
  write(text: string): unknown;
  isTTY?: boolean;
}

/**
 * The live progress line on stderr: rewritten in place (`\r`) twice a second on a terminal,
 * a plain line every five seconds otherwise (logs, pipes).
 */
export class Progress {
  private timer: NodeJS.Timeout | undefined;
  private width = 0;

  constructor(
    private readonly recorder: Recorder,
    private readonly out: Writer,
    private readonly label: () => string = () => '',
    /** What the run was asked for, shown against what is done: seconds, or transactions. */
    private readonly budget: { durationSeconds?: number | undefined; count?: number | undefined } = {},
  ) {}

  start(): void {
    const tty = this.out.isTTY === true;
    this.timer = setInterval(() => this.show(tty), tty ? 500 : 5000);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    if (this.width > 0) this.out.write(`\r${' '.repeat(this.width)}\r`);
    this.width = 0;
  }

  private show(tty: boolean): void {
    const r = this.recorder;
    r.tick();
    const p99 = r.latency.count > 0 ? `${formatMs(r.latency.percentile(99))}` : '-';
    const extra = this.label();
    const elapsed = `${(r.elapsedMs() / 1000).toFixed(1).padStart(6)}s`;
    const { durationSeconds, count } = this.budget;
    const progress =
      durationSeconds !== undefined
        ? `${elapsed} / ${durationSeconds}s`
        : count !== undefined
          ? `${elapsed}  done ${r.ok + r.failed} / ${count}`
          : elapsed;
    const line =
      `${progress}  ok ${r.ok}  failed ${r.failed}  ` +
      `rate ${r.lastSecondOk()}/s  p99 ${p99}  active ${r.active}${extra ? `  ${extra}` : ''}`;
    if (tty) {
      this.out.write(`\r${line.padEnd(this.width)}`);
      this.width = Math.max(this.width, line.length);
    } else {
      this.out.write(`${line}\n`);
    }
  }
}

/** `12.3 ms`, `1.25 s`. */
export function formatMs(ms: number): string {
  if (ms >= 1000) return `${(ms / 1000).toFixed(2)} s`;
  if (ms >= 100) return `${ms.toFixed(0)} ms`;
  if (ms >= 10) return `${ms.toFixed(1)} ms`;
  return `${ms.toFixed(2)} ms`;
}

/**
 * Latency histograms on Node's built-in HdrHistogram (`perf_hooks.createHistogram`, the C
 * HdrHistogram library): constant memory whatever the number of samples, 3 significant digits,
 * from 1 µs to one hour.
 */
import { createHistogram, type RecordableHistogram } from 'node:perf_hooks';

const LOWEST_US = 1;
const HIGHEST_US = 3_600_000_000;

/** Percentiles in milliseconds (0 for an empty histogram). */
export interface LatencySummary {
  count: number;
  min: number;
  mean: number;
  p50: number;
  p90: number;
  p99: number;
  p999: number;
  max: number;
}

/** Rounds milliseconds to microseconds, the resolution of the histograms. */
function ms(us: number): number {
  return Math.round(us) / 1000;
}

export class LatencyHistogram {
  private readonly h: RecordableHistogram = createHistogram({ lowest: LOWEST_US, highest: HIGHEST_US, figures: 3 });

  /** Records one sample, in milliseconds (clamped to the histogram's range). */
  record(milliseconds: number): void {
    const us = Math.round(milliseconds * 1000);
    this.h.record(Math.min(HIGHEST_US, Math.max(LOWEST_US, Number.isFinite(us) ? us : HIGHEST_US)));
  }

  get count(): number {
    return this.h.count;
  }

  /** The value at percentile `p` (0 < p <= 100), in milliseconds. */
  percentile(p: number): number {
    return this.h.count === 0 ? 0 : ms(this.h.percentile(p));
  }

  summary(): LatencySummary {
    if (this.h.count === 0) return { count: 0, min: 0, mean: 0, p50: 0, p90: 0, p99: 0, p999: 0, max: 0 };
    return {
      count: this.h.count,
      min: ms(this.h.min),
      mean: ms(this.h.mean),
      p50: ms(this.h.percentile(50)),
      p90: ms(this.h.percentile(90)),
      p99: ms(this.h.percentile(99)),
      p999: ms(this.h.percentile(99.9)),
      max: ms(this.h.max),
    };
  }

  reset(): void {
    this.h.reset();
  }
}

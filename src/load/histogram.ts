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

/** One bar of a latency distribution: samples in [fromMs, toMs). */
export interface LatencyBin {
  fromMs: number;
  toMs: number;
  count: number;
}

/** Bins of the distribution per power of ten, on a logarithmic scale from BIN_FLOOR_MS. */
export const BINS_PER_DECADE = 10;
const BIN_FLOOR_MS = 0.01;
const BIN_COUNT = Math.ceil(Math.log10(HIGHEST_US / 1000 / BIN_FLOOR_MS) * BINS_PER_DECADE) + 1;

/** The lower edge of bin `i`, in ms, rounded to three significant digits. */
function binEdge(i: number): number {
  return Number((BIN_FLOOR_MS * 10 ** (i / BINS_PER_DECADE)).toPrecision(3));
}

/** Rounds milliseconds to microseconds, the resolution of the histograms. */
function ms(us: number): number {
  return Math.round(us) / 1000;
}

export class LatencyHistogram {
  private readonly h: RecordableHistogram = createHistogram({ lowest: LOWEST_US, highest: HIGHEST_US, figures: 3 });
  /** Exact counts per logarithmic bin, for the distribution chart (HdrHistogram keeps no public counts). */
  private readonly bins = new Uint32Array(BIN_COUNT);

  /** Records one sample, in milliseconds (clamped to the histogram's range). */
  record(milliseconds: number): void {
    const us = Math.min(HIGHEST_US, Math.max(LOWEST_US, Number.isFinite(milliseconds) ? Math.round(milliseconds * 1000) : HIGHEST_US));
    this.h.record(us);
    const bin = Math.floor(Math.log10(Math.max(us / 1000, BIN_FLOOR_MS) / BIN_FLOOR_MS) * BINS_PER_DECADE);
    this.bins[Math.min(BIN_COUNT - 1, Math.max(0, bin))]! += 1;
  }

  /** The distribution from the first to the last non-empty bin (empty bins between included). */
  distribution(): LatencyBin[] {
    const first = this.bins.findIndex((n) => n > 0);
    if (first < 0) return [];
    let last = BIN_COUNT - 1;
    while (this.bins[last] === 0) last -= 1;
    const out: LatencyBin[] = [];
    for (let i = first; i <= last; i += 1) out.push({ fromMs: binEdge(i), toMs: binEdge(i + 1), count: this.bins[i]! });
    return out;
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
    this.bins.fill(0);
  }
}

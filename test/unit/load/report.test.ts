/**
 * The load report's pure parts: the latency distribution's bins, the text summary and the HTML
 * page, from hand-made reports (the integration test covers the same from real runs).
 */
import { describe, expect, it } from 'vitest';
import { shellQuote } from '../../../src/load/cli.js';
import { ERROR_KINDS } from '../../../src/load/errors.js';
import { LatencyHistogram, type LatencySummary } from '../../../src/load/histogram.js';
import { htmlReport, summaryText, type LoadReport } from '../../../src/load/report.js';
import type { TimelinePoint } from '../../../src/load/recorder.js';

function summary(values: number[]): LatencySummary {
  const h = new LatencyHistogram();
  for (const v of values) h.record(v);
  return h.summary();
}

function distribution(values: number[]) {
  const h = new LatencyHistogram();
  for (const v of values) h.record(v);
  return h.distribution();
}

const NO_ERRORS = Object.fromEntries(ERROR_KINDS.map((k) => [k, 0])) as LoadReport['errors'];

function report(overrides: Partial<LoadReport> = {}): LoadReport {
  const ok = [5, 6, 7, 8, 9, 10, 12, 15, 20, 40];
  return {
    command: "sasl-gate load imap-login --target imaps://127.0.0.1:1993 --count 12 --users '/tmp/a b.tsv'",
    versions: { saslGate: '9.9.9', node: 'v24.0.0', os: 'linux 6.1.0 x64' },
    scenario: 'imap-login',
    target: 'imaps://127.0.0.1:1993',
    mech: 'xoauth2',
    concurrency: 2,
    count: 12,
    duration: null,
    rate: null,
    startedAt: '2026-01-01T00:00:00.000Z',
    durationSeconds: 1.4,
    ok: ok.length,
    failed: 2,
    ratePerSecond: 7.1,
    latencyMs: summary(ok),
    failedLatencyMs: summary([300, 2500]),
    latencyHistogram: { binsPerDecade: 10, ok: distribution(ok), failed: distribution([300, 2500]) },
    steps: {},
    errors: { ...NO_ERRORS, auth_rejected: 2 },
    errorSamples: { auth_rejected: 'NO [AUTHENTICATIONFAILED]' },
    startLagMs: null,
    timeline: [
      { second: 0, ok: 8, failed: 1, p50: 8, p99: 30, max: 40, active: 2 },
      { second: 1, ok: 2, failed: 1, p50: 12, p99: 15, max: 15, active: 0, partialSeconds: 0.4 },
    ],
    interrupted: false,
    ...overrides,
  };
}

describe('latency distribution', () => {
  it('puts every sample into the bin that holds it, 10 bins per power of ten', () => {
    const samples = [0.5, 0.9, 1, 1.3, 2, 7.5, 7.5, 80, 1234];
    const bins = distribution(samples);
    expect(bins.reduce((n, b) => n + b.count, 0)).toBe(samples.length);
    for (const v of samples) {
      const bin = bins.find((b) => v >= b.fromMs * 0.999 && v < b.toMs * 1.001 && b.count > 0);
      expect(bin, `a bin for ${v}`).toBeDefined();
    }
    expect(bins[0]!.fromMs).toBeLessThanOrEqual(0.5);
    expect(bins.at(-1)!.toMs).toBeGreaterThan(1234);
    // Consecutive, each a tenth of a decade wide.
    for (let i = 1; i < bins.length; i += 1) expect(bins[i]!.fromMs).toBe(bins[i - 1]!.toMs);
    expect(bins.find((b) => b.fromMs === 1)?.toMs).toBe(1.26);
    expect(distribution([])).toEqual([]);
  });
});

describe('text summary', () => {
  it('says that latency counts successes, shows failures apart, and says when p99 is the max', () => {
    const text = summaryText(report());
    expect(text).toMatch(/latency {4}p50 \S+ ms {2}p90 \S+ ms {2}p99 = max 40\.0 ms {2}\(successful transactions only\)/);
    expect(text).toMatch(/failed in {2}p50 300 ms {2}p90 \S+ s {2}p99 = max 2\.50 s {2}\(time until each failed transaction failed\)/);
    const many = Array.from({ length: 1000 }, (_, i) => 1 + i / 10);
    expect(summaryText(report({ latencyMs: summary(many) }))).toMatch(/p99 \d+\.\d ms {2}max 101 ms/);
    expect(summaryText(report({ failed: 0, failedLatencyMs: summary([]) }))).not.toContain('failed in');
  });
});

describe('HTML report', () => {
  it('names the exact command line and the versions', () => {
    const page = htmlReport(report());
    expect(page).toContain(
      '<code class="command">sasl-gate load imap-login --target imaps://127.0.0.1:1993 --count 12 --users &#39;/tmp/a b.tsv&#39;</code>',
    );
    expect(page).toContain('sasl-gate 9.9.9, Node.js v24.0.0, linux 6.1.0 x64');
  });

  it('shows the latency of failed transactions apart from the successful ones', () => {
    const page = htmlReport(report());
    expect(page).toMatch(/<td>latency of successful transactions<\/td><td>p50 \S+ ms, p90 \S+ ms, p99 = max 40\.0 ms<\/td>/);
    expect(page).toMatch(/<td>time to failure of failed transactions<\/td><td>p50 300 ms, .*p99 = max 2\.50 s<\/td>/);
  });

  it('draws p99 where it differs from max, and says why it is missing where it does not', () => {
    const apart = htmlReport(report());
    expect(apart).not.toContain('No p99 line');
    expect(apart).toMatch(/stroke="#ff7f0e".*\n.*>p99<\/text>/);
    const equal = htmlReport(
      report({
        timeline: [
          { second: 0, ok: 8, failed: 0, p50: 8, p99: 40, max: 40, active: 2 },
          { second: 1, ok: 0, failed: 0, p50: null, p99: null, max: null, active: 0 },
        ],
      }),
    );
    expect(equal).toContain('No p99 line: in every second p99 equals the max');
    expect(equal).not.toMatch(/>p99<\/text>/);
  });

  it('marks a partial last bucket in every chart over time, and says so', () => {
    const page = htmlReport(report());
    expect(page.match(/class="partial-bucket"/g)).toHaveLength(3);
    expect(page.match(/partial: 0\.40 s/g)).toHaveLength(3);
    expect(page).toContain('The last bucket (second 1) covers only 0.40 s');
    const whole = report();
    delete whole.timeline[1]!.partialSeconds;
    expect(htmlReport(whole)).not.toContain('partial-bucket');
  });

  it('has a latency histogram with a bar per non-empty bin, successes and failures apart', () => {
    const r = report();
    const page = htmlReport(r);
    const okBars = page.match(/<rect class="bar-ok"[^>]*><title>[^<]+: (\d+) successful<\/title>/g) ?? [];
    const failedBars = page.match(/<rect class="bar-failed"[^>]*><title>[^<]+: (\d+) failed<\/title>/g) ?? [];
    expect(okBars).toHaveLength(r.latencyHistogram.ok.filter((b) => b.count > 0).length);
    expect(failedBars).toHaveLength(2);
    const total = (bars: string[]) => bars.reduce((n, bar) => n + Number(/: (\d+) \w+<\/title>/.exec(bar)![1]), 0);
    expect(total(okBars)).toBe(r.ok);
    expect(total(failedBars)).toBe(r.failed);
    expect(page).toMatch(/>p50 \S+ ms<\/text>/);
    expect(page).toMatch(/>p99 = max 40\.0 ms<\/text>/);
    // Still one file: no script, nothing fetched.
    expect(page).not.toMatch(/<script|https?:\/\/(?!www\.w3\.org\/2000\/svg|127\.0\.0\.1:1993)/);
  });
});

describe('command line', () => {
  it('quotes only what a shell would split or expand', () => {
    expect(shellQuote('--target')).toBe('--target');
    expect(shellQuote('imaps://[::1]:993')).toBe("'imaps://[::1]:993'");
    expect(shellQuote("it's")).toBe("'it'\\''s'");
    expect(shellQuote('a b')).toBe("'a b'");
  });
});

// The timeline point type is part of the JSON contract; keep the test honest about it.
const _point: TimelinePoint = report().timeline[0]!;
void _point;

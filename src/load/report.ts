/**
 * The results of a run: a text summary for people, one JSON object for scripts (`--json`), and
 * a self-contained HTML page with charts (`--html`): inline SVG, no scripts, no external assets.
 */
import { ERROR_KINDS, type ErrorKind } from './errors.js';
import { BINS_PER_DECADE, type LatencyBin, type LatencySummary } from './histogram.js';
import { formatMs, type Recorder, type TimelinePoint } from './recorder.js';
import type { IdleResult } from './scenarios/context.js';

/** Everything a run reports. The JSON output is this object. */
export interface LoadReport {
  /** The command line of the run, quoted for a POSIX shell: run it again to reproduce. */
  command: string;
  versions: RunVersions;
  scenario: string;
  target: string;
  mech: string;
  concurrency: number;
  /** `--count`, or null. */
  count: number | null;
  /** `--duration` in seconds, or null. */
  duration: number | null;
  /** `--rate`, or null. */
  rate: number | null;
  startedAt: string;
  /** From the first start to the last end. */
  durationSeconds: number;
  ok: number;
  failed: number;
  /** Successful transactions per second over the whole run. */
  ratePerSecond: number;
  /** Latency of successful transactions (failed ones are in failedLatencyMs). */
  latencyMs: LatencySummary;
  /** Time from the start of each failed transaction until it failed. */
  failedLatencyMs: LatencySummary;
  /** The latency distribution: bins on a log scale, BINS_PER_DECADE per power of ten. */
  latencyHistogram: { binsPerDecade: number; ok: LatencyBin[]; failed: LatencyBin[] };
  /** Latency of each step (connect, tls, greeting, auth, select, fetch, ...). */
  steps: Record<string, LatencySummary>;
  errors: Record<ErrorKind, number>;
  /** The first message of each kind of error that occurred. */
  errorSamples: Partial<Record<ErrorKind, string>>;
  /** With `--rate`: how late starts were against the schedule. */
  startLagMs: LatencySummary | null;
  /** One point per second; the last may cover less (`partialSeconds`). */
  timeline: TimelinePoint[];
  /** imap-idle only. */
  idle?: IdleResult;
  /** The harness's own OpenID provider, when it minted the tokens. */
  issuer?: string;
  /** Whether the run was interrupted (Ctrl+C). */
  interrupted: boolean;
}

/** What ran the load: to tell runs apart and reproduce them. */
export interface RunVersions {
  saslGate: string;
  node: string;
  /** `linux 6.1.0-18-amd64 x64`. */
  os: string;
}

export interface ReportSettings {
  command: string;
  versions: RunVersions;
  scenario: string;
  target: string;
  mech: string;
  concurrency: number;
  count: number | undefined;
  durationSeconds: number | undefined;
  rate: number | undefined;
  issuer: string | undefined;
  interrupted: boolean;
}

const round3 = (n: number) => Math.round(n * 1000) / 1000;

/** Assembles the report of a finished run. */
export function buildReport(recorder: Recorder, settings: ReportSettings, extras: { idle?: IdleResult }): LoadReport {
  const seconds = recorder.elapsedMs() / 1000;
  const steps: Record<string, LatencySummary> = {};
  for (const [name, h] of recorder.steps) steps[name] = h.summary();
  return {
    command: settings.command,
    versions: settings.versions,
    scenario: settings.scenario,
    target: settings.target,
    mech: settings.mech,
    concurrency: settings.concurrency,
    count: settings.count ?? null,
    duration: settings.durationSeconds ?? null,
    rate: settings.rate ?? null,
    startedAt: recorder.startedAt.toISOString(),
    durationSeconds: round3(seconds),
    ok: recorder.ok,
    failed: recorder.failed,
    ratePerSecond: seconds > 0 ? Math.round((recorder.ok / seconds) * 100) / 100 : 0,
    latencyMs: recorder.latency.summary(),
    failedLatencyMs: recorder.failedLatency.summary(),
    latencyHistogram: { binsPerDecade: BINS_PER_DECADE, ok: recorder.latency.distribution(), failed: recorder.failedLatency.distribution() },
    steps,
    errors: { ...recorder.errors },
    errorSamples: { ...recorder.samples },
    startLagMs: settings.rate ? recorder.startLag.summary() : null,
    timeline: recorder.timeline,
    ...(extras.idle ? { idle: extras.idle } : {}),
    ...(settings.issuer ? { issuer: settings.issuer } : {}),
    interrupted: settings.interrupted,
  };
}

function mib(bytes: number): string {
  return `${(bytes / 1024 / 1024).toFixed(1)} MiB`;
}

function kib(bytes: number | null): string {
  return bytes === null ? 'n/a' : `${(bytes / 1024).toFixed(1)} KiB`;
}

/** `p50 1.20 ms  p90 ...  p99 ...  max ...`; p99 said to equal max when it does (few samples). */
function percentiles(l: LatencySummary, separator = '  '): string {
  const p99 = l.p99 === l.max ? `p99 = max ${formatMs(l.max)}` : `p99 ${formatMs(l.p99)}${separator}max ${formatMs(l.max)}`;
  return [`p50 ${formatMs(l.p50)}`, `p90 ${formatMs(l.p90)}`, p99].join(separator);
}

/** The summary for people, several lines ending in a newline. */
export function summaryText(r: LoadReport): string {
  const out: string[] = [];
  const budget = r.count !== null ? `${r.count} transactions` : r.duration !== null ? `${r.duration} s` : '';
  out.push(
    `${r.scenario} against ${r.target} (${r.mech.toUpperCase()}, ${r.concurrency} virtual users${budget ? `, ${budget}` : ''}` +
      `${r.rate !== null ? `, at most ${r.rate} starts/s` : ''})${r.interrupted ? ': interrupted' : ''}`,
  );
  out.push(`  duration   ${r.durationSeconds.toFixed(2)} s`);
  out.push(`  ok         ${r.ok}`);
  out.push(`  failed     ${r.failed}`);
  out.push(`  rate       ${r.ratePerSecond.toFixed(1)}/s`);
  const l = r.latencyMs;
  out.push(
    l.count > 0
      ? `  latency    ${percentiles(l)}  (successful transactions only)`
      : '  latency    (no successful transaction)',
  );
  const f = r.failedLatencyMs;
  if (f.count > 0) out.push(`  failed in  ${percentiles(f)}  (time until each failed transaction failed)`);
  const steps = Object.entries(r.steps);
  if (steps.length > 0) {
    out.push('  steps      p50 / p99 / max');
    for (const [name, s] of steps) {
      out.push(`    ${name.padEnd(11)}${formatMs(s.p50)} / ${formatMs(s.p99)} / ${formatMs(s.max)}  (${s.count})`);
    }
  }
  if (r.startLagMs && r.startLagMs.count > 0) {
    const lag = r.startLagMs;
    out.push(`  start lag  p99 ${formatMs(lag.p99)}  max ${formatMs(lag.max)}${lag.p99 > 100 ? '  (behind the --rate schedule: raise --concurrency)' : ''}`);
  }
  if (r.idle) {
    const i = r.idle;
    out.push(`  idle       ${i.held} of ${i.requested} held for ${i.holdSeconds.toFixed(1)} s; ${i.failed} failed (${i.dropped} dropped while held)`);
    out.push(
      `  memory     harness rss ${mib(i.harness.before.rssBytes)} -> ${mib(i.harness.holding.rssBytes)}, ` +
        `${kib(i.harness.perConnectionBytes)} per held connection`,
    );
    if (i.targetProcess) {
      const t = i.targetProcess;
      out.push(
        `             target pid ${t.pid} rss ${t.beforeRssBytes === null ? 'n/a' : mib(t.beforeRssBytes)} -> ` +
          `${t.holdingRssBytes === null ? 'n/a' : mib(t.holdingRssBytes)}, ${kib(t.perConnectionBytes)} per held connection`,
      );
    }
  }
  const errors = ERROR_KINDS.filter((k) => r.errors[k] > 0);
  if (errors.length === 0) {
    out.push('  errors     none');
  } else {
    out.push('  errors');
    for (const k of errors) out.push(`    ${k.padEnd(15)}${String(r.errors[k]).padStart(7)}  e.g. ${r.errorSamples[k] ?? ''}`);
  }
  if (r.issuer && r.ok === 0 && r.errors.auth_rejected > 0) {
    out.push(
      `  note       the tokens came from the harness's own OpenID provider (${r.issuer}); the target must trust it ` +
        '(oauth.issuer), or pass --users with credentials the target accepts',
    );
  }
  return `${out.join('\n')}\n`;
}

/** The JSON output: one object, one line. */
export function jsonText(r: LoadReport): string {
  return `${JSON.stringify(r)}\n`;
}

// --- HTML ------------------------------------------------------------------------------------

function esc(text: string): string {
  return text.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

/** The last bucket of the timeline when the run ended inside it. */
interface PartialBucket {
  second: number;
  seconds: number;
}

interface Series {
  name: string;
  color: string;
  values: Array<number | null>;
  dashed?: boolean;
}

/** A round number at or above `n` for the top of an axis. */
function niceCeil(n: number): number {
  if (n <= 0) return 1;
  const magnitude = 10 ** Math.floor(Math.log10(n));
  for (const step of [1, 2, 2.5, 5, 10]) if (step * magnitude >= n) return step * magnitude;
  return 10 * magnitude;
}

function tickLabel(n: number): string {
  if (n === 0) return '0';
  if (Math.abs(n) >= 1000) return `${Math.round(n / 100) / 10}k`;
  return Number.isInteger(n) ? String(n) : n.toFixed(Math.abs(n) < 1 ? 2 : 1);
}

/** An SVG line chart over seconds, gaps where a value is null. */
function lineChart(title: string, unit: string, seconds: number[], series: Series[], partial?: PartialBucket): string {
  const W = 860;
  const H = 260;
  const left = 64;
  const right = 16;
  const top = 34;
  const bottom = 40;
  const plotW = W - left - right;
  const plotH = H - top - bottom;
  const xMax = Math.max(1, (seconds.at(-1) ?? 0) + 1);
  let yMax = 0;
  for (const s of series) for (const v of s.values) if (v !== null && v > yMax) yMax = v;
  yMax = niceCeil(yMax * 1.05);
  const x = (second: number) => left + ((second + 0.5) / xMax) * plotW;
  const y = (v: number) => top + plotH - (v / yMax) * plotH;
  const parts: string[] = [];
  parts.push(`<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 ${W} ${H}" width="${W}" height="${H}" role="img" aria-label="${esc(title)}">`);
  parts.push(`<text x="${left}" y="20" font-size="14" font-weight="600">${esc(title)}</text>`);
  for (let i = 0; i <= 4; i += 1) {
    const v = (yMax * i) / 4;
    parts.push(`<line x1="${left}" x2="${W - right}" y1="${y(v).toFixed(1)}" y2="${y(v).toFixed(1)}" stroke="#e3e3e3"/>`);
    parts.push(`<text x="${left - 6}" y="${(y(v) + 4).toFixed(1)}" font-size="11" text-anchor="end">${tickLabel(v)}</text>`);
  }
  // Whole seconds: a bucket is one second.
  const xStep = Math.max(1, niceCeil(xMax / 10));
  for (let s = 0; s <= xMax; s += xStep) {
    const px = left + (s / xMax) * plotW;
    parts.push(`<line x1="${px.toFixed(1)}" x2="${px.toFixed(1)}" y1="${top + plotH}" y2="${top + plotH + 4}" stroke="#888"/>`);
    parts.push(`<text x="${px.toFixed(1)}" y="${top + plotH + 17}" font-size="11" text-anchor="middle">${s}</text>`);
  }
  parts.push(`<text x="${left + plotW / 2}" y="${H - 6}" font-size="11" text-anchor="middle">seconds since start</text>`);
  parts.push(`<text x="14" y="${top + plotH / 2}" font-size="11" text-anchor="middle" transform="rotate(-90 14 ${top + plotH / 2})">${esc(unit)}</text>`);
  parts.push(`<rect x="${left}" y="${top}" width="${plotW}" height="${plotH}" fill="none" stroke="#888"/>`);
  if (partial) {
    // The bucket the run ended in: shaded, its point hollow, so a low last count reads as the end.
    const x0 = left + (partial.second / xMax) * plotW;
    const width = plotW / xMax;
    parts.push(
      `<rect class="partial-bucket" x="${x0.toFixed(1)}" y="${top}" width="${width.toFixed(1)}" height="${plotH}" fill="#eeeeee" stroke="#bbbbbb" stroke-dasharray="3 3"/>`,
    );
    parts.push(
      `<text x="${(x0 + width - 4).toFixed(1)}" y="${top + 14}" font-size="11" text-anchor="end" fill="#555">partial: ${partial.seconds.toFixed(2)} s</text>`,
    );
  }
  const markers = seconds.length <= 60;
  for (const s of series) {
    const segments: string[][] = [];
    let current: string[] = [];
    s.values.forEach((v, i) => {
      if (v === null) {
        if (current.length > 0) segments.push(current);
        current = [];
        return;
      }
      current.push(`${x(seconds[i]!).toFixed(1)},${y(v).toFixed(1)}`);
    });
    if (current.length > 0) segments.push(current);
    for (const seg of segments) {
      parts.push(
        `<polyline fill="none" stroke="${s.color}" stroke-width="2"${s.dashed ? ' stroke-dasharray="5 4"' : ''} points="${seg.join(' ')}"/>`,
      );
      if (markers || partial) {
        for (const p of seg) {
          const [cx, cy] = p.split(',');
          const hollow = partial !== undefined && cx === x(partial.second).toFixed(1);
          if (!markers && !hollow) continue;
          parts.push(`<circle cx="${cx}" cy="${cy}" r="${hollow ? 3.5 : 2.5}" ${hollow ? `fill="#fff" stroke="${s.color}" stroke-width="1.5"` : `fill="${s.color}"`}/>`);
        }
      }
    }
  }
  series.forEach((s, i) => {
    const lx = W - right - 130 * (series.length - i);
    parts.push(`<line x1="${lx}" x2="${lx + 22}" y1="16" y2="16" stroke="${s.color}" stroke-width="3"${s.dashed ? ' stroke-dasharray="5 4"' : ''}/>`);
    parts.push(`<text x="${lx + 28}" y="20" font-size="12">${esc(s.name)}</text>`);
  });
  parts.push('</svg>');
  return parts.join('\n');
}

function row(cells: string[], head = false): string {
  const tag = head ? 'th' : 'td';
  return `<tr>${cells.map((c) => `<${tag}>${c}</${tag}>`).join('')}</tr>`;
}

/** `0.1 ms`, `10 ms`, `1 s`: an axis label for a latency. */
function latencyLabel(ms: number): string {
  if (ms >= 1000) return `${Number((ms / 1000).toPrecision(3))} s`;
  return `${Number(ms.toPrecision(3))} ms`;
}

/**
 * The latency distribution as bars on a logarithmic axis: successful transactions, and failed
 * ones (the time until they failed) over them, with the successful p50 and p99 marked.
 */
function histogramChart(r: LoadReport): string {
  const { ok, failed } = r.latencyHistogram;
  const W = 860;
  const H = 280;
  const left = 64;
  const right = 16;
  const top = 34;
  const bottom = 40;
  const plotW = W - left - right;
  const plotH = H - top - bottom;
  const all = [...ok, ...failed];
  const parts: string[] = [];
  const title = 'Latency distribution';
  parts.push(`<svg xmlns="http://www.w3.org/2000/svg" class="histogram" viewBox="0 0 ${W} ${H}" width="${W}" height="${H}" role="img" aria-label="${title}">`);
  parts.push(`<text x="${left}" y="20" font-size="14" font-weight="600">${title}</text>`);
  if (all.length === 0) {
    parts.push(`<text x="${left + plotW / 2}" y="${top + plotH / 2}" font-size="12" text-anchor="middle">no transaction ended</text></svg>`);
    return parts.join('\n');
  }
  const lo = Math.floor(Math.log10(Math.min(...all.map((b) => b.fromMs))));
  const hi = Math.max(lo + 1, Math.ceil(Math.log10(Math.max(...all.map((b) => b.toMs))) - 1e-9));
  const x = (ms: number) => left + ((Math.log10(ms) - lo) / (hi - lo)) * plotW;
  const yMax = niceCeil(Math.max(...all.map((b) => b.count)) * 1.05);
  const y = (n: number) => top + plotH - (n / yMax) * plotH;
  for (let i = 0; i <= 4; i += 1) {
    const v = (yMax * i) / 4;
    parts.push(`<line x1="${left}" x2="${W - right}" y1="${y(v).toFixed(1)}" y2="${y(v).toFixed(1)}" stroke="#e3e3e3"/>`);
    parts.push(`<text x="${left - 6}" y="${(y(v) + 4).toFixed(1)}" font-size="11" text-anchor="end">${tickLabel(v)}</text>`);
  }
  // Decades, and 2 and 5 between them when the axis spans few decades.
  const steps = hi - lo <= 3 ? [1, 2, 5] : [1];
  for (let d = lo; d <= hi; d += 1) {
    for (const m of steps) {
      const ms = m * 10 ** d;
      if (ms > 10 ** hi) break;
      const px = x(ms);
      parts.push(`<line x1="${px.toFixed(1)}" x2="${px.toFixed(1)}" y1="${top + plotH}" y2="${top + plotH + 4}" stroke="#888"/>`);
      parts.push(`<text x="${px.toFixed(1)}" y="${top + plotH + 17}" font-size="11" text-anchor="middle">${latencyLabel(ms)}</text>`);
    }
  }
  parts.push(`<text x="${left + plotW / 2}" y="${H - 6}" font-size="11" text-anchor="middle">latency (logarithmic)</text>`);
  parts.push(`<text x="14" y="${top + plotH / 2}" font-size="11" text-anchor="middle" transform="rotate(-90 14 ${top + plotH / 2})">transactions</text>`);
  parts.push(`<rect x="${left}" y="${top}" width="${plotW}" height="${plotH}" fill="none" stroke="#888"/>`);
  const bars = (bins: LatencyBin[], cls: string, color: string, opacity: number) => {
    for (const b of bins) {
      if (b.count === 0) continue;
      const x0 = x(b.fromMs);
      const width = Math.max(1, x(b.toMs) - x0 - 1);
      parts.push(
        `<rect class="${cls}" x="${x0.toFixed(1)}" y="${y(b.count).toFixed(1)}" width="${width.toFixed(1)}" height="${(top + plotH - y(b.count)).toFixed(1)}" fill="${color}" fill-opacity="${opacity}"><title>${latencyLabel(b.fromMs)} to ${latencyLabel(b.toMs)}: ${b.count} ${cls === 'bar-ok' ? 'successful' : 'failed'}</title></rect>`,
      );
    }
  };
  bars(ok, 'bar-ok', '#1f77b4', 0.8);
  bars(failed, 'bar-failed', '#d62728', 0.6);
  const l = r.latencyMs;
  if (l.count > 0) {
    const marks: Array<[string, number]> = l.p99 === l.max ? [['p50', l.p50], ['p99 = max', l.max]] : [['p50', l.p50], ['p99', l.p99], ['max', l.max]];
    marks.forEach(([name, ms], i) => {
      const px = x(Math.max(ms, 10 ** lo)).toFixed(1);
      parts.push(`<line class="mark" x1="${px}" x2="${px}" y1="${top}" y2="${top + plotH}" stroke="#333" stroke-dasharray="4 3"/>`);
      // One line lower each, so that close marks (p99 next to max) stay readable.
      parts.push(`<text x="${Number(px) + 3}" y="${top + 12 + 13 * i}" font-size="11" fill="#333">${name} ${formatMs(ms)}</text>`);
    });
  }
  const legend: Array<[string, string]> = [['successful', '#1f77b4']];
  if (failed.length > 0) legend.push(['failed (time to fail)', '#d62728']);
  legend.forEach(([name, color], i) => {
    const lx = W - right - 170 * (legend.length - i);
    parts.push(`<rect x="${lx}" y="10" width="14" height="10" fill="${color}"/>`);
    parts.push(`<text x="${lx + 20}" y="20" font-size="12">${esc(name)}</text>`);
  });
  parts.push('</svg>');
  return parts.join('\n');
}

/** The HTML report: summary, charts of rate and latency per second, the distribution, steps, errors. */
export function htmlReport(r: LoadReport): string {
  const seconds = r.timeline.map((p) => p.second);
  const last = r.timeline.at(-1);
  const partial = last?.partialSeconds !== undefined ? { second: last.second, seconds: last.partialSeconds } : undefined;
  const rate = lineChart(
    'Transactions per second',
    'per second',
    seconds,
    [
      { name: 'ok', color: '#1f77b4', values: r.timeline.map((p) => p.ok) },
      { name: 'failed', color: '#d62728', values: r.timeline.map((p) => p.failed) },
    ],
    partial,
  );
  // With fewer than 100 transactions in a second, its p99 is its max: drawing both hides one.
  const p99Apart = r.timeline.some((p) => p.p99 !== null && p.p99 !== p.max);
  const latency = lineChart(
    'Latency of successful transactions',
    'ms',
    seconds,
    [
      { name: 'p50', color: '#2ca02c', values: r.timeline.map((p) => p.p50) },
      { name: 'max', color: '#9467bd', values: r.timeline.map((p) => p.max), dashed: true },
      ...(p99Apart ? [{ name: 'p99', color: '#ff7f0e', values: r.timeline.map((p) => p.p99) }] : []),
    ],
    partial,
  );
  const latencyNote = p99Apart
    ? ''
    : '<p class="note">No p99 line: in every second p99 equals the max (fewer than 100 transactions a second), so the max line shows it.</p>';
  const active = lineChart(
    r.idle ? 'Connections held' : 'Transactions in flight',
    'connections',
    seconds,
    [{ name: 'active', color: '#17becf', values: r.timeline.map((p) => p.active) }],
    partial,
  );
  const partialNote = partial
    ? `<p class="note">The last bucket (second ${partial.second}) covers only ${partial.seconds.toFixed(2)} s: the run ended in it, so its counts are lower for that reason alone.</p>`
    : '';
  const l = r.latencyMs;
  const summary = [
    ['command', `<code class="command">${esc(r.command)}</code>`],
    ['versions', esc(`sasl-gate ${r.versions.saslGate}, Node.js ${r.versions.node}, ${r.versions.os}`)],
    ['scenario', esc(r.scenario)],
    ['target', esc(r.target)],
    ['mechanism', esc(r.mech.toUpperCase())],
    ['virtual users', String(r.concurrency)],
    ['budget', r.count !== null ? `${r.count} transactions` : r.duration !== null ? `${r.duration} s` : '-'],
    ['start rate limit', r.rate !== null ? `${r.rate}/s` : 'none'],
    ['started', esc(r.startedAt)],
    ['duration', `${r.durationSeconds.toFixed(2)} s${r.interrupted ? ' (interrupted)' : ''}`],
    ['ok', String(r.ok)],
    ['failed', String(r.failed)],
    ['rate', `${r.ratePerSecond.toFixed(1)}/s`],
    ['latency of successful transactions', l.count > 0 ? percentiles(l, ', ') : 'no successful transaction'],
    ['time to failure of failed transactions', r.failedLatencyMs.count > 0 ? percentiles(r.failedLatencyMs, ', ') : 'no failed transaction'],
  ];
  if (r.idle) {
    summary.push(['held', `${r.idle.held} of ${r.idle.requested} for ${r.idle.holdSeconds.toFixed(1)} s (${r.idle.dropped} dropped)`]);
    summary.push(['harness memory per held connection', kib(r.idle.harness.perConnectionBytes)]);
    if (r.idle.targetProcess) summary.push([`target pid ${r.idle.targetProcess.pid} memory per held connection`, kib(r.idle.targetProcess.perConnectionBytes)]);
  }
  const steps = Object.entries(r.steps).map(([name, s]) =>
    row([esc(name), String(s.count), formatMs(s.p50), formatMs(s.p90), formatMs(s.p99), formatMs(s.max)]),
  );
  const errors = ERROR_KINDS.filter((k) => r.errors[k] > 0).map((k) => row([k, String(r.errors[k]), esc(r.errorSamples[k] ?? '')]));
  return `<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>sasl-gate load: ${esc(r.scenario)} against ${esc(r.target)}</title>
<style>
body { font-family: system-ui, sans-serif; margin: 2rem; color: #222; max-width: 920px; }
table { border-collapse: collapse; margin: 0.5rem 0 1.5rem; }
th, td { border-bottom: 1px solid #ddd; padding: 0.25rem 0.75rem; text-align: left; font-size: 0.9rem; vertical-align: top; }
th { background: #f4f4f4; }
svg { display: block; margin: 1rem 0; max-width: 100%; height: auto; font-family: system-ui, sans-serif; }
code.command { font-size: 0.85rem; word-break: break-all; }
p.note { color: #555; font-size: 0.9rem; margin: 0.25rem 0; }
</style>
</head>
<body>
<h1>${esc(r.scenario)} against ${esc(r.target)}</h1>
<table>
${summary.map(([k, v]) => row([k!, v!])).join('\n')}
</table>
<h2>Over time (1 s buckets)</h2>
${partialNote}
${rate}
${latency}
${latencyNote}
${active}
<h2>Latency distribution</h2>
<p class="note">Bars of successful transactions${r.failed > 0 ? ', and in red the time failed ones took to fail' : ''}; ${r.latencyHistogram.binsPerDecade} bins per power of ten.</p>
${histogramChart(r)}
<h2>Steps</h2>
<table>
${row(['step', 'count', 'p50', 'p90', 'p99', 'max'], true)}
${steps.join('\n')}
</table>
<h2>Errors</h2>
${errors.length > 0 ? `<table>\n${row(['kind', 'count', 'first message'], true)}\n${errors.join('\n')}\n</table>` : '<p>none</p>'}
</body>
</html>
`;
}

/**
 * What the side-by-side benchmarks share: options, progress on stderr, medians of paired ratios,
 * the machine's description, CPU time and resident memory of other processes (Linux /proc),
 * a run deadline, and clean-up of everything a run started.
 */
import { execFileSync, spawn } from 'node:child_process';
import { readFileSync, readdirSync } from 'node:fs';
import { cpus, loadavg, release, totalmem } from 'node:os';
import { sleep } from '../../test/support/wait.js';

// ---------------------------------------------------------------------------------------------
// Options

export function numberOption(args: string[], name: string, fallback: number, min: number, max = Number.MAX_SAFE_INTEGER): number {
  const at = args.indexOf(name);
  if (at === -1) return fallback;
  const value = Number(args[at + 1]);
  if (!Number.isFinite(value) || value < min || value > max) throw new Error(`${name} needs a number from ${min} to ${max}`);
  return value;
}

export function listOption(args: string[], name: string, fallback: number[]): number[] {
  const at = args.indexOf(name);
  if (at === -1) return fallback;
  const values = String(args[at + 1] ?? '')
    .split(',')
    .map((v) => Number(v.trim()));
  if (values.length === 0 || values.some((v) => !Number.isInteger(v) || v <= 0)) throw new Error(`${name} needs a list like 1000,10000`);
  return values;
}

export const args = process.argv.slice(2);
export const JSON_OUTPUT = args.includes('--json');

/** Progress goes to stderr, so that `--json` leaves exactly one JSON object on stdout. */
export function progress(message: string): void {
  process.stderr.write(`${message}\n`);
}

export { sleep };

// ---------------------------------------------------------------------------------------------
// Statistics

export function median(values: number[]): number {
  if (values.length === 0) return NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

export const round = (n: number, digits: number): number => Number(n.toFixed(digits));
export const sig3 = (n: number): number => Number(n.toPrecision(3));

export function fmtRatio(r: number): string {
  if (!Number.isFinite(r)) return 'n/a';
  if (r >= 100) return Math.round(r).toString();
  if (r >= 10) return r.toFixed(1);
  return r.toFixed(2);
}

export const fmtInt = (n: number): string => Math.round(n).toLocaleString('en-US');

export function pad(text: string, width: number, right = false): string {
  return right ? text.padStart(width) : text.padEnd(width);
}

/** Rows of cells, the first row the header; the first column left-aligned, the rest right-aligned. */
export function table(rows: string[][]): string[] {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length)));
  return rows.map((r) => r.map((cell, i) => pad(cell, widths[i]!, i > 0)).join('  ').trimEnd());
}

// ---------------------------------------------------------------------------------------------
// The machine

export interface Machine {
  node: string;
  cpus: number;
  cpuModel: string;
  memoryGiB: number;
  kernel: string;
  loadavg: number[];
}

export function machine(): Machine {
  return {
    node: process.version,
    cpus: cpus().length,
    cpuModel: cpus()[0]?.model ?? 'unknown',
    memoryGiB: round(totalmem() / 1024 ** 3, 1),
    kernel: release(),
    loadavg: loadavg().map((l) => round(l, 2)),
  };
}

export function machineLine(m: Machine, after?: number[]): string {
  return (
    `node ${m.node}, ${m.cpus} CPUs (${m.cpuModel}), ${m.memoryGiB} GiB, kernel ${m.kernel}; ` +
    `load ${m.loadavg.join(' ')} before${after ? `, ${after.map((l) => l.toFixed(2)).join(' ')} after` : ''}`
  );
}

// ---------------------------------------------------------------------------------------------
// Other processes (Linux /proc)

const CLOCK_TICKS = 100;

/** User + system CPU seconds a process has used (its own, not its children's), or NaN when gone. */
export function processCpuSeconds(pid: number): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // The command name may hold spaces and parentheses: fields count from the last ')'.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(fields[11]) + Number(fields[12])) / CLOCK_TICKS;
  } catch {
    return NaN;
  }
}

/** Resident set size in bytes, or NaN when the process is gone. */
export function processRss(pid: number): number {
  try {
    const status = readFileSync(`/proc/${pid}/status`, 'utf8');
    const match = /^VmRSS:\s+(\d+)\s+kB/m.exec(status);
    return match ? Number(match[1]) * 1024 : NaN;
  } catch {
    return NaN;
  }
}

/** Direct children of a process (Linux 3.5+ `children` file of each thread). */
export function childPids(pid: number): number[] {
  const out: number[] = [];
  try {
    for (const tid of readdirSync(`/proc/${pid}/task`)) {
      const text = readFileSync(`/proc/${pid}/task/${tid}/children`, 'utf8').trim();
      if (text) out.push(...text.split(/\s+/).map(Number));
    }
  } catch {
    // Gone.
  }
  return out;
}

/** A process and all its descendants. */
export function processTree(pid: number): number[] {
  const all = [pid];
  for (let i = 0; i < all.length && i < 100_000; i++) all.push(...childPids(all[i]!));
  return all;
}

/** User + system CPU seconds of a process and of its children it has waited for (cutime, cstime). */
function cpuWithReaped(pid: number): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(f[11]) + Number(f[12]) + Number(f[13]) + Number(f[14])) / CLOCK_TICKS;
  } catch {
    return 0;
  }
}

/**
 * CPU seconds used by a process tree: every live process's own time plus that of the children it
 * reaped, so that short-lived workers (a login or imap process of Dovecot) count once they are gone.
 * The difference of two readings is the tree's CPU time in between.
 */
export function treeCpuSeconds(pid: number): number {
  return processTree(pid)
    .map(cpuWithReaped)
    .reduce((a, b) => a + b, 0);
}

/** This process's own CPU seconds (all threads). */
export function ownCpuSeconds(): number {
  const { user, system } = process.cpuUsage();
  return (user + system) / 1e6;
}

/** Samples `read()` every `everyMs` until stopped; returns the largest value seen. */
export function peakSampler(read: () => number, everyMs = 100): { stop(): number } {
  let peak = read();
  const timer = setInterval(() => {
    const v = read();
    if (Number.isFinite(v)) peak = Math.max(peak, v);
  }, everyMs);
  return {
    stop() {
      clearInterval(timer);
      const v = read();
      if (Number.isFinite(v)) peak = Math.max(peak, v);
      return peak;
    },
  };
}

// ---------------------------------------------------------------------------------------------
// Lifetime

const cleanups: Array<() => Promise<unknown> | unknown> = [];

/** Registers a clean-up to run (newest first) when the run ends, also on failure or Ctrl+C. */
export function onCleanup(fn: () => Promise<unknown> | unknown): void {
  cleanups.push(fn);
}

export async function cleanUp(): Promise<void> {
  while (cleanups.length > 0) {
    const fn = cleanups.pop()!;
    try {
      await Promise.race([fn(), sleep(15_000)]);
    } catch (err) {
      process.stderr.write(`clean-up: ${(err as Error).message}\n`);
    }
  }
}

/**
 * Runs `main` with a deadline for the whole run, cleans up whatever happens, and exits
 * (keep-alive sockets and child handles would otherwise hold the process open).
 */
export function runBench(name: string, limitMs: number, main: () => Promise<void>): void {
  const deadline = setTimeout(() => {
    process.stderr.write(`${name}: still running after ${Math.round(limitMs / 1000)} s, giving up\n`);
    void cleanUp().finally(() => process.exit(2));
  }, limitMs);
  deadline.unref();
  let interrupted = false;
  process.on('SIGINT', () => {
    if (interrupted) process.exit(130);
    interrupted = true;
    process.stderr.write(`${name}: interrupted, cleaning up\n`);
    void cleanUp().finally(() => process.exit(130));
  });
  main().then(
    async () => {
      await cleanUp();
      process.exit(0);
    },
    async (err: unknown) => {
      process.stderr.write(`${name}: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
      await cleanUp();
      process.exit(1);
    },
  );
}

/** The hard limit of open files (`ulimit -Hn`): without CAP_SYS_RESOURCE even root cannot go above it. */
export function hardFileLimit(): number {
  const text = execFileSync('/bin/sh', ['-c', 'ulimit -Hn'], { encoding: 'utf8' }).trim();
  return text === 'unlimited' ? 1_048_576 : Number(text);
}

/** `ulimit -n` for a child: `want`, or the hard limit when that is lower. */
export function fileLimitFor(want: number): number {
  return Math.min(want, hardFileLimit());
}

/**
 * Makes sure this process may open `want` files; if the soft limit is lower, runs this same
 * command again under `ulimit -n` (as root the hard limit may be raised too) and exits with its
 * status. Returns only in the process that has the limit.
 */
export async function ensureFileLimit(want: number): Promise<void> {
  const current = Number((await shell('ulimit -n')).trim());
  if (Number.isFinite(current) && current >= want) return;
  if (hardFileLimit() < want) throw new Error(`open-file hard limit ${hardFileLimit()} is below ${want}`);
  if (process.env.SASL_GATE_BENCH_RELAUNCHED === '1') {
    throw new Error(`ulimit -n is ${current} and could not be raised to ${want}; run as root or raise it first`);
  }
  progress(`raising the open-file limit from ${current} to ${want} (running again under ulimit -n) ...`);
  const child = spawn(
    '/bin/sh',
    ['-c', `ulimit -Hn ${want} 2>/dev/null; ulimit -n ${want} && exec "$@"`, 'sh', process.execPath, ...process.execArgv, ...process.argv.slice(1)],
    { stdio: 'inherit', env: { ...process.env, SASL_GATE_BENCH_RELAUNCHED: '1' } },
  );
  const forward = (signal: NodeJS.Signals) => () => child.kill(signal);
  process.on('SIGINT', forward('SIGINT'));
  process.on('SIGTERM', forward('SIGTERM'));
  const code = await new Promise<number>((resolve) => child.once('exit', (c, s) => resolve(c ?? (s ? 128 : 1))));
  process.exit(code);
}

function shell(command: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn('/bin/sh', ['-c', command], { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.once('error', reject);
    child.once('exit', () => resolve(out));
  });
}

/** Open file descriptors of a process (Linux /proc), or NaN when it is gone. */
export function fdCount(pid: number): number {
  try {
    return readdirSync(`/proc/${pid}/fd`).length;
  } catch {
    return NaN;
  }
}

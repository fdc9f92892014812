/**
 * What pre-login connections cost and what a refused flood does to a legitimate login, in one
 * run against a real stack (Dovecot, the development IdP and sasl-gate, from test/support/stack.ts).
 * sasl-gate runs in this process; the attacking and idling clients run in a child process, so
 * that this process's RSS is sasl-gate's (plus the in-process IdP, which does not change).
 *
 *   npx vite-node bench/preauth.ts            # table on stdout, progress on stderr
 *   npx vite-node bench/preauth.ts --json     # one JSON object on stdout
 *   options: --connections N (default 1000), --logins N (default 30), --flood-concurrency N (default 32)
 *
 * (a) RSS peak while 1,000 idle pre-auth TLS connections (greeted, silent) are open, then while
 *     1,000 slow ones (one byte a second of a command that never ends) are open beside them;
 *     KiB per connection over the RSS measured just before each set was opened.
 * (b) Latency of a legitimate XOAUTH2 login (connect, TLS, greeting, AUTHENTICATE up to the
 *     tagged OK) from 127.0.0.9: p50/p99 with no load, while one address (127.0.0.7) floods
 *     connection attempts that are refused at the per-address limit, and with no load again.
 * See bench/README.md.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { cpus, loadavg } from 'node:os';
import { performance } from 'node:perf_hooks';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { startStack, TlsImap, USERS, xoauth2, type Stack } from '../test/support/stack.js';
import { sleep } from '../test/support/wait.js';

// ---------------------------------------------------------------------------------------------
// Options

function numberOption(args: string[], name: string, fallback: number, min: number): number {
  const at = args.indexOf(name);
  if (at === -1) return fallback;
  const value = Number(args[at + 1]);
  if (!Number.isFinite(value) || value < min) throw new Error(`${name} needs a number >= ${min}`);
  return Math.floor(value);
}

const args = process.argv.slice(2);
const JSON_OUTPUT = args.includes('--json');
const CONNECTIONS = numberOption(args, '--connections', 1000, 10);
const LOGINS = numberOption(args, '--logins', 30, 3);
const FLOOD_CONCURRENCY = numberOption(args, '--flood-concurrency', 32, 1);

const ALICE = USERS[0]!;
const LEGITIMATE = '127.0.0.9';
const FLOODER = '127.0.0.7';
const PER_ADDRESS = 100;
/** Long enough that nothing times out while it is measured. */
const PRE_AUTH_TIMEOUT_SECONDS = 900;
const HOLD_MS = 3000;
const SLOW_HOLD_MS = 6000;
/** The whole run may not take longer than this; the child exits with its parent. */
const RUN_LIMIT_MS = 10 * 60_000;
const KIB = 1024;
const MIB = 1024 * 1024;

function progress(message: string): void {
  if (!JSON_OUTPUT) process.stderr.write(`${message}\n`);
}


const collectGarbage = (() => {
  setFlagsFromString('--expose-gc');
  return runInNewContext('gc') as () => void;
})();

/** Memory after two full collections and a short pause, so that only what is held counts. */
async function settledMemory(): Promise<NodeJS.MemoryUsage> {
  collectGarbage();
  collectGarbage();
  await sleep(300);
  return process.memoryUsage();
}

/** Samples this process's RSS every 20 ms until stopped; returns the peak. */
function rssPeak(): { stop(): number } {
  let peak = process.memoryUsage.rss();
  const timer = setInterval(() => (peak = Math.max(peak, process.memoryUsage.rss())), 20);
  return {
    stop() {
      clearInterval(timer);
      return Math.max(peak, process.memoryUsage.rss());
    },
  };
}

// ---------------------------------------------------------------------------------------------
// The client process: plain JavaScript, run with `node -e`, driven over IPC.

const CLIENT = String.raw`
const tls = require('node:tls');
const ca = process.env.BENCH_CA;
const port = Number(process.env.BENCH_PORT);
const REFUSAL = '* BYE [UNAVAILABLE] Too many connections from your address, try again later.';
const held = { idle: [], slow: [] };
let trickle;
let flood;
process.on('disconnect', () => process.exit(0));
setTimeout(() => process.exit(2), Number(process.env.BENCH_LIMIT_MS)).unref();

/** A TLS connection up to its first line: { socket, line } (socket only when a line came). */
function open(localAddress, timeoutMs) {
  return new Promise((resolve) => {
    const socket = tls.connect({ host: '127.0.0.1', port, ca, servername: 'localhost', localAddress });
    let text = '';
    let settled = false;
    const done = (result) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      socket.removeListener('data', onData);
      if (!result.socket) socket.destroy();
      resolve(result);
    };
    const timer = setTimeout(() => done({ line: 'no greeting within ' + timeoutMs + ' ms' }), timeoutMs);
    const onData = (chunk) => {
      text += chunk.toString('latin1');
      const end = text.indexOf('\r\n');
      if (end >= 0) done({ socket, line: text.slice(0, end) });
    };
    socket.on('data', onData);
    socket.on('error', () => {});
    socket.once('close', () => done({ line: text || 'closed before a greeting' }));
  });
}

/** Runs fn(i) for i < n with at most 'concurrency' at a time. */
async function pool(n, concurrency, fn) {
  let next = 0;
  await Promise.all(Array.from({ length: Math.min(n, concurrency) }, async () => {
    while (next < n) await fn(next++);
  }));
}

const handlers = {
  async open(m) {
    const started = Date.now();
    let failed = 0;
    let firstFailure;
    await pool(m.count, m.concurrency, async (i) => {
      const r = await open(m.addresses[Math.floor(i / m.perAddress)], 30000);
      if (r.socket && r.line.startsWith('* OK ')) {
        r.socket.resume();
        held[m.kind].push(r.socket);
      } else {
        failed += 1;
        firstFailure = firstFailure || r.line;
        if (r.socket) r.socket.destroy();
      }
    });
    if (m.kind === 'slow' && !trickle) {
      // Every socket gets one byte a second of a command line that never ends (1,800 bytes at most).
      const line = 's1 LOGIN "slow@example.test" "' + 'x'.repeat(1770);
      let tick = 0;
      trickle = setInterval(() => {
        tick += 1;
        held.slow.forEach((s, i) => {
          if (i % 10 !== tick % 10 || s.destroyed) return;
          s.sent = (s.sent || 0);
          if (s.sent < line.length) s.write(line[s.sent++]);
        });
      }, 100);
    }
    return { opened: held[m.kind].length, failed, firstFailure, ms: Date.now() - started };
  },
  async closeAll() {
    if (trickle) clearInterval(trickle);
    trickle = undefined;
    for (const kind of Object.keys(held)) {
      for (const s of held[kind]) s.destroy();
      held[kind] = [];
    }
    return {};
  },
  async flood(m) {
    const keep = [];
    let unexpected = 0;
    for (let i = 0; i < m.hold; i++) {
      const r = await open(m.address, 30000);
      if (r.socket && r.line.startsWith('* OK ')) { r.socket.resume(); keep.push(r.socket); } else unexpected += 1;
    }
    const stats = { attempts: 0, refused: 0, served: 0, other: 0, firstOther: undefined };
    const started = Date.now();
    let stop = false;
    const workers = Promise.all(Array.from({ length: m.concurrency }, async () => {
      while (!stop && stats.attempts < m.maxAttempts && Date.now() - started < m.maxMs) {
        stats.attempts += 1;
        const r = await open(m.address, 10000);
        if (r.line === REFUSAL) stats.refused += 1;
        else if (r.line.startsWith('* OK ')) stats.served += 1;
        else { stats.other += 1; stats.firstOther = stats.firstOther || r.line; }
        if (r.socket) r.socket.destroy();
      }
    }));
    flood = { stats, keep, started, stopNow: () => { stop = true; return workers; } };
    return { held: keep.length, unexpected };
  },
  async floodStats() {
    return { ...flood.stats, cpu: process.cpuUsage(), at: Date.now() };
  },
  async stopFlood() {
    await flood.stopNow();
    for (const s of flood.keep) s.destroy();
    const result = { ...flood.stats, seconds: (Date.now() - flood.started) / 1000 };
    flood = undefined;
    return result;
  },
  async rss() {
    return { rss: process.memoryUsage().rss };
  },
};

process.on('message', async (m) => {
  try {
    process.send({ id: m.id, ok: true, result: await handlers[m.cmd](m) });
  } catch (err) {
    process.send({ id: m.id, ok: false, error: String(err && err.stack || err) });
  }
});
process.send({ ready: true });
`;

class Clients {
  private seq = 0;
  private readonly pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();
  private constructor(private readonly child: ChildProcess) {
    child.on('message', (m: { id?: number; ok?: boolean; result?: unknown; error?: string }) => {
      if (m.id === undefined) return;
      const waiter = this.pending.get(m.id);
      this.pending.delete(m.id);
      if (m.ok) waiter?.resolve(m.result);
      else waiter?.reject(new Error(`client process: ${m.error}`));
    });
    child.on('exit', (code) => {
      for (const waiter of this.pending.values()) waiter.reject(new Error(`client process exited (${code})`));
      this.pending.clear();
    });
  }

  static async start(stack: Stack): Promise<Clients> {
    const child = spawn(process.execPath, ['-e', CLIENT], {
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
      env: { ...process.env, BENCH_CA: stack.ca, BENCH_PORT: String(stack.imapPort), BENCH_LIMIT_MS: String(RUN_LIMIT_MS) },
    });
    await new Promise<void>((resolve, reject) => {
      child.once('message', () => resolve());
      child.once('exit', (code) => reject(new Error(`client process exited (${code}) before it was ready`)));
    });
    return new Clients(child);
  }

  request<T>(cmd: string, payload: Record<string, unknown> = {}): Promise<T> {
    const id = ++this.seq;
    return new Promise<T>((resolve, reject) => {
      this.pending.set(id, { resolve: resolve as (v: unknown) => void, reject });
      this.child.send({ ...payload, cmd, id });
    });
  }

  stop(): void {
    this.child.disconnect();
  }
}

// ---------------------------------------------------------------------------------------------
// Measuring

/** One legitimate XOAUTH2 login on a fresh connection; milliseconds up to the tagged OK. */
async function login(stack: Stack, token: string): Promise<number> {
  const started = performance.now();
  const c = await TlsImap.connect({ ...stack, localAddress: LEGITIMATE });
  try {
    c.write(`a1 AUTHENTICATE XOAUTH2 ${xoauth2(ALICE.name, token)}\r\n`);
    const { tagged } = await c.until('a1');
    if (!tagged.startsWith('a1 OK ')) throw new Error(`legitimate login refused: ${tagged}`);
    return performance.now() - started;
  } finally {
    c.close();
  }
}

/** Nearest-rank percentile. */
function percentile(values: number[], p: number): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))]!;
}

interface LatencySummary {
  logins: number;
  p50Ms: number;
  p99Ms: number;
  minMs: number;
  maxMs: number;
  /** CPU time of this process (sasl-gate, the legitimate client, the IdP) over wall time. */
  cpuPercent: number;
  cpuMs: number;
}

async function logins(stack: Stack, token: string): Promise<LatencySummary> {
  const samples: number[] = [];
  const cpu = process.cpuUsage();
  const started = performance.now();
  for (let i = 0; i < LOGINS; i++) {
    samples.push(await login(stack, token));
    await sleep(20);
  }
  const used = process.cpuUsage(cpu);
  return {
    logins: samples.length,
    p50Ms: percentile(samples, 50),
    p99Ms: percentile(samples, 99),
    minMs: Math.min(...samples),
    maxMs: Math.max(...samples),
    cpuPercent: ((used.user + used.system) / 1000 / (performance.now() - started)) * 100,
    cpuMs: (used.user + used.system) / 1000,
  };
}

interface MemoryPhase {
  connections: number;
  kind: 'idle' | 'slow';
  rssBeforeMiB: number;
  rssPeakMiB: number;
  kibPerConnection: number;
  /** After GC while they are held: JS heap and memory outside it (Buffers, TLS state Node accounts for). */
  heapKibPerConnection: number;
  externalKibPerConnection: number;
  /** The captured log text that the test harness keeps in memory for them (part of the RSS figure). */
  logKibPerConnection: number;
  openSeconds: number;
  clientRssMiB: number;
}

const addresses = (block: number, count: number) =>
  Array.from({ length: Math.ceil(count / PER_ADDRESS) }, (_, i) => `127.0.${block}.${i + 1}`);

async function memoryPhase(stack: Stack, clients: Clients, kind: 'idle' | 'slow', holdMs: number): Promise<MemoryPhase> {
  stack.logs.length = 0;
  const before = await settledMemory();
  const logBefore = stack.rawLog().length;
  const peak = rssPeak();
  const opened = await clients.request<{ opened: number; failed: number; firstFailure?: string; ms: number }>('open', {
    kind,
    count: CONNECTIONS,
    addresses: addresses(kind === 'idle' ? 1 : 2, CONNECTIONS),
    perAddress: PER_ADDRESS,
    concurrency: 50,
  });
  if (opened.failed > 0) throw new Error(`${opened.failed} ${kind} connections were not greeted: ${opened.firstFailure}`);
  await sleep(holdMs);
  const held = await settledMemory();
  const peakRss = peak.stop();
  const logBytes = stack.rawLog().length - logBefore;
  const client = await clients.request<{ rss: number }>('rss');
  return {
    connections: CONNECTIONS,
    kind,
    rssBeforeMiB: before.rss / MIB,
    rssPeakMiB: peakRss / MIB,
    kibPerConnection: (peakRss - before.rss) / KIB / CONNECTIONS,
    heapKibPerConnection: (held.heapUsed - before.heapUsed) / KIB / CONNECTIONS,
    externalKibPerConnection: (held.external - before.external) / KIB / CONNECTIONS,
    logKibPerConnection: logBytes / KIB / CONNECTIONS,
    openSeconds: opened.ms / 1000,
    clientRssMiB: client.rss / MIB,
  };
}

// ---------------------------------------------------------------------------------------------

async function main(): Promise<void> {
  const runStarted = performance.now();
  const loadBefore = loadavg();
  progress('starting Dovecot, the development IdP and sasl-gate ...');
  const stack = await startStack({
    config: {
      limits: {
        preAuthTimeoutSeconds: PRE_AUTH_TIMEOUT_SECONDS,
        maxConnectionsPerAddress: PER_ADDRESS,
        authFailureDelaySeconds: 0,
        shutdownGraceSeconds: 0,
      },
    },
  });
  const deadline = setTimeout(() => {
    process.stderr.write(`bench/preauth.ts: still running after ${RUN_LIMIT_MS / 1000} s, giving up\n`);
    process.exit(2);
  }, RUN_LIMIT_MS);
  deadline.unref();
  let clients: Clients | undefined;
  try {
    const token = await stack.idp.mintAccessToken({ user: ALICE.name });
    for (let i = 0; i < 5; i++) await login(stack, token);
    clients = await Clients.start(stack);

    progress(`(a) opening ${CONNECTIONS} idle pre-auth connections ...`);
    const idle = await memoryPhase(stack, clients, 'idle', HOLD_MS);
    progress(`(a) opening ${CONNECTIONS} slow pre-auth connections beside them ...`);
    const slow = await memoryPhase(stack, clients, 'slow', SLOW_HOLD_MS);
    await clients.request('closeAll');
    await sleep(1000);

    progress(`(b) ${LOGINS} logins with no load ...`);
    const quiet = await logins(stack, token);
    progress(`(b) flood from ${FLOODER}: ${PER_ADDRESS} connections held, then ${FLOOD_CONCURRENCY} attempts at a time ...`);
    const started = await clients.request<{ held: number; unexpected: number }>('flood', {
      address: FLOODER,
      hold: PER_ADDRESS,
      concurrency: FLOOD_CONCURRENCY,
      maxAttempts: 1_000_000,
      maxMs: 5 * 60_000,
    });
    if (started.held !== PER_ADDRESS) throw new Error(`the flooder holds ${started.held} connections, not ${PER_ADDRESS}`);
    await sleep(1000);
    type FloodStats = { attempts: number; refused: number; served: number; other: number; firstOther?: string; cpu: NodeJS.CpuUsage; at: number };
    const floodBefore = await clients.request<FloodStats>('floodStats');
    const underFlood = await logins(stack, token);
    const floodAfter = await clients.request<FloodStats>('floodStats');
    const flood = await clients.request<{ attempts: number; refused: number; served: number; other: number; firstOther?: string; seconds: number }>('stopFlood');
    await sleep(1000);
    progress(`(b) ${LOGINS} logins with no load again ...`);
    const quietAgain = await logins(stack, token);

    const windowSeconds = (floodAfter.at - floodBefore.at) / 1000;
    const clientCpu =
      (floodAfter.cpu.user + floodAfter.cpu.system - floodBefore.cpu.user - floodBefore.cpu.system) / 1000 / (windowSeconds * 1000);
    const refusalsLogged = stack.logs.filter((l) => l['msg'] === 'connection refused: limit reached' && l['client'] === FLOODER).length;
    const result = {
      node: process.version,
      cpus: cpus().length,
      loadavgBefore: loadBefore,
      loadavgAfter: loadavg(),
      connections: CONNECTIONS,
      memory: {
        idle,
        slow,
        all: {
          connections: 2 * CONNECTIONS,
          kibPerConnection: ((slow.rssPeakMiB - idle.rssBeforeMiB) * KIB) / (2 * CONNECTIONS),
        },
      },
      latency: {
        baseline: quiet,
        flood: underFlood,
        baselineAfter: quietAgain,
        ratioP50: underFlood.p50Ms / quiet.p50Ms,
        ratioP99: underFlood.p99Ms / quiet.p99Ms,
        /** The same against the no-load run after the flood: how far the baseline itself moved. */
        ratioP50After: underFlood.p50Ms / quietAgain.p50Ms,
        ratioP99After: underFlood.p99Ms / quietAgain.p99Ms,
        floodWindow: {
          seconds: windowSeconds,
          attempts: floodAfter.attempts - floodBefore.attempts,
          refused: floodAfter.refused - floodBefore.refused,
          refusalsPerSecond: (floodAfter.refused - floodBefore.refused) / windowSeconds,
          /** This process's extra CPU time during the flood's logins over the no-load ones, per refusal. */
          gateCpuMsPerRefusal: (underFlood.cpuMs - quiet.cpuMs) / Math.max(1, floodAfter.refused - floodBefore.refused),
          clientProcessCpuPercent: clientCpu * 100,
        },
        floodTotal: { ...flood, refusalsLogged },
      },
      elapsedSeconds: (performance.now() - runStarted) / 1000,
    };
    if (flood.served > 0 || flood.other > 0) {
      throw new Error(`the flood was not simply refused: ${flood.served} served, ${flood.other} other (${flood.firstOther})`);
    }

    if (JSON_OUTPUT) {
      process.stdout.write(`${JSON.stringify(result, null, 2)}\n`);
      return;
    }
    const f1 = (n: number) => n.toFixed(1);
    const out: string[] = [];
    out.push(
      `sasl-gate pre-auth bench: Node ${result.node}, ${result.cpus} CPUs, load ${loadBefore.map((l) => l.toFixed(2)).join(' ')} before, ` +
        `${result.loadavgAfter.map((l) => l.toFixed(2)).join(' ')} after`,
    );
    out.push('');
    out.push(`(a) memory of the process running sasl-gate (clients in a child process; peak RSS sampled every 20 ms)`);
    const row = (m: MemoryPhase, label: string) =>
      `  ${label.padEnd(44)} RSS ${f1(m.rssBeforeMiB).padStart(6)} -> peak ${f1(m.rssPeakMiB).padStart(6)} MiB   ` +
      `${f1(m.kibPerConnection).padStart(5)} KiB/conn   (after GC: heap ${f1(m.heapKibPerConnection)}, external ${f1(m.externalKibPerConnection)}; ` +
      `captured log ${f1(m.logKibPerConnection)} KiB/conn; opened in ${f1(m.openSeconds)} s)`;
    out.push(row(idle, `${CONNECTIONS} idle (greeted, nothing sent)`));
    out.push(row(slow, `+ ${CONNECTIONS} slow (1 byte/s, line never ends)`));
    out.push(`  all ${2 * CONNECTIONS} together: ${f1(result.memory.all.kibPerConnection)} KiB/conn over the RSS before the first was opened`);
    out.push(`  client process RSS with all of them open: ${f1(slow.clientRssMiB)} MiB (not counted above)`);
    out.push('');
    out.push(`(b) legitimate XOAUTH2 login from ${LEGITIMATE} (connect + TLS + greeting + AUTHENTICATE to OK), ${LOGINS} in a row each`);
    const lat = (s: LatencySummary, label: string) =>
      `  ${label.padEnd(44)} p50 ${f1(s.p50Ms).padStart(6)} ms   p99 ${f1(s.p99Ms).padStart(6)} ms   ` +
      `(min ${f1(s.minMs)}, max ${f1(s.maxMs)}; this process ${f1(s.cpuPercent)}% CPU)`;
    out.push(lat(quiet, 'no load'));
    out.push(lat(underFlood, `flood from ${FLOODER}, refused`));
    out.push(lat(quietAgain, 'no load again'));
    const w = result.latency.floodWindow;
    out.push(
      `  flood during the timed logins: ${w.refused} refusals in ${f1(w.seconds)} s = ${f1(w.refusalsPerSecond)}/s ` +
        `(${FLOOD_CONCURRENCY} TLS attempts in flight, ${PER_ADDRESS} held; flood client process ${f1(w.clientProcessCpuPercent)}% CPU)`,
    );
    out.push(`  sasl-gate's CPU per refused connection (extra CPU of this process during the flood's logins): about ${w.gateCpuMsPerRefusal.toFixed(2)} ms`);
    out.push(
      `  whole flood: ${flood.attempts} attempts in ${f1(flood.seconds)} s, ${flood.refused} refused with "* BYE [UNAVAILABLE] ...", ` +
        `${flood.served} served, ${flood.other} other; ${refusalsLogged} refusals logged`,
    );
    const r = result.latency;
    out.push(
      `  ratio flood / no load: p50 ${r.ratioP50.toFixed(2)}x, p99 ${r.ratioP99.toFixed(2)}x ` +
        `(against the no-load run after the flood: p50 ${r.ratioP50After.toFixed(2)}x, p99 ${r.ratioP99After.toFixed(2)}x)`,
    );
    out.push(`run took ${f1(result.elapsedSeconds)} s`);
    process.stdout.write(`${out.join('\n')}\n`);
  } finally {
    if (clients) {
      await clients.request('closeAll').catch(() => undefined);
      clients.stop();
    }
    await stack.close();
    clearTimeout(deadline);
  }
}

await main();
// Keep-alive sockets of the IdP's HTTP clients would hold the process open a little longer.
process.exit(0);

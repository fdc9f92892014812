/**
 * Memory per idle authenticated connection: sasl-gate against nginx's mail proxy, both in front of
 * the same Dovecot, at 1,000 and (as near as this machine allows) 10,000 connections, in one run.
 *
 *   npx vite-node bench/idle-memory.ts            # table on stdout, progress on stderr
 *   npx vite-node bench/idle-memory.ts --json     # one JSON object on stdout
 *   options: --connections 1000,10000  --hold S (5)  --ramp N (100)  --use-dist
 *            --gate-node-option FLAG (repeatable): a node option for sasl-gate, e.g. --max-semi-space-size=1
 *            --heap-snapshot N: then one more sasl-gate run holding N connections, with a V8 heap
 *            snapshot before and while holding (node --heapsnapshot-signal): JS heap per connection
 *            by constructor, the rest of the RSS being native (OpenSSL, Node's C++ side, libuv, malloc)
 *
 * For each count and each proxy, a fresh proxy process is started, warmed up with a few logins,
 * and its resident memory read (the baseline); then `sasl-gate load imap-idle` (in this process)
 * opens the connections (TLS, AUTHENTICATE PLAIN, SELECT INBOX, IDLE; `--ramp` being opened at
 * once), holds them for `--hold` seconds and logs them out. While it runs, the proxy's open file
 * descriptors and RSS are read every 250 ms; "holding" is the last reading while every connection
 * was open (two descriptors each: client and Dovecot). Per connection = (holding - baseline) / count.
 *   sasl-gate   one process, `node bin/sasl-gate.js serve` (its RSS is its own);
 *   nginx       2 workers (`accept_mutex on`, so that both take connections), the sum of the
 *               workers' RSS; the master holds no connections (its RSS is shown apart);
 *   Node floor  the smallest TLS relay Node can be (bench/lib/tls-pipe.ts: tls.createServer, a TCP
 *               connection to Dovecot, pipe both ways): what Node itself needs per connection.
 * sasl-gate and nginx forward the client's PLAIN login to Dovecot (nginx through an auth_http
 * endpoint that says OK), the pipe simply carries it. Dovecot runs in its high-performance login
 * mode with limits raised for the counts (`mail_max_userip_connections`, several connections per
 * imap process).
 *
 * A proxy needs two descriptors per connection, and without CAP_SYS_RESOURCE no process here may
 * open more than the hard `ulimit -n`: a count above (hard limit - what the process holds at
 * rest) / 2 is lowered to that, and the report says so.
 */
import { loadavg } from 'node:os';
import { performance } from 'node:perf_hooks';
import {
  JSON_OUTPUT,
  args,
  fdCount,
  fmtRatio,
  hardFileLimit,
  listOption,
  machine,
  machineLine,
  numberOption,
  progress,
  round,
  runBench,
  sleep,
  table,
} from './lib/common.js';
import { gateCommandNote, startGateProcess, type GateProcess } from './lib/gate.js';
import { startTlsPipe, type TlsPipe } from './lib/tls-pipe.js';
import { nginxVersion, startAuthHttp, startNginx, type Nginx } from './lib/nginx.js';
import { heapCensus, heapGrowth, takeHeapSnapshot, type HeapGrowth } from './lib/heap.js';
import { certificate, errorsOf, gateConfig, harness, passwordsFile, scratchDir, startBenchDovecot, startBenchIdp } from './lib/stack.js';

const COUNTS = listOption(args, '--connections', [1000, 10000]);
const HOLD = numberOption(args, '--hold', 5, 1, 120);
/** `--heap-snapshot N`: afterwards, one more sasl-gate run with N connections and a V8 heap census. */
const HEAP_SNAPSHOT = numberOption(args, '--heap-snapshot', 0, 0, 3000);
/** `--gate-node-option FLAG`: a node option for sasl-gate's process (e.g. --max-semi-space-size=1). */
const GATE_NODE_OPTIONS = args.flatMap((a, i) => (a === '--gate-node-option' && args[i + 1] ? [args[i + 1]!] : []));
const RAMP = numberOption(args, '--ramp', 100, 1, 10_000);
const KIB = 1024;
const MIB = 1024 * 1024;
const TARGET_KIB = 32;
/** Descriptors a proxy process holds besides its connections (listeners, log, epoll, ...), with room to spare. */
const FD_RESERVE = 100;

type Proxy = 'gate' | 'nginx' | 'pipe';
const NAMES: Record<Proxy, string> = { gate: 'sasl-gate', nginx: 'nginx (workers)', pipe: 'Node TLS pipe (floor)' };

interface Measurement {
  proxy: Proxy;
  requested: number;
  connections: number;
  held: number;
  failed: number;
  errors: string;
  baselineMiB: number;
  holdingMiB: number;
  peakMiB: number;
  kibPerConnection: number;
  kibPerConnectionAtPeak: number;
  /** nginx: the master's RSS (not in the figures). */
  masterMiB?: number;
  /** The harness's own RSS per held connection (client side, this process). */
  harnessKibPerConnection: number | null;
  /** sasl-gate: what the harness itself read with --target-pid at the end of the hold. */
  harnessTargetKibPerConnection?: number | null;
  openSeconds: number;
  openRate: number;
}

runBench('idle-memory', 15 * 60_000, async () => {
  const before = machine();
  const started = performance.now();
  const hard = hardFileLimit();
  const largest = Math.max(...COUNTS);
  progress(`starting Dovecot (sized for ${largest} connections), the development IdP and the auth_http endpoint ...`);
  const cert = await certificate();
  const dovecot = await startBenchDovecot({
    maxUserIpConnections: largest + 1000,
    connectionCapacity: largest + 1000,
    highPerformanceLogin: true,
  });
  const backend = { host: dovecot.host, port: dovecot.imapPort };
  const idp = await startBenchIdp();
  const auth = await startAuthHttp(backend);
  const users = passwordsFile(scratchDir('idle'));
  const version = await nginxVersion();

  const startGate = (nodeOptions: string[] = []) =>
    startGateProcess({
      nodeOptions: [...GATE_NODE_OPTIONS, ...nodeOptions],
      config: gateConfig(cert, backend, idp, {
        limits: { maxConnections: 1_000_000, maxConnectionsPerAddress: 1_000_000, preAuthTimeoutSeconds: 300 },
      }),
      fileLimit: hard,
    });
  const startProxyNginx = () => startNginx({ cert, authPort: auth.port, workers: 2, workerConnections: hard, fileLimit: hard });

  const measure = async (proxy: Proxy, requested: number): Promise<Measurement> => {
    let gate: GateProcess | undefined;
    let nginx: Nginx | undefined;
    let pipe: TlsPipe | undefined;
    let port: number;
    if (proxy === 'gate') {
      gate = await startGate();
      port = gate.port;
    } else if (proxy === 'nginx') {
      nginx = await startProxyNginx();
      port = nginx.port;
    } else {
      pipe = await startTlsPipe({ cert, backend, fileLimit: hard });
      port = pipe.port;
    }
    const pids = () => (gate ? [gate.pid] : pipe ? [pipe.pid] : nginx!.pids().slice(1));
    const rss = () => (gate ? gate.rss() : pipe ? pipe.rss() : nginx!.rss().workers);
    const fds = () => pids().reduce((a, pid) => a + (fdCount(pid) || 0), 0);
    const target = `imaps://127.0.0.1:${port}`;
    const common = ['--mech', 'plain', '--users', users, '--ca', cert.caPath];
    // Warm-up: code paths loaded, TLS contexts used, the first allocations made.
    const warm = await harness(['imap-login', '--target', target, ...common, '--count', '40', '--concurrency', '4']);
    if (warm.ok !== 40) throw new Error(`${proxy}: warm-up logins failed: ${errorsOf(warm)}`);
    await sleep(500);
    const baseFds = fds();
    // Two descriptors per connection (client, Dovecot) in one process, under the hard ulimit -n;
    // the same count for both proxies.
    const connections = Math.min(requested, Math.floor((hard - FD_RESERVE) / 2));
    if (connections < requested) {
      progress(`  ${requested} connections need ${2 * requested} descriptors in one sasl-gate process; the hard ulimit -n is ${hard}: measuring ${connections}`);
    }
    const baseline = rss();
    const samples: Array<{ t: number; fds: number; rss: number }> = [];
    let sampling = true;
    const sampler = (async () => {
      while (sampling) {
        samples.push({ t: performance.now(), fds: fds(), rss: rss() });
        await sleep(250);
      }
    })();
    const t0 = performance.now();
    const r = await harness([
      'imap-idle',
      '--target',
      target,
      ...common,
      '--concurrency',
      String(connections),
      '--duration',
      String(HOLD),
      '--ramp',
      String(RAMP),
      '--timeout',
      '120',
      ...(gate ? ['--target-pid', String(gate.pid)] : []),
    ]);
    sampling = false;
    await sampler;
    const full = baseFds + 2 * connections * 0.99;
    const holding = samples.filter((s) => s.fds >= full);
    const firstFull = holding[0]?.t ?? NaN;
    const last = holding.at(-1);
    const peak = Math.max(...samples.map((s) => s.rss));
    const idle = r.idle!;
    const m: Measurement = {
      proxy,
      requested,
      connections,
      held: idle.held,
      failed: idle.failed,
      errors: errorsOf(r),
      baselineMiB: baseline / MIB,
      holdingMiB: (last?.rss ?? NaN) / MIB,
      peakMiB: peak / MIB,
      kibPerConnection: ((last?.rss ?? NaN) - baseline) / KIB / connections,
      kibPerConnectionAtPeak: (peak - baseline) / KIB / connections,
      ...(nginx ? { masterMiB: nginx.rss().master / MIB } : {}),
      harnessKibPerConnection: idle.harness.perConnectionBytes === null ? null : idle.harness.perConnectionBytes / KIB,
      ...(gate ? { harnessTargetKibPerConnection: idle.targetProcess?.perConnectionBytes == null ? null : idle.targetProcess.perConnectionBytes / KIB } : {}),
      openSeconds: (firstFull - t0) / 1000,
      openRate: connections / ((firstFull - t0) / 1000),
    };
    if (gate) await gate.stop();
    if (nginx) await nginx.stop();
    if (pipe) await pipe.stop();
    // Let Dovecot finish the logouts before the next set.
    await sleep(1000);
    return m;
  };

  const measurements: Measurement[] = [];
  for (const [i, count] of COUNTS.entries()) {
    const order: Proxy[] = i % 2 === 0 ? ['gate', 'nginx', 'pipe'] : ['pipe', 'nginx', 'gate'];
    for (const proxy of order) {
      progress(`${NAMES[proxy]}: ${count} idle authenticated connections (ramp ${RAMP}, hold ${HOLD} s) ...`);
      const m = await measure(proxy, count);
      measurements.push(m);
      progress(
        `  held ${m.held}/${m.connections} (failed ${m.failed}${m.errors ? `: ${m.errors}` : ''}); RSS ${m.baselineMiB.toFixed(1)} -> ${m.holdingMiB.toFixed(1)} MiB ` +
          `(peak ${m.peakMiB.toFixed(1)}): ${m.kibPerConnection.toFixed(1)} KiB/conn; opened at ${m.openRate.toFixed(0)}/s`,
      );
    }
  }
  const heaps: Array<HeapGrowth & { proxy: Proxy; connections: number; rssKibPerConnection: number }> = [];
  if (HEAP_SNAPSHOT > 0) {
    for (const proxy of ['gate', 'pipe'] as const) {
      progress(`${NAMES[proxy]}: ${HEAP_SNAPSHOT} connections again, with V8 heap snapshots before and while holding ...`);
      const options = ['--heapsnapshot-signal=SIGUSR2'];
      const server = proxy === 'gate' ? await startGate(options) : await startTlsPipe({ cert, backend, fileLimit: hard, nodeOptions: options });
      const target = `imaps://127.0.0.1:${server.port}`;
      const common = ['--mech', 'plain', '--users', users, '--ca', cert.caPath];
      await harness(['imap-login', '--target', target, ...common, '--count', '40', '--concurrency', '4']);
      await sleep(500);
      const rssBefore = server.rss();
      const censusBefore = heapCensus(await takeHeapSnapshot(server.pid, server.dir));
      const baseFds = fdCount(server.pid);
      const stop = new AbortController();
      let rssHolding = NaN;
      let censusHolding: ReturnType<typeof heapCensus> | undefined;
      const watcher = (async () => {
        const deadline = Date.now() + 120_000;
        while (Date.now() < deadline && fdCount(server.pid) < baseFds + 2 * HEAP_SNAPSHOT * 0.99) await sleep(250);
        await sleep(1000);
        rssHolding = server.rss();
        censusHolding = heapCensus(await takeHeapSnapshot(server.pid, server.dir));
        stop.abort();
      })();
      await harness(
        ['imap-idle', '--target', target, ...common, '--concurrency', String(HEAP_SNAPSHOT), '--duration', '120', '--ramp', String(RAMP), '--timeout', '120'],
        stop.signal,
      );
      await watcher;
      await server.stop();
      if (censusHolding) {
        heaps.push({
          ...heapGrowth(censusBefore, censusHolding, HEAP_SNAPSHOT),
          proxy,
          connections: HEAP_SNAPSHOT,
          rssKibPerConnection: (rssHolding - rssBefore) / KIB / HEAP_SNAPSHOT,
        });
      }
    }
  }
  const after = loadavg();
  const byCount = COUNTS.map((count) => {
    const gate = measurements.find((m) => m.proxy === 'gate' && m.requested === count)!;
    const nginx = measurements.find((m) => m.proxy === 'nginx' && m.requested === count)!;
    const pipe = measurements.find((m) => m.proxy === 'pipe' && m.requested === count)!;
    return { requested: count, gate, nginx, pipe, gateVsNginx: gate.kibPerConnection / nginx.kibPerConnection };
  });
  const worst = Math.max(...byCount.map((c) => c.gate.kibPerConnection));
  // What each further connection costs: the slope between the smallest and the largest count,
  // free of the one-time growth (V8's young generation, allocator arenas) that the small count carries.
  const marginal =
    byCount.length < 2
      ? undefined
      : (() => {
          const [lo, hi] = [byCount[0]!, byCount.at(-1)!];
          const slope = (a: Measurement, b: Measurement) =>
            (((b.holdingMiB - b.baselineMiB) - (a.holdingMiB - a.baselineMiB)) * KIB) / (b.connections - a.connections);
          return {
            from: lo.gate.connections,
            to: hi.gate.connections,
            saslGate: round(slope(lo.gate, hi.gate), 1),
            nginx: round(slope(lo.nginx, hi.nginx), 1),
            nodeTlsPipe: round(slope(lo.pipe, hi.pipe), 1),
          };
        })();
  const result = {
    benchmark: 'idle-memory',
    machine: before,
    loadavgAfter: after.map((l) => round(l, 2)),
    gate: gateCommandNote(),
    gateNodeOptions: GATE_NODE_OPTIONS,
    nginx: `${version}, 2 workers, accept_mutex on, libnginx-mod-mail`,
    fileHardLimit: hard,
    holdSeconds: HOLD,
    ramp: RAMP,
    results: byCount.map((c) => ({
      requested: c.requested,
      saslGate: roundAll(c.gate),
      nginx: roundAll(c.nginx),
      nodeTlsPipe: roundAll(c.pipe),
      gateVsNginx: round(c.gateVsNginx, 2),
      gateOverNodeFloorKiB: round(c.gate.kibPerConnection - c.pipe.kibPerConnection, 1),
    })),
    ...(marginal ? { marginalKibPerConnection: marginal } : {}),
    targetKiB: TARGET_KIB,
    targetMet: worst <= TARGET_KIB,
    ...(heaps.length ? { heapCensus: heaps } : {}),
    elapsedSeconds: round((performance.now() - started) / 1000, 1),
  };
  if (JSON_OUTPUT) {
    process.stdout.write(`${JSON.stringify(result, null, 2)}\n`);
    return;
  }
  const out: string[] = [];
  out.push('Memory per idle authenticated IMAP connection (TLS, logged in, INBOX selected, in IDLE): sasl-gate vs nginx mail proxy');
  out.push(machineLine(before, after));
  out.push(`gate: ${gateCommandNote()}${GATE_NODE_OPTIONS.length ? ` with node ${GATE_NODE_OPTIONS.join(' ')}` : ''}; nginx: ${result.nginx}; open-file hard limit ${hard}; hold ${HOLD} s; ramp ${RAMP}`);
  out.push('KiB/conn = (RSS while all are held - RSS before) / connections; nginx: sum of its 2 workers');
  out.push('');
  const rows = [['', 'connections', 'held', 'RSS before MiB', 'holding MiB', 'peak MiB', 'KiB/conn', 'at peak', 'opened/s']];
  for (const c of byCount) {
    for (const m of [c.gate, c.nginx, c.pipe]) {
      rows.push([
        NAMES[m.proxy],
        String(m.connections),
        String(m.held),
        m.baselineMiB.toFixed(1),
        m.holdingMiB.toFixed(1),
        m.peakMiB.toFixed(1),
        m.kibPerConnection.toFixed(1),
        m.kibPerConnectionAtPeak.toFixed(1),
        m.openRate.toFixed(0),
      ]);
    }
  }
  out.push(...table(rows));
  out.push('');
  for (const c of byCount) {
    out.push(
      `${c.gate.connections === c.requested ? c.requested : `${c.requested} requested, ${c.gate.connections} measured`}: sasl-gate ${c.gate.kibPerConnection.toFixed(1)} KiB/conn, ` +
        `nginx ${c.nginx.kibPerConnection.toFixed(1)} KiB/conn (sasl-gate = ${fmtRatio(c.gateVsNginx)}x nginx); ` +
        `Node's own floor (TLS pipe) ${c.pipe.kibPerConnection.toFixed(1)} KiB/conn, sasl-gate ${(c.gate.kibPerConnection - c.pipe.kibPerConnection).toFixed(1)} KiB above it` +
        `${c.gate.harnessTargetKibPerConnection != null ? `; the harness's own --target-pid reading: ${c.gate.harnessTargetKibPerConnection.toFixed(1)} KiB/conn` : ''}`,
    );
  }
  if (marginal) {
    out.push(
      `each connection beyond the first ${marginal.from} (slope from ${marginal.from} to ${marginal.to}): sasl-gate ${marginal.saslGate} KiB, ` +
        `nginx ${marginal.nginx} KiB, Node TLS pipe ${marginal.nodeTlsPipe} KiB`,
    );
  }
  out.push(`target <= ${TARGET_KIB} KiB per connection: ${result.targetMet ? 'met' : 'NOT met'} (worst ${worst.toFixed(1)} KiB)`);
  const reduced = byCount.filter((c) => c.gate.connections < c.requested || c.nginx.connections < c.requested);
  for (const c of reduced) {
    out.push(
      `${c.requested} connections were not possible: a proxy holds two descriptors per connection and the hard ulimit -n is ${hard} ` +
        `(no CAP_SYS_RESOURCE to raise it), so one sasl-gate process can relay at most ${c.gate.connections}`,
    );
  }
  for (const heap of heaps) {
    out.push('');
    out.push(
      `V8 heap census, ${NAMES[heap.proxy]} holding ${heap.connections} connections (RSS ${heap.rssKibPerConnection.toFixed(1)} KiB/conn in this run, ` +
        `snapshots included): live JS heap ${(heap.totalBytesPerConnection / KIB).toFixed(1)} KiB/conn; the rest is native (OpenSSL, Node's C++ side, libuv, malloc) and V8 heap slack`,
    );
    out.push('  largest growth per connection (objects by constructor):');
    for (const t of heap.top.slice(0, 15)) {
      out.push(`    ${t.bytesPerConnection.toFixed(0).padStart(6)} B  ${t.countPerConnection.toFixed(2).padStart(6)} x  ${t.what}`);
    }
  }
  out.push(`run took ${result.elapsedSeconds} s`);
  process.stdout.write(`${out.join('\n')}\n`);
});

function roundAll(m: Measurement): Record<string, unknown> {
  return Object.fromEntries(Object.entries(m).map(([k, v]) => [k, typeof v === 'number' ? round(v, 2) : v]));
}

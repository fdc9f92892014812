/**
 * Every core and several replicas in one run: sasl-gate with `workers: 1` and `workers: 2`
 * reached directly, and HAProxy (PROXY v2, `/readyz` checks) in front of one and of two
 * single-process replicas, all before the same instant backend.
 *
 *   npx vite-node bench/cluster.ts            # table on stdout, progress on stderr
 *   npx vite-node bench/cluster.ts --json     # one JSON object on stdout
 *   options: --rounds N (3), --seconds S per sample (4), --concurrency N (8)
 *
 * Each sample is `sasl-gate load imap-login --mech xoauth2 --concurrency N` for S seconds against
 * one set-up while the others idle; the order rotates per round. Measured: logins per second, the
 * CPU seconds of sasl-gate (every process of the set-up, from /proc), of HAProxy and of the load
 * client per login, and logins per CPU-second of sasl-gate and HAProxy together. Ratios are each
 * set-up over the baseline (`workers: 1`, reached directly) within the same round, then the median.
 */
import { cpus } from 'node:os';
import { startHaproxy, type HaproxyInstance } from '../tools/haproxy.js';
import { freePort } from '../tools/ports.js';
import { JSON_OUTPUT, args, fmtRatio, machine, machineLine, median, numberOption, onCleanup, ownCpuSeconds, progress, round, runBench, sig3, table, treeCpuSeconds } from './lib/common.js';
import { startGateProcess, type GateProcess } from './lib/gate.js';
import { startInstantBackend } from './lib/instant-backend.js';
import { certificate, errorsOf, gateConfig, harness, scratchDir, startBenchIdp, tokensFor, usersFile } from './lib/stack.js';

const ROUNDS = numberOption(args, '--rounds', 3, 1, 50);
const SECONDS = numberOption(args, '--seconds', 4, 2, 60);
const CONCURRENCY = numberOption(args, '--concurrency', 8, 2, 1000);

type SetUp = 'workers1' | 'workers2' | 'haproxy1' | 'haproxy2';
const SETUPS: SetUp[] = ['workers1', 'workers2', 'haproxy1', 'haproxy2'];
const LABELS: Record<SetUp, string> = {
  workers1: 'workers 1, direct (baseline)',
  workers2: 'workers 2, direct',
  haproxy1: 'HAProxy -> 1 replica (workers 1)',
  haproxy2: 'HAProxy -> 2 replicas (workers 1 each)',
};

interface Sample {
  rate: number;
  ok: number;
  failed: number;
  /** sasl-gate CPU ms per login (every process of the set-up). */
  gateCpuMsPerLogin: number;
  /** HAProxy CPU ms per login (0 without it). */
  haproxyCpuMsPerLogin: number;
  /** Logins per CPU-second of sasl-gate and HAProxy together. */
  loginsPerCpuSecond: number;
  /** The load client's CPU ms per login. */
  clientCpuMsPerLogin: number;
  errors: string;
}

runBench('cluster', 15 * 60_000, async () => {
  const before = machine();
  progress('starting the instant backend, the development IdP, sasl-gate (workers 1, workers 2, two replicas) and two HAProxy ...');
  const cert = await certificate();
  const backend = await startInstantBackend();
  const idp = await startBenchIdp();
  const scratch = scratchDir('cluster');
  const tokens = await tokensFor(idp);
  const users = usersFile(scratch, 'tokens.tsv', tokens.map((t) => ({ user: t.user, secret: t.token })));
  const base = gateConfig(cert, backend, idp, { log: { level: 'warn' } });
  const direct = {
    workers1: await startGateProcess({ config: { ...base, workers: 1 } }),
    workers2: await startGateProcess({ config: { ...base, workers: 2 } }),
  };
  const replicas: Array<GateProcess & { adminPort: number }> = [];
  for (let i = 0; i < 2; i++) {
    const adminPort = await freePort();
    const gate = await startGateProcess({
      config: { ...base, workers: 1, admin: { bind: `127.0.0.1:${adminPort}` } },
      listener: { proxyProtocol: true, trustedProxies: ['127.0.0.1/32'] },
    });
    replicas.push({ ...gate, adminPort });
  }
  const haproxyFor = async (count: number): Promise<HaproxyInstance> => {
    const h = await startHaproxy({
      services: ['imaps'],
      replicas: replicas.slice(0, count).map((r, i) => ({ name: `r${i + 1}`, ports: { imaps: r.port }, adminPort: r.adminPort })),
      // A production-like check rate: once a second is nothing next to the logins.
      interMs: 1000,
    });
    onCleanup(() => h.stop());
    for (let i = 0; i < count; i++) await h.waitForServer(`r${i + 1}`, 'UP', 20_000);
    return h;
  };
  const haproxy = { haproxy1: await haproxyFor(1), haproxy2: await haproxyFor(2) };

  const target = (setUp: SetUp): { port: number; gatePids: number[]; haproxyPid: number | undefined } => {
    switch (setUp) {
      case 'workers1':
      case 'workers2':
        return { port: direct[setUp].port, gatePids: [direct[setUp].pid], haproxyPid: undefined };
      case 'haproxy1':
        return { port: haproxy.haproxy1.ports['imaps']!, gatePids: [replicas[0]!.pid], haproxyPid: haproxy.haproxy1.pid };
      case 'haproxy2':
        return { port: haproxy.haproxy2.ports['imaps']!, gatePids: replicas.map((r) => r.pid), haproxyPid: haproxy.haproxy2.pid };
    }
  };
  const cpuOf = (pids: number[]) => pids.reduce((n, pid) => n + treeCpuSeconds(pid), 0);

  const sample = async (setUp: SetUp, seconds: number): Promise<Sample> => {
    const { port, gatePids, haproxyPid } = target(setUp);
    const g0 = cpuOf(gatePids);
    const p0 = haproxyPid ? treeCpuSeconds(haproxyPid) : 0;
    const c0 = ownCpuSeconds();
    const r = await harness(['imap-login', '--target', `imaps://127.0.0.1:${port}`, '--mech', 'xoauth2', '--users', users, '--ca', cert.caPath, '--concurrency', String(CONCURRENCY), '--duration', String(seconds)]);
    const gateCpu = cpuOf(gatePids) - g0;
    const haproxyCpu = haproxyPid ? treeCpuSeconds(haproxyPid) - p0 : 0;
    const ok = Math.max(1, r.ok);
    return {
      rate: r.ratePerSecond,
      ok: r.ok,
      failed: r.failed,
      gateCpuMsPerLogin: (gateCpu * 1000) / ok,
      haproxyCpuMsPerLogin: (haproxyCpu * 1000) / ok,
      loginsPerCpuSecond: r.ok / Math.max(gateCpu + haproxyCpu, 1e-6),
      clientCpuMsPerLogin: ((ownCpuSeconds() - c0) * 1000) / ok,
      errors: errorsOf(r),
    };
  };

  progress('warming up (2 s each) ...');
  for (const setUp of SETUPS) await sample(setUp, 2);
  const rounds: Array<Record<SetUp, Sample>> = [];
  for (let i = 0; i < ROUNDS; i++) {
    const order = SETUPS.map((_, k) => SETUPS[(k + i) % SETUPS.length]!);
    const result: Partial<Record<SetUp, Sample>> = {};
    for (const setUp of order) {
      const s = await sample(setUp, SECONDS);
      result[setUp] = s;
      progress(`round ${i + 1}/${ROUNDS} ${LABELS[setUp]}: ${s.rate.toFixed(0)} logins/s, ${s.gateCpuMsPerLogin.toFixed(2)} + ${s.haproxyCpuMsPerLogin.toFixed(2)} ms CPU per login, ${s.failed} failed`);
    }
    rounds.push(result as Record<SetUp, Sample>);
  }
  await Promise.all([haproxy.haproxy1.stop(), haproxy.haproxy2.stop()]);
  await Promise.all([direct.workers1.stop(), direct.workers2.stop(), ...replicas.map((r) => r.stop())]);
  backend.stop();
  await idp.close();

  const med = (setUp: SetUp, key: keyof Omit<Sample, 'errors'>) => median(rounds.map((r) => r[setUp][key]));
  const summary = Object.fromEntries(
    SETUPS.map((setUp) => [
      setUp,
      {
        rate: sig3(med(setUp, 'rate')),
        gateCpuMsPerLogin: round(med(setUp, 'gateCpuMsPerLogin'), 3),
        haproxyCpuMsPerLogin: round(med(setUp, 'haproxyCpuMsPerLogin'), 3),
        loginsPerCpuSecond: sig3(med(setUp, 'loginsPerCpuSecond')),
        clientCpuMsPerLogin: round(med(setUp, 'clientCpuMsPerLogin'), 3),
        // Over the baseline in the same round, then the median.
        rateRatio: round(median(rounds.map((r) => r[setUp].rate / r.workers1.rate)), 3),
        perCpuRatio: round(median(rounds.map((r) => r[setUp].loginsPerCpuSecond / r.workers1.loginsPerCpuSecond)), 3),
      },
    ]),
  ) as Record<SetUp, { rate: number; gateCpuMsPerLogin: number; haproxyCpuMsPerLogin: number; loginsPerCpuSecond: number; clientCpuMsPerLogin: number; rateRatio: number; perCpuRatio: number }>;
  const result = {
    bench: 'cluster',
    cores: cpus().length,
    concurrency: CONCURRENCY,
    rounds: ROUNDS,
    seconds: SECONDS,
    ...summary,
    replicas2over1: {
      rate: round(median(rounds.map((r) => r.haproxy2.rate / r.haproxy1.rate)), 3),
      loginsPerCpuSecond: round(median(rounds.map((r) => r.haproxy2.loginsPerCpuSecond / r.haproxy1.loginsPerCpuSecond)), 3),
    },
    failed: rounds.reduce((n, r) => n + SETUPS.reduce((m, s) => m + r[s].failed, 0), 0),
    errors: [...new Set(rounds.flatMap((r) => SETUPS.map((s) => r[s].errors)).filter(Boolean))],
    machine: machineLine(before, machine().loadavg),
  };
  if (JSON_OUTPUT) {
    process.stdout.write(`${JSON.stringify(result, null, 2)}\n`);
    return;
  }
  const out = [
    `Workers and replicas: instant backend, XOAUTH2 (cached token), ${CONCURRENCY} at a time, ${ROUNDS} rounds of ${SECONDS} s per set-up`,
    '',
    ...table([
      ['', 'logins/s', 'vs baseline', 'sasl-gate CPU ms/login', 'HAProxy CPU ms/login', 'logins per CPU-second', 'vs baseline', 'load client CPU ms/login'],
      ...SETUPS.map((s) => [
        LABELS[s],
        String(summary[s].rate),
        `${fmtRatio(summary[s].rateRatio)}x`,
        String(summary[s].gateCpuMsPerLogin),
        String(summary[s].haproxyCpuMsPerLogin),
        String(summary[s].loginsPerCpuSecond),
        `${fmtRatio(summary[s].perCpuRatio)}x`,
        String(summary[s].clientCpuMsPerLogin),
      ]),
    ]),
    '',
    `2 replicas / 1 replica behind HAProxy: logins/s ${fmtRatio(result.replicas2over1.rate)}x, logins per CPU-second ${fmtRatio(result.replicas2over1.loginsPerCpuSecond)}x`,
    `failed logins: ${result.failed}${result.errors.length ? ` (${result.errors.join('; ')})` : ''}`,
    result.machine,
  ];
  process.stdout.write(`${out.join('\n')}\n`);
});

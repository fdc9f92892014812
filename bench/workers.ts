/**
 * Every core: sasl-gate with `workers: 1` against `workers: 2`, both in front of the same instant
 * backend, in one run.
 *
 *   npx vite-node bench/workers.ts            # table on stdout, progress on stderr
 *   npx vite-node bench/workers.ts --json     # one JSON object on stdout
 *   options: --rounds N (3), --seconds S per sample (4), --concurrency N (8)
 *
 * Each sample is `sasl-gate load imap-login --mech xoauth2 --concurrency N` for S seconds against
 * one of the two instances (the other is idle), alternating which goes first per round. Measured:
 * logins per second, and the CPU seconds of the whole instance (the process tree: supervisor and
 * workers, from /proc) per login, so logins per CPU-second. Ratios are workers 2 over workers 1
 * within the same round, then the median. The load client runs in this process, on the same
 * machine: its CPU is shown too, because on a small machine it competes with the workers.
 */
import { cpus } from 'node:os';
import { JSON_OUTPUT, args, fmtRatio, machine, machineLine, median, numberOption, ownCpuSeconds, progress, round, runBench, sig3, table, treeCpuSeconds } from './lib/common.js';
import { startGateProcess, type GateProcess } from './lib/gate.js';
import { startInstantBackend } from './lib/instant-backend.js';
import { certificate, errorsOf, gateConfig, harness, scratchDir, startBenchIdp, tokensFor, usersFile } from './lib/stack.js';

const ROUNDS = numberOption(args, '--rounds', 3, 1, 50);
const SECONDS = numberOption(args, '--seconds', 4, 2, 60);
const CONCURRENCY = numberOption(args, '--concurrency', 8, 2, 1000);

interface Sample {
  rate: number;
  ok: number;
  failed: number;
  /** Instance CPU ms per login (supervisor and workers). */
  cpuMsPerLogin: number;
  /** Logins per CPU-second of the instance. */
  loginsPerCpuSecond: number;
  /** The load client's CPU ms per login. */
  clientCpuMsPerLogin: number;
  errors: string;
}

runBench('workers', 10 * 60_000, async () => {
  const before = machine();
  progress('starting the instant backend, the development IdP, and sasl-gate with workers 1 and workers 2 ...');
  const cert = await certificate();
  const backend = await startInstantBackend();
  const idp = await startBenchIdp();
  const scratch = scratchDir('workers');
  const tokens = await tokensFor(idp);
  const users = usersFile(scratch, 'tokens.tsv', tokens.map((t) => ({ user: t.user, secret: t.token })));
  const base = gateConfig(cert, backend, idp, { log: { level: 'warn' } });
  const gates: Record<'one' | 'two', GateProcess> = {
    one: await startGateProcess({ config: { ...base, workers: 1 } }),
    two: await startGateProcess({ config: { ...base, workers: 2 } }),
  };
  const sample = async (gate: GateProcess, seconds: number): Promise<Sample> => {
    const g0 = treeCpuSeconds(gate.pid);
    const h0 = ownCpuSeconds();
    const r = await harness(['imap-login', '--target', `imaps://127.0.0.1:${gate.port}`, '--mech', 'xoauth2', '--users', users, '--ca', cert.caPath, '--concurrency', String(CONCURRENCY), '--duration', String(seconds)]);
    const cpu = treeCpuSeconds(gate.pid) - g0;
    const ok = Math.max(1, r.ok);
    return {
      rate: r.ratePerSecond,
      ok: r.ok,
      failed: r.failed,
      cpuMsPerLogin: (cpu * 1000) / ok,
      loginsPerCpuSecond: r.ok / Math.max(cpu, 1e-6),
      clientCpuMsPerLogin: ((ownCpuSeconds() - h0) * 1000) / ok,
      errors: errorsOf(r),
    };
  };
  progress('warming up (2 s each) ...');
  await sample(gates.one, 2);
  await sample(gates.two, 2);
  const rounds: Array<{ one: Sample; two: Sample }> = [];
  for (let i = 0; i < ROUNDS; i++) {
    const order: Array<'one' | 'two'> = i % 2 === 0 ? ['one', 'two'] : ['two', 'one'];
    const round: Partial<Record<'one' | 'two', Sample>> = {};
    for (const side of order) {
      round[side] = await sample(gates[side], SECONDS);
      progress(`round ${i + 1}/${ROUNDS} workers ${side === 'one' ? 1 : 2}: ${round[side]!.rate.toFixed(0)} logins/s, ${round[side]!.cpuMsPerLogin.toFixed(2)} ms CPU per login, ${round[side]!.failed} failed`);
    }
    rounds.push(round as { one: Sample; two: Sample });
  }
  await Promise.all([gates.one.stop(), gates.two.stop()]);
  backend.stop();
  await idp.close();

  const med = (side: 'one' | 'two', key: keyof Omit<Sample, 'errors'>) => median(rounds.map((r) => r[side][key]));
  const result = {
    bench: 'workers',
    cores: cpus().length,
    concurrency: CONCURRENCY,
    rounds: ROUNDS,
    seconds: SECONDS,
    workers1: { rate: sig3(med('one', 'rate')), cpuMsPerLogin: round(med('one', 'cpuMsPerLogin'), 3), loginsPerCpuSecond: sig3(med('one', 'loginsPerCpuSecond')), clientCpuMsPerLogin: round(med('one', 'clientCpuMsPerLogin'), 3) },
    workers2: { rate: sig3(med('two', 'rate')), cpuMsPerLogin: round(med('two', 'cpuMsPerLogin'), 3), loginsPerCpuSecond: sig3(med('two', 'loginsPerCpuSecond')), clientCpuMsPerLogin: round(med('two', 'clientCpuMsPerLogin'), 3) },
    ratios: {
      rate: round(median(rounds.map((r) => r.two.rate / r.one.rate)), 3),
      loginsPerCpuSecond: round(median(rounds.map((r) => r.two.loginsPerCpuSecond / r.one.loginsPerCpuSecond)), 3),
    },
    failed: rounds.reduce((n, r) => n + r.one.failed + r.two.failed, 0),
    errors: [...new Set(rounds.flatMap((r) => [r.one.errors, r.two.errors]).filter(Boolean))],
    machine: machineLine(before, machine().loadavg),
  };
  if (JSON_OUTPUT) {
    process.stdout.write(`${JSON.stringify(result, null, 2)}\n`);
    return;
  }
  const out = [
    `Every core: sasl-gate workers 1 vs workers 2, instant backend, XOAUTH2 (cached token), ${CONCURRENCY} at a time, ${ROUNDS} rounds of ${SECONDS} s`,
    '',
    ...table([
      ['', 'logins/s', 'instance CPU ms/login', 'logins per CPU-second', 'load client CPU ms/login'],
      ['workers 1', String(result.workers1.rate), String(result.workers1.cpuMsPerLogin), String(result.workers1.loginsPerCpuSecond), String(result.workers1.clientCpuMsPerLogin)],
      ['workers 2', String(result.workers2.rate), String(result.workers2.cpuMsPerLogin), String(result.workers2.loginsPerCpuSecond), String(result.workers2.clientCpuMsPerLogin)],
    ]),
    '',
    `workers 2 / workers 1: logins/s ${fmtRatio(result.ratios.rate)}x, logins per CPU-second ${fmtRatio(result.ratios.loginsPerCpuSecond)}x`,
    `failed logins: ${result.failed}${result.errors.length ? ` (${result.errors.join('; ')})` : ''}`,
    result.machine,
  ];
  process.stdout.write(`${out.join('\n')}\n`);
});

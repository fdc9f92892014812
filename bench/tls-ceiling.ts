/**
 * The ceiling: sasl-gate with an instant backend, against the raw TLS handshake rate of
 * `openssl s_server` measured with `openssl s_time`, all with the same certificate and key, in one
 * run.
 *
 *   npx vite-node bench/tls-ceiling.ts            # table on stdout, progress on stderr
 *   npx vite-node bench/tls-ceiling.ts --json     # one JSON object on stdout
 *   options: --rounds N (5), --seconds S per sample (5), --concurrency N (8), --profile, --use-dist
 *
 * Samples per round, in a rotating order:
 *   s_time -> s_server     `openssl s_time -connect ... -new -time S`: full handshakes, one after
 *                          another, against `openssl s_server` (the baseline: TLS and nothing else);
 *   s_time -> sasl-gate    the same client against sasl-gate: handshake (sasl-gate queues its greeting
 *                          as the handshake completes), close;
 *   login, 1 at a time     `sasl-gate load imap-login --mech xoauth2 --concurrency 1` against sasl-gate
 *                          in front of an instant backend (a Node process that answers ID, the master
 *                          login and LOGOUT at once): connect, TLS, greeting, AUTHENTICATE (the token is
 *                          in sasl-gate's cache after the first login), backend login, LOGOUT;
 *   login, concurrency N   the same with N at a time, so that sasl-gate's one thread is saturated;
 *   app password, 1 / N    the same two with `--mech plain` and an app password per user (made
 *                          before the start in the gate's storage.dir, appPasswords.enabled): the
 *                          lookup and HMAC of the password instead of the (cached) token, then the
 *                          same master login. Its cost against the token login's is the ratio of
 *                          the token login rate over the app-password rate of the same round.
 * Ratios are per round against the s_server sample of the same round, then the median. The CPU
 * time each server used per connection is measured too (/proc): it is less moved by the load of
 * other processes than the rates.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { loadavg } from 'node:os';
import { performance } from 'node:perf_hooks';
import {
  JSON_OUTPUT,
  args,
  fmtRatio,
  machine,
  machineLine,
  median,
  numberOption,
  onCleanup,
  ownCpuSeconds,
  processCpuSeconds,
  progress,
  round,
  runBench,
  sig3,
  sleep,
  table,
} from './lib/common.js';
import { freePort } from '../tools/ports.js';
import { gateCommandNote, startGateProcess } from './lib/gate.js';
import { startInstantBackend } from './lib/instant-backend.js';
import { profileText, summarizeProfile } from './lib/profile.js';
import { certificate, errorsOf, gateConfig, harness, scratchDir, startBenchIdp, tokensFor, usersFile } from './lib/stack.js';
import { openAppPasswordService } from '../src/auth/app-passwords-sqlite.js';

const ROUNDS = numberOption(args, '--rounds', 5, 1, 50);
const SECONDS = numberOption(args, '--seconds', 5, 2, 60);
const CONCURRENCY = numberOption(args, '--concurrency', 8, 2, 1000);
const PROFILE = args.includes('--profile');
const OPENSSL = '/usr/bin/openssl';

type Side = 'sServer' | 'sTimeGate' | 'login1' | 'loginN' | 'appLogin1' | 'appLoginN';
const LABELS: Record<Side, string> = {
  sServer: 's_time -> openssl s_server (handshakes)',
  sTimeGate: 's_time -> sasl-gate (handshakes)',
  login1: 'sasl-gate login, instant backend, 1 at a time',
  loginN: `sasl-gate login, instant backend, ${CONCURRENCY} at a time`,
  appLogin1: 'app-password login, instant backend, 1 at a time',
  appLoginN: `app-password login, instant backend, ${CONCURRENCY} at a time`,
};

interface Sample {
  rate: number;
  count: number;
  /** Server CPU ms per connection (s_server, or sasl-gate). */
  serverCpuMs: number;
  /** Client CPU ms per connection (s_time, or the harness in this process). */
  clientCpuMs: number;
  p50?: number;
  p99?: number;
  failed: number;
  errors: string;
}

function run(file: string, argv: string[]): Promise<{ code: number | null; stdout: string; stderr: string; pid: number; cpu: number }> {
  return new Promise((resolve, reject) => {
    const child = spawn(file, argv, { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    let cpu = 0;
    // s_time is a child of ours: its CPU time is read just before it is reaped.
    const timer = setInterval(() => {
      const c = processCpuSeconds(child.pid!);
      if (Number.isFinite(c)) cpu = c;
    }, 50);
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.once('error', reject);
    child.once('exit', (code) => {
      clearInterval(timer);
      resolve({ code, stdout, stderr, pid: child.pid!, cpu });
    });
  });
}

async function startSServer(cert: { certPath: string; keyPath: string }): Promise<{ port: number; pid: number; child: ChildProcess }> {
  const port = await freePort('127.0.0.1');
  // stdin stays open (a pipe nobody writes to): s_server ends a connection when its stdin ends.
  const child = spawn(OPENSSL, ['s_server', '-accept', `127.0.0.1:${port}`, '-cert', cert.certPath, '-key', cert.keyPath, '-quiet'], {
    stdio: ['pipe', 'ignore', 'pipe'],
  });
  let stderr = '';
  child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  onCleanup(() => child.kill());
  const { connect } = await import('node:net');
  const deadline = Date.now() + 10_000;
  for (;;) {
    const ok = await new Promise<boolean>((resolve) => {
      const s = connect({ host: '127.0.0.1', port }, () => (s.destroy(), resolve(true)));
      s.once('error', () => resolve(false));
    });
    if (ok) break;
    if (child.exitCode !== null || Date.now() > deadline) throw new Error(`openssl s_server did not start: ${stderr}`);
    await sleep(50);
  }
  return { port, pid: child.pid!, child };
}

runBench('tls-ceiling', 10 * 60_000, async () => {
  const before = machine();
  const started = performance.now();
  progress('starting openssl s_server, the instant backend, the development IdP and sasl-gate (same certificate) ...');
  const cert = await certificate();
  const opensslVersion = (await run(OPENSSL, ['version'])).stdout.trim();
  const sServer = await startSServer(cert);
  const backend = await startInstantBackend();
  const idp = await startBenchIdp();
  const profileDir = PROFILE ? scratchDir('profile') : undefined;
  const scratch = scratchDir('tls-ceiling');
  const tokens = await tokensFor(idp);
  // One app password per token user, made in the storage.dir the gate will open (same generated key).
  const storageDir = `${scratch}/state`;
  const store = openAppPasswordService({ dir: storageDir, keyFile: undefined, defaultProtocols: ['imap'], maxPerUser: 10, lastUseWriteSeconds: 300 });
  const appPasswords = [];
  for (const { user } of tokens) appPasswords.push({ user, secret: (await store.create({ user, label: 'bench', createdBy: 'admin' })).password });
  await store.close();
  const gate = await startGateProcess({
    config: { ...gateConfig(cert, backend, idp), storage: { dir: storageDir }, appPasswords: { enabled: true } },
    ...(profileDir ? { cpuProfileDir: profileDir } : {}),
  });
  const users = usersFile(scratch, 'tokens.tsv', tokens.map((t) => ({ user: t.user, secret: t.token })));
  const appUsers = usersFile(scratch, 'app-passwords.tsv', appPasswords);
  const gateTarget = `imaps://127.0.0.1:${gate.port}`;

  const sTime = async (port: number, serverPid: number, seconds: number): Promise<Sample> => {
    const s0 = processCpuSeconds(serverPid);
    const t0 = performance.now();
    const r = await run(OPENSSL, ['s_time', '-connect', `127.0.0.1:${port}`, '-new', '-time', String(seconds), '-CAfile', cert.caPath]);
    const wall = (performance.now() - t0) / 1000;
    const match = /(\d+) connections in [\d.]+s;/.exec(r.stdout);
    if (r.code !== 0 || !match) throw new Error(`openssl s_time failed (${r.code}): ${r.stdout}${r.stderr}`);
    const count = Number(match[1]);
    return {
      rate: count / wall,
      count,
      serverCpuMs: ((processCpuSeconds(serverPid) - s0) * 1000) / count,
      clientCpuMs: (r.cpu * 1000) / count,
      failed: 0,
      errors: '',
    };
  };
  const login = async (concurrency: number, seconds: number, credential: 'token' | 'app_password' = 'token'): Promise<Sample> => {
    const g0 = gate.cpuSeconds();
    const h0 = ownCpuSeconds();
    const [mech, file] = credential === 'token' ? ['xoauth2', users] : ['plain', appUsers];
    const r = await harness(['imap-login', '--target', gateTarget, '--mech', mech, '--users', file, '--ca', cert.caPath, '--concurrency', String(concurrency), '--duration', String(seconds)]);
    return {
      rate: r.ratePerSecond,
      count: r.ok,
      serverCpuMs: ((gate.cpuSeconds() - g0) * 1000) / Math.max(1, r.ok),
      clientCpuMs: ((ownCpuSeconds() - h0) * 1000) / Math.max(1, r.ok),
      p50: r.latencyMs.p50,
      p99: r.latencyMs.p99,
      failed: r.failed,
      errors: errorsOf(r),
    };
  };
  const measure = (side: Side, seconds = SECONDS): Promise<Sample> => {
    switch (side) {
      case 'sServer':
        return sTime(sServer.port, sServer.pid, seconds);
      case 'sTimeGate':
        return sTime(gate.port, gate.pid, seconds);
      case 'login1':
        return login(1, seconds);
      case 'loginN':
        return login(CONCURRENCY, seconds);
      case 'appLogin1':
        return login(1, seconds, 'app_password');
      case 'appLoginN':
        return login(CONCURRENCY, seconds, 'app_password');
    }
  };

  progress('checking a login through sasl-gate to the instant backend, and warming up (2 s each) ...');
  const check = await login(1, 1);
  if (check.count === 0 || check.failed > 0) throw new Error(`logins through sasl-gate failed: ${check.errors}`);
  const appCheck = await login(1, 1, 'app_password');
  if (appCheck.count === 0 || appCheck.failed > 0) throw new Error(`app-password logins through sasl-gate failed: ${appCheck.errors}`);
  const sides: Side[] = ['sServer', 'sTimeGate', 'login1', 'loginN', 'appLogin1', 'appLoginN'];
  for (const side of sides) await measure(side, 2);

  const samples: Record<Side, Sample[]> = { sServer: [], sTimeGate: [], login1: [], loginN: [], appLogin1: [], appLoginN: [] };
  for (let r = 0; r < ROUNDS; r++) {
    const order = sides.map((_, i) => sides[(i + r) % sides.length]!);
    if (r % 2 === 1) order.reverse();
    for (const side of order) {
      const s = await measure(side);
      samples[side].push(s);
      progress(
        `round ${r + 1}/${ROUNDS} ${LABELS[side].padEnd(46)} ${s.rate.toFixed(1).padStart(7)}/s  server CPU ${s.serverCpuMs.toFixed(3)} ms/conn` +
          `${s.failed ? `  FAILED ${s.failed}: ${s.errors}` : ''}`,
      );
    }
  }
  const backendLogins = await backend.logins();
  await gate.stop();
  const profiles = gate.profiles().map((f) => summarizeProfile(f));
  const after = loadavg();

  const vs = (side: Side) => sig3(median(samples[side].map((s, i) => s.rate / samples.sServer[i]!.rate)));
  const cpuVs = (side: Side) => sig3(median(samples[side].map((s, i) => samples.sServer[i]!.serverCpuMs / s.serverCpuMs)));
  const summary = (side: Side) => {
    const list = samples[side];
    return {
      label: LABELS[side],
      perSecond: round(median(list.map((s) => s.rate)), 1),
      minPerSecond: round(Math.min(...list.map((s) => s.rate)), 1),
      maxPerSecond: round(Math.max(...list.map((s) => s.rate)), 1),
      connections: list.reduce((a, s) => a + s.count, 0),
      failed: list.reduce((a, s) => a + s.failed, 0),
      serverCpuMsPerConnection: round(median(list.map((s) => s.serverCpuMs)), 3),
      clientCpuMsPerConnection: round(median(list.map((s) => s.clientCpuMs)), 3),
      ...(list[0]?.p50 === undefined ? {} : { p50Ms: round(median(list.map((s) => s.p50!)), 2), p99Ms: round(median(list.map((s) => s.p99!)), 2) }),
      vsSServerRate: vs(side),
      /** s_server's CPU per handshake over this side's server CPU per connection: the rate ratio if CPU were the only limit. */
      vsSServerCpu: cpuVs(side),
    };
  };
  const results = Object.fromEntries(sides.map((s) => [s, summary(s)])) as Record<Side, ReturnType<typeof summary>>;
  /** An app-password login's cost over a token login's, per round (rate, and sasl-gate CPU per login), then the median. */
  const costVsToken = (app: Side, token: Side) => ({
    byRate: sig3(median(samples[app].map((s, i) => samples[token][i]!.rate / s.rate))),
    byServerCpu: sig3(median(samples[app].map((s, i) => s.serverCpuMs / samples[token][i]!.serverCpuMs))),
  });
  const appPasswordCost = { concurrent: costVsToken('appLoginN', 'loginN'), sequential: costVsToken('appLogin1', 'login1') };
  const appPasswordTarget = 1.2;
  const target = 0.9;
  const failures = sides.flatMap((s) => samples[s].filter((x) => x.failed > 0).map((x) => `${LABELS[s]}: ${x.errors}`));
  const result = {
    benchmark: 'tls-ceiling',
    machine: before,
    loadavgAfter: after.map((l) => round(l, 2)),
    openssl: opensslVersion,
    certificate: 'ECDSA P-256 (the development certificate), TLS 1.3, the same files for s_server and sasl-gate',
    gate: gateCommandNote(),
    rounds: ROUNDS,
    secondsPerSample: SECONDS,
    concurrency: CONCURRENCY,
    results,
    ratio: results.loginN.vsSServerRate,
    ratios: {
      loginConcurrentVsSServer: results.loginN.vsSServerRate,
      loginSequentialVsSServer: results.login1.vsSServerRate,
      handshakesVsSServer: results.sTimeGate.vsSServerRate,
      loginConcurrentVsSServerByCpu: results.loginN.vsSServerCpu,
      handshakesVsSServerByCpu: results.sTimeGate.vsSServerCpu,
    },
    target,
    targetMet: results.loginN.vsSServerRate >= target,
    appPasswordCostVsToken: appPasswordCost,
    appPasswordTarget,
    appPasswordTargetMet: appPasswordCost.concurrent.byRate <= appPasswordTarget,
    backendLogins,
    failures,
    profiles,
    elapsedSeconds: round((performance.now() - started) / 1000, 1),
  };
  if (JSON_OUTPUT) {
    process.stdout.write(`${JSON.stringify(result, null, 2)}\n`);
    return;
  }
  const out: string[] = [];
  out.push('The TLS ceiling: sasl-gate with an instant backend vs openssl s_server, same certificate');
  out.push(machineLine(before, after));
  out.push(`${opensslVersion}; ${result.certificate}; gate: ${gateCommandNote()}`);
  out.push(`${ROUNDS} rounds x ${sides.length} samples of ${SECONDS} s; rates and CPU: medians of the rounds; ratios: medians of the per-round ratios against s_server`);
  out.push('');
  const rows = [['', 'per second', 'min..max', 'server CPU ms/conn', 'client CPU ms/conn', 'p50 ms', 'vs s_server', 'by server CPU']];
  for (const side of sides) {
    const r = results[side];
    rows.push([
      r.label,
      r.perSecond.toFixed(1),
      `${r.minPerSecond.toFixed(0)}..${r.maxPerSecond.toFixed(0)}`,
      r.serverCpuMsPerConnection.toFixed(3),
      r.clientCpuMsPerConnection.toFixed(3),
      'p50Ms' in r ? (r.p50Ms as number).toFixed(2) : '',
      side === 'sServer' ? '1x' : `${fmtRatio(r.vsSServerRate)}x`,
      side === 'sServer' ? '1x' : `${fmtRatio(r.vsSServerCpu)}x`,
    ]);
  }
  out.push(...table(rows));
  out.push('');
  out.push(
    `sasl-gate full logins (instant backend, ${CONCURRENCY} at a time) = ${fmtRatio(result.ratios.loginConcurrentVsSServer)}x s_server's handshake rate ` +
      `(target >= ${target}x: ${result.targetMet ? 'met' : 'NOT met'}); by server CPU per connection: ${fmtRatio(result.ratios.loginConcurrentVsSServerByCpu)}x`,
  );
  out.push(`sasl-gate logins one at a time = ${fmtRatio(result.ratios.loginSequentialVsSServer)}x; bare handshakes with s_time = ${fmtRatio(result.ratios.handshakesVsSServer)}x (by CPU ${fmtRatio(result.ratios.handshakesVsSServerByCpu)}x)`);
  out.push(
    `app-password login cost vs token login (${CONCURRENCY} at a time) = ${fmtRatio(appPasswordCost.concurrent.byRate)}x by rate, ` +
      `${fmtRatio(appPasswordCost.concurrent.byServerCpu)}x by sasl-gate CPU per login (target <= ${appPasswordTarget}x: ${result.appPasswordTargetMet ? 'met' : 'NOT met'}); ` +
      `1 at a time: ${fmtRatio(appPasswordCost.sequential.byRate)}x by rate, ${fmtRatio(appPasswordCost.sequential.byServerCpu)}x by CPU`,
  );
  out.push(`instant backend logins: ${backendLogins}`);
  if (failures.length) out.push(`failures: ${failures.join(' | ')}`);
  for (const p of profiles) out.push('', ...profileText(p));
  out.push(`run took ${result.elapsedSeconds} s`);
  process.stdout.write(`${out.join('\n')}\n`);
});

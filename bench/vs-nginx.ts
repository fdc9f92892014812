/**
 * PLAIN pass-through logins through sasl-gate, against nginx's mail proxy (libnginx-mod-mail with
 * an `auth_http` endpoint) and against Dovecot directly, all in front of the same Dovecot, in one
 * run.
 *
 *   npx vite-node bench/vs-nginx.ts            # table on stdout, progress on stderr
 *   npx vite-node bench/vs-nginx.ts --json     # one JSON object on stdout
 *   options: --rounds N (5), --seconds S per sample (5), --concurrency N (8), --profile, --use-dist
 *
 * Every side is driven by the same harness (`sasl-gate load imap-login --mech plain`: connect +
 * TLS + greeting + AUTHENTICATE PLAIN + LOGOUT) with the same users, concurrency and duration:
 *   sasl-gate      IMAPS, PLAIN forwarded as sent to Dovecot's plain IMAP listener;
 *   nginx          IMAPS (2 workers, as many as CPUs), asks the auth_http endpoint (a Node process
 *                  that says OK and names Dovecot), then LOGINs to Dovecot's plain IMAP listener;
 *   Dovecot TLS    Dovecot's own IMAPS listener: the same TLS work, no proxy hop;
 *   Dovecot plain  Dovecot's plain IMAP listener, no TLS at all (a reference, not a fair baseline).
 * Four samples per round in a rotating order; ratios are per round, then the median.
 */
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
  ownCpuSeconds,
  progress,
  round,
  runBench,
  sig3,
  table,
  treeCpuSeconds,
} from './lib/common.js';
import { gateCommandNote, startGateProcess } from './lib/gate.js';
import { nginxVersion, startAuthHttp, startNginx } from './lib/nginx.js';
import { profileText, summarizeProfile } from './lib/profile.js';
import { certificate, errorsOf, gateConfig, harness, passwordsFile, scratchDir, startBenchDovecot, startBenchIdp, usersFile } from './lib/stack.js';

const ROUNDS = numberOption(args, '--rounds', 5, 1, 50);
const SECONDS = numberOption(args, '--seconds', 5, 1, 60);
const CONCURRENCY = numberOption(args, '--concurrency', 8, 1, 1000);
const PROFILE = args.includes('--profile');

type Side = 'gate' | 'nginx' | 'dovecotTls' | 'dovecotPlain';
const LABELS: Record<Side, string> = {
  gate: 'sasl-gate (IMAPS) -> Dovecot',
  nginx: 'nginx mail proxy (IMAPS) -> Dovecot',
  dovecotTls: 'Dovecot IMAPS directly',
  dovecotPlain: 'Dovecot plain IMAP directly (no TLS)',
};

interface Sample {
  rate: number;
  ok: number;
  failed: number;
  p50: number;
  p99: number;
  errors: string;
  /** CPU ms per login of the proxy (sasl-gate, or nginx + its auth_http process), Dovecot, the harness. */
  cpuProxyMs: number;
  cpuDovecotMs: number;
  cpuHarnessMs: number;
}

runBench('vs-nginx', 10 * 60_000, async () => {
  const before = machine();
  const started = performance.now();
  progress('starting Dovecot (IMAP + IMAPS), sasl-gate, the auth_http endpoint and nginx ...');
  const cert = await certificate();
  const dovecot = await startBenchDovecot({ tls: { cert: cert.certPath, key: cert.keyPath } });
  const backend = { host: dovecot.host, port: dovecot.imapPort };
  const profileDir = PROFILE ? scratchDir('profile') : undefined;
  // PLAIN only: the provider is never asked about a token, but sasl-gate starts as configured for real.
  const idp = await startBenchIdp();
  const gate = await startGateProcess({
    config: gateConfig(cert, backend, idp),
    ...(profileDir ? { cpuProfileDir: profileDir } : {}),
  });
  const auth = await startAuthHttp(backend);
  const nginx = await startNginx({ cert, authPort: auth.port, workers: 2 });
  const version = await nginxVersion();
  const users = passwordsFile(scratchDir('vs-nginx'));
  const targets: Record<Side, string> = {
    gate: `imaps://127.0.0.1:${gate.port}`,
    nginx: `imaps://127.0.0.1:${nginx.port}`,
    dovecotTls: `imaps://127.0.0.1:${dovecot.imapsPort}`,
    dovecotPlain: `imap://127.0.0.1:${dovecot.imapPort}`,
  };
  const common = ['--mech', 'plain', '--users', users, '--ca', cert.caPath];

  // Each side logs in, and each refuses a wrong password (Dovecot decides for all of them).
  progress('checking that every side logs in with the right password and not with a wrong one ...');
  const wrong = usersFile(scratchDir('wrong'), 'wrong.tsv', [{ user: 'alice@example.test', secret: 'not-the-password' }]);
  for (const side of Object.keys(targets) as Side[]) {
    const ok = await harness(['imap-login', '--target', targets[side], ...common, '--count', '4', '--concurrency', '1']);
    if (ok.ok !== 4) throw new Error(`${LABELS[side]}: logins failed: ${errorsOf(ok)}`);
    const bad = await harness(['imap-login', '--target', targets[side], '--mech', 'plain', '--users', wrong, '--ca', cert.caPath, '--count', '1']);
    if (bad.ok !== 0 || bad.errors.auth_rejected !== 1) throw new Error(`${LABELS[side]} accepted a wrong password: ${JSON.stringify(bad.errors)}`);
  }
  progress(`warming up (2 s each side, concurrency ${CONCURRENCY}) ...`);
  for (const side of Object.keys(targets) as Side[]) {
    await harness(['imap-login', '--target', targets[side], ...common, '--concurrency', String(CONCURRENCY), '--duration', '2']);
  }

  const proxyCpu = (side: Side): number =>
    side === 'gate' ? gate.cpuSeconds() : side === 'nginx' ? nginx.cpuSeconds() + treeCpuSeconds(auth.pid) : 0;
  const measure = async (side: Side): Promise<Sample> => {
    const p0 = proxyCpu(side);
    const d0 = treeCpuSeconds(dovecot.pid!);
    const h0 = ownCpuSeconds();
    const r = await harness(['imap-login', '--target', targets[side], ...common, '--concurrency', String(CONCURRENCY), '--duration', String(SECONDS)]);
    const per = (s: number) => (r.ok > 0 ? (s * 1000) / r.ok : NaN);
    return {
      rate: r.ratePerSecond,
      ok: r.ok,
      failed: r.failed,
      p50: r.latencyMs.p50,
      p99: r.latencyMs.p99,
      errors: errorsOf(r),
      cpuProxyMs: per(proxyCpu(side) - p0),
      cpuDovecotMs: per(treeCpuSeconds(dovecot.pid!) - d0),
      cpuHarnessMs: per(ownCpuSeconds() - h0),
    };
  };

  const sides: Side[] = ['gate', 'nginx', 'dovecotTls', 'dovecotPlain'];
  const samples: Record<Side, Sample[]> = { gate: [], nginx: [], dovecotTls: [], dovecotPlain: [] };
  for (let r = 0; r < ROUNDS; r++) {
    const order = sides.map((_, i) => sides[(i + r) % sides.length]!);
    if (r % 2 === 1) order.reverse();
    for (const side of order) {
      const s = await measure(side);
      samples[side].push(s);
      progress(
        `round ${r + 1}/${ROUNDS} ${LABELS[side].padEnd(38)} ${s.rate.toFixed(1).padStart(7)} logins/s  p50 ${s.p50.toFixed(1)} ms  p99 ${s.p99.toFixed(1)} ms` +
          `${s.failed ? `  FAILED ${s.failed}: ${s.errors}` : ''}`,
      );
    }
  }
  const authRequests = await auth.requests();
  const nginxErrors = nginx
    .errorLog()
    .split('\n')
    .filter((l) => /\[(error|crit|alert|emerg)\]/.test(l));
  await gate.stop();
  const profiles = gate.profiles().map((f) => summarizeProfile(f));
  const after = loadavg();
  const failures = sides.flatMap((s) => samples[s].filter((x) => x.failed > 0).map((x) => `${LABELS[s]}: ${x.errors}`));

  const vs = (side: Side, base: Side) => sig3(median(samples[side].map((s, i) => s.rate / samples[base][i]!.rate)));
  const vsP50 = (side: Side, base: Side) => sig3(median(samples[side].map((s, i) => s.p50 / samples[base][i]!.p50)));
  const summary = (side: Side) => {
    const list = samples[side];
    return {
      label: LABELS[side],
      loginsPerSecond: round(median(list.map((s) => s.rate)), 1),
      minLoginsPerSecond: round(Math.min(...list.map((s) => s.rate)), 1),
      maxLoginsPerSecond: round(Math.max(...list.map((s) => s.rate)), 1),
      logins: list.reduce((a, s) => a + s.ok, 0),
      failed: list.reduce((a, s) => a + s.failed, 0),
      p50Ms: round(median(list.map((s) => s.p50)), 2),
      p99Ms: round(median(list.map((s) => s.p99)), 2),
      cpuMsPerLogin: {
        proxy: round(median(list.map((s) => s.cpuProxyMs)), 3),
        dovecot: round(median(list.map((s) => s.cpuDovecotMs)), 3),
        harness: round(median(list.map((s) => s.cpuHarnessMs)), 3),
      },
      vsNginxRate: vs(side, 'nginx'),
      vsDovecotTlsRate: vs(side, 'dovecotTls'),
      vsNginxP50: vsP50(side, 'nginx'),
    };
  };
  const results = Object.fromEntries(sides.map((s) => [s, summary(s)])) as Record<Side, ReturnType<typeof summary>>;
  const result = {
    benchmark: 'vs-nginx',
    machine: before,
    loadavgAfter: after.map((l) => round(l, 2)),
    gate: gateCommandNote(),
    nginx: `${version}, 2 workers, libnginx-mod-mail, auth_http endpoint in a separate Node process`,
    rounds: ROUNDS,
    secondsPerSample: SECONDS,
    concurrency: CONCURRENCY,
    results,
    ratios: {
      gateVsNginx: results.gate.vsNginxRate,
      gateVsDovecotTls: results.gate.vsDovecotTlsRate,
      nginxVsDovecotTls: results.nginx.vsDovecotTlsRate,
      gateVsDovecotPlain: vs('gate', 'dovecotPlain'),
    },
    authHttpRequests: authRequests,
    nginxErrors: nginxErrors.slice(0, 5),
    failures,
    profiles,
    elapsedSeconds: round((performance.now() - started) / 1000, 1),
  };
  if (JSON_OUTPUT) {
    process.stdout.write(`${JSON.stringify(result, null, 2)}\n`);
    return;
  }
  const out: string[] = [];
  out.push('PLAIN logins: sasl-gate (pass-through) vs nginx mail proxy vs Dovecot directly, all to the same Dovecot');
  out.push(machineLine(before, after));
  out.push(`${ROUNDS} rounds x 4 samples of ${SECONDS} s, concurrency ${CONCURRENCY}, harness: sasl-gate load imap-login --mech plain (in this process)`);
  out.push(`gate: ${gateCommandNote()}; nginx: ${result.nginx}`);
  out.push('logins/s, p50, p99 and CPU: medians of the rounds; ratios: medians of the per-round ratios');
  out.push('');
  const rows = [['', 'logins/s', 'min..max', 'p50 ms', 'p99 ms', 'CPU ms/login proxy+dovecot (harness)', 'vs nginx', 'vs Dovecot TLS']];
  for (const side of sides) {
    const r = results[side];
    rows.push([
      r.label,
      r.loginsPerSecond.toFixed(1),
      `${r.minLoginsPerSecond.toFixed(0)}..${r.maxLoginsPerSecond.toFixed(0)}`,
      r.p50Ms.toFixed(1),
      r.p99Ms.toFixed(1),
      `${r.cpuMsPerLogin.proxy.toFixed(2)}+${r.cpuMsPerLogin.dovecot.toFixed(2)} (${r.cpuMsPerLogin.harness.toFixed(2)})`,
      `${fmtRatio(r.vsNginxRate)}x`,
      `${fmtRatio(r.vsDovecotTlsRate)}x`,
    ]);
  }
  out.push(...table(rows));
  out.push('');
  out.push(`sasl-gate = ${fmtRatio(result.ratios.gateVsNginx)}x nginx's login rate, ${fmtRatio(result.ratios.gateVsDovecotTls)}x Dovecot's own IMAPS (nginx: ${fmtRatio(result.ratios.nginxVsDovecotTls)}x Dovecot's IMAPS)`);
  out.push(`auth_http requests answered: ${authRequests}${nginxErrors.length ? `; nginx errors: ${nginxErrors.slice(0, 3).join(' | ')}` : ''}`);
  if (failures.length) out.push(`failures: ${failures.join(' | ')}`);
  for (const p of profiles) out.push('', ...profileText(p));
  out.push(`run took ${result.elapsedSeconds} s`);
  process.stdout.write(`${out.join('\n')}\n`);
});

/**
 * XOAUTH2 logins through sasl-gate to Dovecot, against Dovecot's own IMAPS with its `oauth2`
 * passdb validating the same JWTs locally (`introspection_mode = local`), in one run.
 *
 *   npx vite-node bench/vs-dovecot-oauth2.ts            # table on stdout, progress on stderr
 *   npx vite-node bench/vs-dovecot-oauth2.ts --json     # one JSON object on stdout
 *   options: --rounds N (6), --seconds S per sample (6), --concurrency N (8), --profile
 *            (sasl-gate under node --cpu-prof, top frames printed), --use-dist
 *
 * One Dovecot serves both sides: its plain IMAP listener behind sasl-gate (master-user login) and
 * its IMAPS listener with the oauth2 passdb. Both are driven by the same harness (`sasl-gate load
 * imap-login --mech xoauth2`, connect + TLS + greeting + AUTHENTICATE + LOGOUT) with the same
 * concurrency and duration, on the same certificate. Three samples per round, in a rotating order:
 *   gate (same token)   the two users' tokens over and over: after the first login sasl-gate
 *                       answers from its token cache, as it does for a mail client that opens
 *                       many connections with one access token;
 *   gate (new tokens)   every login a token sasl-gate has not seen: the signature check each time;
 *   dovecot             Dovecot's own IMAPS + oauth2 passdb with the new tokens of the round
 *                       (Dovecot 2.3 keeps no token cache: it checks the signature every time).
 * Ratios are per round (gate / the Dovecot sample of the same round), then the median.
 */
import { performance } from 'node:perf_hooks';
import { loadavg } from 'node:os';
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
import { profileText, summarizeProfile } from './lib/profile.js';
import {
  certificate,
  dovecotKeys,
  errorsOf,
  gateConfig,
  harness,
  scratchDir,
  startBenchDovecot,
  startBenchIdp,
  tokensFor,
  usersFile,
  USERS,
} from './lib/stack.js';

const ROUNDS = numberOption(args, '--rounds', 6, 1, 50);
const SECONDS = numberOption(args, '--seconds', 6, 1, 60);
const CONCURRENCY = numberOption(args, '--concurrency', 8, 1, 1000);
const PROFILE = args.includes('--profile');
const MAX_TOKENS_PER_ROUND = 6000;

type Side = 'gateCached' | 'gateDistinct' | 'dovecot';
const LABELS: Record<Side, string> = {
  gateCached: 'sasl-gate -> Dovecot, same token',
  gateDistinct: 'sasl-gate -> Dovecot, new tokens',
  dovecot: 'Dovecot IMAPS + oauth2 passdb (local)',
};

interface Sample {
  rate: number;
  ok: number;
  failed: number;
  p50: number;
  p99: number;
  errors: string;
  /** CPU ms per successful login: sasl-gate, Dovecot (all its processes), the harness (this process). */
  cpuGateMs: number;
  cpuDovecotMs: number;
  cpuHarnessMs: number;
  /** Share of logins that used a token not used before in the run (gateDistinct). */
  distinctShare?: number;
}

runBench('vs-dovecot-oauth2', 10 * 60_000, async () => {
  const before = machine();
  const started = performance.now();
  progress('starting the development IdP, Dovecot (IMAP, IMAPS, oauth2 passdb) and sasl-gate ...');
  const cert = await certificate();
  const idp = await startBenchIdp();
  const dovecot = await startBenchDovecot({
    tls: { cert: cert.certPath, key: cert.keyPath },
    oauth2: { mode: 'local', keys: await dovecotKeys(idp), issuers: [idp.issuer], usernameAttribute: 'email' },
  });
  const profileDir = PROFILE ? scratchDir('profile') : undefined;
  const gate = await startGateProcess({
    config: gateConfig(cert, { host: dovecot.host, port: dovecot.imapPort }, idp),
    ...(profileDir ? { cpuProfileDir: profileDir } : {}),
  });
  const dir = scratchDir('vs-dovecot');
  const gateTarget = `imaps://127.0.0.1:${gate.port}`;
  const dovecotTarget = `imaps://127.0.0.1:${dovecot.imapsPort}`;
  const common = ['--mech', 'xoauth2', '--ca', cert.caPath];

  // Both sides must really check the tokens: a valid one passes, a forged and an expired one fail.
  progress('checking that both sides accept a valid token and refuse forged and expired ones ...');
  const valid = await tokensFor(idp);
  const forged = await idp.signToken(idp.claimsFor('alice'), { typ: 'JWT', key: 'foreign' });
  const expiredClaims = { ...idp.claimsFor('alice'), iat: Math.floor(Date.now() / 1000) - 7200, exp: Math.floor(Date.now() / 1000) - 3600 };
  const expired = await idp.signToken(expiredClaims, { typ: 'JWT' });
  const cachedFile = usersFile(dir, 'cached.tsv', valid.map((t) => ({ user: t.user, secret: t.token })));
  for (const [name, target] of [['sasl-gate', gateTarget], ['Dovecot', dovecotTarget]] as const) {
    const ok = await harness(['imap-login', '--target', target, ...common, '--users', cachedFile, '--count', '4', '--concurrency', '1']);
    if (ok.ok !== 4) throw new Error(`${name} refused valid tokens: ${errorsOf(ok)}`);
    for (const [what, token] of [['forged', forged], ['expired', expired]] as const) {
      const bad = usersFile(dir, `${what}.tsv`, [{ user: USERS[0]!.name, secret: token }]);
      const r = await harness(['imap-login', '--target', target, ...common, '--users', bad, '--count', '1', '--concurrency', '1']);
      if (r.ok !== 0 || r.errors.auth_rejected !== 1) throw new Error(`${name} did not refuse a ${what} token: ${JSON.stringify(r.errors)}`);
    }
  }

  // Warm-up, and an estimate of the rate to mint enough new tokens for each round.
  progress(`warming up (2 s each side, concurrency ${CONCURRENCY}) ...`);
  const warmGate = await harness(['imap-login', '--target', gateTarget, ...common, '--users', cachedFile, '--concurrency', String(CONCURRENCY), '--duration', '2']);
  const warmDovecot = await harness(['imap-login', '--target', dovecotTarget, ...common, '--users', cachedFile, '--concurrency', String(CONCURRENCY), '--duration', '2']);
  const estimate = Math.max(warmGate.ratePerSecond, warmDovecot.ratePerSecond);
  const perRound = Math.min(MAX_TOKENS_PER_ROUND, Math.max(400, Math.ceil(estimate * SECONDS * 2)));
  progress(`minting ${perRound} new tokens per round (${ROUNDS} rounds; about ${Math.round(estimate)} logins/s seen) ...`);
  const distinctFiles: string[] = [];
  for (let r = 0; r < ROUNDS; r++) {
    const tokens = await tokensFor(idp, Math.ceil(perRound / USERS.length));
    distinctFiles.push(usersFile(dir, `distinct-${r}.tsv`, tokens.map((t) => ({ user: t.user, secret: t.token }))));
  }

  const dovecotPid = dovecot.pid!;
  const measure = async (side: Side, round: number): Promise<Sample> => {
    const target = side === 'dovecot' ? dovecotTarget : gateTarget;
    const users = side === 'gateCached' ? cachedFile : distinctFiles[round]!;
    const g0 = gate.cpuSeconds();
    const d0 = treeCpuSeconds(dovecotPid);
    const h0 = ownCpuSeconds();
    const r = await harness(['imap-login', '--target', target, ...common, '--users', users, '--concurrency', String(CONCURRENCY), '--duration', String(SECONDS)]);
    const per = (s: number) => (r.ok > 0 ? (s * 1000) / r.ok : NaN);
    return {
      rate: r.ratePerSecond,
      ok: r.ok,
      failed: r.failed,
      p50: r.latencyMs.p50,
      p99: r.latencyMs.p99,
      errors: errorsOf(r),
      cpuGateMs: side === 'dovecot' ? 0 : per(gate.cpuSeconds() - g0),
      cpuDovecotMs: per(treeCpuSeconds(dovecotPid) - d0),
      cpuHarnessMs: per(ownCpuSeconds() - h0),
      ...(side === 'gateDistinct' ? { distinctShare: Math.min(1, perRound / Math.max(1, r.ok + r.failed)) } : {}),
    };
  };

  const sides: Side[] = ['gateCached', 'gateDistinct', 'dovecot'];
  const samples: Record<Side, Sample[]> = { gateCached: [], gateDistinct: [], dovecot: [] };
  for (let round = 0; round < ROUNDS; round++) {
    const order = sides.map((_, i) => sides[(i + round) % sides.length]!);
    if (round % 2 === 1) order.reverse();
    for (const side of order) {
      const s = await measure(side, round);
      samples[side].push(s);
      progress(
        `round ${round + 1}/${ROUNDS} ${LABELS[side].padEnd(38)} ${s.rate.toFixed(1).padStart(7)} logins/s  p50 ${s.p50.toFixed(1)} ms  p99 ${s.p99.toFixed(1)} ms` +
          `${s.failed ? `  FAILED ${s.failed}: ${s.errors}` : ''}`,
      );
    }
  }
  const failures = sides.flatMap((s) => samples[s].filter((x) => x.failed > 0).map((x) => `${LABELS[s]}: ${x.errors}`));

  await gate.stop();
  const profiles = gate.profiles().map((f) => summarizeProfile(f));
  const after = loadavg();

  const ratio = (side: Side, f: (a: Sample, b: Sample) => number) =>
    median(samples[side].map((s, i) => f(s, samples.dovecot[i]!)));
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
        saslGate: round(median(list.map((s) => s.cpuGateMs)), 3),
        dovecot: round(median(list.map((s) => s.cpuDovecotMs)), 3),
        harness: round(median(list.map((s) => s.cpuHarnessMs)), 3),
      },
      ...(side === 'gateDistinct' ? { distinctShare: round(median(list.map((s) => s.distinctShare ?? 0)), 3) } : {}),
      ...(side === 'dovecot'
        ? {}
        : {
            vsDovecotRate: sig3(ratio(side, (a, b) => a.rate / b.rate)),
            vsDovecotP50: sig3(ratio(side, (a, b) => a.p50 / b.p50)),
            vsDovecotP99: sig3(ratio(side, (a, b) => a.p99 / b.p99)),
            /** Dovecot's CPU per own login over (sasl-gate's + Dovecot's) per login through sasl-gate: the rate ratio if the servers' CPU were all that counted. */
            vsDovecotByServerCpu: sig3(ratio(side, (a, b) => b.cpuDovecotMs / (a.cpuGateMs + a.cpuDovecotMs))),
          }),
    };
  };
  const results = { gateCached: summary('gateCached'), gateDistinct: summary('gateDistinct'), dovecot: summary('dovecot') };
  const target = 1.0;
  const result = {
    benchmark: 'vs-dovecot-oauth2',
    machine: before,
    loadavgAfter: after.map((l) => round(l, 2)),
    gate: gateCommandNote(),
    dovecotValidation: 'introspection_mode = local (local_validation_key_dict = fs:posix, PEM per azp/alg/kid)',
    rounds: ROUNDS,
    secondsPerSample: SECONDS,
    concurrency: CONCURRENCY,
    tokensPerRound: perRound,
    results,
    ratio: results.gateCached.vsDovecotRate,
    ratioNewTokens: results.gateDistinct.vsDovecotRate,
    target,
    targetMet: (results.gateCached.vsDovecotRate ?? 0) >= target,
    failures,
    profiles,
    elapsedSeconds: round((performance.now() - started) / 1000, 1),
  };

  if (JSON_OUTPUT) {
    process.stdout.write(`${JSON.stringify(result, null, 2)}\n`);
    return;
  }
  const out: string[] = [];
  out.push(`XOAUTH2 logins: sasl-gate -> Dovecot vs Dovecot's own IMAPS + oauth2 passdb (local JWT validation)`);
  out.push(machineLine(before, after));
  out.push(
    `${ROUNDS} rounds x 3 samples of ${SECONDS} s, concurrency ${CONCURRENCY}, harness: sasl-gate load imap-login --mech xoauth2 (in this process); ` +
      `gate: ${gateCommandNote()}`,
  );
  out.push('logins/s, p50, p99 and CPU: medians of the rounds; vs Dovecot: median of the per-round ratios');
  out.push('');
  const rows = [['', 'logins/s', 'min..max', 'p50 ms', 'p99 ms', 'CPU ms/login gate+dovecot (harness)', 'vs Dovecot rate', 'p50 ratio', 'by server CPU']];
  for (const side of sides) {
    const r = results[side] as ReturnType<typeof summary>;
    rows.push([
      r.label,
      r.loginsPerSecond.toFixed(1),
      `${r.minLoginsPerSecond.toFixed(0)}..${r.maxLoginsPerSecond.toFixed(0)}`,
      r.p50Ms.toFixed(1),
      r.p99Ms.toFixed(1),
      `${r.cpuMsPerLogin.saslGate.toFixed(2)}+${r.cpuMsPerLogin.dovecot.toFixed(2)} (${r.cpuMsPerLogin.harness.toFixed(2)})`,
      r.vsDovecotRate === undefined ? '1x' : `${fmtRatio(r.vsDovecotRate)}x`,
      r.vsDovecotP50 === undefined ? '1x' : `${fmtRatio(r.vsDovecotP50)}x`,
      r.vsDovecotByServerCpu === undefined ? '1x' : `${fmtRatio(r.vsDovecotByServerCpu)}x`,
    ]);
  }
  out.push(...table(rows));
  out.push('');
  out.push(`sasl-gate (same token) = ${fmtRatio(result.ratio ?? NaN)}x Dovecot's own login rate (target >= ${target}x: ${result.targetMet ? 'met' : 'NOT met'})`);
  out.push(`sasl-gate (new token every login) = ${fmtRatio(result.ratioNewTokens ?? NaN)}x Dovecot's own login rate`);
  out.push(
    `by the servers' CPU per login (Dovecot alone vs sasl-gate + Dovecot): same token ${fmtRatio(results.gateCached.vsDovecotByServerCpu ?? NaN)}x, ` +
      `new tokens ${fmtRatio(results.gateDistinct.vsDovecotByServerCpu ?? NaN)}x`,
  );
  if (failures.length) out.push(`failures: ${failures.join(' | ')}`);
  for (const p of profiles) out.push('', ...profileText(p));
  out.push(`run took ${result.elapsedSeconds} s`);
  process.stdout.write(`${out.join('\n')}\n`);
});

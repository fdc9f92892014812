/**
 * Post-login FETCH throughput of a large mailbox through sasl-gate, against Dovecot directly, in
 * one run.
 *
 *   npx vite-node bench/fetch-throughput.ts            # table on stdout, progress on stderr
 *   npx vite-node bench/fetch-throughput.ts --json     # one JSON object on stdout
 *   options: --messages N (2000), --size BYTES (51200), --rounds N (7), --profile, --use-dist
 *
 * Set-up: N messages of about SIZE bytes are APPENDed to alice's INBOX (directly to Dovecot,
 * pipelined), then fetched once on each path to warm the page cache and Dovecot's indexes.
 * Each round, on a fresh connection per path (login not timed): `FETCH 1:* BODY.PEEK[]`, timed
 * from the command to the tagged OK, the client only counting bytes:
 *   sasl-gate     TLS to sasl-gate (XOAUTH2), sasl-gate's relay, plain TCP to Dovecot's imap process;
 *   Dovecot TLS   Dovecot's own IMAPS: its imap-login process relays the imap process's output
 *                 through TLS (the fair baseline: the same TLS work, one relay hop);
 *   Dovecot plain Dovecot's plain IMAP listener, no TLS, no relay (a reference).
 * The order rotates; ratios are per round, then the median. The client (this process) decrypts
 * on one thread for every path. sasl-gate's peak RSS during the FETCH shows whether backpressure
 * holds (the relay must not buffer the mailbox).
 */
import { loadavg } from 'node:os';
import { performance } from 'node:perf_hooks';
import { readFileSync } from 'node:fs';
import type { ImapClient } from '../src/load/imap.js';
import {
  JSON_OUTPUT,
  args,
  fmtRatio,
  machine,
  machineLine,
  median,
  numberOption,
  ownCpuSeconds,
  peakSampler,
  progress,
  round,
  runBench,
  sig3,
  table,
  treeCpuSeconds,
} from './lib/common.js';
import { gateCommandNote, startGateProcess } from './lib/gate.js';
import { connectImap, fetchAll, makeMessage, run } from './lib/imap-client.js';
import { profileText, summarizeProfile } from './lib/profile.js';
import { USERS, certificate, gateConfig, scratchDir, startBenchDovecot, startBenchIdp, tokensFor } from './lib/stack.js';

const MESSAGES = numberOption(args, '--messages', 2000, 1, 100_000);
const SIZE = numberOption(args, '--size', 51_200, 200, 50 * 1024 * 1024);
const ROUNDS = numberOption(args, '--rounds', 7, 1, 50);
const PROFILE = args.includes('--profile');
const MB = 1e6;

type Side = 'gate' | 'dovecotTls' | 'dovecotPlain';
const LABELS: Record<Side, string> = {
  gate: 'sasl-gate (TLS) -> Dovecot',
  dovecotTls: 'Dovecot IMAPS directly',
  dovecotPlain: 'Dovecot plain IMAP (no TLS)',
};

interface Sample {
  mbPerSecond: number;
  bytes: number;
  literalBytes: number;
  literals: number;
  seconds: number;
  cpuGateMsPerMB: number;
  cpuDovecotMsPerMB: number;
  cpuClientMsPerMB: number;
  gatePeakRssMiB: number;
}

runBench('fetch-throughput', 10 * 60_000, async () => {
  const before = machine();
  const started = performance.now();
  progress('starting Dovecot (IMAP + IMAPS), the development IdP and sasl-gate ...');
  const cert = await certificate();
  const ca = readFileSync(cert.caPath, 'utf8');
  const idp = await startBenchIdp();
  const dovecot = await startBenchDovecot({ tls: { cert: cert.certPath, key: cert.keyPath } });
  const profileDir = PROFILE ? scratchDir('profile') : undefined;
  const gate = await startGateProcess({
    config: gateConfig(cert, { host: dovecot.host, port: dovecot.imapPort }, idp),
    ...(profileDir ? { cpuProfileDir: profileDir } : {}),
  });
  const alice = USERS[0]!;
  const token = (await tokensFor(idp))[0]!.token;

  progress(`appending ${MESSAGES} messages of ${SIZE} bytes to ${alice.name}'s INBOX ...`);
  const appendStarted = performance.now();
  {
    const c = await connectImap({ host: dovecot.host, port: dovecot.imapPort, tls: false, timeoutMs: 300_000 });
    await c.authenticate('plain', { user: alice.name, secret: alice.password }, dovecot.host, dovecot.imapPort);
    const chunk = 50;
    for (let i = 0; i < MESSAGES; i += chunk) {
      const batch = Array.from({ length: Math.min(chunk, MESSAGES - i) }, (_, k) => makeMessage(i + k, SIZE));
      await c.appendAll('INBOX', batch);
    }
    const status = await run(c, 'STATUS INBOX (MESSAGES)');
    await c.logout();
    void status;
  }
  const appendSeconds = (performance.now() - appendStarted) / 1000;

  const open = async (side: Side): Promise<ImapClient> => {
    if (side === 'gate') {
      const c = await connectImap({ host: gate.host, port: gate.port, tls: true, ca, timeoutMs: 300_000 });
      await c.authenticate('xoauth2', { user: alice.name, secret: token }, gate.host, gate.port);
      return c;
    }
    const port = side === 'dovecotTls' ? dovecot.imapsPort! : dovecot.imapPort;
    const c = await connectImap({ host: dovecot.host, port, tls: side === 'dovecotTls', ca, timeoutMs: 300_000 });
    await c.authenticate('plain', { user: alice.name, secret: alice.password }, dovecot.host, port);
    return c;
  };
  const measure = async (side: Side): Promise<Sample> => {
    const c = await open(side);
    const selected = await run(c, 'EXAMINE INBOX');
    void selected;
    const g0 = gate.cpuSeconds();
    const d0 = treeCpuSeconds(dovecot.pid!);
    const h0 = ownCpuSeconds();
    const peak = peakSampler(() => gate.rss(), 20);
    const r = await fetchAll(c);
    const gatePeak = peak.stop();
    const mb = r.bytes / MB;
    const sample: Sample = {
      mbPerSecond: mb / r.seconds,
      bytes: r.bytes,
      literalBytes: r.literalBytes,
      literals: r.literals,
      seconds: r.seconds,
      cpuGateMsPerMB: side === 'gate' ? ((gate.cpuSeconds() - g0) * 1000) / mb : 0,
      cpuDovecotMsPerMB: ((treeCpuSeconds(dovecot.pid!) - d0) * 1000) / mb,
      cpuClientMsPerMB: ((ownCpuSeconds() - h0) * 1000) / mb,
      gatePeakRssMiB: gatePeak / 2 ** 20,
    };
    await c.logout();
    if (r.literals !== MESSAGES) throw new Error(`${LABELS[side]}: ${r.literals} messages fetched, not ${MESSAGES}`);
    return sample;
  };

  const sides: Side[] = ['gate', 'dovecotTls', 'dovecotPlain'];
  progress('warming up: one FETCH on each path ...');
  const gateRssBefore = gate.rss() / 2 ** 20;
  for (const side of sides) await measure(side);

  const samples: Record<Side, Sample[]> = { gate: [], dovecotTls: [], dovecotPlain: [] };
  for (let r = 0; r < ROUNDS; r++) {
    const order = sides.map((_, i) => sides[(i + r) % sides.length]!);
    if (r % 2 === 1) order.reverse();
    for (const side of order) {
      const s = await measure(side);
      samples[side].push(s);
      progress(
        `round ${r + 1}/${ROUNDS} ${LABELS[side].padEnd(30)} ${s.mbPerSecond.toFixed(1).padStart(7)} MB/s  (${(s.bytes / MB).toFixed(1)} MB in ${s.seconds.toFixed(2)} s)`,
      );
    }
  }
  await gate.stop();
  const profiles = gate.profiles().map((f) => summarizeProfile(f));
  const after = loadavg();

  const vs = (side: Side, base: Side) => sig3(median(samples[side].map((s, i) => s.mbPerSecond / samples[base][i]!.mbPerSecond)));
  const summary = (side: Side) => {
    const list = samples[side];
    return {
      label: LABELS[side],
      mbPerSecond: round(median(list.map((s) => s.mbPerSecond)), 1),
      minMbPerSecond: round(Math.min(...list.map((s) => s.mbPerSecond)), 1),
      maxMbPerSecond: round(Math.max(...list.map((s) => s.mbPerSecond)), 1),
      megabytesPerFetch: round(median(list.map((s) => s.bytes / MB)), 2),
      secondsPerFetch: round(median(list.map((s) => s.seconds)), 3),
      cpuMsPerMB: {
        saslGate: round(median(list.map((s) => s.cpuGateMsPerMB)), 2),
        dovecot: round(median(list.map((s) => s.cpuDovecotMsPerMB)), 2),
        client: round(median(list.map((s) => s.cpuClientMsPerMB)), 2),
      },
      ...(side === 'gate' ? { gatePeakRssMiB: round(Math.max(...list.map((s) => s.gatePeakRssMiB)), 1) } : {}),
      vsDovecotTls: vs(side, 'dovecotTls'),
      vsDovecotPlain: vs(side, 'dovecotPlain'),
    };
  };
  const results = Object.fromEntries(sides.map((s) => [s, summary(s)])) as Record<Side, ReturnType<typeof summary>>;
  const target = 0.9;
  const result = {
    benchmark: 'fetch-throughput',
    machine: before,
    loadavgAfter: after.map((l) => round(l, 2)),
    gate: gateCommandNote(),
    mailbox: { messages: MESSAGES, messageBytes: SIZE, appendSeconds: round(appendSeconds, 1) },
    rounds: ROUNDS,
    results,
    gateRssBeforeMiB: round(gateRssBefore, 1),
    ratio: results.gate.vsDovecotTls,
    ratioVsPlain: results.gate.vsDovecotPlain,
    target,
    targetMet: results.gate.vsDovecotTls >= target,
    profiles,
    elapsedSeconds: round((performance.now() - started) / 1000, 1),
  };
  if (JSON_OUTPUT) {
    process.stdout.write(`${JSON.stringify(result, null, 2)}\n`);
    return;
  }
  const out: string[] = [];
  out.push(`FETCH 1:* BODY.PEEK[] of ${MESSAGES} messages x ${SIZE} bytes: sasl-gate vs Dovecot directly`);
  out.push(machineLine(before, after));
  out.push(`gate: ${gateCommandNote()}; ${ROUNDS} rounds, one FETCH per path each; MB = 10^6 bytes received (literals and protocol)`);
  out.push('MB/s and CPU: medians of the rounds; ratios: medians of the per-round ratios');
  out.push('');
  const rows = [['', 'MB/s', 'min..max', 's/FETCH', 'CPU ms/MB gate+dovecot (client)', 'vs Dovecot TLS', 'vs plain']];
  for (const side of sides) {
    const r = results[side];
    rows.push([
      r.label,
      r.mbPerSecond.toFixed(1),
      `${r.minMbPerSecond.toFixed(0)}..${r.maxMbPerSecond.toFixed(0)}`,
      r.secondsPerFetch.toFixed(2),
      `${r.cpuMsPerMB.saslGate.toFixed(2)}+${r.cpuMsPerMB.dovecot.toFixed(2)} (${r.cpuMsPerMB.client.toFixed(2)})`,
      `${fmtRatio(r.vsDovecotTls)}x`,
      `${fmtRatio(r.vsDovecotPlain)}x`,
    ]);
  }
  out.push(...table(rows));
  out.push('');
  out.push(`sasl-gate = ${fmtRatio(result.ratio)}x Dovecot's own IMAPS (target >= ${target}x: ${result.targetMet ? 'met' : 'NOT met'}), ${fmtRatio(result.ratioVsPlain)}x Dovecot without TLS`);
  out.push(`sasl-gate RSS: ${result.gateRssBeforeMiB} MiB before the FETCHes, peak ${results.gate.gatePeakRssMiB} MiB during them (sampled every 20 ms)`);
  out.push(`mailbox filled in ${result.mailbox.appendSeconds} s`);
  for (const p of profiles) out.push('', ...profileText(p));
  out.push(`run took ${result.elapsedSeconds} s`);
  process.stdout.write(`${out.join('\n')}\n`);
});

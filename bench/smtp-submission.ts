/**
 * Message submission through sasl-gate against the same client straight to Postfix, in one run.
 *
 *   npm run bench:smtp                    # table on stdout, progress on stderr
 *   npm run bench:smtp -- --json          # one JSON object on stdout
 *   options: --rounds N (5), --small N (40 messages of 10 KB per connection),
 *            --large N (8 messages of 1 MB per connection), --per-connection N (all of them: one
 *            connection per path and size; 1 opens a connection per message, login not timed),
 *            --login master|xclient (master), --use-dist
 *
 * Set-up: a private Postfix 3.7 (delivering into Dovecot, but with delivery deferred so that only
 * submission is measured; the queue is emptied after each round), the development IdP, and
 * sasl-gate as its own process with an SMTPS listener. `--login master` (the recommended set-up)
 * logs into Postfix's PROXY v2 submission port with AUTH PLAIN as the master user; `xclient` uses
 * XCLIENT LOGIN= on the plain port. Each round, per path, one connection (login not timed) sends
 * N messages, each as MAIL/RCPT/DATA pipelined then the content, waiting for `250 queued`:
 *   sasl-gate     TLS to sasl-gate (XOAUTH2), sasl-gate's relay, plain TCP to Postfix;
 *   TLS pipe      the same TLS work and one relay hop with nothing else (bench/lib/tls-pipe.ts), AUTH PLAIN;
 *   Postfix       straight to Postfix's submission port, no TLS, AUTH PLAIN (the brief's baseline).
 * The order rotates; ratios are per round, then the median.
 */
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { loadavg } from 'node:os';
import { performance } from 'node:perf_hooks';
import { promisify } from 'node:util';
import { startPostfix } from '../tools/postfix.js';
import {
  JSON_OUTPUT,
  args,
  fmtRatio,
  machine,
  machineLine,
  median,
  numberOption,
  onCleanup,
  progress,
  round,
  runBench,
  sig3,
  table,
  treeCpuSeconds,
} from './lib/common.js';
import { gateCommandNote, startGateProcess } from './lib/gate.js';
import { makeSmtpMessage, SmtpBench } from './lib/smtp-client.js';
import { USERS, certificate, gateConfig, startBenchDovecot, startBenchIdp, tokensFor } from './lib/stack.js';
import { startTlsPipe } from './lib/tls-pipe.js';

const run = promisify(execFile);
const ROUNDS = numberOption(args, '--rounds', 5, 1, 50);
const SMALL = numberOption(args, '--small', 40, 1, 10_000);
const LARGE = numberOption(args, '--large', 8, 1, 1_000);
const PER_CONNECTION = numberOption(args, '--per-connection', 10_000, 1);
const LOGIN = args.includes('--login') ? args[args.indexOf('--login') + 1] : 'master';
if (LOGIN !== 'master' && LOGIN !== 'xclient') throw new Error('--login needs master or xclient');

type Side = 'gate' | 'pipe' | 'postfix';
const LABELS: Record<Side, string> = {
  gate: 'sasl-gate (TLS) -> Postfix',
  pipe: 'TLS pipe -> Postfix',
  postfix: 'Postfix submission directly',
};
const SIZES = [
  { name: '10 KB', bytes: 10_000, count: SMALL },
  { name: '1 MB', bytes: 1_000_000, count: LARGE },
] as const;

interface Sample {
  messagesPerSecond: number;
  seconds: number;
  cpuGateMs: number;
  cpuPostfixMs: number;
}

runBench('smtp-submission', 20 * 60_000, async () => {
  const before = machine();
  const started = performance.now();
  progress('starting Dovecot, Postfix, the development IdP, a TLS pipe and sasl-gate ...');
  const cert = await certificate();
  const ca = readFileSync(cert.caPath, 'utf8');
  const [idp, dovecot] = await Promise.all([startBenchIdp(), startBenchDovecot()]);
  const postfix = await startPostfix({ dovecot, domain: 'example.test', proxyProtocol: true });
  onCleanup(() => postfix.stop());
  // Only submission is measured: mail stays queued, and each round's queue is emptied afterwards.
  await run('/usr/sbin/postconf', ['-c', postfix.configDir, '-e', 'defer_transports = lmtp error']);
  await run('/usr/sbin/postfix', ['-c', postfix.configDir, 'reload']);
  const emptyQueue = () => run('/usr/sbin/postsuper', ['-c', postfix.configDir, '-d', 'ALL']).catch(() => undefined);

  const config = gateConfig(cert, { host: dovecot.host, port: dovecot.imapPort }, idp);
  config['backends'] = {
    ...(config['backends'] as Record<string, unknown>),
    smtp:
      LOGIN === 'master'
        ? { host: postfix.host, port: postfix.proxySubmissionPort!, login: 'master', proxyProtocol: true }
        : { host: postfix.host, port: postfix.submissionPort, login: 'xclient' },
  };
  const gate = await startGateProcess({ config, protocol: 'smtp' });
  const pipe = await startTlsPipe({ cert, backend: { host: postfix.host, port: postfix.submissionPort }, fileLimit: 1024 });
  const alice = USERS[0]!;
  const bob = USERS[1]!;
  const token = (await tokensFor(idp))[0]!.token;
  const xoauth2 = Buffer.from(`user=${alice.name}\x01auth=Bearer ${token}\x01\x01`).toString('base64');
  const plain = Buffer.from(`\0${alice.name}\0${alice.password}`).toString('base64');
  const masterPid = Number(readFileSync(`${postfix.queueDir}/pid/master.pid`, 'utf8').trim());

  const open = async (side: Side): Promise<SmtpBench> => {
    const c =
      side === 'gate'
        ? await SmtpBench.connect({ host: gate.host, port: gate.port, tls: true, ca })
        : side === 'pipe'
          ? await SmtpBench.connect({ host: '127.0.0.1', port: pipe.port, tls: true, ca })
          : await SmtpBench.connect({ host: postfix.host, port: postfix.submissionPort, tls: false });
    await c.login(side === 'gate' ? `XOAUTH2 ${xoauth2}` : `PLAIN ${plain}`);
    return c;
  };
  const measure = async (side: Side, size: (typeof SIZES)[number]): Promise<Sample> => {
    const messages = Array.from({ length: size.count }, (_, i) => makeSmtpMessage(alice.name, bob.name, i, size.bytes));
    let seconds = 0;
    let cpuGate = 0;
    let cpuPostfix = 0;
    for (let first = 0; first < messages.length; first += PER_CONNECTION) {
      const c = await open(side);
      const g0 = gate.cpuSeconds();
      const p0 = treeCpuSeconds(masterPid);
      const t0 = performance.now();
      for (const m of messages.slice(first, first + PER_CONNECTION)) await c.send(alice.name, bob.name, m);
      seconds += (performance.now() - t0) / 1000;
      cpuGate += gate.cpuSeconds() - g0;
      cpuPostfix += treeCpuSeconds(masterPid) - p0;
      await c.quit();
    }
    return {
      messagesPerSecond: size.count / seconds,
      seconds,
      cpuGateMs: side === 'gate' ? (cpuGate * 1000) / size.count : 0,
      cpuPostfixMs: (cpuPostfix * 1000) / size.count,
    };
  };

  const sides: Side[] = ['gate', 'pipe', 'postfix'];
  progress('warming up: a few messages on each path ...');
  for (const side of sides) for (const size of SIZES) await measure(side, { ...size, count: 2 });
  await emptyQueue();

  const samples = Object.fromEntries(SIZES.map((s) => [s.name, { gate: [], pipe: [], postfix: [] }])) as Record<string, Record<Side, Sample[]>>;
  for (let r = 0; r < ROUNDS; r++) {
    for (const size of SIZES) {
      const order = sides.map((_, i) => sides[(i + r) % sides.length]!);
      if (r % 2 === 1) order.reverse();
      for (const side of order) {
        const s = await measure(side, size);
        samples[size.name]![side].push(s);
        progress(
          `round ${r + 1}/${ROUNDS} ${size.name.padEnd(6)} ${LABELS[side].padEnd(30)} ${s.messagesPerSecond.toFixed(1).padStart(7)} msg/s  (${size.count} in ${s.seconds.toFixed(2)} s)`,
        );
      }
      await emptyQueue();
    }
  }
  await gate.stop();
  const after = loadavg();

  const results = SIZES.map((size) => {
    const per = samples[size.name]!;
    const vs = (side: Side, base: Side) => sig3(median(per[side].map((s, i) => s.messagesPerSecond / per[base][i]!.messagesPerSecond)));
    return {
      size: size.name,
      messageBytes: size.bytes,
      messagesPerRound: size.count,
      sides: Object.fromEntries(
        sides.map((side) => [
          side,
          {
            label: LABELS[side],
            messagesPerSecond: round(median(per[side].map((s) => s.messagesPerSecond)), 1),
            minMessagesPerSecond: round(Math.min(...per[side].map((s) => s.messagesPerSecond)), 1),
            maxMessagesPerSecond: round(Math.max(...per[side].map((s) => s.messagesPerSecond)), 1),
            cpuGateMsPerMessage: round(median(per[side].map((s) => s.cpuGateMs)), 2),
            cpuPostfixMsPerMessage: round(median(per[side].map((s) => s.cpuPostfixMs)), 2),
          },
        ]),
      ) as Record<Side, { label: string; messagesPerSecond: number; minMessagesPerSecond: number; maxMessagesPerSecond: number; cpuGateMsPerMessage: number; cpuPostfixMsPerMessage: number }>,
      gateVsPostfix: vs('gate', 'postfix'),
      gateVsPipe: vs('gate', 'pipe'),
      pipeVsPostfix: vs('pipe', 'postfix'),
    };
  });
  const target = 0.9;
  const result = {
    benchmark: 'smtp-submission',
    machine: before,
    loadavgAfter: after.map((l) => round(l, 2)),
    gate: gateCommandNote(),
    login: LOGIN,
    rounds: ROUNDS,
    messagesPerConnection: PER_CONNECTION,
    results,
    target,
    targetMet: results.every((r) => r.gateVsPostfix >= target),
    elapsedSeconds: round((performance.now() - started) / 1000, 1),
  };
  if (JSON_OUTPUT) {
    process.stdout.write(`${JSON.stringify(result, null, 2)}\n`);
    return;
  }
  const out: string[] = [];
  out.push(`SMTP submission, several messages per connection: sasl-gate (backends.smtp.login: ${LOGIN}) vs Postfix directly`);
  out.push(machineLine(before, after));
  out.push(
    `gate: ${gateCommandNote()}; ${ROUNDS} rounds; ${PER_CONNECTION >= Math.max(SMALL, LARGE) ? 'one connection per path and size each' : `${PER_CONNECTION} message(s) per connection`} (login not timed)`,
  );
  out.push('msg/s and CPU: medians of the rounds; ratios: medians of the per-round ratios');
  for (const r of results) {
    out.push('');
    out.push(`${r.size} messages, ${r.messagesPerRound} per round and path, ${Math.min(PER_CONNECTION, r.messagesPerRound)} per connection:`);
    const rows = [['', 'msg/s', 'min..max', 'CPU ms/msg gate+postfix', 'vs Postfix', 'vs TLS pipe']];
    for (const side of sides) {
      const s = r.sides[side];
      const ratio = (base: Side) => (side === base ? '1x' : `${fmtRatio(sig3(median(samples[r.size]![side].map((x, i) => x.messagesPerSecond / samples[r.size]![base][i]!.messagesPerSecond))))}x`);
      rows.push([
        s.label,
        s.messagesPerSecond.toFixed(1),
        `${s.minMessagesPerSecond.toFixed(1)}..${s.maxMessagesPerSecond.toFixed(1)}`,
        `${s.cpuGateMsPerMessage.toFixed(2)}+${s.cpuPostfixMsPerMessage.toFixed(2)}`,
        ratio('postfix'),
        ratio('pipe'),
      ]);
    }
    out.push(...table(rows));
  }
  out.push('');
  for (const r of results) {
    out.push(`${r.size}: sasl-gate = ${fmtRatio(r.gateVsPostfix)}x Postfix directly (target >= ${target}x: ${r.gateVsPostfix >= target ? 'met' : 'NOT met'}), ${fmtRatio(r.gateVsPipe)}x a bare TLS pipe`);
  }
  out.push(`run took ${result.elapsedSeconds} s`);
  process.stdout.write(`${out.join('\n')}\n`);
});



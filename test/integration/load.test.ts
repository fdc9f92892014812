/**
 * `sasl-gate load` against the whole chain (sasl-gate in front of a real Dovecot and Postfix,
 * tokens from a real OpenID provider) and against Dovecot directly: every scenario runs, its
 * counts agree with sasl-gate's own log, latencies are ordered, failures are counted by kind,
 * and the JSON, text and HTML reports come out.
 */
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer, type AddressInfo, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { devTokenSource } from '../../tools/load-tokens.js';
import { freePort } from '../../tools/ports.js';
import { parseMix, runLoad, type LoadIo } from '../../src/load/cli.js';
import { Pacer } from '../../src/load/engine.js';
import type { LoadReport } from '../../src/load/report.js';
import { sessionPlan } from '../../src/load/scenarios/imap-session.js';
import { messageFactory } from '../../src/load/smtp.js';
import { parseTarget } from '../../src/load/target.js';
import { parseUsers } from '../../src/load/users.js';
import { secret } from '../support/evidence.js';
import { startStack, USERS, type Stack } from '../support/stack.js';

const [ALICE, BOB] = USERS as [(typeof USERS)[0], (typeof USERS)[0]];

let stack: Stack;
let dir: string;
let tokens: string;
let passwords: string;
let caFile: string;
let imaps: string;
let smtps: string;

/** Collects what runLoad writes. */
class Collector {
  text = '';
  constructor(readonly isTTY = false) {}
  write(chunk: string): boolean {
    this.text += chunk;
    return true;
  }
}

interface Run {
  code: number;
  report: LoadReport;
  stdout: string;
  stderr: string;
}

/** Runs the harness with `--json` (and `io`, e.g. a token source) and parses its one line of output. */
async function load(args: string[], stderr = new Collector(), io: LoadIo = {}): Promise<Run> {
  const stdout = new Collector();
  const code = await runLoad([...args, '--json'], { ...io, stdout, stderr });
  const lines = stdout.text.split('\n').filter(Boolean);
  expect(lines, stderr.text).toHaveLength(1);
  return { code, report: JSON.parse(lines[0]!) as LoadReport, stdout: stdout.text, stderr: stderr.text };
}

/** sasl-gate's `authenticated` log lines so far, per mechanism. */
function authenticated(mechanism?: string): number {
  return stack.logs.filter((l) => l['msg'] === 'authenticated' && (mechanism === undefined || l['mechanism'] === mechanism)).length;
}

/** Waits until sasl-gate has logged `expected` logins (its log is written asynchronously). */
async function authenticatedReaches(expected: number, mechanism?: string): Promise<number> {
  const deadline = Date.now() + 5_000;
  while (authenticated(mechanism) < expected && Date.now() < deadline) await new Promise((r) => setTimeout(r, 25));
  // A little longer, so that a count above the expected one shows too.
  await new Promise((r) => setTimeout(r, 100));
  return authenticated(mechanism);
}

function expectSaneLatency(report: LoadReport): void {
  const l = report.latencyMs;
  expect(l.p50).toBeGreaterThan(0);
  expect(l.p50).toBeLessThanOrEqual(l.p90);
  expect(l.p90).toBeLessThanOrEqual(l.p99);
  expect(l.p99).toBeLessThanOrEqual(l.max);
  expect(l.max).toBeLessThan(30_000);
  expect(report.ratePerSecond).toBeGreaterThan(0);
  expect(Object.values(report.errors).every((n) => n === 0)).toBe(true);
}

beforeAll(async () => {
  stack = await startStack({ smtp: { login: 'xclient' } });
  dir = mkdtempSync(join(tmpdir(), 'sasl-gate-load-'));
  const aliceToken = secret(await stack.idp.mintAccessToken({ user: ALICE.name }), 'access token');
  const bobToken = secret(await stack.idp.mintAccessToken({ user: BOB.name }), 'access token');
  tokens = join(dir, 'tokens.tsv');
  writeFileSync(tokens, `# token users\n${ALICE.name}\t${aliceToken}\n${BOB.name}\t${bobToken}\n`, { mode: 0o600 });
  passwords = join(dir, 'passwords.tsv');
  writeFileSync(passwords, `${ALICE.name}\t${ALICE.password}\n${BOB.name}\t${BOB.password}\n`, { mode: 0o600 });
  caFile = join(dir, 'ca.pem');
  writeFileSync(caFile, stack.ca);
  imaps = `imaps://${stack.host}:${stack.imapPort}`;
  smtps = `smtps://${stack.host}:${stack.smtpPort}`;
});

afterAll(async () => {
  await stack?.close();
});

describe('imap-login through sasl-gate', () => {
  for (const [mech, file, logged] of [
    ['xoauth2', () => tokens, 'XOAUTH2'],
    ['oauthbearer', () => tokens, 'OAUTHBEARER'],
    ['plain', () => passwords, 'PLAIN'],
  ] as const) {
    it(`${mech}: 40 logins, all of them in sasl-gate's log`, async () => {
      const before = authenticated(logged);
      const run = await load(['imap-login', '--target', imaps, '--mech', mech, '--users', file(), '--count', '40', '--concurrency', '4', '--insecure']);
      expect(run.code).toBe(0);
      expect(run.report).toMatchObject({ scenario: 'imap-login', target: imaps, mech, ok: 40, failed: 0, count: 40, concurrency: 4 });
      expectSaneLatency(run.report);
      expect(Object.keys(run.report.steps)).toEqual(['connect', 'tls', 'greeting', 'auth', 'logout']);
      expect(run.report.steps['auth']!.count).toBe(40);
      expect(await authenticatedReaches(before + 40, logged)).toBe(before + 40);
      // The summary names the same numbers.
      expect(run.stderr).toMatch(/ok\s+40\n\s+failed\s+0\n/);
    });
  }

  it('checks the certificate against --ca, and refuses it without', async () => {
    const trusted = await load(['imap-login', '--target', imaps, '--users', tokens, '--count', '4', '--concurrency', '2', '--ca', caFile]);
    expect(trusted.report).toMatchObject({ ok: 4, failed: 0 });
    const untrusted = await load(['imap-login', '--target', imaps, '--users', tokens, '--count', '3', '--concurrency', '1']);
    expect(untrusted.code).toBe(1);
    expect(untrusted.report).toMatchObject({ ok: 0, failed: 3 });
    expect(untrusted.report.errors.tls).toBe(3);
    expect(untrusted.report.errorSamples.tls).toMatch(/certificate/i);
  });

  it('a wrong token fails as auth_rejected, and sasl-gate logged no login', async () => {
    const wrong = join(dir, 'wrong.tsv');
    const forged = secret(await stack.idp.signToken(stack.idp.claimsFor(ALICE.name), { key: 'foreign' }), 'access token');
    writeFileSync(wrong, `${ALICE.name}\t${forged}\n`);
    const before = authenticated();
    const run = await load(['imap-login', '--target', imaps, '--users', wrong, '--count', '6', '--concurrency', '2', '--insecure']);
    expect(run.code).toBe(1);
    expect(run.report).toMatchObject({ ok: 0, failed: 6 });
    expect(run.report.errors.auth_rejected).toBe(6);
    expect(run.report.errorSamples.auth_rejected).toMatch(/NO \[AUTHENTICATIONFAILED\]/);
    expect(run.stderr).toMatch(/auth_rejected\s+6/);
    expect(await authenticatedReaches(before)).toBe(before);
  });

  it('a server that is not there fails as connect', async () => {
    const port = await freePort();
    const run = await load(['imap-login', '--target', `imaps://127.0.0.1:${port}`, '--users', tokens, '--count', '3', '--concurrency', '1']);
    expect(run.report).toMatchObject({ ok: 0, failed: 3 });
    expect(run.report.errors.connect).toBe(3);
  });
});

describe('the other scenarios through sasl-gate', () => {
  it('smtp-send: 5 messages of 10 KiB, each login in sasl-gate\'s log', async () => {
    const before = authenticated('XOAUTH2');
    const run = await load(['smtp-send', '--target', smtps, '--users', tokens, '--count', '5', '--concurrency', '2', '--insecure']);
    expect(run.code).toBe(0);
    expect(run.report).toMatchObject({ scenario: 'smtp-send', ok: 5, failed: 0 });
    expectSaneLatency(run.report);
    expect(run.report.steps['send']!.count).toBe(5);
    expect(await authenticatedReaches(before + 5, 'XOAUTH2')).toBe(before + 5);
    // Postfix took every message.
    const deadline = Date.now() + 10_000;
    let queued = 0;
    while (queued < 5 && Date.now() < deadline) {
      queued = (await stack.postfix!.readLog()).split('\n').filter((l) => /message-id=<[^>]+@load\.sasl-gate\.invalid>/.test(l)).length;
      if (queued < 5) await new Promise((r) => setTimeout(r, 100));
    }
    expect(queued).toBe(5);
  });

  it('imap-session: the mix of commands, each timed', async () => {
    const before = authenticated('OAUTHBEARER');
    const run = await load([
      'imap-session', '--target', imaps, '--users', tokens, '--mech', 'oauthbearer', '--count', '5', '--concurrency', '2',
      '--mix', 'select=1,fetch=3,search=1,idle=1', '--idle-ms', '50', '--insecure',
    ]);
    expect(run.code).toBe(0);
    expect(run.report).toMatchObject({ scenario: 'imap-session', ok: 5, failed: 0 });
    expectSaneLatency(run.report);
    const counts = Object.fromEntries(Object.entries(run.report.steps).map(([k, s]) => [k, s.count]));
    expect(counts).toMatchObject({ auth: 5, select: 5, fetch: 15, search: 5, idle: 5, logout: 5 });
    // The IDLE's 50 ms wait is the harness's own, not counted as the server's time.
    expect(run.report.latencyMs.p50).toBeGreaterThanOrEqual(50);
    expect(await authenticatedReaches(before + 5, 'OAUTHBEARER')).toBe(before + 5);
  });

  it('imap-idle: holds 5 connections for 2 s, with a live progress line and an HTML report', async () => {
    const html = join(dir, 'idle.html');
    const before = authenticated();
    const tty = new Collector(true);
    const run = await load(['imap-idle', '--target', imaps, '--users', tokens, '--concurrency', '5', '--duration', '2', '--html', html, '--insecure'], tty);
    expect(run.code).toBe(0);
    expect(run.report).toMatchObject({ scenario: 'imap-idle', ok: 5, failed: 0 });
    expect(run.report.idle).toMatchObject({ requested: 5, established: 5, held: 5, failed: 0, dropped: 0 });
    expect(run.report.idle!.holdSeconds).toBeGreaterThanOrEqual(1.9);
    expect(run.report.idle!.harness.holding.rssBytes).toBeGreaterThan(0);
    expect(run.report.durationSeconds).toBeGreaterThanOrEqual(2);
    // A held connection shows in the timeline, and in the progress line, rewritten in place.
    expect(Math.max(...run.report.timeline.map((p) => p.active))).toBe(5);
    // Elapsed against the asked-for duration.
    expect(tty.text).toMatch(/\r\s*\d+\.\ds \/ 2s {2}ok 5 {2}failed 0 {2}rate \d+\/s {2}p99 [\d.]+ m?s {2}active 5/);
    expect(await authenticatedReaches(before + 5)).toBe(before + 5);
    const page = readFileSync(html, 'utf8');
    expect(page).toMatch(/^<!DOCTYPE html>/);
    expect(page.match(/<svg /g)?.length).toBe(4);
    expect(page).toContain('Latency distribution');
    expect(page).toContain('Latency of successful transactions');
    expect(page).not.toMatch(/<script|https?:\/\/(?!www\.w3\.org\/2000\/svg)/);
  });
});

describe('against Dovecot directly', () => {
  it('imap-login with PLAIN over plain IMAP', async () => {
    const run = await load([
      'imap-login', '--target', `imap://${stack.dovecot.host}:${stack.dovecot.imapPort}`, '--mech', 'plain', '--users', passwords,
      '--count', '10', '--concurrency', '2',
    ]);
    expect(run.code).toBe(0);
    expect(run.report).toMatchObject({ ok: 10, failed: 0 });
    expectSaneLatency(run.report);
    expect(run.report.steps['tls']).toBeUndefined();
  });

  it('a wrong password is auth_rejected', async () => {
    const wrong = join(dir, 'wrong-password.tsv');
    writeFileSync(wrong, `${ALICE.name}\t${secret('not-alices-password', 'password')}\n`);
    const run = await load([
      'imap-login', '--target', `imap://${stack.dovecot.host}:${stack.dovecot.imapPort}`, '--mech', 'plain', '--users', wrong, '--count', '2',
    ]);
    expect(run.report).toMatchObject({ ok: 0, failed: 2 });
    expect(run.report.errors.auth_rejected).toBe(2);
  });
});

/**
 * A small IMAP server unlike Dovecot: no capabilities in the greeting, no SASL-IR, literals in
 * FETCH responses, a temporary failure for one user, and a LOGOUT answered by BYE and a close
 * without the tagged OK.
 */
function oddImapServer(): Promise<Server> {
  const serve = (socket: Socket) => {
    socket.on('error', () => undefined);
    socket.write('* OK odd server ready\r\n');
    let buffer = '';
    let pending: string | undefined;
    let idling: string | undefined;
    socket.on('data', (chunk: Buffer) => {
      buffer += chunk.toString('latin1');
      for (let end = buffer.indexOf('\r\n'); end >= 0; end = buffer.indexOf('\r\n')) {
        const line = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        if (pending !== undefined) {
          const [, user, password] = Buffer.from(line, 'base64').toString('utf8').split('\0');
          const tag = pending;
          pending = undefined;
          if (user === 'busy@example.test') socket.write(`${tag} NO [UNAVAILABLE] try later\r\n`);
          else if (password === 'right-password') socket.write(`${tag} OK logged in\r\n`);
          else socket.write(`${tag} NO [AUTHENTICATIONFAILED] no\r\n`);
          continue;
        }
        if (idling !== undefined) {
          socket.write(line === 'DONE' ? `${idling} OK idle done\r\n` : `${idling} BAD expected DONE\r\n`);
          idling = undefined;
          continue;
        }
        const [tag, command = ''] = line.split(' ');
        switch (command.toUpperCase()) {
          case 'CAPABILITY':
            socket.write(`* CAPABILITY IMAP4rev1 AUTH=PLAIN IDLE\r\n${tag} OK done\r\n`);
            break;
          case 'AUTHENTICATE':
            pending = tag;
            socket.write('+ \r\n');
            break;
          case 'SELECT':
            socket.write(`* 2 EXISTS\r\n* FLAGS (\\Seen)\r\n${tag} OK [READ-WRITE] selected\r\n`);
            break;
          case 'FETCH':
            socket.write(`* 1 FETCH (FLAGS () BODY[HEADER] {8}\r\nA: {3}\r\n UID 1)\r\n* 2 FETCH (FLAGS (\\Seen) UID 2)\r\n${tag} OK fetched\r\n`);
            break;
          case 'SEARCH':
            socket.write(`* SEARCH 1 2\r\n${tag} OK searched\r\n`);
            break;
          case 'IDLE':
            idling = tag;
            socket.write('+ idling\r\n');
            break;
          case 'LOGOUT':
            socket.end('* BYE see you\r\n');
            break;
          default:
            socket.write(`${tag} BAD what\r\n`);
        }
      }
    });
  };
  return new Promise((resolve) => {
    const server = createServer(serve);
    server.listen(0, '127.0.0.1', () => resolve(server));
  });
}

describe('against a server unlike Dovecot', () => {
  let server: Server;
  let target: string;

  beforeAll(async () => {
    server = await oddImapServer();
    target = `imap://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });

  afterAll(async () => {
    await new Promise((resolve) => server.close(resolve));
  });

  it('imap-session without SASL-IR, with literals, and a LOGOUT closed after BYE', async () => {
    const users = join(dir, 'odd.tsv');
    writeFileSync(users, 'carol@example.test\tright-password\n');
    const run = await load(['imap-session', '--target', target, '--mech', 'plain', '--users', users, '--count', '4', '--concurrency', '2', '--idle-ms', '10']);
    expect(run.stderr).toContain('errors     none');
    expect(run.report).toMatchObject({ ok: 4, failed: 0 });
    expect(run.report.steps['capability']!.count).toBe(4);
  });

  it('tells a temporary failure from a rejection', async () => {
    const users = join(dir, 'odd-mixed.tsv');
    writeFileSync(users, 'busy@example.test\tright-password\ncarol@example.test\twrong-password\ncarol@example.test\tright-password\n');
    const run = await load(['imap-login', '--target', target, '--mech', 'plain', '--users', users, '--count', '6', '--concurrency', '1']);
    expect(run.report).toMatchObject({ ok: 2, failed: 4 });
    expect(run.report.errors).toMatchObject({ auth_temporary: 2, auth_rejected: 2 });
    expect(run.report.errorSamples.auth_temporary).toMatch(/NO \[UNAVAILABLE\] try later/);
  });

  it('reports failed transactions\' latency apart, the distribution, and how to run it again', async () => {
    const users = join(dir, 'odd-report.tsv');
    writeFileSync(users, 'busy@example.test\tright-password\ncarol@example.test\twrong-password\ncarol@example.test\tright-password\n');
    const html = join(dir, 'odd report.html');
    const args = ['imap-login', '--target', target, '--mech', 'plain', '--users', users, '--count', '9', '--concurrency', '1', '--html', html];
    const run = await load(args);
    const r = run.report;
    expect(r).toMatchObject({ ok: 3, failed: 6 });
    // The exact command line (the helper adds --json), quoted for a shell, and the versions.
    expect(r.command).toBe(`sasl-gate load imap-login --target ${target} --mech plain --users ${users} --count 9 --concurrency 1 --html '${html}' --json`);
    expect(r.versions.node).toBe(process.version);
    expect(r.versions.saslGate).toMatch(/^\d+\.\d+\.\d+/);
    // Latency of successes and of failures, each counted once.
    expect(r.latencyMs.count).toBe(3);
    expect(r.failedLatencyMs.count).toBe(6);
    expect(r.failedLatencyMs.max).toBeGreaterThan(0);
    const sum = (bins: Array<{ count: number }>) => bins.reduce((n, b) => n + b.count, 0);
    expect(sum(r.latencyHistogram.ok)).toBe(3);
    expect(sum(r.latencyHistogram.failed)).toBe(6);
    // Fewer than 100 transactions: p99 is the max, and the summary says so rather than hiding one under the other.
    expect(run.stderr).toMatch(/latency {4}p50 .* p99 = max [\d.]+ m?s {2}\(successful transactions only\)/);
    expect(run.stderr).toMatch(/failed in {2}p50 .*\(time until each failed transaction failed\)/);

    const page = readFileSync(html, 'utf8');
    expect(page).toContain(`<code class="command">sasl-gate load imap-login --target ${target} --mech plain --users ${users} --count 9 --concurrency 1 --html &#39;${html}&#39; --json</code>`);
    expect(page).toContain(`Node.js ${process.version}`);
    expect(page).toMatch(/<td>time to failure of failed transactions<\/td><td>p50 /);
    expect(page.match(/<rect class="bar-ok"/g)?.length).toBeGreaterThan(0);
    expect(page.match(/<rect class="bar-failed"/g)?.length).toBeGreaterThan(0);
    expect(page).toContain('No p99 line: in every second p99 equals the max');
    // The run ended inside its last second: that bucket is marked as partial in the JSON and the page.
    const last = r.timeline.at(-1)!;
    expect(last.partialSeconds).toBeGreaterThan(0);
    expect(last.partialSeconds).toBeLessThan(1);
    expect(page).toContain(`covers only ${last.partialSeconds!.toFixed(2)} s`);
    expect(page).toMatch(/class="partial-bucket"/);
    expect(page).not.toMatch(/<script|<link|src=/);
  });

  it('shows transactions done against --count in the progress line', async () => {
    const users = join(dir, 'odd-progress.tsv');
    writeFileSync(users, 'carol@example.test\tright-password\n');
    const tty = new Collector(true);
    const run = await load(['imap-session', '--target', target, '--mech', 'plain', '--users', users, '--count', '3', '--concurrency', '1', '--mix', 'idle=1', '--idle-ms', '400'], tty);
    expect(run.report).toMatchObject({ ok: 3, failed: 0 });
    expect(tty.text).toMatch(/\r\s*\d+\.\ds {2}done [0-3] \/ 3 {2}ok \d/);
  });
});

describe('without --users, from the source checkout: tokens from the development OpenID provider', () => {
  const withProvider: LoadIo = { tokenSource: devTokenSource };
  let own: Stack;
  let issuerPort: number;

  beforeAll(async () => {
    issuerPort = await freePort();
    // A sasl-gate that trusts the provider the harness will start on that port. Each run's
    // provider has new keys: the JWKS may be fetched again at once.
    own = await startStack({
      oauth: { issuer: `http://127.0.0.1:${issuerPort}`, jwksRefetchCooldownSeconds: 0 },
      config: {
        listeners: [
          { protocol: 'imap', bind: '127.0.0.1:0', tls: 'implicit' },
          { protocol: 'imap', bind: '127.0.0.1:0', tls: 'starttls' },
        ],
        limits: { authFailureDelaySeconds: 0 },
      },
    });
    // Its discovery failed at start (nobody listened yet); it tries again after 2 s.
    await new Promise((r) => setTimeout(r, 2_500));
  });

  afterAll(async () => {
    await own?.close();
  });

  it('mints tokens for the default users and says which issuer the target must trust', async () => {
    const before = own.logs.filter((l) => l['msg'] === 'authenticated').length;
    const run = await load(
      ['imap-login', '--target', `imaps://127.0.0.1:${own.imapPort}`, '--issuer-port', String(issuerPort), '--count', '8', '--concurrency', '2', '--insecure'],
      undefined,
      withProvider,
    );
    expect(run.stderr).toContain(`development OpenID provider at http://127.0.0.1:${issuerPort}`);
    expect(run.stderr).toContain(`oauth.issuer: http://127.0.0.1:${issuerPort}`);
    expect(run.report).toMatchObject({ ok: 8, failed: 0, issuer: `http://127.0.0.1:${issuerPort}` });
    const deadline = Date.now() + 5_000;
    let logins: Array<Record<string, unknown>> = [];
    while (logins.length < 8 && Date.now() < deadline) {
      logins = own.logs.slice(before).filter((l) => l['msg'] === 'authenticated');
      await new Promise((r) => setTimeout(r, 25));
    }
    expect(logins.map((l) => l['user']).sort()).toEqual([...Array(4).fill(ALICE.name), ...Array(4).fill(BOB.name)]);
  });

  it('a second run (a new provider, new keys) over STARTTLS: imap-session', async () => {
    const starttls = own.gate.listeners[1]!;
    const run = await load([
      'imap-session', '--target', `imap://127.0.0.1:${starttls.port}`, '--starttls', '--mech', 'oauthbearer',
      '--issuer-port', String(issuerPort), '--idp-user', BOB.name, '--count', '3', '--concurrency', '1', '--insecure',
    ], undefined, withProvider);
    expect(run.report).toMatchObject({ ok: 3, failed: 0 });
    expect(run.report.steps['starttls']!.count).toBe(3);
  });

  it('a target that trusts another provider rejects them, and the summary says why', async () => {
    const run = await load(['imap-login', '--target', imaps, '--count', '2', '--concurrency', '1', '--insecure'], undefined, withProvider);
    expect(run.report).toMatchObject({ ok: 0, failed: 2 });
    expect(run.report.errors.auth_rejected).toBe(2);
    expect(run.stderr).toMatch(/the target must trust it/);
  });
});

describe('the command line', () => {
  const usage = async (args: string[]) => {
    const stdout = new Collector();
    const stderr = new Collector();
    const code = await runLoad(args, { stdout, stderr });
    return { code, stdout: stdout.text, stderr: stderr.text };
  };

  it('explains what is wrong, with exit status 2', async () => {
    const cases: Array<[string[], RegExp]> = [
      [[], /name a scenario/],
      [['imap-logn', '--target', 'imaps://h:1'], /unknown scenario "imap-logn"/],
      [['imap-login'], /--target URL is required/],
      [['imap-login', '--target', 'http://h:1'], /must start with imaps:\/\/, imap:\/\/, smtps:\/\/, smtp:\/\/, pop3s:\/\/ or pop3:\/\//],
      [['smtp-send', '--target', 'imaps://h:993'], /smtp-send needs an smtps:\/\/ or smtp:\/\/ target/],
      [['pop3-session', '--target', 'smtps://h:465'], /pop3-session needs a pop3s:\/\/ or pop3:\/\/ target/],
      [['imap-login', '--target', 'imaps://h:1', '--mech', 'login'], /--mech must be xoauth2, oauthbearer, plain/],
      [['imap-login', '--target', 'imaps://h:1', '--mech', 'plain'], /--mech plain needs --users/],
      [['imap-login', '--target', 'imaps://h:1', '--count', '5', '--duration', '3'], /exclude each other/],
      [['imap-login', '--target', 'imaps://h:1', '--concurrency', '0'], /--concurrency must be a whole number from 1/],
      [['imap-login', '--target', 'imaps://h:1', '--rate', 'fast'], /--rate must be a number above 0/],
      [['imap-idle', '--target', 'imaps://h:1', '--count', '5'], /--count does not apply/],
      [['imap-session', '--target', 'imaps://h:1', '--mix', 'fetch=2,jump=1'], /--mix "fetch=2,jump=1"/],
      [['imap-session', '--target', 'imaps://h:1', '--mix', 'select=0,fetch=1'], /select must be at least 1/],
      [['imap-login', '--target', 'imaps://h:1', '--size', '10'], /--size applies to smtp-send only/],
      [['imap-login', '--target', 'imaps://h:1', '--starttls'], /--starttls is for imap:\/\/, smtp:\/\/ and pop3:\/\/ targets/],
      [['imap-login', '--target', 'imaps://h:1', '--frobnicate'], /Unknown option '--frobnicate'/],
      [['imap-login', '--target', 'imaps://h:1', '--users', join(tmpdir(), 'no-such-users-file')], /--users .*no-such-users-file/],
      // The product has no provider of its own: it needs the tokens (or passwords) in a file.
      [['imap-login', '--target', 'imaps://h:1'], /--users FILE is required: .*npm run load -- SCENARIO/],
      [['imap-login', '--target', 'imaps://h:1', '--issuer-port', '9000'], /--users FILE is required/],
    ];
    for (const [args, message] of cases) {
      const r = await usage(args);
      expect({ args, code: r.code }).toEqual({ args, code: 2 });
      expect(r.stderr).toMatch(message);
      expect(r.stdout).toBe('');
    }
  });

  it('names the line of a malformed users file, never its secrets', async () => {
    const bad = join(dir, 'bad.tsv');
    writeFileSync(bad, `${ALICE.name}\tfine-secret-1\n${BOB.name} secret-with-a-space\n`);
    const r = await usage(['imap-login', '--target', imaps, '--users', bad]);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/line 2: expected user<TAB>password-or-token/);
    expect(r.stderr).not.toContain('secret');
  });

  it('--help lists every scenario; the provider options only where there is a token source', async () => {
    const r = await usage(['--help']);
    expect(r.code).toBe(0);
    for (const s of ['imap-login', 'imap-session', 'imap-idle', 'smtp-send', 'pop3-session', 'pop3s://', '--target', '--rate', '--html']) expect(r.stdout).toContain(s);
    expect(r.stdout).toMatch(/--target URL --users FILE /);
    expect(r.stdout).not.toContain('--issuer-port');
    const stdout = new Collector();
    expect(await runLoad(['--help'], { stdout, stderr: new Collector(), tokenSource: devTokenSource })).toBe(0);
    expect(stdout.text).toMatch(/--target URL \[--users FILE\] /);
    for (const s of ['--issuer-port', '--issuer-host', '--idp-user', '--audience']) expect(stdout.text).toContain(s);
  });
});

describe('pure parts', () => {
  it('orders a session: the first SELECT, then the others interleaved', () => {
    expect(sessionPlan(parseMix('select=1,fetch=3,search=1,idle=1'))).toEqual(['select', 'fetch', 'search', 'idle', 'fetch', 'fetch']);
    expect(sessionPlan(parseMix('noop=2'))).toEqual(['select', 'noop', 'noop']);
    expect(sessionPlan(parseMix('select=0,idle=1'))).toEqual(['idle']);
  });

  it('paces starts on a fixed schedule and stops at the count', () => {
    const pacer = new Pacer({ count: 3, rate: 10 });
    const starts = [pacer.next(0), pacer.next(0), pacer.next(0), pacer.next(0)];
    expect(starts.slice(0, 3).map((s) => s!.index)).toEqual([0, 1, 2]);
    expect(Math.round(starts[2]!.dueAt - starts[0]!.dueAt)).toBe(200);
    expect(starts[3]).toBeUndefined();
  });

  it('builds messages of the asked size', () => {
    const message = messageFactory(10 * 1024);
    for (const id of ['1', '22', '333']) {
      const m = message('alice@example.test', 'alice@example.test', id);
      expect(Math.abs(m.length - 10 * 1024)).toBeLessThan(8);
      expect(m.toString('latin1')).toMatch(/\r\n$/);
      expect(m.toString('latin1')).not.toMatch(/\r\n\./);
    }
  });

  it('reads targets and users files', () => {
    expect(parseTarget('imaps://mail.example.org')).toMatchObject({ protocol: 'imap', implicitTls: true, port: 993 });
    expect(parseTarget('pop3s://mail.example.org')).toMatchObject({ protocol: 'pop3', implicitTls: true, port: 995 });
    expect(parseTarget('pop3://127.0.0.1')).toMatchObject({ protocol: 'pop3', implicitTls: false, port: 110, url: 'pop3://127.0.0.1:110' });
    expect(parseTarget('smtp://[::1]:10587')).toMatchObject({ protocol: 'smtp', implicitTls: false, host: '::1', port: 10587, url: 'smtp://[::1]:10587' });
    expect(() => parseTarget('imaps://u:p@h:1')).toThrow(/must not carry credentials/);
    expect(parseUsers('# c\n\na@x\tsecret one\r\nb@x\tt2\n', 'f')).toEqual([
      { user: 'a@x', secret: 'secret one' },
      { user: 'b@x', secret: 't2' },
    ]);
    expect(() => parseUsers('\n# only a comment\n', 'f')).toThrow(/no users/);
  });
});

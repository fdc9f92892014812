/**
 * `sasl-gate load`: the load-testing harness. Works against any IMAP, SMTP or POP3 server
 * (sasl-gate, Dovecot, Postfix, ...). The command line is a contract: scripts outside the project use it.
 */
import { writeFileSync } from 'node:fs';
import { release } from 'node:os';
import { parseArgs } from 'node:util';
import type { Plan } from './engine.js';
import { Progress, Recorder, type Writer } from './recorder.js';
import { buildReport, htmlReport, jsonText, summaryText } from './report.js';
import { MECHS, type Credential, type Mech } from './sasl.js';
import { MIX_COMMANDS, type Mix, type Scenario, type ScenarioContext, type ScenarioOptions } from './scenarios/context.js';
import { imapIdle } from './scenarios/imap-idle.js';
import { imapLogin } from './scenarios/imap-login.js';
import { imapSession } from './scenarios/imap-session.js';
import { pop3Session } from './scenarios/pop3-session.js';
import { smtpSend } from './scenarios/smtp-send.js';
import { parseTarget, type Target } from './target.js';
import { DEFAULT_IDP_USERS, readUsersFile, type OwnProvider, type TokenSource } from './users.js';
import { packageVersion } from '../version.js';
import { tlsSettings, type TlsSettings } from './wire.js';
import { GateError, UsageError } from '../errors.js';

export const SCENARIOS: Record<string, Scenario> = {
  'imap-login': imapLogin,
  'imap-session': imapSession,
  'imap-idle': imapIdle,
  'smtp-send': smtpSend,
  'pop3-session': pop3Session,
};

/** `--help` of the harness; `ownProvider` when a token source stands in for a missing `--users`. */
export function loadHelp(ownProvider: boolean): string {
  return `sasl-gate load: load-test an IMAP, SMTP or POP3 server (sasl-gate or any other)

Usage:
  sasl-gate load SCENARIO --target URL ${ownProvider ? '[--users FILE]' : '--users FILE'} [--mech xoauth2|oauthbearer|plain]
                 [--concurrency N] [--duration SECONDS | --count N] [--rate PER_SECOND]
                 [--insecure] [--json] [--html FILE] [options]

Scenarios:
  imap-login     connect, AUTHENTICATE, LOGOUT
  imap-session   log in, SELECT, the --mix of FETCH / SEARCH / IDLE / NOOP, LOGOUT
  imap-idle      open --concurrency connections, hold them in IDLE for --duration seconds,
                 report how many were held and memory
  smtp-send      EHLO, AUTH, a message of --size bytes to the user itself, QUIT
  pop3-session   connect, AUTH, STAT, LIST, QUIT (what a POP3 client does on each poll)

Target:
  --target URL          imaps://host:port, imap://host:port, smtps://host:port, smtp://host:port,
                        pop3s://host:port or pop3://host:port
  --starttls            upgrade imap://, smtp:// or pop3:// with STARTTLS (POP3: STLS) before logging in
  --insecure            do not check the server's certificate
  --ca FILE             also trust this CA (PEM; repeatable). Otherwise Node's CAs and
                        NODE_EXTRA_CA_CERTS apply
  --servername NAME     name to send (SNI) and check in the certificate; default the host
  --timeout SECONDS     limit of every wait for the server (default 30)

Who logs in:
  --users FILE          one "user<TAB>secret" per line (a password or an access token), used
                        round-robin; # starts a comment${ownProvider ? '' : `. Required: the tokens come from
                        your provider (from a source checkout, \`npm run load -- SCENARIO ...\`
                        can start a development OpenID provider that mints them instead)`}
  --mech MECH           xoauth2 (default), oauthbearer or plain
${ownProvider ? `  Without --users (here, from the source checkout) the harness starts a development OpenID
  provider and mints one access token per user from it; the target must trust that provider
  (sasl-gate: oauth.issuer set to the issuer URL printed at the start, oauth.audience
  containing --audience).
  --issuer-port PORT    port of that provider (default: any free port); a fixed port gives a
                        fixed issuer URL (http://127.0.0.1:PORT) to put in the target's config
  --issuer-host HOST    interface it listens on and issuer host (default 127.0.0.1)
  --idp-user USER       a user of that provider (repeatable; default ${DEFAULT_IDP_USERS.join(', ')})
  --audience AUD        aud of its tokens (default mail)
` : ''}
How much:
  --concurrency N       virtual users, each running one transaction after the other
                        (imap-idle: connections to hold). Default 10
  --duration SECONDS    keep starting transactions this long (imap-idle: hold this long).
                        Default 10 when --count is not given
  --count N             start this many transactions in all
  --rate PER_SECOND     start at most this many transactions per second, on a fixed schedule

Scenario options:
  --mix LIST            imap-session: commands per session, e.g. select=1,fetch=3,search=1,idle=1
                        (the default is select=1,fetch=1,search=1,idle=1; noop=N also works)
  --idle-ms MS          imap-session: how long each IDLE lasts (default 100)
  --fetch-last N        imap-session: each FETCH asks for the flags of the newest N messages (default 10)
  --mailbox NAME        imap-session, imap-idle: mailbox to SELECT (default INBOX)
  --size BYTES          smtp-send: message size (default 10240)
  --rcpt ADDRESS        smtp-send: recipient (default the user itself)
  --ramp N              imap-idle: connections being opened at once at most (default 100)
  --target-pid PID      imap-idle: also report this local process's memory (Linux /proc)

Output:
  --json                one JSON object on stdout (the summary goes to stderr)
  --html FILE           a self-contained HTML report with charts over time
  --quiet               no progress line on stderr

Exit status: 0 when every transaction succeeded, 1 when any failed (or none ran), 2 for a
usage error.
`;
}

/** Where runLoad writes, and what stops it early; the defaults are the process's. */
export interface LoadIo {
  stdout?: Writer;
  stderr?: Writer;
  /** Aborting stops starting transactions; the report still comes. Default: the first SIGINT. */
  signal?: AbortSignal;
  /** Where tokens come from without `--users`; without a token source `--users` is required. */
  tokenSource?: TokenSource;
}

/** Everything the command line said, validated. */
interface Settings {
  scenario: Scenario;
  target: Target;
  mech: Mech;
  usersFile: string | undefined;
  concurrency: number;
  count: number | undefined;
  durationSeconds: number | undefined;
  rate: number | undefined;
  timeoutMs: number;
  starttls: boolean;
  insecure: boolean;
  caFiles: string[];
  servername: string | undefined;
  json: boolean;
  html: string | undefined;
  quiet: boolean;
  issuerPort: number;
  issuerHost: string;
  idpUsers: string[];
  audience: string;
  options: ScenarioOptions;
}

const DEFAULT_MIX: Mix = { select: 1, fetch: 1, search: 1, idle: 1, noop: 0 };
const MAX_COMMANDS_PER_SESSION = 10_000;

function integer(name: string, text: string | undefined, min: number, max: number): number | undefined {
  if (text === undefined) return undefined;
  if (!/^\d+$/.test(text) || Number(text) < min || Number(text) > max) {
    throw new UsageError(`--${name} must be a whole number from ${min} to ${max}, not "${text}"`);
  }
  return Number(text);
}

function positive(name: string, text: string | undefined, max: number): number | undefined {
  if (text === undefined) return undefined;
  const value = Number(text);
  if (text.trim() === '' || !Number.isFinite(value) || value <= 0 || value > max) {
    throw new UsageError(`--${name} must be a number above 0 and at most ${max}, not "${text}"`);
  }
  return value;
}

/** `select=1,fetch=3,...`: unnamed commands 0, except select, which opens the mailbox: 1. */
export function parseMix(text: string): Mix {
  const mix: Mix = { select: 1, fetch: 0, search: 0, idle: 0, noop: 0 };
  for (const part of text.split(',')) {
    const match = /^\s*([a-z]+)\s*=\s*(\d+)\s*$/.exec(part);
    if (!match || !(MIX_COMMANDS as readonly string[]).includes(match[1]!)) {
      throw new UsageError(`--mix "${text}": expected a list like select=1,fetch=3,search=1,idle=1 (of ${MIX_COMMANDS.join(', ')})`);
    }
    mix[match[1] as keyof Mix] = Number(match[2]);
  }
  const total = Object.values(mix).reduce((a, b) => a + b, 0);
  if (total === 0) throw new UsageError(`--mix "${text}": no commands`);
  if (total > MAX_COMMANDS_PER_SESSION) throw new UsageError(`--mix "${text}": at most ${MAX_COMMANDS_PER_SESSION} commands per session`);
  if (mix.select === 0 && (mix.fetch > 0 || mix.search > 0)) {
    throw new UsageError(`--mix "${text}": fetch and search need a mailbox: select must be at least 1`);
  }
  return mix;
}

function parse(argv: string[]): Settings {
  let parsed;
  try {
    parsed = parseArgs({
      args: argv,
      allowPositionals: true,
      strict: true,
      options: {
        target: { type: 'string' },
        mech: { type: 'string' },
        users: { type: 'string' },
        concurrency: { type: 'string' },
        duration: { type: 'string' },
        count: { type: 'string' },
        rate: { type: 'string' },
        insecure: { type: 'boolean' },
        json: { type: 'boolean' },
        html: { type: 'string' },
        quiet: { type: 'boolean' },
        timeout: { type: 'string' },
        starttls: { type: 'boolean' },
        ca: { type: 'string', multiple: true },
        servername: { type: 'string' },
        mix: { type: 'string' },
        'idle-ms': { type: 'string' },
        'fetch-last': { type: 'string' },
        mailbox: { type: 'string' },
        size: { type: 'string' },
        rcpt: { type: 'string' },
        ramp: { type: 'string' },
        'target-pid': { type: 'string' },
        'issuer-port': { type: 'string' },
        'issuer-host': { type: 'string' },
        'idp-user': { type: 'string', multiple: true },
        audience: { type: 'string' },
        help: { type: 'boolean', short: 'h' },
      },
    });
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
  const { values: v, positionals } = parsed;
  if (v.help) throw new HelpRequested();
  if (positionals.length === 0) throw new UsageError(`name a scenario: ${Object.keys(SCENARIOS).join(', ')}`);
  if (positionals.length > 1) throw new UsageError(`one scenario at a time, not "${positionals.join(' ')}"`);
  const scenario = SCENARIOS[positionals[0]!];
  if (!scenario) throw new UsageError(`unknown scenario "${positionals[0]}": ${Object.keys(SCENARIOS).join(', ')}`);
  if (v.target === undefined) throw new UsageError('--target URL is required (imaps://host:port, imap://, smtps://, smtp://, pop3s:// or pop3://)');
  let target: Target;
  try {
    target = parseTarget(v.target);
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
  if (target.protocol !== scenario.protocol) {
    throw new UsageError(`${scenario.name} needs ${scenario.protocol === 'pop3' ? 'a' : 'an'} ${scenario.protocol}s:// or ${scenario.protocol}:// target, not ${target.url}`);
  }
  const mech = (v.mech ?? 'xoauth2').toLowerCase();
  if (!(MECHS as readonly string[]).includes(mech)) throw new UsageError(`--mech must be ${MECHS.join(', ')}, not "${v.mech}"`);
  if (mech === 'plain' && v.users === undefined) throw new UsageError('--mech plain needs --users FILE with passwords');
  if (v.starttls && target.implicitTls) throw new UsageError(`--starttls is for imap://, smtp:// and pop3:// targets; ${target.url} is TLS from the start`);

  const idle = scenario.name === 'imap-idle';
  const concurrency = integer('concurrency', v.concurrency, 1, 1_000_000) ?? 10;
  const count = integer('count', v.count, 1, Number.MAX_SAFE_INTEGER);
  let durationSeconds = positive('duration', v.duration, 30 * 24 * 3600);
  if (count !== undefined && durationSeconds !== undefined) throw new UsageError('--duration and --count exclude each other');
  if (idle && count !== undefined) {
    throw new UsageError('imap-idle holds --concurrency connections for --duration seconds; --count does not apply');
  }
  if (count === undefined && durationSeconds === undefined) durationSeconds = 10;

  const only = (flag: string, scenarios: string[]) => {
    if ((v as Record<string, unknown>)[flag] !== undefined && !scenarios.includes(scenario.name)) {
      throw new UsageError(`--${flag} applies to ${scenarios.join(' and ')} only`);
    }
  };
  only('mix', ['imap-session']);
  only('idle-ms', ['imap-session']);
  only('fetch-last', ['imap-session']);
  only('mailbox', ['imap-session', 'imap-idle']);
  only('size', ['smtp-send']);
  only('rcpt', ['smtp-send']);
  only('ramp', ['imap-idle']);
  only('target-pid', ['imap-idle']);
  if (v.users !== undefined) {
    for (const flag of ['issuer-port', 'issuer-host', 'idp-user', 'audience']) {
      if ((v as Record<string, unknown>)[flag] !== undefined) throw new UsageError(`--${flag} is for the harness's own OpenID provider, not with --users`);
    }
  }
  if (v.rcpt !== undefined && !/^[^\s<>@]+@[^\s<>@]+$/.test(v.rcpt)) throw new UsageError(`--rcpt "${v.rcpt}" is not an address`);
  if (v.mailbox !== undefined && (v.mailbox === '' || /[\x00-\x1f\x7f]/.test(v.mailbox))) throw new UsageError('--mailbox must be a mailbox name');
  const idpUsers = v['idp-user'] ?? DEFAULT_IDP_USERS;
  for (const user of idpUsers) {
    if (user === '' || /[\s\x00-\x1f\x7f,]/.test(user)) throw new UsageError(`--idp-user "${user}" is not a user name`);
  }

  return {
    scenario,
    target,
    mech: mech as Mech,
    usersFile: v.users,
    concurrency,
    count,
    durationSeconds,
    rate: positive('rate', v.rate, 10_000_000),
    timeoutMs: Math.round((positive('timeout', v.timeout, 3600) ?? 30) * 1000),
    starttls: v.starttls === true,
    insecure: v.insecure === true,
    caFiles: v.ca ?? [],
    servername: v.servername,
    json: v.json === true,
    html: v.html,
    quiet: v.quiet === true,
    issuerPort: integer('issuer-port', v['issuer-port'], 0, 65535) ?? 0,
    issuerHost: v['issuer-host'] ?? '127.0.0.1',
    idpUsers,
    audience: v.audience ?? 'mail',
    options: {
      mix: v.mix === undefined ? { ...DEFAULT_MIX } : parseMix(v.mix),
      idleMs: integer('idle-ms', v['idle-ms'], 0, 3_600_000) ?? 100,
      fetchLast: integer('fetch-last', v['fetch-last'], 1, 1_000_000_000) ?? 10,
      mailbox: v.mailbox ?? 'INBOX',
      size: integer('size', v.size, 1, 1024 * 1024 * 1024) ?? 10 * 1024,
      rcpt: v.rcpt,
      ramp: integer('ramp', v.ramp, 1, 100_000) ?? 100,
      targetPid: integer('target-pid', v['target-pid'], 1, 2 ** 31),
    },
  };
}

/** Unwinds argument parsing when --help was given: the help is printed, not an error. */
class HelpRequested extends GateError {
  constructor() {
    super('help_requested', 'help requested');
  }
}

/** One argument as a POSIX shell reads it back: bare when safe, else in single quotes. */
export function shellQuote(arg: string): string {
  return /^[A-Za-z0-9_@%+=:,./-]+$/.test(arg) ? arg : `'${arg.replace(/'/g, "'\\''")}'`;
}

/**
 * Runs `sasl-gate load` with the arguments after `load`; resolves with the exit code. Output goes
 * to `io.stdout` / `io.stderr` (default the process's).
 */
export async function runLoad(argv: string[], io: LoadIo = {}): Promise<number> {
  const stdout: Writer = io.stdout ?? process.stdout;
  const stderr: Writer = io.stderr ?? process.stderr;
  const usageError = (message: string) => {
    stderr.write(`sasl-gate load: ${message}\n(sasl-gate load --help shows every option)\n`);
    return 2;
  };
  let settings: Settings;
  try {
    settings = parse(argv);
  } catch (err) {
    if (err instanceof HelpRequested) {
      stdout.write(loadHelp(io.tokenSource !== undefined));
      return 0;
    }
    if (err instanceof UsageError) return usageError(err.message);
    throw err;
  }

  let tls: TlsSettings;
  try {
    tls = tlsSettings({ insecure: settings.insecure, servername: settings.servername, caFiles: settings.caFiles });
  } catch (err) {
    stderr.write(`sasl-gate load: --ca: ${(err as Error).message}\n`);
    return 2;
  }

  let credentials: Credential[];
  let provider: OwnProvider | undefined;
  if (settings.usersFile !== undefined) {
    try {
      credentials = readUsersFile(settings.usersFile);
    } catch (err) {
      stderr.write(`sasl-gate load: ${(err as Error).message}\n`);
      return 2;
    }
  } else if (io.tokenSource) {
    try {
      provider = await io.tokenSource.start({
        users: settings.idpUsers,
        host: settings.issuerHost,
        port: settings.issuerPort,
        audience: settings.audience,
        ttlSeconds: (settings.durationSeconds ?? 0) + 3600,
      });
    } catch (err) {
      stderr.write(`sasl-gate load: could not start the development OpenID provider: ${(err as Error).message}\n`);
      return 1;
    }
    credentials = provider.credentials;
    stderr.write(
      `sasl-gate load: access tokens for ${settings.idpUsers.join(', ')} from a development OpenID provider at ${provider.issuer}\n` +
        `  the target must trust it: oauth.issuer: ${provider.issuer}, oauth.audience: [${provider.audience}]` +
        `${settings.issuerPort === 0 ? ' (use --issuer-port for an issuer URL that stays the same)' : ''}\n`,
    );
  } else {
    return usageError(
      '--users FILE is required: one "user<TAB>password-or-token" line per user, tokens from your provider ' +
        '(a development provider that mints them runs from a source checkout: npm run load -- SCENARIO ...)',
    );
  }

  const controller = new AbortController();
  let onSigint: (() => void) | undefined;
  if (io.signal) {
    if (io.signal.aborted) controller.abort();
    else io.signal.addEventListener('abort', () => controller.abort(), { once: true });
  } else {
    onSigint = () => {
      stderr.write('\nsasl-gate load: stopping: no new transactions, waiting for those in flight\n');
      controller.abort();
    };
    process.once('SIGINT', onSigint);
  }

  const recorder = new Recorder();
  const progress = new Progress(recorder, stderr, undefined, { durationSeconds: settings.durationSeconds, count: settings.count });
  const plan: Plan = {
    concurrency: settings.concurrency,
    count: settings.count,
    durationMs: settings.durationSeconds === undefined ? undefined : settings.durationSeconds * 1000,
    rate: settings.rate,
    signal: controller.signal,
  };
  const ctx: ScenarioContext = {
    target: settings.target,
    tls,
    starttls: settings.starttls,
    timeoutMs: settings.timeoutMs,
    mech: settings.mech,
    credential: (index) => credentials[index % credentials.length]!,
    recorder,
    plan,
    options: settings.options,
    stderr,
  };

  let extras;
  try {
    if (!settings.quiet) progress.start();
    extras = await settings.scenario.run(ctx);
  } finally {
    recorder.finish();
    progress.stop();
    if (onSigint) process.removeListener('SIGINT', onSigint);
    await provider?.close();
  }

  const report = buildReport(
    recorder,
    {
      command: ['sasl-gate', 'load', ...argv].map(shellQuote).join(' '),
      versions: { saslGate: packageVersion(), node: process.version, os: `${process.platform} ${release()} ${process.arch}` },
      scenario: settings.scenario.name,
      target: settings.target.url,
      mech: settings.mech,
      concurrency: settings.concurrency,
      count: settings.count,
      durationSeconds: settings.durationSeconds,
      rate: settings.rate,
      issuer: provider?.issuer,
      interrupted: controller.signal.aborted,
    },
    extras,
  );
  if (settings.json) {
    stdout.write(jsonText(report));
    stderr.write(summaryText(report));
  } else {
    stdout.write(summaryText(report));
  }
  if (settings.html !== undefined) {
    try {
      writeFileSync(settings.html, htmlReport(report));
      stderr.write(`sasl-gate load: report written to ${settings.html}\n`);
    } catch (err) {
      stderr.write(`sasl-gate load: --html ${settings.html}: ${(err as Error).message}\n`);
      return 1;
    }
  }
  return report.failed === 0 && report.ok > 0 ? 0 : 1;
}

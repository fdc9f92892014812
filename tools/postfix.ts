/**
 * A private Postfix 3.x instance from Debian's package, for integration tests and the demo: its own
 * config, queue, data directory and log under one temp directory, a submission-style smtpd on a free
 * loopback port, never touching /etc/postfix, the system's queue or ports 25, 465 and 587. It is
 * configured the way sasl-gate expects a production backend to be: SASL through the private
 * Dovecot's auth service, the proxy allowed to send XCLIENT, senders bound to their login, and mail
 * for one domain delivered into Dovecot over LMTP. On request a second submission smtpd expects the
 * PROXY protocol (`smtpd_upstream_proxy_protocol = haproxy`), for sasl-gate's `backends.smtp.proxyProtocol`.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { chmod, chown, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { aptAvailable, aptInstall } from './apt.js';
import type { DovecotInstance } from './dovecot.js';
import { encodeProxyV2Local } from '../src/net/proxy-protocol.js';
import { freePort } from './ports.js';
import {
  closedAncestor,
  exists,
  groupAlive,
  run,
  signalGroup,
  sleep,
  spawnGroup,
  StartupError,
  tailOf,
  trackGroup,
  untrackGroup,
} from './processes.js';

/** What to start: the Dovecot to authenticate against and deliver into, and the domain it holds. */
export interface PostfixOptions {
  dovecot: DovecotInstance;
  /** Mail for this domain goes to Dovecot over LMTP; e.g. `example.test`. */
  domain: string;
  /** IPv4 address the submission listener binds to; 127.0.0.1 by default. */
  host?: string;
  /** Networks allowed to send XCLIENT (`smtpd_authorized_xclient_hosts`); `127.0.0.0/8` by default. */
  xclientHosts?: string[];
  /**
   * Also start a second submission smtpd (`proxySubmissionPort`) with the same settings that expects
   * a PROXY protocol header first (`-o smtpd_upstream_proxy_protocol=haproxy`). Off by default.
   */
  proxyProtocol?: boolean;
  /**
   * Look recipients up in sasl-gate's user directory over the socketmap protocol (socketmap_table(5))
   * at `host:port`: `virtual_mailbox_maps = socketmap:inet:host:port:mailbox` and
   * `virtual_alias_maps = socketmap:inet:host:port:alias`, so Postfix accepts mail only for the
   * directory's mailboxes and aliases (and `staticMailboxes`) and answers others
   * `550 5.1.1 ... User unknown in virtual mailbox table`. With `senders`, also
   * `smtpd_sender_login_maps = socketmap:inet:host:port:senders` ahead of the built-in map. Off by default
   * (then every address in the domain is accepted and left to Dovecot).
   */
  directoryMaps?: {
    host: string;
    port: number;
    /** Also ask the directory who owns a sender address (`smtpd_sender_login_maps`). */
    senders?: boolean;
    /** Addresses accepted besides the directory's (e.g. Dovecot's static users), from a texthash table. */
    staticMailboxes?: string[];
  };
  /**
   * Also start an MX-style smtpd (`inboundPort`): no AUTH, mail accepted from anyone for the domain
   * only (`reject_unauth_destination`), as port 25 takes mail from the internet. Off by default.
   */
  inbound?: boolean;
}

/** A running private Postfix. */
export interface PostfixInstance {
  host: string;
  /** Plain (no TLS) submission-style smtpd with SASL and XCLIENT: where sasl-gate connects. */
  submissionPort: number;
  /**
   * The same submission service behind the PROXY protocol: every connection must start with a
   * PROXY header (v1 or v2; a v2 `LOCAL` one for a connection of the proxy's own), whose client
   * address then counts, for logging and for `smtpd_authorized_xclient_hosts` alike. Present only
   * when started with `proxyProtocol: true`.
   */
  proxySubmissionPort?: number;
  /** The MX-style smtpd without AUTH for mail from anyone to the domain; present only when started with `inbound: true`. */
  inboundPort?: number;
  configDir: string;
  queueDir: string;
  logPath: string;
  /** The whole Postfix log so far (after stop(), the log as it was when the instance ended). */
  readLog(): Promise<string>;
  /** Terminates the master and every daemon it started and waits until they are gone; safe to call twice. */
  stop(): Promise<void>;
}

const POSTFIX = '/usr/sbin/postfix';
const POSTCONF = '/usr/sbin/postconf';
const DAEMON_DIR = '/usr/lib/postfix/sbin';
const MASTER = `${DAEMON_DIR}/master`;
const REQUIRED_FILES = [
  POSTFIX,
  POSTCONF,
  MASTER,
  ...['smtpd', 'cleanup', 'qmgr', 'trivial-rewrite', 'lmtp', 'postlogd', 'anvil', 'bounce'].map(
    (d) => `${DAEMON_DIR}/${d}`,
  ),
];
const PACKAGES = ['postfix'];
// "No configuration" leaves /etc/postfix/main.cf absent, so the package neither asks nor starts a system instance.
const DEBCONF = ['postfix postfix/main_mailer_type select No configuration'];
const STARTUP_TIMEOUT_MS = 20_000;
const STOP_TIMEOUT_MS = 10_000;
const PORT_ATTEMPTS = 3;
const DOMAIN_RE = /^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)+$/;
const IPV4_RE = /^(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)$/;
const NETWORK_RE = /^[0-9.]+(?:\/\d{1,2})?$/;
/** main.cf expands `$`, splits lists on whitespace and commas, and treats `#` as a comment. */
const UNSAFE_PATH_RE = /[\s$,#"'\\{}=]/;
/** Unix socket paths are limited to 107 bytes; the longest Postfix puts under the queue is private/proxywrite. */
const MAX_QUEUE_DIR_LENGTH = 107 - '/private/proxywrite'.length;

async function missingPostfixFiles(): Promise<string[]> {
  const present = await Promise.all(REQUIRED_FILES.map(exists));
  return REQUIRED_FILES.filter((_, i) => !present[i]);
}

let installing: Promise<void> | undefined;

async function installPostfix(missing: string[]): Promise<void> {
  const advice =
    "install Debian's postfix (e.g. `echo 'postfix postfix/main_mailer_type select No configuration' | " +
    'sudo debconf-set-selections && sudo apt-get install -y postfix`)';
  if (!(await aptAvailable())) {
    throw new Error(`Postfix is not installed (missing ${missing.join(', ')}) and cannot be installed here: ${advice}`);
  }
  await aptInstall(PACKAGES, DEBCONF);
  const still = await missingPostfixFiles();
  if (still.length > 0) throw new Error(`apt-get installed postfix but ${still.join(', ')} is still missing`);
}

/** Makes sure Debian's Postfix is present, installing it unattended ("No configuration") with apt-get when root. */
export async function ensurePostfixInstalled(): Promise<void> {
  const missing = await missingPostfixFiles();
  if (missing.length === 0) return;
  installing ??= installPostfix(missing).finally(() => {
    installing = undefined;
  });
  await installing;
}

async function uidOf(account: string): Promise<number> {
  const result = await run('id', ['-u', account]);
  const value = Number.parseInt(result.output, 10);
  if (result.code !== 0 || !Number.isInteger(value)) {
    throw new Error(
      `system account "${account}" not found (${result.output || 'id failed'}); Debian's postfix package creates it`,
    );
  }
  return value;
}

/** The first ancestor of `dir` that other accounts cannot traverse, if any. */

interface Layout {
  dir: string;
  configDir: string;
  queueDir: string;
  dataDir: string;
  logPath: string;
  senderLoginMap: string;
  staticMailboxMap: string;
}

function layoutOf(dir: string): Layout {
  const configDir = join(dir, 'conf');
  return {
    dir,
    configDir,
    queueDir: join(dir, 'queue'),
    dataDir: join(dir, 'data'),
    logPath: join(dir, 'postfix.log'),
    senderLoginMap: join(configDir, 'sender_login_maps.regexp'),
    staticMailboxMap: join(configDir, 'static_mailboxes'),
  };
}

interface Settings {
  domain: string;
  host: string;
  port: number;
  /** The submission smtpd behind the PROXY protocol, when there is one. */
  proxyPort: number | undefined;
  /** Where Dovecot's LMTP and auth listeners are reached. */
  dovecotHost: string;
  lmtpPort: number;
  authPort: number;
  xclientHosts: string[];
  /** The MX-style smtpd, when there is one. */
  inboundPort: number | undefined;
  directoryMaps: PostfixOptions['directoryMaps'];
}

/** The main.cf lines that hand recipient (and sender owner) lookups to the directory's socketmap. */
function renderDirectoryMaps(l: Layout, s: Settings): string {
  const d = s.directoryMaps;
  if (d === undefined) return '';
  const socketmap = (name: string): string => `socketmap:inet:${d.host}:${d.port}:${name}`;
  const statics = (d.staticMailboxes ?? []).length > 0 ? `texthash:${l.staticMailboxMap}, ` : '';
  return `
# Recipients come from sasl-gate's user directory (socketmap_table(5)); unknown ones get 550 5.1.1.
virtual_mailbox_maps = ${statics}${socketmap('mailbox')}
virtual_alias_maps = ${socketmap('alias')}
`;
}

function renderMainCf(l: Layout, s: Settings): string {
  return `# Private Postfix instance for sasl-gate (generated; rewritten on every start).
compatibility_level = 3.6
queue_directory = ${l.queueDir}
data_directory = ${l.dataDir}
mail_owner = postfix
setgid_group = postdrop
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
myhostname = smtp.${s.domain}
mydestination =
# Nothing is delivered locally, so the system's aliases are never consulted.
alias_maps =
alias_database =
# postlogd writes the log, so no syslog daemon is needed; Postfix refuses paths outside the prefixes.
maillog_file = ${l.logPath}
maillog_file_prefixes = ${l.dir}

virtual_mailbox_domains = ${s.domain}
virtual_transport = lmtp:inet:${s.dovecotHost}:${s.lmtpPort}
# Mail for other domains bounces back to its sender instead of leaving the machine.
default_transport = error:this test instance delivers only to ${s.domain}
# Retry soon when Dovecot was briefly away, not after the production default of minutes.
queue_run_delay = 5s
minimal_backoff_time = 5s
maximal_backoff_time = 15s
message_size_limit = 52428800
# local(8) and virtual(8) refuse to start when their limit is below message_size_limit.
mailbox_size_limit = 0
virtual_mailbox_limit = 0

smtpd_sasl_auth_enable = yes
smtpd_sasl_type = dovecot
smtpd_sasl_path = inet:${s.dovecotHost}:${s.authPort}
smtpd_tls_security_level = none
smtpd_authorized_xclient_hosts = ${s.xclientHosts.join(', ')}
# The port XCLIENT PORT= names shows up in the log next to the client address.
smtpd_client_port_logging = yes
# Every address belongs to the login of the same name: a user may send only as themselves.
smtpd_sender_login_maps = ${s.directoryMaps?.senders === true ? `socketmap:inet:${s.directoryMaps.host}:${s.directoryMaps.port}:senders, ` : ''}regexp:${l.senderLoginMap}
smtpd_sender_restrictions = reject_authenticated_sender_login_mismatch
smtpd_relay_restrictions = permit_sasl_authenticated, reject_unauth_destination
smtpd_recipient_restrictions = permit_sasl_authenticated, reject
# Sender restrictions answer MAIL FROM itself rather than waiting for the first RCPT TO.
smtpd_delay_reject = no
${renderDirectoryMaps(l, s)}`;
}

function renderMasterCf(s: Settings): string {
  const submission = ['  -o syslog_name=postfix/submission', '  -o smtpd_tls_security_level=none'];
  const proxied =
    s.proxyPort === undefined
      ? ''
      : [
          '# The same submission service, behind the PROXY protocol: the header names the client.',
          `${s.host}:${s.proxyPort} inet n - n - - smtpd`,
          ...submission,
          '  -o smtpd_upstream_proxy_protocol=haproxy',
          '',
        ].join('\n');
  const inbound =
    s.inboundPort === undefined
      ? ''
      : [
          '# MX-style: mail from anyone, for the domain only, no AUTH.',
          `${s.host}:${s.inboundPort} inet n - n - - smtpd`,
          '  -o syslog_name=postfix/inbound',
          '  -o smtpd_sasl_auth_enable=no',
          '  -o smtpd_authorized_xclient_hosts=',
          '  -o smtpd_sender_restrictions=',
          '  -o smtpd_relay_restrictions=reject_unauth_destination',
          '  -o smtpd_recipient_restrictions=reject_unauth_destination',
          '',
        ].join('\n');
  // No service is chrooted: a chroot would need copies of /etc files inside the queue directory.
  return `# service type  private unpriv  chroot  wakeup  maxproc command + args
${s.host}:${s.port} inet n - n - - smtpd
${submission.join('\n')}
${proxied}${inbound}pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
local     unix  -       n       n       -       -       local
virtual   unix  -       n       n       -       -       virtual
lmtp      unix  -       -       n       -       -       lmtp
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
`;
}

async function writeConfig(l: Layout, s: Settings): Promise<void> {
  await writeFile(join(l.configDir, 'main.cf'), renderMainCf(l, s), { mode: 0o644 });
  await writeFile(join(l.configDir, 'master.cf'), renderMasterCf(s), { mode: 0o644 });
  await writeFile(l.senderLoginMap, '/^(.+)$/ ${1}\n', { mode: 0o644 });
  const statics = s.directoryMaps?.staticMailboxes ?? [];
  if (statics.length > 0) {
    await writeFile(l.staticMailboxMap, statics.map((a) => `${a} ${a.split('@')[1] ?? a}/${a.split('@')[0] ?? a}/\n`).join(''), { mode: 0o644 });
  }
}



/**
 * Opens an SMTP session (sending `preamble` first, if any) and returns the greeting and the EHLO
 * reply, each as one string of lines; rejects when the server does not answer in time or closes early.
 */
function probeSmtp(
  host: string,
  port: number,
  timeoutMs: number,
  preamble?: Buffer,
): Promise<{ greeting: string; ehlo: string }> {
  return new Promise((resolve, reject) => {
    const socket = connect({ host, port });
    if (preamble !== undefined) socket.write(preamble);
    let buffered = '';
    let current: string[] = [];
    const replies: string[] = [];
    const finish = (err: Error | null): void => {
      socket.destroy();
      if (err) reject(err);
      else resolve({ greeting: replies[0] ?? '', ehlo: replies[1] ?? '' });
    };
    socket.setTimeout(timeoutMs, () => finish(new Error(`no SMTP reply from ${host}:${port} within ${timeoutMs} ms`)));
    socket.on('error', (err) => finish(err));
    socket.on('end', () => finish(new Error(`${host}:${port} closed the connection after ${replies.length} replies`)));
    socket.on('data', (chunk: Buffer) => {
      buffered += chunk.toString('latin1');
      for (let end = buffered.indexOf('\r\n'); end >= 0; end = buffered.indexOf('\r\n')) {
        const line = buffered.slice(0, end);
        buffered = buffered.slice(end + 2);
        current.push(line);
        // "250-..." continues a reply, "250 ..." ends it.
        if (line[3] === '-') continue;
        replies.push(current.join('\n'));
        current = [];
        if (replies.length === 1) {
          if (!line.startsWith('220')) return finish(null);
          socket.write('EHLO devstack.probe\r\n');
        } else {
          socket.end('QUIT\r\n');
          return finish(null);
        }
      }
    });
  });
}






async function diagnose(l: Layout, problem: string, output: string): Promise<string> {
  const check = await run(POSTFIX, ['-c', l.configDir, 'check']);
  // The check logs its findings, so the tail is read after it.
  const log = await tailOf(l.logPath);
  return (
    `Postfix (${l.configDir}) ${problem}` +
    `\n--- master output ---\n${output.trim() || '(none)'}` +
    `\n--- postfix -c ${l.configDir} check (exit ${String(check.code)}) ---\n${check.output || '(no output)'}` +
    `\n--- log tail (${l.logPath}) ---\n${log || '(empty)'}`
  );
}

interface Launched {
  child: ChildProcess;
  pgid: number;
  exited: Promise<void>;
  watchdog: ChildProcess;
}

/**
 * Stops the instance's process group once this process is gone, however it ends (even SIGKILL):
 * the watchdog waits for end-of-file on a pipe whose other end only this process holds. A
 * parent-death signal (setpriv --pdeathsig) cannot do it, because the kernel clears that when the
 * master briefly takes the postfix account's identity during startup.
 */
function startWatchdog(pgid: number): ChildProcess {
  // dash's kill takes no `--`; a negative number after the signal names the group.
  const script = 'read -r _; kill -TERM "-$1" 2>/dev/null; sleep 5; kill -KILL "-$1" 2>/dev/null';
  // Detached, so a Ctrl-C meant for us cannot kill the watchdog before it has done its job.
  const watchdog = spawn('/bin/sh', ['-c', script, 'sasl-gate-postfix-watchdog', String(pgid)], {
    detached: true,
    stdio: ['pipe', 'ignore', 'ignore'],
  });
  watchdog.on('error', () => undefined);
  watchdog.unref();
  (watchdog.stdin as { unref?: () => void } | null)?.unref?.();
  return watchdog;
}

async function launch(
  l: Layout,
  host: string,
  port: number,
  proxyPort: number | undefined,
  inboundPort?: number,
): Promise<Launched> {
  // The master stays in the foreground as our child (-s keeps its startup errors on stdout), in its
  // own session and process group, so stop() can signal the master and all its daemons at once.
  const spawned = spawnGroup(MASTER, ['-c', l.configDir, '-s']);
  const { child, pgid, exited } = spawned;
  const watchdog = pgid === undefined ? undefined : startWatchdog(pgid);
  const fail = async (reason: string): Promise<never> => {
    if (pgid !== undefined) {
      signalGroup(pgid, 'SIGKILL');
      untrackGroup(pgid);
    }
    watchdog?.kill('SIGKILL');
    await Promise.race([exited, sleep(2_000)]);
    const log = await readFile(l.logPath, 'utf8').catch(() => '');
    const text = `${spawned.output()}\n${log}`;
    throw new StartupError(
      await diagnose(l, `${reason}${spawned.spawnError() ? `: ${spawned.spawnError()?.message}` : ''}`, spawned.output()),
      /Address already in use/i.test(text),
    );
  };
  if (pgid === undefined || watchdog === undefined) return fail('could not be started');
  trackGroup(pgid);

  const deadline = Date.now() + STARTUP_TIMEOUT_MS;
  let lastProblem = 'no attempt yet';
  for (;;) {
    if (spawned.exitCode() !== undefined) return fail(`exited during startup (${spawned.exitCode()})`);
    if (Date.now() > deadline) {
      return fail(`did not answer on ${host}:${port} within ${STARTUP_TIMEOUT_MS} ms (${lastProblem})`);
    }
    let probe: { greeting: string; ehlo: string };
    try {
      probe = await probeSmtp(host, port, 2_000);
    } catch (err) {
      lastProblem = err instanceof Error ? err.message : String(err);
      // A daemon that dies at startup is only throttled and retried by the master: fail now, not at the deadline.
      const log = await readFile(l.logPath, 'utf8').catch(() => '');
      const fatal = log.split('\n').find((line) => /: fatal: |bad command startup -- throttling/.test(line));
      if (fatal !== undefined) {
        return fail(`has a daemon that cannot start (${fatal.replace(/^.*?: (?=fatal: |warning: )/, '')})`);
      }
      await sleep(50);
      continue;
    }
    if (!probe.greeting.startsWith('220')) return fail(`greeted with ${JSON.stringify(probe.greeting)} instead of 220`);
    // Without a working link to Dovecot's auth service smtpd silently leaves AUTH out of EHLO.
    if (!/^250[ -]AUTH /m.test(probe.ehlo)) {
      return fail(`offers no AUTH (Dovecot SASL unreachable?); EHLO said:\n${probe.ehlo}`);
    }
    if (proxyPort !== undefined) {
      // The master opened both listeners together; this proves smtpd takes a header there.
      let proxied: { greeting: string; ehlo: string };
      try {
        proxied = await probeSmtp(host, proxyPort, 5_000, encodeProxyV2Local());
      } catch (err) {
        return fail(`did not answer on the PROXY protocol port ${host}:${proxyPort} (${err instanceof Error ? err.message : String(err)})`);
      }
      if (!proxied.greeting.startsWith('220') || !/^250[ -]AUTH /m.test(proxied.ehlo)) {
        return fail(
          `answered on the PROXY protocol port ${host}:${proxyPort} with ${JSON.stringify(proxied.greeting)} and EHLO:\n${proxied.ehlo}`,
        );
      }
    }
    if (inboundPort !== undefined) {
      let inbound: { greeting: string; ehlo: string };
      try {
        inbound = await probeSmtp(host, inboundPort, 5_000);
      } catch (err) {
        return fail(`did not answer on the inbound port ${host}:${inboundPort} (${err instanceof Error ? err.message : String(err)})`);
      }
      if (!inbound.greeting.startsWith('220')) {
        return fail(`answered on the inbound port ${host}:${inboundPort} with ${JSON.stringify(inbound.greeting)}`);
      }
    }
    return { child, pgid, exited, watchdog };
  }
}

function dovecotAddress(host: string): string {
  // Postfix connects to a wildcard listener through loopback.
  if (host === '0.0.0.0' || host === '*') return '127.0.0.1';
  if (!IPV4_RE.test(host)) {
    throw new Error(`Dovecot listens on ${JSON.stringify(host)}, but this Postfix instance speaks IPv4 only`);
  }
  return host;
}

/** Starts a private Postfix that authenticates through and delivers into the given Dovecot; resolves once it offers AUTH. */
export async function startPostfix(opts: PostfixOptions): Promise<PostfixInstance> {
  if (process.getuid?.() !== 0) {
    throw new Error("Postfix's master must run as root (it binds ports and switches to the postfix account)");
  }
  const missing = await missingPostfixFiles();
  if (missing.length > 0) {
    throw new Error(`Postfix is not installed (missing ${missing.join(', ')}); call ensurePostfixInstalled() first`);
  }
  const host = opts.host ?? '127.0.0.1';
  if (!IPV4_RE.test(host)) throw new Error(`host ${JSON.stringify(host)} is not an IPv4 address Postfix can listen on`);
  if (!DOMAIN_RE.test(opts.domain)) throw new Error(`domain ${JSON.stringify(opts.domain)} is not a domain name`);
  const xclientHosts = opts.xclientHosts ?? ['127.0.0.0/8'];
  const badNetwork = xclientHosts.find((n) => !NETWORK_RE.test(n));
  if (badNetwork !== undefined) {
    throw new Error(`xclientHosts entry ${JSON.stringify(badNetwork)} is not an IPv4 address or network`);
  }
  const { authPort, lmtpPort } = opts.dovecot;
  if (authPort === undefined) {
    throw new Error('the Dovecot instance has no auth listener (authPort) for Postfix to authenticate against');
  }
  const dovecotHost = dovecotAddress(opts.dovecot.host);
  const directoryMaps = opts.directoryMaps;
  if (directoryMaps !== undefined) {
    if (!IPV4_RE.test(directoryMaps.host)) {
      throw new Error(`directoryMaps.host ${JSON.stringify(directoryMaps.host)} is not an IPv4 address`);
    }
    if (!Number.isInteger(directoryMaps.port) || directoryMaps.port <= 0 || directoryMaps.port > 65535) {
      throw new Error(`directoryMaps.port ${String(directoryMaps.port)} is not a port`);
    }
    const bad = (directoryMaps.staticMailboxes ?? []).find((a) => !/^[A-Za-z0-9._+-]+@[A-Za-z0-9.-]+$/.test(a));
    if (bad !== undefined) throw new Error(`directoryMaps.staticMailboxes entry ${JSON.stringify(bad)} is not a plain address`);
  }
  const postfixUid = await uidOf('postfix');

  const dir = await mkdtemp(join(tmpdir(), 'sasl-gate-postfix-'));
  const l = layoutOf(dir);
  const removeDir = (): Promise<void> => rm(dir, { recursive: true, force: true }).catch(() => undefined);
  try {
    const closed = await closedAncestor(dir);
    const problem = UNSAFE_PATH_RE.test(dir)
      ? 'contains characters main.cf cannot hold'
      : l.queueDir.length > MAX_QUEUE_DIR_LENGTH
        ? `is too long for Postfix's unix sockets (keep ${l.queueDir} under ${MAX_QUEUE_DIR_LENGTH} characters; set TMPDIR)`
        : closed !== undefined
          ? `lies under ${closed}, which the postfix account cannot traverse (set TMPDIR elsewhere)`
          : undefined;
    if (problem !== undefined) throw new Error(`temp directory ${JSON.stringify(dir)} ${problem}`);
    // The daemons run as postfix and must reach the queue; config and queue roots stay root's.
    await chmod(dir, 0o755);
    await mkdir(l.configDir, { mode: 0o755 });
    await mkdir(l.queueDir, { mode: 0o755 });
    await mkdir(l.dataDir, { mode: 0o700 });
    await chown(l.dataDir, postfixUid, -1);
  } catch (err) {
    await removeDir();
    throw err;
  }

  let launched: Launched | undefined;
  let port = 0;
  let proxyPort: number | undefined;
  let inboundPort: number | undefined;
  for (let attempt = 1; launched === undefined; attempt++) {
    try {
      port = await freePort(host);
      if (opts.proxyProtocol === true) {
        do proxyPort = await freePort(host);
        while (proxyPort === port);
      }
      if (opts.inbound === true) {
        do inboundPort = await freePort(host);
        while (inboundPort === port || inboundPort === proxyPort);
      }
      const settings: Settings = {
        domain: opts.domain,
        host,
        port,
        proxyPort,
        dovecotHost,
        lmtpPort,
        authPort,
        xclientHosts,
        inboundPort,
        directoryMaps,
      };
      await writeConfig(l, settings);
      if (attempt === 1) {
        // Creates the queue's subdirectories with the owners and modes Postfix insists on.
        const check = await run(POSTFIX, ['-c', l.configDir, 'check']);
        if (check.code !== 0) {
          throw new Error(await diagnose(l, `failed its check (exit ${String(check.code)})`, check.output));
        }
      }
      launched = await launch(l, host, port, proxyPort, inboundPort);
    } catch (err) {
      // Another process may take a free port between our probe and the master's bind.
      if (err instanceof StartupError && err.addressInUse && attempt < PORT_ATTEMPTS) continue;
      await removeDir();
      throw err;
    }
  }
  const { child, pgid, exited, watchdog } = launched;
  // Let a caller that forgets stop() still exit; the exit hook and the death signal clean up.
  child.unref();
  for (const stream of [child.stdout, child.stderr]) (stream as { unref?: () => void } | null)?.unref?.();

  let finalLog: string | undefined;
  let stopping: Promise<void> | undefined;
  const keepDir = process.env.SASLGATE_KEEP_POSTFIX_DIR === '1';

  const stop = async (): Promise<void> => {
    child.ref();
    // The master answers SIGTERM by terminating its daemons, then exits.
    signalGroup(pgid, 'SIGTERM');
    const stopped = await Promise.race([exited.then(() => true), sleep(STOP_TIMEOUT_MS).then(() => false)]);
    if (!stopped) signalGroup(pgid, 'SIGKILL');
    await exited;
    // A daemon busy with a session would otherwise keep the listening socket it inherited.
    signalGroup(pgid, 'SIGKILL');
    for (let i = 0; i < 200 && groupAlive(pgid); i++) await sleep(25);
    untrackGroup(pgid);
    watchdog.kill('SIGKILL');
    finalLog = await readFile(l.logPath, 'utf8').catch(() => '');
    if (!keepDir) await removeDir();
  };

  return {
    host,
    submissionPort: port,
    ...(proxyPort === undefined ? {} : { proxySubmissionPort: proxyPort }),
    ...(inboundPort === undefined ? {} : { inboundPort }),
    configDir: l.configDir,
    queueDir: l.queueDir,
    logPath: l.logPath,
    readLog: async () => finalLog ?? (await readFile(l.logPath, 'utf8').catch(() => '')),
    stop: () => (stopping ??= stop()),
  };
}

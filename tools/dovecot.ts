/**
 * A private Dovecot 2.3 instance from the distribution's package, for integration tests and the
 * demo: its own config, sockets, state, log and mail under one directory, listening on free ports,
 * never touching /etc/dovecot or the system's port 143. It is configured the way sasl-gate expects
 * a production backend to be: a master user, the proxy in `login_trusted_networks`, plaintext
 * logins allowed on the (loopback) wire, and an LMTP listener for Postfix to deliver into. On request
 * it also opens a second IMAP listener behind the PROXY protocol (`haproxy = yes`), for sasl-gate's
 * `backends.imap.proxyProtocol`. On request it serves POP3 and ManageSieve too (with Sieve filtering at
 * delivery). For benchmarks it can also open an IMAPS listener, validate OAuth2
 * tokens itself (the `oauth2` passdb), and be sized for many connections; all of that is off unless asked.
 */
import type { ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { chmod, chown, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { connect } from 'node:net';
import { connect as tlsConnect } from 'node:tls';
import { tmpdir, userInfo } from 'node:os';
import { join, resolve as resolvePath } from 'node:path';
import { aptAvailable, aptInstall } from './apt.js';
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

/** A mailbox owner known to the private Dovecot (names may be e-mail addresses). */
export interface DovecotUser {
  name: string;
  password: string;
}

/** What to start: the users, the master user sasl-gate logs in with, and where. */
export interface DovecotOptions {
  users: DovecotUser[];
  master: { user: string; password: string };
  /** Directory for config, sockets, state, log and mail; a fresh temp dir when omitted (and then removed on stop). */
  dir?: string;
  /** Address the IMAP and LMTP listeners bind to; 127.0.0.1 by default. */
  host?: string;
  /**
   * Dovecot's per-IP authentication penalty (anvil), on by default as in production. It delays
   * every auth reply from an address after failures there (2, 4, 8, up to 15 s), even from
   * login_trusted_networks in 2.3, so tests that fail many logins from one address may turn it off.
   */
  authPenalty?: boolean;
  /**
   * Also open a second IMAP listener (`haproxyPort`) that expects a PROXY protocol header (v1 or v2)
   * before anything else, as `inet_listener { haproxy = yes }`, accepting it from
   * `haproxy_trusted_networks` (loopback, and `host` when that is not loopback). Off by default.
   */
  haproxy?: boolean;
  /**
   * Dovecot's `disable_plaintext_auth` as in production (its default, `yes`): PLAIN and LOGIN only
   * on secured connections, i.e. TLS, loopback, `login_trusted_networks`, or a PROXY header whose
   * SSL TLV says the client used TLS. Off by default (`no`: plaintext logins on the loopback wire).
   */
  disablePlaintextAuth?: boolean;
  /**
   * Also open an IMAPS listener (`imapsPort`, TLS from the first byte) with this certificate and
   * key (PEM file paths, read by Dovecot's config process at start). Sets `ssl = yes`, so the plain
   * IMAP listener then offers STARTTLS as well. Off by default (`ssl = no`).
   */
  tls?: { cert: string; key: string };
  /**
   * Also accept XOAUTH2 and OAUTHBEARER with Dovecot's own `oauth2` passdb (for benchmarks against
   * sasl-gate): `local` validates JWTs in Dovecot (`introspection_mode = local`) with the keys
   * given here, written as PEM into a `local_validation_key_dict = fs:posix:` directory under
   * `<azp>/<alg>/<kid>`; `post` asks `introspectionUrl` (RFC 7662) on every login. Password logins
   * keep using the passwd-file. Off by default.
   */
  oauth2?: DovecotOAuth2Options;
  /** `mail_max_userip_connections` for IMAP (Dovecot's default is 10 per user and client address). */
  maxUserIpConnections?: number;
  /**
   * Sizes the services for this many IMAP connections at once (login, imap, auth and anvil
   * client and process limits; several connections per imap process, all mail belonging to one
   * account). Dovecot's defaults (100 login processes, 1024 imap processes) apply when unset.
   * The process that starts Dovecot needs `ulimit -n` above this.
   */
  connectionCapacity?: number;
  /**
   * imap-login in Dovecot's high-performance mode (`service_count = 0`, a process per CPU kept
   * ready, each serving many connections) instead of the default high-security mode (one new
   * process per connection).
   */
  highPerformanceLogin?: boolean;
  /**
   * Further passwd-files consulted after the built-in users (absolute paths), e.g. the one
   * sasl-gate's `PasswdFileWriter` keeps from its user directory: each is a userdb (LMTP delivery and
   * logins find the users in it; Dovecot re-reads it when it changes), and also a passdb with
   * `passdb: true`, so the master user may log in as users that exist only there. Their uid and gid
   * must be {@link DovecotInstance.mailUid} and `mailGid`. None by default.
   */
  passwdFiles?: Array<{ path: string; passdb?: boolean }>;
  /**
   * Also serve POP3 (`pop3Port`, plain TCP, the same users and master user); with `haproxy` also a
   * POP3 listener behind the PROXY protocol (`pop3HaproxyPort`). Off by default.
   */
  pop3?: boolean;
  /**
   * Also serve ManageSieve (`sievePort`, plain TCP with STARTTLS when `tls` is set, the same users and
   * master user) and run the users' active Sieve script on LMTP delivery (scripts in `~/sieve`, the
   * active one linked from `~/.dovecot.sieve`); with `haproxy` also a ManageSieve listener behind the
   * PROXY protocol (`sieveHaproxyPort`). Off by default.
   */
  sieve?: boolean;
}

/** Dovecot's own OAuth2 token validation (see {@link DovecotOptions.oauth2}). */
export interface DovecotOAuth2Options {
  mode: 'local' | 'post';
  /** `local`: public keys in PEM (SPKI), looked up as `<azp>/<alg>/<kid>` (azp: the token's, or `default`). */
  keys?: Array<{ azp: string; alg: string; kid: string; pem: string }>;
  /** `post`: the introspection endpoint, with client credentials in the URL (`http://id:secret@host/...`). */
  introspectionUrl?: string;
  /** Accepted `iss` values (Dovecot's `issuers`); unset, any. */
  issuers?: string[];
  /** The token claim that names the user; default `email`. */
  usernameAttribute?: string;
  /** `client_id`: when set, the token's `aud` must contain it. */
  clientId?: string;
  /** `post`: the introspection answer's field that must be present (`active`), and its value. */
  activeAttribute?: string;
  activeValue?: string;
}

/** A running private Dovecot. */
export interface DovecotInstance {
  host: string;
  imapPort: number;
  lmtpPort: number;
  /**
   * Dovecot's SASL authentication service on TCP (`service auth { inet_listener }`), for Postfix's
   * `smtpd_sasl_type = dovecot` with `smtpd_sasl_path = inet:host:port`; startDovecot always sets it.
   */
  authPort?: number;
  /**
   * The IMAP listener behind the PROXY protocol: every connection must start with a PROXY header
   * (`LOCAL` for a connection of the proxy's own). Present only when started with `haproxy: true`.
   */
  haproxyPort?: number;
  /** The IMAPS listener (TLS from the first byte); present only when started with `tls`. */
  imapsPort?: number;
  /** The POP3 listener; present only when started with `pop3: true`. */
  pop3Port?: number;
  /** The POP3 listener behind the PROXY protocol; present only with both `pop3` and `haproxy`. */
  pop3HaproxyPort?: number;
  /** The ManageSieve listener; present only when started with `sieve: true`. */
  sievePort?: number;
  /** The ManageSieve listener behind the PROXY protocol; present only with both `sieve` and `haproxy`. */
  sieveHaproxyPort?: number;
  /** The uid and gid mail is stored with (userdb entries must name them; Dovecot refuses others). */
  mailUid?: number;
  mailGid?: number;
  /** Process id of Dovecot's master process (the group leader of all its processes). */
  pid?: number;
  dir: string;
  logPath: string;
  /** The whole Dovecot log so far (after stop(), the log as it was when the instance ended). */
  readLog(): Promise<string>;
  /** Terminates every process of the instance and waits until they are gone; safe to call twice. */
  stop(): Promise<void>;
  /** Stops the servers but keeps the configuration, mail and ports, for outage tests; `resume()` brings them back. */
  halt(): Promise<void>;
  /** Starts a halted instance again on the same ports; resolves once it greets. */
  resume(): Promise<void>;
}

const DOVECOT = '/usr/sbin/dovecot';
const DOVECONF = '/usr/bin/doveconf';
const LIBEXEC = '/usr/lib/dovecot';
const REQUIRED_FILES = [DOVECOT, DOVECONF, `${LIBEXEC}/imap`, `${LIBEXEC}/imap-login`, `${LIBEXEC}/lmtp`];
const PACKAGES = ['dovecot-imapd', 'dovecot-lmtpd'];
const POP3_PACKAGES = ['dovecot-pop3d'];
const SIEVE_PACKAGES = ['dovecot-managesieved', 'dovecot-sieve'];
const STARTUP_TIMEOUT_MS = 15_000;
const STOP_TIMEOUT_MS = 10_000;
const PORT_ATTEMPTS = 3;
/** Dovecot's default `auth_username_chars`; anything else is refused by Dovecot itself. */
const USERNAME_RE = /^[A-Za-z0-9._@-]+$/;
/** Characters that would need quoting in dovecot.conf or that Dovecot expands (`%`, `$`). */
const UNSAFE_PATH_RE = /[\s"'#%$\\{}]/;
const HOST_RE = /^[A-Za-z0-9.:-]+$/;
/** Unix socket paths are limited to 107 bytes and Dovecot's longest name under base_dir is 22. */
const MAX_BASE_DIR_LENGTH = 84;

async function missingDovecotFiles(): Promise<string[]> {
  const present = await Promise.all(REQUIRED_FILES.map(exists));
  return REQUIRED_FILES.filter((_, i) => !present[i]);
}

let installing: Promise<void> | undefined;

async function installDovecot(missing: string[]): Promise<void> {
  const advice = `install Debian's ${PACKAGES.join(' and ')} (e.g. \`sudo apt-get install -y ${PACKAGES.join(' ')}\`)`;
  if (process.getuid?.() !== 0) {
    throw new Error(`Dovecot is not installed (missing ${missing.join(', ')}): ${advice}`);
  }
  if (!(await aptAvailable())) {
    throw new Error(`Dovecot is not installed (missing ${missing.join(', ')}) and apt-get is unavailable: ${advice}`);
  }
  await aptInstall(PACKAGES);
  const still = await missingDovecotFiles();
  if (still.length > 0) {
    throw new Error(`apt-get installed ${PACKAGES.join(' ')} but ${still.join(', ')} is still missing`);
  }
}

/** Makes sure Debian's Dovecot IMAP and LMTP servers are present, installing them with apt-get when root. */
export async function ensureDovecotInstalled(): Promise<void> {
  const missing = await missingDovecotFiles();
  if (missing.length === 0) return;
  installing ??= installDovecot(missing).finally(() => {
    installing = undefined;
  });
  await installing;
}

/** Makes sure Debian's Dovecot POP3 server is present, installing it with apt-get when root. */
async function ensurePop3Installed(): Promise<void> {
  const binaries = [`${LIBEXEC}/pop3`, `${LIBEXEC}/pop3-login`];
  const present = await Promise.all(binaries.map(exists));
  if (present.every(Boolean)) return;
  if (!(await aptAvailable())) {
    throw new Error(`Dovecot's POP3 server is not installed: install Debian's ${POP3_PACKAGES.join(' ')} (\`sudo apt-get install -y ${POP3_PACKAGES.join(' ')}\`)`);
  }
  await aptInstall(POP3_PACKAGES);
}

/** Makes sure Debian's Dovecot ManageSieve server and Sieve plugin are present, installing them with apt-get when root. */
async function ensureSieveInstalled(): Promise<void> {
  const files = [`${LIBEXEC}/managesieve`, `${LIBEXEC}/managesieve-login`, `${LIBEXEC}/modules/lib90_sieve_plugin.so`];
  const present = await Promise.all(files.map(exists));
  if (present.every(Boolean)) return;
  if (!(await aptAvailable())) {
    throw new Error(`Dovecot's ManageSieve server or Sieve plugin is not installed: install Debian's ${SIEVE_PACKAGES.join(' ')} (\`sudo apt-get install -y ${SIEVE_PACKAGES.join(' ')}\`)`);
  }
  await aptInstall(SIEVE_PACKAGES);
}

/** Dovecot's salted SHA-512: base64(sha512(password || salt) || salt); no colon can appear, unlike PLAIN. */
function ssha512(password: string): string {
  const salt = randomBytes(16);
  const digest = createHash('sha512').update(password, 'utf8').update(salt).digest();
  return `{SSHA512}${Buffer.concat([digest, salt]).toString('base64')}`;
}

async function idOf(flag: '-u' | '-g', account: string): Promise<number> {
  const result = await run('id', [flag, account]);
  const value = Number.parseInt(result.stdout.trim(), 10);
  if (result.code !== 0 || !Number.isInteger(value)) {
    throw new Error(
      `system account "${account}" not found (${result.stderr.trim() || 'id failed'}); ` +
        "Debian's dovecot-core package creates dovecot and dovenull",
    );
  }
  return value;
}

interface Accounts {
  root: boolean;
  loginUser: string;
  internalUser: string;
  /** Only set without root; as root the package's `dovecot` group (Dovecot's default) is right. */
  internalGroup: string | undefined;
  internalUid: number;
  mailUid: number;
  mailGid: number;
}

async function accounts(): Promise<Accounts> {
  if (process.getuid?.() === 0) {
    // Mail must not be accessed as root, nor as Dovecot's own accounts.
    const [mailUid, mailGid, internalUid] = await Promise.all([
      idOf('-u', 'nobody'),
      idOf('-g', 'nobody'),
      idOf('-u', 'dovecot'),
      idOf('-u', 'dovenull'),
    ]);
    return {
      root: true,
      loginUser: 'dovenull',
      internalUser: 'dovecot',
      internalGroup: undefined,
      internalUid,
      mailUid,
      mailGid,
    };
  }
  // Without root Dovecot cannot switch users, so everything runs as the caller (Dovecot's "rootless" mode).
  const me = userInfo();
  const group = await run('id', ['-gn']);
  if (group.code !== 0) throw new Error(`cannot find the name of group ${me.gid}: ${group.stderr.trim()}`);
  return {
    root: false,
    loginUser: me.username,
    internalUser: me.username,
    internalGroup: group.stdout.trim(),
    internalUid: me.uid,
    mailUid: me.uid,
    mailGid: me.gid,
  };
}

function validateName(kind: string, name: string): string {
  if (!USERNAME_RE.test(name)) {
    throw new Error(
      `${kind} name ${JSON.stringify(name)} has characters outside Dovecot's auth_username_chars (${USERNAME_RE.source})`,
    );
  }
  // auth_username_format = %Lu lowercases before the passwd-file lookup.
  return name.toLowerCase();
}

/** The first ancestor of `dir` that other accounts cannot traverse, if any. */

function isLoopbackOrWildcard(host: string): boolean {
  return host === '::1' || host === '::' || host === '*' || host === '0.0.0.0' || host.startsWith('127.');
}

/** The optional parts of the configuration ({@link DovecotOptions} tls, oauth2, limits), with their ports. */
interface ConfigExtras {
  imapsPort: number | undefined;
  pop3Port: number | undefined;
  pop3HaproxyPort: number | undefined;
  sievePort: number | undefined;
  sieveHaproxyPort: number | undefined;
  tls: { cert: string; key: string } | undefined;
  oauth2: DovecotOAuth2Options | undefined;
  maxUserIpConnections: number | undefined;
  connectionCapacity: number | undefined;
  highPerformanceLogin: boolean;
  passwdFiles: Array<{ path: string; passdb?: boolean }>;
}

interface Layout {
  dir: string;
  conf: string;
  logPath: string;
  baseDir: string;
  stateDir: string;
  authDir: string;
  mailDir: string;
  homeDir: string;
  usersFile: string;
  mastersFile: string;
  oauth2Conf: string;
  oauth2KeysDir: string;
}

function layoutOf(dir: string): Layout {
  return {
    dir,
    conf: join(dir, 'dovecot.conf'),
    logPath: join(dir, 'dovecot.log'),
    baseDir: join(dir, 'run'),
    stateDir: join(dir, 'state'),
    authDir: join(dir, 'auth'),
    mailDir: join(dir, 'mail'),
    homeDir: join(dir, 'home'),
    usersFile: join(dir, 'auth', 'users'),
    mastersFile: join(dir, 'auth', 'master-users'),
    oauth2Conf: join(dir, 'auth', 'dovecot-oauth2.conf.ext'),
    oauth2KeysDir: join(dir, 'auth', 'oauth2-keys'),
  };
}

function renderConfig(
  l: Layout,
  a: Accounts,
  host: string,
  imapPort: number,
  lmtpPort: number,
  authPort: number,
  postmaster: string,
  authPenalty: boolean,
  haproxyPort: number | undefined,
  disablePlaintextAuth: boolean,
  extras: ConfigExtras,
): string {
  const trusted = ['127.0.0.0/8', '::1', ...(isLoopbackOrWildcard(host) ? [] : [host])];
  const haproxyListener =
    haproxyPort === undefined
      ? ''
      : `
  # The client's address comes from the PROXY header that must open every connection here.
  inet_listener imap-haproxy {
    address = ${host}
    port = ${haproxyPort}
    haproxy = yes
  }`;
  const anvil = [
    ...(a.root ? [] : ['  chroot =']),
    ...(authPenalty
      ? []
      : ['  # No listener, no penalty tracking.', '  unix_listener anvil-auth-penalty {', '    mode = 0', '  }']),
  ];
  const capacity = extras.connectionCapacity;
  // Several connections per imap process: they all run as the one mail account.
  const imapClientLimit = capacity === undefined ? undefined : Math.min(100, Math.max(1, Math.ceil(capacity / 100)));
  const imapProcessLimit =
    capacity === undefined || imapClientLimit === undefined ? undefined : Math.ceil(capacity / imapClientLimit) + 64;
  const loginProcessLimit = capacity === undefined ? undefined : 512;
  if (capacity !== undefined) {
    // Every login and mail process keeps a connection to anvil.
    anvil.push(`  client_limit = ${(imapProcessLimit ?? 0) + (loginProcessLimit ?? 0) + capacity + 1000}`);
  }
  const anvilSection = anvil.length === 0 ? '' : `service anvil {\n${anvil.join('\n')}\n}\n`;
  const tls = extras.tls;
  const oauth2 = extras.oauth2;
  const imapsListener =
    extras.imapsPort === undefined
      ? '  inet_listener imaps {\n    port = 0\n  }'
      : `  inet_listener imaps {\n    address = ${host}\n    port = ${extras.imapsPort}\n    ssl = yes\n  }`;
  const loginTuning = [
    ...(extras.highPerformanceLogin
      ? ['  # High-performance mode: long-lived login processes, each serving many connections.', '  service_count = 0', '  process_min_avail = 2']
      : []),
    ...(loginProcessLimit === undefined ? [] : [`  process_limit = ${loginProcessLimit}`]),
    ...(capacity === undefined && !extras.highPerformanceLogin ? [] : [`  client_limit = ${Math.max(1000, capacity ?? 0)}`]),
  ];
  const imapService =
    capacity === undefined
      ? ''
      : `service imap {\n  # Processes serve many connections (service_count = 1, the default, would end one after its first).\n  service_count = 0\n  client_limit = ${imapClientLimit}\n  process_limit = ${imapProcessLimit}\n}\n`;
  const protocolImap =
    extras.maxUserIpConnections === undefined
      ? ''
      : `protocol imap {\n  mail_max_userip_connections = ${extras.maxUserIpConnections}\n}\n`;
  const pop3Service =
    extras.pop3Port === undefined
      ? ''
      : `service pop3-login {
  inet_listener pop3 {
    address = ${host}
    port = ${extras.pop3Port}
  }
  inet_listener pop3s {
    port = 0
  }${
    extras.pop3HaproxyPort === undefined
      ? ''
      : `\n  inet_listener pop3-haproxy {\n    address = ${host}\n    port = ${extras.pop3HaproxyPort}\n    haproxy = yes\n  }`
  }${a.root ? '' : '\n  chroot ='}
}
`;
  const sieveService =
    extras.sievePort === undefined
      ? ''
      : `service managesieve-login {
  inet_listener sieve {
    address = ${host}
    port = ${extras.sievePort}
  }${
    extras.sieveHaproxyPort === undefined
      ? ''
      : `\n  inet_listener sieve-haproxy {\n    address = ${host}\n    port = ${extras.sieveHaproxyPort}\n    haproxy = yes\n  }`
  }${a.root ? '' : '\n  chroot ='}
}
# Delivery runs the user's active script; ManageSieve edits the same storage in the user's home.
protocol lmtp {
  mail_plugins = $mail_plugins sieve
}
plugin {
  sieve = file:~/sieve;active=~/.dovecot.sieve
}
`;
  const passwordPassdbMechanisms = oauth2 === undefined ? '' : '\n  mechanisms = plain login';
  const extraPassdbs = extras.passwdFiles
    .filter((f) => f.passdb === true)
    .map((f) => `passdb {\n  driver = passwd-file\n  args = ${f.path}${passwordPassdbMechanisms}\n}\n`)
    .join('');
  const extraUserdbs = extras.passwdFiles
    .map((f) => `userdb {\n  # Re-read whenever the file changes.\n  driver = passwd-file\n  args = ${f.path}\n}\n`)
    .join('');
  const oauth2Passdb =
    oauth2 === undefined
      ? ''
      : `passdb {
  # Dovecot's own token validation (${oauth2.mode}); the token is the "password" of XOAUTH2 / OAUTHBEARER.
  driver = oauth2
  mechanisms = xoauth2 oauthbearer
  args = ${l.oauth2Conf}
}
`;
  return `# Private Dovecot instance for sasl-gate (generated; rewritten on every start).
# Names the processes (dovecot-<instance>/imap) so ps tells the instances apart.
instance_name = sasl-gate-imap${imapPort}
base_dir = ${l.baseDir}
state_dir = ${l.stateDir}
log_path = ${l.logPath}
protocols = imap${extras.pop3Port === undefined ? '' : ' pop3'}${extras.sievePort === undefined ? '' : ' sieve'} lmtp
listen = ${host}
${tls === undefined ? 'ssl = no' : `ssl = yes\nssl_cert = <${tls.cert}\nssl_key = <${tls.key}`}
${capacity === undefined ? '' : `default_client_limit = ${Math.max(1000, capacity + 1000)}\n`}disable_plaintext_auth = ${disablePlaintextAuth ? 'yes' : 'no'}

default_login_user = ${a.loginUser}
default_internal_user = ${a.internalUser}
${a.internalGroup === undefined ? '' : `default_internal_group = ${a.internalGroup}\n`}first_valid_uid = ${a.mailUid}
last_valid_uid = ${a.mailUid}
first_valid_gid = ${a.mailGid}
last_valid_gid = ${a.mailGid}

auth_mechanisms = plain login${oauth2 === undefined ? '' : ' xoauth2 oauthbearer'}
auth_master_user_separator = *
# The proxy connects from here; only trusted peers may set the client address with ID.
login_trusted_networks = ${trusted.join(' ')}
${haproxyPort === undefined ? '' : `# Only these peers may send a PROXY header (to listeners with haproxy = yes).\nhaproxy_trusted_networks = ${trusted.join(' ')}\n`}auth_verbose = yes
verbose_proctitle = yes

passdb {
  driver = passwd-file
  args = ${l.mastersFile}
  master = yes
  # Verify that the user the master logs in as exists.
  pass = yes
}
passdb {
  driver = passwd-file
  args = ${l.usersFile}${passwordPassdbMechanisms}
}
${extraPassdbs}${oauth2Passdb}userdb {
  driver = passwd-file
  args = ${l.usersFile}
}
${extraUserdbs}
mail_location = maildir:${l.mailDir}/%u
lmtp_save_to_detail_mailbox = no
recipient_delimiter =
postmaster_address = ${postmaster}

service imap-login {
  inet_listener imap {
    address = ${host}
    port = ${imapPort}
  }
${imapsListener}${haproxyListener}${a.root ? '' : '\n  chroot ='}${loginTuning.length === 0 ? '' : `\n${loginTuning.join('\n')}`}
}
${imapService}${protocolImap}${pop3Service}${sieveService}
service lmtp {
  inet_listener lmtp {
    address = ${host}
    port = ${lmtpPort}
  }
}
service auth {${capacity === undefined ? '' : `\n  client_limit = ${(loginProcessLimit ?? 0) + (imapProcessLimit ?? 0) + 1000}`}
  # For Postfix's Dovecot SASL client: over TCP no socket file needs modes shared by both servers' accounts.
  inet_listener auth-client {
    address = ${host}
    port = ${authPort}
  }
}
${anvilSection}service stats {
  # Mail processes run as an account outside Dovecot's group and would log an error per login.
  unix_listener stats-writer {
    mode = 0666
  }
}
`;
}

interface Logins {
  users: DovecotUser[];
  master: DovecotUser;
}

function checkedUsers(opts: DovecotOptions): Logins {
  const users = opts.users.map((u) => ({ name: validateName('user', u.name), password: u.password }));
  const seen = new Set<string>();
  for (const u of users) {
    if (seen.has(u.name)) throw new Error(`user ${u.name} is listed twice`);
    seen.add(u.name);
  }
  const master = { name: validateName('master user', opts.master.user), password: opts.master.password };
  if (seen.has(master.name)) throw new Error(`master user ${master.name} must not also be a regular user`);
  return { users, master };
}

async function writeFiles(
  l: Layout,
  a: Accounts,
  { users, master }: Logins,
  authPenalty: boolean,
  host: string,
  imapPort: number,
  lmtpPort: number,
  authPort: number,
  haproxyPort: number | undefined,
  disablePlaintextAuth: boolean,
  extras: ConfigExtras,
): Promise<void> {
  // Unprivileged Dovecot processes must traverse the directory, but need not list it.
  await chmod(l.dir, 0o711);
  await mkdir(l.stateDir, { recursive: true, mode: 0o750 });
  await mkdir(l.authDir, { recursive: true, mode: 0o700 });
  await mkdir(l.mailDir, { recursive: true, mode: 0o700 });
  await mkdir(l.homeDir, { recursive: true, mode: 0o700 });
  // The auth process (default_internal_user) reads the passwd-files; the mail user owns the mail.
  await chown(l.authDir, a.internalUid, -1);
  await chown(l.mailDir, a.mailUid, a.mailGid);
  await chown(l.homeDir, a.mailUid, a.mailGid);

  // Homes apart from the maildirs: Dovecot advises against a home that is also the mail root.
  const userLines = users.map(
    (u) => `${u.name}:${ssha512(u.password)}:${a.mailUid}:${a.mailGid}::${l.homeDir}/${u.name}::\n`,
  );
  const masterLine = `${master.name}:${ssha512(master.password)}\n`;
  for (const [path, text] of [
    [l.usersFile, userLines.join('')],
    [l.mastersFile, masterLine],
  ] as const) {
    await writeFile(path, text, { mode: 0o600 });
    await chmod(path, 0o600);
    await chown(path, a.internalUid, -1);
  }

  const domain = users.map((u) => u.name.split('@')[1]).find((d) => d !== undefined && d !== '') ?? 'example.test';
  const config = renderConfig(
    l,
    a,
    host,
    imapPort,
    lmtpPort,
    authPort,
    `postmaster@${domain}`,
    authPenalty,
    haproxyPort,
    disablePlaintextAuth,
    extras,
  );
  if (extras.oauth2 !== undefined) await writeOAuth2Files(l, a, extras.oauth2);
  await writeFile(l.conf, config, { mode: 0o644 });
}

/** A path segment of the key dictionary: Dovecot escapes `/` and `%` in azp and kid; refuse what would need it. */
const KEY_SEGMENT_RE = /^[A-Za-z0-9_.:=+-]+$/;
/** Values written unquoted into dovecot-oauth2.conf.ext. */
const OAUTH2_VALUE_RE = /^[^\s"'#\\{}$%]+$/;

/** The oauth2 passdb's settings file and, for local validation, one PEM file per key. */
async function writeOAuth2Files(l: Layout, a: Accounts, o: DovecotOAuth2Options): Promise<void> {
  const value = (name: string, v: string): string => {
    if (!OAUTH2_VALUE_RE.test(v)) throw new Error(`oauth2.${name} ${JSON.stringify(v)} cannot be written into dovecot-oauth2.conf.ext`);
    return v;
  };
  const lines = [
    '# Dovecot oauth2 passdb (generated by the sasl-gate devstack).',
    `username_attribute = ${value('usernameAttribute', o.usernameAttribute ?? 'email')}`,
    ...(o.issuers === undefined || o.issuers.length === 0 ? [] : [`issuers = ${o.issuers.map((i) => value('issuers', i)).join(' ')}`]),
    ...(o.clientId === undefined ? [] : [`client_id = ${value('clientId', o.clientId)}`]),
    ...(o.activeAttribute === undefined ? [] : [`active_attribute = ${value('activeAttribute', o.activeAttribute)}`]),
    ...(o.activeValue === undefined ? [] : [`active_value = ${value('activeValue', o.activeValue)}`]),
  ];
  if (o.mode === 'local') {
    const keys = o.keys ?? [];
    if (keys.length === 0) throw new Error('oauth2 local validation needs at least one key');
    await mkdir(l.oauth2KeysDir, { recursive: true, mode: 0o700 });
    await chown(l.oauth2KeysDir, a.internalUid, -1);
    for (const k of keys) {
      for (const [name, segment] of [['azp', k.azp], ['alg', k.alg], ['kid', k.kid]] as const) {
        if (!KEY_SEGMENT_RE.test(segment) || segment.startsWith('.')) {
          throw new Error(`oauth2 key ${name} ${JSON.stringify(segment)} cannot be a file name in the key dictionary`);
        }
      }
      // Dovecot upper-cases the token's alg before the lookup.
      const parts = [k.azp, k.alg.toUpperCase()];
      let dir = l.oauth2KeysDir;
      for (const part of parts) {
        dir = join(dir, part);
        await mkdir(dir, { recursive: true, mode: 0o700 });
        await chown(dir, a.internalUid, -1);
      }
      const file = join(dir, k.kid);
      await writeFile(file, k.pem.endsWith('\n') ? k.pem : `${k.pem}\n`, { mode: 0o600 });
      await chown(file, a.internalUid, -1);
    }
    lines.push('introspection_mode = local', `local_validation_key_dict = fs:posix:prefix=${l.oauth2KeysDir}/`);
  } else {
    if (o.introspectionUrl === undefined) throw new Error('oauth2 mode post needs introspectionUrl');
    lines.push('introspection_mode = post', `introspection_url = ${value('introspectionUrl', o.introspectionUrl)}`);
    // Every login asks the provider: let many run at once.
    lines.push('max_parallel_connections = 32', 'timeout_msecs = 10000');
  }
  await writeFile(l.oauth2Conf, `${lines.join('\n')}\n`, { mode: 0o600 });
  await chown(l.oauth2Conf, a.internalUid, -1);
}


/** Reads up to the first CRLF a server sends (after sending `preamble`, if any), or rejects. */
function readGreeting(host: string, port: number, timeoutMs: number, preamble?: Buffer): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = connect({ host, port });
    if (preamble !== undefined) socket.write(preamble);
    let buffered = '';
    const finish = (err: Error | null, line?: string): void => {
      socket.destroy();
      if (err) reject(err);
      else resolve(line ?? '');
    };
    socket.setTimeout(timeoutMs, () => finish(new Error(`no greeting from ${host}:${port} within ${timeoutMs} ms`)));
    socket.on('error', (err) => finish(err));
    socket.on('data', (chunk: Buffer) => {
      buffered += chunk.toString('latin1');
      const end = buffered.indexOf('\r\n');
      if (end >= 0) finish(null, buffered.slice(0, end));
    });
    socket.on('end', () => finish(new Error(`${host}:${port} closed the connection before greeting`)));
  });
}

/** Reads the first line a server sends after a TLS handshake (certificate not checked: only for readiness). */
function readTlsGreeting(host: string, port: number, timeoutMs: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = tlsConnect({ host, port, rejectUnauthorized: false });
    let buffered = '';
    const finish = (err: Error | null, line?: string): void => {
      socket.destroy();
      if (err) reject(err);
      else resolve(line ?? '');
    };
    socket.setTimeout(timeoutMs, () => finish(new Error(`no TLS greeting from ${host}:${port} within ${timeoutMs} ms`)));
    socket.on('error', (err) => finish(err));
    socket.on('data', (chunk: Buffer) => {
      buffered += chunk.toString('latin1');
      const end = buffered.indexOf('\r\n');
      if (end >= 0) finish(null, buffered.slice(0, end));
    });
    socket.on('end', () => finish(new Error(`${host}:${port} closed the TLS connection before greeting`)));
  });
}






async function doveconfReport(conf: string): Promise<string> {
  const result = await run(DOVECONF, ['-c', conf, '-n']);
  return `${result.stdout}${result.stderr}`.trim();
}


interface Launched {
  child: ChildProcess;
  pgid: number;
  exited: Promise<void>;
}

async function launch(
  l: Layout,
  host: string,
  imapPort: number,
  lmtpPort: number,
  haproxyPort: number | undefined,
  imapsPort?: number,
  pop3Port?: number,
  pop3HaproxyPort?: number,
  sievePort?: number,
  sieveHaproxyPort?: number,
): Promise<Launched> {
  // setpriv's parent-death signal takes Dovecot down even when this process is SIGKILLed.
  const setpriv = (await exists('/usr/bin/setpriv')) ? '/usr/bin/setpriv' : undefined;
  const [file, args] = setpriv
    ? [setpriv, ['--pdeathsig', 'TERM', '--', DOVECOT, '-F', '-c', l.conf]]
    : [DOVECOT, ['-F', '-c', l.conf]];
  const spawned = spawnGroup(file, args);
  const { child, pgid, exited } = spawned;
  const fail = async (reason: string): Promise<never> => {
    if (pgid !== undefined) {
      signalGroup(pgid, 'SIGKILL');
      untrackGroup(pgid);
    }
    await Promise.race([exited, sleep(2_000)]);
    const log = await tailOf(l.logPath);
    const config = await doveconfReport(l.conf);
    const text = `${spawned.output()}\n${log}`;
    throw new StartupError(
      `Dovecot (${l.conf}) ${reason}` +
        `${spawned.spawnError() ? `\n${spawned.spawnError()?.message}` : ''}` +
        `\n--- dovecot output ---\n${spawned.output().trim() || '(none)'}` +
        `\n--- log tail (${l.logPath}) ---\n${log || '(empty)'}` +
        `\n--- doveconf -c ${l.conf} -n ---\n${config}`,
      /Address already in use/i.test(text),
    );
  };
  if (pgid === undefined) return fail('could not be started');
  trackGroup(pgid);

  const deadline = Date.now() + STARTUP_TIMEOUT_MS;
  let lastProblem = 'no attempt yet';
  for (;;) {
    if (spawned.exitCode() !== undefined) return fail(`exited during startup (${spawned.exitCode()})`);
    if (Date.now() > deadline) {
      return fail(`did not answer on ${host}:${imapPort} within ${STARTUP_TIMEOUT_MS} ms (${lastProblem})`);
    }
    try {
      const greeting = await readGreeting(host, imapPort, 1_000);
      if (!greeting.startsWith('* OK')) return fail(`greeted with ${JSON.stringify(greeting)} instead of * OK`);
      const lmtp = await readGreeting(host, lmtpPort, 2_000);
      if (!lmtp.startsWith('220')) return fail(`LMTP greeted with ${JSON.stringify(lmtp)} instead of 220`);
      if (haproxyPort !== undefined) {
        const proxied = await readGreeting(host, haproxyPort, 2_000, encodeProxyV2Local());
        if (!proxied.startsWith('* OK')) {
          return fail(`greeted with ${JSON.stringify(proxied)} instead of * OK on the PROXY protocol listener`);
        }
      }
      if (pop3Port !== undefined) {
        const pop3 = await readGreeting(host, pop3Port, 2_000);
        if (!pop3.startsWith('+OK')) return fail(`greeted with ${JSON.stringify(pop3)} instead of +OK on the POP3 listener`);
      }
      if (pop3HaproxyPort !== undefined) {
        const proxied = await readGreeting(host, pop3HaproxyPort, 2_000, encodeProxyV2Local());
        if (!proxied.startsWith('+OK')) return fail(`greeted with ${JSON.stringify(proxied)} instead of +OK on the POP3 PROXY protocol listener`);
      }
      if (sievePort !== undefined) {
        const sieve = await readGreeting(host, sievePort, 2_000);
        if (!sieve.startsWith('"IMPLEMENTATION"')) return fail(`greeted with ${JSON.stringify(sieve)} instead of "IMPLEMENTATION" on the ManageSieve listener`);
      }
      if (sieveHaproxyPort !== undefined) {
        const proxied = await readGreeting(host, sieveHaproxyPort, 2_000, encodeProxyV2Local());
        if (!proxied.startsWith('"IMPLEMENTATION"')) {
          return fail(`greeted with ${JSON.stringify(proxied)} instead of "IMPLEMENTATION" on the ManageSieve PROXY protocol listener`);
        }
      }
      if (imapsPort !== undefined) {
        const secured = await readTlsGreeting(host, imapsPort, 3_000);
        if (!secured.startsWith('* OK')) return fail(`greeted with ${JSON.stringify(secured)} instead of * OK on the IMAPS listener`);
      }
      break;
    } catch (err) {
      lastProblem = err instanceof Error ? err.message : String(err);
      await sleep(50);
    }
  }
  return { child, pgid, exited };
}

/** Starts a private Dovecot (IMAP and LMTP on free ports) for the given users and master user; resolves once it greets. */
export async function startDovecot(opts: DovecotOptions): Promise<DovecotInstance> {
  const host = opts.host ?? '127.0.0.1';
  const ownDir = opts.dir === undefined;
  if (!HOST_RE.test(host)) throw new Error(`host ${JSON.stringify(host)} is not an address Dovecot can listen on`);
  const logins = checkedUsers(opts);
  const passwdFiles = opts.passwdFiles ?? [];
  for (const f of passwdFiles) {
    if (!f.path.startsWith('/') || UNSAFE_PATH_RE.test(f.path)) {
      throw new Error(`passwdFiles path ${JSON.stringify(f.path)} must be absolute, without spaces, quotes, %, $ or braces`);
    }
  }
  // Dovecot needs absolute paths; a relative dir would be resolved against its own cwd.
  const dir = opts.dir === undefined ? await mkdtemp(join(tmpdir(), 'sasl-gate-dovecot-')) : resolvePath(opts.dir);
  const l = layoutOf(dir);
  const problem = UNSAFE_PATH_RE.test(dir)
    ? 'contains characters dovecot.conf cannot hold unquoted'
    : l.baseDir.length > MAX_BASE_DIR_LENGTH
      ? `is too long for Dovecot's unix sockets (keep ${l.baseDir} under ${MAX_BASE_DIR_LENGTH} characters)`
      : undefined;
  if (problem !== undefined) {
    if (ownDir) await rm(dir, { recursive: true, force: true });
    throw new Error(`directory ${JSON.stringify(dir)} ${problem}`);
  }
  await mkdir(dir, { recursive: true });
  const a = await accounts();
  // As root, the auth and mail processes run as other accounts and must reach their files.
  const closed = a.root ? await closedAncestor(dir) : undefined;
  if (closed !== undefined) {
    throw new Error(
      `${closed} is not searchable by other accounts, so Dovecot's unprivileged processes ` +
        `cannot reach ${dir}; pick a dir elsewhere`,
    );
  }

  let launched: Launched | undefined;
  let imapPort = 0;
  let lmtpPort = 0;
  let authPort = 0;
  let haproxyPort: number | undefined;
  let imapsPort: number | undefined;
  let pop3Port: number | undefined;
  let pop3HaproxyPort: number | undefined;
  let sievePort: number | undefined;
  let sieveHaproxyPort: number | undefined;
  if (opts.pop3 === true) await ensurePop3Installed();
  if (opts.sieve === true) await ensureSieveInstalled();
  for (let attempt = 1; launched === undefined; attempt++) {
    imapPort = await freePort(host);
    do lmtpPort = await freePort(host);
    while (lmtpPort === imapPort);
    do authPort = await freePort(host);
    while (authPort === imapPort || authPort === lmtpPort);
    if (opts.haproxy === true) {
      do haproxyPort = await freePort(host);
      while (haproxyPort === imapPort || haproxyPort === lmtpPort || haproxyPort === authPort);
    }
    if (opts.tls !== undefined) {
      do imapsPort = await freePort(host);
      while ([imapPort, lmtpPort, authPort, haproxyPort].includes(imapsPort));
    }
    if (opts.pop3 === true) {
      do pop3Port = await freePort(host);
      while ([imapPort, lmtpPort, authPort, haproxyPort, imapsPort].includes(pop3Port));
      if (opts.haproxy === true) {
        do pop3HaproxyPort = await freePort(host);
        while ([imapPort, lmtpPort, authPort, haproxyPort, imapsPort, pop3Port].includes(pop3HaproxyPort));
      }
    }
    if (opts.sieve === true) {
      do sievePort = await freePort(host);
      while ([imapPort, lmtpPort, authPort, haproxyPort, imapsPort, pop3Port, pop3HaproxyPort].includes(sievePort));
      if (opts.haproxy === true) {
        do sieveHaproxyPort = await freePort(host);
        while ([imapPort, lmtpPort, authPort, haproxyPort, imapsPort, pop3Port, pop3HaproxyPort, sievePort].includes(sieveHaproxyPort));
      }
    }
    await writeFiles(
      l,
      a,
      logins,
      opts.authPenalty ?? true,
      host,
      imapPort,
      lmtpPort,
      authPort,
      haproxyPort,
      opts.disablePlaintextAuth ?? false,
      {
        imapsPort,
        pop3Port,
        pop3HaproxyPort,
        sievePort,
        sieveHaproxyPort,
        tls: opts.tls,
        oauth2: opts.oauth2,
        maxUserIpConnections: opts.maxUserIpConnections,
        connectionCapacity: opts.connectionCapacity,
        highPerformanceLogin: opts.highPerformanceLogin ?? false,
        passwdFiles,
      },
    );
    try {
      launched = await launch(l, host, imapPort, lmtpPort, haproxyPort, imapsPort, pop3Port, pop3HaproxyPort, sievePort, sieveHaproxyPort);
    } catch (err) {
      // Another process may take a free port between our probe and Dovecot's bind.
      if (err instanceof StartupError && err.addressInUse && attempt < PORT_ATTEMPTS) continue;
      if (ownDir) await rm(dir, { recursive: true, force: true }).catch(() => undefined);
      throw err;
    }
  }
  // Let a caller that forgets stop() still exit; the exit hook and the death signal clean up.
  const detach = ({ child }: Launched) => {
    child.unref();
    for (const stream of [child.stdout, child.stderr]) (stream as { unref?: () => void } | null)?.unref?.();
  };
  detach(launched);
  let running: Launched | undefined = launched;

  let finalLog: string | undefined;
  let stopping: Promise<void> | undefined;
  let changing: Promise<void> = Promise.resolve();
  const keepDir = !ownDir || process.env.SASLGATE_KEEP_DOVECOT_DIR === '1';

  /** Terminates every process of the running servers and waits until the group is gone. */
  const terminate = async (): Promise<void> => {
    if (running === undefined) return;
    const { child, pgid, exited } = running;
    running = undefined;
    child.ref();
    signalGroup(pgid, 'SIGTERM');
    const stopped = await Promise.race([exited.then(() => true), sleep(STOP_TIMEOUT_MS).then(() => false)]);
    if (!stopped) signalGroup(pgid, 'SIGKILL');
    await exited;
    // Children that outlive the master (a login process mid-connection) would keep the ports bound.
    signalGroup(pgid, 'SIGKILL');
    for (let i = 0; i < 200 && groupAlive(pgid); i++) await sleep(25);
    untrackGroup(pgid);
  };

  const stop = async (): Promise<void> => {
    await changing.catch(() => undefined);
    await terminate();
    finalLog = await readFile(l.logPath, 'utf8').catch(() => '');
    if (!keepDir) await rm(dir, { recursive: true, force: true });
  };

  const halt = (): Promise<void> => (changing = changing.catch(() => undefined).then(terminate));
  const resume = (): Promise<void> =>
    (changing = changing
      .catch(() => undefined)
      .then(async () => {
        if (stopping) throw new Error('Dovecot instance already stopped');
        if (running !== undefined) return;
        const again = await launch(l, host, imapPort, lmtpPort, haproxyPort, imapsPort, pop3Port, pop3HaproxyPort, sievePort, sieveHaproxyPort);
        detach(again);
        running = again;
      }));

  return {
    host,
    imapPort,
    lmtpPort,
    authPort,
    ...(haproxyPort === undefined ? {} : { haproxyPort }),
    ...(imapsPort === undefined ? {} : { imapsPort }),
    ...(pop3Port === undefined ? {} : { pop3Port }),
    ...(pop3HaproxyPort === undefined ? {} : { pop3HaproxyPort }),
    ...(sievePort === undefined ? {} : { sievePort }),
    ...(sieveHaproxyPort === undefined ? {} : { sieveHaproxyPort }),
    mailUid: a.mailUid,
    mailGid: a.mailGid,
    pid: launched.pgid,
    dir,
    logPath: l.logPath,
    readLog: async () => finalLog ?? (await readFile(l.logPath, 'utf8').catch(() => '')),
    stop: () => (stopping ??= stop()),
    halt,
    resume,
  };
}

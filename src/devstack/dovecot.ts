/**
 * A private Dovecot 2.3 instance from the distribution's package, for integration tests and the
 * demo: its own config, sockets, state, log and mail under one directory, listening on free ports,
 * never touching /etc/dovecot or the system's port 143. It is configured the way sasl-gate expects
 * a production backend to be: a master user, the proxy in `login_trusted_networks`, plaintext
 * logins allowed on the (loopback) wire, and an LMTP listener for Postfix to deliver into. On request
 * it also opens a second IMAP listener behind the PROXY protocol (`haproxy = yes`), for sasl-gate's
 * `backends.imap.proxyProtocol`.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { access, chmod, chown, mkdir, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { connect } from 'node:net';
import { tmpdir, userInfo } from 'node:os';
import { dirname, join, resolve as resolvePath } from 'node:path';
import { aptAvailable, aptInstall } from './apt.js';
import { freePort } from './ports.js';

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
  dir: string;
  logPath: string;
  /** The whole Dovecot log so far (after stop(), the log as it was when the instance ended). */
  readLog(): Promise<string>;
  /** Terminates every process of the instance and waits until they are gone; safe to call twice. */
  stop(): Promise<void>;
}

const DOVECOT = '/usr/sbin/dovecot';
const DOVECONF = '/usr/bin/doveconf';
const LIBEXEC = '/usr/lib/dovecot';
const REQUIRED_FILES = [DOVECOT, DOVECONF, `${LIBEXEC}/imap`, `${LIBEXEC}/imap-login`, `${LIBEXEC}/lmtp`];
const PACKAGES = ['dovecot-imapd', 'dovecot-lmtpd'];
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

const exists = (path: string): Promise<boolean> =>
  access(path).then(
    () => true,
    () => false,
  );

interface RunResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

function run(file: string, args: string[], env?: NodeJS.ProcessEnv): Promise<RunResult> {
  return new Promise((resolve) => {
    execFile(
      file,
      args,
      { env: env ?? process.env, maxBuffer: 64 * 1024 * 1024, encoding: 'utf8' },
      (error, stdout, stderr) => {
        if (error === null) {
          resolve({ code: 0, stdout, stderr });
          return;
        }
        // A non-numeric code means the program could not be run at all (ENOENT, EACCES, ...).
        const code = typeof error.code === 'number' ? error.code : null;
        resolve({ code, stdout, stderr: stderr || error.message });
      },
    );
  });
}

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
async function closedAncestor(dir: string): Promise<string | undefined> {
  for (let current = dirname(dir); ; current = dirname(current)) {
    const info = await stat(current);
    if ((info.mode & 0o001) === 0) return current;
    if (dirname(current) === current) return undefined;
  }
}

function isLoopbackOrWildcard(host: string): boolean {
  return host === '::1' || host === '::' || host === '*' || host === '0.0.0.0' || host.startsWith('127.');
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
  const anvilSection = anvil.length === 0 ? '' : `service anvil {\n${anvil.join('\n')}\n}\n`;
  return `# Private Dovecot instance for sasl-gate (generated; rewritten on every start).
# Names the processes (dovecot-<instance>/imap) so ps tells the instances apart.
instance_name = sasl-gate-imap${imapPort}
base_dir = ${l.baseDir}
state_dir = ${l.stateDir}
log_path = ${l.logPath}
protocols = imap lmtp
listen = ${host}
ssl = no
disable_plaintext_auth = ${disablePlaintextAuth ? 'yes' : 'no'}

default_login_user = ${a.loginUser}
default_internal_user = ${a.internalUser}
${a.internalGroup === undefined ? '' : `default_internal_group = ${a.internalGroup}\n`}first_valid_uid = ${a.mailUid}
last_valid_uid = ${a.mailUid}
first_valid_gid = ${a.mailGid}
last_valid_gid = ${a.mailGid}

auth_mechanisms = plain login
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
  args = ${l.usersFile}
}
userdb {
  driver = passwd-file
  args = ${l.usersFile}
}

mail_location = maildir:${l.mailDir}/%u
lmtp_save_to_detail_mailbox = no
recipient_delimiter =
postmaster_address = ${postmaster}

service imap-login {
  inet_listener imap {
    address = ${host}
    port = ${imapPort}
  }
  inet_listener imaps {
    port = 0
  }${haproxyListener}${a.root ? '' : '\n  chroot ='}
}
service lmtp {
  inet_listener lmtp {
    address = ${host}
    port = ${lmtpPort}
  }
}
service auth {
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
  );
  await writeFile(l.conf, config, { mode: 0o644 });
}

/** PROXY protocol v2 `LOCAL` header: "this connection is the proxy's own", no addresses. */
const PROXY_V2_LOCAL = Buffer.from([
  0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a, 0x20, 0x00, 0x00, 0x00,
]);

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

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

function groupAlive(pgid: number): boolean {
  try {
    process.kill(-pgid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

function signalGroup(pgid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(-pgid, signal);
  } catch {
    // Already gone.
  }
}

// Process groups of instances still running; killed if the test process exits without stop().
const liveGroups = new Set<number>();
let exitHookInstalled = false;

function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.once('exit', () => {
    for (const pgid of liveGroups) signalGroup(pgid, 'SIGTERM');
  });
}

async function tailOf(path: string, lines = 40): Promise<string> {
  const text = await readFile(path, 'utf8').catch(() => '');
  return text.trimEnd().split('\n').slice(-lines).join('\n');
}

async function doveconfReport(conf: string): Promise<string> {
  const result = await run(DOVECONF, ['-c', conf, '-n']);
  return `${result.stdout}${result.stderr}`.trim();
}

class StartupError extends Error {
  constructor(
    message: string,
    readonly addressInUse: boolean,
  ) {
    super(message);
    this.name = 'StartupError';
  }
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
): Promise<Launched> {
  // setpriv's parent-death signal takes Dovecot down even when this process is SIGKILLed.
  const setpriv = (await exists('/usr/bin/setpriv')) ? '/usr/bin/setpriv' : undefined;
  const [file, args] = setpriv
    ? [setpriv, ['--pdeathsig', 'TERM', '--', DOVECOT, '-F', '-c', l.conf]]
    : [DOVECOT, ['-F', '-c', l.conf]];
  const child = spawn(file, args, { detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  const collect = (chunk: Buffer): void => {
    output = (output + chunk.toString('utf8')).slice(-16_384);
  };
  child.stdout?.on('data', collect);
  child.stderr?.on('data', collect);
  let exitCode: string | undefined;
  let spawnError: Error | undefined;
  const exited = new Promise<void>((resolve) => {
    child.once('error', (err) => {
      spawnError = err;
      exitCode = 'spawn error';
      resolve();
    });
    child.once('exit', (code, signal) => {
      exitCode = signal ?? String(code);
      resolve();
    });
  });

  const pgid = child.pid;
  const fail = async (reason: string): Promise<never> => {
    if (pgid !== undefined) {
      signalGroup(pgid, 'SIGKILL');
      liveGroups.delete(pgid);
    }
    await Promise.race([exited, sleep(2_000)]);
    const log = await tailOf(l.logPath);
    const config = await doveconfReport(l.conf);
    const text = `${output}\n${log}`;
    throw new StartupError(
      `Dovecot (${l.conf}) ${reason}` +
        `${spawnError ? `\n${spawnError.message}` : ''}` +
        `\n--- dovecot output ---\n${output.trim() || '(none)'}` +
        `\n--- log tail (${l.logPath}) ---\n${log || '(empty)'}` +
        `\n--- doveconf -c ${l.conf} -n ---\n${config}`,
      /Address already in use/i.test(text),
    );
  };
  if (pgid === undefined) return fail('could not be started');
  liveGroups.add(pgid);
  installExitHook();

  const deadline = Date.now() + STARTUP_TIMEOUT_MS;
  let lastProblem = 'no attempt yet';
  for (;;) {
    if (exitCode !== undefined) return fail(`exited during startup (${exitCode})`);
    if (Date.now() > deadline) {
      return fail(`did not answer on ${host}:${imapPort} within ${STARTUP_TIMEOUT_MS} ms (${lastProblem})`);
    }
    try {
      const greeting = await readGreeting(host, imapPort, 1_000);
      if (!greeting.startsWith('* OK')) return fail(`greeted with ${JSON.stringify(greeting)} instead of * OK`);
      const lmtp = await readGreeting(host, lmtpPort, 2_000);
      if (!lmtp.startsWith('220')) return fail(`LMTP greeted with ${JSON.stringify(lmtp)} instead of 220`);
      if (haproxyPort !== undefined) {
        const proxied = await readGreeting(host, haproxyPort, 2_000, PROXY_V2_LOCAL);
        if (!proxied.startsWith('* OK')) {
          return fail(`greeted with ${JSON.stringify(proxied)} instead of * OK on the PROXY protocol listener`);
        }
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
    );
    try {
      launched = await launch(l, host, imapPort, lmtpPort, haproxyPort);
    } catch (err) {
      // Another process may take a free port between our probe and Dovecot's bind.
      if (err instanceof StartupError && err.addressInUse && attempt < PORT_ATTEMPTS) continue;
      if (ownDir) await rm(dir, { recursive: true, force: true }).catch(() => undefined);
      throw err;
    }
  }
  const { child, pgid, exited } = launched;
  // Let a caller that forgets stop() still exit; the exit hook and the death signal clean up.
  child.unref();
  for (const stream of [child.stdout, child.stderr]) (stream as { unref?: () => void } | null)?.unref?.();

  let finalLog: string | undefined;
  let stopping: Promise<void> | undefined;
  const keepDir = !ownDir || process.env.SASL_GATE_KEEP_DOVECOT_DIR === '1';

  const stop = async (): Promise<void> => {
    child.ref();
    signalGroup(pgid, 'SIGTERM');
    const stopped = await Promise.race([exited.then(() => true), sleep(STOP_TIMEOUT_MS).then(() => false)]);
    if (!stopped) signalGroup(pgid, 'SIGKILL');
    await exited;
    // Children that outlive the master (a login process mid-connection) would keep the ports bound.
    signalGroup(pgid, 'SIGKILL');
    for (let i = 0; i < 200 && groupAlive(pgid); i++) await sleep(25);
    liveGroups.delete(pgid);
    finalLog = await readFile(l.logPath, 'utf8').catch(() => '');
    if (!keepDir) await rm(dir, { recursive: true, force: true });
  };

  return {
    host,
    imapPort,
    lmtpPort,
    authPort,
    ...(haproxyPort === undefined ? {} : { haproxyPort }),
    dir,
    logPath: l.logPath,
    readLog: async () => finalLog ?? (await readFile(l.logPath, 'utf8').catch(() => '')),
    stop: () => (stopping ??= stop()),
  };
}

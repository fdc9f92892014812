import { availableParallelism } from 'node:os';
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { effectiveYaml, writtenForm } from './config/effective.js';
import { ENV_PREFIX, loadConfig, pathToEnvName, type LoadedConfig } from './config/load.js';
import { ConfigError, GateError, UsageError } from './errors.js';
import { createLogger } from './observe/logger.js';
import { checkUsername } from './sasl/username.js';
import { startGate } from './gate.js';
import { packageVersion } from './version.js';

const HELP = `sasl-gate: OAuth2 (XOAUTH2 / OAUTHBEARER) front door for IMAP and SMTP

Usage:
  sasl-gate serve --config FILE        run the proxy
  sasl-gate check-config --config FILE validate the configuration, list every problem, or print
                                       the effective configuration, secrets masked
  sasl-gate check-token --config FILE  read an access token on stdin and say whether sasl-gate
                                       accepts it, which strategy decided, and why
  sasl-gate doctor --config FILE       check the provider, JWKS, backend logins and certificate;
                                       --user NAME tries the master login for NAME, or pipe a
                                       token in to check it and log in as its user
  sasl-gate load SCENARIO --target URL --users FILE
                                       load-test an IMAP or SMTP server
  sasl-gate app-passwords create|list|revoke --config FILE ...
                                       create, list and revoke users' app passwords
  sasl-gate thunderbird-addon --config FILE --out FILE.xpi
                                       write the Thunderbird add-on that registers the provider
  sasl-gate token --issuer URL --client-id ID
                                       print a fresh access token for a command-line mail
                                       client (msmtp, mbsync, mutt, aerc), signing in once
  sasl-gate --version | --help

sasl-gate COMMAND --help (or sasl-gate help COMMAND) tells what a command does, its options,
exit status and examples.

Every configuration key can also be set from the environment: ${pathToEnvName(['oauth', 'clientSecret'])}
sets oauth.clientSecret, ${pathToEnvName(['listeners', 0, 'bind'])} sets listeners[0].bind.
`;

const CONFIG_OPTION = `  -c, --config FILE   the YAML configuration file; or set ${ENV_PREFIX}CONFIG. Every key can also be
                      set from the environment (${pathToEnvName(['master', 'passwordFile'])}=... sets
                      master.passwordFile), which wins over the file
  -h, --help          this text`;

type Options = NonNullable<ParseArgsConfig['options']>;

interface Command {
  options: Options;
  help: string;
}

const CONFIG_OPTIONS: Options = {
  config: { type: 'string', short: 'c' },
  help: { type: 'boolean', short: 'h' },
};

const COMMANDS: Record<string, Command> = {
  serve: {
    options: CONFIG_OPTIONS,
    help: `Usage: sasl-gate serve --config FILE

Runs the proxy: the listeners of the configuration, the admin endpoint (admin.bind) and the
user directory (directory), until SIGTERM or SIGINT. The configuration is validated first, the
way check-config does; any problem stops start-up with the list of problems.
Logs are JSON lines on standard output (log.level).

With workers (auto, or a number above 1), a supervisor process starts that many workers behind
the same listeners, restarts one that dies, and runs the admin endpoint, the portal and the
directory; signals sent to it reach every worker.

Signals:
  SIGHUP              load tls.cert and tls.key again for new connections
  SIGTERM, SIGINT     stop accepting; open sessions get limits.shutdownGraceSeconds, then the
                      rest are closed (a second signal closes them at once)

Options:
${CONFIG_OPTION}

Exit status:
  0   stopped by a signal
  1   the configuration has problems, or a listener could not start (port taken, no right to
      bind a port below 1024: give the process CAP_NET_BIND_SERVICE)
  2   usage error

Examples:
  sasl-gate serve --config /etc/sasl-gate/config.yaml
  systemctl start sasl-gate            (examples/systemd/sasl-gate.service)
`,
  },
  'check-config': {
    options: { ...CONFIG_OPTIONS, json: { type: 'boolean' } },
    help: `Usage: sasl-gate check-config --config FILE [--json]

Validates the configuration without starting anything, exactly as serve would: the file, the
${ENV_PREFIX}* variables, and the files read at start (master.passwordFile, tls.cert, tls.key,
the directory's token files). Every problem is listed in one run, each with its key as the
documentation writes it (listeners[0].bind), the form the value must take (host:port, a whole
number, an https:// URL), "did you mean" for an unknown key, and a hint when a path can only
exist inside a container (/run/secrets/..., a configuration next to a compose.yaml).

When the configuration is valid, prints the effective configuration on standard output as YAML:
defaults filled in, secrets masked (the file each was read from named in a comment), and keys
set from the environment marked. Warnings go to standard error.

Options:
${CONFIG_OPTION}
  --json              print the effective configuration as one JSON object instead

Exit status:
  0   valid (there may be warnings)
  1   the configuration has problems (listed on standard error)
  2   usage error, or no configuration given

Examples:
  sasl-gate check-config --config /etc/sasl-gate/config.yaml
  ${pathToEnvName(['master', 'passwordFile'])}=./secrets/master_password sasl-gate check-config -c sasl-gate.yaml
  docker compose run --rm --no-deps sasl-gate check-config --config /etc/sasl-gate/config.yaml
`,
  },
  'check-token': {
    options: CONFIG_OPTIONS,
    help: `Usage: sasl-gate check-token --config FILE < TOKEN

Reads one access token on standard input (a leading "Bearer " is ignored) and says whether
sasl-gate would accept it for a login: the verdict of each strategy of oauth.validation in turn,
then the identity and the claim it came from, and the expiry; or the precise reason for the
rejection (expired, wrong_audience, unknown_key, ...; see docs/troubleshooting.md). It asks the
provider like serve does. The token is never printed.

Options:
${CONFIG_OPTION}

Exit status:
  0   accepted
  1   rejected, or the configuration has problems
  2   no token on standard input, or usage error
  3   could not be decided: the provider was unreachable or failing (temporary)

Examples:
  sasl-gate check-token --config /etc/sasl-gate/config.yaml < token.txt
  printf '%s' "$TOKEN" | sasl-gate check-token -c /etc/sasl-gate/config.yaml
`,
  },
  doctor: {
    options: { ...CONFIG_OPTIONS, user: { type: 'string', short: 'u' } },
    help: `Usage: sasl-gate doctor --config FILE [--user NAME] [< TOKEN]

Checks everything sasl-gate depends on, the way serve uses it, and prints one line per check:
PASS, WARN or FAIL, what it found and, for anything that did not pass, what to change.

  discovery      the provider's OpenID configuration at oauth.issuer, and the endpoints
                 oauth.validation needs
  jwks           the issuer's signing keys, usable with oauth.algorithms (jwt validation)
  imap backend   Dovecot answers on backends.imap and offers AUTH=PLAIN to sasl-gate
  imap master    a master login (master.user, master.password) as a user
  smtp backend   Postfix answers on backends.smtp and offers XCLIENT (login: xclient) or
                 AUTH PLAIN (login: master)
  smtp xclient   XCLIENT LOGIN= as a user (login: xclient)
  smtp master    AUTH PLAIN with the master credentials as a user (login: master)
  certificate    tls.cert and tls.key: readable, belonging together, not expired
  token          a token piped in on standard input: accepted, by which strategy, for whom
  autoconfig     with portal: what mail apps are told (autoconfig), then the DNS records to
                 publish: autoconfig and ua-auto-config names, RFC 6186 / 8314 SRV records for
                 each listener, and the PACC digest record

A master login needs a user to log in as (Dovecot refuses the master user logging in as
itself). --user NAME names one, without any token: the way to test master.password, whose
mistakes show as NO [UNAVAILABLE] to every token user. Without --user, the user of a token
piped in is tried; with neither, the master logins are skipped with a warning.
Nothing is changed anywhere, and no token or password is printed.

Options:
${CONFIG_OPTION}
  -u, --user NAME     try the master logins (IMAP, and SMTP) for this mailbox

Exit status:
  0   no check failed (warnings allowed)
  1   a check failed, or the configuration has problems
  2   usage error

Examples:
  sasl-gate doctor --config /etc/sasl-gate/config.yaml
  sasl-gate doctor --config /etc/sasl-gate/config.yaml --user alice@example.com
  sasl-gate doctor --config /etc/sasl-gate/config.yaml < token.txt
`,
  },
  'app-passwords': {
    options: {
      ...CONFIG_OPTIONS,
      user: { type: 'string', short: 'u' },
      label: { type: 'string', short: 'l' },
      protocols: { type: 'string' },
      expires: { type: 'string' },
      json: { type: 'boolean' },
      all: { type: 'boolean' },
    },
    help: `Usage: sasl-gate app-passwords create --config FILE --user USER --label LABEL
                                      [--protocols imap,smtp] [--expires DAYS]
       sasl-gate app-passwords list --config FILE [--user USER] [--json] [--all]
       sasl-gate app-passwords revoke --config FILE --user USER --label LABEL

App passwords are per-device passwords for mail clients without OAuth: a PLAIN or LOGIN login
with one logs in as its user through the master user (appPasswords.enabled). They are kept in
the database in storage.dir, or in PostgreSQL with storage.postgres, hashed with the server key
(appPasswords.keyFile, the same file on every replica; or the key generated in storage.dir).
These commands work while serve runs; serve sees each change at its next login.

  create   makes a password for USER named LABEL (unique among USER's live passwords) and prints
           it alone on the last line of standard output. It is shown this once: it is not
           stored, only its keyed hash.
  list     the live passwords (of USER), newest first: user, label, protocols, created, expiry,
           last use. Never a password or a hash.
  revoke   revokes USER's password named LABEL at once.

Options:
${CONFIG_OPTION}
  -u, --user USER     the mail user (the address the backend knows)
  -l, --label LABEL   the password's name, 1 to 64 printable characters ("phone", "printer")
  --protocols LIST    create: what it is good for, of imap, smtp, pop3, sieve (comma-separated);
                      default appPasswords.defaultProtocols
  --expires DAYS      create: it stops working after this many days (whole number); default never
  --json              list: one JSON array instead of the table
  --all               list: revoked and expired passwords too, with their status

Exit status:
  0   done
  1   refused (duplicate label, too many passwords, no such password), or the configuration
      or the database has problems
  2   usage error

Examples:
  sasl-gate app-passwords create -c config.yaml -u alice@example.com -l printer --protocols smtp
  sasl-gate app-passwords list -c config.yaml --user alice@example.com --json
  sasl-gate app-passwords revoke -c config.yaml --user alice@example.com --label printer
`,
  },
  'thunderbird-addon': {
    options: { ...CONFIG_OPTIONS, out: { type: 'string', short: 'o' } },
    help: `Usage: sasl-gate thunderbird-addon --config FILE --out FILE.xpi

Writes a Thunderbird add-on (.xpi, unsigned: for deployment by enterprise policy) whose manifest
registers the OpenID provider with Thunderbird's oauth_provider key: the host name mail apps
connect to (autoconfig.hostname), the public client autoconfig.clientId with PKCE, its scopes,
the authorization and token endpoints (autoconfig.authorizationEndpoint / tokenEndpoint, else the
provider's discovery document), and from Thunderbird 153 issuerIdentifier and sign-in in the
system browser, from 155 emailDomains (autoconfig.addonMinVersion). README.txt in the add-on says
which version reads which key. No secret is ever written into it.

Options:
${CONFIG_OPTION}
  -o, --out FILE      where to write the .xpi (replaced if it exists)

Exit status:
  0   written
  1   the configuration has problems (no autoconfig.clientId), or the provider's discovery
      document could not be read, or the file could not be written
  2   usage error

Examples:
  sasl-gate thunderbird-addon --config /etc/sasl-gate/config.yaml --out example-mail.xpi
`,
  },
};

const version = packageVersion;

const out = (text: string) => process.stdout.write(text);
const err = (text: string) => process.stderr.write(text);

/** The help of one command (`load` has its own); undefined for an unknown command. */
export function commandHelp(name: string): string | undefined {
  return COMMANDS[name]?.help;
}

/** `sasl-gate demo`, which older documentation names: the demo's dev stack is not in the package. */
function demoMoved(): number {
  err('sasl-gate demo: the demo is not part of the installed package; it runs from a source checkout\n' +
    'of sasl-gate: npm ci && npm run demo\n');
  return 2;
}

/** Runs the command line; resolves with the exit code. */
export async function main(argv: string[]): Promise<number> {
  // The load harness has its own options and help, parsed strictly.
  if (argv[0] === 'load') {
    const { runLoad } = await import('./load/cli.js');
    return runLoad(argv.slice(1));
  }
  // The token helper runs on users' machines, without a configuration, with its own options.
  if (argv[0] === 'token') {
    const { runTokenCommand } = await import('./token-helper/cli.js');
    return runTokenCommand(argv.slice(1));
  }
  // The command is the first word that is not an option (or an option's value).
  const { positionals } = parseArgs({ args: argv, allowPositionals: true, strict: false, options: { config: { type: 'string', short: 'c' }, user: { type: 'string', short: 'u' } } });
  const name = positionals[0];
  if (name === undefined || name === 'help') {
    const { values } = parseArgs({ args: argv, allowPositionals: true, strict: false, options: { help: { type: 'boolean', short: 'h' }, version: { type: 'boolean', short: 'V' } } });
    if (values.version === true) {
      out(`${version()}\n`);
      return 0;
    }
    const topic = positionals[1];
    if (name === 'help' && topic !== undefined) {
      if (topic === 'load') {
        const { runLoad } = await import('./load/cli.js');
        return runLoad(['--help']);
      }
      if (topic === 'demo') return demoMoved();
      if (topic === 'token') {
        const { TOKEN_HELP } = await import('./token-helper/cli.js');
        out(TOKEN_HELP);
        return 0;
      }
      const help = commandHelp(topic);
      if (help === undefined) {
        err(`sasl-gate: unknown command "${topic}"\n\n${HELP}`);
        return 2;
      }
      out(help);
      return 0;
    }
    out(HELP);
    return name === undefined && values.help !== true ? 2 : 0;
  }
  if (name === 'demo') return demoMoved();
  const command = COMMANDS[name];
  if (!command) {
    err(`sasl-gate: unknown command "${name}"\n\n${HELP}`);
    return 2;
  }
  let values: Record<string, string | boolean | Array<string | boolean> | undefined>;
  let action: string | undefined;
  try {
    const parsed = parseArgs({ args: argv, allowPositionals: true, strict: true, options: command.options });
    const allowed = name === 'app-passwords' ? 2 : 1;
    if (parsed.positionals.length > allowed) throw new UsageError(`unexpected argument "${parsed.positionals[allowed]}"`);
    values = parsed.values;
    action = parsed.positionals[1];
  } catch (e) {
    err(`sasl-gate ${name}: ${(e as Error).message}\n(sasl-gate ${name} --help shows the options)\n`);
    return 2;
  }
  if (values['help'] === true) {
    out(command.help);
    return 0;
  }
  const file = typeof values['config'] === 'string' ? values['config'] : process.env[`${ENV_PREFIX}CONFIG`];
  if (file === undefined && !Object.keys(process.env).some((k) => k.startsWith(ENV_PREFIX))) {
    err(`sasl-gate ${name}: no configuration given: pass --config FILE (or set ${ENV_PREFIX}CONFIG); see sasl-gate ${name} --help\n`);
    return 2;
  }

  switch (name) {
    case 'serve':
      return serve(file);
    case 'check-config':
      return checkConfig(file, values['json'] === true);
    case 'check-token':
      return checkToken(file);
    case 'doctor': {
      const user = values['user'];
      if (typeof user === 'string') {
        try {
          checkUsername(user);
        } catch {
          err(`sasl-gate doctor: --user "${user.replace(/[^\x20-\x7e]/g, '?')}" is not a user name sasl-gate would pass to a backend\n`);
          return 2;
        }
      }
      return doctor(file, typeof user === 'string' ? user : undefined);
    }
    case 'app-passwords': {
      const { appPasswordsCommand } = await import('./app-passwords-cli.js');
      return appPasswordsCommand(action, values, () => loadOrReport(file)?.config);
    }
    case 'thunderbird-addon': {
      const target = values['out'];
      if (typeof target !== 'string' || target === '') {
        err('sasl-gate thunderbird-addon: --out FILE.xpi is required\n');
        return 2;
      }
      return thunderbirdAddon(file, target);
    }
    default:
      err(`sasl-gate: unknown command "${name}"\n\n${HELP}`);
      return 2;
  }
}

/** \`check-config\`: every problem, or the effective configuration. */
function checkConfig(file: string | undefined, json: boolean): number {
  const loaded = loadOrReport(file);
  if (!loaded) return 1;
  out(json ? `${JSON.stringify(writtenForm(loaded.config), null, 2)}\n` : effectiveYaml(loaded.config, loaded.fromEnv));
  for (const w of loaded.warnings) err(`warning: ${w}\n`);
  err(`configuration is valid${file ? `: ${file}` : ''}\n`);
  return 0;
}

async function readStdin(): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString('utf8').trim().replace(/^Bearer\s+/i, '');
}

function relative(date: Date): string {
  const seconds = Math.round((date.getTime() - Date.now()) / 1000);
  const span = Math.abs(seconds) >= 3600 ? `${Math.round(Math.abs(seconds) / 360) / 10} h` : `${Math.abs(seconds)} s`;
  return seconds >= 0 ? `in ${span}` : `${span} ago`;
}

/** The configuration, or undefined after saying on stderr what is wrong with it, key by key. */
function loadOrReport(file: string | undefined): LoadedConfig | undefined {
  try {
    return loadConfig(file === undefined ? {} : { file });
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    const source = file === undefined ? `\n(no --config was given: only the ${ENV_PREFIX}* variables were read)` : '';
    process.stderr.write(`sasl-gate: ${err.message}${source}\n`);
    return undefined;
  }
}

/** `check-token`: the verdict of every strategy on a token from stdin; the token is never printed. */
async function checkToken(file: string | undefined): Promise<number> {
  const config = loadOrReport(file)?.config;
  if (!config) return 1;
  const token = await readStdin();
  if (token === '') {
    process.stderr.write('no token on stdin\n');
    return 2;
  }
  const { ChainValidator } = await import('./auth/chain.js');
  const { ValidationError } = await import('./auth/validation-error.js');
  const { acceptedDomains } = await import('./config/schema.js');
  const validator = new ChainValidator(config.oauth, { masterSeparator: config.master.separator, domains: acceptedDomains(config) });
  const out = (line: string) => process.stdout.write(`${line}\n`);
  const print = (reports: ReadonlyArray<{ strategy: string; verdict: string; reason?: string | undefined; code?: string | undefined }>) => {
    for (const r of reports) out(`${r.strategy.padEnd(13)} ${r.verdict}${r.code ? ` (${r.code})` : ''}${r.reason ? `: ${r.reason}` : ''}`);
  };
  try {
    const { result, reports } = await validator.explain(token);
    print(reports);
    out(`accepted by   ${result.strategy}`);
    out(`identity      ${result.identity} (claim ${result.claim})`);
    out(`expires       ${result.expiresAt ? `${result.expiresAt.toISOString()} (${relative(result.expiresAt)})` : 'not stated'}`);
    return 0;
  } catch (err) {
    if (err instanceof ValidationError) print(err.reports);
    const code = err instanceof GateError ? err.code : 'error';
    out(`rejected      ${code}: ${(err as Error).message}`);
    return err instanceof GateError && err.temporary ? 3 : 1;
  }
}

/** `doctor`: checks the provider, the backends, the certificate and, when one is piped in, a token. */
async function doctor(file: string | undefined, user: string | undefined): Promise<number> {
  const config = loadOrReport(file)?.config;
  if (!config) return 1;
  if (user?.includes(config.master.separator)) {
    process.stderr.write(`sasl-gate doctor: --user must not contain master.separator "${config.master.separator}": serve refuses such names\n`);
    return 2;
  }
  const token = process.stdin.isTTY ? '' : await readStdin();
  const { runDoctor } = await import('./doctor.js');
  return runDoctor(config, { ...(token === '' ? {} : { token }), ...(user === undefined ? {} : { user }) });
}

/** `thunderbird-addon`: writes the .xpi registering the provider. */
async function thunderbirdAddon(file: string | undefined, target: string): Promise<number> {
  const config = loadOrReport(file)?.config;
  if (!config) return 1;
  const { autoconfigSettings, listenerServers } = await import('./autoconfig/documents.js');
  const { OAuthEndpointSource } = await import('./autoconfig/endpoints.js');
  const { addonManifest, addonXpi, writeAddonFile } = await import('./thunderbird/addon.js');
  const { acceptedDomains } = await import('./config/schema.js');
  const settings = autoconfigSettings(config, acceptedDomains(config), listenerServers(config.listeners));
  if (settings.clientId === undefined) {
    err('sasl-gate thunderbird-addon: autoconfig.clientId is not set: the add-on registers a public OAuth client (no secret, PKCE) for Thunderbird\n');
    return 1;
  }
  if (config.autoconfig.hostname === undefined && !config.portal) {
    err('sasl-gate thunderbird-addon: no host name for the mail servers: set autoconfig.hostname (or portal.publicUrl)\n');
    return 1;
  }
  let manifest;
  try {
    const endpoints = await new OAuthEndpointSource(config.oauth.issuer, config.autoconfig, { timeoutSeconds: config.oauth.requestTimeoutSeconds }).get();
    manifest = addonManifest(settings, endpoints, config.autoconfig);
  } catch (e) {
    err(`sasl-gate thunderbird-addon: ${(e as Error).message} (or set autoconfig.authorizationEndpoint and autoconfig.tokenEndpoint)\n`);
    return 1;
  }
  try {
    writeAddonFile(target, addonXpi(manifest));
  } catch (e) {
    err(`sasl-gate thunderbird-addon: cannot write ${target}: ${(e as Error).message}\n`);
    return 1;
  }
  const p = manifest.oauth_provider;
  out(`wrote ${target}: ${manifest.browser_specific_settings.gecko.id} ${manifest.version} for Thunderbird ${manifest.browser_specific_settings.gecko.strict_min_version} and later\n`);
  out(`provider ${p.issuerIdentifier ?? p.issuer} for ${p.hostnames.join(', ')}${p.emailDomains ? ` (${p.emailDomains.join(', ')})` : ''}, client ${p.clientId}, redirect ${p.redirectionEndpoint}\n`);
  return 0;
}

async function serve(file: string | undefined): Promise<number> {
  const loaded = loadOrReport(file);
  if (!loaded) return 1;
  const { config, warnings } = loaded;
  const log = createLogger({ level: config.log.level });
  const workers = config.workers === 'auto' ? availableParallelism() : config.workers;
  if (workers > 1) {
    const { default: cluster } = await import('node:cluster');
    let code: number;
    if (cluster.isWorker) {
      const { runWorker } = await import('./cluster/worker.js');
      code = await runWorker(config, log);
    } else {
      for (const w of warnings) log.warn(w);
      const { runSupervisor } = await import('./cluster/supervisor.js');
      code = await runSupervisor(config, log, workers);
      log.info({ code }, 'sasl-gate stopped');
    }
    await new Promise<void>((resolve) => log.flush(() => resolve()));
    process.exit(code);
  }
  for (const w of warnings) log.warn(w);
  const gate = await startGate(config, { log });
  log.info({ version: version() }, 'sasl-gate started');
  process.on('SIGHUP', () => gate.reloadCertificates());
  await new Promise<void>((resolve) => {
    const stop = (signal: string) => {
      log.info({ signal, graceSeconds: config.limits.shutdownGraceSeconds }, 'shutting down: no new connections');
      gate.close().then(resolve, resolve);
      // A second signal means now.
      process.once(signal, () => gate.close(0).then(resolve, resolve));
    };
    process.once('SIGTERM', () => stop('SIGTERM'));
    process.once('SIGINT', () => stop('SIGINT'));
  });
  log.info('sasl-gate stopped');
  // Keep-alive connections to the provider and the like must not hold the process open.
  await new Promise<void>((resolve) => log.flush(() => resolve()));
  process.exit(0);
}

import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { loadConfig, pathToEnvName, type LoadedConfig } from './config/load.js';
import { ConfigError } from './errors.js';
import { createLogger } from './observe/logger.js';
import { startGate } from './server/gate.js';

const HELP = `sasl-gate: OAuth2 (XOAUTH2 / OAUTHBEARER) front door for IMAP and SMTP

Usage:
  sasl-gate serve --config FILE        run the proxy
  sasl-gate check-config --config FILE validate the configuration and print it, secrets masked
  sasl-gate check-token --config FILE  read an access token on stdin and say whether sasl-gate
                                       accepts it, which strategy decided, and why
  sasl-gate doctor --config FILE       check the provider, JWKS, backend logins and certificate;
                                       pipe a token in to check it and log in as its user
  sasl-gate load SCENARIO --target URL load-test an IMAP or SMTP server (sasl-gate load --help)
  sasl-gate demo                       local demo: Dovecot, a development OpenID provider, the proxy
  sasl-gate --version | --help

Every configuration key can also be set from the environment: ${pathToEnvName(['oauth', 'clientSecret'])}
sets oauth.clientSecret, ${pathToEnvName(['listeners', 0, 'bind'])} sets listeners[0].bind.
`;

function version(): string {
  const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version: string };
  return pkg.version;
}

const SECRET_KEYS = /password|secret|token/i;

function masked(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(masked);
  if (value !== null && typeof value === 'object') {
    return Object.fromEntries(
      Object.entries(value).map(([k, v]) => [k, SECRET_KEYS.test(k) && typeof v === 'string' ? '********' : masked(v)]),
    );
  }
  return value;
}

/** Runs the command line; resolves with the exit code. */
export async function main(argv: string[]): Promise<number> {
  // The load harness has its own options and help, parsed strictly.
  if (argv[0] === 'load') {
    const { runLoad } = await import('./load/cli.js');
    return runLoad(argv.slice(1));
  }
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      config: { type: 'string', short: 'c' },
      help: { type: 'boolean', short: 'h' },
      version: { type: 'boolean', short: 'V' },
    },
    strict: false,
  });
  const command = positionals[0];
  if (values.version) {
    process.stdout.write(`${version()}\n`);
    return 0;
  }
  if (values.help || command === undefined || command === 'help') {
    process.stdout.write(HELP);
    return command === undefined && !values.help ? 2 : 0;
  }
  const file = typeof values.config === 'string' ? values.config : process.env['SASL_GATE_CONFIG'];

  switch (command) {
    case 'serve':
      return serve(file);
    case 'check-config': {
      const loaded = loadOrReport(file);
      if (!loaded) return 1;
      process.stdout.write(`${JSON.stringify(masked(loaded.config), null, 2)}\n`);
      for (const w of loaded.warnings) process.stderr.write(`warning: ${w}\n`);
      process.stderr.write('configuration is valid\n');
      return 0;
    }
    case 'check-token':
      return checkToken(file);
    case 'doctor':
      return doctor(file);
    case 'demo': {
      const { runDemo } = await import('./devstack/demo.js');
      // Everything it started is stopped by then; idle keep-alive sockets must not hold the process.
      process.exit(await runDemo());
    }
    default:
      process.stderr.write(`unknown command "${command}"\n\n${HELP}`);
      return 2;
  }
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
    process.stderr.write(`sasl-gate: ${err.message}\n`);
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
  const validator = new ChainValidator(config.oauth, { masterSeparator: config.master.separator });
  const out = (line: string) => process.stdout.write(`${line}\n`);
  const print = (reports: Array<{ strategy: string; verdict: string; reason?: string; code?: string }>) => {
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
    const reports = (err as { reports?: Array<{ strategy: string; verdict: string; reason?: string }> }).reports;
    if (reports) print(reports);
    const code = (err as { code?: string }).code ?? 'error';
    out(`rejected      ${code}: ${(err as Error).message}`);
    return (err as { temporary?: boolean }).temporary ? 3 : 1;
  }
}

/** `doctor`: checks the provider, the backends, the certificate and, when one is piped in, a token. */
async function doctor(file: string | undefined): Promise<number> {
  const config = loadOrReport(file)?.config;
  if (!config) return 1;
  const token = process.stdin.isTTY ? '' : await readStdin();
  const { runDoctor } = await import('./doctor.js');
  return runDoctor(config, token === '' ? {} : { token });
}

async function serve(file: string | undefined): Promise<number> {
  const loaded = loadOrReport(file);
  if (!loaded) return 1;
  const { config, warnings } = loaded;
  const log = createLogger({ level: config.log.level });
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

import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { loadConfig, pathToEnvName } from './config/load.js';
import { ConfigError } from './errors.js';
import { createLogger } from './observe/logger.js';
import { startGate } from './server/gate.js';

const HELP = `sasl-gate: OAuth2 (XOAUTH2 / OAUTHBEARER) front door for IMAP and SMTP

Usage:
  sasl-gate serve --config FILE        run the proxy
  sasl-gate check-config --config FILE validate the configuration and print it, secrets masked
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
      try {
        const { config, warnings } = loadConfig(file === undefined ? {} : { file });
        process.stdout.write(`${JSON.stringify(masked(config), null, 2)}\n`);
        for (const w of warnings) process.stderr.write(`warning: ${w}\n`);
        process.stderr.write('configuration is valid\n');
        return 0;
      } catch (err) {
        if (err instanceof ConfigError) {
          process.stderr.write(`${err.message}\n`);
          return 1;
        }
        throw err;
      }
    }
    case 'demo': {
      const { runDemo } = await import('./devstack/demo.js');
      return runDemo();
    }
    default:
      process.stderr.write(`unknown command "${command}"\n\n${HELP}`);
      return 2;
  }
}

async function serve(file: string | undefined): Promise<number> {
  let loaded;
  try {
    loaded = loadConfig(file === undefined ? {} : { file });
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`sasl-gate: ${err.message}\n`);
      return 1;
    }
    throw err;
  }
  const { config, warnings } = loaded;
  const log = createLogger({ level: config.log.level });
  for (const w of warnings) log.warn(w);
  const gate = await startGate(config, { log });
  log.info({ version: version() }, 'sasl-gate started');
  await new Promise<void>((resolve) => {
    const stop = (signal: string) => {
      log.info({ signal }, 'shutting down');
      gate.close().then(resolve, resolve);
    };
    process.once('SIGTERM', () => stop('SIGTERM'));
    process.once('SIGINT', () => stop('SIGINT'));
  });
  log.flush();
  return 0;
}

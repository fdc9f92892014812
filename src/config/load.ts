import { accessSync, constants, readFileSync } from 'node:fs';
import { parse as parseYaml } from 'yaml';
import { ConfigError } from '../errors.js';
import { envNameToPath, formatKey, pathToEnvName } from './env.js';
import { containerPathHint, InvalidConfigError, readFailure, schemaProblems, type ConfigProblem } from './problems.js';
import { configSchema, DEPRECATED_MS_KEYS, openSettingsWarnings, type Config } from './schema.js';
import { readSecret, readSecretFile, type SecretOptions } from './secrets.js';

export { ENV_PREFIX, envNameToPath, formatKey, pathToEnvName } from './env.js';

/** The configuration after validation, with the master password read and everything frozen. */
export type GateConfig = Readonly<Config & { master: Config['master'] & { password: string } }>;

export interface LoadedConfig {
  config: GateConfig;
  /** Things that work but deserve the admin's attention; logged once at start. */
  warnings: string[];
  /** Keys set from the environment (`listeners[0].bind`), with the variable that set each. */
  fromEnv: ReadonlyMap<string, string>;
}

function setPath(target: Record<string, unknown>, path: Array<string | number>, value: string): void {
  let node: Record<string | number, unknown> = target;
  path.forEach((key, i) => {
    if (i === path.length - 1) {
      node[key] = value;
      return;
    }
    const next = node[key];
    if (next === null || typeof next !== 'object') {
      node[key] = typeof path[i + 1] === 'number' ? [] : {};
    }
    node = node[key] as Record<string | number, unknown>;
  });
}

function deepFreeze<T>(value: T): T {
  if (value !== null && typeof value === 'object' && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const child of Object.values(value)) deepFreeze(child);
  }
  return value;
}

/**
 * Files read once at start: each must be readable, or start-up fails naming its key. Secret files
 * are read by the one rule of readSecretFile (with the least length their key asks for), so
 * check-config finds an empty or short secret too.
 */
const FILES_READ_AT_START: ReadonlyArray<{ path: ReadonlyArray<string>; secret?: SecretOptions }> = [
  { path: ['master', 'passwordFile'], secret: {} },
  { path: ['tls', 'cert'] },
  { path: ['tls', 'key'] },
  { path: ['directory', 'authentik', 'tokenFile'], secret: {} },
  { path: ['directory', 'keycloak', 'clientSecretFile'], secret: {} },
  { path: ['directory', 'scim', 'tokenFile'], secret: {} },
  { path: ['admin', 'metricsTokenFile'], secret: { minLength: 16, what: 'token' } },
  { path: ['oauth', 'clientSecretFile'], secret: {} },
  { path: ['storage', 'postgres', 'urlFile'], secret: {} },
];

function stringAt(root: unknown, path: ReadonlyArray<string>): string | undefined {
  let node = root;
  for (const part of path) {
    if (node === null || typeof node !== 'object') return undefined;
    node = (node as Record<string, unknown>)[part];
  }
  return typeof node === 'string' && node.trim() !== '' ? node.trim() : undefined;
}

/** A problem for each file of FILES_READ_AT_START that is set but cannot be read. */
function fileProblems(raw: unknown, configFile: string | undefined, reported: ReadonlySet<string>): ConfigProblem[] {
  const problems: ConfigProblem[] = [];
  for (const { path, secret } of FILES_READ_AT_START) {
    const key = formatKey(path);
    const file = stringAt(raw, path);
    if (file === undefined || reported.has(key)) continue;
    try {
      accessSync(file, constants.R_OK);
    } catch (err) {
      const hint = containerPathHint(file, path, configFile);
      problems.push({ key, message: `cannot read ${file}: ${readFailure(err)}`, ...(hint ? { hint } : {}) });
      continue;
    }
    if (secret === undefined) continue;
    try {
      readSecretFile(file, key, secret);
    } catch (err) {
      if (!(err instanceof ConfigError)) throw err;
      problems.push({ key, message: err.message.slice(`${key}: `.length) });
    }
  }
  return problems;
}

/** A warning for each deprecated key in use, naming its replacement and the value to write there. */
function deprecationWarnings(raw: unknown, fromEnv: ReadonlyMap<string, string>): string[] {
  const warnings: string[] = [];
  for (const [seconds, ms] of DEPRECATED_MS_KEYS) {
    const value = stringOrNumberAt(raw, ['limits', ms]);
    if (value === undefined) continue;
    const variable = fromEnv.get(`limits.${ms}`);
    const where = variable ? ` (from ${variable}, now ${pathToEnvName(['limits', seconds])})` : '';
    warnings.push(`limits.${ms} is deprecated: write limits.${seconds}: ${Number(value) / 1000} instead${where}`);
  }
  return warnings;
}

function stringOrNumberAt(root: unknown, path: ReadonlyArray<string>): string | number | undefined {
  let node = root;
  for (const part of path) {
    if (node === null || typeof node !== 'object') return undefined;
    node = (node as Record<string, unknown>)[part];
  }
  return typeof node === 'string' || typeof node === 'number' ? node : undefined;
}

/**
 * Reads the YAML file (if any), applies `SASL_GATE_*` environment overrides, validates the
 * result once and returns it frozen. Throws an InvalidConfigError listing every problem found:
 * schema violations and unreadable files alike.
 */
export function loadConfig(options: { file?: string; env?: NodeJS.ProcessEnv } = {}): LoadedConfig {
  const env = options.env ?? process.env;
  let raw: Record<string, unknown> = {};
  if (options.file !== undefined) {
    let text: string;
    try {
      text = readFileSync(options.file, 'utf8');
    } catch (err) {
      throw new ConfigError('--config', `cannot read ${options.file}: ${readFailure(err)}`);
    }
    let parsed: unknown;
    try {
      parsed = parseYaml(text);
    } catch (err) {
      throw new ConfigError(options.file, `not valid YAML: ${(err as Error).message}`);
    }
    if (parsed !== null && parsed !== undefined) {
      if (typeof parsed !== 'object' || Array.isArray(parsed)) {
        throw new ConfigError(options.file, 'the file must hold a mapping of keys');
      }
      raw = parsed as Record<string, unknown>;
    }
  }
  const fromEnv = new Map<string, string>();
  for (const [name, value] of Object.entries(env)) {
    const path = envNameToPath(name);
    if (!path || value === undefined) continue;
    setPath(raw, path, value);
    fromEnv.set(formatKey(path), name);
  }

  const result = configSchema.safeParse(raw);
  const problems = result.success ? [] : schemaProblems(result.error.issues, raw, fromEnv);
  problems.push(...fileProblems(raw, options.file, new Set(problems.map((p) => p.key))));
  if (!result.success || problems.length > 0) throw new InvalidConfigError(problems);

  const config = result.data;
  const password = readSecret(config.master.password, config.master.passwordFile, 'master.password');
  if (password === undefined) throw new ConfigError('master.password', 'set master.password or master.passwordFile');

  const warnings: string[] = [];
  if (config.oauth.algorithms.some((a) => a.startsWith('HS'))) {
    warnings.push(
      'oauth.algorithms allows HMAC: anyone who holds oauth.clientSecret can make tokens for any user; allow it only for a confidential client whose secret no mail client sees',
    );
  }
  if (config.oauth.validation.includes('userinfo') && config.oauth.validation.length === 1) {
    warnings.push('oauth.validation: userinfo alone cannot check who a token was issued for (its audience); prefer jwt or introspection');
  }
  const staticFile = config.directory?.static?.file;
  if (staticFile !== undefined) {
    try {
      accessSync(staticFile, constants.R_OK);
    } catch (err) {
      // Read on every sync: until it appears, the last good directory is served.
      warnings.push(`directory.static.file: cannot read ${staticFile} now: ${readFailure(err)}`);
    }
  }
  warnings.push(...deprecationWarnings(raw, fromEnv), ...openSettingsWarnings(config));

  const clientSecret = readSecret(config.oauth.clientSecret, config.oauth.clientSecretFile, 'oauth.clientSecret');
  const oauth = clientSecret === undefined ? config.oauth : { ...config.oauth, clientSecret };
  const postgres = config.storage.postgres;
  const postgresUrl = postgres ? readSecret(postgres.url, postgres.urlFile, 'storage.postgres.url') : undefined;
  if (postgresUrl !== undefined && !/^postgres(ql)?:\/\//.test(postgresUrl)) {
    // The value is never shown: it holds a password.
    throw new ConfigError('storage.postgres.urlFile', 'the file must hold a postgres:// URL');
  }
  const storage = postgres && postgresUrl !== undefined ? { ...config.storage, postgres: { ...postgres, url: postgresUrl } } : config.storage;
  return { config: deepFreeze({ ...config, master: { ...config.master, password }, oauth, storage }), warnings, fromEnv };
}

import { accessSync, constants, readFileSync } from 'node:fs';
import { parse as parseYaml } from 'yaml';
import { ConfigError } from '../errors.js';
import { configSchema, openSettingsWarnings, type Config } from './schema.js';

/** Environment variables that configure sasl-gate start with this prefix. */
export const ENV_PREFIX = 'SASL_GATE_';

/** The configuration after validation, with the master password read and everything frozen. */
export type GateConfig = Readonly<Config & { master: Config['master'] & { password: string } }>;

export interface LoadedConfig {
  config: GateConfig;
  /** Things that work but deserve the admin's attention; logged once at start. */
  warnings: string[];
}

/**
 * Maps an environment variable name to a configuration path: the prefix is dropped, `__`
 * separates levels, each level is UPPER_SNAKE for a camelCase key, and numbers index lists.
 * `SASL_GATE_OAUTH__CLIENT_SECRET` -> `oauth.clientSecret`,
 * `SASL_GATE_LISTENERS__0__BIND` -> `listeners[0].bind`.
 */
export function envNameToPath(name: string): Array<string | number> | undefined {
  if (!name.startsWith(ENV_PREFIX) || name === `${ENV_PREFIX}CONFIG`) return undefined;
  const segments = name.slice(ENV_PREFIX.length).split('__');
  if (segments.some((s) => s === '')) return undefined;
  return segments.map((segment) =>
    /^\d+$/.test(segment)
      ? Number(segment)
      : segment.toLowerCase().replace(/_([a-z0-9])/g, (_, c: string) => c.toUpperCase()),
  );
}

/** The environment variable that sets a configuration path (the inverse of envNameToPath). */
export function pathToEnvName(path: Array<string | number>): string {
  return (
    ENV_PREFIX +
    path.map((p) => (typeof p === 'number' ? String(p) : p.replace(/([A-Z])/g, '_$1').toUpperCase())).join('__')
  );
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

function formatPath(path: ReadonlyArray<PropertyKey>): string {
  return path.length === 0 ? '(top level)' : path.map(String).join('.');
}

function deepFreeze<T>(value: T): T {
  if (value !== null && typeof value === 'object' && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const child of Object.values(value)) deepFreeze(child);
  }
  return value;
}

/**
 * Reads the YAML file (if any), applies `SASL_GATE_*` environment overrides, validates the
 * result once and returns it frozen. Throws a ConfigError naming the first offending key.
 */
export function loadConfig(options: { file?: string; env?: NodeJS.ProcessEnv } = {}): LoadedConfig {
  const env = options.env ?? process.env;
  let raw: Record<string, unknown> = {};
  if (options.file !== undefined) {
    let text: string;
    try {
      text = readFileSync(options.file, 'utf8');
    } catch (err) {
      throw new ConfigError('--config', `cannot read ${options.file}: ${(err as Error).message}`);
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
  for (const [name, value] of Object.entries(env)) {
    const path = envNameToPath(name);
    if (path && value !== undefined) setPath(raw, path, value);
  }

  const result = configSchema.safeParse(raw);
  if (!result.success) {
    const problems = result.error.issues.map((i) => `${formatPath(i.path)}: ${i.message}`);
    const first = result.error.issues[0];
    const error = new ConfigError(first ? formatPath(first.path) : '(config)', first?.message ?? 'invalid');
    error.message = `invalid configuration:\n  ${problems.join('\n  ')}`;
    throw error;
  }
  const config = result.data;
  let password = config.master.password;
  if (password === undefined && config.master.passwordFile !== undefined) {
    try {
      password = readFileSync(config.master.passwordFile, 'utf8').replace(/\r?\n$/, '');
    } catch (err) {
      throw new ConfigError('master.passwordFile', `cannot read ${config.master.passwordFile}: ${(err as Error).message}`);
    }
    if (password === '') throw new ConfigError('master.passwordFile', 'the file is empty');
  }

  for (const key of ['cert', 'key'] as const) {
    const path = config.tls[key];
    if (path === undefined) continue;
    try {
      accessSync(path, constants.R_OK);
    } catch (err) {
      throw new ConfigError(`tls.${key}`, `cannot read ${path}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
    }
  }

  const warnings: string[] = [];
  if (config.oauth.algorithms.some((a) => a.startsWith('HS'))) {
    warnings.push(
      'oauth.algorithms allows HMAC: anyone who holds oauth.clientSecret can make tokens for any user; allow it only for a confidential client whose secret no mail client sees',
    );
  }
  if (config.oauth.validation.includes('userinfo') && config.oauth.validation.length === 1) {
    warnings.push('oauth.validation: userinfo alone cannot check who a token was issued for (its audience); prefer jwt or introspection');
  }
  warnings.push(...openSettingsWarnings(config));

  return { config: deepFreeze({ ...config, master: { ...config.master, password: password as string } }), warnings };
}

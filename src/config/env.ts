/** The mapping between environment variables and configuration paths. */

/** Environment variables that configure sasl-gate start with this prefix. */
export const ENV_PREFIX = 'SASL_GATE_';

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
export function pathToEnvName(path: ReadonlyArray<string | number>): string {
  return (
    ENV_PREFIX +
    path.map((p) => (typeof p === 'number' ? String(p) : p.replace(/([A-Z])/g, '_$1').toUpperCase())).join('__')
  );
}

/** A path as the documentation writes it: `listeners[0].bind`, `oauth.cache.maxTtlSeconds`. */
export function formatKey(path: ReadonlyArray<PropertyKey>): string {
  return path.reduce<string>(
    (out, part) => (typeof part === 'number' ? `${out}[${part}]` : out === '' ? String(part) : `${out}.${String(part)}`),
    '',
  );
}

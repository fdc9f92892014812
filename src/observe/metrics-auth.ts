/**
 * The bearer token `/metrics` may require (`admin.metricsToken` or `admin.metricsTokenFile`). The
 * comparison takes the same time whatever the guess, so the token cannot be found byte by byte.
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import type { Config } from '../config/schema.js';
import { readSecret } from '../config/secrets.js';

const MIN_TOKEN_LENGTH = 16;

function digest(value: string): Buffer {
  return createHash('sha256').update(value, 'utf8').digest();
}

/**
 * Whether a request's `Authorization` header may read `/metrics`: always when no token is
 * configured, else only with `Bearer <token>`. Reads `metricsTokenFile` once, now; throws a
 * ConfigError naming the key when it cannot.
 */
export function metricsAuthorizer(admin: Pick<Config['admin'], 'metricsToken' | 'metricsTokenFile'>): (authorization: string | undefined) => boolean {
  const token = readSecret(admin.metricsToken, admin.metricsTokenFile, 'admin.metricsToken', { minLength: MIN_TOKEN_LENGTH, what: 'token' });
  if (token === undefined) return () => true;
  // Hashes of equal length, so timingSafeEqual never throws and the length leaks nothing.
  const expected = digest(token);
  return (authorization) => {
    const match = /^Bearer +(\S+)\s*$/i.exec(authorization ?? '');
    return match !== null && timingSafeEqual(digest(match[1]!), expected);
  };
}

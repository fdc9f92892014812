/**
 * The bearer token `/metrics` may require (`admin.metricsToken` or `admin.metricsTokenFile`). The
 * comparison takes the same time whatever the guess, so the token cannot be found byte by byte.
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import { readFileSync } from 'node:fs';
import type { Config } from '../config/schema.js';
import { ConfigError } from '../errors.js';

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
  let token = admin.metricsToken;
  if (token === undefined && admin.metricsTokenFile !== undefined) {
    try {
      token = readFileSync(admin.metricsTokenFile, 'utf8').replace(/\r?\n$/, '');
    } catch (err) {
      throw new ConfigError('admin.metricsTokenFile', `cannot read ${admin.metricsTokenFile}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
    }
    if (token.length < MIN_TOKEN_LENGTH) {
      throw new ConfigError('admin.metricsTokenFile', `the token must be at least ${MIN_TOKEN_LENGTH} characters`);
    }
  }
  if (token === undefined) return () => true;
  // Hashes of equal length, so timingSafeEqual never throws and the length leaks nothing.
  const expected = digest(token);
  return (authorization) => {
    const match = /^Bearer +(\S+)\s*$/i.exec(authorization ?? '');
    return match !== null && timingSafeEqual(digest(match[1]!), expected);
  };
}

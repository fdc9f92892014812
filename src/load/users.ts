/**
 * Who the harness logs in as: the `--users` file (`user<TAB>secret` lines, a password or an
 * access token each), or, without one, users of a development OpenID provider the harness starts
 * itself and mints access tokens from.
 */
import { readFileSync } from 'node:fs';
import type { Credential } from './sasl.js';

/** Reads a users file; throws a `RangeError` naming the line (never the secret) for a bad one. */
export function readUsersFile(path: string): Credential[] {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    throw new RangeError(`--users ${path}: ${(err as Error).message}`);
  }
  return parseUsers(text, path);
}

/** `user<TAB>secret` lines; empty lines and lines starting with `#` are skipped. */
export function parseUsers(text: string, name: string): Credential[] {
  const users: Credential[] = [];
  const lines = text.split(/\r?\n/);
  for (const [i, line] of lines.entries()) {
    if (line.trim() === '' || line.startsWith('#')) continue;
    const tab = line.indexOf('\t');
    const user = tab > 0 ? line.slice(0, tab) : '';
    const secret = tab > 0 ? line.slice(tab + 1) : '';
    if (user === '' || secret === '') {
      throw new RangeError(`--users ${name}, line ${i + 1}: expected user<TAB>password-or-token`);
    }
    if (/[\x00-\x1f\x7f]/.test(user) || /[\x00\r\n]/.test(secret)) {
      throw new RangeError(`--users ${name}, line ${i + 1}: control characters in the user name or secret`);
    }
    users.push({ user, secret });
  }
  if (users.length === 0) throw new RangeError(`--users ${name}: no users in the file`);
  return users;
}

/** Default users of the harness's own OpenID provider: those of `sasl-gate demo`. */
export const DEFAULT_IDP_USERS = ['alice@example.test', 'bob@example.test'];

/** A development OpenID provider started for the run, and a token for each of its users. */
export interface OwnProvider {
  issuer: string;
  audience: string;
  credentials: Credential[];
  close(): Promise<void>;
}

/** Longest token lifetime the development provider hands out. */
const MAX_TTL_SECONDS = 7 * 24 * 3600;

/**
 * Starts the development OpenID provider on `host:port` (0: any free port) with `users` and
 * mints one access token per user, valid for `ttlSeconds`.
 */
export async function startOwnProvider(opts: {
  users: string[];
  host: string;
  port: number;
  audience: string;
  ttlSeconds: number;
}): Promise<OwnProvider> {
  // Loaded only here: the provider library is not needed unless the harness mints tokens.
  // TEMPORARY until the load harness takes its provider as a seam.
  const { startDevIdp } = (await import(/* @vite-ignore */ new URL('../../tools/idp.js', import.meta.url).href)) as {
    startDevIdp(o: object): Promise<{ issuer: string; audience: string; mintAccessToken(o: { user: string }): Promise<string>; close(): Promise<void> }>;
  };
  const locals = opts.users.map((u) => u.split('@')[0] ?? u);
  const unique = new Set(locals).size === locals.length;
  const idp = await startDevIdp({
    users: opts.users.map((user, i) => ({
      id: unique ? locals[i]! : user,
      email: user.includes('@') ? user : `${user}@localhost`,
      preferredUsername: user,
    })),
    host: opts.host,
    port: opts.port,
    audience: opts.audience,
    accessTokenTtlSeconds: Math.min(MAX_TTL_SECONDS, Math.max(60, Math.ceil(opts.ttlSeconds))),
  });
  try {
    const credentials: Credential[] = [];
    for (const user of opts.users) credentials.push({ user, secret: await idp.mintAccessToken({ user: user.includes('@') ? user : `${user}@localhost` }) });
    return { issuer: idp.issuer, audience: idp.audience, credentials, close: () => idp.close() };
  } catch (err) {
    await idp.close();
    throw err;
  }
}

/**
 * Who the harness logs in as: the `--users` file (`user<TAB>secret` lines, a password or an
 * access token each), or, without one and only where a token source is injected (the source
 * checkout's `npm run load`), users of a development OpenID provider that mints access tokens.
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

/** Default users of a token source's OpenID provider: those of the demo. */
export const DEFAULT_IDP_USERS = ['alice@example.test', 'bob@example.test'];

/** What a token source is asked for: its provider's users, where it listens, and token lifetime. */
export interface TokenSourceOptions {
  users: string[];
  host: string;
  port: number;
  audience: string;
  ttlSeconds: number;
}

/** An OpenID provider started for the run, and an access token for each of its users. */
export interface OwnProvider {
  issuer: string;
  audience: string;
  credentials: Credential[];
  close(): Promise<void>;
}

/**
 * Where the harness takes access tokens when no `--users` file is given. The product has none
 * (`--users` is required); the source checkout injects its development OpenID provider.
 */
export interface TokenSource {
  /** Starts a provider on `host:port` (0: any free port) and mints one token per user. */
  start(opts: TokenSourceOptions): Promise<OwnProvider>;
}

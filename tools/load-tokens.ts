/**
 * The load harness's token source in the source checkout: the development OpenID provider,
 * started for one run, minting an access token per user. The product has no such source;
 * `sasl-gate load` there needs `--users`.
 */
import type { Credential } from '../src/load/sasl.js';
import type { OwnProvider, TokenSource, TokenSourceOptions } from '../src/load/users.js';
import { startDevIdp } from './idp.js';

/** Longest token lifetime the development provider hands out. */
const MAX_TTL_SECONDS = 7 * 24 * 3600;

/** Starts the development OpenID provider with the run's users and mints one token for each. */
async function startForRun(opts: TokenSourceOptions): Promise<OwnProvider> {
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

/** The development OpenID provider as the harness's token source. */
export const devTokenSource: TokenSource = { start: startForRun };

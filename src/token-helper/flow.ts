/**
 * What one `sasl-gate token` call does: print the saved access token while it is fresh, else
 * refresh it, else sign in (when a person may be asked). The provider is behind
 * {@link TokenEndpoints} so that this is tested without one.
 */
import { GateError } from '../errors.js';
import type { SavedSignIn, SignInCache } from './cache.js';

/** Tokens from the provider's token endpoint. */
export interface TokenSet {
  accessToken: string;
  /** Seconds since the epoch; unset when the provider gave no `expires_in`. */
  expiresAt: number | undefined;
  /** Unset when the provider issued none (or, at a refresh, kept the old one). */
  refreshToken: string | undefined;
  /** The ID token's `email`, when there was one. */
  signedInAs: string | undefined;
}

/** What the user must do to finish a device sign-in (RFC 8628). */
export interface DevicePrompt {
  verificationUri: string;
  verificationUriComplete: string | undefined;
  userCode: string;
  expiresInSeconds: number;
}

/** The provider as the helper needs it. */
export interface TokenEndpoints {
  refresh(refreshToken: string): Promise<TokenSet>;
  /** Device authorization grant: shows the prompt, then polls until the user is done. */
  signInWithDevice(show: (prompt: DevicePrompt) => void): Promise<TokenSet>;
  /** Authorization code with PKCE and a loopback redirect: shows the URL to open, waits for the redirect. */
  signInWithBrowser(show: (url: string) => void): Promise<TokenSet>;
}

/** Exit codes of `sasl-gate token`, for passwordeval / PassCmd. */
export const TOKEN_EXIT = {
  printed: 0,
  signInNeeded: 1,
  usage: 2,
  unavailable: 3,
  refused: 4,
} as const;

export type TokenHelperCode = 'sign_in_needed' | 'provider_unavailable' | 'refused' | 'usage';

/** A failure of the helper, with its exit code. Messages never carry a token. */
export class TokenHelperError extends GateError {
  declare readonly code: TokenHelperCode;
  readonly exitCode: number;
  constructor(code: TokenHelperCode, message: string, options: { cause?: unknown } = {}) {
    super(code, message, { temporary: code === 'provider_unavailable', cause: options.cause });
    this.name = 'TokenHelperError';
    this.exitCode = {
      sign_in_needed: TOKEN_EXIT.signInNeeded,
      provider_unavailable: TOKEN_EXIT.unavailable,
      refused: TOKEN_EXIT.refused,
      usage: TOKEN_EXIT.usage,
    }[code];
  }
}

/** How long a call with --no-interactive waits for another one holding the saved sign-in. */
export const NON_INTERACTIVE_LOCK_WAIT_MS = 30_000;

/** Options of {@link obtainToken}. */
export interface ObtainOptions {
  /** Whether a person may be asked to sign in (false with `--no-interactive`). */
  interactive: boolean;
  /** Sign in through a browser (authorization code) instead of the device flow. */
  browser: boolean;
  /** A token expiring within this many seconds is refreshed first. */
  marginSeconds: number;
  /** The command that signs in again, for messages. */
  signInCommand: string;
}

/** Seams of {@link obtainToken}. */
export interface ObtainSeams {
  cache: SignInCache;
  /** Made only when the provider is needed: a fresh token costs no network at all. */
  endpoints: () => Promise<TokenEndpoints>;
  /** Seconds since the epoch. */
  now: () => number;
  /** A line for the person at the terminal (stderr). */
  say: (line: string) => void;
}

/** A fresh access token: the saved one, a refreshed one, or one from a new sign-in. */
export async function obtainToken(opts: ObtainOptions, seams: ObtainSeams): Promise<string> {
  const { cache, now } = seams;
  const fresh = (s: SavedSignIn | undefined): s is SavedSignIn & { accessToken: string } =>
    s?.accessToken !== undefined && (s.expiresAt === undefined || s.expiresAt - now() > opts.marginSeconds);

  const before = cache.read();
  if (fresh(before)) return before.accessToken;

  // A mail program's call must not hang while someone signs in elsewhere: it gives up soon.
  const lockWaitMs = opts.interactive ? undefined : NON_INTERACTIVE_LOCK_WAIT_MS;
  return cache.withLock(async () => {
    // Another process may have refreshed while this one waited for the lock.
    const saved = cache.read();
    if (fresh(saved)) return saved.accessToken;

    if (saved?.refreshToken !== undefined) {
      let tokens: TokenSet;
      try {
        tokens = await (await seams.endpoints()).refresh(saved.refreshToken);
      } catch (err) {
        if (err instanceof TokenHelperError && err.code === 'refused') {
          // A process that took the lock over meanwhile may have spent the same refresh token
          // and saved its successor: that sign-in is good, and must not be forgotten.
          const current = cache.read();
          if (current?.refreshToken !== undefined && current.refreshToken !== saved.refreshToken) {
            if (fresh(current)) return current.accessToken;
            throw new TokenHelperError('provider_unavailable', 'another sasl-gate token refreshed the sign-in at the same time: try again', { cause: err });
          }
          cache.remove();
          throw new TokenHelperError(
            'refused',
            `the provider refused the saved sign-in (${err.message}): it was revoked or has expired, and has been forgotten; run "${opts.signInCommand}" once in a terminal to sign in again`,
            { cause: err },
          );
        }
        // The provider is away, but the saved token still works for a while: better than nothing.
        if (err instanceof TokenHelperError && err.code === 'provider_unavailable' && stillValid(saved, now())) {
          seams.say(`warning: could not refresh the token (${err.message}); printing the saved one, which expires soon`);
          return saved.accessToken!;
        }
        throw err;
      }
      cache.write({
        ...saved,
        accessToken: tokens.accessToken,
        expiresAt: tokens.expiresAt,
        // Rotation: a new refresh token replaces the spent one; without one the old one stays good.
        refreshToken: tokens.refreshToken ?? saved.refreshToken,
        signedInAs: tokens.signedInAs ?? saved.signedInAs,
      });
      return tokens.accessToken;
    }

    if (!opts.interactive) {
      throw new TokenHelperError(
        'sign_in_needed',
        `no saved sign-in${saved?.accessToken === undefined ? '' : ' that can be refreshed'}: run "${opts.signInCommand}" once in a terminal`,
      );
    }
    const endpoints = await seams.endpoints();
    const tokens = opts.browser
      ? await endpoints.signInWithBrowser((url) => {
          seams.say('To sign in, open this address in a web browser on this computer:');
          seams.say(`  ${shown(url)}`);
          seams.say('Waiting for the sign-in to finish...');
        })
      : await endpoints.signInWithDevice((prompt) => {
          seams.say('To sign in, open this address in a web browser (on any device):');
          seams.say(`  ${shown(prompt.verificationUriComplete ?? prompt.verificationUri)}`);
          seams.say(
            prompt.verificationUriComplete
              ? `and check that it shows the code ${shown(prompt.userCode)} (or open ${shown(prompt.verificationUri)} and enter it).`
              : `and enter the code ${shown(prompt.userCode)}.`,
          );
          seams.say(`Waiting for the sign-in to finish (the code expires in ${Math.round(prompt.expiresInSeconds / 60)} minutes)...`);
        });
    cache.write({
      ...cache.key,
      accessToken: tokens.accessToken,
      expiresAt: tokens.expiresAt,
      refreshToken: tokens.refreshToken,
      signedInAs: tokens.signedInAs,
    });
    const who = tokens.signedInAs ? ` as ${shown(tokens.signedInAs)}` : '';
    seams.say(`Signed in${who}.`);
    if (cache.key.user !== '' && tokens.signedInAs !== undefined && tokens.signedInAs.toLowerCase() !== cache.key.user.toLowerCase()) {
      seams.say(`warning: signed in as ${shown(tokens.signedInAs)}, not as ${cache.key.user} (--login-hint): the mail server will refuse this token for ${cache.key.user}`);
    }
    if (tokens.refreshToken === undefined) {
      seams.say('warning: the provider gave no refresh token (is the offline_access scope allowed for this client?): you will have to sign in again when this token expires');
    }
    return tokens.accessToken;
  }, lockWaitMs);
}

/**
 * Text from the provider as the terminal shows it: control characters (escape sequences that
 * could rewrite the screen or the window title) and bidirectional overrides become `?`.
 */
function shown(text: string): string {
  return text.replace(/[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]/g, '?');
}

function stillValid(saved: SavedSignIn, now: number): boolean {
  return saved.accessToken !== undefined && saved.expiresAt !== undefined && saved.expiresAt > now + 5;
}

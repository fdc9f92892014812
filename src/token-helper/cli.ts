/**
 * `sasl-gate token`: prints a fresh OAuth access token for a command-line mail client
 * (msmtp `passwordeval`, mbsync `PassCmd`, mutt, aerc, getmail), signing in once and refreshing
 * from then on. Runs on the user's machine, without sasl-gate's configuration.
 */
import { parseArgs } from 'node:util';
import { cacheDirectory, CacheError, SignInCache } from './cache.js';
import { obtainToken, TOKEN_EXIT, TokenHelperError } from './flow.js';
import { isLoopbackHost, openidEndpoints } from './provider.js';

/** The scopes asked for unless --scope says otherwise. */
export const DEFAULT_TOKEN_SCOPE = 'openid email offline_access';
/** A token expiring within this many seconds is refreshed before it is printed. */
export const REFRESH_MARGIN_SECONDS = 60;

export const TOKEN_HELP = `Usage: sasl-gate token --issuer URL --client-id ID [--scope S] [--login-hint USER]
                       [--browser] [--no-interactive]

Prints a fresh OAuth access token on standard output, alone on its line, for mail programs
that run a command to get their password: msmtp (passwordeval), mbsync (PassCmd), mutt and
neomutt (imap_oauth_refresh_command, smtp_oauth_refresh_command), aerc (source-cred-cmd),
getmail (password_command).

The first call signs in: with the device flow, it prints on standard error an address to open
in a browser on any device and a code to check there; with --browser, the address of the
provider's sign-in page, which sends the browser back to a port this command opens on
127.0.0.1. Later calls print the saved access token, refreshed when it expires within
${REFRESH_MARGIN_SECONDS} seconds (a rotated refresh token is kept).
The sign-in is saved in $XDG_CACHE_HOME/sasl-gate/ (else ~/.cache/sasl-gate/), one file per
issuer, client and --login-hint, readable only by you. Nothing secret is written to standard error.

Options:
  --issuer URL          the provider's issuer (https://; http:// only for 127.0.0.1 or
                        localhost), the one sasl-gate's oauth.issuer names
  --client-id ID        the public client registered at the provider for mail programs
  --scope S             scopes to ask for, space-separated (default "${DEFAULT_TOKEN_SCOPE}");
                        offline_access is added when missing. Ask for the scope the server's
                        oauth.anyClientWithScope names, if it has one
  --login-hint USER     the mail address to sign in as; also keeps one saved sign-in per address
  --browser             sign in with a browser on this computer instead of the device flow
  --no-interactive      never start a sign-in: exit 1 when one is needed
  -h, --help            this text

Exit status:
  0   the token was printed
  1   a sign-in is needed, and --no-interactive forbids one: run the command once in a terminal;
      or the saved sign-in cannot be read or written (the message says where)
  2   usage error
  3   the provider could not be reached or failed, or another call held the saved sign-in
      for too long (temporary: try again later)
  4   the provider refused: the saved sign-in was revoked or has expired (it has been removed;
      run the command once in a terminal), or the sign-in was denied

Examples:
  sasl-gate token --issuer https://id.example.com --client-id mail-cli --login-hint me@example.com
  in ~/.msmtprc (auth oauthbearer), with the same options and --no-interactive:
    passwordeval "sasl-gate token --issuer https://id.example.com --client-id mail-cli ..."
  in ~/.mbsyncrc (AuthMechs XOAUTH2):
    PassCmd "sasl-gate token --issuer https://id.example.com --client-id mail-cli ..."
`;

/** Where the command writes. */
export interface TokenCommandIo {
  out(text: string): void;
  err(text: string): void;
  env: NodeJS.ProcessEnv;
}

const processIo: TokenCommandIo = {
  out: (text) => process.stdout.write(text),
  err: (text) => process.stderr.write(text),
  env: process.env,
};

/** Runs `sasl-gate token ARGS`; resolves with the exit code. */
export async function runTokenCommand(argv: string[], io: TokenCommandIo = processIo): Promise<number> {
  let values: {
    issuer?: string | undefined;
    'client-id'?: string | undefined;
    scope?: string | undefined;
    'login-hint'?: string | undefined;
    browser?: boolean | undefined;
    'no-interactive'?: boolean | undefined;
    help?: boolean | undefined;
  };
  try {
    ({ values } = parseArgs({
      args: argv,
      strict: true,
      allowPositionals: false,
      options: {
        issuer: { type: 'string' },
        'client-id': { type: 'string' },
        scope: { type: 'string' },
        'login-hint': { type: 'string' },
        browser: { type: 'boolean' },
        'no-interactive': { type: 'boolean' },
        help: { type: 'boolean', short: 'h' },
      },
    }));
  } catch (e) {
    return usage(io, (e as Error).message);
  }
  if (values.help === true) {
    io.out(TOKEN_HELP);
    return 0;
  }
  if (values.issuer === undefined || values['client-id'] === undefined) {
    return usage(io, 'give --issuer URL and --client-id ID');
  }
  let issuer: URL;
  try {
    issuer = new URL(values.issuer);
  } catch {
    return usage(io, `--issuer "${printable(values.issuer)}" is not a URL`);
  }
  if (issuer.protocol !== 'https:' && !(issuer.protocol === 'http:' && isLoopbackHost(issuer.hostname))) {
    return usage(io, '--issuer must be an https:// URL (http:// only on 127.0.0.1 or localhost)');
  }
  const clientId = values['client-id'].trim();
  const user = (values['login-hint'] ?? '').trim();
  if (clientId === '' || /[^\x21-\x7e]/.test(clientId)) return usage(io, '--client-id must be printable, without spaces');
  if (/[^\x21-\x7e]/.test(user)) return usage(io, '--login-hint must be printable, without spaces');
  const scopes = (values.scope ?? DEFAULT_TOKEN_SCOPE).split(' ').filter(Boolean);
  if (scopes.some((s) => /[^\x21-\x7e]/.test(s))) return usage(io, '--scope takes printable scope names separated by spaces');
  if (!scopes.includes('offline_access')) scopes.push('offline_access');
  const scope = [...new Set(scopes)].join(' ');

  // The issuer as given, without a trailing slash added or removed: it must match the tokens' `iss`.
  const issuerText = values.issuer;
  const cache = new SignInCache(cacheDirectory(io.env), { issuer: issuerText, clientId, user });
  const now = () => Math.floor(Date.now() / 1000);
  const signInCommand = [
    'sasl-gate token',
    `--issuer ${shellWord(issuerText)}`,
    `--client-id ${shellWord(clientId)}`,
    ...(user ? [`--login-hint ${shellWord(user)}`] : []),
    ...(values.scope === undefined ? [] : [`--scope ${shellWord(values.scope)}`]),
    ...(values.browser ? ['--browser'] : []),
  ].join(' ');
  try {
    const token = await obtainToken(
      {
        interactive: values['no-interactive'] !== true,
        browser: values.browser === true,
        marginSeconds: REFRESH_MARGIN_SECONDS,
        signInCommand,
      },
      {
        cache,
        now,
        say: (line) => io.err(`${line}\n`),
        endpoints: () =>
          openidEndpoints({
            issuer,
            clientId,
            scope,
            loginHint: user || undefined,
            timeoutSeconds: 20,
            browserWaitSeconds: 600,
            now,
          }),
      },
    );
    io.out(`${token}\n`);
    return TOKEN_EXIT.printed;
  } catch (err) {
    if (err instanceof TokenHelperError) {
      io.err(`sasl-gate token: ${err.message}\n`);
      return err.exitCode;
    }
    // The saved sign-in cannot be read or written (permissions, a full disk).
    if (err instanceof CacheError) {
      io.err(`sasl-gate token: ${err.message}\n`);
      return err.temporary ? TOKEN_EXIT.unavailable : TOKEN_EXIT.signInNeeded;
    }
    const code = (err as NodeJS.ErrnoException).code;
    if (typeof code === 'string' && /^E[A-Z]+$/.test(code)) {
      io.err(`sasl-gate token: cannot keep the sign-in in ${cache.directory}: ${(err as Error).message}\n`);
      return TOKEN_EXIT.signInNeeded;
    }
    throw err;
  }
}

function usage(io: TokenCommandIo, message: string): number {
  io.err(`sasl-gate token: ${message}\n(sasl-gate token --help shows the options)\n`);
  return TOKEN_EXIT.usage;
}

/** A word as a shell reads it back: quoted when it holds anything but plain characters. */
function shellWord(word: string): string {
  return /^[\w@%+=:,./-]+$/.test(word) ? word : `'${word.replace(/'/g, `'\\''`)}'`;
}

function printable(text: string): string {
  return text.replace(/[^\x20-\x7e]/g, '?');
}

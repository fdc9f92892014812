import { isIP } from 'node:net';
import { hostname } from 'node:os';
import { z } from 'zod';

/*
 * The configuration schema. Every value may arrive as a string (from the environment), so the
 * scalar builders below coerce strings to numbers, booleans and comma-separated lists; YAML's
 * native types are accepted as they are.
 *
 * Every key carries a description (`.describe()`), written for the mail admin: it is what
 * docs/configuration.md is generated from (src/config/reference.ts). Two more metadata keys
 * help that reference where the type alone says too little: `accepts` (the form of a value a
 * transform checks) and `defaultText` (a default computed at start, not a constant).
 */

const text = () => z.string().trim().min(1, 'must not be empty');

const integer = (min: number, max: number) =>
  z.preprocess(
    (v) => (typeof v === 'string' && /^\s*-?\d+\s*$/.test(v) ? Number(v) : v),
    z.number().int('must be a whole number').min(min).max(max),
  );

const boolean = () =>
  z.preprocess((v) => {
    if (typeof v !== 'string') return v;
    const lower = v.trim().toLowerCase();
    if (['true', 'yes', '1', 'on'].includes(lower)) return true;
    if (['false', 'no', '0', 'off'].includes(lower)) return false;
    return v;
  }, z.boolean());

/** A list from YAML, or from an environment string: `a,b,c` or a JSON array. */
const list = <T extends z.ZodTypeAny>(item: T, minItems = 0) =>
  z.preprocess((v) => {
    if (typeof v !== 'string') return v;
    const trimmed = v.trim();
    if (trimmed.startsWith('[')) {
      try {
        return JSON.parse(trimmed) as unknown;
      } catch {
        return v;
      }
    }
    return trimmed === '' ? [] : trimmed.split(',').map((s) => s.trim());
  }, z.array(item).min(minItems, `needs at least ${minItems} entry`));

/**
 * `host:port` or `[v6]:port`. The host is required: a bare `:port` would listen on every
 * interface, which an admin should say in so many words (`0.0.0.0:port`, `[::]:port`).
 */
const hostPort = () =>
  z.string().transform((value, ctx) => {
    const trimmed = value.trim();
    if (/^:\d{1,5}$/.test(trimmed)) {
      ctx.addIssue({
        code: 'custom',
        message: `"${value}" names no host: write "host:port", e.g. "127.0.0.1${trimmed}" (this machine only) or "0.0.0.0${trimmed}" (every interface)`,
      });
      return z.NEVER;
    }
    const match = /^(?:\[([0-9a-fA-F:.]+)\]|([^:[\]\s]+)):(\d{1,5})$/.exec(trimmed);
    const port = match ? Number(match[3]) : NaN;
    if (!match || port < 0 || port > 65535) {
      ctx.addIssue({ code: 'custom', message: `expected "host:port", got "${value}"` });
      return z.NEVER;
    }
    const host = (match[1] ?? match[2])!;
    if (match[1] !== undefined && isIP(host) !== 6) {
      ctx.addIssue({ code: 'custom', message: `"${host}" is not an IPv6 address` });
      return z.NEVER;
    }
    return { host, port };
  })
  .meta({ accepts: '`host:port` or `[IPv6]:port`; the host is required (`0.0.0.0` for every IPv4 address)' });

/** Whether a bind host reaches only this machine (127.0.0.0/8, ::1, localhost). */
export function isLoopbackHost(host: string): boolean {
  const lower = host.toLowerCase();
  return lower === 'localhost' || lower === '::1' || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(lower);
}

const httpsUrl = () =>
  z.string().transform((value, ctx) => {
    let url: URL;
    try {
      url = new URL(value.trim());
    } catch {
      ctx.addIssue({ code: 'custom', message: `"${value}" is not a URL` });
      return z.NEVER;
    }
    const loopback = ['localhost', '127.0.0.1', '[::1]'].includes(url.hostname);
    if (url.protocol !== 'https:' && !(url.protocol === 'http:' && loopback)) {
      ctx.addIssue({ code: 'custom', message: 'must be an https:// URL (http:// only on loopback)' });
      return z.NEVER;
    }
    // Issuers are compared as exact strings (OpenID Connect Discovery 4.3): keep it as written.
    return value.trim();
  })
  .meta({ accepts: 'an `https://` URL (`http://` only on loopback: `localhost`, `127.0.0.1`, `[::1]`)' });

/** Algorithms accepted for JWT access tokens unless `oauth.algorithms` says otherwise. */
export const ASYMMETRIC_ALGORITHMS = [
  'RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512', 'ES256', 'ES384', 'ES512', 'EdDSA',
] as const;
const HMAC_ALGORITHMS = ['HS256', 'HS384', 'HS512'] as const;
const ALGORITHMS = [...ASYMMETRIC_ALGORITHMS, ...HMAC_ALGORITHMS] as const;

/** The protocols a listener, and an app password, may speak. */
export const PROTOCOLS = ['imap', 'smtp', 'pop3', 'sieve'] as const;

const listenerSchema = z
  .strictObject({
    protocol: z.enum(PROTOCOLS).describe(
      'The protocol spoken on this port: `imap`, `pop3` or `sieve` (ManageSieve) in front of Dovecot, or `smtp` (submission) in front of Postfix; the matching `backends` entry must be set.',
    ),
    bind: hostPort().describe(
      'The address and port this listener accepts client connections on, for example `0.0.0.0:993` or `[::]:465`.',
    ),
    tls: z.enum(['implicit', 'starttls']).default('implicit').describe(
      'How clients get TLS: `implicit` from the first byte (IMAPS 993, SMTPS 465, POP3S 995), or `starttls` after the STARTTLS (POP3: STLS) command (IMAP 143, submission 587, POP3 110, ManageSieve 4190), with every login refused before it.',
    ),
    name: text().optional().describe(
      "The listener's name in logs; unset, it is `<protocol>-<port>`, for example `imap-993`.",
    ),
    proxyProtocol: boolean().default(false).describe(
      'Whether every connection starts with a PROXY protocol v1 or v2 header (HAProxy, a load balancer), whose client address then counts everywhere: limits, logs, Dovecot and Postfix.',
    ),
    trustedProxies: list(text()).default([]).describe(
      'Addresses or CIDR blocks of the proxies allowed to send the PROXY header, required with `proxyProtocol`; connections from anywhere else are refused.',
    ),
  })
  .superRefine((l, ctx) => {
    if (l.proxyProtocol && l.trustedProxies.length === 0) {
      ctx.addIssue({
        code: 'custom',
        path: ['trustedProxies'],
        message: 'a PROXY protocol listener needs the addresses of the proxies allowed to send the header',
      });
    }
  });

/** A duration in seconds, fractions allowed, from YAML or an environment string. */
const seconds = (max: number) =>
  z.preprocess(
    (v) => (typeof v === 'string' && /^\s*\d*\.?\d+\s*$/.test(v) ? Number(v) : v),
    z.number().min(0).max(max),
  );

const limitsSchema = z
  .strictObject({
    maxLineLength: integer(1024, 1 << 24).default(65536).describe(
      'The longest command line a client may send before login, in bytes (a 12 KiB token sent as an initial response fits in the default).',
    ),
    maxLiteralSize: integer(1024, 1 << 24).default(65536).describe(
      'The most bytes all IMAP literals of one command before login may hold together.',
    ),
    maxPreAuthCommands: integer(1, 100000).default(50).describe(
      'The most commands a client may send before logging in; then it gets `* BYE` or `421` and the connection is closed.',
    ),
    preAuthTimeoutSeconds: integer(1, 3600).default(60).describe(
      'Seconds a client has from connecting to a successful login, then it gets `* BYE` or `421`; the TLS handshake and the PROXY header each get as long.',
    ),
    maxConnections: integer(1, 10_000_000).default(20_000).describe(
      'The most client connections open at once over all listeners; more are refused with `* BYE [UNAVAILABLE]` or `421 4.7.0`.',
    ),
    maxConnectionsPerAddress: integer(1, 10_000_000).default(100).describe(
      'The most client connections open at once from one client address; more are refused like those over `maxConnections`.',
    ),
    idleTimeoutSeconds: integer(1800, 86_400).default(1860).describe(
      'Seconds without a byte in either direction after login before the connection is closed; at least 1800, so that IMAP IDLE clients stay connected.',
    ),
    maxAuthFailures: integer(1, 1000).default(5).describe(
      'Failed logins on one connection before it is closed with `* BYE` or `421`.',
    ),
    authFailureDelaySeconds: seconds(60)
      .optional()
      .meta({ defaultText: '`0.5`' })
      .describe(
        'Seconds sasl-gate waits before answering a failed login (fractions allowed: `0.5`); the delay doubles with each recent failure from the same address (IPv6 by /64) or for the same user name.',
      ),
    authFailureMaxDelaySeconds: seconds(300)
      .optional()
      .meta({ defaultText: '`15`' })
      .describe('The longest that growing failure delay may become, in seconds (fractions allowed).'),
    authFailureDelayMs: integer(0, 60_000).optional().describe(
      'Deprecated: the same as `limits.authFailureDelaySeconds`, in milliseconds; still accepted (check-config warns), but not together with it.',
    ),
    authFailureMaxDelayMs: integer(0, 300_000).optional().describe(
      'Deprecated: the same as `limits.authFailureMaxDelaySeconds`, in milliseconds; still accepted (check-config warns), but not together with it.',
    ),
    shutdownGraceSeconds: integer(0, 3600).default(8).describe(
      'Seconds open sessions may go on after SIGTERM before the remaining connections are closed (with `* BYE` or `421` where the client has not logged in).',
    ),
    shutdownDelaySeconds: seconds(300).default(0).describe(
      "Seconds after SIGTERM during which `/readyz` answers 503 while the listeners still accept, before they close and `limits.shutdownGraceSeconds` begins: at least a load balancer's health-check interval times its fall count, so it stops sending new connections first (under Kubernetes a `preStop` sleep does the same).",
    ),
  })
  .superRefine((l, ctx) => {
    for (const [seconds, ms] of DEPRECATED_MS_KEYS) {
      if (l[seconds] !== undefined && l[ms] !== undefined) {
        ctx.addIssue({
          code: 'custom',
          path: [ms],
          message: `limits.${ms} is deprecated and limits.${seconds} is set too: the delay must be given once, in seconds`,
        });
      }
    }
  })
  .transform(({ authFailureDelayMs, authFailureMaxDelayMs, authFailureDelaySeconds, authFailureMaxDelaySeconds, ...rest }) => ({
    ...rest,
    // One unit for the rest of the program: the deprecated milliseconds are converted here.
    authFailureDelaySeconds: authFailureDelaySeconds ?? (authFailureDelayMs === undefined ? 0.5 : authFailureDelayMs / 1000),
    authFailureMaxDelaySeconds: authFailureMaxDelaySeconds ?? (authFailureMaxDelayMs === undefined ? 15 : authFailureMaxDelayMs / 1000),
  }))
  .default({
    maxLineLength: 65536,
    maxLiteralSize: 65536,
    maxPreAuthCommands: 50,
    preAuthTimeoutSeconds: 60,
    maxConnections: 20_000,
    maxConnectionsPerAddress: 100,
    idleTimeoutSeconds: 1860,
    maxAuthFailures: 5,
    authFailureDelaySeconds: 0.5,
    authFailureMaxDelaySeconds: 15,
    shutdownGraceSeconds: 8,
    shutdownDelaySeconds: 0,
  });

/** Keys in milliseconds kept for old configurations, each beside its replacement in seconds. */
export const DEPRECATED_MS_KEYS = [
  ['authFailureDelaySeconds', 'authFailureDelayMs'],
  ['authFailureMaxDelaySeconds', 'authFailureMaxDelayMs'],
] as const;

const imapBackendSchema = z.strictObject({
  host: text().describe(
    "The host name or address of Dovecot's IMAP listener (plain TCP; put it on a private network).",
  ),
  port: integer(1, 65535).default(143).describe(
    "The TCP port of Dovecot's IMAP listener.",
  ),
  connectTimeoutSeconds: integer(1, 300).default(10).describe(
    'Seconds to wait for a TCP connection to Dovecot before the login fails temporarily.',
  ),
  responseTimeoutSeconds: integer(1, 300).default(30).describe(
    'Seconds Dovecot may take to answer a login step (its failure delay and penalties count here) before the login fails temporarily.',
  ),
  capabilityRefreshSeconds: integer(10, 86400).default(300).describe(
    "How often, in seconds, Dovecot's capabilities are probed again, so clients are offered what Dovecot offers.",
  ),
  proxyProtocol: boolean().default(false).describe(
    "Whether each connection to Dovecot starts with a PROXY protocol v2 header carrying the client's address (Dovecot needs `haproxy = yes` on the listener and sasl-gate in `haproxy_trusted_networks`).",
  ),
});

/** A Dovecot listener other than IMAP (POP3, ManageSieve): the same keys as `backends.imap`. */
const dovecotBackendSchema = (what: string, defaultPort: number) =>
  z.strictObject({
    host: text().describe(`The host name or address of Dovecot's ${what} listener (plain TCP; put it on a private network).`),
    port: integer(1, 65535).default(defaultPort).describe(`The TCP port of Dovecot's ${what} listener.`),
    connectTimeoutSeconds: integer(1, 300).default(10).describe(
      'Seconds to wait for a TCP connection to Dovecot before the login fails temporarily.',
    ),
    responseTimeoutSeconds: integer(1, 300).default(30).describe(
      'Seconds Dovecot may take to answer a login step (its failure delay and penalties count here) before the login fails temporarily.',
    ),
    capabilityRefreshSeconds: integer(10, 86400).default(300).describe(
      `How often, in seconds, Dovecot's ${what} capabilities are probed again, so clients are offered what Dovecot offers.`,
    ),
    proxyProtocol: boolean().default(false).describe(
      "Whether each connection to Dovecot starts with a PROXY protocol v2 header carrying the client's address (Dovecot needs `haproxy = yes` on the listener and sasl-gate in `haproxy_trusted_networks`); otherwise sasl-gate names the client's address to Dovecot in its own way (sasl-gate needs to be in `login_trusted_networks`).",
    ),
  });

const pop3BackendSchema = dovecotBackendSchema('POP3', 110);
const sieveBackendSchema = dovecotBackendSchema('ManageSieve', 4190);

const smtpBackendSchema = z.strictObject({
  host: text().describe(
    'The host name or address of the Postfix submission listener reserved for sasl-gate (plain TCP; put it on a private network).',
  ),
  port: integer(1, 65535).default(587).describe(
    'The TCP port of that Postfix listener.',
  ),
  login: z.enum(['xclient', 'master']).default('xclient').describe(
    "How token users are logged into Postfix: `xclient` sends `XCLIENT LOGIN=<user>` (sasl-gate must be in `smtpd_authorized_xclient_hosts`), `master` sends `AUTH PLAIN` with the master user and the user as authorization identity (needs Postfix's Dovecot SASL).",
  ),
  connectTimeoutSeconds: integer(1, 300).default(10).describe(
    'Seconds to wait for a TCP connection to Postfix before the login fails temporarily.',
  ),
  responseTimeoutSeconds: integer(1, 300).default(30).describe(
    'Seconds Postfix may take to answer a command during the login before the login fails temporarily.',
  ),
  capabilityRefreshSeconds: integer(10, 86400).default(300).describe(
    "How often, in seconds, Postfix's EHLO extensions are probed again, so clients are offered what Postfix offers.",
  ),
  proxyProtocol: boolean().default(false).describe(
    "Whether each connection to Postfix starts with a PROXY protocol v2 header carrying the client's address (Postfix needs `smtpd_upstream_proxy_protocol = haproxy` on that listener).",
  ),
});

/** Scopes of OpenID Connect itself, which any application of the issuer may be granted. */
const OPENID_SCOPES: ReadonlySet<string> = new Set(['openid', 'profile', 'email', 'address', 'phone', 'offline_access']);

const oauthSchema = z
  .strictObject({
    issuer: httpsUrl().describe(
      "The issuer URL of the OpenID provider, exactly as the tokens' `iss` claim writes it (mind the trailing slash); its `/.well-known/openid-configuration` is read at start.",
    ),
    audience: list(text()).default([]).describe(
      'Accepted token audiences: a token passes when its `aud` contains one of them or its `azp` is one; empty means `oauth.clientId`.',
    ),
    validation: list(z.enum(['jwt', 'introspection', 'userinfo']), 1).default(['jwt']).describe(
      "The token validation strategies, tried in this order: `jwt` (signature checked locally with the provider's keys), `introspection` (RFC 7662, needs `clientId` and `clientSecret`) and `userinfo` (cannot check the audience).",
    ),
    clientId: text().optional().describe(
      "The client ID of the mail clients' registration at the provider; the accepted audience when `oauth.audience` is empty, and the client that calls introspection.",
    ),
    clientSecret: text().optional().describe(
      'The secret of `oauth.clientId`, used to authenticate introspection calls and, when HS256/384/512 are allowed, to verify such tokens; better set from the environment or `oauth.clientSecretFile`.',
    ),
    clientSecretFile: text().optional().describe(
      'A file holding `oauth.clientSecret` (one line end at its end is dropped, nothing else is trimmed), read once at start.',
    ),
    usernameClaims: list(text(), 1).default(['email']).describe(
      'Token claims that name the mail user, in order of preference: the first one present is the user, and it must match the user name the client sends. A claim other than `email` is used only when listed here; whichever claim it comes from, the user must be a mail address of an accepted domain (`oauth.allowedEmailDomains`, else `directory.domains`), and a token with `email_verified: false` is refused.',
    ),
    algorithms: list(z.enum(ALGORITHMS), 1).default([...ASYMMETRIC_ALGORITHMS]).describe(
      'JWT signature algorithms accepted; `none` never is, and HS256/384/512 need `oauth.clientSecret`.',
    ),
    clockSkewSeconds: integer(0, 600).default(30).describe(
      "Seconds of clock difference tolerated when checking a token's `exp` and `nbf`.",
    ),
    scope: text().default('openid email').describe(
      'The scope named in the error challenge sent to a client whose token is refused (space-separated).',
    ),
    requestTimeoutSeconds: integer(1, 120).default(10).describe(
      'Seconds each call to the provider (discovery, keys, introspection, userinfo) may take before the login fails temporarily.',
    ),
    jwksRefetchCooldownSeconds: integer(0, 3600).default(10).describe(
      "The least time, in seconds, between two fetches of the provider's keys caused by tokens signed with an unknown key ID.",
    ),
    clientAuthMethod: z.enum(['client_secret_basic', 'client_secret_post']).default('client_secret_basic').describe(
      'How sasl-gate authenticates to the introspection endpoint: HTTP Basic (`client_secret_basic`) or form fields (`client_secret_post`).',
    ),
    jwksUri: httpsUrl().optional().describe(
      "The URL of the provider's signing keys (JWKS); unset, it is taken from discovery.",
    ),
    introspectionEndpoint: httpsUrl().optional().describe(
      "The URL of the provider's introspection endpoint; unset, it is taken from discovery.",
    ),
    userinfoEndpoint: httpsUrl().optional().describe(
      "The URL of the provider's userinfo endpoint; unset, it is taken from discovery.",
    ),
    anyClientWithScope: text()
      .regex(/^[\x21-\x7e]+$/, 'one scope: printable characters without spaces')
      .refine((scope) => !OPENID_SCOPES.has(scope), {
        message: 'an OpenID Connect scope every application asks for would let any application of the issuer read mail: name a scope only mail clients are granted, e.g. urn:ietf:params:oauth:scope:mail',
      })
      .optional()
      .describe(
        "Opt-in: a token issued to any client of the issuer is accepted, whatever its audience, when it carries this scope (for example `urn:ietf:params:oauth:scope:mail`); issuer, signature, expiry, `oauth.requiredScopes` and the identity rules still apply. For public and dynamically registered clients (the `sasl-gate token` helper, Thunderbird, FairEmail), which get their own client id as audience. The risk: any application the user signs in to at the provider and grants that scope can then read and send the user's mail, so the provider must grant it only to mail clients (with consent). Unset, only `oauth.audience` is accepted.",
      ),
    requiredScopes: list(text()).default([]).describe(
      'Scopes every token must carry in its `scope` (or `scp`) claim; empty requires none.',
    ),
    requireEmailVerified: boolean().default(false).describe(
      'Whether every token must carry `email_verified: true`, whichever claim names the user.',
    ),
    allowedEmailDomains: list(text()).default([]).describe(
      "Mail domains the token's user (from `oauth.usernameClaims`) must belong to, compared without regard to case; empty means the domains of `directory.domains` when a directory is configured, else every domain (with a warning at start).",
    ),
    requiredClaim: z
      .strictObject({
        name: text().describe('The claim to look in, by name or by a dotted path such as `realm_access.roles`.'),
        value: text().describe('The value the claim must hold: equal to it, one element of an array, or one word of a space-separated string.'),
      })
      .optional()
      .describe('A claim every token must carry a given value in, for example a group or a role; unset, no claim is required.'),
    cache: z
      .strictObject({
        maxEntries: integer(0, 10_000_000).default(10_000).describe('The most validation results kept; 0 turns the cache off.'),
        maxTtlSeconds: integer(0, 86_400)
          .default(300)
          .describe(
            'The longest time, in seconds, an accepted token is trusted without checking it again (never past its expiry); keep it short where revoking a token must take effect quickly.',
          ),
        negativeTtlSeconds: integer(0, 3600)
          .default(10)
          .describe('Seconds a rejected token stays rejected without being checked again.'),
      })
      .default({ maxEntries: 10_000, maxTtlSeconds: 300, negativeTtlSeconds: 10 })
      .describe(
        'The cache of validation results, keyed by a hash of the token (never the token itself); temporary failures are not cached.',
      ),
    breaker: z
      .strictObject({
        failureThreshold: integer(1, 1000)
          .default(5)
          .describe('Provider failures in a row (errors, timeouts) after which calls fail at once instead of waiting.'),
        openSeconds: integer(1, 3600)
          .default(15)
          .describe('Seconds calls fail at once before one trial call is let through to see whether the provider is back.'),
      })
      .default({ failureThreshold: 5, openSeconds: 15 })
      .describe('The circuit breaker in front of the OpenID provider: token logins fail temporarily and fast while it is down.'),
  })
  .superRefine((o, ctx) => {
    if (o.audience.length === 0 && !o.clientId) {
      ctx.addIssue({
        code: 'custom',
        path: ['audience'],
        message: 'set oauth.audience (or oauth.clientId): tokens issued for other clients must not be accepted',
      });
    }
    const hasSecret = o.clientSecret !== undefined || o.clientSecretFile !== undefined;
    if (o.clientSecret !== undefined && o.clientSecretFile !== undefined) {
      ctx.addIssue({ code: 'custom', path: ['clientSecret'], message: 'set one of oauth.clientSecret and oauth.clientSecretFile' });
    }
    if (o.validation.includes('introspection') && (!o.clientId || !hasSecret)) {
      ctx.addIssue({
        code: 'custom',
        path: ['validation'],
        message: 'introspection authenticates with oauth.clientId and oauth.clientSecret; set both',
      });
    }
    if (o.algorithms.some((a) => a.startsWith('HS')) && !hasSecret) {
      ctx.addIssue({
        code: 'custom',
        path: ['algorithms'],
        message: 'HS256/384/512 need oauth.clientSecret, the shared secret that verifies them',
      });
    }
  });

const masterSchema = z
  .strictObject({
    user: text().describe(
      'The Dovecot master user (from a passdb with `master = yes`) that sasl-gate logs in as on behalf of token users; password logins naming it are refused.',
    ),
    password: z
      .string()
      .min(1)
      .optional()
      .describe("The master user's password; one of `master.password` and `master.passwordFile` is required."),
    passwordFile: text()
      .optional()
      .describe(
        "A file holding the master user's password (one line end at its end is dropped, nothing else is trimmed), read once at start; keeps the secret out of the configuration file.",
      ),
    separator: z
      .string()
      .length(1)
      .default('*')
      .describe(
        "Dovecot's `auth_master_user_separator`, one character; password logins and token identities that contain it are refused.",
      ),
  })
  .superRefine((m, ctx) => {
    if (m.password === undefined && m.passwordFile === undefined) {
      ctx.addIssue({ code: 'custom', path: ['password'], message: 'set master.password or master.passwordFile' });
    }
    if (m.user.includes(m.separator)) {
      ctx.addIssue({ code: 'custom', path: ['user'], message: `must not contain the separator "${m.separator}"` });
    }
  });

/** A share between 0 and max, from YAML or an environment string. */
const share = (max = 1) =>
  z.preprocess((v) => (typeof v === 'string' && /^\s*\d*\.?\d+\s*$/.test(v) ? Number(v) : v), z.number().min(0).max(max));

/** A schema whose absence is reported with `message` (a required key of one directory source). */
const requiredAs = (message: string) => ({ error: (issue: { input?: unknown }) => (issue.input === undefined ? message : undefined) });

const STATE_FILE_DESCRIPTION =
  'The file the last good directory is saved to (mode 0600) and loaded from at start, so a restart while the provider is down still knows every user; required unless `source` is `static`.';

/** The state file, required by every source but `static`. */
const requiredStateFile = z
  .string(requiredAs('set directory.stateFile, so a restart while the provider is down still serves the users'))
  .trim()
  .min(1, 'must not be empty')
  .describe(STATE_FILE_DESCRIPTION);

const staticSection = z
  .strictObject(
    { file: text().describe('The YAML or JSON user file, read again on every sync.') },
    requiredAs('directory.source is static: set directory.static'),
  )
  .describe('The static source.');

const authentikSection = z
  .strictObject(
    {
      url: httpsUrl().describe("Authentik's base URL, e.g. `https://auth.example.com`."),
      token: z.string().min(1).optional().describe('An API token of an account that may view users; better set from the environment.'),
      tokenFile: text().optional().describe('A file holding that token (one line end at its end is dropped, nothing else is trimmed), read once at start.'),
    },
    requiredAs('directory.source is authentik: set directory.authentik'),
  )
  .describe('The Authentik source: its users API.');

const keycloakSection = z
  .strictObject(
    {
      url: httpsUrl().describe("Keycloak's base URL, e.g. `https://sso.example.com`."),
      realm: text().describe('The realm of the mail users.'),
      clientId: text().describe("A confidential client with a service account holding realm-management's `view-users` role."),
      clientSecret: z.string().min(1).optional().describe("That client's secret; better set from the environment."),
      clientSecretFile: text().optional().describe('A file holding that secret (one line end at its end is dropped, nothing else is trimmed), read once at start.'),
      clientAuthMethod: z
        .enum(['client_secret_basic', 'client_secret_post'])
        .default('client_secret_basic')
        .describe('How the client authenticates at the token endpoint.'),
    },
    requiredAs('directory.source is keycloak: set directory.keycloak'),
  )
  .describe('The Keycloak source: its admin API.');

const scimSection = z
  .strictObject(
    {
      bind: hostPort().describe('Where the SCIM 2.0 endpoint listens (HTTPS with the `tls` certificate); an address other than loopback needs `allowFrom`.'),
      allowFrom: list(text()).optional().describe('Addresses or CIDR blocks allowed to connect (the provider that pushes users); required unless `bind` is a loopback address.'),
      token: z.string().min(32, 'must be at least 32 characters').optional().describe('The bearer token the provider sends (at least 32 characters); better set from the environment.'),
      tokenFile: text().optional().describe('A file holding that token (one line end at its end is dropped, nothing else is trimmed), read once at start.'),
      basePath: z.string().regex(/^\/[\w/.-]*$/).default('/scim/v2').describe('The path the endpoint lives under.'),
      maxBodyBytes: integer(1024, 64 * 1024 * 1024).default(1_048_576).describe('The largest request body accepted.'),
    },
    requiredAs('directory.source is scim: set directory.scim'),
  )
  .describe("The SCIM 2.0 endpoint providers push users to (Authentik's SCIM provider).");

/** The keys every source shares; each source's own section is optional here and required in its variant. */
const directoryShape = {
  stateFile: text().optional().describe(STATE_FILE_DESCRIPTION),
  graceSeconds: integer(0, 31_536_000)
    .default(86_400)
    .describe('Seconds mail to a user disabled or removed in the provider is still accepted; their token logins are refused at once.'),
  maxRemovalShare: share()
    .default(0.2)
    .describe('A full sync that would remove or disable more than this share of the active users is held back and logged; 1 turns the guard off.'),
  maxRemovalsAlwaysAllowed: integer(0, 1_000_000)
    .default(2)
    .describe('A full sync removing or disabling at most this many users is never held back, so a small directory can lose one person.'),
  syncIntervalSeconds: integer(30, 86_400).default(300).describe('Seconds between full syncs from `authentik`, `keycloak` or `static`.'),
  syncJitter: share(0.5)
    .default(0.1)
    .describe('Each wait between syncs varies by up to this share either way, so several instances do not ask the provider in step.'),
  retrySeconds: integer(1, 86_400)
    .default(30)
    .describe('Seconds before the first retry after a failed sync; doubles with each failure, up to `syncIntervalSeconds`.'),
  requestTimeoutSeconds: integer(1, 300).default(15).describe('Seconds each call to the provider (token, each page of users) may take.'),
  pageSize: integer(1, 1000).default(100).describe('Users asked for per page (Authentik `page_size`, Keycloak `max`).'),
  mailboxFrom: z
    .enum(['email', 'username'])
    .default('email')
    .describe("Which field of the provider's user is the mailbox: the email address or the user name."),
  usernameDomain: text().optional().describe('With `mailboxFrom: username`, the domain appended to user names without `@`.'),
  aliasAttribute: text()
    .optional()
    .describe('The user attribute holding alias addresses (a string or a list), e.g. `mail_aliases`; unset, no aliases.'),
  select: z
    .strictObject({
      group: text().optional().describe('Only (direct) members of this group are mail users.'),
      attribute: z
        .strictObject({
          name: text().describe('The user attribute to look at.'),
          value: text().optional().describe('The value it must hold; unset, any value but empty, `false` or `0`.'),
        })
        .optional()
        .describe('Only users with this attribute are mail users.'),
    })
    .default({})
    .describe('Who is a mail user; both set, both must hold; neither, every user with a mailbox.'),
  static: staticSection.optional(),
  authentik: authentikSection.optional(),
  keycloak: keycloakSection.optional(),
  domains: list(text()).default([]).describe('Mail domains: addresses elsewhere are ignored; empty, every domain.'),
  socketmap: z
    .strictObject({
      bind: hostPort().describe('Where Postfix reaches the socketmap server (no authentication: keep it on a private network); an address other than loopback needs `allowFrom`.'),
      allowFrom: list(text()).optional().describe('Addresses or CIDR blocks allowed to query it (Postfix); required unless `bind` is a loopback address.'),
      recipientDelimiter: z.string().max(4).optional().describe("Postfix's recipient_delimiter, e.g. `+`, stripped before lookups."),
      maxConnections: integer(1, 100_000).default(256).describe('Open socketmap connections at most.'),
    })
    .optional()
    .describe('A Postfix socketmap server for `virtual_mailbox_maps`, `virtual_alias_maps` and `smtpd_sender_login_maps`.'),
  dovecot: z
    .strictObject({
      passwdFile: text().describe("The passwd-file userdb sasl-gate rewrites atomically whenever the directory changes."),
      uid: integer(1, 4294967294).optional().describe('The uid written for every user.'),
      gid: integer(1, 4294967294).optional().describe('The gid written for every user.'),
      home: text().optional().describe('The home written for every user, e.g. `/var/mail/{domain}/{local}/home`.'),
      refreshIntervalSeconds: integer(1, 3600).default(30).describe('Seconds between checks that rewrite the file when grace periods end.'),
    })
    .optional()
    .describe("A passwd-file userdb for Dovecot."),
  scim: scimSection.optional(),
};

const SOURCE_DESCRIPTION =
  'Where mail users come from: `authentik` (its API), `keycloak` (its admin API), `static` (a YAML or JSON file), or `scim` (the provider pushes users to the SCIM endpoint); the section of that name is then required.';

/**
 * The directory: one variant per source, told apart by `source`. A variant requires its own
 * section (and, but for `static`, the state file); the other sources' sections are accepted and
 * ignored.
 */
const directorySchema = z
  .discriminatedUnion('source', [
    z.strictObject({ source: z.literal('static').describe(SOURCE_DESCRIPTION), ...directoryShape, static: staticSection }),
    z.strictObject({ source: z.literal('authentik'), ...directoryShape, stateFile: requiredStateFile, authentik: authentikSection }),
    z.strictObject({ source: z.literal('keycloak'), ...directoryShape, stateFile: requiredStateFile, keycloak: keycloakSection }),
    z.strictObject({ source: z.literal('scim'), ...directoryShape, stateFile: requiredStateFile, scim: scimSection }),
  ])
  .superRefine((d, ctx) => {
    if (d.authentik && (d.authentik.token === undefined) === (d.authentik.tokenFile === undefined)) {
      ctx.addIssue({ code: 'custom', path: ['authentik', 'token'], message: 'set one of directory.authentik.token and tokenFile' });
    }
    if (d.keycloak && (d.keycloak.clientSecret === undefined) === (d.keycloak.clientSecretFile === undefined)) {
      ctx.addIssue({ code: 'custom', path: ['keycloak', 'clientSecret'], message: 'set one of directory.keycloak.clientSecret and clientSecretFile' });
    }
    if (d.scim && (d.scim.token === undefined) === (d.scim.tokenFile === undefined)) {
      ctx.addIssue({ code: 'custom', path: ['scim', 'token'], message: 'set one of directory.scim.token and tokenFile' });
    }
    // Both answer who exists (user and alias enumeration): nobody but their clients may ask.
    for (const name of ['socketmap', 'scim'] as const) {
      const server = d[name];
      if (server && server.allowFrom === undefined && !isLoopbackHost(server.bind.host)) {
        ctx.addIssue({
          code: 'custom',
          path: [name, 'allowFrom'],
          message: `directory.${name}.bind ${server.bind.host} is not a loopback address: set directory.${name}.allowFrom to the addresses that may connect (${name === 'socketmap' ? 'Postfix' : 'the provider'})`,
        });
      }
    }
  });

const storageSchema = z
  .strictObject({
    dir: text()
      .optional()
      .describe(
        "The directory where sasl-gate keeps its state (the app-password database and, unless `appPasswords.keyFile` is set, the key their hashes are made with); created with mode 0700; a directory every local user may write to is refused. Required when `appPasswords.enabled` is true.",
      ),
    postgres: z
      .strictObject({
        url: z
          .string()
          .regex(/^postgres(ql)?:\/\//, 'must be a postgres:// URL')
          .optional()
          .describe(
            'The PostgreSQL database every replica shares (`postgres://user:password@host:5432/sasl_gate`, with `?sslmode=verify-full` across a network): app passwords, failure delays and the directory live there, and the schema is brought up to date at start. It holds a password: better set from the environment or `storage.postgres.urlFile`.',
          ),
        urlFile: text().optional().describe('A file holding `storage.postgres.url` (one line end at its end is dropped, nothing else is trimmed), read once at start.'),
        maxConnections: integer(1, 1000).default(10).describe('Connections this process keeps open to PostgreSQL at most.'),
        timeoutSeconds: seconds(600)
          .refine((v) => v >= 0.1, 'must be at least 0.1')
          .default(3)
          .describe(
            'How long a connection attempt or a query may take; after that the database counts as unreachable: app-password logins fail temporarily and failed logins get the longest delay.',
          ),
      })
      .optional()
      .superRefine((p, ctx) => {
        if (p && (p.url === undefined) === (p.urlFile === undefined)) {
          ctx.addIssue({ code: 'custom', path: ['url'], message: 'set one of storage.postgres.url and storage.postgres.urlFile' });
        }
      })
      .describe(
        'Shared state in PostgreSQL, for several replicas behind a load balancer; unset, each instance keeps its own (the embedded database in `storage.dir`, failure delays in memory).',
      ),
  })
  .default({})
  .describe('Where sasl-gate keeps state that outlives a restart: an embedded database in `storage.dir`, or PostgreSQL that several replicas share.');

const appPasswordsSchema = z
  .strictObject({
    enabled: boolean()
      .default(false)
      .describe(
        'Whether a `PLAIN` or `LOGIN` password may be an app password: one the user created in the self-service page (or an admin with `sasl-gate app-passwords create`). A live app password of that user, for that protocol, logs in with the master user as a token does; any other password passes through to the backend unchanged.',
      ),
    only: boolean()
      .default(false)
      .describe(
        'Whether every password login must be an app password: any other password is refused by sasl-gate and never reaches the backend, so Dovecot and Postfix need no user passwords at all. Needs `appPasswords.enabled`.',
      ),
    keyFile: text()
      .optional()
      .describe(
        'A file holding the server key app passwords are hashed with (HMAC-SHA-256; at least 32 bytes); unset, a key generated once in `storage.dir` (mode 0600). A key file other local users may read or write is refused. Whoever has the key and the database can test guesses offline: keep both private.',
      ),
    defaultProtocols: list(z.enum(PROTOCOLS), 1)
      .default([...PROTOCOLS])
      .describe('The protocols a new app password is good for when its creator names none.'),
    maxPerUser: integer(1, 1000).default(50).describe('How many live app passwords one user may have.'),
    lastUseWriteSeconds: integer(0, 86_400)
      .default(300)
      .describe(
        "How often, at most, an app password's last use (time, address, protocol) is written to the database; logins in between update only the copy in memory.",
      ),
  })
  .default({ enabled: false, only: false, defaultProtocols: [...PROTOCOLS], maxPerUser: 50, lastUseWriteSeconds: 300 })
  .superRefine((a, ctx) => {
    if (a.only && !a.enabled) ctx.addIssue({ code: 'custom', path: ['only'], message: 'appPasswords.only needs appPasswords.enabled: true' });
  })
  .describe('App passwords: per-device passwords for mail clients without OAuth, created after a sign-in with the provider.');

const portalSchema = z
  .strictObject({
    bind: hostPort().describe('The address and port of the HTTPS self-service page (it presents `tls`\'s certificate).'),
    publicUrl: httpsUrl().describe(
      'The address users reach the page at (`https://mail.example.com`, or with a port or path); the sign-in redirect goes to `<publicUrl>/callback`, which must be registered with the provider.',
    ),
    clientId: text()
      .optional()
      .describe('The OAuth client the page signs users in with (authorization code with PKCE); unset, `oauth.clientId`.'),
    clientSecret: text()
      .optional()
      .describe('That client\'s secret, if it is a confidential client; unset with `portal.clientId` unset, `oauth.clientSecret`. Better set from the environment or `portal.clientSecretFile`.'),
    clientSecretFile: text().optional().describe('A file holding `portal.clientSecret`, read once at start.'),
    scope: text().default('openid email profile').describe('The scopes the page asks for at sign-in.'),
    providerName: text()
      .optional()
      .describe('The provider\'s name on the page\'s "Sign in with ..." button (`Authentik`, `Keycloak`); unset, the host name of `oauth.issuer`.'),
    sessionIdleSeconds: integer(60, 86_400).default(1800).describe('How long a sign-in to the page lasts without activity.'),
    recentSignInSeconds: integer(30, 3600)
      .default(300)
      .describe(
        'How recent the sign-in at the provider must be to create an app password (the `max_age` sent to the provider, and checked in the ID token\'s `auth_time`); older, the page asks the provider again.',
      ),
  })
  .superRefine((p, ctx) => {
    if (p.clientSecret !== undefined && p.clientSecretFile !== undefined) {
      ctx.addIssue({ code: 'custom', path: ['clientSecret'], message: 'set one of portal.clientSecret and portal.clientSecretFile' });
    }
  });

/** Thunderbird versions whose `oauth_provider` keys the generated add-on may use (see docs/autoconfig.md). */
export const ADDON_MIN_VERSIONS = ['140', '153', '155'] as const;

const autoconfigSchema = z
  .strictObject({
    hostname: z
      .string()
      .regex(/^[A-Za-z0-9.-]{1,253}$/, 'must be a host name')
      .optional()
      .describe('The host name mail apps connect to for every listener (and the add-on registers); unset, the host of `portal.publicUrl`.'),
    displayName: text()
      .max(60)
      .optional()
      .describe('The provider name mail apps show while setting up the account; unset, the first accepted domain (else the host name).'),
    displayShortName: text().max(20).optional().describe('A short form of `autoconfig.displayName`; unset, the same.'),
    clientId: text()
      .optional()
      .describe(
        'A public OAuth client (no secret; authorization code with PKCE) registered with the provider for mail apps, published in the `<oAuth2>` block and the Thunderbird add-on. Unset, the documents offer passwords only (app passwords or the backend\'s). Never a confidential client: anything published here is public.',
      ),
    scope: text()
      .default('openid email offline_access')
      .describe('The scopes mail apps ask the provider for; the tokens must pass `oauth` (audience, required scopes) to log in.'),
    authorizationEndpoint: httpsUrl().optional().describe("The provider's authorization endpoint; unset, read from its discovery document."),
    tokenEndpoint: httpsUrl().optional().describe("The provider's token endpoint; unset, read from its discovery document."),
    cacheSeconds: integer(0, 86_400).default(3600).describe('How long mail apps and caches may keep the published documents (`Cache-Control: max-age`).'),
    addonId: z
      .string()
      .regex(/^[A-Za-z0-9._+-]+@[A-Za-z0-9.-]+$/, 'must look like name@domain')
      .optional()
      .describe('The Thunderbird add-on\'s id (`browser_specific_settings.gecko.id`); unset, `oauth-provider@<first accepted domain or hostname>`. Keep it across versions.'),
    addonVersion: z
      .string()
      .regex(/^\d{1,9}(\.\d{1,9}){0,3}$/, 'must be 1 to 4 dot-separated numbers')
      .default('1.0')
      .describe('The add-on\'s version; raise it to make Thunderbird install a changed add-on.'),
    addonMinVersion: z
      .enum(ADDON_MIN_VERSIONS)
      .default('140')
      .describe(
        'The oldest Thunderbird the add-on is for (`strict_min_version`): `140` registers the provider by host name; `153` adds `issuerIdentifier` and sign-in in the system browser; `155` adds `emailDomains`. Older versions refuse keys they do not know.',
      ),
  })
  .default({ scope: 'openid email offline_access', cacheSeconds: 3600, addonVersion: '1.0', addonMinVersion: '140' })
  .describe(
    'Autoconfiguration served on the portal listener without a sign-in: Thunderbird\'s `config-v1.1.xml`, the PACC document, and the Thunderbird add-on `sasl-gate thunderbird-addon` writes.',
  );

/** The whole configuration file, before secrets are read from files. */
export const configSchema = z
  .strictObject({
    listeners: z
      .array(listenerSchema)
      .min(1, 'at least one listener is needed')
      .describe('The ports mail clients connect to, each speaking IMAP, SMTP, POP3 or ManageSieve in front of its backend.'),
    hostname: z
      .string()
      .regex(/^[A-Za-z0-9.-]{1,253}$/, 'must be a host name')
      .default(() => hostname().replace(/[^A-Za-z0-9.-]/g, '-') || 'localhost')
      .meta({
        description: 'The name sasl-gate gives itself in the SMTP greeting and EHLO reply, and when it greets Postfix.',
        accepts: 'letters, digits, `.` and `-`, up to 253 characters',
        defaultText: "the machine's host name",
      }),
    tls: z
      .strictObject({
        cert: text()
          .optional()
          .describe(
            'The server certificate in PEM (with its chain), set together with `tls.key`; loaded again when the file changes or on SIGHUP. Required unless `tls.development` is true.',
          ),
        key: text().optional().describe('The private key of `tls.cert`, in PEM.'),
        development: boolean()
          .default(false)
          .describe(
            'Whether sasl-gate may generate a development certificate (which no mail client trusts) when `tls.cert` and `tls.key` are not set; for demos and tests only. Without it, a configuration without `tls.cert` is refused.',
          ),
        devCertDir: text()
          .default('certs')
          .describe(
            'The directory where a development CA and certificate are generated and kept, with `tls.development` and no `tls.cert` / `tls.key`.',
          ),
      })
      .default({ development: false, devCertDir: 'certs' })
      .superRefine((t, ctx) => {
        if ((t.cert === undefined) !== (t.key === undefined)) {
          ctx.addIssue({ code: 'custom', path: [t.cert ? 'key' : 'cert'], message: 'tls.cert and tls.key go together' });
        } else if (t.cert === undefined && !t.development) {
          ctx.addIssue({
            code: 'custom',
            path: ['cert'],
            message:
              'no certificate: set tls.cert and tls.key to the PEM files of the certificate your mail clients trust (or tls.development: true for a generated development certificate, demos and tests only)',
          });
        }
      })
      .describe('The certificate every listener presents to clients.'),
    backends: z
      .strictObject({
        imap: imapBackendSchema
          .optional()
          .describe("Dovecot's IMAP listener; required when a listener speaks `imap`."),
        smtp: smtpBackendSchema
          .optional()
          .describe("Postfix's submission listener for sasl-gate; required when a listener speaks `smtp`."),
        pop3: pop3BackendSchema
          .optional()
          .describe("Dovecot's POP3 listener; required when a listener speaks `pop3`."),
        sieve: sieveBackendSchema
          .optional()
          .describe("Dovecot's ManageSieve listener; required when a listener speaks `sieve`."),
      })
      .describe('The mail servers behind sasl-gate, which it logs users into.'),
    master: masterSchema.describe('The Dovecot master user sasl-gate logs token users in with.'),
    oauth: oauthSchema.describe('The OpenID Connect provider, and what a token must show to be accepted.'),
    admin: z
      .strictObject({
        bind: hostPort()
          .optional()
          .describe(
            'The address and port of the HTTP endpoint serving `/healthz`, `/readyz` and `/metrics`; unset, there is none; keep it on loopback or a private network.',
          ),
        metricsToken: z
          .string()
          .min(16, 'must be at least 16 characters')
          .optional()
          .describe(
            'A bearer token `/metrics` then requires (`Authorization: Bearer <token>`, at least 16 characters); `/healthz` and `/readyz` stay open. Better set from the environment or `admin.metricsTokenFile`.',
          ),
        metricsTokenFile: text()
          .optional()
          .describe('A file holding `admin.metricsToken` (one line end at its end is dropped, nothing else is trimmed), read once at start.'),
        readinessProbeSeconds: integer(1, 3600)
          .default(10)
          .describe(
            'A backend or the OpenID provider not heard from (no login, no probe) for this many seconds is probed for `/readyz`; one that is failing is probed this often until it answers.',
          ),
      })
      .default({ readinessProbeSeconds: 10 })
      .superRefine((a, ctx) => {
        if (a.metricsToken !== undefined && a.metricsTokenFile !== undefined) {
          ctx.addIssue({ code: 'custom', path: ['metricsToken'], message: 'set one of admin.metricsToken and admin.metricsTokenFile' });
        }
      })
      .describe('The HTTP endpoint for health checks and metrics.'),
    limits: limitsSchema.describe('Bounds on what one client, or all of them, may cost; each has a safe default.'),
    directory: directorySchema
      .optional()
      .describe('The mail-user directory fed by the provider and served to Postfix and Dovecot; unset, there is none.'),
    storage: storageSchema,
    appPasswords: appPasswordsSchema,
    portal: portalSchema
      .optional()
      .describe('The HTTPS listener for the self-service page where users sign in with the provider and manage their app passwords (with `appPasswords.enabled`), and for autoconfiguration (`autoconfig`); unset, there is none.'),
    autoconfig: autoconfigSchema,
    workers: z
      .union([z.literal('auto'), integer(1, 256)])
      .default(1)
      .describe(
        'How many processes serve the listeners: `auto` for one per available core, or a number. With more than one, a supervisor process runs the admin endpoint, the portal and the directory, restarts a worker that dies, and keeps failure delays and connection limits for the whole instance.',
      ),
    log: z
      .strictObject({
        level: z
          .enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'])
          .default('info')
          .describe(
            'The least severity written to the log (JSON lines on standard output); `debug` adds per-connection detail, `silent` writes nothing.',
          ),
      })
      .default({ level: 'info' })
      .describe('Logging.'),
  })
  .superRefine((c, ctx) => {
    c.listeners.forEach((l, i) => {
      if (!c.backends[l.protocol]) {
        ctx.addIssue({
          code: 'custom',
          path: ['backends', l.protocol],
          message: `listener ${i} speaks ${l.protocol}, so backends.${l.protocol} is needed`,
        });
      }
    });
    if (c.appPasswords.enabled && c.storage.postgres && c.appPasswords.keyFile === undefined) {
      // A key generated per replica would make every other replica's passwords fail.
      ctx.addIssue({
        code: 'custom',
        path: ['appPasswords', 'keyFile'],
        message: 'with storage.postgres every replica needs the same key: set appPasswords.keyFile',
      });
    }
    if (c.appPasswords.enabled && c.storage.dir === undefined && !c.storage.postgres) {
      ctx.addIssue({
        code: 'custom',
        path: ['storage', 'dir'],
        message: 'app passwords are kept in a database: set storage.dir (e.g. /var/lib/sasl-gate)',
      });
    }
    if (c.portal && c.appPasswords.enabled && c.portal.clientId === undefined && c.oauth.clientId === undefined) {
      ctx.addIssue({ code: 'custom', path: ['portal', 'clientId'], message: 'the portal signs users in with an OAuth client: set portal.clientId (or oauth.clientId)' });
    }
    if (c.backends.smtp?.proxyProtocol && c.backends.smtp.login === 'xclient') {
      // Postfix then checks smtpd_authorized_xclient_hosts against the client's address from the
      // header, never sasl-gate's, so XCLIENT is never offered and every token login would fail.
      ctx.addIssue({
        code: 'custom',
        path: ['backends', 'smtp', 'proxyProtocol'],
        message: 'with a PROXY header Postfix checks XCLIENT rights against the client, not sasl-gate: use backends.smtp.login: master',
      });
    }
  });

/** The validated configuration as the rest of the program sees it. */
export type Config = z.infer<typeof configSchema>;
export type ListenerConfig = Config['listeners'][number];
export type ImapBackendConfig = z.infer<typeof imapBackendSchema>;
export type SmtpBackendConfig = z.infer<typeof smtpBackendSchema>;
export type Pop3BackendConfig = z.infer<typeof pop3BackendSchema>;
export type SieveBackendConfig = z.infer<typeof sieveBackendSchema>;
export type DirectoryConfig = z.infer<typeof directorySchema>;
export type OAuthConfig = Config['oauth'];
export type LimitsConfig = Config['limits'];
export type AppPasswordsConfig = Config['appPasswords'];
export type PortalConfig = NonNullable<Config['portal']>;
export type StorageConfig = Config['storage'];
export type AutoconfigConfig = Config['autoconfig'];
/** The protocols a listener, and an app password, may speak. */
export type MailProtocol = (typeof PROTOCOLS)[number];

/**
 * The domains a token's identity must belong to: `oauth.allowedEmailDomains`, else the directory's
 * `domains` when a directory is configured; empty (every domain) when neither says.
 */
export function acceptedDomains(config: Pick<Config, 'oauth' | 'directory'>): string[] {
  if (config.oauth.allowedEmailDomains.length > 0) return [...config.oauth.allowedEmailDomains];
  return [...(config.directory?.domains ?? [])];
}

/** Settings that work but leave something open an admin should close; logged once at start. */
export function openSettingsWarnings(config: Config): string[] {
  const warnings: string[] = [];
  if (acceptedDomains(config).length === 0 && config.directory === undefined) {
    warnings.push(
      'oauth.allowedEmailDomains is empty and there is no directory: a valid token naming an address of any domain logs in as that user; set oauth.allowedEmailDomains to the domains this server hosts',
    );
    if (config.backends.smtp?.login === 'xclient') {
      // Dovecot refuses a master login for a user it does not know; XCLIENT LOGIN= asks nobody.
      warnings.push(
        'backends.smtp.login is xclient and no domain is accepted: Postfix takes XCLIENT LOGIN= for any name, so every user of the provider, whatever their address, may submit mail; set oauth.allowedEmailDomains, or use login: master',
      );
    }
  }
  const admin = config.admin;
  if (admin.bind && !isLoopbackHost(admin.bind.host) && admin.metricsToken === undefined && admin.metricsTokenFile === undefined) {
    warnings.push(
      `admin.bind ${admin.bind.host} is not a loopback address and /metrics needs no token: set admin.metricsToken (or admin.metricsTokenFile), or bind it to 127.0.0.1`,
    );
  }
  return warnings;
}

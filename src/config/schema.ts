import { isIP } from 'node:net';
import { hostname } from 'node:os';
import { z } from 'zod';

/*
 * The configuration schema. Every value may arrive as a string (from the environment), so the
 * scalar builders below coerce strings to numbers, booleans and comma-separated lists; YAML's
 * native types are accepted as they are.
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

/** `host:port`, `[v6]:port` or `:port`; the host defaults to all addresses. */
const hostPort = () =>
  z.string().transform((value, ctx) => {
    const match = /^(?:\[([0-9a-fA-F:.]+)\]|([^:[\]\s]*)):(\d{1,5})$/.exec(value.trim());
    const port = match ? Number(match[3]) : NaN;
    if (!match || port < 0 || port > 65535) {
      ctx.addIssue({ code: 'custom', message: `expected "host:port", got "${value}"` });
      return z.NEVER;
    }
    const host = match[1] ?? (match[2] || '0.0.0.0');
    if (match[1] !== undefined && isIP(host) !== 6) {
      ctx.addIssue({ code: 'custom', message: `"${host}" is not an IPv6 address` });
      return z.NEVER;
    }
    return { host, port };
  });

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
  });

/** Algorithms accepted for JWT access tokens unless `oauth.algorithms` says otherwise. */
export const ASYMMETRIC_ALGORITHMS = [
  'RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512', 'ES256', 'ES384', 'ES512', 'EdDSA',
] as const;
const HMAC_ALGORITHMS = ['HS256', 'HS384', 'HS512'] as const;
const ALGORITHMS = [...ASYMMETRIC_ALGORITHMS, ...HMAC_ALGORITHMS] as const;

const listenerSchema = z
  .strictObject({
    protocol: z.enum(['imap', 'smtp']),
    bind: hostPort(),
    tls: z.enum(['implicit', 'starttls']).default('implicit'),
    name: text().optional(),
    proxyProtocol: boolean().default(false),
    trustedProxies: list(text()).default([]),
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

const limitsSchema = z
  .strictObject({
    maxLineLength: integer(1024, 1 << 24).default(65536),
    maxLiteralSize: integer(1024, 1 << 24).default(65536),
    maxPreAuthCommands: integer(1, 100000).default(50),
    preAuthTimeoutSeconds: integer(1, 3600).default(60),
    maxConnections: integer(1, 10_000_000).default(20_000),
    maxConnectionsPerAddress: integer(1, 10_000_000).default(100),
    idleTimeoutSeconds: integer(1800, 86_400).default(1860),
    maxAuthFailures: integer(1, 1000).default(5),
    authFailureDelayMs: integer(0, 60_000).default(500),
    authFailureMaxDelayMs: integer(0, 300_000).default(15_000),
    shutdownGraceSeconds: integer(0, 3600).default(8),
  })
  .default({
    maxLineLength: 65536,
    maxLiteralSize: 65536,
    maxPreAuthCommands: 50,
    preAuthTimeoutSeconds: 60,
    maxConnections: 20_000,
    maxConnectionsPerAddress: 100,
    idleTimeoutSeconds: 1860,
    maxAuthFailures: 5,
    authFailureDelayMs: 500,
    authFailureMaxDelayMs: 15_000,
    shutdownGraceSeconds: 8,
  });

const imapBackendSchema = z.strictObject({
  host: text(),
  port: integer(1, 65535).default(143),
  connectTimeoutSeconds: integer(1, 300).default(10),
  responseTimeoutSeconds: integer(1, 300).default(30),
  capabilityRefreshSeconds: integer(10, 86400).default(300),
  proxyProtocol: boolean().default(false),
});

const smtpBackendSchema = z.strictObject({
  host: text(),
  port: integer(1, 65535).default(587),
  login: z.enum(['xclient', 'master']).default('xclient'),
  connectTimeoutSeconds: integer(1, 300).default(10),
  responseTimeoutSeconds: integer(1, 300).default(30),
  capabilityRefreshSeconds: integer(10, 86400).default(300),
  proxyProtocol: boolean().default(false),
});

const oauthSchema = z
  .strictObject({
    issuer: httpsUrl(),
    audience: list(text()).default([]),
    validation: list(z.enum(['jwt', 'introspection', 'userinfo']), 1).default(['jwt']),
    clientId: text().optional(),
    clientSecret: text().optional(),
    usernameClaims: list(text(), 1).default(['email', 'preferred_username']),
    algorithms: list(z.enum(ALGORITHMS), 1).default([...ASYMMETRIC_ALGORITHMS]),
    clockSkewSeconds: integer(0, 600).default(30),
    scope: text().default('openid email'),
    requestTimeoutSeconds: integer(1, 120).default(10),
    jwksRefetchCooldownSeconds: integer(0, 3600).default(10),
    clientAuthMethod: z.enum(['client_secret_basic', 'client_secret_post']).default('client_secret_basic'),
    jwksUri: httpsUrl().optional(),
    introspectionEndpoint: httpsUrl().optional(),
    userinfoEndpoint: httpsUrl().optional(),
    requiredScopes: list(text()).default([]),
    requireEmailVerified: boolean().default(false),
    allowedEmailDomains: list(text()).default([]),
    requiredClaim: z.strictObject({ name: text(), value: text() }).optional(),
    cache: z
      .strictObject({
        maxEntries: integer(0, 10_000_000).default(10_000),
        maxTtlSeconds: integer(0, 86_400).default(300),
        negativeTtlSeconds: integer(0, 3600).default(10),
      })
      .default({ maxEntries: 10_000, maxTtlSeconds: 300, negativeTtlSeconds: 10 }),
    breaker: z
      .strictObject({
        failureThreshold: integer(1, 1000).default(5),
        openSeconds: integer(1, 3600).default(15),
      })
      .default({ failureThreshold: 5, openSeconds: 15 }),
  })
  .superRefine((o, ctx) => {
    if (o.audience.length === 0 && !o.clientId) {
      ctx.addIssue({
        code: 'custom',
        path: ['audience'],
        message: 'set oauth.audience (or oauth.clientId): tokens issued for other clients must not be accepted',
      });
    }
    if (o.validation.includes('introspection') && (!o.clientId || !o.clientSecret)) {
      ctx.addIssue({
        code: 'custom',
        path: ['validation'],
        message: 'introspection authenticates with oauth.clientId and oauth.clientSecret; set both',
      });
    }
    if (o.algorithms.some((a) => a.startsWith('HS')) && !o.clientSecret) {
      ctx.addIssue({
        code: 'custom',
        path: ['algorithms'],
        message: 'HS256/384/512 need oauth.clientSecret, the shared secret that verifies them',
      });
    }
  });

const masterSchema = z
  .strictObject({
    user: text(),
    password: z.string().min(1).optional(),
    passwordFile: text().optional(),
    separator: z.string().length(1).default('*'),
  })
  .superRefine((m, ctx) => {
    if (m.password === undefined && m.passwordFile === undefined) {
      ctx.addIssue({ code: 'custom', path: ['password'], message: 'set master.password or master.passwordFile' });
    }
    if (m.user.includes(m.separator)) {
      ctx.addIssue({ code: 'custom', path: ['user'], message: `must not contain the separator "${m.separator}"` });
    }
  });

/** The whole configuration file, before secrets are read from files. */
export const configSchema = z
  .strictObject({
    listeners: z.array(listenerSchema).min(1, 'at least one listener is needed'),
    hostname: z
      .string()
      .regex(/^[A-Za-z0-9.-]{1,253}$/, 'must be a host name')
      .default(() => hostname().replace(/[^A-Za-z0-9.-]/g, '-') || 'localhost'),
    tls: z
      .strictObject({ cert: text().optional(), key: text().optional(), devCertDir: text().default('certs') })
      .default({ devCertDir: 'certs' })
      .superRefine((t, ctx) => {
        if ((t.cert === undefined) !== (t.key === undefined)) {
          ctx.addIssue({ code: 'custom', path: [t.cert ? 'key' : 'cert'], message: 'tls.cert and tls.key go together' });
        }
      }),
    backends: z.strictObject({ imap: imapBackendSchema.optional(), smtp: smtpBackendSchema.optional() }),
    master: masterSchema,
    oauth: oauthSchema,
    admin: z.strictObject({ bind: hostPort().optional() }).default({}),
    limits: limitsSchema,
    log: z
      .strictObject({ level: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info') })
      .default({ level: 'info' }),
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
  });

/** The validated configuration as the rest of the program sees it. */
export type Config = z.infer<typeof configSchema>;
export type ListenerConfig = Config['listeners'][number];
export type ImapBackendConfig = z.infer<typeof imapBackendSchema>;
export type SmtpBackendConfig = z.infer<typeof smtpBackendSchema>;
export type OAuthConfig = Config['oauth'];
export type LimitsConfig = Config['limits'];

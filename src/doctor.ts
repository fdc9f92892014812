/**
 * `sasl-gate doctor`: checks everything sasl-gate depends on, the way it will use it, and says in
 * one line per check what is wrong and what to change: the provider's discovery document, its
 * signing keys, each backend (greeting, capabilities, the login sasl-gate does on a user's
 * behalf), the TLS certificate, and optionally a token. Every network step has a deadline, and
 * no secret (the token, the master password, the client secret) is ever printed.
 */
import { masterCredentials } from './login/connection.js';
import { X509Certificate, createPrivateKey, randomBytes } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import type { Socket } from 'node:net';
import { join } from 'node:path';
import { ChainValidator, type StrategyReport } from './auth/chain.js';
import { autoconfigSettings, dnsRecords, listenerServers, paccDocument, PACC_PROTOCOLS } from './autoconfig/documents.js';
import { openidConfigurationUrl, ProviderClient, type ProviderEndpoints } from './auth/provider.js';
import { ValidationError } from './auth/validation-error.js';
import type { TokenIdentity } from './auth/validator.js';
import type { GateConfig } from './config/load.js';
import { acceptedDomains, type ImapBackendConfig, type Pop3BackendConfig, type SieveBackendConfig, type SmtpBackendConfig } from './config/schema.js';
import { GateError } from './errors.js';
import { loginToBackend, type ClientOrigin } from './imap/backend-login.js';
import { probeImapCapabilities } from './imap/capabilities.js';
import { tcpConnector, type BackendConnector } from './net/connector.js';
import { DEV_CA_COMMON_NAME } from './tls/devcert.js';
import { loginToSmtpBackend, type SmtpClientOrigin } from './smtp/backend-login.js';
import { probeSmtpExtensions } from './smtp/capabilities.js';
import { loginToBackend as loginToPop3Backend, type ClientOrigin as Pop3ClientOrigin } from './pop3/backend-login.js';
import { probePop3Capabilities, saslMechanisms } from './pop3/capabilities.js';
import { loginToSieveBackend, type SieveClientOrigin } from './sieve/backend-login.js';
import { mechanismsOf, probeSieveCapabilities, splitCapability } from './sieve/capabilities.js';

export interface DoctorOptions {
  /** An access token to validate (and whose user the backend logins are tried for); never printed. */
  token?: string;
  /** The user the master logins are tried for, without a token; wins over the token's user. */
  user?: string;
  /** Receives each line of the report; default: standard output. */
  out?: (line: string) => void;
  /** The clock for certificate and token expiry; default: now. */
  now?: () => Date;
}

export type DoctorStatus = 'PASS' | 'FAIL' | 'WARN';

/** Why no backend login was tried, and what to do about it. */
interface UserHint {
  why: string;
  /** What to do so that `login` is tried. */
  then: (login: string) => string;
}

/** One line of the report. */
export interface DoctorCheck {
  status: DoctorStatus;
  name: string;
  finding: string;
  /** What to change; shown after the finding when the check did not pass. */
  hint?: string;
}

const DAY_MS = 24 * 3600 * 1000;
/** A certificate with less time left than this is worth a warning. */
const CERT_WARN_DAYS = 14;
/** `serve` replaces a development certificate with less time left than this. */
const DEV_RENEW_DAYS = 7;
const NAME_WIDTH = 15;

function days(n: number): string {
  return `${n} day${n === 1 ? '' : 's'}`;
}

/** One report line: status, check name, finding, and the hint for anything that did not pass. */
export function formatCheck(check: DoctorCheck): string {
  const hint = check.status !== 'PASS' && check.hint ? ` — ${check.hint}` : '';
  return `${check.status}  ${check.name.padEnd(NAME_WIDTH)}${check.finding}${hint}`;
}

/**
 * Runs every check that applies to the configuration and prints one line each. Resolves with the
 * exit code: 0 when nothing failed (warnings allowed), 1 otherwise.
 */
export async function runDoctor(config: GateConfig, options: DoctorOptions = {}): Promise<number> {
  const now = options.now ?? (() => new Date());
  const token = options.token?.trim().replace(/^Bearer\s+/i, '') || undefined;
  const secrets = [token, config.master.password, config.oauth.clientSecret].filter(
    (s): s is string => typeof s === 'string' && s.length >= 4,
  );
  const write = options.out ?? ((line: string) => process.stdout.write(`${line}\n`));
  let failed = false;
  const report = (check: DoctorCheck) => {
    if (check.status === 'FAIL') failed = true;
    write(redact(formatCheck(check), secrets));
  };

  const provider = new ProviderClient(config.oauth, { retryAfterFailureMs: 0 });
  const discovery = await checkDiscovery(config, provider);
  report(discovery.check);
  if (config.oauth.validation.includes('jwt')) report(await checkJwks(config, discovery.endpoints));
  if (config.oauth.validation.includes('introspection')) report(await checkIntrospection(config, provider, discovery.endpoints));
  report(checkIdentity(config));

  // The token is judged first (its line comes last): its user is who the backend logins are tried for.
  const tokenResult = token === undefined ? undefined : await checkToken(config, provider, token, discovery.endpoints, now);
  const user = options.user ?? tokenResult?.identity?.identity;
  const userHint: UserHint =
    token === undefined
      ? {
          why: 'no user was named and no token given',
          then: (login) => `name a mailbox (sasl-gate doctor --config FILE --user NAME), or pipe a token in (< token), to try ${login} for that user`,
        }
      : {
          why: discovery.endpoints ? 'the token was not accepted' : 'the token could not be checked',
          then: (login) => `see the token line: once a token passes, doctor tries ${login} for its user; or name one with --user NAME`,
        };

  const imap = config.backends.imap;
  if (imap) for (const check of await checkImap(config, imap, user, userHint)) report(check);
  const smtp = config.backends.smtp;
  if (smtp) for (const check of await checkSmtp(config, smtp, user, userHint)) report(check);
  const pop3 = config.backends.pop3;
  if (pop3) for (const check of await checkDovecotLogin(POP3_CHECKS, config, pop3, user, userHint)) report(check);
  const sieve = config.backends.sieve;
  if (sieve) for (const check of await checkDovecotLogin(SIEVE_CHECKS, config, sieve, user, userHint)) report(check);

  report(await checkCertificate(config, now()));
  if (tokenResult) report(tokenResult.check);
  if (config.portal) {
    const published = autoconfigReport(config);
    for (const check of published.checks) report(check);
    for (const line of published.lines) write(line);
  }
  return failed ? 1 : 0;
}

/**
 * What mail apps will be told (the portal's autoconfiguration), and the DNS records that make
 * them find it: printed for the admin to publish, from the configuration alone.
 */
export function autoconfigReport(config: GateConfig): { checks: DoctorCheck[]; lines: string[] } {
  const servers = listenerServers(config.listeners);
  const domains = acceptedDomains(config);
  const settings = autoconfigSettings(config, domains, servers);
  const publicUrl = new URL(config.portal!.publicUrl);
  const portalHost = publicUrl.hostname.replace(/^\[|\]$/g, '');
  const checks: DoctorCheck[] = [];
  const notes: string[] = [];
  if (publicUrl.port !== '' && publicUrl.port !== '443') {
    notes.push(`mail apps fetch autoconfiguration from port 443, but portal.publicUrl uses ${publicUrl.port}: forward 443 to the portal`);
  }
  for (const p of PACC_PROTOCOLS) {
    const implicit = servers.filter((s) => s.protocol === p.protocol && s.tls === 'implicit');
    if (implicit.length > 0 && !implicit.some((s) => s.port === p.port)) {
      notes.push(`PACC names no ports and implies ${p.port} for ${p.name}; the ${p.protocol} listener is on ${implicit.map((s) => s.port).join(', ')} (fine only if ${p.port} is forwarded to it)`);
    }
  }
  if (settings.clientId === undefined) notes.push('autoconfig.clientId is not set: the documents offer passwords only, not OAuth2');
  const offered = settings.clientId === undefined ? 'passwords' : `OAuth2 (client ${settings.clientId}) and passwords`;
  checks.push({
    status: notes.length > 0 ? 'WARN' : 'PASS',
    name: 'autoconfig',
    finding: `${publicUrl.origin}/.well-known/autoconfig/mail/config-v1.1.xml and ${PACC_PATH_TEXT} offer ${settings.hostname} with ${offered}`,
    hint: notes.join('; '),
  });
  if (domains.length === 0) {
    checks.push({
      status: 'WARN',
      name: 'dns records',
      finding: 'no accepted domain is configured, so the records below are for example.com',
      hint: 'set oauth.allowedEmailDomains (or directory.domains) to the domains this server hosts',
    });
  }
  const pacc = paccDocument(settings);
  const lines = ['', 'DNS records to publish, so that mail apps find these settings (RFC 6186 / 8314 SRV, Thunderbird autoconfig, PACC):'];
  for (const domain of domains.length > 0 ? domains : ['example.com']) {
    for (const r of dnsRecords(settings, portalHost, domain, pacc)) lines.push(`  ${r.name.padEnd(36)} IN ${r.type.padEnd(5)} ${r.value}    ; ${r.note}`);
  }
  lines.push(`The certificate of ${portalHost} must also name autoconfig.<domain> and ua-auto-config.<domain> (tls.cert).`);
  return { checks, lines };
}

const PACC_PATH_TEXT = '/.well-known/user-agent-configuration.json';

function redact(line: string, secrets: string[]): string {
  let out = line;
  for (const s of secrets) out = out.split(s).join('[redacted]');
  return out;
}

// ---------------------------------------------------------------------------------------------
// Errors and hints

interface Cause {
  /** The messages of the error and its causes, outermost first, without repeats. */
  text: string;
  /** Every `code` and `name` along the chain (ECONNREFUSED, TimeoutError, ...). */
  codes: Set<string>;
}

/** The whole cause chain of an error in one line, with the codes that pick a hint. */
function cause(err: unknown): Cause {
  const messages: string[] = [];
  const codes = new Set<string>();
  const seen = new Set<unknown>();
  const visit = (e: unknown, depth: number) => {
    if (e === undefined || e === null || seen.has(e) || depth > 6) return;
    seen.add(e);
    if (typeof e !== 'object') {
      messages.push(String(e));
      return;
    }
    const { message, code, name, errors } = e as { message?: unknown; code?: unknown; name?: unknown; errors?: unknown };
    if (typeof code === 'string') codes.add(code);
    if (typeof name === 'string') codes.add(name);
    if (typeof message === 'string' && message !== '' && !messages.some((m) => m.includes(message))) messages.push(message);
    if (Array.isArray(errors)) for (const inner of errors) visit(inner, depth + 1);
    visit((e as { cause?: unknown }).cause, depth + 1);
  };
  visit(err, 0);
  // A cause whose message an outer one already quotes (describeError does that) was left out.
  return { text: messages.join(': ') || 'unknown error', codes };
}

const UNTRUSTED_CERT = [
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'SELF_SIGNED_CERT_IN_CHAIN',
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'UNABLE_TO_GET_ISSUER_CERT',
];

/** What to look at when an HTTPS request to the provider failed. */
function providerHint(c: Cause, timeoutSeconds: number): string {
  const has = (...codes: string[]) => codes.some((code) => c.codes.has(code));
  if (has(...UNTRUSTED_CERT)) {
    return "the provider's certificate is not trusted here: for a private CA start sasl-gate with NODE_EXTRA_CA_CERTS=/path/to/ca.pem";
  }
  if (has('CERT_HAS_EXPIRED')) return "the provider's certificate has expired: renew it at the provider";
  if (has('ERR_TLS_CERT_ALTNAME_INVALID')) return "the provider's certificate does not name this host: is oauth.issuer spelled the way the provider is reached?";
  if (has('ECONNREFUSED')) return 'nothing listens there: is the provider running, and is the host and port in oauth.issuer right from this machine?';
  if (has('ENOTFOUND', 'EAI_AGAIN')) return 'the host name does not resolve here: DNS, /etc/hosts, the container network?';
  if (has('TimeoutError', 'AbortError', 'ETIMEDOUT', 'probe_timeout', 'UND_ERR_CONNECT_TIMEOUT', 'UND_ERR_HEADERS_TIMEOUT')) {
    return `no answer within oauth.requestTimeoutSeconds (${timeoutSeconds} s): a firewall, or a proxy this host must use?`;
  }
  if (has('ECONNRESET', 'UND_ERR_SOCKET')) return 'the connection was dropped: a proxy or load balancer in the way? https:// against an http:// port?';
  return 'is the provider reachable from here? proxies? NODE_EXTRA_CA_CERTS for a private CA?';
}

/** A check that got no usable answer: none in time, an HTTP error status, or a body that is not JSON. */
class ProbeError extends GateError {
  declare readonly code: 'probe_timeout' | 'http_status' | 'not_json';
  constructor(code: ProbeError['code'], message: string) {
    super(code, message, { temporary: code === 'probe_timeout' });
    this.name = 'ProbeError';
  }
}

/** Resolves with `work`, or rejects when it takes longer than `ms` (a safety net over the steps' own deadlines). */
function within<T>(ms: number, what: string, work: Promise<T>): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () => reject(new ProbeError('probe_timeout', `${what}: no answer within ${Math.round(ms / 1000)} s`)),
      ms,
    );
    timer.unref();
  });
  return Promise.race([work, deadline]).finally(() => clearTimeout(timer));
}

// ---------------------------------------------------------------------------------------------
// (1) discovery

const ENDPOINT_OF = {
  jwt: { field: 'jwksUri', metadata: 'jwks_uri', key: 'oauth.jwksUri' },
  introspection: { field: 'introspectionEndpoint', metadata: 'introspection_endpoint', key: 'oauth.introspectionEndpoint' },
  userinfo: { field: 'userinfoEndpoint', metadata: 'userinfo_endpoint', key: 'oauth.userinfoEndpoint' },
} as const;

async function checkDiscovery(
  config: GateConfig,
  provider: ProviderClient,
): Promise<{ check: DoctorCheck; endpoints: ProviderEndpoints | undefined }> {
  const oauth = config.oauth;
  const url = openidConfigurationUrl(oauth.issuer);
  let endpoints: ProviderEndpoints;
  try {
    endpoints = await within((oauth.requestTimeoutSeconds + 1) * 1000, `GET ${url}`, provider.endpoints());
  } catch (err) {
    // ProviderClient wraps the failure; the interesting part is what it wraps.
    const inner = (err as { cause?: unknown }).cause ?? err;
    const c = cause(inner);
    const announced = (inner as { cause?: { attribute?: unknown; body?: { issuer?: unknown } } }).cause;
    let hint = providerHint(c, oauth.requestTimeoutSeconds);
    if (announced?.attribute === 'issuer' && typeof announced.body?.issuer === 'string') {
      hint = `the provider calls itself ${announced.body.issuer}: set oauth.issuer to exactly that (trailing slash included)`;
    } else if (/status code|not a conform|404|JSON/i.test(c.text) && !c.codes.has('TimeoutError')) {
      hint =
        'is oauth.issuer the issuer URL? Authentik: https://HOST/application/o/SLUG/, Keycloak: https://HOST/realms/REALM; ' +
        `${url} must answer with the provider's OpenID configuration`;
    }
    return { check: { status: 'FAIL', name: 'discovery', finding: `GET ${url}: ${c.text}`, hint }, endpoints: undefined };
  }

  const found: string[] = [];
  const missing: Array<{ metadata: string; strategy: string; key: string }> = [];
  for (const strategy of oauth.validation) {
    const { field, metadata, key } = ENDPOINT_OF[strategy];
    if (endpoints[field]) found.push(oauth[field] !== undefined ? `${metadata} (from ${key})` : metadata);
    else missing.push({ metadata, strategy, key });
  }
  if (missing.length > 0) {
    return {
      check: {
        status: 'FAIL',
        name: 'discovery',
        finding: `${endpoints.issuer}: the provider announces no ${missing.map((m) => m.metadata).join(', no ')}`,
        hint: missing
          .map((m) => `oauth.validation "${m.strategy}" needs it: set ${m.key}, or take "${m.strategy}" out of oauth.validation`)
          .join('; '),
      },
      endpoints,
    };
  }
  return {
    check: { status: 'PASS', name: 'discovery', finding: `${endpoints.issuer} (issuer matches; ${found.join(', ')} found)` },
    endpoints,
  };
}

// ---------------------------------------------------------------------------------------------
// (2) JWKS

/** Algorithms a published key can verify. */
function algorithmsOf(jwk: Record<string, unknown>): string[] {
  if (typeof jwk['alg'] === 'string') return [jwk['alg']];
  switch (jwk['kty']) {
    case 'RSA':
      return ['RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512'];
    case 'EC':
      return { 'P-256': ['ES256'], 'P-384': ['ES384'], 'P-521': ['ES512'] }[String(jwk['crv'])] ?? [];
    case 'OKP':
      return ['Ed25519', 'Ed448'].includes(String(jwk['crv'])) ? ['EdDSA'] : [];
    default:
      return [];
  }
}

async function checkJwks(config: GateConfig, endpoints: ProviderEndpoints | undefined): Promise<DoctorCheck> {
  const oauth = config.oauth;
  const allowed = oauth.algorithms.filter((a) => !a.startsWith('HS'));
  if (allowed.length === 0) {
    return { status: 'PASS', name: 'jwks', finding: 'not needed: oauth.algorithms allows only HMAC, verified with oauth.clientSecret' };
  }
  const uri = endpoints?.jwksUri ?? oauth.jwksUri;
  if (uri === undefined) {
    return endpoints
      ? { status: 'FAIL', name: 'jwks', finding: 'no jwks_uri to fetch', hint: 'set oauth.jwksUri' }
      : { status: 'WARN', name: 'jwks', finding: 'not checked: discovery failed (see above)' };
  }
  const timeoutMs = oauth.requestTimeoutSeconds * 1000;
  let body: unknown;
  try {
    body = await within(timeoutMs + 1000, `GET ${uri}`, (async () => {
      const response = await fetch(uri, { signal: AbortSignal.timeout(timeoutMs), headers: { accept: 'application/json' } });
      if (!response.ok) {
        await response.body?.cancel();
        throw new ProbeError('http_status', `HTTP ${response.status} ${response.statusText}`.trim());
      }
      const text = await response.text();
      try {
        return JSON.parse(text) as unknown;
      } catch {
        throw new ProbeError('not_json', 'the answer is not JSON');
      }
    })());
  } catch (err) {
    const c = cause(err);
    const http = c.codes.has('http_status') || c.codes.has('not_json');
    return {
      status: 'FAIL',
      name: 'jwks',
      finding: `GET ${uri}: ${c.text}`,
      hint: http
        ? `${uri} must answer with the issuer's JSON Web Key Set; ${oauth.jwksUri ? 'is oauth.jwksUri right?' : 'the provider announces it in its discovery document'}`
        : providerHint(c, oauth.requestTimeoutSeconds),
    };
  }
  const keys = (body as { keys?: unknown } | null)?.keys;
  if (!Array.isArray(keys)) {
    return { status: 'FAIL', name: 'jwks', finding: `GET ${uri}: no "keys" list in the answer`, hint: `is ${uri} the issuer's JWKS?` };
  }
  const signing = keys.filter(
    (k): k is Record<string, unknown> => k !== null && typeof k === 'object' && (k as { use?: unknown }).use !== 'enc',
  );
  if (signing.length === 0) {
    return {
      status: 'FAIL',
      name: 'jwks',
      finding: `GET ${uri}: the issuer publishes no signing keys`,
      hint: 'give the provider a signing key (Authentik: "Signing Key" of the OAuth2 provider), or, for tokens signed with the client secret, set oauth.algorithms to HS256',
    };
  }
  const published = [...new Set(signing.flatMap(algorithmsOf))];
  const usable = signing.filter((k) => algorithmsOf(k).some((a) => (allowed as string[]).includes(a)));
  const described = `${signing.length} signing key${signing.length === 1 ? '' : 's'} (${published.join(', ') || 'unknown algorithms'})`;
  if (usable.length === 0) {
    return {
      status: 'FAIL',
      name: 'jwks',
      finding: `GET ${uri}: ${described}, none usable with oauth.algorithms (${allowed.join(', ')})`,
      hint: `add the provider's algorithm (${published.join(', ') || '?'}) to oauth.algorithms`,
    };
  }
  const note = usable.length < signing.length ? `, ${usable.length} usable with oauth.algorithms` : ', allowed by oauth.algorithms';
  return { status: 'PASS', name: 'jwks', finding: `GET ${uri}: ${described}${note}` };
}

// ---------------------------------------------------------------------------------------------
// (2b) introspection credentials, (2c) who may log in

/** Whether a provider call failed because the provider refused sasl-gate's client credentials. */
function isInvalidClient(err: unknown): boolean {
  for (let e = err, depth = 0; e !== null && typeof e === 'object' && depth < 6; e = (e as { cause?: unknown }).cause, depth++) {
    if ((e as { error?: unknown }).error === 'invalid_client') return true;
    // A 401 with a WWW-Authenticate challenge (oidc-provider) carries the error among its parameters.
    const challenges = (e as { cause?: unknown }).cause;
    if (Array.isArray(challenges) && challenges.some((c) => (c as { parameters?: { error?: unknown } })?.parameters?.error === 'invalid_client')) {
      return true;
    }
  }
  return false;
}

const UNRESERVED = /^[A-Za-z0-9._~-]*$/;

/** What to check when the provider answers `invalid_client`, in words, naming the encoding case. */
function invalidClientHint(config: GateConfig): string {
  const { clientId = '', clientSecret = '', clientAuthMethod } = config.oauth;
  const special = [
    ...(UNRESERVED.test(clientId) ? [] : ['oauth.clientId']),
    ...(UNRESERVED.test(clientSecret) ? [] : ['oauth.clientSecret']),
  ];
  const encoding =
    clientAuthMethod === 'client_secret_post'
      ? ''
      : special.length > 0
        ? `; ${special.join(' and ')} contain${special.length === 1 ? 's' : ''} characters other than letters, digits and - . _ ~: sasl-gate sends those percent-encoded in the Basic header as RFC 6749 asks, which a provider that reads the header without decoding (Authentik) never matches; choose an ID and secret of letters, digits and - . _ ~, or set oauth.clientAuthMethod: client_secret_post`
        : '; sasl-gate sends them in the Basic header as they are (letters, digits and - . _ ~ need no encoding), so the values themselves are wrong, or the provider expects oauth.clientAuthMethod: client_secret_post';
  return `the provider refused sasl-gate's client credentials (invalid_client): check oauth.clientId and oauth.clientSecret against the client at the provider (a confidential client that may introspect)${encoding}`;
}

async function checkIntrospection(config: GateConfig, provider: ProviderClient, endpoints: ProviderEndpoints | undefined): Promise<DoctorCheck> {
  if (!endpoints?.introspectionEndpoint) {
    return { status: 'WARN', name: 'introspection', finding: 'not checked: no introspection endpoint (see discovery above)' };
  }
  const url = endpoints.introspectionEndpoint;
  // A made-up token: a provider that accepts the client credentials answers `active: false`.
  const probe = randomBytes(24).toString('base64url');
  try {
    const answer = await within((config.oauth.requestTimeoutSeconds + 1) * 1000, `POST ${url}`, provider.introspect(probe));
    if (answer.active === false) {
      return { status: 'PASS', name: 'introspection', finding: `${url} accepts sasl-gate's client credentials (${config.oauth.clientAuthMethod})` };
    }
    return {
      status: 'FAIL',
      name: 'introspection',
      finding: `${url} calls a made-up token active`,
      hint: 'is oauth.introspectionEndpoint an RFC 7662 introspection endpoint?',
    };
  } catch (err) {
    const inner = (err as { cause?: unknown }).cause ?? err;
    if (isInvalidClient(err)) {
      return { status: 'FAIL', name: 'introspection', finding: `POST ${url}: the provider answered invalid_client`, hint: invalidClientHint(config) };
    }
    return {
      status: 'FAIL',
      name: 'introspection',
      finding: `POST ${url}: ${cause(inner).text}`,
      hint: providerHint(cause(inner), config.oauth.requestTimeoutSeconds),
    };
  }
}

/** Which tokens may name which users: an open domain list is worth a warning. */
function checkIdentity(config: GateConfig): DoctorCheck {
  const claims = config.oauth.usernameClaims.join(', ');
  const domains = acceptedDomains(config);
  if (domains.length > 0) {
    const from = config.oauth.allowedEmailDomains.length > 0 ? 'oauth.allowedEmailDomains' : 'directory.domains';
    return { status: 'PASS', name: 'identity', finding: `users from ${claims}, addresses of ${domains.join(', ')} only (${from})` };
  }
  if (config.directory) {
    return { status: 'PASS', name: 'identity', finding: `users from ${claims}, directory users only (any domain)` };
  }
  return {
    status: 'WARN',
    name: 'identity',
    finding: `users from ${claims}, addresses of any domain: a valid token naming any address logs in as that user`,
    hint: 'set oauth.allowedEmailDomains to the domains this server hosts (or configure a directory)',
  };
}

// ---------------------------------------------------------------------------------------------
// (5) token (judged before the backends, reported last)

const TOKEN_HINTS: Record<string, (config: GateConfig) => string> = {
  expired: (c) => `get a fresh token; if it is fresh, compare this host's clock with the provider's (oauth.clockSkewSeconds is ${c.oauth.clockSkewSeconds} s)`,
  not_yet_valid: () => "this host's clock is behind the provider's: check NTP",
  wrong_issuer: (c) => `the token's iss must be exactly oauth.issuer (${c.oauth.issuer}), trailing slash included`,
  wrong_audience: (c) =>
    `the token was issued for another client: its aud or azp must be one of ${(c.oauth.audience.length > 0 ? c.oauth.audience : [c.oauth.clientId ?? '']).join(', ')} (oauth.audience; Keycloak: an audience mapper)`,
  bad_algorithm: (c) => `the token's algorithm is not in oauth.algorithms (${c.oauth.algorithms.join(', ')})`,
  unknown_key: () => "signed with a key the issuer's JWKS does not hold: a token from another issuer or environment?",
  no_identity: (c) =>
    `none of oauth.usernameClaims (${c.oauth.usernameClaims.join(', ')}) is in the token: request the email scope, or list the claim that names the mailbox`,
  bad_identity: (c) => `the claim must be a plain mail address (local@domain) without "${c.master.separator}", the master separator`,
  wrong_token_type: () => 'the client sends an ID or refresh token: it must send the access token of its token response',
  inactive: () => 'the provider says it is not active: revoked, expired, or issued for another client',
  insufficient_scope: (c) => `request ${c.oauth.requiredScopes.join(' ')} when getting the token (oauth.requiredScopes)`,
  email_not_verified: () => 'verify the e-mail address at the provider (with email_verified: false a token is always refused; with oauth.requireEmailVerified it must say true)',
  domain_not_allowed: (c) =>
    `only addresses of ${acceptedDomains(c).join(', ')} may log in (${c.oauth.allowedEmailDomains.length > 0 ? 'oauth.allowedEmailDomains' : 'directory.domains'})`,
  missing_claim: (c) =>
    c.oauth.requiredClaim
      ? `the user needs ${c.oauth.requiredClaim.name} = ${c.oauth.requiredClaim.value} at the provider (oauth.requiredClaim)`
      : 'see oauth.requiredClaim',
  bad_token: () => 'is it an access token (not an ID or refresh token), complete and unchanged?',
};

function relative(date: Date, now: Date): string {
  const seconds = Math.round((date.getTime() - now.getTime()) / 1000);
  const abs = Math.abs(seconds);
  const span =
    abs >= 2 * 86400
      ? days(Math.round(abs / 86400))
      : abs >= 5400
        ? `${Math.round(abs / 360) / 10} h`
        : abs >= 60
          ? `${Math.round(abs / 60)} min`
          : `${abs} s`;
  return seconds >= 0 ? `in ${span}` : `${span} ago`;
}

function describeReports(reports: readonly StrategyReport[] | undefined, last: boolean): string {
  const shown = (reports ?? []).slice(0, last ? undefined : -1);
  return shown.map((r) => `${r.strategy} ${r.verdict}${r.reason ? ` (${r.reason})` : ''}`).join('; ');
}

async function checkToken(
  config: GateConfig,
  provider: ProviderClient,
  token: string,
  endpoints: ProviderEndpoints | undefined,
  now: () => Date,
): Promise<{ check: DoctorCheck; identity?: TokenIdentity }> {
  if (!endpoints) {
    return { check: { status: 'FAIL', name: 'token', finding: 'not checked: discovery failed (see above)', hint: 'fix discovery first' } };
  }
  const oauth = config.oauth;
  const validator = new ChainValidator(oauth, { masterSeparator: config.master.separator, domains: acceptedDomains(config), provider });
  // Each strategy may call the provider once or twice, each call with its own timeout.
  const budgetMs = (oauth.validation.length * 2 + 1) * oauth.requestTimeoutSeconds * 1000;
  try {
    const { result, reports } = await within(budgetMs, 'token validation', validator.explain(token));
    const before = describeReports(reports, false);
    const expiry = result.expiresAt ? `expires ${relative(result.expiresAt, now())}` : 'no expiry stated';
    return {
      identity: result,
      check: {
        status: 'PASS',
        name: 'token',
        finding: `accepted by ${result.strategy}: ${result.identity} (claim ${result.claim}), ${expiry}${before ? ` [${before}]` : ''}`,
      },
    };
  } catch (err) {
    const e = err as { code?: string; message?: string; temporary?: boolean };
    const reports = err instanceof ValidationError ? err.reports : undefined;
    const code = e.code ?? 'error';
    const decisive = reports?.at(-1);
    const by = decisive && (decisive.verdict === 'rejected' || decisive.verdict === 'unavailable') ? ` by ${decisive.strategy}` : '';
    const earlier = describeReports(reports, false);
    const finding = `${e.temporary ? 'could not be checked' : 'rejected'}${by} (${code}): ${e.message ?? String(err)}${earlier ? ` [${earlier}]` : ''}`;
    const hint = e.temporary
      ? isInvalidClient(err)
        ? invalidClientHint(config)
        : providerHint(cause(err), oauth.requestTimeoutSeconds)
      : (TOKEN_HINTS[code]?.(config) ?? 'see the reason');
    return { check: { status: 'FAIL', name: 'token', finding, hint } };
  }
}

// ---------------------------------------------------------------------------------------------
// (3) backends

/**
 * A connector for the doctor's own connections, and the origin to announce on them: the doctor
 * itself (filled in once connected). A PROXY protocol backend gets a LOCAL header, as for
 * sasl-gate's own probes.
 */
function ownConnection(backend: ImapBackendConfig | SmtpBackendConfig): {
  connect: BackendConnector;
  origin: { address: string; port: number; localAddress: string; localPort: number };
} {
  const base = tcpConnector(backend.host, backend.port, backend.connectTimeoutSeconds * 1000, backend.proxyProtocol);
  const origin = { address: '127.0.0.1', port: 0, localAddress: backend.host, localPort: backend.port };
  const connect: BackendConnector = async () => {
    const socket = await base();
    origin.address = socket.localAddress ?? origin.address;
    origin.port = socket.localPort ?? 0;
    origin.localAddress = socket.remoteAddress ?? backend.host;
    origin.localPort = socket.remotePort ?? backend.port;
    return socket;
  };
  return { connect, origin };
}

/** Deadline for a whole conversation: the connect, then a few replies. */
function conversationMs(backend: ImapBackendConfig | SmtpBackendConfig, replies: number): number {
  return (backend.connectTimeoutSeconds + replies * backend.responseTimeoutSeconds) * 1000 + 1000;
}

function backendHint(c: Cause, what: 'Dovecot' | 'Postfix', backend: ImapBackendConfig | SmtpBackendConfig, key: string): string {
  const has = (...codes: string[]) => codes.some((code) => c.codes.has(code));
  if (has('ECONNREFUSED')) return `nothing listens on ${backend.host}:${backend.port}: is ${what} running, and is ${key}.host / .port right?`;
  if (has('ENOTFOUND', 'EAI_AGAIN')) return `${backend.host} does not resolve here (${key}.host)`;
  if (/timed out/.test(c.text)) return `no connection within ${key}.connectTimeoutSeconds (${backend.connectTimeoutSeconds} s): a firewall, or the wrong host?`;
  if (/did not answer in time/.test(c.text)) {
    return backend.proxyProtocol
      ? `${what} did not answer within ${key}.responseTimeoutSeconds: does that port really expect the PROXY protocol (${key}.proxyProtocol)?`
      : `${what} did not answer within ${key}.responseTimeoutSeconds: does that port expect the PROXY protocol, or TLS? sasl-gate speaks plain TCP to it`;
  }
  if (/greeting|closed the connection/.test(c.text)) {
    const port = what === 'Postfix' ? 'submission' : key === 'backends.pop3' ? 'POP3' : key === 'backends.sieve' ? 'ManageSieve' : 'IMAP';
    return `is ${backend.host}:${backend.port} ${what}'s plain-text ${port} port (not an implicit-TLS one)?${backend.proxyProtocol ? ` Does it expect the PROXY protocol (${key}.proxyProtocol: true)?` : ''}`;
  }
  return `is ${what} reachable from here on ${backend.host}:${backend.port}?`;
}

/**
 * Whether a Dovecot listener offers PLAIN to sasl-gate on its unencrypted connection (the master
 * login needs it); `missing` names what it lacks, in the protocol's words.
 */
function plainOffered(name: string, where: string, list: string, missing: string | undefined): DoctorCheck {
  if (missing === undefined) return { status: 'PASS', name, finding: `${where} answers; ${list}` };
  return {
    status: 'FAIL',
    name,
    finding: `${where} answers, but offers no ${missing} on this unencrypted connection; ${list}`,
    hint: "add sasl-gate's address to Dovecot's login_trusted_networks (it then counts as secure), or allow plaintext authentication on this listener",
  };
}

async function checkImap(config: GateConfig, backend: ImapBackendConfig, user: string | undefined, userHint: UserHint): Promise<DoctorCheck[]> {
  const where = `${backend.host}:${backend.port}`;
  const probe = ownConnection(backend);
  let capabilities: string[];
  try {
    capabilities = await within(
      conversationMs(backend, 2),
      `IMAP ${where}`,
      probeImapCapabilities(probe.connect, backend.responseTimeoutSeconds * 1000),
    );
  } catch (err) {
    const c = cause(err);
    return [
      { status: 'FAIL', name: 'imap backend', finding: `${where}: ${c.text}`, hint: backendHint(c, 'Dovecot', backend, 'backends.imap') },
      { status: 'WARN', name: 'imap master', finding: 'not tried: the backend does not answer' },
    ];
  }
  const upper = new Set(capabilities.map((c) => c.toUpperCase()));
  const checks: DoctorCheck[] = [];
  const list = `capabilities ${capabilities.join(' ')}`;
  checks.push(plainOffered('imap backend', where, list, upper.has('AUTH=PLAIN') && !upper.has('LOGINDISABLED') ? undefined : 'AUTH=PLAIN'));

  if (user === undefined) {
    checks.push({
      status: 'WARN',
      name: 'imap master',
      finding: `not tried: ${userHint.why}, so there is no user to log in as (a master login needs one: Dovecot refuses the master user logging in as itself)`,
      hint: userHint.then(`a master login as ${config.master.user}`),
    });
    return checks;
  }

  const connection = ownConnection(backend);
  const origin: ClientOrigin = {
    ...connection.origin,
    sessionId: `doctor-${randomBytes(6).toString('hex')}`,
    clientId: [['name', 'sasl-gate doctor']],
    // The doctor's own plain connection; a PROXY protocol backend gets a LOCAL header anyway.
    tls: false,
  };
  const connect: BackendConnector = async () => {
    const socket = await connection.connect();
    Object.assign(origin, connection.origin);
    return socket;
  };
  const refusedHint =
    `check master.user / master.password and Dovecot's master passdb (master = yes, auth_master_user_separator); ` +
    `${user} must exist in Dovecot's userdb; login_trusted_networks must contain this host`;
  try {
    const result = await within(
      conversationMs(backend, 4),
      `IMAP login at ${where}`,
      loginToBackend({
        connect,
        responseTimeoutMs: backend.responseTimeoutSeconds * 1000,
        origin,
        credentials: masterCredentials(user, config.master),
      }),
    );
    if (!result.ok) {
      checks.push({
        status: 'FAIL',
        name: 'imap master',
        finding: `login as ${user} (master user ${config.master.user}) refused: ${result.status} ${result.text}`.trimEnd(),
        hint: refusedHint,
      });
    } else {
      closeQuietly(result.socket, 'sgz LOGOUT\r\n');
      checks.push({ status: 'PASS', name: 'imap master', finding: `login as ${user} (master user ${config.master.user}) accepted` });
    }
  } catch (err) {
    const c = cause(err);
    checks.push({
      status: 'FAIL',
      name: 'imap master',
      finding: `login as ${user} failed: ${c.text}`,
      hint: backendHint(c, 'Dovecot', backend, 'backends.imap'),
    });
  }
  return checks;
}

/** Whether an EHLO extension list offers `keyword`, and its parameters. */
function extension(extensions: string[], keyword: string): string[] | undefined {
  for (const line of extensions) {
    const [word, ...params] = line.toUpperCase().split(/[\s=]+/);
    if (word === keyword) return params.filter((p) => p.length > 0);
  }
  return undefined;
}

/**
 * The warning for a Postfix that lets sasl-gate send XCLIENT although the master login needs no such
 * right: while sasl-gate holds it, any command of a client that reached Postfix unparsed could make
 * that client another user.
 */
function xclientTrustWarning(where: string, xclient: string[]): DoctorCheck {
  return {
    status: 'WARN',
    name: 'smtp xclient',
    finding: `${where} offers XCLIENT (${xclient.join(' ')}) to this host, which login: master does not need`,
    hint:
      "take sasl-gate's address out of smtpd_authorized_xclient_hosts for that port, and pass the client's address with " +
      'backends.smtp.proxyProtocol: true and smtpd_upstream_proxy_protocol = haproxy instead',
  };
}

async function checkSmtp(config: GateConfig, backend: SmtpBackendConfig, user: string | undefined, userHint: UserHint): Promise<DoctorCheck[]> {
  const where = `${backend.host}:${backend.port}`;
  const probe = ownConnection(backend);
  const loginName = backend.login === 'xclient' ? 'smtp xclient' : 'smtp master';
  let extensions: string[];
  try {
    extensions = await within(
      conversationMs(backend, 2),
      `SMTP ${where}`,
      probeSmtpExtensions(probe.connect, backend.responseTimeoutSeconds * 1000, config.hostname),
    );
  } catch (err) {
    const c = cause(err);
    return [
      { status: 'FAIL', name: 'smtp backend', finding: `${where}: ${c.text}`, hint: backendHint(c, 'Postfix', backend, 'backends.smtp') },
      { status: 'WARN', name: loginName, finding: 'not tried: the backend does not answer' },
    ];
  }
  const keywords = extensions.map((e) => e.split(/\s+/)[0] ?? e).join(' ');
  const xclient = extension(extensions, 'XCLIENT');
  const auth = extension(extensions, 'AUTH');
  const checks: DoctorCheck[] = [];

  if (backend.login === 'xclient') {
    const lacking = ['LOGIN', 'ADDR'].filter((a) => !xclient?.includes(a));
    if (xclient === undefined) {
      checks.push({
        status: 'FAIL',
        name: 'smtp backend',
        finding: `${where} answers (${keywords}), but XCLIENT not offered to this host`,
        hint: "add sasl-gate's address to smtpd_authorized_xclient_hosts (only sasl-gate's: any host listed there can claim to be any user)",
      });
    } else if (lacking.length > 0) {
      checks.push({
        status: 'FAIL',
        name: 'smtp backend',
        finding: `${where} answers; XCLIENT offered without ${lacking.join(', ')} (${xclient.join(' ')})`,
        hint: 'XCLIENT LOGIN needs Postfix 2.9 or newer; or use backends.smtp.login: master',
      });
    } else {
      checks.push({ status: 'PASS', name: 'smtp backend', finding: `${where} answers (${keywords}); XCLIENT offered (LOGIN, ADDR)` });
    }
  } else {
    const xclientNote = xclient?.includes('ADDR')
      ? 'XCLIENT ADDR offered'
      : backend.proxyProtocol
        ? 'no XCLIENT (the PROXY header names the client)'
        : 'no XCLIENT (Postfix sees sasl-gate as the client)';
    if (!auth?.includes('PLAIN')) {
      checks.push({
        status: 'FAIL',
        name: 'smtp backend',
        finding: `${where} answers (${keywords}), but offers no AUTH PLAIN`,
        hint: 'backends.smtp.login: master needs smtpd_sasl_auth_enable = yes with Dovecot SASL (smtpd_sasl_type = dovecot) on that port',
      });
    } else {
      checks.push({ status: 'PASS', name: 'smtp backend', finding: `${where} answers (${keywords}); AUTH PLAIN offered; ${xclientNote}` });
    }
    if (xclient !== undefined) checks.push(xclientTrustWarning(where, xclient));
  }
  if (checks.some((c) => c.status === 'FAIL')) return checks;

  if (user === undefined) {
    if (backend.login === 'master') {
      checks.push({
        status: 'WARN',
        name: loginName,
        finding: `not tried: ${userHint.why}, so there is no user to submit for`,
        hint: userHint.then(`AUTH PLAIN as ${config.master.user}`),
      });
    }
    return checks;
  }

  const connection = ownConnection(backend);
  const origin: SmtpClientOrigin = {
    address: connection.origin.address,
    port: connection.origin.port,
    helo: config.hostname,
    local: { address: backend.host, port: backend.port },
    tls: false,
  };
  const connect: BackendConnector = async () => {
    const socket = await connection.connect();
    origin.address = connection.origin.address;
    origin.port = connection.origin.port;
    origin.local = { address: connection.origin.localAddress, port: connection.origin.localPort };
    return socket;
  };
  const what = backend.login === 'xclient' ? `XCLIENT LOGIN=${user}` : `AUTH PLAIN as ${user} (master user ${config.master.user})`;
  try {
    const result = await within(
      conversationMs(backend, 6),
      `SMTP login at ${where}`,
      loginToSmtpBackend({
        connect,
        responseTimeoutMs: backend.responseTimeoutSeconds * 1000,
        origin,
        localName: config.hostname,
        credentials:
          backend.login === 'xclient'
            ? { kind: 'xclient', user }
            : masterCredentials(user, config.master),
      }),
    );
    if (result.ok) {
      closeQuietly(result.socket, 'QUIT\r\n');
      checks.push({ status: 'PASS', name: loginName, finding: `${what} accepted` });
    } else {
      checks.push({
        status: 'FAIL',
        name: loginName,
        finding: `${what} refused: ${result.reply.code} ${result.reply.lines.join(' ')}`.trimEnd(),
        hint:
          "check master.user / master.password, and that Postfix's SASL on that port is Dovecot's (smtpd_sasl_type = dovecot) with the master passdb; " +
          `${user} must exist in Dovecot`,
      });
    }
  } catch (err) {
    const c = cause(err);
    const hint = /XCLIENT/.test(c.text)
      ? "add sasl-gate's address to smtpd_authorized_xclient_hosts"
      : backendHint(c, 'Postfix', backend, 'backends.smtp');
    checks.push({ status: 'FAIL', name: loginName, finding: `${what} failed: ${c.text}`, hint });
  }
  return checks;
}

/** What differs between Dovecot's POP3 and ManageSieve for the checks they share. */
interface DovecotLoginDialect<B extends Pop3BackendConfig | SieveBackendConfig> {
  /** Check names start with it, and the hints name `backends.<key>`. */
  key: 'pop3' | 'sieve';
  /** The protocol as an admin calls it. */
  label: string;
  /** Replies the capability probe waits for. */
  probeReplies: number;
  probe(connect: BackendConnector, timeoutMs: number): Promise<string[]>;
  /** The capabilities as printed, and the missing PLAIN as the protocol spells it (unset: PLAIN is offered). */
  describe(capabilities: string[]): { list: string; missingPlain: string | undefined };
  /** The master login for `user`; `xclient` tells whether the client's address went with it. */
  login(
    options: { connect: BackendConnector; origin: Pop3ClientOrigin & SieveClientOrigin; credentials: MasterCredentials; backend: B },
    capabilities: string[],
  ): Promise<{ ok: true; socket: Socket; xclient: boolean } | { ok: false; refusal: string }>;
  farewell: string;
}

type MasterCredentials = ReturnType<typeof masterCredentials>;

const POP3_CHECKS: DovecotLoginDialect<Pop3BackendConfig> = {
  key: 'pop3',
  label: 'POP3',
  probeReplies: 2,
  probe: probePop3Capabilities,
  describe: (capabilities) => ({
    list: `capabilities ${capabilities.join(', ')}`,
    missingPlain: saslMechanisms(capabilities).includes('PLAIN') ? undefined : 'SASL PLAIN',
  }),
  login: async ({ connect, origin, credentials, backend }) => {
    const result = await loginToPop3Backend({
      connect,
      responseTimeoutMs: backend.responseTimeoutSeconds * 1000,
      origin,
      credentials,
      xclient: !backend.proxyProtocol,
    });
    return result.ok ? { ok: true, socket: result.socket, xclient: result.xclientSent } : { ok: false, refusal: `-ERR ${result.text}`.trimEnd() };
  },
  farewell: 'QUIT\r\n',
};

const SIEVE_CHECKS: DovecotLoginDialect<SieveBackendConfig> = {
  key: 'sieve',
  label: 'ManageSieve',
  probeReplies: 1,
  probe: probeSieveCapabilities,
  describe: (capabilities) => ({
    list: `capabilities ${capabilities.join(' ')}`,
    missingPlain: mechanismsOf(capabilities).includes('PLAIN') ? undefined : '"SASL" "PLAIN"',
  }),
  login: async ({ connect, origin, credentials, backend }, capabilities) => {
    const result = await loginToSieveBackend({ connect, responseTimeoutMs: backend.responseTimeoutSeconds * 1000, origin, credentials });
    // Dovecot's managesieve-login offers XCLIENT only to login_trusted_networks; the login sends it when offered.
    const xclient = !backend.proxyProtocol && capabilities.some((line) => splitCapability(line).name === 'XCLIENT');
    return result.ok ? { ok: true, socket: result.socket, xclient } : { ok: false, refusal: result.line };
  },
  farewell: 'LOGOUT\r\n',
};

/** Dovecot's POP3 or ManageSieve: it answers, offers PLAIN to sasl-gate, and takes the master login with the client's address. */
async function checkDovecotLogin<B extends Pop3BackendConfig | SieveBackendConfig>(
  dialect: DovecotLoginDialect<B>,
  config: GateConfig,
  backend: B,
  user: string | undefined,
  userHint: UserHint,
): Promise<DoctorCheck[]> {
  const where = `${backend.host}:${backend.port}`;
  const backendName = `${dialect.key} backend`;
  const masterName = `${dialect.key} master`;
  const section = `backends.${dialect.key}`;
  const probe = ownConnection(backend);
  let capabilities: string[];
  try {
    capabilities = await within(
      conversationMs(backend, dialect.probeReplies),
      `${dialect.label} ${where}`,
      dialect.probe(probe.connect, backend.responseTimeoutSeconds * 1000),
    );
  } catch (err) {
    const c = cause(err);
    return [
      { status: 'FAIL', name: backendName, finding: `${where}: ${c.text}`, hint: backendHint(c, 'Dovecot', backend, section) },
      { status: 'WARN', name: masterName, finding: 'not tried: the backend does not answer' },
    ];
  }
  const { list, missingPlain } = dialect.describe(capabilities);
  const checks: DoctorCheck[] = [plainOffered(backendName, where, list, missingPlain)];
  if (user === undefined) {
    checks.push({
      status: 'WARN',
      name: masterName,
      finding: `not tried: ${userHint.why}, so there is no user to log in as`,
      hint: userHint.then(`a master login as ${config.master.user}`),
    });
    return checks;
  }
  const connection = ownConnection(backend);
  const origin = { ...connection.origin, sessionId: 'doctor', tls: false };
  const connect: BackendConnector = async () => {
    const socket = await connection.connect();
    Object.assign(origin, connection.origin);
    return socket;
  };
  const credentials: MasterCredentials = masterCredentials(user, config.master);
  try {
    const result = await within(
      conversationMs(backend, 3),
      `${dialect.label} login at ${where}`,
      dialect.login({ connect, origin, credentials, backend }, capabilities),
    );
    if (!result.ok) {
      checks.push({
        status: 'FAIL',
        name: masterName,
        finding: `login as ${user} (master user ${config.master.user}) refused: ${result.refusal}`,
        hint:
          `check master.user / master.password and Dovecot's master passdb (master = yes); ` +
          `${user} must exist in Dovecot's userdb; login_trusted_networks must contain this host`,
      });
    } else {
      closeQuietly(result.socket, dialect.farewell);
      const accepted = `login as ${user} (master user ${config.master.user}) accepted`;
      checks.push(
        result.xclient || backend.proxyProtocol
          ? { status: 'PASS', name: masterName, finding: `${accepted}${result.xclient ? ', after XCLIENT with the client address' : ''}` }
          : {
              status: 'WARN',
              name: masterName,
              finding: `${accepted}, but Dovecot did not offer XCLIENT, so ${dialect.label} clients are logged and rate-limited under sasl-gate's address`,
              hint: `add sasl-gate's address to Dovecot's login_trusted_networks, or send a PROXY v2 header (${section}.proxyProtocol: true with haproxy = yes on Dovecot's ${dialect.label} listener)`,
            },
      );
    }
  } catch (err) {
    const c = cause(err);
    checks.push({ status: 'FAIL', name: masterName, finding: `login as ${user} failed: ${c.text}`, hint: backendHint(c, 'Dovecot', backend, section) });
  }
  return checks;
}

/** Ends a logged-in backend connection politely, then for sure. */
function closeQuietly(socket: Socket, farewell: string): void {
  socket.on('error', () => undefined);
  socket.resume();
  socket.end(farewell);
  setTimeout(() => socket.destroy(), 1000).unref();
}

// ---------------------------------------------------------------------------------------------
// (4) certificate

function commonName(distinguished: string): string {
  const lines = distinguished.split('\n');
  return lines.find((l) => l.startsWith('CN=')) ?? lines.join(', ');
}

function sanNames(cert: X509Certificate): string[] {
  return (cert.subjectAltName ?? '')
    .split(/,\s*/)
    .map((entry) => entry.replace(/^(DNS|IP Address):/, ''))
    .filter((n) => n.length > 0);
}

async function checkCertificate(config: GateConfig, now: Date): Promise<DoctorCheck> {
  const configured = config.tls.cert !== undefined && config.tls.key !== undefined;
  const dir = config.tls.devCertDir;
  const certPath = config.tls.cert ?? join(dir, 'server.crt');
  const keyPath = config.tls.key ?? join(dir, 'server.key');
  const production = 'set tls.cert and tls.key to a certificate your mail clients trust';

  let certPem: string;
  let keyPem: string;
  try {
    [certPem, keyPem] = await Promise.all([readFile(certPath, 'utf8'), readFile(keyPath, 'utf8')]);
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    if (!configured && e.code === 'ENOENT') {
      return {
        status: 'WARN',
        name: 'certificate',
        finding: `tls.cert and tls.key are not set: serve will create a development certificate in ${dir} that clients do not trust`,
        hint: production,
      };
    }
    return {
      status: 'FAIL',
      name: 'certificate',
      finding: `cannot read ${e.path ?? certPath}: ${e.code ?? e.message}`,
      hint: 'sasl-gate must be able to read tls.cert and tls.key (owner, mode, the mount in a container)',
    };
  }

  let cert: X509Certificate;
  try {
    cert = new X509Certificate(certPem);
  } catch (err) {
    return {
      status: 'FAIL',
      name: 'certificate',
      finding: `${certPath} is not a PEM certificate: ${(err as Error).message}`,
      hint: 'tls.cert must be the PEM certificate (the full chain, leaf first)',
    };
  }
  const subject = commonName(cert.subject);
  const names = sanNames(cert);
  const notBefore = new Date(Date.parse(cert.validFrom));
  const notAfter = new Date(Date.parse(cert.validTo));
  const day = (d: Date) => d.toISOString().slice(0, 10);
  const daysLeft = Math.floor((notAfter.getTime() - now.getTime()) / DAY_MS);
  const ours = cert.issuer.split('\n').includes(`CN=${DEV_CA_COMMON_NAME}`);
  const kind = configured ? '' : `development certificate ${certPath} (clients do not trust it): `;
  const described = `${kind}${subject}${names.length > 0 ? `, SAN ${names.join(' ')}` : ''}`;

  let keyMatches: boolean;
  try {
    keyMatches = cert.checkPrivateKey(createPrivateKey(keyPem));
  } catch (err) {
    return {
      status: 'FAIL',
      name: 'certificate',
      finding: `${described}; ${keyPath} is not a usable private key: ${(err as Error).message}`,
      hint: 'tls.key must be the PEM private key of tls.cert',
    };
  }
  if (!keyMatches) {
    return {
      status: 'FAIL',
      name: 'certificate',
      finding: `${described}; ${keyPath} is not the key of this certificate`,
      hint: configured ? 'tls.cert and tls.key must belong together (a renewal that replaced only one of them?)' : `remove ${certPath} and ${keyPath}; serve then makes a new pair`,
    };
  }

  if (!configured) {
    const renews = ours && (daysLeft < DEV_RENEW_DAYS || now < notBefore);
    if (!ours && (daysLeft < DEV_RENEW_DAYS || now < notBefore)) {
      return {
        status: 'FAIL',
        name: 'certificate',
        finding: `${described}, valid ${day(notBefore)} to ${day(notAfter)}: serve refuses it (not ours to renew)`,
        hint: `renew it, or remove ${certPath} and ${keyPath} to get a development certificate; for production, ${production}`,
      };
    }
    return {
      status: 'WARN',
      name: 'certificate',
      finding: `${described}, valid until ${day(notAfter)} (${days(daysLeft)})${renews ? '; serve renews it at start' : ''}, key matches`,
      hint: production,
    };
  }

  if (now < notBefore) {
    return {
      status: 'FAIL',
      name: 'certificate',
      finding: `${described}, not valid before ${notBefore.toISOString()}`,
      hint: "this host's clock, or a certificate issued with a wrong date?",
    };
  }
  if (daysLeft < 0 || now > notAfter) {
    return {
      status: 'FAIL',
      name: 'certificate',
      finding: `${described}, expired on ${day(notAfter)} (${days(Math.floor((now.getTime() - notAfter.getTime()) / DAY_MS))} ago)`,
      hint: 'renew it (certbot, cert-manager, ...); sasl-gate picks up the new files by itself, or on SIGHUP',
    };
  }
  if (daysLeft < CERT_WARN_DAYS) {
    return {
      status: 'WARN',
      name: 'certificate',
      finding: `${described}, valid until ${day(notAfter)} (${days(daysLeft)}), key matches`,
      hint: 'renew it soon: is automatic renewal running? sasl-gate picks up the new files by itself',
    };
  }
  return { status: 'PASS', name: 'certificate', finding: `${described}, valid until ${day(notAfter)} (${days(daysLeft)}), key matches` };
}

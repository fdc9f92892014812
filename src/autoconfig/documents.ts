/**
 * The autoconfiguration documents a mail domain publishes, built from the configuration alone
 * (pure: no sockets). Thunderbird's `config-v1.1.xml` follows the format of Thunderbird's ISPDB
 * and draft-ietf-mailmaint-autoconfig (`clientConfig` / `emailProvider` / `incomingServer` /
 * `outgoingServer`, `<oAuth2>` beside `emailProvider`); the PACC document follows
 * draft-ietf-mailmaint-pacc (`protocols`, `authentication` with `oauth-public`, `info`), whose
 * DNS record carries the SHA-256 of the exact bytes served.
 */
import { createHash } from 'node:crypto';
import type { AutoconfigConfig, ListenerConfig, MailProtocol } from '../config/schema.js';

/** One listener as a mail app sees it. */
export interface PublishedServer {
  protocol: MailProtocol;
  port: number;
  tls: 'implicit' | 'starttls';
}

/** The configured listeners as mail apps see them (their configured ports). */
export function listenerServers(listeners: readonly ListenerConfig[]): PublishedServer[] {
  return listeners.map((l) => ({ protocol: l.protocol, port: l.bind.port, tls: l.tls }));
}

/** The provider's endpoints mail apps sign in at. */
export interface OAuthEndpoints {
  authorizationEndpoint: string;
  tokenEndpoint: string;
}

/** Everything the documents say, resolved from the configuration. */
export interface AutoconfigSettings {
  /** The host name of every listener. */
  hostname: string;
  /** The mail domains; empty means any domain the client asks for. */
  domains: readonly string[];
  displayName: string;
  displayShortName: string;
  /** `oauth.issuer`, exactly as tokens carry it. */
  issuer: string;
  /** The public client of mail apps; undefined: OAuth is not offered. */
  clientId: string | undefined;
  scope: string;
  servers: readonly PublishedServer[];
}

/** Resolves the published settings from the configuration and the listeners. */
export function autoconfigSettings(
  config: { autoconfig: AutoconfigConfig; oauth: { issuer: string }; portal?: { publicUrl: string } | undefined },
  domains: readonly string[],
  servers: readonly PublishedServer[],
): AutoconfigSettings {
  const a = config.autoconfig;
  const portalHost = config.portal ? new URL(config.portal.publicUrl).hostname.replace(/^\[|\]$/g, '') : undefined;
  const hostname = (a.hostname ?? portalHost ?? 'localhost').toLowerCase();
  const displayName = a.displayName ?? domains[0] ?? hostname;
  return {
    hostname,
    domains: domains.map((d) => d.toLowerCase()),
    displayName,
    displayShortName: a.displayShortName ?? displayName.slice(0, 20),
    issuer: config.oauth.issuer,
    clientId: a.clientId,
    scope: a.scope,
    servers,
  };
}

/** The `issuer` Thunderbird keys a provider by: the issuer's host name (as its built-in list does). */
export function thunderbirdIssuer(issuer: string): string {
  return new URL(issuer).hostname;
}

/** Characters XML 1.0 cannot carry at all, not even escaped: controls, U+FFFE/U+FFFF, lone surrogates. */
const NOT_XML = /[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]|[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/g;

/** Escapes text for an XML element or attribute; characters XML cannot carry are left out, so the document stays well-formed. */
export function xmlEscape(value: string): string {
  return value
    .replace(NOT_XML, '')
    .replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&apos;' })[c]!);
}

/** Characters no host name or address part may carry into a document. */
const DOMAIN = /^(?=.{1,253}$)[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*$/;

/**
 * The domain of `?emailaddress=` when sasl-gate serves it: a well-formed address of an accepted
 * domain (any domain when none is configured); undefined otherwise.
 */
export function requestedDomain(address: string, domains: readonly string[]): string | undefined {
  if (address.length > 254 || /[\x00-\x20\x7f]/.test(address)) return undefined;
  const at = address.lastIndexOf('@');
  if (at < 1 || at === address.length - 1) return undefined;
  const domain = address.slice(at + 1).toLowerCase();
  if (!DOMAIN.test(domain)) return undefined;
  if (domains.length > 0 && !domains.includes(domain)) return undefined;
  return domain;
}

/** Thunderbird's names of the TLS modes. */
const SOCKET_TYPE = { implicit: 'SSL', starttls: 'STARTTLS' } as const;

/** Implicit TLS first: the port a client should try first comes first in the document. */
function ordered(servers: readonly PublishedServer[], protocol: MailProtocol): PublishedServer[] {
  return servers.filter((s) => s.protocol === protocol).sort((a, b) => (a.tls === b.tls ? a.port - b.port : a.tls === 'implicit' ? -1 : 1));
}

/**
 * Thunderbird's `config-v1.1.xml` for one domain (or every accepted domain when `domain` is
 * undefined): IMAP, POP3 and SMTP listeners, OAuth2 first when a public client is configured,
 * then `password-cleartext` (app passwords and passwords passed through). Thunderbird's format
 * knows no ManageSieve server, so ManageSieve listeners appear only in the DNS records and PACC's
 * absence of them; Thunderbird ignores the `<clientId>` extension element of `<oAuth2>`.
 */
export function thunderbirdConfigXml(settings: AutoconfigSettings, endpoints: OAuthEndpoints | undefined, domain?: string): string {
  const domains = domain !== undefined ? [domain] : settings.domains.length > 0 ? settings.domains : [settings.hostname];
  const oauth = settings.clientId !== undefined && endpoints !== undefined;
  const methods = oauth ? ['OAuth2', 'password-cleartext'] : ['password-cleartext'];
  const e = xmlEscape;
  const server = (element: 'incomingServer' | 'outgoingServer', type: string, s: PublishedServer): string[] => [
    `    <${element} type="${type}">`,
    `      <hostname>${e(settings.hostname)}</hostname>`,
    `      <port>${s.port}</port>`,
    `      <socketType>${SOCKET_TYPE[s.tls]}</socketType>`,
    ...methods.map((m) => `      <authentication>${m}</authentication>`),
    '      <username>%EMAILADDRESS%</username>',
    `    </${element}>`,
  ];
  const lines = [
    '<?xml version="1.0" encoding="UTF-8"?>',
    '<clientConfig version="1.1">',
    `  <emailProvider id="${e(domains[0]!)}">`,
    ...domains.map((d) => `    <domain>${e(d)}</domain>`),
    `    <displayName>${e(settings.displayName)}</displayName>`,
    `    <displayShortName>${e(settings.displayShortName)}</displayShortName>`,
    ...ordered(settings.servers, 'imap').flatMap((s) => server('incomingServer', 'imap', s)),
    ...ordered(settings.servers, 'pop3').flatMap((s) => server('incomingServer', 'pop3', s)),
    ...ordered(settings.servers, 'smtp').flatMap((s) => server('outgoingServer', 'smtp', s)),
    '  </emailProvider>',
  ];
  if (oauth) {
    lines.push(
      '  <oAuth2>',
      `    <issuer>${e(thunderbirdIssuer(settings.issuer))}</issuer>`,
      `    <scope>${e(settings.scope)}</scope>`,
      `    <authURL>${e(endpoints.authorizationEndpoint)}</authURL>`,
      `    <tokenURL>${e(endpoints.tokenEndpoint)}</tokenURL>`,
      `    <clientId>${e(settings.clientId!)}</clientId>`,
      '  </oAuth2>',
    );
  }
  lines.push('</clientConfig>', '');
  return lines.join('\n');
}

/** PACC's protocol names and the implicit-TLS port each implies (the document carries no ports). */
export const PACC_PROTOCOLS = [
  { protocol: 'imap', name: 'imap', port: 993 },
  { protocol: 'pop3', name: 'pop3', port: 995 },
  { protocol: 'smtp', name: 'submit', port: 465 },
] as const;

/**
 * The PACC document (`/.well-known/user-agent-configuration.json`): every protocol with an
 * implicit-TLS listener, password login (always possible: app passwords or pass-through), and
 * the issuer under `oauth-public` when mail apps have a public client. The bytes are
 * deterministic, so the digest in DNS stays valid until the configuration changes.
 */
export function paccDocument(settings: AutoconfigSettings): string {
  const protocols: Record<string, { host: string }> = {};
  for (const p of PACC_PROTOCOLS) {
    if (settings.servers.some((s) => s.protocol === p.protocol && s.tls === 'implicit')) protocols[p.name] = { host: settings.hostname };
  }
  const authentication: Record<string, unknown> = { password: true };
  if (settings.clientId !== undefined) authentication['oauth-public'] = { issuer: settings.issuer };
  const provider: Record<string, string> = { name: settings.displayName };
  if (settings.displayShortName !== settings.displayName) provider['shortName'] = settings.displayShortName;
  return `${JSON.stringify({ protocols, authentication, info: { provider } })}\n`;
}

/** The `_ua-auto-config` TXT record value for the document's exact bytes. */
export function paccDigestRecord(document: string): string {
  return `v=UAAC1; a=sha256; d=${createHash('sha256').update(document, 'utf8').digest('base64')}`;
}

/** One DNS record to publish. */
export interface DnsRecord {
  name: string;
  type: 'CNAME' | 'A' | 'AAAA' | 'SRV' | 'TXT';
  value: string;
  /** Why, in a few words. */
  note: string;
}

/** RFC 6186 / RFC 8314 service labels by protocol and TLS mode. */
const SRV_LABELS: Record<MailProtocol, Record<PublishedServer['tls'], string>> = {
  imap: { implicit: '_imaps._tcp', starttls: '_imap._tcp' },
  pop3: { implicit: '_pop3s._tcp', starttls: '_pop3._tcp' },
  smtp: { implicit: '_submissions._tcp', starttls: '_submission._tcp' },
  sieve: { implicit: '_sieve._tcp', starttls: '_sieve._tcp' },
};

/**
 * The records a domain publishes so mail apps find sasl-gate: `autoconfig.<domain>` (Thunderbird)
 * and `ua-auto-config.<domain>` (PACC) pointing at the portal's host, RFC 6186 / 8314 SRV records
 * for each listener (implicit TLS preferred), and PACC's digest record.
 */
export function dnsRecords(settings: AutoconfigSettings, portalHost: string, domain: string, pacc: string): DnsRecord[] {
  const target = `${portalHost}.`;
  const ipv4 = /^\d{1,3}(\.\d{1,3}){3}$/.test(portalHost);
  const ipv6 = portalHost.includes(':');
  const pointer = (name: string, note: string): DnsRecord =>
    ipv4 || ipv6 ? { name, type: ipv4 ? 'A' : 'AAAA', value: portalHost, note } : { name, type: 'CNAME', value: target, note };
  const records: DnsRecord[] = [pointer(`autoconfig.${domain}.`, 'Thunderbird fetches https://autoconfig.<domain>/mail/config-v1.1.xml')];
  for (const protocol of ['imap', 'pop3', 'smtp', 'sieve'] as const) {
    for (const s of ordered(settings.servers, protocol)) {
      records.push({
        name: `${SRV_LABELS[protocol][s.tls]}.${domain}.`,
        type: 'SRV',
        value: `${s.tls === 'implicit' ? 0 : 10} 1 ${s.port} ${settings.hostname}.`,
        note: `${protocol === 'sieve' ? 'ManageSieve (RFC 5804)' : protocol === 'smtp' ? 'submission' : protocol.toUpperCase()} ${s.tls === 'implicit' ? 'with implicit TLS (RFC 8314)' : 'with STARTTLS (RFC 6186)'}`,
      });
    }
  }
  records.push(pointer(`ua-auto-config.${domain}.`, 'PACC fetches https://ua-auto-config.<domain>/.well-known/user-agent-configuration.json'));
  records.push({ name: `_ua-auto-config.${domain}.`, type: 'TXT', value: `"${paccDigestRecord(pacc)}"`, note: 'PACC: the SHA-256 of the document served; republish after every change' });
  return records;
}

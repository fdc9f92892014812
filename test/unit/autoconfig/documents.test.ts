/**
 * The published documents, read back the way mail apps read them: the XML with a real XML parser,
 * PACC as JSON, the DNS digest recomputed from the bytes.
 */
import { createHash } from 'node:crypto';
import { XMLParser, XMLValidator } from 'fast-xml-parser';
import { describe, expect, it } from 'vitest';
import {
  autoconfigSettings,
  dnsRecords,
  paccDocument,
  paccDigestRecord,
  requestedDomain,
  thunderbirdConfigXml,
  type AutoconfigSettings,
  type PublishedServer,
} from '../../../src/autoconfig/documents.js';
import { configSchema } from '../../../src/config/schema.js';

const SERVERS: PublishedServer[] = [
  { protocol: 'imap', port: 143, tls: 'starttls' },
  { protocol: 'imap', port: 993, tls: 'implicit' },
  { protocol: 'smtp', port: 587, tls: 'starttls' },
  { protocol: 'smtp', port: 465, tls: 'implicit' },
  { protocol: 'pop3', port: 995, tls: 'implicit' },
  { protocol: 'pop3', port: 110, tls: 'starttls' },
  { protocol: 'sieve', port: 4190, tls: 'starttls' },
];
const ENDPOINTS = { authorizationEndpoint: 'https://id.example.com/realms/mail/auth?x=1&y=2', tokenEndpoint: 'https://id.example.com/realms/mail/token' };

function settings(over: Partial<AutoconfigSettings> = {}): AutoconfigSettings {
  return {
    hostname: 'mail.example.com',
    domains: ['example.com', 'example.org'],
    displayName: 'Example Mail',
    displayShortName: 'Example',
    issuer: 'https://id.example.com/realms/mail',
    clientId: 'thunderbird-public',
    scope: 'openid email offline_access',
    servers: SERVERS,
    ...over,
  };
}

const parser = new XMLParser({ ignoreAttributes: false, attributeNamePrefix: '@', isArray: (name) => ['domain', 'incomingServer', 'outgoingServer', 'authentication'].includes(name) });

interface Server {
  '@type': string;
  hostname: string;
  port: number;
  socketType: string;
  authentication: string[];
  username: string;
}
interface ClientConfig {
  clientConfig: {
    '@version': string;
    emailProvider: { '@id': string; domain: string[]; displayName: string; displayShortName: string; incomingServer: Server[]; outgoingServer: Server[] };
    oAuth2?: { issuer: string; scope: string; authURL: string; tokenURL: string; clientId: string };
  };
}

function parse(xml: string): ClientConfig {
  expect(XMLValidator.validate(xml)).toBe(true);
  return parser.parse(xml) as ClientConfig;
}

describe("Thunderbird's config-v1.1.xml", () => {
  it('lists every listener, implicit TLS first, OAuth2 before password-cleartext, with the oAuth2 block', () => {
    const doc = parse(thunderbirdConfigXml(settings(), ENDPOINTS)).clientConfig;
    expect(doc['@version']).toBe('1.1');
    const provider = doc.emailProvider;
    expect(provider['@id']).toBe('example.com');
    expect(provider.domain).toEqual(['example.com', 'example.org']);
    expect(provider.incomingServer.map((s) => [s['@type'], s.port, s.socketType])).toEqual([
      ['imap', 993, 'SSL'],
      ['imap', 143, 'STARTTLS'],
      ['pop3', 995, 'SSL'],
      ['pop3', 110, 'STARTTLS'],
    ]);
    expect(provider.outgoingServer.map((s) => [s['@type'], s.port, s.socketType])).toEqual([
      ['smtp', 465, 'SSL'],
      ['smtp', 587, 'STARTTLS'],
    ]);
    for (const s of [...provider.incomingServer, ...provider.outgoingServer]) {
      expect(s.hostname).toBe('mail.example.com');
      expect(s.authentication).toEqual(['OAuth2', 'password-cleartext']);
      expect(s.username).toBe('%EMAILADDRESS%');
    }
    // ManageSieve has no place in Thunderbird's format.
    expect(JSON.stringify(doc)).not.toContain('4190');
    expect(doc.oAuth2).toEqual({
      issuer: 'id.example.com',
      scope: 'openid email offline_access',
      authURL: ENDPOINTS.authorizationEndpoint,
      tokenURL: ENDPOINTS.tokenEndpoint,
      clientId: 'thunderbird-public',
    });
  });

  it('offers only passwords, and no oAuth2 block, without a public client', () => {
    const doc = parse(thunderbirdConfigXml(settings({ clientId: undefined }), undefined)).clientConfig;
    expect(doc.oAuth2).toBeUndefined();
    expect(doc.emailProvider.incomingServer[0]!.authentication).toEqual(['password-cleartext']);
  });

  it('names only the domain asked for', () => {
    const doc = parse(thunderbirdConfigXml(settings(), ENDPOINTS, 'example.org')).clientConfig;
    expect(doc.emailProvider.domain).toEqual(['example.org']);
    expect(doc.emailProvider['@id']).toBe('example.org');
  });

  it('escapes what the configuration says, so no value can add elements', () => {
    const hostile = settings({ displayName: 'A & B <script>x</script>"\'', clientId: 'c</clientId><evil/>', scope: 'a&b' });
    const xml = thunderbirdConfigXml(hostile, ENDPOINTS);
    const doc = parse(xml).clientConfig;
    expect(doc.emailProvider.displayName).toBe('A & B <script>x</script>"\'');
    expect(doc.oAuth2!.clientId).toBe('c</clientId><evil/>');
    expect(doc.oAuth2!.scope).toBe('a&b');
    expect(doc.oAuth2!.authURL).toBe(ENDPOINTS.authorizationEndpoint);
    expect(xml).not.toContain('<evil/>');
  });
});

describe('?emailaddress=', () => {
  it('gives the domain of an address of an accepted domain, case-folded', () => {
    expect(requestedDomain('alice@Example.COM', ['example.com'])).toBe('example.com');
    expect(requestedDomain('"odd local"@example.org', ['example.com', 'example.org'])).toBeUndefined();
    expect(requestedDomain('odd.local+tag@example.org', ['example.com', 'example.org'])).toBe('example.org');
  });

  it('refuses other domains and malformed addresses', () => {
    for (const bad of ['alice@evil.test', 'alice', '@example.com', 'alice@', 'a@b@example.com\n', `${'a'.repeat(250)}@example.com`, 'alice@exa mple.com', 'alice@example.com\r\nX: y', 'alice@-bad.com']) {
      expect(requestedDomain(bad, ['example.com']), bad).toBeUndefined();
    }
  });

  it('accepts any well-formed domain when no domain is configured', () => {
    expect(requestedDomain('bob@anything.example', [])).toBe('anything.example');
    expect(requestedDomain('bob@<x>', [])).toBeUndefined();
  });
});

describe('the PACC document', () => {
  it('has the shape of draft-ietf-mailmaint-pacc: implicit-TLS protocols, password and oauth-public, provider info', () => {
    const body = paccDocument(settings());
    const doc = JSON.parse(body) as Record<string, unknown>;
    expect(doc).toEqual({
      protocols: { imap: { host: 'mail.example.com' }, pop3: { host: 'mail.example.com' }, submit: { host: 'mail.example.com' } },
      authentication: { password: true, 'oauth-public': { issuer: 'https://id.example.com/realms/mail' } },
      info: { provider: { name: 'Example Mail', shortName: 'Example' } },
    });
  });

  it('leaves out protocols with only STARTTLS listeners, and oauth-public without a public client', () => {
    const doc = JSON.parse(paccDocument(settings({ clientId: undefined, servers: SERVERS.filter((s) => s.tls === 'starttls') }))) as Record<string, unknown>;
    expect(doc['protocols']).toEqual({});
    expect(doc['authentication']).toEqual({ password: true });
  });

  it('is byte-for-byte the same every time, so its DNS digest holds', () => {
    const body = paccDocument(settings());
    expect(paccDocument(settings())).toBe(body);
    const digest = createHash('sha256').update(Buffer.from(body, 'utf8')).digest('base64');
    expect(paccDigestRecord(body)).toBe(`v=UAAC1; a=sha256; d=${digest}`);
  });
});

describe('DNS records', () => {
  it('point autoconfig and ua-auto-config at the portal and give an SRV record per listener', () => {
    const pacc = paccDocument(settings());
    const records = dnsRecords(settings(), 'portal.example.com', 'example.com', pacc).map((r) => `${r.name} ${r.type} ${r.value}`);
    expect(records).toEqual([
      'autoconfig.example.com. CNAME portal.example.com.',
      '_imaps._tcp.example.com. SRV 0 1 993 mail.example.com.',
      '_imap._tcp.example.com. SRV 10 1 143 mail.example.com.',
      '_pop3s._tcp.example.com. SRV 0 1 995 mail.example.com.',
      '_pop3._tcp.example.com. SRV 10 1 110 mail.example.com.',
      '_submissions._tcp.example.com. SRV 0 1 465 mail.example.com.',
      '_submission._tcp.example.com. SRV 10 1 587 mail.example.com.',
      '_sieve._tcp.example.com. SRV 10 1 4190 mail.example.com.',
      'ua-auto-config.example.com. CNAME portal.example.com.',
      `_ua-auto-config.example.com. TXT "${paccDigestRecord(pacc)}"`,
    ]);
  });

  it('use A records when the portal is reached by address', () => {
    const records = dnsRecords(settings(), '192.0.2.10', 'example.com', '{}');
    expect(records[0]).toMatchObject({ name: 'autoconfig.example.com.', type: 'A', value: '192.0.2.10' });
  });
});

describe('settings from the configuration', () => {
  it('default the host name to the portal, the display name to the first domain', () => {
    const config = configSchema.parse({
      listeners: [{ protocol: 'imap', bind: '0.0.0.0:993' }],
      tls: { development: true },
      backends: { imap: { host: '127.0.0.1', port: 143 } },
      master: { user: 'm', password: 'secret-password' },
      oauth: { issuer: 'https://id.example.com', clientId: 'gate', audience: ['mail'] },
      portal: { bind: '0.0.0.0:443', publicUrl: 'https://Mail.Example.com/portal' },
      autoconfig: { clientId: 'tb' },
    });
    const s = autoconfigSettings(config, ['example.com'], [{ protocol: 'imap', port: 993, tls: 'implicit' }]);
    expect(s).toMatchObject({ hostname: 'mail.example.com', displayName: 'example.com', displayShortName: 'example.com', clientId: 'tb', scope: 'openid email offline_access' });
  });
});

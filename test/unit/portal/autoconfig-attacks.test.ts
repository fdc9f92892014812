/**
 * Autoconfiguration against an attacker, in-process on the routes built from a whole
 * configuration: a reflected `emailaddress` (markup, header splitting, huge, Unicode, `%`
 * tricks), domains sasl-gate does not serve, Host headers and request targets that try to
 * change what a cache keeps, other methods and other paths under the well-known prefix, and the
 * secrets of the configuration, which no document may carry.
 */
import { XMLParser, XMLValidator } from 'fast-xml-parser';
import pino from 'pino';
import { describe, expect, it } from 'vitest';
import { autoconfigSettings, thunderbirdConfigXml, xmlEscape } from '../../../src/autoconfig/documents.js';
import type { GateConfig } from '../../../src/config/load.js';
import { acceptedDomains, configSchema } from '../../../src/config/schema.js';
import { portalAutoconfig } from '../../../src/portal/server.js';

const SECRETS = {
  oauthClientSecret: 'oauth-client-secret-7Hq2',
  portalClientSecret: 'portal-client-secret-K9x1',
  masterPassword: 'master-password-Zp4w',
};

function config(extra: { autoconfig?: Record<string, unknown>; publicUrl?: string; domains?: string[] } = {}): GateConfig {
  return configSchema.parse({
    listeners: [
      { protocol: 'imap', bind: '0.0.0.0:993', tls: 'implicit' },
      { protocol: 'smtp', bind: '0.0.0.0:465', tls: 'implicit' },
    ],
    tls: { development: true },
    backends: { imap: { host: 'x' }, smtp: { host: 'y' } },
    master: { user: 'sasl-gate', password: SECRETS.masterPassword },
    oauth: {
      issuer: 'https://id.example.com',
      audience: ['mail'],
      clientId: 'sasl-gate',
      clientSecret: SECRETS.oauthClientSecret,
      allowedEmailDomains: extra.domains ?? ['example.com'],
    },
    portal: {
      bind: '127.0.0.1:8443',
      publicUrl: extra.publicUrl ?? 'https://mail.example.com/portal',
      clientId: 'portal',
      clientSecret: SECRETS.portalClientSecret,
    },
    autoconfig: { clientId: 'thunderbird', ...extra.autoconfig },
  }) as GateConfig;
}

/** The provider's discovery document, behind an injected fetch. */
const discovery: typeof fetch = async () =>
  new Response(
    JSON.stringify({ issuer: 'https://id.example.com', authorization_endpoint: 'https://id.example.com/auth', token_endpoint: 'https://id.example.com/token' }),
    { headers: { 'content-type': 'application/json' } },
  );

function routes(c = config()) {
  const handle = portalAutoconfig(c, {
    log: pino({ level: 'silent' }),
    servers: [
      { protocol: 'imap', port: 993, tls: 'implicit' },
      { protocol: 'smtp', port: 465, tls: 'implicit' },
    ],
    fetch: discovery,
  });
  return (url: string, method = 'GET', headers: Record<string, string> = {}) => handle({ method, url, headers, body: method === 'POST' ? 'emailaddress=x%40evil.test' : '' });
}

const XML = '/mail/config-v1.1.xml';
const parser = new XMLParser({ ignoreAttributes: false, attributeNamePrefix: '@' });

describe('a reflected emailaddress', () => {
  it.each([
    ['markup in the domain', 'a@example.com"><x/>'],
    ['a closing tag in the domain', 'a@example.com</domain><domain>evil.test'],
    ['CR LF to split headers', 'a@example.com\r\nSet-Cookie: session=evil'],
    ['a NUL', 'a@example.com\0'],
    ['two @, the last one foreign', 'a@example.com@evil.test'],
    ['a subdomain', 'a@evil.example.com'],
    ['a trailing dot', 'a@example.com.'],
    ['Unicode look-alike', 'a@exаmple.com'],
    ['an encoded @ (double encoding)', 'a%40example.com'],
    ['no local part', '@example.com'],
    ['no domain', 'a@'],
    ['a huge value', `${'a'.repeat(100_000)}@example.com`],
    ['a huge domain', `a@${'b'.repeat(70)}.example.com`],
  ])('%s: 404, not cacheable, nothing reflected', async (_what, address) => {
    const response = await routes()(`${XML}?emailaddress=${encodeURIComponent(address)}`);
    expect(response?.status).toBe(404);
    expect(response!.headers['cache-control']).toBe('no-store');
    expect(Object.keys(response!.headers).map((h) => h.toLowerCase())).not.toContain('set-cookie');
    expect(response!.body).not.toMatch(/evil|<x|example/);
    expect(response!.body.length).toBeLessThan(200);
  });

  it('the local part is never reflected: markup there gives the plain document of the domain', async () => {
    const plain = await routes()(`${XML}?emailaddress=alice%40example.com`);
    const hostile = await routes()(`${XML}?emailaddress=${encodeURIComponent('"><script>alert(1)</script>@EXAMPLE.com')}`);
    expect(hostile?.status).toBe(200);
    expect(hostile!.body).toBe(plain!.body);
    expect(hostile!.body).not.toContain('script');
  });

  it('a raw % that is no escape stays in the local part, unreflected; an encoded NUL or CR LF is refused', async () => {
    const r = routes();
    const raw = await r(`${XML}?emailaddress=a%ZZ@example.com`);
    expect(raw?.status).toBe(200);
    expect(raw!.body).not.toContain('%ZZ');
    expect((await r(`${XML}?emailaddress=a%00@example.com`))?.status).toBe(404);
    expect((await r(`${XML}?emailaddress=a@example.com%0d%0aX-Evil:%201`))?.status).toBe(404);
  });

  it('a second emailaddress parameter does not smuggle another domain', async () => {
    const response = await routes()(`${XML}?emailaddress=alice%40example.com&emailaddress=mallory%40evil.test`);
    expect(response!.body).not.toContain('evil');
  });

  it('with no domain configured, any well-formed domain is named, escaped and nothing else', async () => {
    const c = config({ domains: [] });
    expect(acceptedDomains(c)).toEqual([]);
    const r = routes(c);
    const xn = await r(`${XML}?emailaddress=a%40xn--bcher-kva.example`);
    expect(xn?.status).toBe(200);
    const doc = parser.parse(xn!.body) as { clientConfig: { emailProvider: { '@id': string; domain: string } } };
    expect(doc.clientConfig.emailProvider['@id']).toBe('xn--bcher-kva.example');
    expect(doc.clientConfig.emailProvider.domain).toBe('xn--bcher-kva.example');
    expect((await r(`${XML}?emailaddress=${encodeURIComponent('a@bücher.example')}`))?.status).toBe(404);
  });
});

describe('what a cache keeps', () => {
  it('the Host header, X-Forwarded-Host and an absolute request target change nothing in the document', async () => {
    const r = routes();
    const reference = await r(`${XML}?emailaddress=alice%40example.com`);
    for (const [url, headers] of [
      [`${XML}?emailaddress=alice%40example.com`, { host: 'evil.test' }],
      [`${XML}?emailaddress=alice%40example.com`, { 'x-forwarded-host': 'evil.test', forwarded: 'host=evil.test' }],
      [`https://evil.test${XML}?emailaddress=alice%40example.com`, {}],
      [`//evil.test${XML}?emailaddress=alice%40example.com`, {}],
    ] as const) {
      const response = await r(url, 'GET', headers);
      expect(response?.status, url).toBe(200);
      expect(response!.body, url).toBe(reference!.body);
      expect(response!.body).not.toContain('evil');
    }
    const pacc = await r('/.well-known/user-agent-configuration.json', 'GET', { host: 'evil.test' });
    expect(pacc!.body).not.toContain('evil');
  });

  it('paths beside the portal\'s path are not taken for it', async () => {
    const r = routes();
    expect(await r('/portalx/mail/config-v1.1.xml')).toBeUndefined();
    expect(await r('/portal/portal/mail/config-v1.1.xml')).toBeUndefined();
    expect((await r('/portal/mail/config-v1.1.xml'))?.status).toBe(200);
  });
});

describe('methods and paths', () => {
  it.each(['POST', 'PUT', 'DELETE', 'PATCH', 'OPTIONS', 'TRACE', 'PROPFIND'])('%s is 405 with Allow, reflecting nothing', async (method) => {
    for (const path of [XML, '/.well-known/autoconfig/mail/config-v1.1.xml', '/.well-known/user-agent-configuration.json']) {
      const response = await routes()(path, method);
      expect(response?.status).toBe(405);
      expect(response!.headers['allow']).toBe('GET, HEAD');
      expect(response!.body).not.toContain('evil');
    }
  });

  it.each([
    '/.well-known/autoconfig/',
    '/.well-known/autoconfig/mail/',
    '/.well-known/autoconfig/mail/config-v1.1.xml/',
    '/.well-known/autoconfig/mail/config-v1.1.xml.bak',
    '/.well-known/autoconfig/mail/config-v1.0.xml',
    '/.well-known/autoconfig/mail/%2e%2e/%2e%2e/%2e%2e/etc/passwd',
    '/.well-known/AUTOCONFIG/mail/config-v1.1.xml',
    '/.well-known/user-agent-configuration',
    '/.well-known/user-agent-configuration.json/x',
    '/.well-known/openid-configuration',
    '/.well-known/oauth-authorization-server',
    '/.well-known/mta-sts.txt',
    '/mail/config-v1.1.xml;.json',
  ])('%s is not an autoconfiguration document', async (path) => {
    expect(await routes()(path)).toBeUndefined();
  });
});

describe('secrets', () => {
  it('no document carries the client secrets or the master password', async () => {
    const r = routes();
    const bodies = await Promise.all(
      [XML, `${XML}?emailaddress=alice%40example.com`, '/.well-known/autoconfig/mail/config-v1.1.xml', '/.well-known/user-agent-configuration.json'].map(async (url) => (await r(url))!.body),
    );
    for (const body of bodies) {
      for (const value of Object.values(SECRETS)) expect(body).not.toContain(value);
      expect(body).not.toMatch(/secret|master/i);
    }
    // What is published is the public client, not the gate's own or the portal's.
    expect(bodies[0]).toContain('<clientId>thunderbird</clientId>');
    expect(bodies[0]).not.toMatch(/<clientId>(sasl-gate|portal)</);
  });
});

describe('values of the configuration with markup', () => {
  it('a display name with quotes, markup and control characters still gives well-formed XML that says it', () => {
    const c = config({ autoconfig: { displayName: 'Ex"am\'ple <Mail> & ]]> \x01\x0b\ufffe', displayShortName: '"<&>\x08' } });
    const settings = autoconfigSettings(c, acceptedDomains(c), [{ protocol: 'imap', port: 993, tls: 'implicit' }]);
    const xml = thunderbirdConfigXml(settings, { authorizationEndpoint: 'https://id.example.com/auth?a=1&b="2"', tokenEndpoint: 'https://id.example.com/token' });
    expect(XMLValidator.validate(xml)).toBe(true);
    // Characters XML 1.0 cannot carry at all are left out; a parser that checks them (Thunderbird's) would refuse the document.
    expect(xml).not.toMatch(/[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]/);
    const doc = parser.parse(xml) as { clientConfig: { emailProvider: { displayName: string }; oAuth2: { authURL: string } } };
    expect(doc.clientConfig.emailProvider.displayName).toBe('Ex"am\'ple <Mail> & ]]>');
    expect(xml).toContain('<authURL>https://id.example.com/auth?a=1&amp;b=&quot;2&quot;</authURL>');
  });

  it('xmlEscape leaves no character XML 1.0 forbids', () => {
    expect(xmlEscape('a\x00b\x1fc\ud800d\uffff')).toBe('abcd');
    expect(xmlEscape('\t\n\r')).toBe('\t\n\r');
    expect(xmlEscape('😀')).toBe('😀');
  });
});

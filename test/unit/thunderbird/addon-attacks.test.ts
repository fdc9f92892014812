/**
 * The Thunderbird add-on against an attacker: configuration values with quotes that try to add
 * keys or host names to the manifest, the configuration's secrets, what the zip holds and where
 * it would unpack, whether the bytes repeat on any machine, and provider endpoints that are no
 * https:// URLs (which the add-on and config-v1.1.xml would hand to every mail app).
 */
import { createHash } from 'node:crypto';
import { lstatSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { strFromU8, unzipSync } from 'fflate';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { stringify } from 'yaml';
import { autoconfigSettings } from '../../../src/autoconfig/documents.js';
import { endpointsFromDiscovery } from '../../../src/autoconfig/endpoints.js';
import { main } from '../../../src/cli.js';
import { acceptedDomains, configSchema } from '../../../src/config/schema.js';
import { addonManifest, addonXpi } from '../../../src/thunderbird/addon.js';

const SECRETS = ['oauth-client-secret-7Hq2', 'portal-client-secret-K9x1', 'master-password-Zp4w'];
const ENDPOINTS = { authorizationEndpoint: 'https://id.example.com/auth', tokenEndpoint: 'https://id.example.com/token' };
const INJECTION = 'Evil", "hostnames": ["evil.test"], "x": "';

function parse(autoconfig: Record<string, unknown> = {}, domains = ['example.com']) {
  return configSchema.parse({
    listeners: [{ protocol: 'imap', bind: '0.0.0.0:993', tls: 'implicit' }],
    tls: { development: true },
    backends: { imap: { host: 'x' } },
    master: { user: 'sasl-gate', password: SECRETS[2] },
    oauth: { issuer: 'https://id.example.com', audience: ['mail'], clientId: 'sasl-gate', clientSecret: SECRETS[0], allowedEmailDomains: domains },
    portal: { bind: '127.0.0.1:8443', publicUrl: 'https://mail.example.com', clientId: 'portal', clientSecret: SECRETS[1] },
    autoconfig: { clientId: 'thunderbird', ...autoconfig },
  });
}

function build(autoconfig: Record<string, unknown> = {}, domains = ['example.com']) {
  const config = parse(autoconfig, domains);
  const settings = autoconfigSettings(config, acceptedDomains(config), [{ protocol: 'imap', port: 993, tls: 'implicit' }]);
  const manifest = addonManifest(settings, ENDPOINTS, config.autoconfig);
  const xpi = addonXpi(manifest);
  const files = unzipSync(xpi);
  return { manifest, xpi, files, read: (name: string) => strFromU8(files[name]!) };
}

afterEach(() => {
  vi.useRealTimers();
});

describe('configuration values with quotes', () => {
  it('a display name cannot add keys or host names to the manifest', () => {
    const { read } = build({ displayName: INJECTION, displayShortName: '"}]' }, ['example.com']);
    const manifest = JSON.parse(read('manifest.json')) as Record<string, unknown> & { oauth_provider: Record<string, unknown> };
    expect(Object.keys(manifest).sort()).toEqual(['browser_specific_settings', 'description', 'manifest_version', 'name', 'oauth_provider', 'version']);
    expect(manifest.oauth_provider['hostnames']).toEqual(['mail.example.com']);
    expect(String(manifest['name'])).toBe(`${INJECTION} sign-in`.slice(0, 45));
    expect(read('manifest.json')).not.toMatch(/"hostnames": \[\s*"evil\.test"/);
  });

  it('a domain with quotes stays one element of emailDomains', () => {
    const { manifest } = build({ addonMinVersion: '155' }, ['example.com', 'evil.test"]']);
    expect(manifest.oauth_provider.emailDomains?.every((d) => ['example.com', 'evil.test"]'].includes(d))).toBe(true);
    expect(manifest.oauth_provider.hostnames).toEqual(['mail.example.com']);
  });

  it('the host name and the add-on id take no quotes at all', () => {
    expect(() => parse({ hostname: 'mail.example.com", "evil.test' })).toThrow();
    expect(() => parse({ addonId: 'x@example.com" }, "evil@evil.test' })).toThrow();
    expect(() => parse({ addonVersion: '1.0", "x": "' })).toThrow();
  });
});

describe('secrets', () => {
  it('neither the manifest nor the README carries a client secret or the master password', () => {
    const { files, read, manifest } = build({ addonMinVersion: '155' });
    for (const name of Object.keys(files)) {
      for (const value of SECRETS) expect(read(name)).not.toContain(value);
      expect(read(name)).not.toMatch(/client_?secret|master/i);
    }
    expect(manifest.oauth_provider.clientId).toBe('thunderbird');
  });
});

describe('the zip', () => {
  it('holds exactly manifest.json and README.txt, no directory, no path out of the target', () => {
    const { files } = build();
    expect(Object.keys(files).sort()).toEqual(['README.txt', 'manifest.json']);
    for (const name of Object.keys(files)) expect(name).not.toMatch(/^\/|\\|(^|\/)\.\.(\/|$)|:/);
  });

  it('thunderbird-addon --out replaces a symbolic link planted there; the file it named is untouched', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'sasl-gate-addon-attack-'));
    try {
      const config = join(dir, 'config.yaml');
      writeFileSync(
        config,
        stringify({
          listeners: [{ protocol: 'imap', bind: '127.0.0.1:993', tls: 'implicit' }],
          tls: { development: true },
          backends: { imap: { host: '127.0.0.1', port: 143 } },
          master: { user: 'sasl-gate', password: SECRETS[2] },
          oauth: { issuer: 'https://id.example.com', audience: ['mail'], allowedEmailDomains: ['example.com'] },
          autoconfig: { clientId: 'thunderbird', hostname: 'mail.example.com', authorizationEndpoint: ENDPOINTS.authorizationEndpoint, tokenEndpoint: ENDPOINTS.tokenEndpoint },
        }),
      );
      const precious = join(dir, 'precious');
      writeFileSync(precious, 'keep me\n');
      const target = join(dir, 'example.xpi');
      symlinkSync(precious, target);
      expect(await main(['thunderbird-addon', '--config', config, '--out', target])).toBe(0);
      expect(readFileSync(precious, 'utf8')).toBe('keep me\n');
      expect(lstatSync(target).isSymbolicLink()).toBe(false);
      expect(Object.keys(unzipSync(readFileSync(target))).sort()).toEqual(['README.txt', 'manifest.json']);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('repeats byte for byte at another time and in any time zone, dated 2020-01-01 00:00', () => {
    const original = process.env['TZ'];
    const digests = new Set<string>();
    try {
      for (const [zone, now] of [
        ['UTC', '2026-01-01T00:00:00Z'],
        ['Asia/Tokyo', '2031-07-15T12:34:56Z'],
        ['America/Los_Angeles', '2027-03-14T10:00:00Z'],
        ['Pacific/Chatham', '2026-06-30T23:59:59Z'],
      ] as const) {
        process.env['TZ'] = zone;
        vi.useFakeTimers({ now: new Date(now), toFake: ['Date'] });
        const { xpi } = build();
        digests.add(createHash('sha256').update(xpi).digest('hex'));
        // The local file header's DOS time and date (offsets 10 and 12).
        const view = new DataView(xpi.buffer, xpi.byteOffset);
        expect(view.getUint16(10, true), zone).toBe(0);
        expect(view.getUint16(12, true), zone).toBe(((2020 - 1980) << 9) | (1 << 5) | 1);
        vi.useRealTimers();
      }
    } finally {
      if (original === undefined) delete process.env['TZ'];
      else process.env['TZ'] = original;
    }
    expect(digests.size).toBe(1);
  });
});

describe("the provider's endpoints, as published to every mail app", () => {
  const document = (over: Record<string, unknown>) => ({ issuer: 'https://id.example.com', ...ENDPOINTS_DOC, ...over });
  const ENDPOINTS_DOC = { authorization_endpoint: 'https://id.example.com/auth', token_endpoint: 'https://other-host.example.net/token' };

  it.each([
    ['javascript:', 'javascript:alert(document.cookie)'],
    ['data:', 'data:text/html,<script>alert(1)</script>'],
    ['plain http beyond this machine', 'http://id.example.com/auth'],
    ['file:', 'file:///etc/passwd'],
  ])('an authorization endpoint that is %s is refused', (_what, url) => {
    expect(() => endpointsFromDiscovery(document({ authorization_endpoint: url }), 'https://id.example.com')).toThrow(expect.objectContaining({ code: 'provider_unavailable' }));
    expect(() => endpointsFromDiscovery(document({ token_endpoint: url }), 'https://id.example.com')).toThrow(expect.objectContaining({ code: 'provider_unavailable' }));
  });

  it('https on any host, and plain http on the loopback address (a development provider), are published', () => {
    expect(endpointsFromDiscovery(document({}), 'https://id.example.com')).toEqual({ authorizationEndpoint: 'https://id.example.com/auth', tokenEndpoint: 'https://other-host.example.net/token' });
    const local = { issuer: 'http://127.0.0.1:8080', authorization_endpoint: 'http://127.0.0.1:8080/auth', token_endpoint: 'http://[::1]:8080/token' };
    expect(endpointsFromDiscovery(local, 'http://127.0.0.1:8080').tokenEndpoint).toBe('http://[::1]:8080/token');
  });

  it('a document of another issuer is refused (mix-up)', () => {
    expect(() => endpointsFromDiscovery(document({ issuer: 'https://evil.example' }), 'https://id.example.com')).toThrow(expect.objectContaining({ code: 'provider_unavailable' }));
  });
});

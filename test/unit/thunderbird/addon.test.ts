/**
 * The add-on's manifest against the rules of Thunderbird's own `oauth_provider` schema, as read
 * in comm-central: mail/components/extensions/schemas/oauth_provider.json (namespace "manifest",
 * WebExtensionManifest.oauth_provider). Encoded here, not copied: the required keys, their types,
 * "format": "url" on both endpoints, "minItems": 1 on hostnames and emailDomains, and no key the
 * schema does not name.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import type { AutoconfigSettings } from '../../../src/autoconfig/documents.js';
import type { AutoconfigConfig } from '../../../src/config/schema.js';
import { addonManifest, addonXpi, type AddonManifest } from '../../../src/thunderbird/addon.js';

type Rule = { type: 'string' | 'boolean' | 'string[]'; optional?: true; url?: true; minItems?: number; since: number };
/** oauth_provider's properties: optional ones marked as the schema marks them; `since` per Thunderbird's API docs. */
const OAUTH_PROVIDER_SCHEMA: Record<string, Rule> = {
  issuer: { type: 'string', since: 140 },
  clientId: { type: 'string', since: 140 },
  clientSecret: { type: 'string', optional: true, since: 140 },
  issuerIdentifier: { type: 'string', optional: true, since: 153 },
  authorizationEndpoint: { type: 'string', url: true, since: 140 },
  tokenEndpoint: { type: 'string', url: true, since: 140 },
  redirectionEndpoint: { type: 'string', since: 140 },
  usePKCE: { type: 'boolean', optional: true, since: 140 },
  useExternalBrowser: { type: 'boolean', optional: true, since: 153 },
  hostnames: { type: 'string[]', minItems: 1, since: 140 },
  emailDomains: { type: 'string[]', minItems: 1, optional: true, since: 155 },
  scopes: { type: 'string', since: 140 },
};

/** Every way `value` breaks the schema for a Thunderbird of version `thunderbird`. */
function violations(value: Record<string, unknown>, thunderbird: number): string[] {
  const found: string[] = [];
  for (const [key, rule] of Object.entries(OAUTH_PROVIDER_SCHEMA)) {
    const v = value[key];
    if (v === undefined) {
      if (!rule.optional) found.push(`${key} is required`);
      continue;
    }
    if (rule.since > thunderbird) found.push(`${key} is unknown to Thunderbird ${thunderbird}`);
    if (rule.type === 'string[]') {
      if (!Array.isArray(v) || v.some((i) => typeof i !== 'string')) found.push(`${key} must be an array of strings`);
      else if (v.length < (rule.minItems ?? 0)) found.push(`${key} needs ${rule.minItems} item(s)`);
    } else if (typeof v !== rule.type) found.push(`${key} must be a ${rule.type}`);
    if (rule.url && (typeof v !== 'string' || !URL.canParse(v))) found.push(`${key} must be a URL`);
  }
  for (const key of Object.keys(value)) if (!(key in OAUTH_PROVIDER_SCHEMA)) found.push(`${key} is not in the schema`);
  // Thunderbird's rule for the system browser: the redirect must be a loopback address.
  if (value['useExternalBrowser'] === true && !/^http:\/\/(127\.0\.0\.1|localhost)(:\d+)?\/?$/.test(String(value['redirectionEndpoint']))) {
    found.push('useExternalBrowser needs a loopback redirectionEndpoint');
  }
  return found;
}

const SETTINGS: AutoconfigSettings = {
  hostname: 'mail.example.com',
  domains: ['example.com', 'example.org'],
  displayName: 'Example Mail',
  displayShortName: 'Example',
  issuer: 'https://id.example.com/realms/mail',
  clientId: 'thunderbird',
  scope: 'openid email offline_access',
  servers: [{ protocol: 'imap', port: 993, tls: 'implicit' }],
};
const ENDPOINTS = { authorizationEndpoint: 'https://id.example.com/realms/mail/auth', tokenEndpoint: 'https://id.example.com/realms/mail/token' };

function config(min: AutoconfigConfig['addonMinVersion'], over: Partial<AutoconfigConfig> = {}): AutoconfigConfig {
  return { scope: SETTINGS.scope, cacheSeconds: 3600, addonVersion: '2.1', addonMinVersion: min, ...over };
}

describe('the schema rules this test encodes', () => {
  it('catch what Thunderbird would refuse', () => {
    expect(violations({ issuer: 'x', clientId: 'y', authorizationEndpoint: 'not a url', tokenEndpoint: 'https://t', redirectionEndpoint: 'http://localhost', hostnames: [], scopes: 's', extra: 1 }, 140)).toEqual([
      'authorizationEndpoint must be a URL',
      'hostnames needs 1 item(s)',
      'extra is not in the schema',
    ]);
    expect(violations({ issuer: 'x' }, 140)).toContain('clientId is required');
    expect(violations({ ...addonManifest(SETTINGS, ENDPOINTS, config('155')).oauth_provider }, 140)).toContain('emailDomains is unknown to Thunderbird 140');
  });
});

describe('the add-on manifest', () => {
  for (const min of ['140', '153', '155'] as const) {
    it(`fits Thunderbird ${min}'s oauth_provider schema`, () => {
      const manifest = addonManifest(SETTINGS, ENDPOINTS, config(min));
      expect(violations(manifest.oauth_provider as unknown as Record<string, unknown>, Number(min))).toEqual([]);
      expect(manifest.manifest_version).toBe(2);
      expect(manifest.browser_specific_settings.gecko.strict_min_version).toBe(`${min}.0`);
      expect(manifest.oauth_provider).toMatchObject({
        issuer: 'id.example.com',
        clientId: 'thunderbird',
        authorizationEndpoint: ENDPOINTS.authorizationEndpoint,
        tokenEndpoint: ENDPOINTS.tokenEndpoint,
        usePKCE: true,
        hostnames: ['mail.example.com'],
        scopes: 'openid email offline_access',
      });
      expect(manifest.oauth_provider).not.toHaveProperty('clientSecret');
    });
  }

  it('adds issuerIdentifier and the system browser from 153, emailDomains from 155', () => {
    expect(addonManifest(SETTINGS, ENDPOINTS, config('140')).oauth_provider).toEqual(
      expect.not.objectContaining({ issuerIdentifier: expect.anything() as unknown }),
    );
    const at153 = addonManifest(SETTINGS, ENDPOINTS, config('153')).oauth_provider;
    expect(at153).toMatchObject({ issuerIdentifier: 'https://id.example.com/realms/mail', useExternalBrowser: true, redirectionEndpoint: 'http://127.0.0.1' });
    expect(at153.emailDomains).toBeUndefined();
    expect(addonManifest(SETTINGS, ENDPOINTS, config('155')).oauth_provider.emailDomains).toEqual(['example.com', 'example.org']);
  });

  it('has a stable id: the configured one, else derived from the first domain', () => {
    expect(addonManifest(SETTINGS, ENDPOINTS, config('140')).browser_specific_settings.gecko.id).toBe('oauth-provider@example.com');
    expect(addonManifest(SETTINGS, ENDPOINTS, config('140', { addonId: 'mail@corp.example' })).browser_specific_settings.gecko.id).toBe('mail@corp.example');
    expect(addonManifest(SETTINGS, ENDPOINTS, config('140')).version).toBe('2.1');
  });

  it('is refused without a public client', () => {
    expect(() => addonManifest({ ...SETTINGS, clientId: undefined }, ENDPOINTS, config('140'))).toThrow(/autoconfig\.clientId/);
  });
});

describe('the .xpi', () => {
  it("unzips with Debian's unzip into the manifest and a README naming the versions", () => {
    const manifest = addonManifest(SETTINGS, ENDPOINTS, config('155'));
    const dir = mkdtempSync(join(tmpdir(), 'sasl-gate-xpi-'));
    const file = join(dir, 'addon.xpi');
    writeFileSync(file, addonXpi(manifest));
    execFileSync('unzip', ['-tq', file]);
    const listing = execFileSync('unzip', ['-Z1', file], { encoding: 'utf8' }).trim().split('\n').sort();
    expect(listing).toEqual(['README.txt', 'manifest.json']);
    const read = JSON.parse(execFileSync('unzip', ['-p', file, 'manifest.json'], { encoding: 'utf8' })) as AddonManifest;
    expect(read).toEqual(manifest);
    const readme = execFileSync('unzip', ['-p', file, 'README.txt'], { encoding: 'utf8' });
    expect(readme).toMatch(/140 and later\s+issuer, clientId/);
    expect(readme).toMatch(/153 and later\s+issuerIdentifier/);
    expect(readme).toMatch(/155 and later\s+emailDomains/);
    expect(readme).toContain('"installation_mode": "force_installed"');
    // The same configuration gives the same bytes.
    expect(Buffer.from(addonXpi(manifest)).equals(Buffer.from(addonXpi(manifest)))).toBe(true);
  });
});

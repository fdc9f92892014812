/**
 * The Thunderbird add-on an organisation deploys so that Thunderbird knows its OpenID provider:
 * a WebExtension whose `oauth_provider` manifest key (Thunderbird's schema
 * mail/components/extensions/schemas/oauth_provider.json in comm-central) registers the issuer
 * for the mail servers' host names. The add-on has no code; the .xpi is a zip of the manifest
 * and a README.
 */
import { randomBytes } from 'node:crypto';
import { closeSync, openSync, renameSync, rmSync, writeSync } from 'node:fs';
import { strToU8, zipSync } from 'fflate';
import { thunderbirdIssuer, type AutoconfigSettings, type OAuthEndpoints } from '../autoconfig/documents.js';
import type { AutoconfigConfig } from '../config/schema.js';
import { ConfigError } from '../errors.js';

/** What Thunderbird 140 and later read from `oauth_provider`. */
export interface OAuthProviderKey {
  issuer: string;
  clientId: string;
  authorizationEndpoint: string;
  tokenEndpoint: string;
  redirectionEndpoint: string;
  usePKCE: boolean;
  hostnames: string[];
  scopes: string;
  /** Thunderbird 153 and later. */
  issuerIdentifier?: string;
  /** Thunderbird 153 and later. */
  useExternalBrowser?: boolean;
  /** Thunderbird 155 and later. */
  emailDomains?: string[];
}

/** The add-on's manifest.json. */
export interface AddonManifest {
  manifest_version: 2;
  name: string;
  description: string;
  version: string;
  browser_specific_settings: { gecko: { id: string; strict_min_version: string } };
  oauth_provider: OAuthProviderKey;
}

/** Where the provider sends the browser back: Thunderbird's own window catches it (140), or a loopback listener in the system browser (153). */
const EMBEDDED_REDIRECT = 'http://localhost';
const LOOPBACK_REDIRECT = 'http://127.0.0.1';

/** The add-on's manifest for the configuration; throws a `ConfigError` when no public client is set. */
export function addonManifest(settings: AutoconfigSettings, endpoints: OAuthEndpoints, autoconfig: AutoconfigConfig): AddonManifest {
  if (settings.clientId === undefined) {
    throw new ConfigError('autoconfig.clientId', 'the add-on registers a public OAuth client for Thunderbird: set it to a client without a secret, with PKCE');
  }
  const min = Number(autoconfig.addonMinVersion);
  const systemBrowser = min >= 153;
  const provider: OAuthProviderKey = {
    issuer: thunderbirdIssuer(settings.issuer),
    clientId: settings.clientId,
    authorizationEndpoint: endpoints.authorizationEndpoint,
    tokenEndpoint: endpoints.tokenEndpoint,
    redirectionEndpoint: systemBrowser ? LOOPBACK_REDIRECT : EMBEDDED_REDIRECT,
    usePKCE: true,
    hostnames: [settings.hostname],
    scopes: settings.scope,
  };
  if (systemBrowser) {
    provider.issuerIdentifier = settings.issuer;
    provider.useExternalBrowser = true;
  }
  if (min >= 155 && settings.domains.length > 0) provider.emailDomains = [...settings.domains];
  const id = autoconfig.addonId ?? `oauth-provider@${settings.domains[0] ?? settings.hostname}`;
  return {
    manifest_version: 2,
    name: `${settings.displayName} sign-in`.slice(0, 45),
    description: `Signs in to ${settings.displayName} mail (${settings.hostname}) with ${thunderbirdIssuer(settings.issuer)}.`.slice(0, 132),
    version: autoconfig.addonVersion,
    browser_specific_settings: { gecko: { id, strict_min_version: `${min}.0` } },
    oauth_provider: provider,
  };
}

/** The README inside the .xpi: what the add-on does, and which Thunderbird reads which key. */
export function addonReadme(manifest: AddonManifest): string {
  const p = manifest.oauth_provider;
  return `${manifest.name} ${manifest.version}

This Thunderbird add-on contains no code. Its manifest.json registers the OpenID provider
${p.issuerIdentifier ?? p.issuer} for the mail server ${p.hostnames.join(', ')} (the oauth_provider key), so that
Thunderbird signs users in with OAuth2 (client ${p.clientId}, PKCE) instead of asking for a password.

Which Thunderbird reads which key of oauth_provider:
  140 and later  issuer, clientId, authorizationEndpoint, tokenEndpoint, redirectionEndpoint,
                 usePKCE, hostnames, scopes (sign-in in Thunderbird's own window)
  153 and later  issuerIdentifier (RFC 9207: the iss the provider returns must match) and
                 useExternalBrowser (sign-in in the system browser, redirect to a loopback address)
  155 and later  emailDomains (the provider applies to these address domains only)
A Thunderbird older than strict_min_version (${manifest.browser_specific_settings.gecko.strict_min_version}) does not install it.

The provider must allow the redirect URI ${p.redirectionEndpoint}${p.useExternalBrowser ? ' with any port (RFC 8252 loopback redirect)' : ''}
for client ${p.clientId}, which must be a public client (no secret).

Deploy it with Thunderbird's enterprise policies (policies.json, ExtensionSettings):
  "ExtensionSettings": { "${manifest.browser_specific_settings.gecko.id}": {
      "installation_mode": "force_installed", "install_url": "https://.../this.xpi" } }
`;
}

/** The .xpi: a zip of manifest.json and README.txt, with a fixed date so the bytes repeat. */
export function addonXpi(manifest: AddonManifest): Uint8Array {
  // Zip stores local time, and fflate reads the date's local fields: a date built from local
  // fields gives the same bytes in every time zone (an instant would not).
  const mtime = new Date(2020, 0, 1, 0, 0, 0);
  return zipSync(
    {
      'manifest.json': [strToU8(`${JSON.stringify(manifest, null, 2)}\n`), { mtime }],
      'README.txt': [strToU8(addonReadme(manifest)), { mtime }],
    },
    { level: 9 },
  );
}

/**
 * Writes the .xpi to `target` through a new file beside it, renamed over it: a symbolic link
 * planted at `target` (in /tmp, say) is replaced, never followed to overwrite the file it names.
 */
export function writeAddonFile(target: string, xpi: Uint8Array): void {
  const temporary = `${target}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`;
  const fd = openSync(temporary, 'wx', 0o644);
  try {
    writeSync(fd, xpi);
  } finally {
    closeSync(fd);
  }
  try {
    renameSync(temporary, target);
  } catch (err) {
    rmSync(temporary, { force: true });
    throw err;
  }
}

import { existsSync, mkdirSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { envNameToPath } from '../../../src/config/load.js';
import { configKeys, renderConfigReference } from '../../../src/config/reference.js';
import { configSchema } from '../../../src/config/schema.js';

const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
const REFERENCE = join(root, 'docs', 'configuration.md');
const TROUBLESHOOTING = join(root, 'docs', 'troubleshooting.md');
const REGENERATE = 'npm run docs:config';

/*
 * `npm run docs:config` runs this file with UPDATE_CONFIG_REFERENCE=1: the reference is written
 * first, so the comparison below passes and the file is ready to commit.
 */
if (process.env['UPDATE_CONFIG_REFERENCE'] === '1') {
  mkdirSync(dirname(REFERENCE), { recursive: true });
  writeFileSync(REFERENCE, renderConfigReference());
}

describe('docs/configuration.md', () => {
  it('is what the schema renders', () => {
    const expected = renderConfigReference();
    const actual = existsSync(REFERENCE) ? readFileSync(REFERENCE, 'utf8') : '(missing)';
    expect(
      actual,
      `docs/configuration.md differs from the configuration schema (src/config/schema.ts); regenerate it with \`${REGENERATE}\` and commit the result`,
    ).toBe(expected);
  });

  it('renders the same text every time', () => {
    expect(renderConfigReference()).toBe(renderConfigReference());
  });
});

describe('configuration reference', () => {
  const keys = configKeys();
  const leaves = keys.filter((k) => !k.isSection);

  it('covers the whole schema', () => {
    expect(leaves.length).toBeGreaterThan(60);
    for (const key of ['listeners[].bind', 'hostname', 'oauth.cache.maxTtlSeconds', 'oauth.requiredClaim.value', 'log.level']) {
      expect(keys.map((k) => k.key)).toContain(key);
    }
  });

  it('has a description for every leaf key', () => {
    const missing = leaves.filter((k) => !k.description?.trim()).map((k) => k.key);
    expect(missing, `describe these keys in src/config/schema.ts: ${missing.join(', ')}`).toEqual([]);
  });

  it('has a description for every section', () => {
    const missing = keys.filter((k) => k.isSection && !k.description?.trim()).map((k) => k.key);
    expect(missing, `describe these sections in src/config/schema.ts: ${missing.join(', ')}`).toEqual([]);
  });

  it('names, for every leaf key, an environment variable that maps back to it', () => {
    for (const key of leaves) {
      expect(key.env, key.key).toBeDefined();
      expect(envNameToPath(key.env!), key.key).toEqual(key.path);
    }
  });

  it('states the defaults the schema applies', () => {
    // Every optional part present, so that every default has a place to appear.
    const parsed = configSchema.parse({
      listeners: [{ protocol: 'imap', bind: '0.0.0.0:993' }],
      tls: { cert: '/etc/sasl-gate/server.crt', key: '/etc/sasl-gate/server.key' },
      backends: { imap: { host: 'dovecot' }, smtp: { host: 'postfix' }, pop3: { host: 'dovecot' }, sieve: { host: 'dovecot' } },
      master: { user: 'sasl-gate', password: 'x' },
      oauth: { issuer: 'https://idp.example.com', clientId: 'mail', requiredClaim: { name: 'groups', value: 'mail' } },
      directory: {
        source: 'keycloak',
        stateFile: '/var/lib/sasl-gate/directory.json',
        keycloak: { url: 'https://sso.example.com', realm: 'mail', clientId: 'directory', clientSecret: 'x' },
        socketmap: { bind: '127.0.0.1:7777' },
        dovecot: { passwdFile: '/var/lib/sasl-gate/users' },
        scim: { bind: '127.0.0.1:8443', token: 'x'.repeat(32) },
      },
      storage: { dir: '/var/lib/sasl-gate', postgres: { url: 'postgres://sasl_gate:x@db.example.com/sasl_gate' } },
      portal: { bind: '0.0.0.0:443', publicUrl: 'https://mail.example.com' },
    }) as unknown as Record<string, unknown>;
    const at = (path: Array<string | number>) =>
      path.reduce<unknown>((node, part) => (node as Record<string | number, unknown> | undefined)?.[part], parsed);
    let checked = 0;
    for (const key of leaves) {
      if (key.defaultValue === undefined) continue;
      expect(at(key.path), key.key).toEqual(key.defaultValue);
      checked += 1;
    }
    expect(checked).toBeGreaterThan(40);
    // A computed default is named, never evaluated: the reference does not depend on the machine.
    expect(keys.find((k) => k.key === 'hostname')?.default).toBe("the machine's host name");
  });

  it('tells required keys from optional ones', () => {
    const byKey = new Map(keys.map((k) => [k.key, k]));
    expect(byKey.get('oauth.issuer')?.default).toBe('required');
    expect(byKey.get('listeners[].bind')?.default).toBe('required in each entry of `listeners`');
    expect(byKey.get('backends.imap.host')?.default).toBe('required when `backends.imap` is set');
    expect(byKey.get('oauth.clientSecret')?.default).toBe('unset');
    expect(byKey.get('backends.imap.port')?.default).toBe('`143`');
    expect(byKey.get('oauth.usernameClaims')?.default).toBe('`[email]`');
    expect(byKey.get('listeners[].bind')?.env).toBe('SASL_GATE_LISTENERS__0__BIND');
    expect(byKey.get('listeners[].tls')?.accepts).toBe('one of `implicit`, `starttls`');
    expect(byKey.get('backends.imap.port')?.accepts).toBe('1 to 65535');
  });
});

/** The reason codes of AuthFailureCode, read from its declaration. */
function authFailureCodes(): string[] {
  const source = readFileSync(join(root, 'src', 'errors.ts'), 'utf8');
  const declaration = /export type AuthFailureCode =([^;]+);/.exec(source);
  if (!declaration) throw new Error('AuthFailureCode not found in src/errors.ts');
  return [...declaration[1]!.matchAll(/'([a-z_]+)'/g)].map((m) => m[1]!);
}

function sourceText(dir: string): string {
  return readdirSync(dir)
    .map((name) => join(dir, name))
    .map((path) => (statSync(path).isDirectory() ? sourceText(path) : path.endsWith('.ts') ? readFileSync(path, 'utf8') : ''))
    .join('\n');
}

describe('docs/troubleshooting.md', () => {
  const text = readFileSync(TROUBLESHOOTING, 'utf8');
  const headings = [...text.matchAll(/^#{2,4} `([^`]+)`/gm)].map((m) => m[1]!);

  it('has a heading for every reason code of AuthFailureCode', () => {
    const codes = authFailureCodes();
    expect(codes.length).toBeGreaterThanOrEqual(20);
    const missing = codes.filter((c) => !headings.includes(c));
    expect(missing, `add a section to docs/troubleshooting.md for: ${missing.join(', ')}`).toEqual([]);
  });

  it('quotes only reason codes, outcomes and log messages that sasl-gate has', () => {
    const source = sourceText(join(root, 'src'));
    const unknown = headings.filter((h) => !source.includes(h));
    expect(unknown, 'these headings name nothing sasl-gate logs any more').toEqual([]);
  });

  it('names only configuration keys that exist', () => {
    const known = new Set(configKeys().map((k) => k.key.replace(/\[\]/g, '')));
    const named = [...text.matchAll(/`((?:listeners|tls|backends|master|oauth|admin|limits|log)(?:\[\])?\.[A-Za-z.]+)`/g)].map((m) =>
      m[1]!.replace(/\[\]/g, '').replace(/\.$/, ''),
    );
    const unknown = [...new Set(named.filter((k) => !known.has(k)))];
    expect(unknown).toEqual([]);
  });
});

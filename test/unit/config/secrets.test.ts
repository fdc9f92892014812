/**
 * One rule for every secret given as a file: one line end at the very end is dropped, nothing else
 * is trimmed, an empty file is an error, and each reader of a `...File` key follows it.
 */
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { effectiveYaml } from '../../../src/config/effective.js';
import { loadConfig } from '../../../src/config/load.js';
import { InvalidConfigError } from '../../../src/config/problems.js';
import { readSecret, readSecretFile, secretFromFileText } from '../../../src/config/secrets.js';
import { createDirectorySource } from '../../../src/directory/sources/index.js';
import { ConfigError } from '../../../src/errors.js';
import { metricsAuthorizer } from '../../../src/observe/metrics-auth.js';

const dir = mkdtempSync(join(tmpdir(), 'sasl-gate-secrets-'));
function file(text: string): string {
  const path = join(dir, `s${Math.random().toString(36).slice(2)}`);
  writeFileSync(path, text);
  return path;
}

describe('the rule', () => {
  it.each([
    ['no line end', 's3cret', 's3cret'],
    ['one LF', 's3cret\n', 's3cret'],
    ['one CRLF', 's3cret\r\n', 's3cret'],
    ['two LFs: the second is part of the secret', 's3cret\n\n', 's3cret\n'],
    ['trailing spaces are part of the secret', 's3cret  \n', 's3cret  '],
    ['leading spaces are part of the secret', '  s3cret\n', '  s3cret'],
    ['a tab at the end is part of the secret', 's3cret\t', 's3cret\t'],
    ['a lone CR is part of the secret', 's3cret\r', 's3cret\r'],
  ])('%s', (_, text, secret) => {
    expect(secretFromFileText(text)).toBe(secret);
    expect(readSecretFile(file(text), 'x.secretFile')).toBe(secret);
  });

  it('names the file key when the file is missing, empty or too short', () => {
    expect(() => readSecretFile(join(dir, 'missing'), 'master.passwordFile')).toThrow(
      /^master\.passwordFile: cannot read \S+missing: no such file \(ENOENT\)$/,
    );
    for (const empty of ['', '\n', '\r\n']) {
      const path = file(empty);
      expect(() => readSecretFile(path, 'master.passwordFile')).toThrow(`master.passwordFile: ${path} is empty`);
    }
    expect(() => readSecretFile(file('short\n'), 'admin.metricsTokenFile', { minLength: 16, what: 'token' })).toThrow(
      'admin.metricsTokenFile: the token must be at least 16 characters',
    );
    expect(() => readSecretFile(join(dir, 'missing'), 'k')).toThrow(ConfigError);
  });

  it('prefers the value, reads the file otherwise, and has nothing when neither is set', () => {
    const path = file('from-file\n');
    expect(readSecret('inline', path, 'directory.authentik.token')).toBe('inline');
    expect(readSecret(undefined, path, 'directory.authentik.token')).toBe('from-file');
    expect(readSecret(undefined, undefined, 'directory.authentik.token')).toBeUndefined();
    expect(() => readSecret(undefined, join(dir, 'missing'), 'directory.authentik.token')).toThrow(/^directory\.authentik\.tokenFile: /);
  });
});

describe('every reader of a secret file follows it', () => {
  const text = 'a-secret-of-twenty-chars  \n';
  const secret = 'a-secret-of-twenty-chars  ';

  it('master.passwordFile', () => {
    const config = `
listeners: [{ protocol: imap, bind: "127.0.0.1:993" }]
tls: { development: true }
backends: { imap: { host: 127.0.0.1 } }
master: { user: sasl-gate, passwordFile: ${file(text)} }
oauth: { issuer: https://idp.example.com, audience: [mail] }
`;
    expect(loadConfig({ file: file(config), env: {} }).config.master.password).toBe(secret);
  });

  it('oauth.clientSecretFile, which counts as the client secret introspection needs, and check-config names', () => {
    const secretFile = file(text);
    const config = `
listeners: [{ protocol: imap, bind: "127.0.0.1:993" }]
tls: { development: true }
backends: { imap: { host: 127.0.0.1 } }
master: { user: sasl-gate, password: pw }
oauth: { issuer: https://idp.example.com, audience: [mail], clientId: mail, clientSecretFile: ${secretFile}, validation: [introspection] }
`;
    const loaded = loadConfig({ file: file(config), env: {} });
    expect(loaded.config.oauth.clientSecret).toBe(secret);
    const printed = effectiveYaml(loaded.config, loaded.fromEnv);
    expect(printed).not.toContain(secret.trim());
    expect(printed).toContain(`clientSecret: "********" # read from ${secretFile} (oauth.clientSecretFile)`);
    const both = config.replace('clientSecretFile:', 'clientSecret: inline, clientSecretFile:');
    expect(() => loadConfig({ file: file(both), env: {} })).toThrow(/oauth\.clientSecret: set one of oauth\.clientSecret and oauth\.clientSecretFile/);
  });

  it('storage.postgres.urlFile, whose URL holds a password: check-config and problems never show it', () => {
    const url = 'postgres://sasl_gate:pg-pass-7c1e9a@db.example.com:5432/sasl_gate';
    const urlFile = file(`${url}\n`);
    const config = `
listeners: [{ protocol: imap, bind: "127.0.0.1:993" }]
tls: { development: true }
backends: { imap: { host: 127.0.0.1 } }
master: { user: sasl-gate, password: pw }
oauth: { issuer: https://idp.example.com, audience: [mail] }
storage: { postgres: { urlFile: ${urlFile} } }
`;
    const loaded = loadConfig({ file: file(config), env: {} });
    expect(loaded.config.storage.postgres?.url).toBe(url);
    const printed = effectiveYaml(loaded.config, loaded.fromEnv);
    expect(printed).not.toContain('pg-pass-7c1e9a');
    expect(printed).toContain(`url: "********" # read from ${urlFile} (storage.postgres.urlFile)`);
    // Given inline, it is masked too; a file that is no URL is refused without showing it.
    const inline = loadConfig({ file: file(config.replace(`urlFile: ${urlFile}`, `url: "${url}"`)), env: {} });
    expect(effectiveYaml(inline.config)).not.toContain('pg-pass-7c1e9a');
    expect(() => loadConfig({ file: file(config.replace(urlFile, file('mysql://u:pg-pass-7c1e9a@x\n'))), env: {} })).toThrow(/must hold a postgres:\/\/ URL/);
    // App passwords across replicas need one key file, not a key generated per replica.
    expect(() => loadConfig({ file: file(`${config}appPasswords: { enabled: true }\n`), env: {} })).toThrow(/appPasswords\.keyFile: with storage\.postgres every replica needs the same key/);
  });

  it('admin.metricsTokenFile', () => {
    const allowed = metricsAuthorizer({ metricsTokenFile: file(text) });
    expect(allowed(`Bearer ${secret.trim()}`)).toBe(false);
    expect(allowed(undefined)).toBe(false);
  });

  it('the directory sources', async () => {
    let sent: string | undefined;
    const fetch = (async (_: unknown, init?: RequestInit) => {
      sent = new Headers(init?.headers).get('authorization') ?? undefined;
      return new Response(JSON.stringify({ results: [], pagination: { next: 0 } }), { headers: { 'content-type': 'application/json' } });
    }) as typeof globalThis.fetch;
    const source = createDirectorySource(
      {
        source: 'authentik',
        requestTimeoutSeconds: 5,
        pageSize: 10,
        mailboxFrom: 'email',
        select: {},
        authentik: { url: 'https://auth.example.org', tokenFile: file('t0ken\n') },
      },
      { fetch },
    );
    await source?.fetchAll().catch(() => undefined);
    expect(sent).toBe('Bearer t0ken');
  });

  it('check-config reports an empty or short secret file at once, naming its key', () => {
    const config = `
listeners: [{ protocol: imap, bind: "127.0.0.1:993" }]
tls: { development: true }
backends: { imap: { host: 127.0.0.1 } }
master: { user: sasl-gate, passwordFile: ${file('\n')} }
oauth: { issuer: https://idp.example.com, audience: [mail] }
admin: { metricsTokenFile: ${file('short\n')} }
`;
    try {
      loadConfig({ file: file(config), env: {} });
      expect.unreachable();
    } catch (err) {
      expect(err).toBeInstanceOf(InvalidConfigError);
      const problems = new Map((err as InvalidConfigError).problems.map((p) => [p.key, p.message]));
      expect(problems.get('master.passwordFile')).toMatch(/ is empty$/);
      expect(problems.get('admin.metricsTokenFile')).toBe('the token must be at least 16 characters');
    }
  });
});

/**
 * `directory.source` picks one variant of the directory section: its own section is required (and,
 * but for `static`, the state file), and a mistake is named with its key in the admin's words.
 */
import { describe, expect, it } from 'vitest';
import { loadConfig } from '../../../src/config/load.js';
import { InvalidConfigError, type ConfigProblem } from '../../../src/config/problems.js';
import { configKeys } from '../../../src/config/reference.js';
import { configFile, MINIMAL_CONFIG } from './config-files.js';

const TOKEN = '0123456789abcdef0123456789abcdef';
const load = (directory: string, env: NodeJS.ProcessEnv = {}) => loadConfig({ file: configFile(`${MINIMAL_CONFIG}directory: ${directory}\n`), env });

function problems(directory: string, env: NodeJS.ProcessEnv = {}): ConfigProblem[] {
  try {
    load(directory, env);
  } catch (err) {
    expect(err).toBeInstanceOf(InvalidConfigError);
    return [...(err as InvalidConfigError).problems];
  }
  throw new Error('the configuration was accepted');
}

describe('the accepted directories', () => {
  it.each([
    ['static, without a state file', '{ source: static, static: { file: users.yaml } }'],
    ['authentik', '{ source: authentik, stateFile: s.json, authentik: { url: "https://auth.example.org", token: t } }'],
    ['keycloak', '{ source: keycloak, stateFile: s.json, keycloak: { url: "https://sso.example.org", realm: mail, clientId: c, clientSecret: s } }'],
    ['scim', `{ source: scim, stateFile: s.json, scim: { bind: "127.0.0.1:8443", token: "${TOKEN}" } }`],
    ['another source\'s section, ignored', '{ source: static, static: { file: users.yaml }, keycloak: { url: "https://sso.example.org", realm: mail, clientId: c, clientSecret: s } }'],
    ['a SCIM endpoint beside a polled source', `{ source: authentik, stateFile: s.json, authentik: { url: "https://auth.example.org", token: t }, scim: { bind: "127.0.0.1:8443", token: "${TOKEN}" } }`],
  ])('%s', (_, directory) => {
    expect(load(directory).config.directory).toBeDefined();
  });

  it('gives the program the section of its source, typed as present', () => {
    const directory = load('{ source: authentik, stateFile: s.json, authentik: { url: "https://auth.example.org", token: t } }').config.directory!;
    expect(directory.source).toBe('authentik');
    // The variant types the section as set: no `!`, no check at run time.
    if (directory.source === 'authentik') expect(directory.authentik.url).toBe('https://auth.example.org');
    expect(directory).toMatchObject({ graceSeconds: 86_400, select: {}, domains: [] });
  });

  it('takes the source from the environment like any key', () => {
    const directory = load('{ stateFile: s.json, scim: { bind: "127.0.0.1:8443", token: "' + TOKEN + '" } }', { SASL_GATE_DIRECTORY__SOURCE: 'scim' }).config.directory;
    expect(directory?.source).toBe('scim');
  });
});

describe('the messages', () => {
  it('a missing source lists the sources', () => {
    expect(problems('{ static: { file: users.yaml } }')).toEqual([
      { key: 'directory.source', message: 'required, but not set; expected one of static, authentik, keycloak, scim' },
    ]);
  });

  it('a misspelt source gets a "did you mean"', () => {
    expect(problems('{ source: keycloack, stateFile: s.json }')).toEqual([
      { key: 'directory.source', message: 'expected one of static, authentik, keycloak, scim, got "keycloack"', hint: 'did you mean keycloak?' },
    ]);
  });

  it('a source without its section, or without a state file, is told what to set', () => {
    expect(problems('{ source: authentik }')).toEqual([
      { key: 'directory.stateFile', message: 'set directory.stateFile, so a restart while the provider is down still serves the users' },
      { key: 'directory.authentik', message: 'directory.source is authentik: set directory.authentik' },
    ]);
    expect(problems('{ source: static }')).toEqual([{ key: 'directory.static', message: 'directory.source is static: set directory.static' }]);
    expect(problems('{ source: scim, stateFile: s.json }')).toEqual([{ key: 'directory.scim', message: 'directory.source is scim: set directory.scim' }]);
  });

  it('a wrong value inside the section, an empty state file and an unknown key keep their usual words', () => {
    expect(problems('{ source: keycloak, stateFile: s.json, keycloak: { url: "https://sso.example.org", realm: mail, clientId: c, clientSecret: s, clientAuthMethod: basic } }')).toEqual([
      { key: 'directory.keycloak.clientAuthMethod', message: 'expected one of client_secret_basic, client_secret_post, got "basic"' },
    ]);
    expect(problems('{ source: keycloak, stateFile: " ", keycloak: { url: "https://sso.example.org", realm: mail, clientId: c, clientSecret: s } }')).toEqual([
      { key: 'directory.stateFile', message: 'must not be empty' },
    ]);
    expect(problems('{ source: static, static: { file: users.yaml }, graceSecond: 5 }')).toEqual([
      { key: 'directory.graceSecond', message: 'unknown key', hint: 'did you mean directory.graceSeconds?' },
    ]);
  });

  it('the checks across keys still run: one secret of two, and allowFrom beyond loopback', () => {
    expect(problems('{ source: authentik, stateFile: s.json, authentik: { url: "https://auth.example.org" } }')).toEqual([
      { key: 'directory.authentik.token', message: expect.stringMatching(/^set one of directory\.authentik\.token and tokenFile/) },
    ]);
    expect(problems(`{ source: scim, stateFile: s.json, scim: { bind: "0.0.0.0:8443", token: "${TOKEN}" } }`).map((p) => p.key)).toEqual([
      'directory.scim.allowFrom',
    ]);
  });
});

describe('the reference', () => {
  it('lists every key of every source once, and says when a section is required', () => {
    const keys = configKeys().filter((k) => k.section === 'directory');
    const names = keys.map((k) => k.key);
    expect(new Set(names).size).toBe(names.length);
    for (const key of ['directory.source', 'directory.static.file', 'directory.authentik.tokenFile', 'directory.keycloak.realm', 'directory.scim.bind']) {
      expect(names).toContain(key);
    }
    const byKey = new Map(keys.map((k) => [k.key, k]));
    expect(byKey.get('directory.source')).toMatchObject({ accepts: 'one of `static`, `authentik`, `keycloak`, `scim`', default: 'required when `directory` is set' });
    expect(byKey.get('directory.keycloak')?.default).toBe('required when `directory.source` is `keycloak`');
    expect(byKey.get('directory.stateFile')?.default).toBe('required unless `directory.source` is `static`');
    expect(byKey.get('directory.keycloak.realm')?.default).toBe('required when `directory.keycloak` is set');
  });
});

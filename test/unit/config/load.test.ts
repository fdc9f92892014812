import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { envNameToPath, loadConfig, pathToEnvName } from '../../../src/config/load.js';
import { effectiveYaml } from '../../../src/config/effective.js';
import { InvalidConfigError, type ConfigProblem } from '../../../src/config/problems.js';
import { ConfigError } from '../../../src/errors.js';
import { parse as parseYaml } from 'yaml';

const dir = mkdtempSync(join(tmpdir(), 'sasl-gate-config-'));
writeFileSync(join(dir, 'server.crt'), 'certificate');
writeFileSync(join(dir, 'server.key'), 'key');
function file(text: string): string {
  const path = join(dir, `c${Math.random().toString(36).slice(2)}.yaml`);
  writeFileSync(path, text);
  return path;
}

const CONTRACT = `
listeners:
  - { protocol: imap, bind: "0.0.0.0:993", tls: implicit }
tls: { cert: ${join(dir, 'server.crt')}, key: ${join(dir, 'server.key')} }
backends:
  imap: { host: 127.0.0.1, port: 143 }
master: { user: sasl-gate, password: "s3cret" }
oauth:
  issuer: https://idp.example.com/realms/mail
  audience: [mail]
  validation: [jwt]
  clientId: mail
  clientSecret: "x"
  usernameClaims: [email, preferred_username]
admin: { bind: "127.0.0.1:9090" }
`;

function expectConfigError(fn: () => unknown, key: string) {
  try {
    fn();
    expect.unreachable();
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError);
    expect((err as ConfigError).key).toBe(key);
    expect((err as Error).message).toContain(key);
  }
}

describe('loadConfig', () => {
  it('accepts the contract keys of the design and fills defaults', () => {
    const { config } = loadConfig({ file: file(CONTRACT), env: {} });
    expect(config.listeners[0]).toEqual({
      protocol: 'imap',
      bind: { host: '0.0.0.0', port: 993 },
      tls: 'implicit',
      proxyProtocol: false,
      trustedProxies: [],
    });
    expect(config.backends.imap).toMatchObject({ host: '127.0.0.1', port: 143 });
    expect(config.oauth.audience).toEqual(['mail']);
    expect(config.oauth.algorithms).not.toContain('HS256');
    expect(config.admin.bind).toEqual({ host: '127.0.0.1', port: 9090 });
    expect(config.master.password).toBe('s3cret');
    expect(Object.isFrozen(config.oauth)).toBe(true);
  });

  it('lets the environment set and override any key', () => {
    const { config } = loadConfig({
      file: file(CONTRACT),
      env: {
        SASL_GATE_MASTER__PASSWORD: '0123',
        SASL_GATE_OAUTH__USERNAME_CLAIMS: 'preferred_username,email',
        SASL_GATE_LISTENERS__0__BIND: '127.0.0.1:1993',
        SASL_GATE_BACKENDS__IMAP__PORT: '10143',
        SASL_GATE_LIMITS__MAX_LINE_LENGTH: '4096',
        UNRELATED: 'x',
      },
    });
    expect(config.master.password).toBe('0123');
    expect(config.oauth.usernameClaims).toEqual(['preferred_username', 'email']);
    expect(config.listeners[0]?.bind).toEqual({ host: '127.0.0.1', port: 1993 });
    expect(config.backends.imap?.port).toBe(10143);
    expect(config.limits.maxLineLength).toBe(4096);
  });

  it('can be configured from the environment alone', () => {
    const { config } = loadConfig({
      env: {
        SASL_GATE_LISTENERS__0__PROTOCOL: 'imap',
        SASL_GATE_LISTENERS__0__BIND: '0.0.0.0:993',
        SASL_GATE_TLS__DEVELOPMENT: 'yes',
        SASL_GATE_BACKENDS__IMAP__HOST: 'dovecot',
        SASL_GATE_MASTER__USER: 'gate',
        SASL_GATE_MASTER__PASSWORD: 'pw',
        SASL_GATE_OAUTH__ISSUER: 'https://idp.example.com/',
        SASL_GATE_OAUTH__AUDIENCE: '["mail","imap"]',
      },
    });
    expect(config.oauth.issuer).toBe('https://idp.example.com/');
    expect(config.oauth.audience).toEqual(['mail', 'imap']);
    expect(config.listeners[0]?.bind.host).toBe('0.0.0.0');
  });

  it('maps names and paths both ways', () => {
    expect(envNameToPath('SASL_GATE_OAUTH__CLIENT_SECRET')).toEqual(['oauth', 'clientSecret']);
    expect(envNameToPath('SASL_GATE_LISTENERS__1__TLS')).toEqual(['listeners', 1, 'tls']);
    expect(envNameToPath('SASL_GATE_CONFIG')).toBeUndefined();
    expect(pathToEnvName(['oauth', 'usernameClaims'])).toBe('SASL_GATE_OAUTH__USERNAME_CLAIMS');
  });

  it.each([
    ['listeners:\n  - { protocol: imap, bind: "nope", tls: implicit }', 'listeners[0].bind'],
    ['listeners:\n  - { protocol: nntp, bind: ":563" }', 'listeners[0].protocol'],
    ['listeners:\n  - { protocol: imap, bind: ":99999" }', 'listeners[0].bind'],
  ])('names the key of a bad listener (%#)', (listeners, key) => {
    const text = CONTRACT.replace(/listeners:\n {2}- .*\n/, `${listeners}\n`);
    expectConfigError(() => loadConfig({ file: file(text), env: {} }), key);
  });

  it('names the key of other bad values', () => {
    expectConfigError(() => loadConfig({ file: file(CONTRACT.replace('https://idp', 'http://idp')), env: {} }), 'oauth.issuer');
    expectConfigError(() => loadConfig({ file: file(CONTRACT), env: { SASL_GATE_BACKENDS__IMAP__PORT: 'x' } }), 'backends.imap.port');
    expectConfigError(
      () => loadConfig({ file: file(CONTRACT.replace('audience: [mail]', 'audience: []').replace('clientId: mail', '')), env: {} }),
      'oauth.audience',
    );
    expectConfigError(
      () => loadConfig({ file: file(CONTRACT), env: { SASL_GATE_OAUTH__ALGORITHMS: 'HS256,none' } }),
      'oauth.algorithms[1]',
    );
    expectConfigError(() => loadConfig({ file: file(CONTRACT.replace('password: "s3cret"', '')), env: {} }), 'master.password');
    expectConfigError(() => loadConfig({ file: file(CONTRACT.replace('user: sasl-gate', 'user: "a*b"')), env: {} }), 'master.user');
    expectConfigError(() => loadConfig({ file: join(dir, 'missing.yaml'), env: {} }), '--config');
  });

  it('refuses unknown keys, so a typo never silently falls back to a default', () => {
    expectConfigError(() => loadConfig({ file: file(CONTRACT.replace('audience: [mail]', 'audiences: [mail]')), env: {} }), 'oauth.audiences');
    expectConfigError(() => loadConfig({ file: file(CONTRACT), env: { SASL_GATE_OAUTH__ALGORITHM: 'HS256' } }), 'oauth.algorithm');
  });

  it('refuses PROXY protocol towards Postfix together with XCLIENT logins', () => {
    const smtp = CONTRACT.replace('  imap: { host: 127.0.0.1, port: 143 }', '  imap: { host: 127.0.0.1, port: 143 }\n  smtp: { host: 127.0.0.1, port: 587, login: xclient, proxyProtocol: true }');
    expectConfigError(() => loadConfig({ file: file(smtp), env: {} }), 'backends.smtp.proxyProtocol');
    expect(() => loadConfig({ file: file(smtp.replace('login: xclient', 'login: master')), env: {} })).not.toThrow();
  });

  it('names a certificate file it cannot read', () => {
    const tls = `tls: { cert: ${join(dir, 'missing.crt')}, key: ${join(dir, 'missing.key')} }`;
    expectConfigError(() => loadConfig({ file: file(CONTRACT.replace(/^tls: .*/m, tls)), env: {} }), 'tls.cert');
  });

  it('refuses a bind without a host, saying host:port', () => {
    for (const [text, key] of [
      [CONTRACT.replace('bind: "0.0.0.0:993"', 'bind: ":993"'), 'listeners[0].bind'],
      [CONTRACT.replace('bind: "127.0.0.1:9090"', 'bind: ":9090"'), 'admin.bind'],
      [`${CONTRACT}directory: { source: static, static: { file: x }, socketmap: { bind: ":7777" } }\n`, 'directory.socketmap.bind'],
    ] as const) {
      expectConfigError(() => loadConfig({ file: file(text), env: {} }), key);
      expect(() => loadConfig({ file: file(text), env: {} })).toThrow(/names no host: write "host:port"/);
    }
    expect(loadConfig({ file: file(CONTRACT.replace('"0.0.0.0:993"', '"[::]:993"')), env: {} }).config.listeners[0]!.bind).toEqual({ host: '::', port: 993 });
  });

  it('refuses to run without a certificate unless tls.development says so', () => {
    const none = CONTRACT.replace(/^tls: .*\n/m, '');
    expectConfigError(() => loadConfig({ file: file(none), env: {} }), 'tls.cert');
    expect(() => loadConfig({ file: file(none), env: {} })).toThrow(/tls\.development: true/);
    const dev = loadConfig({ file: file(none), env: { SASL_GATE_TLS__DEVELOPMENT: 'true' } }).config;
    expect(dev.tls).toMatchObject({ development: true, devCertDir: 'certs' });
    expect(dev.tls.cert).toBeUndefined();
  });

  it.each(['socketmap', 'scim'] as const)('refuses a %s server beyond loopback without allowFrom', (name) => {
    const extra = name === 'scim' ? ', token: "0123456789abcdef0123456789abcdef"' : '';
    const directory = (bind: string, allow = '') =>
      `${CONTRACT}directory: { source: static, static: { file: x }, ${name}: { bind: "${bind}"${allow}${extra} } }\n`;
    expectConfigError(() => loadConfig({ file: file(directory('0.0.0.0:7777')), env: {} }), `directory.${name}.allowFrom`);
    expectConfigError(() => loadConfig({ file: file(directory('[::]:7777')), env: {} }), `directory.${name}.allowFrom`);
    expectConfigError(() => loadConfig({ file: file(directory('mailserver-net:7777')), env: {} }), `directory.${name}.allowFrom`);
    for (const ok of [directory('127.0.0.1:7777'), directory('[::1]:7777'), directory('localhost:7777'), directory('0.0.0.0:7777', ', allowFrom: [172.30.25.0/28]')]) {
      expect(() => loadConfig({ file: file(ok), env: {} })).not.toThrow();
    }
  });

  it('takes a metrics token or its file, not both, and warns about an open /metrics beyond loopback', () => {
    const both = CONTRACT.replace('admin: { bind: "127.0.0.1:9090" }', 'admin: { bind: "127.0.0.1:9090", metricsToken: "0123456789abcdef", metricsTokenFile: /x }');
    expectConfigError(() => loadConfig({ file: file(both), env: {} }), 'admin.metricsToken');
    const short = CONTRACT.replace('admin: { bind: "127.0.0.1:9090" }', 'admin: { bind: "127.0.0.1:9090", metricsToken: "short" }');
    expectConfigError(() => loadConfig({ file: file(short), env: {} }), 'admin.metricsToken');
    const open = CONTRACT.replace('bind: "127.0.0.1:9090"', 'bind: "0.0.0.0:9090"');
    expect(loadConfig({ file: file(open), env: {} }).warnings.filter((w) => w.includes('admin.metricsToken'))).toHaveLength(1);
    expect(loadConfig({ file: file(open), env: { SASL_GATE_ADMIN__METRICS_TOKEN: '0123456789abcdef' } }).warnings.filter((w) => w.includes('admin.metricsToken'))).toEqual([]);
    expect(loadConfig({ file: file(CONTRACT), env: {} }).warnings.filter((w) => w.includes('admin.metricsToken'))).toEqual([]);
  });

  it('reads the master password from a file', () => {
    const secret = file('from-file\n');
    const { config } = loadConfig({
      file: file(CONTRACT.replace('password: "s3cret"', `passwordFile: ${secret}`)),
      env: {},
    });
    expect(config.master.password).toBe('from-file');
  });
});

/** The problems loadConfig reports for a configuration, by key. */
function problemsOf(text: string, env: NodeJS.ProcessEnv = {}, path = file(text)): Map<string, ConfigProblem> {
  try {
    loadConfig({ file: path, env });
  } catch (err) {
    expect(err).toBeInstanceOf(InvalidConfigError);
    return new Map((err as InvalidConfigError).problems.map((p) => [p.key, p]));
  }
  throw new Error('the configuration was accepted');
}

describe('every problem at once', () => {
  it('reports five mistakes in one run, each with its key, the expected form and a hint', () => {
    const secrets = join(dir, 'container-like');
    mkdirSync(secrets, { recursive: true });
    writeFileSync(join(secrets, 'compose.yaml'), 'services: {}\n');
    const configFile = join(secrets, 'sasl-gate.yaml');
    writeFileSync(
      configFile,
      CONTRACT.replace('bind: "0.0.0.0:993"', 'bind: 993')
        .replace('port: 143', 'port: 143x')
        .replace('https://idp.example.com/realms/mail', 'idp.example.com')
        .replace('audience: [mail]', 'audiences: [mail]')
        .replace('password: "s3cret"', 'passwordFile: /run/secrets/master_password')
        .replace(/^tls: .*$/m, `tls: { cert: /etc/sasl-gate/tls/fullchain.pem, key: ${join(dir, 'server.key')} }`),
    );
    const problems = problemsOf('', {}, configFile);
    expect([...problems.keys()].sort()).toEqual(
      ['backends.imap.port', 'listeners[0].bind', 'master.passwordFile', 'oauth.audiences', 'oauth.issuer', 'tls.cert'].sort(),
    );
    expect(problems.get('listeners[0].bind')).toMatchObject({
      message: expect.stringMatching(/^expected host:port or \[IPv6\]:port; the host is required .*, got the number 993$/),
      hint: expect.stringContaining('"0.0.0.0:993"'),
    });
    expect(problems.get('backends.imap.port')?.message).toBe('expected a whole number from 1 to 65535, got "143x"');
    expect(problems.get('oauth.issuer')?.message).toBe('"idp.example.com" is not a URL; expected an https:// URL (http:// only on loopback: localhost, 127.0.0.1, [::1])');
    expect(problems.get('oauth.audiences')).toEqual({ key: 'oauth.audiences', message: 'unknown key', hint: 'did you mean oauth.audience?' });
    // The path once, the reason in words, and where the file really is.
    const secret = problems.get('master.passwordFile')!;
    expect(secret.message).toBe('cannot read /run/secrets/master_password: no such file (ENOENT)');
    expect(secret.hint).toMatch(/container secret.*SASL_GATE_MASTER__PASSWORD_FILE=/);
    expect(problems.get('tls.cert')?.hint).toMatch(/next to compose\.yaml: .* inside the container.*SASL_GATE_TLS__CERT=/);
  });

  it('speaks of a missing section and a misspelt one, and of docker-mailserver paths', () => {
    const problems = problemsOf(
      CONTRACT.replace('backends:', 'backend:').replace(/^tls: .*$/m, 'tls: { cert: /tmp/docker-mailserver/ssl/cert.pem, key: /etc/dms/key.pem }'),
    );
    expect(problems.get('backends')?.message).toMatch(/^required, but missing/);
    expect(problems.get('backend')?.hint).toBe('did you mean backends?');
    expect(problems.get('tls.cert')?.hint).toMatch(/inside the docker-mailserver container/);
    expect(problems.get('tls.key')?.hint).toMatch(/inside the docker-mailserver container/);
  });

  it('names the variable that set a bad value, and a key that belongs elsewhere', () => {
    const problems = problemsOf(CONTRACT.replace('hostname', 'x').replace('admin: { bind: "127.0.0.1:9090" }', 'clientSecret: x'), {
      SASL_GATE_BACKENDS__IMAP__PORT: '70000',
      SASL_GATE_LISTENERS__0__TLS: 'implict',
    });
    expect(problems.get('backends.imap.port')?.message).toMatch(/^expected a whole number from 1 to 65535, .*\(from SASL_GATE_BACKENDS__IMAP__PORT\)$/);
    expect(problems.get('listeners[0].tls')).toMatchObject({ message: expect.stringMatching(/one of implicit, starttls/), hint: 'did you mean implicit?' });
    expect(problems.get('clientSecret')?.hint).toBe('did you mean oauth.clientSecret?');
  });

  it('never shows the value of a secret key', () => {
    const problems = problemsOf(CONTRACT.replace('password: "s3cret"', 'password: 424242424242'));
    expect(problems.get('master.password')?.message).not.toContain('424242424242');
  });
});

describe('the effective configuration', () => {
  it('is YAML as the file writes it: host:port, secrets masked, their files and the environment named', () => {
    const secretFile = file('from-file\n');
    const loaded = loadConfig({
      file: file(CONTRACT.replace('password: "s3cret"', `passwordFile: ${secretFile}`)),
      env: { SASL_GATE_OAUTH__CLIENT_SECRET: 'env-client-secret', SASL_GATE_LISTENERS__0__BIND: '[::1]:1993' },
    });
    const text = effectiveYaml(loaded.config, loaded.fromEnv);
    expect(text).not.toContain('from-file');
    expect(text).not.toContain('env-client-secret');
    expect(text).toContain(`password: "********" # read from ${secretFile} (master.passwordFile)`);
    expect(text).toContain('clientSecret: "********" # from SASL_GATE_OAUTH__CLIENT_SECRET');
    expect(text).toContain('audience: [ mail ]');
    const parsed = parseYaml(text) as { listeners: Array<{ bind: string }>; admin: { bind: string }; master: { passwordFile: string } };
    expect(parsed.listeners[0]!.bind).toBe('[::1]:1993');
    expect(parsed.admin.bind).toBe('127.0.0.1:9090');
    expect(parsed.master.passwordFile).toBe(secretFile);
    // What it prints is itself a configuration that loads (secrets aside).
    const again = loadConfig({ file: file(text.replace(/password: "\*+".*$/m, '').replace(/clientSecret: "\*+".*$/m, 'clientSecret: x')), env: {} });
    expect(again.config.listeners[0]!.bind).toEqual({ host: '::1', port: 1993 });
  });
});


describe('oauth.anyClientWithScope', () => {
  it('takes a scope only mail clients are granted, and refuses one every application of the issuer asks for', () => {
    const withScope = (scope: string) => file(CONTRACT.replace('  audience: [mail]', `  audience: [mail]\n  anyClientWithScope: "${scope}"`));
    expect(loadConfig({ file: withScope('urn:ietf:params:oauth:scope:mail'), env: {} }).config.oauth.anyClientWithScope).toBe('urn:ietf:params:oauth:scope:mail');
    for (const scope of ['openid', 'email', 'profile', 'offline_access']) {
      expect(() => loadConfig({ file: withScope(scope), env: {} })).toThrow(/would let any application of the issuer read mail/);
    }
  });
});

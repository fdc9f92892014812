import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { envNameToPath, loadConfig, pathToEnvName } from '../../../src/config/load.js';
import { ConfigError } from '../../../src/errors.js';

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
    ['listeners:\n  - { protocol: imap, bind: "nope", tls: implicit }', 'listeners.0.bind'],
    ['listeners:\n  - { protocol: pop3, bind: ":995" }', 'listeners.0.protocol'],
    ['listeners:\n  - { protocol: imap, bind: ":99999" }', 'listeners.0.bind'],
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
      'oauth.algorithms.1',
    );
    expectConfigError(() => loadConfig({ file: file(CONTRACT.replace('password: "s3cret"', '')), env: {} }), 'master.password');
    expectConfigError(() => loadConfig({ file: file(CONTRACT.replace('user: sasl-gate', 'user: "a*b"')), env: {} }), 'master.user');
    expectConfigError(() => loadConfig({ file: join(dir, 'missing.yaml'), env: {} }), '--config');
  });

  it('refuses unknown keys, so a typo never silently falls back to a default', () => {
    expectConfigError(() => loadConfig({ file: file(CONTRACT.replace('audience: [mail]', 'audiences: [mail]')), env: {} }), 'oauth');
    expectConfigError(() => loadConfig({ file: file(CONTRACT), env: { SASL_GATE_OAUTH__ALGORITHM: 'HS256' } }), 'oauth');
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
      [CONTRACT.replace('bind: "0.0.0.0:993"', 'bind: ":993"'), 'listeners.0.bind'],
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

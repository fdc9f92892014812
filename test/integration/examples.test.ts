/**
 * The docker-mailserver example as an admin would use it: its sasl-gate configuration passes
 * `sasl-gate check-config` (the built CLI, as a separate process) with secrets masked, and the
 * pieces that must agree across files do: the path the image's CMD reads and the compose mount,
 * sasl-gate's fixed address and what Dovecot (login_trusted_networks) trusts, Postfix's service
 * for sasl-gate (master login over PROXY v2, no XCLIENT hosts), the backend ports, and the way Roundcube reaches sasl-gate.
 */
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, posix, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parse as parseYaml } from 'yaml';
import { ensureDevCertificate } from '../../src/tls/devcert.js';
import { keepLog, secret } from '../support/evidence.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const EXAMPLE = join(ROOT, 'examples', 'docker-mailserver');
const BIN = join(ROOT, 'bin', 'sasl-gate.js');
const CONFIG_FILE = join(EXAMPLE, 'sasl-gate.yaml');
const DMS_CONFIG = join(EXAMPLE, 'docker-data', 'dms', 'config');

type Obj = Record<string, unknown>;

function obj(value: unknown, what: string): Obj {
  if (value === null || typeof value !== 'object' || Array.isArray(value)) throw new Error(`${what} is not a mapping`);
  return value as Obj;
}

function list(value: unknown): unknown[] {
  return Array.isArray(value) ? value : [];
}

function str(value: unknown, what: string): string {
  if (typeof value !== 'string') throw new Error(`${what} is not a string`);
  return value;
}

// ---- IPv4 networks -------------------------------------------------------------------------

function ipv4ToInt(address: string): number {
  const parts = address.split('.').map(Number);
  if (parts.length !== 4 || parts.some((p) => !Number.isInteger(p) || p < 0 || p > 255)) {
    throw new Error(`"${address}" is not an IPv4 address`);
  }
  return parts.reduce((n, p) => n * 256 + p, 0);
}

/** `a.b.c.d/len` (or a single address) as a numeric range. */
function cidr(network: string): { first: number; last: number } {
  const [address = '', lengthText = '32'] = network.split('/');
  const length = Number(lengthText);
  if (!Number.isInteger(length) || length < 0 || length > 32) throw new Error(`"${network}" is not an IPv4 network`);
  const size = 2 ** (32 - length);
  const first = Math.floor(ipv4ToInt(address) / size) * size;
  return { first, last: first + size - 1 };
}

function contains(network: string, address: string): boolean {
  const { first, last } = cidr(network);
  const ip = ipv4ToInt(address);
  return ip >= first && ip <= last;
}

function within(inner: string, outer: string): boolean {
  const a = cidr(inner);
  const b = cidr(outer);
  return a.first >= b.first && a.last <= b.last;
}

// ---- compose.yaml helpers ------------------------------------------------------------------

/** A service's volume mounts as { source, target }, short (`src:dst[:mode]`) or long syntax. */
function mounts(service: Obj): Array<{ source: string; target: string }> {
  return list(service['volumes']).map((v) => {
    if (typeof v === 'string') {
      const [source = '', target = ''] = v.split(':');
      return { source, target };
    }
    const m = obj(v, 'volume');
    return { source: String(m['source'] ?? ''), target: String(m['target'] ?? '') };
  });
}

/** The names of the networks a service is attached to (list or mapping syntax). */
function networksOf(service: Obj): string[] {
  const networks = service['networks'];
  if (Array.isArray(networks)) return networks.map(String);
  if (networks && typeof networks === 'object') return Object.keys(networks);
  return ['default'];
}

/** A service's settings on one network (mapping syntax), e.g. ipv4_address, aliases. */
function onNetwork(service: Obj, network: string): Obj {
  const networks = service['networks'];
  if (!networks || typeof networks !== 'object' || Array.isArray(networks)) return {};
  const entry = (networks as Obj)[network];
  return entry && typeof entry === 'object' ? (entry as Obj) : {};
}

/** Environment as a mapping (compose allows a list of NAME=value too). */
function environment(service: Obj): Record<string, string> {
  const env = service['environment'];
  if (Array.isArray(env)) {
    return Object.fromEntries(env.map((e) => String(e).split(/=(.*)/s).slice(0, 2) as [string, string]));
  }
  return Object.fromEntries(Object.entries(obj(env ?? {}, 'environment')).map(([k, v]) => [k, String(v)]));
}

/** Container ports a service publishes (`"host:container"`, `"ip:host:container"`, long syntax). */
function publishedContainerPorts(service: Obj): number[] {
  return list(service['ports']).map((p) => {
    if (typeof p === 'string' || typeof p === 'number') return Number(String(p).split('/')[0]!.split(':').pop());
    return Number(obj(p, 'port')['target']);
  });
}

function secretsOf(service: Obj): string[] {
  return list(service['secrets']).map((s) => (typeof s === 'string' ? s : String(obj(s, 'secret')['source'])));
}

// ---- the files -----------------------------------------------------------------------------

const dockerfile = readFileSync(join(ROOT, 'Dockerfile'), 'utf8');
const compose = obj(parseYaml(readFileSync(join(EXAMPLE, 'compose.yaml'), 'utf8')), 'compose.yaml');
const example = obj(parseYaml(readFileSync(CONFIG_FILE, 'utf8')), 'sasl-gate.yaml');
const userPatches = readFileSync(join(DMS_CONFIG, 'user-patches.sh'), 'utf8');
const dovecotCf = readFileSync(join(DMS_CONFIG, 'dovecot.cf'), 'utf8');

const services = obj(compose['services'], 'services');
const gate = obj(services['sasl-gate'], 'services.sasl-gate');
const backends = obj(example['backends'], 'backends');
const imapBackend = obj(backends['imap'], 'backends.imap');
const smtpBackend = obj(backends['smtp'], 'backends.smtp');

/** The network on which sasl-gate has a fixed address, and that address. */
function gateFixedAddress(): { network: string; address: string } {
  const found = networksOf(gate)
    .map((network) => ({ network, address: onNetwork(gate, network)['ipv4_address'] }))
    .filter((n): n is { network: string; address: string } => typeof n.address === 'string');
  expect(found, 'sasl-gate needs exactly one fixed ipv4_address').toHaveLength(1);
  return found[0]!;
}

function subnetOf(network: string): string {
  const ipam = obj(obj(obj(compose['networks'], 'networks')[network], `networks.${network}`)['ipam'], 'ipam');
  const subnets = list(ipam['config']).map((c) => str(obj(c, 'ipam.config')['subnet'], 'subnet'));
  expect(subnets).toHaveLength(1);
  return subnets[0]!;
}

/** Values of `name=value` / `name = value` settings in a config or script, split into items. */
function settingValues(text: string, name: string): string[][] {
  const lines = text.split('\n').filter((l) => !/^\s*#/.test(l));
  const re = new RegExp(`\\b${name}\\s*=\\s*([^'"\\n]*)`);
  return lines
    .map((l) => re.exec(l)?.[1])
    .filter((v): v is string => v !== undefined)
    .map((v) => v.trim().split(/[\s,]+/).filter(Boolean));
}

describe('examples/docker-mailserver', () => {
  describe('the sasl-gate configuration passes check-config', () => {
    let dir: string;
    let env: NodeJS.ProcessEnv;
    let masterPassword: string;
    let clientSecret: string;
    let certPath: string;

    const run = (args: string[], runEnv: NodeJS.ProcessEnv) =>
      new Promise<{ code: number; stdout: string; stderr: string }>((resolvePromise) => {
        execFile(process.execPath, [BIN, ...args], { env: runEnv, timeout: 30_000 }, (err, stdout, stderr) => {
          const code = err ? (typeof err.code === 'number' ? err.code : 1) : 0;
          keepLog(`${stdout}${stderr}`, 'examples-check-config');
          resolvePromise({ code, stdout, stderr });
        });
      });

    beforeAll(async () => {
      dir = mkdtempSync(join(tmpdir(), 'sasl-gate-example-'));
      // Real PEM files where the example expects the mounted certificate (a check-config that
      // looks into them finds a certificate and key, not placeholders).
      const certs = await ensureDevCertificate(join(dir, 'tls'), { hostnames: ['mail.example.com'] });
      certPath = certs.certPath;
      masterPassword = secret(randomBytes(24).toString('base64url'), 'example master password');
      clientSecret = secret(randomBytes(24).toString('base64url'), 'example client secret');
      const passwordFile = join(dir, 'master_password');
      writeFileSync(passwordFile, `${masterPassword}\n`, { mode: 0o600 });
      // Only what the test sets: no SASL_GATE_* variable of the surrounding shell leaks in.
      const clean = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('SASL_GATE_')));
      env = {
        ...clean,
        // What compose provides at /run/secrets/master_password and /etc/sasl-gate/tls/.
        SASL_GATE_MASTER__PASSWORD_FILE: passwordFile,
        SASL_GATE_TLS__CERT: certs.certPath,
        SASL_GATE_TLS__KEY: certs.keyPath,
        // As compose would set it for introspection (Keycloak lightweight tokens).
        SASL_GATE_OAUTH__CLIENT_SECRET: clientSecret,
      };
    });

    afterAll(() => {
      if (dir) rmSync(dir, { recursive: true, force: true });
    });

    it('exits 0 and prints the effective configuration with every secret masked', async () => {
      const { code, stdout, stderr } = await run(['check-config', '--config', CONFIG_FILE], env);
      expect(code, stderr).toBe(0);
      expect(stderr).toMatch(/configuration is valid/);
      for (const text of [stdout, stderr]) {
        expect(text).not.toContain(masterPassword);
        expect(text).not.toContain(clientSecret);
      }
      const effective = obj(parseYaml(stdout), 'check-config output');
      const master = obj(effective['master'], 'master');
      expect(master['user']).toBe('sasl-gate');
      expect(master['password']).toBe('********');
      const oauth = obj(effective['oauth'], 'oauth');
      expect(oauth['clientSecret']).toBe('********');
      expect(oauth['issuer']).toBe('https://auth.example.com/application/o/mail/');
      expect(oauth['usernameClaims']).toEqual(['email']);
      expect(oauth['audience']).toEqual(['mail']);
      // The environment overrides were applied (the certificate the test wrote).
      expect(obj(effective['tls'], 'tls')['cert']).toBe(certPath);
      const listeners = list(effective['listeners']).map((l) => obj(l, 'listener'));
      expect(listeners.map((l) => [l['protocol'], l['bind'], l['tls']])).toEqual([
        ['imap', '0.0.0.0:993', 'implicit'],
        ['smtp', '0.0.0.0:465', 'implicit'],
      ]);
      // Which files the secret came from, and which keys the environment set.
      expect(master['passwordFile']).toBe(join(dir, 'master_password'));
      expect(stdout).toContain(`# read from ${join(dir, 'master_password')} (master.passwordFile)`);
      expect(stdout).toMatch(/cert: \S+ # from SASL_GATE_TLS__CERT/);
    });

    it('refuses to start without the master password file, naming the key', async () => {
      const { SASL_GATE_MASTER__PASSWORD_FILE: _, ...withoutSecret } = env;
      const missing = join(dir, 'no-such-secret');
      const { code, stderr } = await run(['check-config', '--config', CONFIG_FILE], {
        ...withoutSecret,
        SASL_GATE_MASTER__PASSWORD_FILE: missing,
      });
      expect(code).toBe(1);
      expect(stderr).toMatch(/master\.passwordFile: cannot read \S+no-such-secret: no such file \(ENOENT\)/);
    });

    it('run on the host without overrides, lists every container path at once, with the way to check it', async () => {
      const clean = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('SASL_GATE_')));
      const { code, stdout, stderr } = await run(['check-config', '--config', CONFIG_FILE], clean);
      expect(code).toBe(1);
      expect(stdout).toBe('');
      expect(stderr).toMatch(/invalid configuration \(3 problems\)/);
      expect(stderr).toMatch(/master\.passwordFile: cannot read \/run\/secrets\/master_password: no such file \(ENOENT\)\n\s+\/run\/secrets\/master_password is a container secret/);
      for (const key of ['tls.cert', 'tls.key']) expect(stderr).toMatch(new RegExp(`${key}: cannot read /etc/sasl-gate/tls/\\S+: no such file .*\\n\\s+the configuration sits next to compose\\.yaml`));
      expect(stderr).toContain('docker compose run --rm --no-deps sasl-gate check-config --config /etc/sasl-gate/config.yaml');
    });
  });

  describe('the image and compose.yaml agree', () => {
    it('mounts the example configuration where the image CMD reads it', () => {
      const cmd = /^CMD\s+(\[.*\])\s*$/m.exec(dockerfile)?.[1];
      expect(cmd, 'Dockerfile CMD in exec form').toBeDefined();
      const args = JSON.parse(cmd!) as string[];
      expect(args[0]).toBe('serve');
      const configPath = args[args.indexOf('--config') + 1];
      expect(configPath).toBe('/etc/sasl-gate/config.yaml');
      expect(/^ENTRYPOINT\s+\["node",\s*"\/app\/bin\/sasl-gate\.js"\]\s*$/m.test(dockerfile)).toBe(true);

      const mount = mounts(gate).find((m) => m.target === configPath);
      expect(mount, `sasl-gate mounts ${configPath}`).toBeDefined();
      expect(resolve(EXAMPLE, mount!.source)).toBe(CONFIG_FILE);
    });

    it('mounts the certificate directory, the master password secret and health on the admin port', () => {
      const tls = obj(example['tls'], 'tls');
      for (const key of ['cert', 'key']) {
        const path = str(tls[key], `tls.${key}`);
        const dirMount = mounts(gate).find((m) => m.target.replace(/\/$/, '') === posix.dirname(path));
        expect(dirMount, `the directory of tls.${key} is mounted`).toBeDefined();
      }
      const passwordFile = str(obj(example['master'], 'master')['passwordFile'], 'master.passwordFile');
      const secretName = /^\/run\/secrets\/([^/]+)$/.exec(passwordFile)?.[1];
      expect(secretName, 'master.passwordFile is a compose secret').toBeDefined();
      expect(secretsOf(gate)).toContain(secretName);
      expect(Object.keys(obj(compose['secrets'], 'secrets'))).toContain(secretName);

      const healthPort = Number(/127\.0\.0\.1:(\d+)\/healthz/.exec(dockerfile)?.[1]);
      const adminBind = str(obj(example['admin'], 'admin')['bind'], 'admin.bind');
      expect(Number(adminBind.split(':').pop())).toBe(healthPort);
    });

    it('binds the admin endpoint to loopback, where the health check runs, and publishes nothing else', () => {
      // No other container needs /metrics or /readyz: only the container's own HEALTHCHECK asks.
      expect(str(obj(example['admin'], 'admin')['bind'], 'admin.bind')).toBe('127.0.0.1:9090');
      const ports = list(example['listeners']).map((l) => Number(str(obj(l, 'listener')['bind'], 'bind').split(':').pop()));
      expect([...publishedContainerPorts(gate)].sort()).toEqual([...ports].sort());
    });

    it('publishes the listener ports and lets the non-root user bind them', () => {
      const ports = list(example['listeners']).map((l) => Number(str(obj(l, 'listener')['bind'], 'bind').split(':').pop()));
      expect(publishedContainerPorts(gate)).toEqual(expect.arrayContaining(ports));
      expect(/^EXPOSE\s+993\s+465\s*$/m.test(dockerfile)).toBe(true);
      expect(/^USER\s+(?!0\b|root\b)\S+/m.test(dockerfile)).toBe(true);
      if (ports.some((p) => p < 1024)) {
        const sysctls = obj(gate['sysctls'], 'sysctls');
        expect(Number(sysctls['net.ipv4.ip_unprivileged_port_start'])).toBe(0);
      }
    });
  });

  describe('docker-mailserver trusts sasl-gate, and only sasl-gate', () => {
    it('gives sasl-gate a fixed address inside the fixed subnet of a network it shares only with the mail server', () => {
      const { network, address } = gateFixedAddress();
      expect(contains(subnetOf(network), address)).toBe(true);
      // The backends are reached by service name on that network alone, so sasl-gate connects
      // from its fixed address.
      expect(imapBackend['host']).toBe(smtpBackend['host']);
      const mailserver = obj(services[str(imapBackend['host'], 'backends.imap.host')], 'the mail server service');
      expect(networksOf(gate).filter((n) => networksOf(mailserver).includes(n))).toEqual([network]);
      // Nothing else (Roundcube, a proxy) sits on the trusted network.
      const attached = Object.entries(services)
        .filter(([, s]) => networksOf(obj(s, 'service')).includes(network))
        .map(([name]) => name)
        .sort();
      expect(attached).toEqual(['mailserver', 'sasl-gate'].sort());
    });

    it('logs into Postfix as the master account over PROXY v2, on a service that trusts no host with XCLIENT', () => {
      const service = /postconf -M '(\d+)\/inet=\1 inet /.exec(userPatches)?.[1];
      expect(Number(service)).toBe(Number(smtpBackend['port']));
      expect(smtpBackend['login']).toBe('master');
      expect(smtpBackend['proxyProtocol']).toBe(true);
      const values = settingValues(userPatches, 'smtpd_authorized_xclient_hosts');
      expect(values, 'smtpd_authorized_xclient_hosts is set, and empty').toEqual([[]]);
      expect(userPatches).toContain(`'${service}/inet/smtpd_authorized_xclient_hosts='`);
      expect(userPatches).toContain(`'${service}/inet/smtpd_upstream_proxy_protocol=haproxy'`);
      expect(userPatches).toContain(`'${service}/inet/smtpd_sasl_type=dovecot'`);
      expect(userPatches).toContain(`'${service}/inet/smtpd_tls_security_level=none'`);
    });

    it("puts sasl-gate into Dovecot's login_trusted_networks and trusts nothing outside the backend network", () => {
      const { network, address } = gateFixedAddress();
      const values = settingValues(dovecotCf, 'login_trusted_networks');
      expect(values).toHaveLength(1);
      const trusted = values[0]!;
      expect(trusted.some((n) => contains(n, address))).toBe(true);
      for (const n of trusted) expect(within(n, subnetOf(network)), `${n} lies inside ${subnetOf(network)}`).toBe(true);
      expect(Number(imapBackend['port'])).toBe(143);
    });
  });

  it('points Roundcube at sasl-gate over implicit TLS, never at the mail server', () => {
    const roundcube = obj(services['roundcube'], 'services.roundcube');
    const env = environment(roundcube);
    const listeners = list(example['listeners']).map((l) => obj(l, 'listener'));
    const portOf = (protocol: string) =>
      listeners
        .filter((l) => l['protocol'] === protocol && (l['tls'] ?? 'implicit') === 'implicit')
        .map((l) => Number(str(l['bind'], 'bind').split(':').pop()));
    for (const [hostVar, portVar, protocol] of [
      ['ROUNDCUBEMAIL_DEFAULT_HOST', 'ROUNDCUBEMAIL_DEFAULT_PORT', 'imap'],
      ['ROUNDCUBEMAIL_SMTP_SERVER', 'ROUNDCUBEMAIL_SMTP_PORT', 'smtp'],
    ] as const) {
      const host = /^ssl:\/\/(.+)$/.exec(env[hostVar] ?? '')?.[1];
      expect(host, `${hostVar} uses ssl://`).toBeDefined();
      expect(portOf(protocol)).toContain(Number(env[portVar]));
      // The name is sasl-gate's alias on a network Roundcube is on (and the certificate's name).
      const shared = networksOf(roundcube).filter((n) => networksOf(gate).includes(n));
      expect(shared.some((n) => list(onNetwork(gate, n)['aliases']).includes(host))).toBe(true);
      expect(host).toBe(example['hostname']);
    }
    expect(networksOf(roundcube)).not.toContain(gateFixedAddress().network);
  });
});

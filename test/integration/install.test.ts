/**
 * Installing without containers, as an admin would: the packed package installed globally with
 * production dependencies only gives a working `sasl-gate`, and the systemd unit it ships is
 * hardened and passes `systemd-analyze verify`. The package is the product alone: no file of the
 * dev stack (tools/), bench/ or test/, no development-only dependency (the OpenID provider
 * library, the Reflect polyfill), and a development certificate is still made without them.
 *
 * The package is packed from the dist/ that `npm test` builds (no second compile), and installed
 * into a temporary prefix. systemd-analyze checks that ExecStart names an executable, so the
 * unit is verified as a copy whose ExecStart points at the binary that was just installed.
 */
import { execFile, spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as tls from 'node:tls';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parse as parseYaml } from 'yaml';
import { freePort } from '../../tools/ports.js';
import { secret } from '../support/evidence.js';

const ROOT = join(import.meta.dirname, '..', '..');
const UNIT = join(ROOT, 'examples', 'systemd', 'sasl-gate.service');
const SYSTEMD_ANALYZE = '/usr/bin/systemd-analyze';
const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as {
  name: string;
  version: string;
  devDependencies: Record<string, string>;
};

function run(file: string, args: string[], options: { cwd?: string; env?: NodeJS.ProcessEnv } = {}) {
  return new Promise<{ code: number; stdout: string; stderr: string }>((resolve) => {
    const child = execFile(file, args, { ...options, timeout: 120_000, maxBuffer: 16 << 20 }, (err, stdout, stderr) => {
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : 1) : 0, stdout, stderr });
    });
    child.stdin?.end();
  });
}

/** The unit's settings: section -> key -> every value given (keys may repeat). */
function unitSettings(text: string): Map<string, Map<string, string[]>> {
  const sections = new Map<string, Map<string, string[]>>();
  let current: Map<string, string[]> | undefined;
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (line === '' || line.startsWith('#') || line.startsWith(';')) continue;
    const section = /^\[(.+)\]$/.exec(line);
    if (section) {
      current = new Map();
      sections.set(section[1]!, current);
      continue;
    }
    const eq = line.indexOf('=');
    if (!current || eq < 0) throw new Error(`not a unit line: ${line}`);
    const key = line.slice(0, eq);
    current.set(key, [...(current.get(key) ?? []), line.slice(eq + 1)]);
  }
  return sections;
}

let dir: string;
let prefix: string;
let installed: string;
let packedFiles: string[];

beforeAll(async () => {
  expect(existsSync(join(ROOT, 'dist', 'cli.js')), 'dist/ is built by `npm test` (or `npm run build`)').toBe(true);
  dir = mkdtempSync(join(tmpdir(), 'sasl-gate-install-'));
  prefix = join(dir, 'prefix');
  const npm = 'npm';
  const packed = await run(npm, ['pack', '--ignore-scripts', '--pack-destination', dir, '--json'], { cwd: ROOT });
  expect(packed.code, packed.stderr).toBe(0);
  packedFiles = (JSON.parse(packed.stdout) as Array<{ files: Array<{ path: string }> }>)[0]!.files.map((f) => f.path);
  const tarball = join(dir, `${pkg.name}-${pkg.version}.tgz`);
  expect(existsSync(tarball)).toBe(true);
  const install = await run(npm, ['install', '-g', '--prefix', prefix, '--omit=dev', '--no-audit', '--no-fund', '--prefer-offline', tarball], { cwd: dir });
  expect(install.code, install.stderr).toBe(0);
  // No warning the admin would have to act on (install scripts that did not run, and the like).
  expect(install.stderr).not.toMatch(/warn/i);
  installed = join(prefix, 'bin', 'sasl-gate');
}, 180_000);

afterAll(() => {
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe('npm install -g of the packed package', () => {
  it('gives a sasl-gate command that runs, with production dependencies only', async () => {
    const version = await run(installed, ['--version']);
    expect(version).toMatchObject({ code: 0, stdout: `${pkg.version}\n` });
    const modules = join(prefix, 'lib', 'node_modules', pkg.name);
    // Every installed package by its full name (@scope/name for scoped ones).
    const dependencies = readdirSync(join(modules, 'node_modules')).flatMap((name) =>
      name.startsWith('@') ? readdirSync(join(modules, 'node_modules', name)).map((inner) => `${name}/${inner}`) : [name],
    );
    for (const dev of Object.keys(pkg.devDependencies)) expect(dependencies).not.toContain(dev);
    expect(dependencies).toEqual(expect.arrayContaining(['yaml', 'zod', 'pino', 'jose', 'pkijs']));
    // The unit comes with the package.
    expect(readFileSync(join(modules, 'examples', 'systemd', 'sasl-gate.service'), 'utf8')).toBe(readFileSync(UNIT, 'utf8'));
  });

  it('ships the product only: bin, dist and the systemd example, no dev stack, bench or test file', () => {
    expect(packedFiles).toEqual(expect.arrayContaining(['bin/sasl-gate.js', 'dist/cli.js', 'dist/tls/devcert.js', 'dist/load/cli.js', 'examples/systemd/sasl-gate.service', 'package.json']));
    const outside = packedFiles.filter((f) => !/^(bin|dist|examples\/systemd)\//.test(f) && !['package.json', 'README.md', 'LICENSE'].includes(f));
    expect(outside).toEqual([]);
    expect(packedFiles.filter((f) => /(^|\/)(tools|bench|test|devstack)\//.test(f) || /\.ts$/.test(f))).toEqual([]);
  });

  it('has no development-only library in its production dependency tree', async () => {
    const modules = join(prefix, 'lib', 'node_modules', pkg.name);
    const ls = await run('npm', ['ls', '--omit=dev', '--all', '--json'], { cwd: modules });
    expect(ls.code, ls.stderr).toBe(0);
    const names = new Set<string>();
    const walk = (deps: Record<string, { dependencies?: Record<string, unknown> }> | undefined) => {
      for (const [name, dep] of Object.entries(deps ?? {})) {
        names.add(name);
        walk(dep.dependencies as Record<string, { dependencies?: Record<string, unknown> }> | undefined);
      }
    };
    walk((JSON.parse(ls.stdout) as { dependencies?: Record<string, { dependencies?: Record<string, unknown> }> }).dependencies);
    expect(names.has('pkijs')).toBe(true);
    for (const dev of ['oidc-provider', 'reflect-metadata', 'tsyringe', '@peculiar/x509']) expect({ dev, listed: names.has(dev) }).toEqual({ dev, listed: false });
  });

  it('serves with tls.development: true: the installed command makes a development certificate clients can verify', async () => {
    const certDir = join(dir, 'dev-certs');
    const port = await freePort();
    const config = join(dir, 'dev.yaml');
    writeFileSync(
      config,
      [
        'listeners:',
        `  - { protocol: imap, bind: "127.0.0.1:${port}", tls: implicit }`,
        `tls: { development: true, devCertDir: ${certDir} }`,
        'backends:',
        '  imap: { host: 127.0.0.1, port: 1 }',
        `master: { user: sasl-gate, password: "${secret('installed-dev-master-secret', 'master password')}" }`,
        'oauth: { issuer: "http://127.0.0.1:1", clientId: mail }',
        '',
      ].join('\n'),
    );
    const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('SASL_GATE_')));
    const gate = spawn(installed, ['serve', '--config', config], { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    gate.stdout!.on('data', (c: Buffer) => (output += c.toString()));
    gate.stderr!.on('data', (c: Buffer) => (output += c.toString()));
    const exited = new Promise<number | null>((resolve) => gate.once('exit', (code) => resolve(code)));
    try {
      const deadline = Date.now() + 20_000;
      while (!output.includes('"msg":"sasl-gate started"') && gate.exitCode === null && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
      expect(output).toContain('"msg":"sasl-gate started"');
      const ca = readFileSync(join(certDir, 'ca.crt'), 'utf8');
      const greeting = await new Promise<{ authorized: boolean; issuer: string; line: string }>((resolve, reject) => {
        const socket = tls.connect({ host: '127.0.0.1', port, ca, servername: 'localhost' }, () => {
          const issuer = socket.getPeerCertificate().issuer.CN;
          socket.once('data', (chunk: Buffer) => {
            resolve({ authorized: socket.authorized, issuer: String(issuer), line: chunk.toString('latin1') });
            socket.destroy();
          });
        });
        socket.once('error', reject);
      });
      expect(greeting).toMatchObject({ authorized: true, issuer: 'sasl-gate development CA' });
      expect(greeting.line).toMatch(/^\* OK /);
    } finally {
      gate.kill('SIGTERM');
    }
    expect(await exited).toBe(0);
  });

  it('checks a configuration with the installed command, the secret read from a file as the unit passes it', async () => {
    const secretFile = join(dir, 'master_password');
    writeFileSync(secretFile, `${secret('installed-master-secret', 'master password')}\n`, { mode: 0o600 });
    const config = join(dir, 'config.yaml');
    writeFileSync(
      config,
      [
        'listeners:',
        '  - { protocol: imap, bind: "0.0.0.0:993", tls: implicit }',
        'tls: { development: true }',
        'backends:',
        '  imap: { host: 127.0.0.1, port: 143 }',
        'master: { user: sasl-gate }',
        'oauth: { issuer: "https://idp.example.com/realms/mail", clientId: mail }',
        '',
      ].join('\n'),
    );
    const env = { ...Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('SASL_GATE_'))), SASL_GATE_MASTER__PASSWORD_FILE: secretFile };
    const result = await run(installed, ['check-config', '--config', config], { env });
    expect(result.code, result.stderr).toBe(0);
    expect(result.stdout).not.toContain('installed-master-secret');
    expect((parseYaml(result.stdout) as { master: { passwordFile: string } }).master.passwordFile).toBe(secretFile);
  });
});

describe('examples/systemd/sasl-gate.service', () => {
  const text = readFileSync(UNIT, 'utf8');
  const service = unitSettings(text).get('Service')!;
  const one = (key: string) => service.get(key)?.join(' ');

  it('is hardened: its own user, only the capability to bind low ports, a read-only system, a state directory', () => {
    expect(one('DynamicUser') === 'yes' || (one('User') === 'sasl-gate' && one('Group') === 'sasl-gate')).toBe(true);
    expect(one('AmbientCapabilities')).toBe('CAP_NET_BIND_SERVICE');
    expect(one('CapabilityBoundingSet')).toBe('CAP_NET_BIND_SERVICE');
    expect(one('NoNewPrivileges')).toBe('yes');
    expect(one('ProtectSystem')).toBe('strict');
    expect(one('ProtectHome')).toBe('yes');
    expect(one('PrivateTmp')).toBe('yes');
    expect(one('StateDirectory')).toBe('sasl-gate');
    expect(one('WorkingDirectory')).toBe('/var/lib/sasl-gate');
    // Reload is SIGHUP (new certificate files), stop is SIGTERM with time for the grace period.
    expect(one('ExecReload')).toBe('/bin/kill -HUP $MAINPID');
    expect(one('KillSignal')).toBe('SIGTERM');
    expect(Number(one('TimeoutStopSec'))).toBeGreaterThan(8);
    expect(one('ExecStart')).toBe('/usr/local/bin/sasl-gate serve --config /etc/sasl-gate/config.yaml');
    // The master password is handed over as a credential, named the way the configuration reads it.
    expect(one('LoadCredential')).toBe('master_password:/etc/sasl-gate/master_password');
    expect(service.get('Environment')).toContain('SASL_GATE_MASTER__PASSWORD_FILE=%d/master_password');
  });

  it('passes systemd-analyze verify, and its security review rates it OK', async () => {
    expect(existsSync(SYSTEMD_ANALYZE), `${SYSTEMD_ANALYZE} (Debian package systemd)`).toBe(true);
    // The same unit, its ExecStart pointing at the command npm just installed.
    const unitDir = join(dir, 'units');
    rmSync(unitDir, { recursive: true, force: true });
    const copy = join(unitDir, 'sasl-gate.service');
    mkdirSync(unitDir, { recursive: true });
    writeFileSync(copy, text.replace('ExecStart=/usr/local/bin/sasl-gate ', `ExecStart=${installed} `));
    expect(readFileSync(copy, 'utf8')).toContain(`ExecStart=${installed} serve`);

    const verify = await run(SYSTEMD_ANALYZE, ['verify', copy]);
    expect(verify.stderr).toBe('');
    expect(verify.code).toBe(0);

    // A unit naming a binary that does not exist fails, so the check above means something.
    const broken = join(unitDir, 'broken.service');
    writeFileSync(broken, text.replace('ExecStart=/usr/local/bin/sasl-gate ', `ExecStart=${join(dir, 'no-such-binary')} `));
    const refused = await run(SYSTEMD_ANALYZE, ['verify', broken]);
    expect(refused.code).not.toBe(0);
    expect(refused.stderr).toMatch(/no-such-binary/);

    const security = await run(SYSTEMD_ANALYZE, ['security', '--offline=true', '--no-pager', copy]);
    const level = /Overall exposure level for sasl-gate\.service: ([\d.]+) (\w+)/.exec(security.stdout);
    expect(level, security.stdout + security.stderr).not.toBeNull();
    expect(Number(level![1])).toBeLessThan(2.5);
  });
});

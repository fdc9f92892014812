/**
 * `sasl-gate serve` as an admin runs it: a separate process, a YAML file with only the contract
 * keys of the design, an OpenID issuer over HTTPS trusted through NODE_EXTRA_CA_CERTS, and curl
 * as the mail client.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { copyFileSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { connect as tlsConnect } from 'node:tls';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parse as parseYaml } from 'yaml';
import { startDovecot, type DovecotInstance } from '../../tools/dovecot.js';
import { startDevIdp, type DevIdp } from '../../tools/idp.js';
import { freePort } from '../../tools/ports.js';
import { ensureDevCertificate, generateDevCertificate } from '../../src/tls/devcert.js';
import { keepLog, secret } from '../support/evidence.js';
import { MASTER, USERS } from '../support/stack.js';

const run = promisify(execFile);
const BIN = join(process.cwd(), 'bin', 'sasl-gate.js');
const [ALICE, BOB] = USERS as [(typeof USERS)[0], (typeof USERS)[0]];
const METRICS_TOKEN = secret('metrics-token-5f1c9a7e3b2d', 'metrics token');

let dir: string;
let dovecot: DovecotInstance;
let idp: DevIdp;
let gate: ChildProcess;
let output = '';
let imapPort: number;
let adminPort: number;
let smtpPort: number;
let caPath: string;
let certPaths: { cert: string; key: string };

function waitFor(pattern: RegExp, timeoutMs = 20_000): Promise<void> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no ${pattern} in output:\n${output}`)), timeoutMs);
    const check = () => {
      if (pattern.test(output)) {
        clearTimeout(timer);
        gate.stdout?.off('data', check);
        resolve();
      }
    };
    gate.stdout?.on('data', check);
    gate.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`sasl-gate exited with ${code} before ${pattern}:\n${output}`));
    });
    check();
  });
}

function curl(args: string[]) {
  return run('curl', ['-sS', '--max-time', '20', '--cacert', caPath, ...args]).then(
    (r) => ({ code: 0, stdout: r.stdout, stderr: r.stderr }),
    (e: { code: number; stdout: string; stderr: string }) => ({ code: e.code, stdout: e.stdout, stderr: e.stderr }),
  );
}

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'sasl-gate-serve-'));
  const certs = await ensureDevCertificate(join(dir, 'certs'));
  certPaths = { cert: certs.certPath, key: certs.keyPath };
  caPath = certs.caPath;
  [dovecot, idp] = await Promise.all([
    startDovecot({ users: USERS, master: MASTER, authPenalty: false }),
    startDevIdp({
      users: USERS.map((u) => ({ id: u.name.split('@')[0]!, email: u.name })),
      audience: 'mail',
      host: 'localhost',
      https: { cert: readFileSync(certs.certPath, 'utf8'), key: readFileSync(certs.keyPath, 'utf8'), ca: readFileSync(certs.caPath, 'utf8') },
    }),
  ]);
  expect(idp.issuer).toMatch(/^https:\/\/localhost:\d+$/);
  [imapPort, adminPort] = await Promise.all([freePort(), freePort()]);
  smtpPort = await freePort();
  // Only the contract keys of DESIGN.md, written the way its example writes them.
  const yaml = `
listeners:
  - { protocol: imap, bind: "127.0.0.1:${imapPort}", tls: implicit }
  - { protocol: smtp, bind: "127.0.0.1:${smtpPort}", tls: implicit }
tls: { cert: ${certs.certPath}, key: ${certs.keyPath} }
backends:
  imap: { host: 127.0.0.1, port: ${dovecot.imapPort} }
  smtp: { host: 127.0.0.1, port: 1, login: xclient }
master: { user: ${MASTER.user}, password: "${MASTER.password}" }
oauth:
  issuer: ${idp.issuer}
  audience: [mail]
  validation: [jwt, introspection, userinfo]
  clientId: ${idp.clientId}
  clientSecret: "${idp.clientSecret}"
  usernameClaims: [email]
admin: { bind: "127.0.0.1:${adminPort}" }
`;
  writeFileSync(join(dir, 'sasl-gate.yaml'), yaml);
  gate = spawn(process.execPath, [BIN, 'serve', '--config', join(dir, 'sasl-gate.yaml')], {
    // The metrics token from the environment, as a secret should come.
    env: { ...process.env, NODE_EXTRA_CA_CERTS: certs.caPath, SASL_GATE_ADMIN__METRICS_TOKEN: METRICS_TOKEN },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  gate.stdout!.on('data', (c: Buffer) => (output += c.toString()));
  gate.stderr!.on('data', (c: Buffer) => (output += c.toString()));
  await waitFor(/"msg":"openid provider discovered"/);
});

afterAll(async () => {
  keepLog(output, 'serve');
  if (gate && gate.exitCode === null) gate.kill('SIGKILL');
  await Promise.all([dovecot?.stop(), idp?.close()]);
});

describe('sasl-gate serve', () => {
  it('serves curl with an OAuth token from an HTTPS issuer (OAUTHBEARER)', async () => {
    const token = await idp.mintAccessToken({ user: ALICE.name });
    const r = await curl(['--user', ALICE.name, '--oauth2-bearer', token, `imaps://localhost:${imapPort}/`]);
    expect(r.stderr).toBe('');
    expect(r.stdout).toContain('INBOX');
  });

  it('refuses alice\'s token for bob, and lets a password through', async () => {
    const token = await idp.mintAccessToken({ user: ALICE.name });
    const refused = await curl(['--user', BOB.name, '--oauth2-bearer', token, `imaps://localhost:${imapPort}/`]);
    expect(refused.code).toBe(67); // CURLE_LOGIN_DENIED
    const password = await curl(['--user', `${BOB.name}:${BOB.password}`, `imaps://localhost:${imapPort}/`]);
    expect(password.stdout).toContain('INBOX');
  });

  it('answers SMTPS even while its backend is down, with a temporary failure for logins', async () => {
    const token = await idp.mintAccessToken({ user: ALICE.name });
    const r = await curl(['-v', '--user', ALICE.name, '--oauth2-bearer', token, '--mail-from', ALICE.name, '--mail-rcpt', BOB.name, '-T', '/dev/null', `smtps://localhost:${smtpPort}/`]);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toContain('< 220 ');
    expect(r.stderr).toContain('< 454 4.7.0 ');
    expect(output).toContain('backend capability probe failed');
  });

  it('says once at start that tokens may name addresses of any domain', () => {
    expect(output.match(/oauth\.allowedEmailDomains is empty and there is no directory/g)).toHaveLength(1);
  });

  it('answers health checks without the metrics token', async () => {
    const health = await fetch(`http://127.0.0.1:${adminPort}/healthz`);
    expect(health.status).toBe(200);
    // The SMTP backend of this configuration does not exist: not ready, and it says which part.
    const ready = await fetch(`http://127.0.0.1:${adminPort}/readyz`);
    expect(ready.status).toBe(503);
    expect(await ready.text()).toMatch(/^imap backend: ok\nsmtp backend: not reachable yet: connect to 127\.0\.0\.1:\d+ failed: .*\nopenid provider: ok\n$/);
  });

  it('shows /metrics only with the metrics token', async () => {
    for (const authorization of [undefined, 'Bearer metrics-token-guess-000000', `Basic ${Buffer.from(`x:${METRICS_TOKEN}`).toString('base64')}`]) {
      const refused = await fetch(`http://127.0.0.1:${adminPort}/metrics`, authorization ? { headers: { authorization } } : {});
      expect(refused.status).toBe(401);
      expect(refused.headers.get('www-authenticate')).toMatch(/^Bearer /);
      expect(await refused.text()).not.toMatch(/sasl_gate_/);
    }
  });

  it('exposes Prometheus metrics of what happened', async () => {
    const response = await fetch(`http://127.0.0.1:${adminPort}/metrics`, { headers: { authorization: `Bearer ${METRICS_TOKEN}` } });
    expect(response.status).toBe(200);
    const text = await response.text();
    const value = (pattern: RegExp) => Number(pattern.exec(text)?.[1] ?? NaN);
    expect(value(/^sasl_gate_authentications_total\{listener="imap-\d+",mechanism="OAUTHBEARER",result="success",reason="ok",credential="token"\} (\d+)$/m)).toBeGreaterThanOrEqual(1);
    expect(value(/^sasl_gate_authentications_total\{listener="imap-\d+",mechanism="OAUTHBEARER",result="failure",reason="wrong_user",credential="token"\} (\d+)$/m)).toBeGreaterThanOrEqual(1);
    expect(value(/^sasl_gate_authentications_total\{listener="smtp-\d+",mechanism="OAUTHBEARER",result="temporary_failure",reason="backend_unavailable",credential="token"\} (\d+)$/m)).toBeGreaterThanOrEqual(1);
    expect(value(/^sasl_gate_connections_total\{listener="imap-\d+"\} (\d+)$/m)).toBeGreaterThanOrEqual(3);
    expect(value(/^sasl_gate_token_validation_seconds_count\{strategy="jwt",verdict="accepted"\} (\d+)$/m)).toBeGreaterThanOrEqual(1);
    expect(value(/^sasl_gate_token_cache_lookups_total\{outcome="miss"\} (\d+)$/m)).toBeGreaterThanOrEqual(1);
    expect(value(/^sasl_gate_backend_login_seconds_count\{protocol="imap",result="ok"\} (\d+)$/m)).toBeGreaterThanOrEqual(2);
    expect(value(/^sasl_gate_relayed_bytes_total\{listener="imap-\d+",direction="to_client"\} (\d+)$/m)).toBeGreaterThan(100);
    expect(text).toMatch(/^sasl_gate_connections_open\{listener="imap-\d+"\} 0$/m);
  });

  it('keeps secrets out of its output', () => {
    expect(output).not.toContain(MASTER.password);
    expect(output).not.toContain(idp.clientSecret);
    expect(output).not.toContain(METRICS_TOKEN);
    expect(output).not.toMatch(/eyJ[A-Za-z0-9_-]{20,}\./);
  });

  it('on SIGHUP serves a renewed certificate to new connections, open ones keep theirs', async () => {
    const open = tlsConnect({ host: '127.0.0.1', port: imapPort, ca: readFileSync(caPath), servername: 'localhost' });
    await new Promise<void>((resolve, reject) => open.once('secureConnect', resolve).once('error', reject));
    const renewed = await generateDevCertificate(join(dir, 'renewed'));
    copyFileSync(renewed.certPath, certPaths.cert);
    copyFileSync(renewed.keyPath, certPaths.key);
    gate.kill('SIGHUP');
    await waitFor(/"msg":"certificate reloaded"/);
    const fresh = tlsConnect({ host: '127.0.0.1', port: imapPort, ca: readFileSync(renewed.caPath), servername: 'localhost' });
    await new Promise<void>((resolve, reject) => fresh.once('secureConnect', resolve).once('error', reject));
    expect(fresh.getPeerX509Certificate()?.fingerprint256).toBe(new X509Certificate(readFileSync(renewed.certPath)).fingerprint256);
    fresh.destroy();
    // The connection opened before the renewal is still served.
    const greeting = await new Promise<string>((resolve) => open.once('data', (c: Buffer) => resolve(c.toString())));
    expect(greeting).toMatch(/^\* OK /);
    open.destroy();
  });

  it('stops cleanly on SIGTERM', async () => {
    const exited = new Promise<number | null>((resolve) => gate.once('exit', (code) => resolve(code)));
    gate.kill('SIGTERM');
    expect(await exited).toBe(0);
    expect(output).toContain('"msg":"sasl-gate stopped"');
  });
});

describe('sasl-gate check-token', () => {
  function checkToken(token: string) {
    return new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) => {
      const child = spawn(process.execPath, [BIN, 'check-token', '--config', join(dir, 'sasl-gate.yaml')], {
        env: { ...process.env, NODE_EXTRA_CA_CERTS: caPath },
      });
      let stdout = '';
      let stderr = '';
      child.stdout.on('data', (c: Buffer) => (stdout += c.toString()));
      child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
      child.on('exit', (code) => resolve({ code, stdout, stderr }));
      child.stdin.end(`${token}\n`);
    });
  }

  it('says which strategy accepted a token, for whom and until when, without printing it', async () => {
    const token = await idp.mintAccessToken({ user: ALICE.name });
    const r = await checkToken(token);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^jwt +accepted$/m);
    expect(r.stdout).toMatch(/^identity +alice@example\.test \(claim email\)$/m);
    expect(r.stdout).toMatch(/^expires +\d{4}-\d\d-\d\dT.* \(in \d/m);
    expect(r.stdout + r.stderr).not.toContain(token);
  });

  it('passes an opaque token on to introspection', async () => {
    const token = await idp.mintAccessToken({ user: BOB.name, format: 'opaque' });
    const r = await checkToken(token);
    expect(r.stdout).toMatch(/^jwt +skipped: not a JWT$/m);
    expect(r.stdout).toMatch(/^introspection +accepted$/m);
    expect(r.stdout).toMatch(/^identity +bob@example\.test/m);
    expect(r.code).toBe(0);
  });

  it('gives the precise reason of a rejection', async () => {
    const now = Math.floor(Date.now() / 1000);
    const expired = await idp.signToken({ ...idp.claimsFor(ALICE.name), iat: now - 7200, exp: now - 3600 });
    const r = await checkToken(expired);
    expect(r.code).toBe(1);
    expect(r.stdout).toMatch(/^jwt +rejected \(expired\): token expired$/m);
    expect(r.stdout).toMatch(/^rejected +expired: /m);
    const foreign = await idp.mintAccessToken({ user: ALICE.name, audience: 'https://calendar.example.test' });
    expect((await checkToken(foreign)).stdout).toMatch(/^rejected +wrong_audience: /m);
  });
});

describe('sasl-gate check-config', () => {
  it('prints the effective configuration with secrets masked', async () => {
    const r = await run(process.execPath, [BIN, 'check-config', '--config', join(dir, 'sasl-gate.yaml')]);
    const effective = parseYaml(r.stdout) as { master: { password: string }; oauth: { clientSecret: string; cache: { maxTtlSeconds: number } } };
    expect(effective.master.password).toBe('********');
    expect(effective.oauth.clientSecret).toBe('********');
    expect(effective.oauth.cache.maxTtlSeconds).toBe(300);
    expect(r.stdout).not.toContain(MASTER.password);
    expect(r.stderr).toContain('configuration is valid');
  });

  it('lists every problem with its key', async () => {
    const file = join(dir, 'many-problems.yaml');
    writeFileSync(
      file,
      'listeners:\n  - { protocol: imap, bind: "nowhere" }\nbackends:\n  imap: { host: 127.0.0.1, port: 0 }\nmaster: { user: gate }\noauth: { issuer: "https://idp.example.com", audiences: [mail] }\n',
    );
    const result = await run(process.execPath, [BIN, 'check-config', '--config', file]).then(
      () => ({ code: 0, stderr: '' }),
      (e: { code: number; stderr: string }) => e,
    );
    expect(result.code).toBe(1);
    for (const key of ['listeners[0].bind', 'backends.imap.port', 'master.password', 'oauth.audiences: unknown key']) {
      expect(result.stderr).toContain(key);
    }
  });
});

describe('sasl-gate with a bad configuration', () => {
  it.each([
    ['a bad port', 'listeners:\n  - { protocol: imap, bind: "127.0.0.1:http" }\n', 'listeners[0].bind'],
    ['an issuer over plain http', 'oauth: { issuer: "http://idp.example.com", audience: [mail] }\n', 'oauth.issuer'],
    ['no master password', 'master: { user: gate }\n', 'master.password'],
    ['no certificate and no tls.development', 'tls: { devCertDir: certs }\n', 'tls.cert: no certificate'],
    ['a bind without a host', 'listeners:\n  - { protocol: imap, bind: ":1993" }\n', 'listeners[0].bind: ":1993" names no host: write "host:port"'],
    ['a socketmap on every interface without allowFrom', 'directory: { source: static, static: { file: x }, socketmap: { bind: "0.0.0.0:7777" } }\n', 'directory.socketmap.allowFrom'],
  ])('refuses to start with %s and names the key', async (_name, fragment, key) => {
    const base = {
      listeners: 'listeners:\n  - { protocol: imap, bind: "127.0.0.1:0" }\n',
      tls: `tls: { development: true, devCertDir: ${join(dir, 'bad-certs')} }\n`,
      backends: 'backends:\n  imap: { host: 127.0.0.1, port: 143 }\n',
      master: 'master: { user: gate, password: pw }\n',
      oauth: 'oauth: { issuer: "https://idp.example.com", audience: [mail] }\n',
    };
    const section = fragment.split(':')[0] as keyof typeof base;
    const text = Object.entries(base).map(([k, v]) => (k === section ? fragment : v)).join('') + (section in base ? '' : fragment);
    const file = join(dir, `bad-${key}.yaml`);
    writeFileSync(file, text);
    const result = await run(process.execPath, [BIN, 'serve', '--config', file]).then(
      () => ({ code: 0, stderr: '' }),
      (e: { code: number; stderr: string }) => e,
    );
    expect(result.code).toBe(1);
    expect(result.stderr).toContain(key);
  });
});

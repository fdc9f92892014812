/**
 * `doctor` against a real Dovecot, Postfix and OpenID provider: a good configuration passes every
 * check (the master login included, for the token's user), and each broken piece (master password,
 * issuer, certificate, token, Postfix's XCLIENT trust) fails its own line with a hint, quickly,
 * without ever printing the token or a password.
 */
import 'reflect-metadata';
import * as x509 from '@peculiar/x509';
import { KeyObject, webcrypto } from 'node:crypto';
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig, type GateConfig } from '../../src/config/load.js';
import { freePort } from '../../tools/ports.js';
import { startPostfix, type PostfixInstance } from '../../tools/postfix.js';
import { runDoctor } from '../../src/doctor.js';
import { generateDevCertificate } from '../../src/tls/devcert.js';
import { secret } from '../support/evidence.js';
import { startRawIntrospection } from '../support/raw-introspection.js';
import { MASTER, USERS, startStack, type Stack } from '../support/stack.js';

const ALICE = USERS[0]!;
const BOB = USERS[1]!;
const BIN = join(import.meta.dirname, '..', '..', 'bin', 'sasl-gate.js');
const WRONG_MASTER_PASSWORD = secret('not-the-master-Pa55', 'wrong master password');
const crypto = webcrypto as unknown as Crypto;
const DAY_MS = 24 * 3600 * 1000;

let stack: Stack;
let dir: string;
let aliceToken: string;
/** Everything doctor printed in this file, for the secret scan at the end. */
const printed: string[] = [];
const tokens: string[] = [];

interface Overrides {
  oauth?: Record<string, unknown>;
  master?: Record<string, unknown>;
  tls?: Record<string, unknown>;
  imap?: Record<string, unknown>;
  smtp?: Record<string, unknown>;
}

let configCounter = 0;
/** A configuration for the stack's services, written as YAML and read by the same loader users use. */
function configFor(overrides: Overrides = {}): GateConfig {
  const yaml = {
    listeners: [
      { protocol: 'imap', bind: '127.0.0.1:0' },
      { protocol: 'smtp', bind: '127.0.0.1:0' },
    ],
    hostname: 'gate.example.test',
    tls: { cert: stack.tlsPaths.cert, key: stack.tlsPaths.key, ...overrides.tls },
    backends: {
      imap: { host: stack.dovecot.host, port: stack.dovecot.imapPort, connectTimeoutSeconds: 3, responseTimeoutSeconds: 10, ...overrides.imap },
      smtp: {
        host: stack.postfix!.host,
        port: stack.postfix!.submissionPort,
        login: 'xclient',
        connectTimeoutSeconds: 3,
        responseTimeoutSeconds: 10,
        ...overrides.smtp,
      },
    },
    master: { ...MASTER, ...overrides.master },
    oauth: {
      issuer: stack.idp.issuer,
      audience: ['mail'],
      validation: ['jwt'],
      clientId: stack.idp.clientId,
      clientSecret: stack.idp.clientSecret,
      requestTimeoutSeconds: 2,
      allowedEmailDomains: ['example.test'],
      ...overrides.oauth,
    },
  };
  configCounter += 1;
  const path = join(dir, `doctor-${configCounter}.yaml`);
  writeFileSync(path, stringify(yaml));
  return loadConfig({ file: path, env: {} }).config;
}

async function doctor(config: GateConfig, token?: string, user?: string): Promise<{ code: number; lines: string[]; ms: number }> {
  const lines: string[] = [];
  const started = Date.now();
  const code = await runDoctor(config, {
    ...(token === undefined ? {} : { token }),
    ...(user === undefined ? {} : { user }),
    out: (line) => lines.push(line),
  });
  printed.push(...lines);
  return { code, lines, ms: Date.now() - started };
}

/** The line of a check, by its name. */
function line(lines: string[], name: string): string {
  const found = lines.find((l) => l.slice(6).startsWith(`${name} `));
  if (!found) throw new Error(`no "${name}" line in:\n${lines.join('\n')}`);
  return found;
}

/** The last line of Dovecot's log recording a login of `user`. */
function lastDovecotLogin(log: string, user: string): string | undefined {
  return log.split('\n').filter((l) => l.includes(`Login: user=<${user}>`)).at(-1);
}

async function dovecotLogins(user: string): Promise<number> {
  const log = await stack.dovecot.readLog();
  return log.split('\n').filter((l) => l.includes(`Login: user=<${user}>`)).length;
}

/** A self-signed certificate that expired yesterday, and its key. */
async function expiredCertificate(): Promise<{ cert: string; key: string }> {
  const algorithm = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' };
  const keys = (await crypto.subtle.generateKey(algorithm, true, ['sign', 'verify'])) as CryptoKeyPair;
  const cert = await x509.X509CertificateGenerator.createSelfSigned(
    {
      serialNumber: '4a01',
      name: 'CN=expired.example.test',
      notBefore: new Date(Date.now() - 90 * DAY_MS),
      notAfter: new Date(Date.now() - DAY_MS),
      keys,
      signingAlgorithm: algorithm,
      extensions: [new x509.SubjectAlternativeNameExtension([{ type: 'dns', value: 'expired.example.test' }])],
    },
    crypto,
  );
  const certPath = join(dir, 'expired.crt');
  const keyPath = join(dir, 'expired.key');
  writeFileSync(certPath, cert.toString('pem'));
  writeFileSync(keyPath, KeyObject.from(keys.privateKey).export({ type: 'pkcs8', format: 'pem' }) as string);
  return { cert: certPath, key: keyPath };
}

/** A TCP server that accepts connections and never says a word. */
async function silentServer(): Promise<{ server: Server; port: number; sockets: Set<Socket> }> {
  const sockets = new Set<Socket>();
  const server = createServer((socket) => {
    sockets.add(socket);
    socket.on('error', () => undefined);
    socket.on('close', () => sockets.delete(socket));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { server, port: (server.address() as { port: number }).port, sockets };
}

/** An SMTP server that greets and answers EHLO like a Postfix that does not trust this host. */
async function untrustingSmtp(): Promise<{ server: Server; port: number }> {
  const server = createServer((socket) => {
    socket.on('error', () => undefined);
    socket.write('220 smtp.example.test ESMTP\r\n');
    let buffer = '';
    socket.on('data', (chunk: Buffer) => {
      buffer += chunk.toString('latin1');
      for (let end = buffer.indexOf('\r\n'); end >= 0; end = buffer.indexOf('\r\n')) {
        const command = buffer.slice(0, end).toUpperCase();
        buffer = buffer.slice(end + 2);
        if (command.startsWith('EHLO')) socket.write('250-smtp.example.test\r\n250-PIPELINING\r\n250-AUTH PLAIN LOGIN\r\n250 8BITMIME\r\n');
        else if (command.startsWith('QUIT')) socket.end('221 2.0.0 Bye\r\n');
        else socket.write('502 5.5.2 Error: command not recognized\r\n');
      }
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { server, port: (server.address() as { port: number }).port };
}

function close(server: Server): Promise<void> {
  return new Promise((resolve) => server.close(() => resolve()));
}

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'sasl-gate-doctor-'));
  stack = await startStack({ smtp: { login: 'xclient' } });
  aliceToken = await stack.idp.mintAccessToken({ user: ALICE.name });
  tokens.push(aliceToken);
});

afterAll(async () => {
  await stack?.close();
});

describe('a good configuration', () => {
  it('passes every check, the master login included for the token user', async () => {
    const before = await dovecotLogins(ALICE.name);
    const { code, lines } = await doctor(configFor(), aliceToken);
    expect(code, lines.join('\n')).toBe(0);
    expect(lines.map((l) => l.slice(0, 4))).toEqual(lines.map(() => 'PASS'));
    expect(lines.map((l) => l.slice(6, 21).trim())).toEqual([
      'discovery',
      'jwks',
      'identity',
      'imap backend',
      'imap master',
      'smtp backend',
      'smtp xclient',
      'certificate',
      'token',
    ]);
    expect(line(lines, 'discovery')).toContain(`${stack.idp.issuer} (issuer matches; jwks_uri found)`);
    expect(line(lines, 'jwks')).toMatch(/1 signing key \(RS256\), allowed by oauth\.algorithms/);
    expect(line(lines, 'imap backend')).toMatch(new RegExp(`${stack.dovecot.imapPort} answers; capabilities IMAP4rev1 .*AUTH=PLAIN`));
    expect(line(lines, 'imap master')).toContain(`login as ${ALICE.name} (master user ${MASTER.user}) accepted`);
    expect(line(lines, 'smtp backend')).toContain('XCLIENT offered (LOGIN, ADDR)');
    expect(line(lines, 'smtp xclient')).toContain(`XCLIENT LOGIN=${ALICE.name} accepted`);
    expect(line(lines, 'certificate')).toMatch(/CN=localhost, SAN localhost 127\.0\.0\.1 .*valid until \d{4}-\d\d-\d\d \(36[45] days\), key matches/);
    expect(line(lines, 'token')).toMatch(new RegExp(`accepted by jwt: ${ALICE.name} \\(claim email\\), expires in (59|60) min`));
    // Dovecot really saw the master login for alice, announced as the doctor's session.
    await expect.poll(() => dovecotLogins(ALICE.name)).toBe(before + 1);
  });

  it('without a token, warns that the master login needs a user and still exits 0', async () => {
    const { code, lines } = await doctor(configFor());
    expect(code, lines.join('\n')).toBe(0);
    expect(line(lines, 'imap master')).toMatch(
      /^WARN  imap master    not tried: no user was named and no token given, so there is no user to log in as .*Dovecot refuses the master user logging in as itself.* — name a mailbox \(sasl-gate doctor --config FILE --user NAME\), or pipe a token in \(< token\), to try a master login as sasl-gate-master for that user/,
    );
    expect(lines.some((l) => l.startsWith('FAIL'))).toBe(false);
    expect(lines.some((l) => l.includes('  token '))).toBe(false);
    expect(lines.some((l) => l.includes('smtp xclient'))).toBe(false);
  });

  it('tries AUTH PLAIN with the master credentials when Postfix is reached with login: master', async () => {
    const { code, lines } = await doctor(configFor({ smtp: { login: 'master' } }), aliceToken);
    expect(code, lines.join('\n')).toBe(0);
    expect(line(lines, 'smtp backend')).toMatch(/^PASS .*AUTH PLAIN offered; XCLIENT ADDR offered/);
    expect(line(lines, 'smtp master')).toBe(`PASS  smtp master    AUTH PLAIN as ${ALICE.name} (master user ${MASTER.user}) accepted`);
  });
});

describe('doctor --user: the master login without a token', () => {
  it('with the right master password, logs in as the user over IMAP and SMTP, and Dovecot logs that login', async () => {
    const before = await dovecotLogins(ALICE.name);
    const { code, lines } = await doctor(configFor({ smtp: { login: 'master' } }), undefined, ALICE.name);
    expect(code, lines.join('\n')).toBe(0);
    expect(line(lines, 'imap master')).toBe(`PASS  imap master    login as ${ALICE.name} (master user ${MASTER.user}) accepted`);
    expect(line(lines, 'smtp master')).toBe(`PASS  smtp master    AUTH PLAIN as ${ALICE.name} (master user ${MASTER.user}) accepted`);
    expect(lines.some((l) => l.includes('  token '))).toBe(false);
    await expect.poll(() => dovecotLogins(ALICE.name)).toBe(before + 1);
    // The login Dovecot recorded is the doctor's own session, announced with ID.
    expect(lastDovecotLogin(await stack.dovecot.readLog(), ALICE.name)).toMatch(/method=PLAIN, .*session=<doctor-[0-9a-f]{12}>/);
  });

  it('with a wrong master password, fails both logins with the hint, and Dovecot refused them', async () => {
    const before = await stack.dovecot.readLog();
    const { code, lines } = await doctor(
      configFor({ master: { password: WRONG_MASTER_PASSWORD }, smtp: { login: 'master' } }),
      undefined,
      BOB.name,
    );
    expect(code).toBe(1);
    expect(line(lines, 'imap master')).toMatch(
      new RegExp(`^FAIL  imap master    login as ${BOB.name} \\(master user ${MASTER.user}\\) refused: NO \\[AUTHENTICATIONFAILED\\].* — check master\\.user / master\\.password`),
    );
    expect(line(lines, 'smtp master')).toMatch(/^FAIL  smtp master    AUTH PLAIN as bob@example\.test .*refused: 535 5\.7\.8 .* — check master\.user \/ master\.password/);
    // Dovecot's own log: failed authentications for bob through the master user, no login.
    let added = '';
    await expect
      .poll(async () => {
        added = (await stack.dovecot.readLog()).slice(before.length);
        return /auth failed|password mismatch|Authentication failure/i.test(added);
      })
      .toBe(true);
    expect(added).not.toContain(`Login: user=<${BOB.name}>`);
    expect(lines.join('\n')).not.toContain(WRONG_MASTER_PASSWORD);
  });

  it('runs from the command line, with --user and no token', async () => {
    const file = join(dir, `doctor-cli.yaml`);
    configFor();
    writeFileSync(file, readFileSync(join(dir, `doctor-${configCounter}.yaml`), 'utf8'));
    const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('SASL_GATE_')));
    const result = await new Promise<{ code: number; stdout: string }>((resolve) => {
      const child = execFile(process.execPath, [BIN, 'doctor', '--config', file, '--user', ALICE.name], { env, timeout: 30_000 }, (err, stdout) =>
        resolve({ code: err ? (typeof err.code === 'number' ? err.code : 1) : 0, stdout }),
      );
      child.stdin?.end();
    });
    printed.push(...result.stdout.split('\n'));
    expect(result.code, result.stdout).toBe(0);
    expect(result.stdout).toMatch(new RegExp(`^PASS  imap master    login as ${ALICE.name} \\(master user ${MASTER.user}\\) accepted$`, 'm'));
    expect(result.stdout).toMatch(new RegExp(`^PASS  smtp xclient   XCLIENT LOGIN=${ALICE.name} accepted$`, 'm'));
  });
});

describe("Postfix's XCLIENT trust with login: master", () => {
  let untrusting: PostfixInstance;

  beforeAll(async () => {
    // The recommended set-up: sasl-gate in no smtpd_authorized_xclient_hosts, the client's address by PROXY v2.
    untrusting = await startPostfix({ dovecot: stack.dovecot, domain: 'example.test', xclientHosts: [], proxyProtocol: true });
  });

  afterAll(async () => {
    await untrusting?.stop();
  });

  it('warns, with the fix, when Postfix offers XCLIENT to sasl-gate', async () => {
    const { code, lines } = await doctor(configFor({ smtp: { login: 'master' } }), aliceToken);
    expect(code, lines.join('\n')).toBe(0);
    expect(line(lines, 'smtp xclient')).toMatch(
      new RegExp(
        `^WARN  smtp xclient   127\\.0\\.0\\.1:${stack.postfix!.submissionPort} offers XCLIENT \\(NAME ADDR .*LOGIN.*\\) to this host, which login: master does not need — ` +
          "take sasl-gate's address out of smtpd_authorized_xclient_hosts for that port, and pass the client's address with backends\\.smtp\\.proxyProtocol: true and smtpd_upstream_proxy_protocol = haproxy instead$",
      ),
    );
  });

  it('says nothing of XCLIENT when Postfix does not trust sasl-gate with it, with or without PROXY v2', async () => {
    const plainPort = await doctor(
      configFor({ smtp: { login: 'master', host: untrusting.host, port: untrusting.submissionPort } }),
      aliceToken,
    );
    expect(plainPort.code, plainPort.lines.join('\n')).toBe(0);
    expect(line(plainPort.lines, 'smtp backend')).toMatch(/^PASS .*AUTH PLAIN offered; no XCLIENT \(Postfix sees sasl-gate as the client\)$/);
    expect(plainPort.lines.some((l) => l.includes('smtp xclient'))).toBe(false);

    const proxied = await doctor(
      configFor({ smtp: { login: 'master', host: untrusting.host, port: untrusting.proxySubmissionPort!, proxyProtocol: true } }),
      aliceToken,
    );
    expect(proxied.code, proxied.lines.join('\n')).toBe(0);
    expect(line(proxied.lines, 'smtp backend')).toMatch(/^PASS .*AUTH PLAIN offered; no XCLIENT \(the PROXY header names the client\)$/);
    expect(line(proxied.lines, 'smtp master')).toBe(`PASS  smtp master    AUTH PLAIN as ${ALICE.name} (master user ${MASTER.user}) accepted`);
    expect(proxied.lines.some((l) => l.includes('smtp xclient'))).toBe(false);
  });
});

describe('a broken configuration', () => {
  it('a wrong master password fails the master logins with a hint', async () => {
    const config = configFor({ master: { password: WRONG_MASTER_PASSWORD }, smtp: { login: 'master' } });
    const { code, lines } = await doctor(config, aliceToken);
    expect(code).toBe(1);
    expect(line(lines, 'imap backend')).toMatch(/^PASS/);
    expect(line(lines, 'imap master')).toMatch(
      new RegExp(`^FAIL  imap master    login as ${ALICE.name} \\(master user ${MASTER.user}\\) refused: NO \\[AUTHENTICATIONFAILED\\].* — check master\\.user / master\\.password and Dovecot's master passdb`),
    );
    expect(line(lines, 'imap master')).toContain('login_trusted_networks must contain this host');
    expect(line(lines, 'smtp master')).toMatch(/^FAIL  smtp master    AUTH PLAIN as .* refused: 535 5\.7\.8 .* — check master\.user \/ master\.password/);
    expect(line(lines, 'token')).toMatch(/^PASS/);
  });

  it('a dead issuer port fails discovery at once and skips what depends on it', async () => {
    const port = await freePort();
    const { code, lines, ms } = await doctor(configFor({ oauth: { issuer: `http://127.0.0.1:${port}` } }), aliceToken);
    expect(code).toBe(1);
    expect(ms).toBeLessThan(5_000);
    expect(line(lines, 'discovery')).toMatch(
      new RegExp(`^FAIL  discovery      GET http://127\\.0\\.0\\.1:${port}/\\.well-known/openid-configuration: .*ECONNREFUSED.* — nothing listens there`),
    );
    expect(line(lines, 'jwks')).toMatch(/^WARN  jwks +not checked: discovery failed/);
    expect(line(lines, 'token')).toMatch(/^FAIL  token +not checked: discovery failed/);
    // Without an accepted token there is no user for the master login; the backends are still checked.
    expect(line(lines, 'imap backend')).toMatch(/^PASS/);
    expect(line(lines, 'imap master')).toMatch(/^WARN .*not tried: the token could not be checked/);
  });

  it('an issuer spelled differently from what the provider calls itself fails discovery and names the right one', async () => {
    const announced = stack.idp.issuer;
    const spelled = announced.replace('127.0.0.1', 'localhost');
    const { code, lines } = await doctor(configFor({ oauth: { issuer: spelled } }));
    expect(code).toBe(1);
    expect(line(lines, 'discovery')).toMatch(/^FAIL  discovery      GET http:\/\/localhost:\d+\/\.well-known\/openid-configuration: .*issuer does not match/);
    expect(line(lines, 'discovery')).toContain(`— the provider calls itself ${announced}: set oauth.issuer to exactly that`);
  });

  it('an issuer that never answers fails discovery after oauth.requestTimeoutSeconds', async () => {
    const silent = await silentServer();
    try {
      const { code, lines, ms } = await doctor(configFor({ oauth: { issuer: `http://127.0.0.1:${silent.port}` } }));
      expect(code).toBe(1);
      expect(ms).toBeGreaterThanOrEqual(1_900);
      expect(ms).toBeLessThan(8_000);
      expect(line(lines, 'discovery')).toMatch(/^FAIL  discovery .* — no answer within oauth\.requestTimeoutSeconds \(2 s\)/);
    } finally {
      for (const s of silent.sockets) s.destroy();
      await close(silent.server);
    }
  });

  it('a backend that accepts and stays silent fails within its response timeout', async () => {
    const silent = await silentServer();
    try {
      const { code, lines, ms } = await doctor(configFor({ imap: { host: '127.0.0.1', port: silent.port, responseTimeoutSeconds: 1 } }));
      expect(code).toBe(1);
      expect(ms).toBeLessThan(8_000);
      expect(line(lines, 'imap backend')).toMatch(/^FAIL  imap backend   127\.0\.0\.1:\d+: backend did not answer in time — Dovecot did not answer within backends\.imap\.responseTimeoutSeconds/);
    } finally {
      for (const s of silent.sockets) s.destroy();
      await close(silent.server);
    }
  });

  it('a Postfix that does not offer XCLIENT to sasl-gate fails with the setting to change', async () => {
    const smtp = await untrustingSmtp();
    try {
      const { code, lines } = await doctor(configFor({ smtp: { host: '127.0.0.1', port: smtp.port } }), aliceToken);
      expect(code).toBe(1);
      expect(line(lines, 'smtp backend')).toMatch(
        /^FAIL  smtp backend   127\.0\.0\.1:\d+ answers \(PIPELINING AUTH 8BITMIME\), but XCLIENT not offered to this host — add sasl-gate's address to smtpd_authorized_xclient_hosts/,
      );
    } finally {
      await close(smtp.server);
    }
  });

  it('an expired certificate fails; one about to expire warns; a foreign key fails', async () => {
    const expired = await expiredCertificate();
    let result = await doctor(configFor({ tls: expired }));
    expect(result.code).toBe(1);
    expect(line(result.lines, 'certificate')).toMatch(
      /^FAIL  certificate    CN=expired\.example\.test, SAN expired\.example\.test, expired on \d{4}-\d\d-\d\d \(1 day ago\) — renew it/,
    );

    const soon = await generateDevCertificate(join(dir, 'soon'), { validityDays: 5 });
    result = await doctor(configFor({ tls: { cert: soon.certPath, key: soon.keyPath } }));
    expect(result.code, result.lines.join('\n')).toBe(0);
    expect(line(result.lines, 'certificate')).toMatch(/^WARN  certificate    CN=localhost, .*valid until \d{4}-\d\d-\d\d \(4 days\), key matches — renew it soon/);

    result = await doctor(configFor({ tls: { cert: soon.certPath, key: expired.key } }));
    expect(result.code).toBe(1);
    expect(line(result.lines, 'certificate')).toMatch(/^FAIL .*expired\.key is not the key of this certificate — tls\.cert and tls\.key must belong together/);

    writeFileSync(join(dir, 'garbage.crt'), 'not a certificate\n');
    result = await doctor(configFor({ tls: { cert: join(dir, 'garbage.crt'), key: soon.keyPath } }));
    expect(result.code).toBe(1);
    expect(line(result.lines, 'certificate')).toMatch(/^FAIL .*garbage\.crt is not a PEM certificate/);
  });

  it('says when the certificate is a development one, or would be', async () => {
    const devDir = join(dir, 'devcerts');
    let result = await doctor(configFor({ tls: { cert: undefined, key: undefined, development: true, devCertDir: devDir } }));
    expect(result.code).toBe(0);
    expect(line(result.lines, 'certificate')).toMatch(/^WARN .*serve will create a development certificate in .*devcerts that clients do not trust — set tls\.cert and tls\.key/);
    await generateDevCertificate(devDir);
    result = await doctor(configFor({ tls: { cert: undefined, key: undefined, development: true, devCertDir: devDir } }));
    expect(result.code).toBe(0);
    expect(line(result.lines, 'certificate')).toMatch(/^WARN  certificate    development certificate .*server\.crt \(clients do not trust it\): CN=localhost.*key matches — set tls\.cert and tls\.key/);
  });

  it('warns, with the fix, when tokens may name addresses of any domain', async () => {
    const result = await doctor(configFor({ oauth: { allowedEmailDomains: [] } }), aliceToken);
    expect(result.code, result.lines.join('\n')).toBe(0);
    expect(line(result.lines, 'identity')).toMatch(
      /^WARN  identity       users from email, addresses of any domain: .* — set oauth\.allowedEmailDomains to the domains this server hosts/,
    );
    expect(line((await doctor(configFor())).lines, 'identity')).toMatch(/^PASS  identity       users from email, addresses of example\.test only \(oauth\.allowedEmailDomains\)/);
  });

  it('checks the introspection credentials and names the encoding case when the provider says invalid_client', async () => {
    const introspecting = { validation: ['jwt', 'introspection'] };
    let result = await doctor(configFor({ oauth: introspecting }));
    expect(line(result.lines, 'introspection')).toMatch(/^PASS  introspection  http:.* accepts sasl-gate's client credentials \(client_secret_basic\)/);

    const wrong = secret('wrong-client-secret-0123456789', 'wrong client secret');
    tokens.push(wrong);
    result = await doctor(configFor({ oauth: { ...introspecting, clientSecret: wrong } }));
    expect(result.code).toBe(1);
    expect(line(result.lines, 'introspection')).toMatch(
      /^FAIL  introspection  POST .*invalid_client.* — the provider refused sasl-gate's client credentials \(invalid_client\): check oauth\.clientId and oauth\.clientSecret .*so the values themselves are wrong/,
    );

    // A provider that reads the Basic credentials raw, as Authentik does, and a secret that needs encoding.
    const special = secret('raw/secret+with=chars-0123456789', 'client secret with reserved characters');
    tokens.push(special);
    const raw = await startRawIntrospection(stack.idp, stack.idp.clientId, special);
    try {
      result = await doctor(configFor({ oauth: { ...introspecting, clientSecret: special, introspectionEndpoint: raw.url } }));
      expect(result.code).toBe(1);
      expect(line(result.lines, 'introspection')).toMatch(
        /— the provider refused .*oauth\.clientSecret contains characters other than letters, digits and - \. _ ~: .*percent-encoded .*Authentik.*client_secret_post/,
      );
      expect(raw.seen.at(-1)?.clientSecret).toBe(encodeURIComponent(special));
    } finally {
      await raw.close();
    }
  });

  it('a bad token fails the token check with the reason and a hint', async () => {
    const config = configFor();
    const foreign = await stack.idp.signToken(stack.idp.claimsFor(ALICE.name), { key: 'foreign' });
    const now = Math.floor(Date.now() / 1000);
    const expired = await stack.idp.signToken({ ...stack.idp.claimsFor(ALICE.name), iat: now - 7200, exp: now - 3600 });
    const otherAudience = await stack.idp.mintAccessToken({ user: ALICE.name, audience: 'another-client' });
    tokens.push(foreign, expired, otherAudience);

    let result = await doctor(config, foreign);
    expect(result.code).toBe(1);
    expect(line(result.lines, 'token')).toMatch(/^FAIL  token          rejected by jwt \(unknown_key\): token signed by a key the issuer does not publish — /);
    expect(line(result.lines, 'imap master')).toMatch(
      /^WARN .*not tried: the token was not accepted, .* — see the token line: once a token passes, doctor tries a master login as sasl-gate-master for its user/,
    );

    result = await doctor(config, expired);
    expect(line(result.lines, 'token')).toMatch(/^FAIL  token          rejected by jwt \(expired\): token expired — get a fresh token/);

    result = await doctor(config, otherAudience);
    expect(line(result.lines, 'token')).toMatch(/^FAIL  token          rejected by jwt \(wrong_audience\): .* — the token was issued for another client: its aud or azp must be one of mail/);

    result = await doctor(config, 'not-a-token-at-all');
    expect(result.code).toBe(1);
    expect(line(result.lines, 'token')).toMatch(
      /^FAIL  token          rejected \(bad_token\): no strategy could judge the token \(jwt: not a JWT\) — is it an access token/,
    );
  });

  it('never prints a token, a password or the client secret', () => {
    expect(printed.length).toBeGreaterThan(40);
    const text = printed.join('\n');
    for (const value of [...tokens, MASTER.password, WRONG_MASTER_PASSWORD, stack.idp.clientSecret, ...USERS.map((u) => u.password)]) {
      expect(text.includes(value)).toBe(false);
      const signature = value.split('.')[2];
      if (signature) expect(text.includes(signature)).toBe(false);
    }
  });
});

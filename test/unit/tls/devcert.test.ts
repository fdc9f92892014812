import { execFile, execFileSync } from 'node:child_process';
import { X509Certificate, createPrivateKey, generateKeyPairSync } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import * as https from 'node:https';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as tls from 'node:tls';
import { promisify } from 'node:util';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import {
  DEV_CA_COMMON_NAME,
  devCertificateNames,
  ensureDevCertificate,
  generateDevCertificate,
} from '../../../src/tls/devcert.js';

const execFileAsync = promisify(execFile);

function hasTool(name: string, args: string[]): boolean {
  try {
    execFileSync(name, args, { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}
const hasOpenssl = hasTool('openssl', ['version']);
const hasCurl = hasTool('curl', ['--version']);

let dir: string;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'sasl-gate-devcert-'));
});
afterEach(() => {
  rmSync(dir, { recursive: true, force: true });
});

const read = (path: string) => readFileSync(path, 'utf8');

describe('devCertificateNames', () => {
  it.each([
    [undefined, ['localhost', '127.0.0.1', '::1']],
    [['mail.example.test', '[::1]', 'LOCALHOST', '10.0.0.5'], ['localhost', '127.0.0.1', '::1', 'mail.example.test', '10.0.0.5']],
    [['*.example.test'], ['localhost', '127.0.0.1', '::1', '*.example.test']],
  ])('%j -> %j', (input, expected) => {
    expect(devCertificateNames(input)).toEqual(expected);
  });

  it.each([['bad name'], ['a/b'], ['-lead.example']])('rejects %j', (name) => {
    expect(() => devCertificateNames([name])).toThrow(/not a host name/);
  });
});

describe('generateDevCertificate', () => {
  it('writes a CA and an ECDSA P-256 server certificate for the loopback names', async () => {
    const out = await generateDevCertificate(join(dir, 'nested', 'certs'), { hostnames: ['mail.example.test'] });
    expect(out.generated).toBe(true);
    expect(out.certPath).toBe(join(dir, 'nested', 'certs', 'server.crt'));
    expect(out.caPath).toBe(join(dir, 'nested', 'certs', 'ca.crt'));

    const cert = new X509Certificate(read(out.certPath));
    const ca = new X509Certificate(read(out.caPath));
    expect(ca.ca).toBe(true);
    expect(ca.subject).toContain(`CN=${DEV_CA_COMMON_NAME}`);
    expect(cert.ca).toBe(false);
    expect(cert.checkIssued(ca)).toBe(true);
    expect(cert.verify(ca.publicKey)).toBe(true);
    expect(cert.publicKey.asymmetricKeyDetails?.namedCurve).toBe('prime256v1');
    expect(cert.checkPrivateKey(createPrivateKey(read(out.keyPath)))).toBe(true);
    expect(cert.subjectAltName).toBe(
      'DNS:localhost, IP Address:127.0.0.1, IP Address:0:0:0:0:0:0:0:1, DNS:mail.example.test',
    );
    expect(cert.keyUsage).toEqual(['1.3.6.1.5.5.7.3.1']);
    const days = (Date.parse(cert.validTo) - Date.now()) / 86_400_000;
    expect(days).toBeGreaterThan(364);
    expect(days).toBeLessThan(366);

    for (const key of [out.keyPath, join(dir, 'nested', 'certs', 'ca.key')]) {
      expect(statSync(key).mode & 0o777).toBe(0o600);
    }
  });

  it('writes IPv6 addresses of every form as 16-byte SAN entries', async () => {
    const out = await generateDevCertificate(dir, { hostnames: ['fe80::1', '[2001:db8::a:b]', '::ffff:10.0.0.1', '192.0.2.7'] });
    const cert = new X509Certificate(read(out.certPath));
    expect(cert.subjectAltName).toBe(
      'DNS:localhost, IP Address:127.0.0.1, IP Address:0:0:0:0:0:0:0:1, IP Address:FE80:0:0:0:0:0:0:1, ' +
        'IP Address:2001:DB8:0:0:0:0:A:B, IP Address:0:0:0:0:0:FFFF:A00:1, IP Address:192.0.2.7',
    );
    expect(cert.checkIP('2001:db8::a:b')).toBe('2001:db8::a:b');
    expect(cert.checkIP('192.0.2.8')).toBeUndefined();
  });

  it.skipIf(!hasOpenssl)('carries the extensions a strict verifier expects: constraints, key usages, key identifiers', async () => {
    const out = await generateDevCertificate(dir);
    const extensions = (file: string) =>
      execFileSync('openssl', [
        'x509', '-in', file, '-noout', '-subject', '-issuer',
        '-ext', 'basicConstraints,keyUsage,extendedKeyUsage,subjectKeyIdentifier,authorityKeyIdentifier',
      ], { encoding: 'utf8' });
    const ca = extensions(out.caPath);
    const server = extensions(out.certPath);
    expect(ca).toMatch(/subject=CN\s?=\s?sasl-gate development CA, O\s?=\s?sasl-gate development/);
    expect(ca).toMatch(/Basic Constraints: critical\n\s+CA:TRUE, pathlen:0/);
    expect(ca).toMatch(/Key Usage: critical\n\s+Certificate Sign, CRL Sign/);
    expect(server).toMatch(/subject=CN\s?=\s?localhost, O\s?=\s?sasl-gate development/);
    expect(server).toMatch(/Basic Constraints: critical\n\s+CA:FALSE/);
    expect(server).toMatch(/Key Usage: critical\n\s+Digital Signature\n/);
    expect(server).toMatch(/Extended Key Usage: \n\s+TLS Web Server Authentication\n/);
    // The server certificate names the CA's key as its authority key.
    const caKeyId = /Subject Key Identifier: \n\s+([0-9A-F:]+)/.exec(ca)?.[1];
    expect(caKeyId).toMatch(/^([0-9A-F]{2}:){19}[0-9A-F]{2}$/);
    expect(/Authority Key Identifier: \n\s+(?:keyid:)?([0-9A-F:]+)/.exec(server)?.[1]).toBe(caKeyId);
    expect(/Subject Key Identifier: \n\s+([0-9A-F:]+)/.exec(server)?.[1]).not.toBe(caKeyId);
    const verify = execFileSync('openssl', ['verify', '-x509_strict', '-purpose', 'sslserver', '-CAfile', out.caPath, out.certPath], { encoding: 'utf8' });
    expect(verify).toContain(': OK');
  });

  it('keeps a usable CA when issuing a new server certificate, unless told otherwise', async () => {
    const first = await generateDevCertificate(dir);
    const ca1 = read(first.caPath);
    const cert1 = read(first.certPath);
    await generateDevCertificate(dir);
    expect(read(first.caPath)).toBe(ca1);
    expect(read(first.certPath)).not.toBe(cert1);
    await generateDevCertificate(dir, { reuseCa: false });
    expect(read(first.caPath)).not.toBe(ca1);
    expect(new X509Certificate(read(first.certPath)).checkIssued(new X509Certificate(read(first.caPath)))).toBe(true);
  });
});

describe('ensureDevCertificate', () => {
  it('generates once, then reuses', async () => {
    const first = await ensureDevCertificate(dir);
    expect(first.generated).toBe(true);
    const cert = read(first.certPath);
    const second = await ensureDevCertificate(dir);
    expect(second).toEqual({ ...first, generated: false });
    expect(read(second.certPath)).toBe(cert);
  });

  it('renews a certificate that expires within 7 days, keeping the CA', async () => {
    const short = await generateDevCertificate(dir, { validityDays: 6 });
    const ca = read(short.caPath);
    const old = read(short.certPath);
    const renewed = await ensureDevCertificate(dir);
    expect(renewed.generated).toBe(true);
    expect(read(renewed.certPath)).not.toBe(old);
    expect(read(renewed.caPath)).toBe(ca);
    expect((Date.parse(new X509Certificate(read(renewed.certPath)).validTo) - Date.now()) / 86_400_000).toBeGreaterThan(364);

    await generateDevCertificate(dir, { validityDays: 8 });
    expect((await ensureDevCertificate(dir)).generated).toBe(false);
  });

  it('renews when a requested name is missing or the key does not match', async () => {
    await ensureDevCertificate(dir);
    const withName = await ensureDevCertificate(dir, { hostnames: ['mail.example.test'] });
    expect(withName.generated).toBe(true);
    expect(new X509Certificate(read(withName.certPath)).checkHost('mail.example.test')).toBe('mail.example.test');
    expect((await ensureDevCertificate(dir, { hostnames: ['mail.example.test'] })).generated).toBe(false);

    const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    writeFileSync(withName.keyPath, privateKey.export({ type: 'pkcs8', format: 'pem' }));
    expect((await ensureDevCertificate(dir)).generated).toBe(true);
  });

  it.skipIf(!hasOpenssl)('reuses a foreign certificate but refuses to overwrite an expiring one', async () => {
    const selfSigned = (days: string) =>
      execFileSync('openssl', [
        'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes',
        '-days', days, '-subj', '/CN=mail.example.test',
        '-keyout', join(dir, 'server.key'), '-out', join(dir, 'server.crt'),
      ], { stdio: 'ignore' });
    selfSigned('90');
    const reused = await ensureDevCertificate(dir);
    expect(reused).toMatchObject({ generated: false, caPath: reused.certPath });

    selfSigned('3');
    await expect(ensureDevCertificate(dir)).rejects.toThrow(/not issued by the sasl-gate development CA/);

    selfSigned('90');
    rmSync(join(dir, 'server.key'));
    await expect(ensureDevCertificate(dir)).rejects.toThrow(/lacks a matching server.key/);
    expect(new X509Certificate(read(join(dir, 'server.crt'))).subject).toBe('CN=mail.example.test');
  });
});

describe('the generated certificate in TLS', () => {
  let servers: Array<tls.Server | https.Server> = [];
  afterEach(async () => {
    await Promise.all(servers.map((s) => new Promise((resolve) => s.close(resolve))));
    servers = [];
  });

  async function listen<T extends tls.Server | https.Server>(server: T, host = '127.0.0.1'): Promise<number> {
    servers.push(server);
    await new Promise<void>((resolve) => server.listen(0, host, resolve));
    return (server.address() as AddressInfo).port;
  }

  function handshake(options: tls.ConnectionOptions): Promise<{ authorized: boolean }> {
    return new Promise((resolve, reject) => {
      const socket = tls.connect(options, () => {
        const authorized = socket.authorized;
        socket.end();
        resolve({ authorized });
      });
      socket.on('error', reject);
    });
  }

  it('is accepted by tls.createServer and verified by tls.connect with the CA, by IP and by name', async () => {
    const certs = await generateDevCertificate(dir);
    const server = tls.createServer({ cert: read(certs.certPath), key: read(certs.keyPath) }, (s) => s.end());
    const port = await listen(server);
    const ca = read(certs.caPath);

    await expect(handshake({ host: '127.0.0.1', port, ca })).resolves.toEqual({ authorized: true });
    await expect(handshake({ host: '127.0.0.1', port, ca, servername: 'localhost' })).resolves.toEqual({
      authorized: true,
    });
    await expect(handshake({ host: '127.0.0.1', port, ca, servername: 'evil.example' })).rejects.toMatchObject({
      code: 'ERR_TLS_CERT_ALTNAME_INVALID',
    });
    await expect(handshake({ host: '127.0.0.1', port })).rejects.toMatchObject({
      code: 'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
    });
  });

  it('verifies over IPv6 loopback when the machine has it', async (ctx) => {
    const certs = await generateDevCertificate(dir);
    const server = tls.createServer({ cert: read(certs.certPath), key: read(certs.keyPath) }, (s) => s.end());
    let port: number;
    try {
      port = await listen(server, '::1');
    } catch {
      ctx.skip();
      return;
    }
    await expect(handshake({ host: '::1', port, ca: read(certs.caPath) })).resolves.toEqual({ authorized: true });
  });

  it.skipIf(!hasOpenssl)('passes openssl s_client -verify_return_error with the CA file', async () => {
    const certs = await generateDevCertificate(dir);
    const server = tls.createServer({ cert: read(certs.certPath), key: read(certs.keyPath) }, (s) => s.end());
    const port = await listen(server);
    const { stdout } = await execFileAsync('openssl', [
      's_client', '-connect', `127.0.0.1:${port}`, '-verify_return_error', '-CAfile', certs.caPath,
      '-verify_ip', '127.0.0.1', '-servername', 'localhost', '-x509_strict',
    ], { timeout: 10_000 });
    expect(stdout).toContain('Verify return code: 0 (ok)');
    const verify = await execFileAsync('openssl', [
      'verify', '-x509_strict', '-purpose', 'sslserver', '-CAfile', certs.caPath, certs.certPath,
    ]);
    expect(verify.stdout).toContain(': OK');
  });

  it.skipIf(!hasCurl)('is trusted by curl --cacert', async () => {
    const certs = await generateDevCertificate(dir);
    const server = https.createServer({ cert: read(certs.certPath), key: read(certs.keyPath) }, (_req, res) =>
      res.end('ok'),
    );
    const port = await listen(server);
    const ok = await execFileAsync('curl', ['-sS', '--cacert', certs.caPath, `https://127.0.0.1:${port}/`]);
    expect(ok.stdout).toBe('ok');
    const named = await execFileAsync('curl', [
      '-sS', '--cacert', certs.caPath, '--resolve', `localhost:${port}:127.0.0.1`, `https://localhost:${port}/`,
    ]);
    expect(named.stdout).toBe('ok');
    await expect(execFileAsync('curl', ['-sS', `https://127.0.0.1:${port}/`])).rejects.toMatchObject({ code: 60 });
  });
});

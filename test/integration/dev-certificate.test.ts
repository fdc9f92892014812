/**
 * With no certificate configured, sasl-gate makes a development one, says so once, and clients
 * that trust the generated CA can connect.
 */
import { execFileSync } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect, it } from 'vitest';
import { startStack, TlsImap } from '../support/stack.js';

const hasOpenssl = (() => {
  try {
    execFileSync('openssl', ['version'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
})();

it('generates a development certificate into tls.devCertDir and warns once', async () => {
  const certDir = join(mkdtempSync(join(tmpdir(), 'sasl-gate-devcert-')), 'certs');
  const stack = await startStack({ config: { tls: { development: true, devCertDir: certDir } } });
  try {
    expect(existsSync(join(certDir, 'server.crt'))).toBe(true);
    expect(existsSync(join(certDir, 'server.key'))).toBe(true);
    const warnings = stack.logs.filter((l) => /development certificate/.test(String(l['msg'])));
    expect(warnings).toHaveLength(1);
    expect(warnings[0]).toMatchObject({ level: 'warn' });
    const ca = readFileSync(join(certDir, 'ca.crt'), 'utf8');
    // What a client checks: issued by the development CA, for the loopback names, for servers.
    const cert = new X509Certificate(readFileSync(join(certDir, 'server.crt')));
    expect(cert.checkIssued(new X509Certificate(ca))).toBe(true);
    expect(cert.verify(new X509Certificate(ca).publicKey)).toBe(true);
    expect(cert.checkHost('localhost')).toBe('localhost');
    expect(cert.checkIP(stack.host)).toBe(stack.host);
    expect(cert.keyUsage).toEqual(['1.3.6.1.5.5.7.3.1']);
    if (hasOpenssl) {
      const verified = execFileSync('openssl', ['verify', '-x509_strict', '-purpose', 'sslserver', '-CAfile', join(certDir, 'ca.crt'), join(certDir, 'server.crt')], { encoding: 'utf8' });
      expect(verified).toContain(': OK');
    }
    const client = await TlsImap.connect({ host: stack.host, imapPort: stack.imapPort, ca });
    expect(client.greeting).toMatch(/^\* OK /);
    client.close();
    // A second client connection does not warn again.
    const again = await TlsImap.connect({ host: stack.host, imapPort: stack.imapPort, ca });
    again.close();
    expect(stack.logs.filter((l) => /development certificate/.test(String(l['msg'])))).toHaveLength(1);
  } finally {
    await stack.close();
  }
});

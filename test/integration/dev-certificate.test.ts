/**
 * With no certificate configured, sasl-gate makes a development one, says so once, and clients
 * that trust the generated CA can connect.
 */
import { existsSync, mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect, it } from 'vitest';
import { startStack, TlsImap } from '../support/stack.js';

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

/** What `doctor` tells the admin about autoconfiguration: a check line and the DNS records to publish. */
import { describe, expect, it } from 'vitest';
import { configSchema } from '../../src/config/schema.js';
import type { GateConfig } from '../../src/config/load.js';
import { autoconfigReport, formatCheck } from '../../src/doctor.js';

function config(over: Record<string, unknown> = {}, oauth: Record<string, unknown> = {}): GateConfig {
  return configSchema.parse({
    listeners: [
      { protocol: 'imap', bind: '0.0.0.0:993' },
      { protocol: 'smtp', bind: '0.0.0.0:465' },
      { protocol: 'smtp', bind: '0.0.0.0:587', tls: 'starttls' },
      { protocol: 'sieve', bind: '0.0.0.0:4190', tls: 'starttls' },
    ],
    tls: { development: true },
    backends: { imap: { host: '127.0.0.1', port: 143 }, smtp: { host: '127.0.0.1', port: 10587, login: 'master' }, sieve: { host: '127.0.0.1', port: 14190 } },
    master: { user: 'sasl-gate', password: 'master-secret' },
    oauth: { issuer: 'https://id.example.com', clientId: 'gate', audience: ['mail'], allowedEmailDomains: ['example.com', 'example.net'], ...oauth },
    portal: { bind: '0.0.0.0:443', publicUrl: 'https://mail.example.com' },
    autoconfig: { clientId: 'thunderbird' },
    ...over,
  }) as GateConfig;
}

describe('doctor on autoconfiguration', () => {
  it('passes a configuration on the usual ports and lists the records of every domain', () => {
    const { checks, lines } = autoconfigReport(config());
    expect(checks.map(formatCheck)).toEqual([
      'PASS  autoconfig     https://mail.example.com/.well-known/autoconfig/mail/config-v1.1.xml and /.well-known/user-agent-configuration.json offer mail.example.com with OAuth2 (client thunderbird) and passwords',
    ]);
    const text = lines.join('\n');
    for (const domain of ['example.com', 'example.net']) {
      expect(text).toMatch(new RegExp(`autoconfig\\.${domain}\\.\\s+IN CNAME mail\\.example\\.com\\.`));
      expect(text).toMatch(new RegExp(`_imaps\\._tcp\\.${domain}\\.\\s+IN SRV\\s+0 1 993 mail\\.example\\.com\\.`));
      expect(text).toMatch(new RegExp(`_submissions\\._tcp\\.${domain}\\.\\s+IN SRV\\s+0 1 465 mail\\.example\\.com\\.`));
      expect(text).toMatch(new RegExp(`_submission\\._tcp\\.${domain}\\.\\s+IN SRV\\s+10 1 587 mail\\.example\\.com\\.`));
      expect(text).toMatch(new RegExp(`_sieve\\._tcp\\.${domain}\\.\\s+IN SRV\\s+10 1 4190 mail\\.example\\.com\\.`));
      expect(text).toMatch(new RegExp(`ua-auto-config\\.${domain}\\.\\s+IN CNAME mail\\.example\\.com\\.`));
      expect(text).toMatch(new RegExp(`_ua-auto-config\\.${domain}\\.\\s+IN TXT\\s+"v=UAAC1; a=sha256; d=[A-Za-z0-9+/]{43}="`));
    }
    expect(text).not.toContain('_pop3');
    expect(text).not.toContain('master-secret');
  });

  it('warns about a portal off port 443, PACC ports that differ, no public client, and no domain', () => {
    const { checks, lines } = autoconfigReport(
      config(
        {
          listeners: [{ protocol: 'imap', bind: '0.0.0.0:1993' }],
          backends: { imap: { host: '127.0.0.1', port: 143 } },
          portal: { bind: '0.0.0.0:8443', publicUrl: 'https://mail.example.com:8443' },
          autoconfig: {},
        },
        { allowedEmailDomains: [] },
      ),
    );
    const [main, dns] = checks.map(formatCheck);
    expect(main).toMatch(/^WARN  autoconfig .* with passwords — /);
    expect(main).toContain('portal.publicUrl uses 8443: forward 443 to the portal');
    expect(main).toContain('PACC names no ports and implies 993 for imap; the imap listener is on 1993');
    expect(main).toContain('autoconfig.clientId is not set');
    expect(dns).toMatch(/^WARN  dns records    no accepted domain .* — set oauth.allowedEmailDomains/);
    expect(lines.join('\n')).toContain('_imaps._tcp.example.com.');
  });
});

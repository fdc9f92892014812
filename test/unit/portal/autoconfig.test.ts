/** The autoconfiguration routes of the portal, in-process: paths, headers, refusals. */
import pino from 'pino';
import { describe, expect, it } from 'vitest';
import type { AutoconfigSettings } from '../../../src/autoconfig/documents.js';
import { autoconfigRoutes } from '../../../src/portal/autoconfig.js';
import { AuthError } from '../../../src/errors.js';

const SETTINGS: AutoconfigSettings = {
  hostname: 'mail.example.com',
  domains: ['example.com'],
  displayName: 'Example',
  displayShortName: 'Example',
  issuer: 'https://id.example.com',
  clientId: 'tb',
  scope: 'openid email',
  servers: [{ protocol: 'imap', port: 993, tls: 'implicit' }],
};
const ENDPOINTS = { authorizationEndpoint: 'https://id.example.com/auth', tokenEndpoint: 'https://id.example.com/token' };

function routes(endpoints: () => Promise<typeof ENDPOINTS> = () => Promise.resolve(ENDPOINTS), base = '') {
  let calls = 0;
  const handle = autoconfigRoutes(
    { settings: SETTINGS, endpoints: () => (calls++, endpoints()), cacheSeconds: 600, log: pino({ level: 'silent' }) },
    base,
  );
  return { handle: (url: string, method = 'GET') => handle({ method, url, headers: {}, body: '' }), calls: () => calls };
}

describe('autoconfiguration routes', () => {
  it('answer both Thunderbird paths and PACC with public, cacheable documents', async () => {
    const r = routes();
    for (const [url, type] of [
      ['/.well-known/autoconfig/mail/config-v1.1.xml', 'application/xml; charset=utf-8'],
      ['/mail/config-v1.1.xml?emailaddress=alice%40example.com', 'application/xml; charset=utf-8'],
      ['/.well-known/user-agent-configuration.json', 'application/json'],
    ] as const) {
      const response = await r.handle(url);
      expect(response?.status, url).toBe(200);
      expect(response!.headers['content-type']).toBe(type);
      expect(response!.headers['cache-control']).toBe('public, max-age=600');
      expect(response!.headers['access-control-allow-origin']).toBe('*');
      expect(response!.headers['set-cookie']).toBeUndefined();
    }
    const xml = (await r.handle('/mail/config-v1.1.xml?emailaddress=alice%40example.com'))!.body;
    expect(xml).toContain('<domain>example.com</domain>');
    expect(xml).toContain('<authURL>https://id.example.com/auth</authURL>');
  });

  it('say 404 for an address of another domain, and leave other paths to the page', async () => {
    const r = routes();
    const foreign = await r.handle('/mail/config-v1.1.xml?emailaddress=mallory%40evil.test');
    expect(foreign?.status).toBe(404);
    expect(foreign!.headers['cache-control']).toBe('no-store');
    expect(foreign!.body).not.toContain('evil');
    expect(await r.handle('/')).toBeUndefined();
    expect(await r.handle('/mail/config-v1.1.xml.bak')).toBeUndefined();
  });

  it('answer only GET and HEAD', async () => {
    const r = routes();
    expect((await r.handle('/.well-known/user-agent-configuration.json', 'POST'))?.status).toBe(405);
    expect((await r.handle('/.well-known/user-agent-configuration.json', 'HEAD'))?.status).toBe(200);
  });

  it('say 503, not cacheable, while the provider cannot give its endpoints; PACC needs none', async () => {
    const r = routes(() => Promise.reject(new AuthError('provider_unavailable', 'down')));
    const xml = await r.handle('/mail/config-v1.1.xml');
    expect(xml?.status).toBe(503);
    expect(xml!.headers['cache-control']).toBe('no-store');
    expect((await r.handle('/.well-known/user-agent-configuration.json'))?.status).toBe(200);
  });

  it('are found under the path of portal.publicUrl too', async () => {
    const r = routes(undefined, '/portal');
    expect((await r.handle('/portal/mail/config-v1.1.xml'))?.status).toBe(200);
    expect((await r.handle('/mail/config-v1.1.xml'))?.status).toBe(200);
  });
});

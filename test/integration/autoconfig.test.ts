/**
 * Autoconfiguration from a running sasl-gate, fetched over HTTPS the way a mail app fetches it:
 * the portal listener starts for autoconfiguration alone (no app passwords), answers without a
 * sign-in, several requests on one connection, the XML read with a real parser and checked against
 * the listeners really bound and the development provider's own discovery document; the PACC
 * bytes match the digest doctor tells the admin to publish; and `thunderbird-addon` writes an
 * add-on with the provider's endpoints, read back with Debian's unzip.
 */
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { Agent, request } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { XMLParser } from 'fast-xml-parser';
import { stringify } from 'yaml';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { main } from '../../src/cli.js';
import { loadConfig } from '../../src/config/load.js';
import { autoconfigReport } from '../../src/doctor.js';
import { freePort } from '../../tools/ports.js';
import { startStack, type Stack } from '../support/stack.js';

const DOMAIN = 'example.test';

interface Fetched {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: string;
  socket: unknown;
}

describe('autoconfiguration served by a running gate without app passwords', () => {
  let stack: Stack;
  let base: string;
  let agent: Agent;
  let discovery: { authorization_endpoint: string; token_endpoint: string };
  const dir = mkdtempSync(join(tmpdir(), 'sasl-gate-autoconfig-'));

  const get = (path: string, method = 'GET'): Promise<Fetched> =>
    new Promise((resolve, reject) => {
      const req = request(`${base}${path}`, { method, agent, ca: stack.ca }, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks).toString('utf8'), socket: res.socket }));
        res.on('error', reject);
      });
      req.on('error', reject);
      req.end();
    });

  beforeAll(async () => {
    const port = await freePort();
    base = `https://127.0.0.1:${port}`;
    stack = await startStack({
      pop3: true,
      sieve: true,
      oauth: { allowedEmailDomains: [DOMAIN] },
      config: {
        portal: { bind: `127.0.0.1:${port}`, publicUrl: base },
        autoconfig: { clientId: 'thunderbird', displayName: 'Example <Test> & Co', cacheSeconds: 900 },
      },
    });
    agent = new Agent({ keepAlive: true, maxSockets: 1 });
    discovery = (await (await fetch(`${stack.idp.issuer}/.well-known/openid-configuration`)).json()) as typeof discovery;
  }, 120_000);

  afterAll(async () => {
    agent?.destroy();
    await stack?.close();
  });

  it('serves config-v1.1.xml with the bound listeners, OAuth2 first, and the provider\'s endpoints', async () => {
    expect(stack.gate.appPasswords).toBeUndefined();
    const response = await get(`/.well-known/autoconfig/mail/config-v1.1.xml?emailaddress=alice%40${DOMAIN}`);
    expect(response.status).toBe(200);
    expect(response.headers['content-type']).toBe('application/xml; charset=utf-8');
    expect(response.headers['cache-control']).toBe('public, max-age=900');
    expect(response.headers['set-cookie']).toBeUndefined();
    const parser = new XMLParser({ ignoreAttributes: false, attributeNamePrefix: '@', isArray: (n) => ['incomingServer', 'outgoingServer', 'authentication', 'domain'].includes(n) });
    const doc = parser.parse(response.body) as {
      clientConfig: {
        emailProvider: { domain: string[]; displayName: string; incomingServer: Array<{ '@type': string; hostname: string; port: number; socketType: string; authentication: string[]; username: string }> };
        oAuth2: { issuer: string; authURL: string; tokenURL: string; scope: string; clientId: string };
      };
    };
    const provider = doc.clientConfig.emailProvider;
    expect(provider.domain).toEqual([DOMAIN]);
    expect(provider.displayName).toBe('Example <Test> & Co');
    expect(provider.incomingServer.map((s) => [s['@type'], s.port, s.socketType])).toEqual([
      ['imap', stack.imapPort, 'SSL'],
      ['pop3', stack.pop3Port, 'SSL'],
      ['pop3', stack.pop3StarttlsPort, 'STARTTLS'],
    ]);
    for (const s of provider.incomingServer) {
      expect(s.hostname).toBe('127.0.0.1');
      expect(s.authentication).toEqual(['OAuth2', 'password-cleartext']);
      expect(s.username).toBe('%EMAILADDRESS%');
    }
    expect(doc.clientConfig.oAuth2).toEqual({
      issuer: '127.0.0.1',
      scope: 'openid email offline_access',
      authURL: discovery.authorization_endpoint,
      tokenURL: discovery.token_endpoint,
      clientId: 'thunderbird',
    });
    expect(response.body).not.toContain(stack.idp.clientSecret);
  });

  it('answers several requests on one connection, refuses foreign domains, and keeps serving', async () => {
    const first = await get(`/mail/config-v1.1.xml?emailaddress=bob%40${DOMAIN}`);
    const foreign = await get('/mail/config-v1.1.xml?emailaddress=mallory%40evil.test');
    const malformed = await get('/mail/config-v1.1.xml?emailaddress=%0d%0aX:%20y@example.test');
    const posted = await get('/.well-known/user-agent-configuration.json', 'POST');
    const again = await get(`/mail/config-v1.1.xml?emailaddress=bob%40${DOMAIN}`);
    expect([first.status, foreign.status, malformed.status, posted.status, again.status]).toEqual([200, 404, 404, 405, 200]);
    expect(again.body).toBe(first.body);
    expect(again.socket).toBe(first.socket);
  });

  it('hides the app-password pages', async () => {
    const home = await get('/');
    expect(home.status).toBe(200);
    expect(home.body).toContain('Mail apps find their settings here');
    expect(home.body).not.toMatch(/sign in/i);
    expect((await get('/signin')).status).toBe(404);
  });

  it('serves the PACC document whose bytes match the digest doctor prints', async () => {
    const response = await get('/.well-known/user-agent-configuration.json');
    expect(response.status).toBe(200);
    expect(response.headers['content-type']).toBe('application/json');
    expect(JSON.parse(response.body)).toEqual({
      protocols: { imap: { host: '127.0.0.1' }, pop3: { host: '127.0.0.1' } },
      authentication: { password: true, 'oauth-public': { issuer: stack.idp.issuer } },
      // The name fits PACC's 20-character short name, so no second one is sent.
      info: { provider: { name: 'Example <Test> & Co' } },
    });
    const file = join(dir, 'gate.yaml');
    writeFileSync(file, stringify(gateYaml({ autoconfig: { clientId: 'thunderbird', displayName: 'Example <Test> & Co' } })));
    const { config } = loadConfig({ file, env: {} });
    const { lines } = autoconfigReport(config);
    const digest = createHash('sha256').update(Buffer.from(response.body, 'utf8')).digest('base64');
    expect(lines.find((l) => l.includes(`_ua-auto-config.${DOMAIN}.`))).toContain(`"v=UAAC1; a=sha256; d=${digest}"`);
    expect(lines.find((l) => l.includes(`_imaps._tcp.${DOMAIN}.`))).toMatch(/IN SRV\s+0 1 993 127\.0\.0\.1\./);
    expect(lines.find((l) => l.includes(`_sieve._tcp.${DOMAIN}.`))).toMatch(/IN SRV\s+10 1 4190 127\.0\.0\.1\./);
  });

  /** A configuration like the running gate's, with the usual ports, for the commands that read a file. */
  function gateYaml(extra: Record<string, unknown>): Record<string, unknown> {
    return {
      listeners: [
        { protocol: 'imap', bind: '0.0.0.0:993' },
        { protocol: 'pop3', bind: '0.0.0.0:995' },
        { protocol: 'sieve', bind: '0.0.0.0:4190', tls: 'starttls' },
      ],
      tls: { development: true, devCertDir: join(dir, 'certs') },
      backends: { imap: { host: '127.0.0.1', port: 143 }, pop3: { host: '127.0.0.1', port: 110 }, sieve: { host: '127.0.0.1', port: 4190 } },
      master: { user: 'sasl-gate', password: 'not-used-here' },
      oauth: { issuer: stack.idp.issuer, clientId: stack.idp.clientId, audience: ['mail'], allowedEmailDomains: [DOMAIN] },
      portal: { bind: '127.0.0.1:0', publicUrl: base },
      ...extra,
    };
  }

  it('thunderbird-addon writes an add-on with the provider\'s endpoints, and refuses without a public client', async () => {
    const file = join(dir, 'addon.yaml');
    writeFileSync(file, stringify(gateYaml({ autoconfig: { clientId: 'thunderbird', hostname: 'mail.example.test', addonMinVersion: '155' } })));
    const xpi = join(dir, 'example.xpi');
    expect(await main(['thunderbird-addon', '--config', file, '--out', xpi])).toBe(0);
    execFileSync('unzip', ['-tq', xpi]);
    const manifest = JSON.parse(execFileSync('unzip', ['-p', xpi, 'manifest.json'], { encoding: 'utf8' })) as { oauth_provider: Record<string, unknown> };
    expect(manifest.oauth_provider).toEqual({
      issuer: '127.0.0.1',
      clientId: 'thunderbird',
      authorizationEndpoint: discovery.authorization_endpoint,
      tokenEndpoint: discovery.token_endpoint,
      redirectionEndpoint: 'http://127.0.0.1',
      usePKCE: true,
      hostnames: ['mail.example.test'],
      scopes: 'openid email offline_access',
      issuerIdentifier: stack.idp.issuer,
      useExternalBrowser: true,
      emailDomains: [DOMAIN],
    });
    expect(execFileSync('unzip', ['-p', xpi, 'manifest.json'], { encoding: 'utf8' })).not.toContain(stack.idp.clientSecret);

    const without = join(dir, 'no-client.yaml');
    writeFileSync(without, stringify(gateYaml({})));
    expect(await main(['thunderbird-addon', '--config', without, '--out', join(dir, 'none.xpi')])).toBe(1);
    expect(await main(['thunderbird-addon', '--config', without])).toBe(2);
  });
});

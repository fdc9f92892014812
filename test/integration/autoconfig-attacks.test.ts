/**
 * Autoconfiguration on a running gate, as an attacker reaches it over HTTPS: a foreign Host
 * header and an absolute request target (what a shared cache keys on), other methods with
 * hostile headers, a request target too large to parse, and markup in the address. The
 * documents stay the gate's own, nothing is reflected, the connection keeps serving, and the
 * gate still logs users in through Dovecot afterwards.
 */
import { Agent, request } from 'node:https';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { freePort } from '../../tools/ports.js';
import { startStack, tokenLogin, USERS, type Stack } from '../support/stack.js';

const DOMAIN = 'example.test';
const XML = '/mail/config-v1.1.xml';

interface Fetched {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: string;
  socket: unknown;
}

let stack: Stack;
let port: number;
let agent: Agent;

beforeAll(async () => {
  port = await freePort();
  stack = await startStack({
    oauth: { allowedEmailDomains: [DOMAIN] },
    config: {
      portal: { bind: `127.0.0.1:${port}`, publicUrl: `https://127.0.0.1:${port}/portal` },
      autoconfig: { clientId: 'thunderbird', cacheSeconds: 900 },
    },
  });
  agent = new Agent({ keepAlive: true, maxSockets: 1 });
}, 120_000);

afterAll(async () => {
  agent?.destroy();
  await stack?.close();
});

function send(path: string, options: { method?: string; headers?: Record<string, string>; agent?: Agent | false } = {}): Promise<Fetched> {
  return new Promise((resolve, reject) => {
    const req = request(
      { host: '127.0.0.1', port, path, method: options.method ?? 'GET', headers: options.headers ?? {}, agent: options.agent ?? agent, ca: stack.ca, servername: 'localhost' },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks).toString('utf8'), socket: res.socket }));
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    req.end();
  });
}

describe('autoconfiguration on a running gate, attacked over HTTPS', () => {
  it('a foreign Host header, X-Forwarded-Host and an absolute target give the same document, on one connection', async () => {
    const reference = await send(`${XML}?emailaddress=alice%40${DOMAIN}`);
    expect(reference.status).toBe(200);
    const hosted = await send(`${XML}?emailaddress=alice%40${DOMAIN}`, { headers: { host: 'evil.test', 'x-forwarded-host': 'evil.test', forwarded: 'host=evil.test;proto=http' } });
    const absolute = await send(`https://evil.test${XML}?emailaddress=alice%40${DOMAIN}`, { headers: { host: 'evil.test' } });
    const underBase = await send(`/portal${XML}?emailaddress=alice%40${DOMAIN}`, { headers: { host: 'evil.test' } });
    for (const response of [hosted, absolute, underBase]) {
      expect(response.status).toBe(200);
      expect(response.body).toBe(reference.body);
      expect(response.body).not.toContain('evil');
      expect(response.headers['vary']).toBeUndefined();
      expect(response.socket).toBe(reference.socket);
    }
  });

  it('other methods with hostile headers are 405 reflecting nothing; HEAD has no body; the connection keeps serving', async () => {
    const first = await send('/.well-known/user-agent-configuration.json');
    for (const method of ['TRACE', 'PUT', 'DELETE', 'OPTIONS']) {
      const response = await send(`${XML}?emailaddress=alice%40${DOMAIN}`, { method, headers: { 'x-evil': '<script>alert(1)</script>', cookie: 'session=evil' } });
      expect(response.status, method).toBe(405);
      expect(response.headers['allow']).toBe('GET, HEAD');
      expect(response.body).not.toMatch(/script|evil/);
    }
    const head = await send('/.well-known/user-agent-configuration.json', { method: 'HEAD' });
    expect(head.status).toBe(200);
    expect(head.body).toBe('');
    const again = await send('/.well-known/user-agent-configuration.json');
    expect(again.body).toBe(first.body);
    expect(again.socket).toBe(first.socket);
  });

  it('markup in the address is not reflected, and a foreign domain is not served', async () => {
    const hostile = await send(`${XML}?emailaddress=${encodeURIComponent(`"><script>x</script>@${DOMAIN}`)}`);
    expect(hostile.status).toBe(200);
    expect(hostile.body).not.toContain('script');
    const foreign = await send(`${XML}?emailaddress=${encodeURIComponent(`a@${DOMAIN}"><domain>evil.test`)}`);
    expect(foreign.status).toBe(404);
    expect(foreign.body).not.toContain('evil');
  });

  it('a request target too large to parse is refused; the gate keeps answering and logging users in', async () => {
    const huge = await send(`${XML}?emailaddress=${'a'.repeat(70_000)}%40${DOMAIN}`, { agent: false }).catch((err: Error) => ({ status: 0, body: err.message }) as Fetched);
    expect(huge.status === 0 || huge.status >= 400).toBe(true);
    expect((await send(`${XML}?emailaddress=bob%40${DOMAIN}`, { agent: false })).status).toBe(200);
    const token = await stack.idp.mintAccessToken({ user: 'alice', scope: 'openid email' });
    expect((await tokenLogin(stack, USERS[0]!.name, token)).tagged).toMatch(/^a1 OK /);
  });
});

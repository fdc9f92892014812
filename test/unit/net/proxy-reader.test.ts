import { duplexPair, type Duplex } from 'node:stream';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { encodeProxyV2, encodeProxyV2Local } from '../../../src/net/proxy-protocol.js';
import { readProxyHeader } from '../../../src/net/proxy-reader.js';

/** A connection as sasl-gate sees it (`server`) and the proxy's end that writes to it. */
function connection(): { server: Duplex; proxy: Duplex } {
  const [server, proxy] = duplexPair();
  return { server, proxy };
}

/** Lets queued stream events run (no timers involved). */
async function settle(): Promise<void> {
  for (let i = 0; i < 5; i++) await new Promise((resolve) => setImmediate(resolve));
}

/** What the protocol reads after the header: the bytes put back, then anything later. */
async function readRest(server: Duplex): Promise<string> {
  server.resume();
  let text = '';
  server.on('data', (chunk: Buffer) => (text += chunk.toString('latin1')));
  await settle();
  return text;
}

describe('readProxyHeader', () => {
  afterEach(() => {
    vi.useRealTimers();
  });

  it('reads a v1 header split over several segments and puts the bytes after it back', async () => {
    const { server, proxy } = connection();
    const header = readProxyHeader(server, 1000);
    proxy.write('PROXY TCP4 198.51');
    await settle();
    proxy.write('.100.7 192.0.2.1 40000 99');
    await settle();
    proxy.write('3\r\nA1 CAPABILITY\r\n');
    await expect(header).resolves.toEqual({ address: '198.51.100.7', port: 40000 });
    // The protocol reads the command sent in the header's segment, in order with what follows.
    proxy.write('A2 NOOP\r\n');
    expect(await readRest(server)).toBe('A1 CAPABILITY\r\nA2 NOOP\r\n');
  });

  it('reads a v2 header (IPv6) delivered one byte at a time', async () => {
    const { server, proxy } = connection();
    const header = readProxyHeader(server, 1000);
    const bytes = Buffer.concat([encodeProxyV2({ address: '2001:db8::7', port: 5555 }, { address: '2001:db8::1', port: 993 }), Buffer.from('\x16\x03\x01')]);
    for (const byte of bytes) {
      proxy.write(Buffer.from([byte]));
      await new Promise((resolve) => setImmediate(resolve));
    }
    await expect(header).resolves.toEqual({ address: '2001:db8::7', port: 5555 });
    // A TLS ClientHello after the header is left for the TLS layer.
    expect(Buffer.from(await readRest(server), 'latin1')).toEqual(Buffer.from('\x16\x03\x01'));
  });

  it('a LOCAL header (a health check) or PROXY UNKNOWN names no client: the connection keeps its own address', async () => {
    const local = connection();
    const fromLocal = readProxyHeader(local.server, 1000);
    local.proxy.write(encodeProxyV2Local());
    await expect(fromLocal).resolves.toBeUndefined();

    const unknown = connection();
    const fromUnknown = readProxyHeader(unknown.server, 1000);
    unknown.proxy.write('PROXY UNKNOWN\r\n');
    await expect(fromUnknown).resolves.toBeUndefined();
  });

  it('rejects garbage at once, without quoting it', async () => {
    const { server, proxy } = connection();
    const header = readProxyHeader(server, 60_000);
    proxy.write('A1 LOGIN alice secret-password\r\n');
    const error = await header.catch((err: Error & { code?: string }) => err);
    expect(error).toMatchObject({ code: 'bad_proxy_header' });
    expect(String((error as Error).message)).not.toContain('secret-password');
  });

  it('rejects a v1 line that never ends within its maximum length', async () => {
    const { server, proxy } = connection();
    const header = readProxyHeader(server, 60_000);
    proxy.write(`PROXY TCP4 ${'1'.repeat(200)}`);
    await expect(header).rejects.toMatchObject({ code: 'bad_proxy_header' });
  });

  it('rejects a connection that ends before the header is complete', async () => {
    const { server, proxy } = connection();
    const header = readProxyHeader(server, 60_000);
    proxy.end('PROXY TCP4 198.51.100.7');
    await expect(header).rejects.toMatchObject({ code: 'bad_proxy_header', message: expect.stringContaining('ended') });
  });

  it('rejects at once a connection reset before the header (no end, only close), without waiting for the timeout', async () => {
    const { server, proxy } = connection();
    const header = readProxyHeader(server, 60_000);
    proxy.write('PROXY TCP4 198.51.100.7');
    await settle();
    server.destroy();
    await expect(header).rejects.toMatchObject({ code: 'bad_proxy_header' });
  });

  it('rejects when no complete header arrives in time, and not a moment before', async () => {
    vi.useFakeTimers();
    const { server, proxy } = connection();
    let outcome: unknown;
    readProxyHeader(server, 5000).then(
      () => (outcome = 'resolved'),
      (err: unknown) => (outcome = err),
    );
    proxy.write('PROXY TCP4 ');
    await vi.advanceTimersByTimeAsync(4999);
    expect(outcome).toBeUndefined();
    await vi.advanceTimersByTimeAsync(1);
    expect(outcome).toMatchObject({ code: 'bad_proxy_header', message: expect.stringContaining('in time') });
    // The reader let go of the socket: later bytes are not taken for a header.
    expect(server.listenerCount('data')).toBe(0);
  });

  it('once the header is read, its timer is gone', async () => {
    vi.useFakeTimers();
    const { server, proxy } = connection();
    const header = readProxyHeader(server, 5000);
    proxy.write('PROXY TCP6 2001:db8::9 2001:db8::1 1 2\r\n');
    await expect(header).resolves.toEqual({ address: '2001:db8::9', port: 1 });
    expect(vi.getTimerCount()).toBe(0);
  });
});

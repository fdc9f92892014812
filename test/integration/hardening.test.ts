/**
 * sasl-gate under the conditions of the open internet: STARTTLS (and the command injection it
 * invites), connection limits, repeated failures, PROXY protocol, certificate renewal and
 * shutdown, each against a running proxy with a real Dovecot and Postfix behind it.
 */
import { createHash, X509Certificate } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { connect as netConnect, type Socket } from 'node:net';
import { connect as tlsConnect, type TLSSocket } from 'node:tls';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generateDevCertificate } from '../../src/tls/devcert.js';
import { encodeProxyV2 } from '../../src/net/proxy-protocol.js';
import { plain, startStack, TlsImap, tokenLogin, USERS, xoauth2, type Stack } from '../support/stack.js';
import { waitFor } from '../support/wait.js';

const [ALICE, BOB] = USERS as [(typeof USERS)[0], (typeof USERS)[0]];

/** A line-based client over a socket that can be upgraded to TLS in place. */
class LineClient {
  private buffer = '';
  private lines: string[] = [];
  private waiter: (() => void) | undefined;
  closed = false;

  constructor(public socket: Socket) {
    this.attach(socket);
  }

  static async tcp(port: number, localAddress?: string): Promise<LineClient> {
    const socket = netConnect({ host: '127.0.0.1', port, ...(localAddress ? { localAddress } : {}) });
    await new Promise<void>((resolve, reject) => socket.once('connect', resolve).once('error', reject));
    return new LineClient(socket);
  }

  private attach(socket: Socket): void {
    socket.on('data', (chunk: Buffer) => {
      this.buffer += chunk.toString('latin1');
      let end: number;
      while ((end = this.buffer.indexOf('\r\n')) >= 0) {
        this.lines.push(this.buffer.slice(0, end));
        this.buffer = this.buffer.slice(end + 2);
      }
      this.waiter?.();
    });
    socket.on('close', () => {
      this.closed = true;
      this.waiter?.();
    });
    socket.on('error', () => undefined);
  }

  async line(timeoutMs = 10_000): Promise<string> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const next = this.lines.shift();
      if (next !== undefined) return next;
      if (this.closed) throw new Error('closed');
      if (Date.now() > deadline) throw new Error('timeout');
      await new Promise<void>((r) => {
        const t = setTimeout(r, 50);
        this.waiter = () => {
          clearTimeout(t);
          r();
        };
      });
    }
  }

  /** Reads until a line matching `pattern`; returns all lines read. */
  async until(pattern: RegExp): Promise<string[]> {
    const seen: string[] = [];
    for (;;) {
      const l = await this.line();
      seen.push(l);
      if (pattern.test(l)) return seen;
    }
  }

  write(text: string | Buffer): void {
    this.socket.write(text);
  }

  async startTls(ca: string): Promise<void> {
    this.socket.removeAllListeners('data');
    const secure: TLSSocket = tlsConnect({ socket: this.socket, ca, servername: 'localhost' });
    await new Promise<void>((resolve, reject) => secure.once('secureConnect', resolve).once('error', reject));
    this.socket = secure;
    this.attach(secure);
  }

  close(): void {
    this.socket.destroy();
  }
}

describe('STARTTLS listeners', () => {
  let stack: Stack;
  let imapPort: number;
  let smtpPort: number;
  beforeAll(async () => {
    stack = await startStack({
      smtp: { login: 'xclient' },
      config: {
        listeners: [
          { protocol: 'imap', bind: '127.0.0.1:0', tls: 'implicit' },
          { protocol: 'smtp', bind: '127.0.0.1:0', tls: 'implicit' },
          { protocol: 'imap', bind: '127.0.0.1:0', tls: 'starttls' },
          { protocol: 'smtp', bind: '127.0.0.1:0', tls: 'starttls' },
        ],
      },
    });
    imapPort = stack.gate.listeners[2]!.port;
    smtpPort = stack.gate.listeners[3]!.port;
  });
  afterAll(() => stack?.close());

  it('IMAP on 143: LOGINDISABLED and no AUTH before TLS, everything after', async () => {
    const c = await LineClient.tcp(imapPort);
    const greeting = await c.line();
    expect(greeting).toMatch(/^\* OK \[CAPABILITY .*STARTTLS.*LOGINDISABLED/);
    expect(greeting).not.toMatch(/AUTH=/);
    c.write(`a1 LOGIN "${ALICE.name}" "${ALICE.password}"\r\n`);
    expect(await c.line()).toMatch(/^a1 NO \[PRIVACYREQUIRED\]/);
    c.write(`a2 AUTHENTICATE PLAIN ${plain('', ALICE.name, ALICE.password)}\r\n`);
    expect(await c.line()).toMatch(/^a2 NO \[PRIVACYREQUIRED\]/);
    c.write('a3 STARTTLS\r\n');
    expect(await c.line()).toBe('a3 OK Begin TLS negotiation now.');
    await c.startTls(stack.ca);
    c.write('a4 CAPABILITY\r\n');
    const caps = await c.until(/^a4 /);
    expect(caps[0]).toMatch(/AUTH=XOAUTH2/);
    expect(caps[0]).not.toMatch(/STARTTLS|LOGINDISABLED/);
    const token = await stack.idp.mintAccessToken({ user: ALICE.name });
    c.write(`a5 AUTHENTICATE XOAUTH2 ${xoauth2(ALICE.name, token)}\r\n`);
    expect((await c.until(/^a5 /)).at(-1)).toMatch(/^a5 OK/);
    c.close();
  });

  it('IMAP: commands pipelined after STARTTLS are discarded, never run inside TLS', async () => {
    const before = (await stack.dovecot.readLog()).length;
    const c = await LineClient.tcp(imapPort);
    await c.line();
    // The classic injection: a login smuggled behind STARTTLS in the same packet.
    c.write(`a1 STARTTLS\r\na2 LOGIN "${ALICE.name}" "${ALICE.password}"\r\n`);
    expect(await c.line()).toBe('a1 OK Begin TLS negotiation now.');
    await c.startTls(stack.ca);
    c.write('a3 NOOP\r\n');
    expect(await c.line()).toBe('a3 OK NOOP completed.');
    c.close();
    expect((await stack.dovecot.readLog()).slice(before)).not.toMatch(/Login: user=<alice/);
    expect(stack.logs.some((l) => l['msg'] === 'discarded data sent after STARTTLS before the TLS handshake')).toBe(true);
  });

  it('IMAP: garbage instead of a TLS handshake ends that connection only', async () => {
    const c = await LineClient.tcp(imapPort);
    await c.line();
    c.write('a1 STARTTLS\r\n');
    await c.line();
    c.write('this is not a TLS ClientHello\r\n'.repeat(10));
    await waitFor(() => c.closed, { timeoutMs: 2_000, intervalMs: 20, what: 'the connection to close' });
    const other = await TlsImap.connect(stack);
    expect((await other.command('NOOP')).tagged).toMatch(/OK/);
    other.close();
  });

  it('submission on 587: STARTTLS first, then AUTH and mail', async () => {
    const c = await LineClient.tcp(smtpPort);
    expect(await c.line()).toMatch(/^220 /);
    c.write('EHLO client.example\r\n');
    const ehlo = await c.until(/^250 /);
    expect(ehlo.join('\n')).toMatch(/STARTTLS/);
    expect(ehlo.join('\n')).not.toMatch(/AUTH/);
    c.write('AUTH PLAIN\r\n');
    expect(await c.line()).toBe('530 5.7.0 Must issue a STARTTLS command first');
    c.write('MAIL FROM:<alice@example.test>\r\n');
    expect(await c.line()).toBe('530 5.7.0 Must issue a STARTTLS command first');
    c.write('STARTTLS\r\nAUTH PLAIN ' + plain('', ALICE.name, ALICE.password) + '\r\n');
    expect(await c.line()).toBe('220 2.0.0 Ready to start TLS');
    await c.startTls(stack.ca);
    // The smuggled AUTH was dropped: the session starts over and wants EHLO.
    c.write('AUTH PLAIN ' + plain('', ALICE.name, ALICE.password) + '\r\n');
    expect(await c.line()).toMatch(/^503 /);
    c.write('EHLO client.example\r\n');
    const secured = await c.until(/^250 /);
    expect(secured.join('\n')).toMatch(/AUTH XOAUTH2 OAUTHBEARER/);
    expect(secured.join('\n')).not.toMatch(/STARTTLS/);
    const token = await stack.idp.mintAccessToken({ user: BOB.name });
    c.write(`AUTH XOAUTH2 ${xoauth2(BOB.name, token)}\r\n`);
    expect(await c.line()).toBe('235 2.7.0 Authentication successful');
    c.write('MAIL FROM:<bob@example.test>\r\n');
    expect(await c.line()).toMatch(/^250 /);
    c.close();
  });
});

describe('limits', () => {
  let stack: Stack;
  beforeAll(async () => {
    stack = await startStack({
      config: {
        // The deprecated millisecond keys on purpose: an old configuration keeps its delays.
        limits: { maxConnectionsPerAddress: 5, maxAuthFailures: 3, authFailureDelayMs: 200, authFailureMaxDelayMs: 800 },
      },
    });
  });
  afterAll(() => stack?.close());

  it('refuses connections over the per-address limit, in protocol terms, and recovers', async () => {
    const open = await Promise.all(Array.from({ length: 5 }, () => TlsImap.connect(stack)));
    const refused = await TlsImap.connect(stack);
    expect(refused.greeting).toBe('* BYE [UNAVAILABLE] Too many connections from your address, try again later.');
    expect(await refused.waitClosed()).toBe(true);
    // Another address is not affected.
    const other = await TlsImap.connect({ ...stack, localAddress: '127.0.0.2' });
    expect(other.greeting).toMatch(/^\* OK /);
    other.close();
    open[0]!.close();
    await new Promise((r) => setTimeout(r, 100));
    const again = await TlsImap.connect(stack);
    expect(again.greeting).toMatch(/^\* OK /);
    again.close();
    for (const c of open) c.close();
    expect(stack.logs.some((l) => l['msg'] === 'connection refused: limit reached' && l['limit'] === 'per_address')).toBe(true);
  });

  it('slows repeated failures down and closes after too many on one connection', async () => {
    const c = await TlsImap.connect({ ...stack, localAddress: '127.0.0.3' });
    const times: number[] = [];
    for (let i = 1; i <= 3; i++) {
      const started = Date.now();
      const r = await c.command(`LOGIN "${ALICE.name}*x" "guess-${i}"`);
      times.push(Date.now() - started);
      expect(r.tagged).toMatch(/NO \[AUTHENTICATIONFAILED\]/);
    }
    expect(await c.readLine()).toBe('* BYE Too many authentication failures.');
    expect(await c.waitClosed()).toBe(true);
    // 200, 400, 800 ms: growing, capped.
    expect(times[0]!).toBeGreaterThanOrEqual(180);
    expect(times[2]!).toBeGreaterThan(times[0]! + 300);
    // The penalty belongs to that address: another one logs in at once.
    const started = Date.now();
    const ok = await TlsImap.connect({ ...stack, localAddress: '127.0.0.4' });
    expect((await ok.command(`LOGIN "${ALICE.name}" "${ALICE.password}"`)).tagged).toMatch(/OK/);
    expect(Date.now() - started).toBeLessThan(1500);
    ok.close();
  });
});

describe('PROXY protocol', () => {
  let stack: Stack;
  let proxied: number;
  beforeAll(async () => {
    stack = await startStack({
      config: {
        listeners: [
          { protocol: 'imap', bind: '127.0.0.1:0', tls: 'implicit' },
          { protocol: 'imap', bind: '127.0.0.1:0', tls: 'implicit', proxyProtocol: true, trustedProxies: ['127.0.0.5/32'] },
        ],
        limits: { authFailureDelaySeconds: 0, maxConnectionsPerAddress: 3 },
      },
    });
    proxied = stack.gate.listeners[1]!.port;
  });
  afterAll(() => stack?.close());

  async function viaProxy(localAddress: string, header: Buffer): Promise<TLSSocket> {
    const raw = netConnect({ host: '127.0.0.1', port: proxied, localAddress });
    await new Promise<void>((resolve, reject) => raw.once('connect', resolve).once('error', reject));
    raw.write(header);
    const secure = tlsConnect({ socket: raw, ca: stack.ca, servername: 'localhost' });
    await new Promise<void>((resolve, reject) => secure.once('secureConnect', resolve).once('error', reject).once('close', () => reject(new Error('closed'))));
    return secure;
  }

  it('takes the client address from a trusted proxy, all the way to Dovecot', async () => {
    const header = encodeProxyV2({ address: '198.51.100.23', port: 50123 }, { address: '127.0.0.1', port: 993 });
    const secure = await viaProxy('127.0.0.5', header);
    const client = new LineClient(secure);
    expect(await client.line()).toMatch(/^\* OK /);
    client.write(`a1 LOGIN "${BOB.name}" "${BOB.password}"\r\n`);
    expect((await client.until(/^a1 /)).at(-1)).toMatch(/^a1 OK/);
    client.close();
    expect(await stack.dovecot.readLog()).toMatch(/Login: user=<bob@example\.test>, method=PLAIN, rip=198\.51\.100\.23/);
    expect(stack.logs.some((l) => l['client'] === '198.51.100.23')).toBe(true);
  });

  it('counts IPv6 clients by their /64 for the per-address limit', async () => {
    const greet = async (address: string) => {
      const secure = await viaProxy('127.0.0.5', encodeProxyV2({ address, port: 50_000 }, { address: '::1', port: 993 }));
      const client = new LineClient(secure);
      return { client, greeting: await client.line() };
    };
    const inside = await Promise.all(['2001:db8:1:2::1', '2001:db8:1:2::2', '2001:db8:1:2:8000::3'].map(greet));
    try {
      for (const { greeting } of inside) expect(greeting).toMatch(/^\* OK /);
      // A fourth address of the same /64 is the same client.
      const rotated = await greet('2001:db8:1:2:ffff:ffff:ffff:fffe');
      expect(rotated.greeting).toBe('* BYE [UNAVAILABLE] Too many connections from your address, try again later.');
      rotated.client.close();
      // The neighbouring /64 is someone else.
      const neighbour = await greet('2001:db8:1:3::1');
      expect(neighbour.greeting).toMatch(/^\* OK /);
      neighbour.client.close();
    } finally {
      for (const { client } of inside) client.close();
    }
    expect(stack.logs.some((l) => l['msg'] === 'connection refused: limit reached' && l['client'] === '2001:db8:1:2:ffff:ffff:ffff:fffe')).toBe(true);
  });

  it('refuses a PROXY header from an untrusted address', async () => {
    const header = Buffer.from('PROXY TCP4 203.0.113.1 127.0.0.1 40000 993\r\n');
    await expect(viaProxy('127.0.0.6', header)).rejects.toThrow();
    expect(stack.logs.some((l) => l['msg'] === 'connection refused: PROXY protocol header from an untrusted address')).toBe(true);
  });

  it('refuses a trusted connection without a valid header', async () => {
    await expect(viaProxy('127.0.0.5', Buffer.from('a1 LOGIN x y\r\n'))).rejects.toThrow();
  });
});

describe('operations', () => {
  it('serves a renewed certificate to new connections without dropping open ones', async () => {
    const stack = await startStack({ config: {} });
    try {
      const open = await TlsImap.connect(stack);
      // Renew: a new certificate from a new CA, written over the configured files.
      const dir = `${stack.dovecot.dir}-renewed`;
      const renewed = await generateDevCertificate(dir);
      const fingerprint = (pem: string) => createHash('sha256').update(pem).digest('hex');
      const paths = stack.tlsPaths;
      writeFileSync(paths.cert, readFileSync(renewed.certPath));
      writeFileSync(paths.key, readFileSync(renewed.keyPath));
      expect(stack.gate.reloadCertificates()).toBe(true);
      const fresh = await TlsImap.connect({ ...stack, ca: readFileSync(renewed.caPath, 'utf8') });
      expect(fresh.greeting).toMatch(/^\* OK /);
      expect(fingerprint(fresh.socket.getPeerX509Certificate()!.toString())).toBe(
        fingerprint(new X509Certificate(readFileSync(renewed.certPath)).toString()),
      );
      fresh.close();
      expect((await open.command('NOOP')).tagged).toMatch(/OK/);
      open.close();
    } finally {
      await stack.close();
    }
  });

  it('on shutdown, lets a session finish within the grace time, then says goodbye', async () => {
    const stack = await startStack({ config: { limits: { shutdownGraceSeconds: 1, authFailureDelaySeconds: 0 } } });
    const idle = await TlsImap.connect(stack);
    const token = await stack.idp.mintAccessToken({ user: ALICE.name });
    const relayed = await tokenLogin(stack, ALICE.name, token);
    expect(relayed.tagged).toMatch(/OK/);
    const started = Date.now();
    const closing = stack.gate.close();
    // New connections are no longer accepted.
    await expect(TlsImap.connect(stack)).rejects.toThrow();
    expect(await idle.readLine(5000)).toBe('* BYE Server shutting down.');
    await closing;
    expect(Date.now() - started).toBeGreaterThanOrEqual(900);
    await stack.close().catch(() => undefined);
  });

  it('on shutdown, lets a relayed session run within the grace time, then cuts it', async () => {
    const stack = await startStack({ config: { limits: { shutdownGraceSeconds: 1, authFailureDelaySeconds: 0 } } });
    const c = await TlsImap.connect(stack);
    const token = await stack.idp.mintAccessToken({ user: ALICE.name });
    c.write(`a1 AUTHENTICATE XOAUTH2 ${xoauth2(ALICE.name, token)}\r\n`);
    expect((await c.until('a1')).tagged).toMatch(/^a1 OK/);
    const started = Date.now();
    const closing = stack.gate.close();
    // Still Dovecot's session during the grace time.
    expect((await c.command('SELECT INBOX')).tagged).toMatch(/^t1 OK/);
    await closing;
    expect(Date.now() - started).toBeGreaterThanOrEqual(900);
    expect(await c.waitClosed()).toBe(true);
    await stack.close().catch(() => undefined);
    expect(stack.logs.some((l) => l['msg'] === 'connection closed' && l['outcome'] === 'relayed' && l['user'] === ALICE.name)).toBe(true);
  });
});

/**
 * A transparent TLS tap between a real client and sasl-gate: it terminates the client's TLS with
 * sasl-gate's own certificate (so the client trusts it exactly as it trusts sasl-gate), opens a TLS
 * connection to sasl-gate, relays bytes both ways untouched and records them, so a test can say
 * which mechanism a client chose, whether it sent an initial response, and what it answered to an
 * error challenge.
 *
 * Optionally it edits the server's capability lines before login (and only those), to show a
 * client a server that offers fewer mechanisms (for example only XOAUTH2, or no SASL-IR).
 */
import { readFileSync } from 'node:fs';
import { createServer, type AddressInfo, type Server } from 'node:net';
import { connect as tlsConnect, TLSSocket, createSecureContext } from 'node:tls';

export interface WireChunk {
  from: 'client' | 'server';
  data: Buffer;
}

/** One client connection through the tap. */
export class WireSession {
  readonly chunks: WireChunk[] = [];
  closed = false;

  /** Everything the client sent, as one buffer. */
  clientBytes(): Buffer {
    return Buffer.concat(this.chunks.filter((c) => c.from === 'client').map((c) => c.data));
  }

  /** Everything the server sent (after any capability edits), as one buffer. */
  serverBytes(): Buffer {
    return Buffer.concat(this.chunks.filter((c) => c.from === 'server').map((c) => c.data));
  }

  /** The client's lines (CRLF-split; a trailing partial line is kept as the last element). */
  clientLines(): string[] {
    return splitLines(this.clientBytes());
  }

  serverLines(): string[] {
    return splitLines(this.serverBytes());
  }

  /**
   * The bytes the client sent after the server had sent a line matching `pattern` (for example
   * what a client answered to an error challenge), or undefined when no such line came.
   */
  clientBytesAfter(pattern: RegExp): Buffer | undefined {
    let server = '';
    let seen = false;
    const after: Buffer[] = [];
    for (const chunk of this.chunks) {
      if (chunk.from === 'server' && !seen) {
        server += chunk.data.toString('latin1');
        seen = server.split('\r\n').slice(0, -1).some((l) => pattern.test(l));
      } else if (chunk.from === 'client' && seen) {
        after.push(chunk.data);
      }
    }
    return seen ? Buffer.concat(after) : undefined;
  }
}

function splitLines(bytes: Buffer): string[] {
  const text = bytes.toString('latin1');
  const lines = text.split('\r\n');
  if (lines.at(-1) === '') lines.pop();
  return lines;
}

export interface WireTapOptions {
  /** sasl-gate's listener. */
  target: { host: string; port: number; ca: string };
  /** Certificate and key the tap presents (sasl-gate's own files). */
  tls: { cert: string; key: string };
  /**
   * Rewrites one server line (without CRLF) before login; return it unchanged to keep it. Only
   * lines before the login reply are passed through here; after it the relay is byte-exact.
   */
  editServerLine?: (line: string) => string;
}

/**
 * Lines that end the pre-login phase: sasl-gate's IMAP login reply (a tagged OK that carries the
 * post-login capabilities) or SMTP's 235.
 */
const LOGGED_IN = /^(?:[^ *+]+ OK \[CAPABILITY .*|235[ -].*)$/;

export class WireTap {
  private constructor(
    private readonly server: Server,
    readonly port: number,
    readonly sessions: WireSession[],
    private readonly sockets: Set<{ destroy(): void }>,
  ) {}

  static async start(opts: WireTapOptions): Promise<WireTap> {
    const context = createSecureContext({ cert: readFileSync(opts.tls.cert), key: readFileSync(opts.tls.key) });
    const sessions: WireSession[] = [];
    const sockets = new Set<{ destroy(): void }>();
    const server = createServer((raw) => {
      const session = new WireSession();
      sessions.push(session);
      const client = new TLSSocket(raw, { isServer: true, secureContext: context });
      const upstream = tlsConnect({ host: opts.target.host, port: opts.target.port, ca: opts.target.ca, servername: 'localhost' });
      let editing = opts.editServerLine !== undefined;
      let pending = '';
      const pendingClient: Buffer[] = [];
      let upstreamReady = false;
      sockets.add(client);
      sockets.add(upstream);
      const end = () => {
        sockets.delete(client);
        sockets.delete(upstream);
        session.closed = true;
        client.destroy();
        upstream.destroy();
      };
      client.on('error', end);
      upstream.on('error', end);
      client.on('close', end);
      upstream.on('close', end);
      upstream.once('secureConnect', () => {
        upstreamReady = true;
        for (const b of pendingClient.splice(0)) upstream.write(b);
      });
      client.on('data', (data: Buffer) => {
        session.chunks.push({ from: 'client', data });
        if (upstreamReady) upstream.write(data);
        else pendingClient.push(data);
      });
      upstream.on('data', (data: Buffer) => {
        if (!editing) {
          session.chunks.push({ from: 'server', data });
          client.write(data);
          return;
        }
        // Pre-login replies are lines; edit whole lines, keep a partial one for later.
        pending += data.toString('latin1');
        let out = '';
        for (let end = pending.indexOf('\r\n'); end >= 0 && editing; end = pending.indexOf('\r\n')) {
          const line = pending.slice(0, end);
          pending = pending.slice(end + 2);
          out += `${opts.editServerLine!(line)}\r\n`;
          if (LOGGED_IN.test(line)) editing = false;
        }
        if (!editing) {
          out += pending;
          pending = '';
        }
        if (out) {
          const bytes = Buffer.from(out, 'latin1');
          session.chunks.push({ from: 'server', data: bytes });
          client.write(bytes);
        }
      });
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    return new WireTap(server, (server.address() as AddressInfo).port, sessions, sockets);
  }

  /** The most recent connection. */
  last(): WireSession {
    const s = this.sessions.at(-1);
    if (!s) throw new Error('no connection went through the tap');
    return s;
  }

  async close(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}

/** Removes IMAP capabilities (e.g. `AUTH=OAUTHBEARER`, `SASL-IR`) from greeting and CAPABILITY lines. */
export function withoutImapCapabilities(...drop: string[]) {
  const upper = new Set(drop.map((d) => d.toUpperCase()));
  const strip = (list: string) =>
    list
      .split(' ')
      .filter((c) => !upper.has(c.toUpperCase()))
      .join(' ');
  return (line: string): string => {
    let m = /^(\* OK \[CAPABILITY )([^\]]*)(\].*)$/.exec(line);
    if (m) return `${m[1]}${strip(m[2]!)}${m[3]}`;
    m = /^(\* CAPABILITY )(.*)$/.exec(line);
    if (m) return `${m[1]}${strip(m[2]!)}`;
    return line;
  };
}

/** Removes SMTP AUTH mechanisms (e.g. `OAUTHBEARER`) from the EHLO reply's AUTH line. */
export function withoutSmtpMechanisms(...drop: string[]) {
  const upper = new Set(drop.map((d) => d.toUpperCase()));
  return (line: string): string => {
    const m = /^(250[- ]AUTH )(.*)$/i.exec(line);
    if (!m) return line;
    return `${m[1]}${m[2]!
      .split(' ')
      .filter((x) => !upper.has(x.toUpperCase()))
      .join(' ')}`;
  };
}

/**
 * A deliberately tiny SMTP client over implicit TLS (SMTPS, RFC 8314) for tests that need to see
 * the exact replies a server sends, to pipeline several commands in one write, or to send bytes
 * a polite client never would.
 */
import { connect, type TLSSocket } from 'node:tls';
import type { SmtpReply } from './smtp-raw.js';

export type { SmtpReply } from './smtp-raw.js';

/** Where to connect and which CA to trust. */
export interface SmtpsTarget {
  host: string;
  port: number;
  /** PEM of the CA that signed the server's certificate. */
  ca: string;
  /** Name checked against the certificate; `localhost` by default. */
  servername?: string;
  timeoutMs?: number;
}

/** One raw SMTPS connection that hands out replies in order. */
export class RawSmtps {
  /** The server greeting (normally `220 ...`). */
  greeting: SmtpReply = { code: 0, lines: [], text: '' };
  private buffer = '';
  private readonly lines: string[] = [];
  private waiter: ((err: Error | null) => void) | undefined;
  private failure: Error | undefined;
  private ended = false;
  /** The client's port of this connection, as the server sees it (kept after the connection ends). */
  readonly localPort: number;

  private constructor(
    readonly socket: TLSSocket,
    private readonly timeoutMs: number,
  ) {
    this.localPort = socket.localPort ?? 0;
    socket.on('data', (chunk: Buffer) => {
      this.buffer += chunk.toString('latin1');
      for (let end = this.buffer.indexOf('\r\n'); end >= 0; end = this.buffer.indexOf('\r\n')) {
        this.lines.push(this.buffer.slice(0, end));
        this.buffer = this.buffer.slice(end + 2);
      }
      this.wake(null);
    });
    socket.on('error', (err) => this.fail(err));
    socket.on('close', () => {
      this.ended = true;
      this.fail(new Error('connection closed'));
    });
  }

  /** Connects with TLS, verifying the certificate against `ca`, and reads the greeting. */
  static async connect(target: SmtpsTarget): Promise<RawSmtps> {
    const socket = connect({
      host: target.host,
      port: target.port,
      ca: target.ca,
      servername: target.servername ?? 'localhost',
    });
    await new Promise<void>((resolve, reject) => {
      socket.once('secureConnect', resolve);
      socket.once('error', reject);
    });
    const client = new RawSmtps(socket, target.timeoutMs ?? 10_000);
    client.greeting = await client.readReply();
    return client;
  }


  private wake(err: Error | null): void {
    const waiter = this.waiter;
    this.waiter = undefined;
    waiter?.(err);
  }

  private fail(err: Error): void {
    this.failure ??= err;
    this.wake(err);
  }

  private async readLine(timeoutMs: number): Promise<string> {
    for (;;) {
      const line = this.lines.shift();
      if (line !== undefined) return line;
      if (this.failure) throw this.failure;
      await new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => {
          this.waiter = undefined;
          reject(new Error(`no line from the server within ${timeoutMs} ms`));
        }, timeoutMs);
        this.waiter = (err) => {
          clearTimeout(timer);
          if (err) reject(err);
          else resolve();
        };
      });
    }
  }

  /** Reads one complete (possibly multi-line) reply. */
  async readReply(timeoutMs = this.timeoutMs): Promise<SmtpReply> {
    const lines: string[] = [];
    for (;;) {
      const line = await this.readLine(timeoutMs);
      lines.push(line);
      const match = /^(\d{3})(?:([ -])(.*))?$/.exec(line);
      if (!match) throw new Error(`malformed SMTP reply line: ${JSON.stringify(line)}`);
      if (match[2] !== '-') return { code: Number(match[1]), lines, text: match[3] ?? '' };
    }
  }

  /** Reads `count` replies in order (for pipelined commands). */
  async readReplies(count: number, timeoutMs = this.timeoutMs): Promise<SmtpReply[]> {
    const replies: SmtpReply[] = [];
    for (let i = 0; i < count; i++) replies.push(await this.readReply(timeoutMs));
    return replies;
  }

  /** Sends raw bytes as-is (strings as latin1; add CRLF yourself). */
  write(data: string | Buffer): void {
    this.socket.write(typeof data === 'string' ? Buffer.from(data, 'latin1') : data);
  }

  /** Sends one command line and reads its reply. */
  async command(line: string, timeoutMs = this.timeoutMs): Promise<SmtpReply> {
    this.write(`${line}\r\n`);
    return this.readReply(timeoutMs);
  }

  /** Whether the server has closed the connection (after everything it sent has been read). */
  async waitClosed(timeoutMs = 5_000): Promise<boolean> {
    const deadline = Date.now() + timeoutMs;
    while (!this.ended && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    return this.ended;
  }

  /** Closes the connection without QUIT. */
  close(): void {
    this.socket.destroy();
  }
}

/** Dot-stuffs a message for DATA (CRLF line ends) and appends the terminating `.` line. */
export function dataBlock(message: string): string {
  const body = message
    .replace(/\r?\n/g, '\r\n')
    .split('\r\n')
    .map((l) => (l.startsWith('.') ? `.${l}` : l))
    .join('\r\n');
  return `${body}${body.endsWith('\r\n') ? '' : '\r\n'}.\r\n`;
}

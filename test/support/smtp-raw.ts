/**
 * A deliberately tiny SMTP client for tests that need to see the exact bytes a server sends:
 * line based, one command at a time, multi-line replies gathered into one value.
 */
import { connect, type Socket } from 'node:net';

/** One complete server reply: `250-a`, `250-b`, `250 c` is one reply with three lines. */
export interface SmtpReply {
  /** The three-digit reply code. */
  code: number;
  /** Every line as received, without CRLF. */
  lines: string[];
  /** The text of the last line (after `NNN `), e.g. `2.1.0 Ok`. */
  text: string;
}

/** Options for {@link RawSmtp.connect}. */
export interface RawSmtpOptions {
  /** Local address to connect from (any 127.x.y.z works on Linux loopback). */
  localAddress?: string;
  timeoutMs?: number;
}

/** One raw SMTP connection that hands out replies in order. */
export class RawSmtp {
  /** The server greeting (normally `220 ...`). */
  greeting: SmtpReply = { code: 0, lines: [], text: '' };
  private buffer = '';
  private readonly lines: string[] = [];
  private waiter: ((err: Error | null) => void) | undefined;
  private failure: Error | undefined;

  private constructor(
    private readonly socket: Socket,
    private readonly timeoutMs: number,
  ) {
    socket.on('data', (chunk: Buffer) => {
      this.buffer += chunk.toString('latin1');
      for (let end = this.buffer.indexOf('\r\n'); end >= 0; end = this.buffer.indexOf('\r\n')) {
        this.lines.push(this.buffer.slice(0, end));
        this.buffer = this.buffer.slice(end + 2);
      }
      this.wake(null);
    });
    socket.on('error', (err) => this.fail(err));
    socket.on('close', () => this.fail(new Error('connection closed')));
  }

  /** Connects and reads the greeting. */
  static async connect(host: string, port: number, options: RawSmtpOptions = {}): Promise<RawSmtp> {
    const socket = connect({ host, port, ...(options.localAddress ? { localAddress: options.localAddress } : {}) });
    await new Promise<void>((resolve, reject) => {
      socket.once('connect', resolve);
      socket.once('error', reject);
    });
    const client = new RawSmtp(socket, options.timeoutMs ?? 10_000);
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

  private async readLine(): Promise<string> {
    for (;;) {
      const line = this.lines.shift();
      if (line !== undefined) return line;
      if (this.failure) throw this.failure;
      await new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => {
          this.waiter = undefined;
          reject(new Error(`no line from the server within ${this.timeoutMs} ms`));
        }, this.timeoutMs);
        this.waiter = (err) => {
          clearTimeout(timer);
          if (err) reject(err);
          else resolve();
        };
      });
    }
  }

  /** Reads one complete (possibly multi-line) reply. */
  async readReply(): Promise<SmtpReply> {
    const lines: string[] = [];
    for (;;) {
      const line = await this.readLine();
      lines.push(line);
      const match = /^(\d{3})(?:([ -])(.*))?$/.exec(line);
      if (!match) throw new Error(`malformed SMTP reply line: ${JSON.stringify(line)}`);
      // "250-..." continues a reply, "250 ..." (or a bare "250") ends it.
      if (match[2] !== '-') {
        return { code: Number(match[1]), lines, text: match[3] ?? '' };
      }
    }
  }

  /** Sends raw text as-is (add CRLF yourself). */
  write(text: string): void {
    this.socket.write(text, 'latin1');
  }

  /** Sends one command line and reads its reply. */
  async command(line: string): Promise<SmtpReply> {
    this.write(`${line}\r\n`);
    return this.readReply();
  }

  /** Sends DATA, then the message (dot-stuffed, CRLF line ends) and the final dot; returns the reply to the message. */
  async data(message: string): Promise<SmtpReply> {
    const go = await this.command('DATA');
    if (go.code !== 354) return go;
    const body = message
      .replace(/\r?\n/g, '\r\n')
      .split('\r\n')
      .map((l) => (l.startsWith('.') ? `.${l}` : l))
      .join('\r\n');
    this.write(`${body}${body.endsWith('\r\n') ? '' : '\r\n'}.\r\n`);
    return this.readReply();
  }

  /** Closes the connection without QUIT. */
  close(): void {
    this.socket.destroy();
  }
}

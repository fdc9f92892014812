/**
 * A deliberately tiny SMTP client for tests that need to see the exact bytes a server sends:
 * line based, one command at a time, multi-line replies gathered into one value.
 */
import { connect, type Socket } from 'node:net';
import { LineReader } from './line-reader.js';

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

/** One raw SMTP connection (plain or TLS) that hands out replies in order. */
export class RawSmtp {
  /** The server greeting (normally `220 ...`). */
  greeting: SmtpReply = { code: 0, lines: [], text: '' };
  /** The client's port of this connection, as the server sees it (kept after the connection ends). */
  readonly localPort: number;
  private readonly reader: LineReader;

  private constructor(
    readonly socket: Socket,
    private readonly timeoutMs: number,
  ) {
    this.localPort = socket.localPort ?? 0;
    this.reader = new LineReader(socket);
  }

  /** Connects and reads the greeting. */
  static async connect(host: string, port: number, options: RawSmtpOptions = {}): Promise<RawSmtp> {
    const socket = connect({ host, port, ...(options.localAddress ? { localAddress: options.localAddress } : {}) });
    await new Promise<void>((resolve, reject) => {
      socket.once('connect', resolve);
      socket.once('error', reject);
    });
    return RawSmtp.over(socket, options.timeoutMs ?? 10_000);
  }

  /** Speaks SMTP over a socket that is already connected (and, for SMTPS, encrypted); reads the greeting. */
  static async over(socket: Socket, timeoutMs: number): Promise<RawSmtp> {
    const client = new RawSmtp(socket, timeoutMs);
    client.greeting = await client.readReply();
    return client;
  }

  /** Reads one complete (possibly multi-line) reply. */
  async readReply(timeoutMs = this.timeoutMs): Promise<SmtpReply> {
    const lines: string[] = [];
    for (;;) {
      const line = await this.reader.next(timeoutMs);
      lines.push(line);
      const match = /^(\d{3})(?:([ -])(.*))?$/.exec(line);
      if (!match) throw new Error(`malformed SMTP reply line: ${JSON.stringify(line)}`);
      // "250-..." continues a reply, "250 ..." (or a bare "250") ends it.
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

  /** Sends DATA, then the message (dot-stuffed, CRLF line ends) and the final dot; returns the reply to the message. */
  async data(message: string): Promise<SmtpReply> {
    const go = await this.command('DATA');
    if (go.code !== 354) return go;
    this.write(dataBlock(message));
    return this.readReply();
  }

  /** Whether the server has closed the connection (after everything it sent has been read). */
  waitClosed(timeoutMs = 5_000): Promise<boolean> {
    return this.reader.waitEnded(timeoutMs);
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

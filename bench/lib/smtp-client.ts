/**
 * A small SMTP client for the submission benchmark: connect (TLS or not), EHLO, AUTH, then send
 * messages on the same connection, each as `MAIL`, `RCPT` and `DATA` pipelined (RFC 2920), the
 * content written in one go, and the reply to its end awaited before the next message.
 */
import { connect as netConnect, type Socket } from 'node:net';
import { connect as tlsConnect } from 'node:tls';

export interface SmtpClientOptions {
  host: string;
  port: number;
  tls: boolean;
  ca?: string;
  timeoutMs?: number;
}

/** One reply: its code and its lines. */
export interface BenchReply {
  code: number;
  lines: string[];
}

export class SmtpBench {
  private partial = '';
  private current: string[] = [];
  private readonly replies: BenchReply[] = [];
  private waiter: (() => void) | undefined;
  private failure: Error | undefined;

  private constructor(
    readonly socket: Socket,
    private readonly timeoutMs: number,
  ) {
    socket.on('data', (chunk: Buffer) => {
      this.partial += chunk.toString('latin1');
      for (let end = this.partial.indexOf('\r\n'); end >= 0; end = this.partial.indexOf('\r\n')) {
        const line = this.partial.slice(0, end);
        this.partial = this.partial.slice(end + 2);
        this.current.push(line);
        if (line[3] !== '-') {
          this.replies.push({ code: Number(line.slice(0, 3)), lines: this.current });
          this.current = [];
        }
      }
      this.waiter?.();
    });
    socket.on('error', (err) => {
      this.failure = err;
      this.waiter?.();
    });
    socket.on('close', () => {
      this.failure ??= new Error('connection closed');
      this.waiter?.();
    });
  }

  /** Connects and reads the greeting. */
  static async connect(o: SmtpClientOptions): Promise<SmtpBench> {
    const socket = o.tls
      ? tlsConnect({ host: o.host, port: o.port, ...(o.ca ? { ca: o.ca } : {}), servername: 'localhost' })
      : netConnect({ host: o.host, port: o.port });
    await new Promise<void>((resolve, reject) => {
      socket.once(o.tls ? 'secureConnect' : 'connect', () => resolve());
      socket.once('error', reject);
    });
    // Every write is a whole request: no waiting for an ACK of the previous one (Nagle).
    socket.setNoDelay(true);
    const client = new SmtpBench(socket, o.timeoutMs ?? 60_000);
    const greeting = await client.reply();
    if (greeting.code !== 220) throw new Error(`greeting: ${greeting.lines.join(' ')}`);
    return client;
  }

  /** The next reply. */
  async reply(): Promise<BenchReply> {
    const deadline = Date.now() + this.timeoutMs;
    for (;;) {
      const next = this.replies.shift();
      if (next) return next;
      if (this.failure) throw this.failure;
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`no SMTP reply within ${this.timeoutMs} ms`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        this.waiter = () => {
          clearTimeout(timer);
          this.waiter = undefined;
          resolve();
        };
      });
    }
  }

  /** Sends a command line and returns its reply, which must have the expected code. */
  async command(line: string, expect: number): Promise<BenchReply> {
    this.socket.write(`${line}\r\n`);
    const r = await this.reply();
    if (r.code !== expect) throw new Error(`${line.split(' ')[0]}: expected ${expect}, got ${r.lines.join(' ')}`);
    return r;
  }

  /** EHLO, then AUTH with an initial response (`XOAUTH2 <b64>` or `PLAIN <b64>`). */
  async login(auth: string): Promise<void> {
    await this.command('EHLO bench.example', 250);
    await this.command(`AUTH ${auth}`, 235);
  }

  /** Sends one message (content already dot-stuffed, ending in CRLF) and returns once it is queued. */
  async send(from: string, to: string, content: Buffer): Promise<void> {
    this.socket.write(`MAIL FROM:<${from}>\r\nRCPT TO:<${to}>\r\nDATA\r\n`);
    for (const expect of [250, 250, 354]) {
      const r = await this.reply();
      if (r.code !== expect) throw new Error(`expected ${expect}, got ${r.lines.join(' ')}`);
    }
    // Content and the final dot in one go, as a client with one buffer would send them.
    this.socket.cork();
    this.socket.write(content);
    this.socket.write('.\r\n');
    this.socket.uncork();
    const done = await this.reply();
    if (done.code !== 250) throw new Error(`end of data: ${done.lines.join(' ')}`);
  }

  async quit(): Promise<void> {
    await this.command('QUIT', 221).catch(() => undefined);
    this.socket.destroy();
  }
}

/** A message of about `size` bytes: headers and base64-like lines of 76 characters, CRLF line ends, no leading dots. */
export function makeSmtpMessage(from: string, to: string, n: number, size: number): Buffer {
  const head = `From: <${from}>\r\nTo: <${to}>\r\nSubject: bench ${n}\r\nMessage-ID: <bench-${n}-${size}@bench.example>\r\n\r\n`;
  const line = `${'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/'.repeat(2).slice(0, 76)}\r\n`;
  const lines = Math.max(1, Math.ceil((size - head.length) / line.length));
  return Buffer.from(head + line.repeat(lines), 'latin1');
}

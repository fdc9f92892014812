import type { Socket } from 'node:net';
import { AuthError } from '../errors.js';
import type { BackendConnector, ConnectionEnds } from '../imap/backend.js';

/** A complete SMTP reply: its code and the text of each line. */
export interface SmtpReply {
  code: number;
  lines: string[];
}

const MAX_REPLY_BYTES = 1 << 16;

/** xtext (RFC 3461): `+`, `=`, controls, space and 8-bit bytes become `+XX`. */
export function xtext(value: string): string {
  let out = '';
  for (const byte of Buffer.from(value, 'utf8')) {
    out += byte < 0x21 || byte > 0x7e || byte === 0x2b || byte === 0x3d ? `+${byte.toString(16).toUpperCase().padStart(2, '0')}` : String.fromCharCode(byte);
  }
  return out;
}

/** The extensions of an EHLO reply (first line is the greeting), upper-cased keywords with parameters. */
export function ehloExtensions(reply: SmtpReply): string[] {
  return reply.lines.slice(1).map((l) => l.trim()).filter((l) => l.length > 0);
}

/**
 * A conversation with the backend SMTP server before the relay: reads whole (multi-line)
 * replies, sends commands, and hands over the socket with any bytes read past the last reply.
 */
export class SmtpBackendConversation {
  private buffer: Buffer = Buffer.alloc(0);
  private waiters: Array<() => void> = [];
  private failure: Error | undefined;
  private readonly onData = (chunk: Buffer) => {
    this.buffer = this.buffer.length === 0 ? chunk : Buffer.concat([this.buffer, chunk]);
    if (this.buffer.length > MAX_REPLY_BYTES) this.fail(new AuthError('backend_unavailable', 'backend reply too long'));
    this.wake();
  };
  private readonly onEnd = () => this.fail(new AuthError('backend_unavailable', 'backend closed the connection'));
  private readonly onError = (err: Error) =>
    this.fail(new AuthError('backend_unavailable', `backend connection failed: ${err.message}`, { cause: err }));

  constructor(
    readonly socket: Socket,
    private readonly responseTimeoutMs: number,
  ) {
    socket.on('data', this.onData);
    socket.on('end', this.onEnd);
    socket.on('close', this.onEnd);
    socket.on('error', this.onError);
  }

  /** Opens a conversation: connect, then the server's 220 greeting. */
  static async open(connect: BackendConnector, responseTimeoutMs: number, ends?: ConnectionEnds): Promise<SmtpBackendConversation> {
    const conversation = new SmtpBackendConversation(await connect(ends), responseTimeoutMs);
    try {
      const greeting = await conversation.reply();
      if (greeting.code !== 220) {
        throw new AuthError('backend_unavailable', `backend greeting: ${greeting.code} ${greeting.lines.join(' ').slice(0, 200)}`);
      }
    } catch (err) {
      conversation.close();
      throw err;
    }
    return conversation;
  }

  /** Sends one command line. */
  send(line: string): void {
    this.socket.write(`${line}\r\n`);
  }

  /** Sends a command and reads its reply. */
  async command(line: string): Promise<SmtpReply> {
    this.send(line);
    return this.reply();
  }

  /** Reads one complete reply. */
  async reply(): Promise<SmtpReply> {
    const lines: string[] = [];
    for (;;) {
      const line = await this.readLine();
      const match = /^(\d{3})([ -]?)(.*)$/.exec(line);
      if (!match) throw new AuthError('backend_unavailable', `malformed backend reply: ${line.slice(0, 200)}`);
      lines.push(match[3] ?? '');
      if (match[2] !== '-') return { code: Number(match[1]), lines };
    }
  }

  /** Stops reading and returns the bytes that arrived after the last reply read. */
  detach(): Buffer {
    this.socket.off('data', this.onData);
    this.socket.off('end', this.onEnd);
    this.socket.off('close', this.onEnd);
    this.socket.off('error', this.onError);
    const rest = this.buffer;
    this.buffer = Buffer.alloc(0);
    return rest;
  }

  /** Ends the conversation politely. */
  close(): void {
    this.detach();
    this.socket.on('error', () => undefined);
    if (!this.socket.destroyed) this.socket.end('QUIT\r\n');
    setTimeout(() => this.socket.destroy(), 2000).unref();
  }

  private fail(error: Error): void {
    this.failure ??= error;
    this.wake();
  }

  private wake(): void {
    const waiters = this.waiters;
    this.waiters = [];
    for (const w of waiters) w();
  }

  private async readLine(): Promise<string> {
    const deadline = Date.now() + this.responseTimeoutMs;
    for (;;) {
      const end = this.buffer.indexOf(0x0a);
      if (end >= 0) {
        const line = this.buffer.subarray(0, end).toString('utf8').replace(/\r$/, '');
        this.buffer = this.buffer.subarray(end + 1);
        return line;
      }
      if (this.failure) throw this.failure;
      const remaining = deadline - Date.now();
      if (remaining <= 0) throw new AuthError('backend_unavailable', 'backend did not answer in time');
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, remaining);
        this.waiters.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
  }
}

import { BackendError } from '../errors.js';
import { BackendConversation } from '../net/backend-conversation.js';
import type { BackendConnector, ConnectionEnds } from '../net/connector.js';

/** A complete SMTP reply: its code and the text of each line. */
export interface SmtpReply {
  code: number;
  lines: string[];
}

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
export class SmtpBackendConversation extends BackendConversation {
  protected farewell(): string {
    return 'QUIT\r\n';
  }

  /** Opens a conversation: connect, then the server's 220 greeting. */
  static async open(connect: BackendConnector, responseTimeoutMs: number, ends?: ConnectionEnds): Promise<SmtpBackendConversation> {
    const conversation = new SmtpBackendConversation(await connect(ends), responseTimeoutMs, 1 << 16);
    try {
      const greeting = await conversation.reply();
      if (greeting.code !== 220) {
        throw new BackendError(`backend greeting: ${greeting.code} ${greeting.lines.join(' ').slice(0, 200)}`);
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
      if (!match) throw new BackendError(`malformed backend reply: ${line.slice(0, 200)}`);
      lines.push(match[3] ?? '');
      if (match[2] !== '-') return { code: Number(match[1]), lines };
    }
  }
}

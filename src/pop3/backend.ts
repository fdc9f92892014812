import { BackendError } from '../errors.js';
import { BackendConversation } from '../net/backend-conversation.js';

/** One reply of the backend: `+OK text`, `-ERR text`, or a SASL continuation `+ text`. */
export type Pop3Reply = { kind: 'ok' | 'err' | 'continue'; text: string };

/** Reads a POP3 status line; anything else is a broken backend. */
export function parsePop3Reply(line: string): Pop3Reply {
  const match = /^(\+OK|-ERR)(?: (.*))?$/i.exec(line);
  if (match) return { kind: match[1]!.toUpperCase() === '+OK' ? 'ok' : 'err', text: match[2] ?? '' };
  if (line === '+' || line.startsWith('+ ')) return { kind: 'continue', text: line.slice(2) };
  throw new BackendError(`unexpected backend reply: ${line.slice(0, 200)}`);
}

/**
 * A pre-login conversation with Dovecot's POP3: greeting, XCLIENT, login. Hands the socket (and
 * any bytes read past the login reply) to the relay.
 */
export class Pop3BackendConversation extends BackendConversation {
  /** Whether the greeting said `[XCLIENT]`: Dovecot trusts us to name the client's address. */
  xclientOffered = false;

  protected farewell(): string {
    return 'QUIT\r\n';
  }

  /** Reads the greeting; a backend that does not greet with `+OK` is unavailable. */
  async greeting(): Promise<void> {
    const line = await this.readLine();
    if (!/^\+OK\b/i.test(line)) throw new BackendError(`unexpected backend greeting: ${line.slice(0, 200)}`);
    this.xclientOffered = /^\+OK \[XCLIENT\]/i.test(line);
  }

  /** The next status line. */
  async reply(): Promise<Pop3Reply> {
    return parsePop3Reply(await this.readLine());
  }

  /** The body of a multi-line reply, up to the lone `.`, un-dot-stuffed. */
  async readBody(): Promise<string[]> {
    const lines: string[] = [];
    for (;;) {
      const line = await this.readLine();
      if (line === '.') return lines;
      lines.push(line.startsWith('.') ? line.slice(1) : line);
      if (lines.length > 1000) throw new BackendError('backend sent an over-long list');
    }
  }
}

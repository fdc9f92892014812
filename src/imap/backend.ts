import { BackendError } from '../errors.js';
import { BackendConversation } from '../net/backend-conversation.js';
import { encodeAstring } from './parser.js';

/** Capabilities from a `[CAPABILITY ...]` response code or a `* CAPABILITY` line. */
export function parseCapabilities(line: string): string[] | undefined {
  const code = /^\S+ (?:OK|PREAUTH) \[CAPABILITY ([^\]]*)\]/i.exec(line) ?? /^\* CAPABILITY (.*)$/i.exec(line);
  return code?.[1]?.split(' ').filter((c) => c.length > 0);
}

/**
 * A pre-login conversation with the backend: greeting, ID, login. Reads lines, sends commands
 * with its own tags, and hands the socket (and any bytes read past the login reply) to the relay.
 */
export class ImapBackendConversation extends BackendConversation {
  private tagCounter = 0;

  /** Capabilities from the backend's greeting, when it sent them. */
  greetingCapabilities: string[] | undefined;

  protected farewell(): string {
    return `${this.nextTag()} LOGOUT\r\n`;
  }

  /** Reads the greeting; a backend that does not greet with `* OK` is unavailable. */
  async greeting(): Promise<void> {
    const line = await this.readLine();
    if (!/^\* OK\b/i.test(line)) {
      throw new BackendError(`unexpected backend greeting: ${line.slice(0, 200)}`);
    }
    this.greetingCapabilities = parseCapabilities(line);
  }

  /** The next tag for a command of ours. */
  nextTag(): string {
    this.tagCounter += 1;
    return `sg${this.tagCounter}`;
  }

  /** Reads lines until the tagged reply to `tag`; returns it and the untagged lines before it. */
  async readTagged(tag: string): Promise<{ line: string; untagged: string[] }> {
    const untagged: string[] = [];
    for (;;) {
      const line = await this.readLine();
      if (line.startsWith(`${tag} `)) return { line, untagged };
      if (/^\* BYE\b/i.test(line)) {
        throw new BackendError(`backend said: ${line.slice(0, 200)}`);
      }
      untagged.push(line);
    }
  }

  /** Reads lines until a continuation request (`+`) or the tagged reply to `tag`. */
  async readContinuationOrTagged(tag: string): Promise<{ continuation: boolean; line: string }> {
    for (;;) {
      const line = await this.readLine();
      if (line.startsWith('+')) return { continuation: true, line };
      if (line.startsWith(`${tag} `)) return { continuation: false, line };
      if (/^\* BYE\b/i.test(line)) {
        throw new BackendError(`backend said: ${line.slice(0, 200)}`);
      }
    }
  }

  /** Sends `ID` with the real client's address, so the backend logs and rate-limits the client. */
  async sendId(fields: Array<[string, string]>): Promise<string> {
    const tag = this.nextTag();
    const list = fields
      .map(([k, v]) => `${encodeAstring(Buffer.from(k), { literal: false, literalPlus: false }).text} ${quoteIdValue(v)}`)
      .join(' ');
    this.write(`${tag} ID (${list})\r\n`);
    return tag;
  }

  /**
   * Sends a command whose string arguments may need literals: with LITERAL+ in one write,
   * otherwise waiting for each `+` as RFC 3501 requires.
   */
  async sendCommand(
    tag: string,
    parts: Array<{ text: string; literal?: Buffer }>,
    literalPlus: boolean,
  ): Promise<{ line: string } | undefined> {
    for (const [i, part] of parts.entries()) {
      const last = i === parts.length - 1;
      if (part.literal === undefined) {
        this.write(`${part.text}${last ? '\r\n' : ''}`);
        continue;
      }
      this.write(`${part.text}\r\n`);
      if (!literalPlus) {
        const reply = await this.readContinuationOrTagged(tag);
        if (!reply.continuation) return { line: reply.line };
      }
      this.write(part.literal);
      if (last) this.write('\r\n');
    }
    return undefined;
  }
}

function quoteIdValue(value: string): string {
  // ID values are shown in logs: keep them printable and short rather than using literals.
  const clean = value.replace(/[^\x20-\x7e]/g, '?').slice(0, 1024);
  return `"${clean.replace(/[\\"]/g, (c) => `\\${c}`)}"`;
}

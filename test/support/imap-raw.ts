/**
 * IMAP straight to a server (Dovecot, without sasl-gate) for tests, over the IMAP client of
 * `sasl-gate load`: one command at a time, the untagged lines and the tagged status of each.
 */
import { ImapClient } from '../../src/load/imap.js';

/** A tagged command's outcome: the untagged lines before it and the tagged line itself. */
export interface ImapReply {
  /** Untagged responses before the tagged one (literals shown as `{}`). */
  untagged: string[];
  /** The tagged completion line, e.g. `L1 OK [CAPABILITY ...] Logged in`. */
  tagged: string;
  status: 'OK' | 'NO' | 'BAD';
  /** Text after the status: `[CODE ...] human text`. */
  text: string;
}

/** One plain-TCP IMAP connection. */
export class RawImap {
  private constructor(private readonly client: ImapClient) {}

  /** Connects and reads the greeting. */
  static async connect(host: string, port: number, timeoutMs = 10_000): Promise<RawImap> {
    return new RawImap(await ImapClient.open({ host, port, timeoutMs }));
  }

  /** The server greeting, without CRLF. */
  get greeting(): string {
    return this.client.greetingLine;
  }

  /** Sends `<tag> <command>` and collects the untagged lines until the tagged response. */
  async command(command: string): Promise<ImapReply> {
    const { untagged, line, status, text } = await this.client.exchange(command);
    return { untagged, tagged: line, status, text };
  }

  /** Closes the connection without LOGOUT. */
  close(): void {
    this.client.wire.close();
  }
}

/** Base64 of a SASL PLAIN message: authzid NUL authcid NUL password. */
export function saslPlain(authzid: string, authcid: string, password: string): string {
  return Buffer.from(`${authzid}\0${authcid}\0${password}`, 'utf8').toString('base64');
}

/** An IMAP quoted string (the test values never hold CR, LF or NUL). */
export function quoted(value: string): string {
  return `"${value.replace(/[\\"]/g, (c) => `\\${c}`)}"`;
}

/**
 * A deliberately tiny IMAP client for tests that need to see the exact bytes a server sends:
 * line based, no literals, no parsing beyond the tag and status of the final response.
 */
import { connect, type Socket } from 'node:net';
import { LineReader } from './line-reader.js';

/** A tagged command's outcome: the untagged lines before it and the tagged line itself. */
export interface ImapReply {
  /** Lines received before the tagged response (untagged data, continuations). */
  untagged: string[];
  /** The tagged completion line, e.g. `A1 OK [CAPABILITY ...] Logged in`. */
  tagged: string;
  status: 'OK' | 'NO' | 'BAD';
  /** Text after the status: `[CODE ...] human text`. */
  text: string;
}

/** One raw IMAP connection that hands out CRLF-terminated lines in order. */
export class RawImap {
  /** The server greeting, without CRLF. */
  greeting = '';
  private nextTag = 1;
  private readonly reader: LineReader;

  private constructor(
    private readonly socket: Socket,
    private readonly timeoutMs: number,
  ) {
    this.reader = new LineReader(socket);
  }

  /** Connects and reads the greeting. */
  static async connect(host: string, port: number, timeoutMs = 10_000): Promise<RawImap> {
    const socket = connect({ host, port });
    await new Promise<void>((resolve, reject) => {
      socket.once('connect', resolve);
      socket.once('error', reject);
    });
    const client = new RawImap(socket, timeoutMs);
    client.greeting = await client.readLine();
    return client;
  }

  /** Next line from the server, without CRLF. */
  readLine(): Promise<string> {
    return this.reader.next(this.timeoutMs);
  }

  /** Sends raw text as-is (add CRLF yourself). */
  write(text: string): void {
    this.socket.write(text, 'latin1');
  }

  /** Sends `<tag> <command>` and collects lines until the tagged response. */
  async command(command: string): Promise<ImapReply> {
    const tag = `A${this.nextTag++}`;
    this.write(`${tag} ${command}\r\n`);
    const untagged: string[] = [];
    for (;;) {
      const line = await this.readLine();
      if (!line.startsWith(`${tag} `)) {
        untagged.push(line);
        continue;
      }
      const match = /^\S+ (OK|NO|BAD) ?(.*)$/.exec(line);
      if (!match) throw new Error(`malformed tagged response: ${line}`);
      return { untagged, tagged: line, status: match[1] as ImapReply['status'], text: match[2] ?? '' };
    }
  }

  /** Closes the connection without LOGOUT. */
  close(): void {
    this.socket.destroy();
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

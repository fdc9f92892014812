/**
 * A small IMAP client for the throughput benchmark: connect (TLS or not), log in, APPEND many
 * messages pipelined with LITERAL+, and FETCH a whole mailbox while only counting bytes (a
 * streaming scan for line ends and `{n}` literals, no copies of the message data).
 */
import { connect as netConnect, type Socket } from 'node:net';
import { connect as tlsConnect } from 'node:tls';

export interface ClientOptions {
  host: string;
  port: number;
  tls: boolean;
  ca?: string;
  timeoutMs?: number;
}

export class ImapBench {
  private lines: string[] = [];
  private partial = '';
  private waiter: (() => void) | undefined;
  private closed = false;
  private failure: Error | undefined;
  private tagSeq = 0;
  /** While set, incoming data goes to this consumer instead of the line buffer. */
  private sink: ((chunk: Buffer) => void) | undefined;

  private constructor(
    readonly socket: Socket,
    private readonly timeoutMs: number,
  ) {
    socket.on('data', (chunk: Buffer) => {
      if (this.sink) {
        this.sink(chunk);
        return;
      }
      this.partial += chunk.toString('latin1');
      for (let end = this.partial.indexOf('\r\n'); end >= 0; end = this.partial.indexOf('\r\n')) {
        this.lines.push(this.partial.slice(0, end));
        this.partial = this.partial.slice(end + 2);
      }
      this.waiter?.();
    });
    socket.on('error', (err) => {
      this.failure = err;
      this.waiter?.();
    });
    socket.on('close', () => {
      this.closed = true;
      this.waiter?.();
    });
  }

  static async connect(o: ClientOptions): Promise<ImapBench> {
    const socket = o.tls
      ? tlsConnect({ host: o.host, port: o.port, ...(o.ca ? { ca: o.ca } : {}), servername: 'localhost' })
      : netConnect({ host: o.host, port: o.port });
    await new Promise<void>((resolve, reject) => {
      socket.once(o.tls ? 'secureConnect' : 'connect', () => resolve());
      socket.once('error', reject);
    });
    socket.setNoDelay(true);
    const client = new ImapBench(socket, o.timeoutMs ?? 60_000);
    const greeting = await client.readLine();
    if (!greeting.startsWith('* OK')) throw new Error(`greeting: ${greeting}`);
    return client;
  }

  async readLine(): Promise<string> {
    const deadline = Date.now() + this.timeoutMs;
    for (;;) {
      const line = this.lines.shift();
      if (line !== undefined) return line;
      if (this.failure) throw this.failure;
      if (this.closed) throw new Error('connection closed');
      const left = deadline - Date.now();
      if (left <= 0) throw new Error('timeout waiting for the server');
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        this.waiter = () => {
          clearTimeout(timer);
          resolve();
        };
      });
      this.waiter = undefined;
    }
  }

  tag(): string {
    this.tagSeq += 1;
    return `b${this.tagSeq}`;
  }

  async until(tag: string): Promise<string> {
    for (;;) {
      const line = await this.readLine();
      if (line.startsWith(`${tag} `)) return line;
    }
  }

  async command(text: string): Promise<string> {
    const tag = this.tag();
    this.socket.write(`${tag} ${text}\r\n`);
    const done = await this.until(tag);
    if (!done.startsWith(`${tag} OK`)) throw new Error(`${text.split(' ')[0]}: ${done}`);
    return done;
  }

  async loginPlain(user: string, password: string): Promise<void> {
    await this.command(`AUTHENTICATE PLAIN ${Buffer.from(`\0${user}\0${password}`).toString('base64')}`);
  }

  async loginXoauth2(user: string, token: string): Promise<void> {
    await this.command(`AUTHENTICATE XOAUTH2 ${Buffer.from(`user=${user}\x01auth=Bearer ${token}\x01\x01`).toString('base64')}`);
  }

  /** APPENDs the messages, `batch` at a time in one write each (LITERAL+). */
  async appendAll(mailbox: string, messages: Buffer[], batch = 50): Promise<void> {
    for (let i = 0; i < messages.length; i += batch) {
      const tags: string[] = [];
      const parts: Buffer[] = [];
      for (const m of messages.slice(i, i + batch)) {
        const tag = this.tag();
        tags.push(tag);
        parts.push(Buffer.from(`${tag} APPEND ${mailbox} {${m.length}+}\r\n`), m, Buffer.from('\r\n'));
      }
      this.socket.write(Buffer.concat(parts));
      for (const tag of tags) {
        const done = await this.until(tag);
        if (!done.startsWith(`${tag} OK`)) throw new Error(`APPEND: ${done}`);
      }
    }
  }

  /**
   * `FETCH 1:* BODY.PEEK[]`, counting bytes until the tagged reply: resolves with the bytes
   * received, the bytes inside literals (the messages) and the number of literals.
   */
  fetchAll(): Promise<{ bytes: number; literalBytes: number; literals: number; seconds: number }> {
    const tag = this.tag();
    const tagPrefix = `${tag} `;
    let bytes = 0;
    let literalBytes = 0;
    let literals = 0;
    let literalLeft = 0;
    let line = '';
    const started = process.hrtime.bigint();
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => finish(new Error('FETCH did not finish in time')), this.timeoutMs);
      const finish = (err?: Error) => {
        clearTimeout(timer);
        this.sink = undefined;
        if (err) reject(err);
        else resolve({ bytes, literalBytes, literals, seconds: Number(process.hrtime.bigint() - started) / 1e9 });
      };
      this.sink = (chunk: Buffer) => {
        bytes += chunk.length;
        let at = 0;
        while (at < chunk.length) {
          if (literalLeft > 0) {
            const take = Math.min(literalLeft, chunk.length - at);
            literalLeft -= take;
            literalBytes += take;
            at += take;
            continue;
          }
          const nl = chunk.indexOf(0x0a, at);
          if (nl < 0) {
            line += chunk.toString('latin1', at);
            if (line.length > 65536) return finish(new Error('a response line over 64 KiB'));
            return;
          }
          line += chunk.toString('latin1', at, nl + 1);
          at = nl + 1;
          const m = /\{(\d+)\}\r?\n$/.exec(line);
          if (m) {
            literalLeft = Number(m[1]);
            literals += 1;
          } else if (line.startsWith(tagPrefix)) {
            if (!line.startsWith(`${tag} OK`)) return finish(new Error(`FETCH: ${line.trim()}`));
            return finish();
          }
          line = '';
        }
      };
      this.socket.write(`${tag} FETCH 1:* BODY.PEEK[]\r\n`);
    });
  }

  async logout(): Promise<void> {
    try {
      const tag = this.tag();
      this.socket.write(`${tag} LOGOUT\r\n`);
      await this.until(tag);
    } catch {
      // closing anyway
    }
    this.socket.destroy();
  }
}

/** A text message of about `size` bytes: headers and 76-character lines. */
export function makeMessage(i: number, size: number): Buffer {
  const head =
    `From: Sender ${i} <sender${i}@example.test>\r\n` +
    `To: alice@example.test\r\n` +
    `Subject: throughput message ${i}\r\n` +
    `Date: Sun, 29 Nov 2026 12:00:00 +0000\r\n` +
    `Message-ID: <bench-${i}@example.test>\r\n` +
    `MIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n`;
  const alphabet = 'abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 ';
  const lines: string[] = [];
  let length = head.length;
  let seed = i * 7919 + 1;
  while (length < size) {
    let text = '';
    for (let c = 0; c < 76; c++) {
      seed = (seed * 1103515245 + 12345) & 0x7fffffff;
      text += alphabet[seed % alphabet.length];
    }
    lines.push(text);
    length += 78;
  }
  return Buffer.from(`${head}${lines.join('\r\n')}\r\n`, 'latin1');
}

/**
 * A raw ManageSieve client (RFC 5804) for tests that must see the exact bytes: plain TCP or
 * implicit TLS, STARTTLS by hand, and responses read whole, with the server's literals (`{N}`)
 * taken by their byte count.
 */
import { connect, type Socket } from 'node:net';
import { connect as tlsConnect, type TLSSocket } from 'node:tls';

/** One response: its lines before the status line (literals as their own entries), and the status line. */
export interface SieveResponse {
  lines: string[];
  /** Literal payloads in order, byte-exact. */
  literals: Buffer[];
  status: string;
}

/** Whether a line is a final response (OK, NO or BYE). */
const FINAL = /^(OK|NO|BYE)(\b|$)/i;

export class RawSieve {
  private buffer = Buffer.alloc(0);
  private waiter: (() => void) | undefined;
  private failure: Error | undefined;
  ended = false;

  private constructor(private socket: Socket | TLSSocket) {
    this.attach(socket);
  }

  /** Connects over plain TCP (for STARTTLS) or implicit TLS, checking the certificate against `ca`. */
  static async connect(options: { port: number; tls: boolean; ca: string; localAddress?: string }): Promise<RawSieve> {
    const local = options.localAddress ? { localAddress: options.localAddress } : {};
    if (!options.tls) {
      const socket = connect({ host: '127.0.0.1', port: options.port, ...local });
      await new Promise<void>((resolve, reject) => {
        socket.once('connect', resolve);
        socket.once('error', reject);
      });
      return new RawSieve(socket);
    }
    const socket = tlsConnect({ host: '127.0.0.1', port: options.port, ca: options.ca, servername: 'localhost', ...local });
    await new Promise<void>((resolve, reject) => {
      socket.once('secureConnect', resolve);
      socket.once('error', reject);
    });
    return new RawSieve(socket);
  }

  private attach(socket: Socket): void {
    socket.on('data', (chunk: Buffer) => {
      this.buffer = Buffer.concat([this.buffer, chunk]);
      this.wake();
    });
    socket.on('error', (err) => {
      this.failure ??= err;
      this.wake();
    });
    socket.on('close', () => {
      this.ended = true;
      this.failure ??= new Error('connection closed');
      this.wake();
    });
  }

  private wake(): void {
    const waiter = this.waiter;
    this.waiter = undefined;
    waiter?.();
  }

  private async waitFor(ready: () => boolean, timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!ready()) {
      if (this.failure) throw this.failure;
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`nothing from the server within ${timeoutMs} ms (have ${JSON.stringify(this.buffer.toString('latin1').slice(0, 200))})`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        this.waiter = () => {
          clearTimeout(timer);
          resolve();
        };
      });
    }
  }

  /** The next line without CRLF. */
  async readLine(timeoutMs = 10_000): Promise<string> {
    await this.waitFor(() => this.buffer.includes('\r\n'), timeoutMs);
    const end = this.buffer.indexOf('\r\n');
    const line = this.buffer.subarray(0, end).toString('utf8');
    this.buffer = this.buffer.subarray(end + 2);
    return line;
  }

  /** Exactly `n` bytes. */
  async readBytes(n: number, timeoutMs = 10_000): Promise<Buffer> {
    await this.waitFor(() => this.buffer.length >= n, timeoutMs);
    const bytes = this.buffer.subarray(0, n);
    this.buffer = this.buffer.subarray(n);
    return Buffer.from(bytes);
  }

  /** Reads up to and including a final OK/NO/BYE line; a line ending in `{N}` is followed by N literal bytes. */
  async readResponse(timeoutMs = 10_000): Promise<SieveResponse> {
    const lines: string[] = [];
    const literals: Buffer[] = [];
    for (;;) {
      let line = await this.readLine(timeoutMs);
      // A line may hold several literals ("name" {N}\r\n...); collect the whole logical line.
      for (let m = /\{(\d+)\}$/.exec(line); m; m = /\{(\d+)\}$/.exec(line)) {
        const literal = await this.readBytes(Number(m[1]), timeoutMs);
        literals.push(literal);
        const rest = await this.readLine(timeoutMs);
        line = `${line}<literal>${rest}`;
      }
      if (FINAL.test(line)) return { lines, literals, status: line };
      lines.push(line);
    }
  }

  write(data: string | Buffer): void {
    this.socket.write(data);
  }

  /** Sends a command line and reads its response. */
  async command(line: string | Buffer, timeoutMs = 10_000): Promise<SieveResponse> {
    this.write(typeof line === 'string' ? `${line}\r\n` : line);
    return this.readResponse(timeoutMs);
  }

  /** STARTTLS: sends it, checks the OK, shakes hands and returns the capabilities the server then sends. */
  async starttls(ca: string): Promise<SieveResponse> {
    this.write('STARTTLS\r\n');
    return this.starttlsAfterWrite(ca);
  }

  /** The rest of STARTTLS once the command was written (possibly with more behind it): the OK, the handshake, the capabilities. */
  async starttlsAfterWrite(ca: string): Promise<SieveResponse> {
    const reply = await this.readResponse();
    if (!reply.status.startsWith('OK')) throw new Error(`STARTTLS refused: ${reply.status}`);
    // Whatever came in clear text after the OK must not be read as if it came over TLS.
    this.buffer = Buffer.alloc(0);
    const plain = this.socket;
    plain.removeAllListeners('data');
    plain.removeAllListeners('close');
    plain.removeAllListeners('error');
    const secure = tlsConnect({ socket: plain, ca, servername: 'localhost' });
    await new Promise<void>((resolve, reject) => {
      secure.once('secureConnect', resolve);
      secure.once('error', reject);
    });
    this.socket = secure;
    this.attach(secure);
    return this.readResponse();
  }

  close(): void {
    this.socket.destroy();
  }
}

/** A ManageSieve quoted string. */
export function quoted(text: string): string {
  return `"${text.replace(/\\/g, '\\\\').replace(/"/g, '\\"')}"`;
}

/** A non-synchronizing client literal (`{N+}`) holding `text`. */
export function literal(text: string | Buffer): Buffer {
  const bytes = typeof text === 'string' ? Buffer.from(text, 'utf8') : text;
  return Buffer.concat([Buffer.from(`{${bytes.length}+}\r\n`), bytes]);
}

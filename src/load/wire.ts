/**
 * One client connection of the load harness: TCP, optionally TLS (from the start or after
 * STARTTLS), and reads of lines and counted bytes, each with a deadline. Failures come out as
 * {@link LoadError}s of the kind they count as (connect, tls, timeout, closed, protocol).
 */
import { readFileSync } from 'node:fs';
import * as net from 'node:net';
import * as tls from 'node:tls';
import { LoadError } from './errors.js';

/** How the harness checks the server's certificate. */
export interface TlsSettings {
  /** Skip certificate checks (`--insecure`). */
  insecure: boolean;
  /** Name to send (SNI) and check; default: the target host unless it is an IP address. */
  servername?: string | undefined;
  /** Shared by every connection: building a context per connection costs more than the handshake. */
  context: tls.SecureContext;
}

/**
 * The TLS settings for a run: the default trust store (Node's CAs plus `NODE_EXTRA_CA_CERTS`),
 * extended by the PEM files in `caFiles` when there are any.
 */
export function tlsSettings(opts: { insecure: boolean; servername?: string | undefined; caFiles?: string[] }): TlsSettings {
  let context: tls.SecureContext;
  if (opts.caFiles && opts.caFiles.length > 0) {
    // Passing `ca` replaces the default store, so the defaults go in explicitly.
    const ca = [...tls.rootCertificates];
    const extra = process.env['NODE_EXTRA_CA_CERTS'];
    if (extra) {
      try {
        ca.push(readFileSync(extra, 'utf8'));
      } catch {
        // Node itself only warns about an unreadable NODE_EXTRA_CA_CERTS.
      }
    }
    for (const file of opts.caFiles) ca.push(readFileSync(file, 'utf8'));
    context = tls.createSecureContext({ ca });
  } else {
    context = tls.createSecureContext();
  }
  return { insecure: opts.insecure, servername: opts.servername, context };
}

/** Longest line the harness accepts from a server before calling it a protocol error. */
const MAX_LINE_BYTES = 1024 * 1024;
const EMPTY = Buffer.alloc(0);

/** `ECONNREFUSED`, `self-signed certificate (DEPTH_ZERO_SELF_SIGNED_CERT)`, ... */
function describe(err: unknown): string {
  const { code, message } = err as { code?: unknown; message?: unknown };
  if (typeof code === 'string' && /^E[A-Z]+$/.test(code)) return code;
  const text = typeof message === 'string' && message !== '' ? message : String(err);
  return typeof code === 'string' && !text.includes(code) ? `${text} (${code})` : text;
}

/** A connection with deadline-bounded reads. */
export class Wire {
  private socket: net.Socket;
  private buffer: Buffer = EMPTY;
  private received = 0;
  private offset = 0;
  private ended = false;
  private failure: Error | undefined;
  private waiter: (() => void) | undefined;
  private closeListeners: Array<(reason: string) => void> = [];
  /** Whether {@link close} was called: a close after that is expected. */
  private closing = false;

  private constructor(
    socket: net.Socket,
    readonly host: string,
    readonly port: number,
    readonly timeoutMs: number,
  ) {
    this.socket = socket;
    this.attach(socket);
  }

  /** Opens a TCP connection; rejects with `connect` or `timeout`. */
  static connect(host: string, port: number, timeoutMs: number): Promise<Wire> {
    return new Promise<Wire>((resolve, reject) => {
      const socket = net.connect({ host, port });
      const timer = setTimeout(() => {
        socket.destroy();
        reject(new LoadError('timeout', `connect to ${host}:${port}: no answer within ${timeoutMs} ms`));
      }, timeoutMs);
      const onError = (err: Error) => {
        clearTimeout(timer);
        socket.destroy();
        reject(new LoadError('connect', `connect to ${host}:${port}: ${describe(err)}`));
      };
      socket.once('error', onError);
      socket.once('connect', () => {
        clearTimeout(timer);
        socket.removeListener('error', onError);
        socket.setNoDelay(true);
        resolve(new Wire(socket, host, port, timeoutMs));
      });
    });
  }

  /**
   * TLS handshake on this connection (implicit TLS right after {@link connect}, or after a
   * STARTTLS reply); rejects with `tls` or `timeout`. Unread bytes from before are discarded.
   */
  async secure(settings: TlsSettings): Promise<void> {
    const plain = this.socket;
    this.detach(plain);
    this.buffer = EMPTY;
    this.offset = 0;
    const servername = settings.servername ?? (net.isIP(this.host) === 0 ? this.host : undefined);
    const secured = tls.connect({
      socket: plain,
      host: this.host,
      ...(servername !== undefined ? { servername } : {}),
      secureContext: settings.context,
      rejectUnauthorized: !settings.insecure,
    });
    this.socket = secured;
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        secured.destroy();
        reject(new LoadError('timeout', `TLS handshake with ${this.host}:${this.port}: not done within ${this.timeoutMs} ms`));
      }, this.timeoutMs);
      const onError = (err: Error) => {
        clearTimeout(timer);
        secured.destroy();
        reject(new LoadError('tls', `TLS handshake with ${this.host}:${this.port}: ${describe(err)}`));
      };
      const onClose = () => onError(new Error('connection closed during the handshake'));
      secured.once('error', onError);
      secured.once('close', onClose);
      secured.once('secureConnect', () => {
        clearTimeout(timer);
        secured.removeListener('error', onError);
        secured.removeListener('close', onClose);
        resolve();
      });
    });
    this.attach(secured);
  }

  /** Bytes received so far (after TLS), for throughput figures. */
  get bytesRead(): number {
    return this.received;
  }

  /** Whether the server has closed the connection (or it failed). */
  get isClosed(): boolean {
    return this.ended || this.failure !== undefined;
  }

  /** Calls `listener` once when the connection ends without {@link close} having been called. */
  onUnexpectedClose(listener: (reason: string) => void): void {
    this.closeListeners.push(listener);
  }

  write(data: string | Buffer): void {
    if (!this.socket.destroyed) this.socket.write(data);
  }

  /** The next line without its line end (latin1, so bytes survive unchanged). */
  async readLine(what: string): Promise<string> {
    const deadline = Date.now() + this.timeoutMs;
    for (;;) {
      const end = this.buffer.indexOf(0x0a, this.offset);
      if (end >= 0) {
        const stop = end > this.offset && this.buffer[end - 1] === 0x0d ? end - 1 : end;
        const line = this.buffer.toString('latin1', this.offset, stop);
        this.offset = end + 1;
        return line;
      }
      if (this.buffer.length - this.offset > MAX_LINE_BYTES) {
        throw new LoadError('protocol', `${what}: a line longer than ${MAX_LINE_BYTES} bytes`);
      }
      await this.wait(what, deadline);
    }
  }

  /** Reads and drops `count` bytes (the contents of an IMAP literal). */
  async skip(count: number, what: string): Promise<void> {
    const deadline = Date.now() + this.timeoutMs;
    let left = count;
    for (;;) {
      const available = this.buffer.length - this.offset;
      const take = Math.min(available, left);
      this.offset += take;
      left -= take;
      if (left === 0) return;
      await this.wait(what, deadline);
    }
  }

  /** Closes the connection now. */
  close(): void {
    this.closing = true;
    this.socket.destroy();
  }

  private attach(socket: net.Socket): void {
    socket.on('data', this.onData);
    socket.on('error', this.onError);
    socket.on('close', this.onClose);
  }

  private detach(socket: net.Socket): void {
    socket.removeListener('data', this.onData);
    socket.removeListener('error', this.onError);
    socket.removeListener('close', this.onClose);
  }

  private readonly onData = (chunk: Buffer): void => {
    this.received += chunk.length;
    if (this.offset >= this.buffer.length) {
      this.buffer = chunk;
    } else {
      this.buffer = Buffer.concat([this.buffer.subarray(this.offset), chunk]);
    }
    this.offset = 0;
    this.wake();
  };

  private readonly onError = (err: Error): void => {
    this.failure ??= err;
    this.wake();
  };

  private readonly onClose = (): void => {
    this.ended = true;
    this.wake();
    if (!this.closing) {
      const reason = this.failure ? describe(this.failure) : 'closed by the server';
      for (const listener of this.closeListeners.splice(0)) listener(reason);
    }
  };

  private wake(): void {
    const waiter = this.waiter;
    this.waiter = undefined;
    waiter?.();
  }

  /** Waits for more data; throws when the connection ended or the deadline passed. */
  private async wait(what: string, deadline: number): Promise<void> {
    if (this.failure) throw new LoadError('closed', `${what}: connection failed (${describe(this.failure)})`);
    if (this.ended) throw new LoadError('closed', `${what}: the server closed the connection`);
    const remaining = deadline - Date.now();
    if (remaining <= 0) throw new LoadError('timeout', `${what}: no answer within ${this.timeoutMs} ms`);
    await new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, remaining);
      this.waiter = () => {
        clearTimeout(timer);
        resolve();
      };
    });
    this.waiter = undefined;
  }
}

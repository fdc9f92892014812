import type { Socket } from 'node:net';
import { BackendError } from '../errors.js';

/**
 * The line-reading half of a conversation with a backend before the relay, common to IMAP and
 * SMTP: lines with a deadline per reply and a bound on their length, failures of the socket
 * turned into BackendError (temporary, `backend_unavailable`), and a clean hand-over of the
 * socket (with whatever was read past the last line) to the relay.
 */
export abstract class BackendConversation {
  private buffer: Buffer = Buffer.alloc(0);
  private waiters: Array<() => void> = [];
  private failure: Error | undefined;
  private readonly onData = (chunk: Buffer) => {
    this.buffer = this.buffer.length === 0 ? chunk : Buffer.concat([this.buffer, chunk]);
    if (this.buffer.length > this.maxLine && this.buffer.indexOf(0x0a) < 0) {
      this.fail(new BackendError('backend sent an over-long line'));
    }
    this.wake();
  };
  private readonly onEnd = () => this.fail(new BackendError('backend closed the connection'));
  private readonly onError = (err: Error) =>
    this.fail(new BackendError(`backend connection failed: ${err.message}`, { cause: err }));

  constructor(
    readonly socket: Socket,
    private readonly responseTimeoutMs: number,
    private readonly maxLine = 1 << 20,
  ) {
    socket.on('data', this.onData);
    socket.on('end', this.onEnd);
    socket.on('close', this.onEnd);
    socket.on('error', this.onError);
  }

  /** The protocol's goodbye, sent when the conversation ends without a relay. */
  protected abstract farewell(): string;

  /** Sends raw bytes. */
  write(data: string | Buffer): void {
    this.socket.write(data);
  }

  /** Stops reading and returns the bytes that arrived after the last line read. */
  detach(): Buffer {
    this.socket.off('data', this.onData);
    this.socket.off('end', this.onEnd);
    this.socket.off('close', this.onEnd);
    this.socket.off('error', this.onError);
    const rest = this.buffer;
    this.buffer = Buffer.alloc(0);
    return rest;
  }

  /** Ends the conversation without a relay (after a refusal, or on error). */
  close(): void {
    this.detach();
    this.socket.on('error', () => undefined);
    if (!this.socket.destroyed) this.socket.end(this.farewell());
    setTimeout(() => this.socket.destroy(), 2000).unref();
  }

  /** The next line without its line end; rejects when the backend fails or is too slow. */
  protected async readLine(): Promise<string> {
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
      if (remaining <= 0) throw new BackendError('backend did not answer in time');
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, remaining);
        this.waiters.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
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
}

/**
 * The receiving half of the tests' raw protocol clients: CRLF-terminated lines from a socket,
 * handed out in order, with a deadline per line and the socket's end or error as a failure.
 */
import type { Socket } from 'node:net';

export class LineReader {
  private buffer = '';
  private readonly lines: string[] = [];
  private waiter: ((err: Error | null) => void) | undefined;
  private failure: Error | undefined;
  /** Whether the server has closed the connection. */
  ended = false;

  constructor(socket: Socket) {
    socket.on('data', (chunk: Buffer) => {
      this.buffer += chunk.toString('latin1');
      for (let end = this.buffer.indexOf('\r\n'); end >= 0; end = this.buffer.indexOf('\r\n')) {
        this.lines.push(this.buffer.slice(0, end));
        this.buffer = this.buffer.slice(end + 2);
      }
      this.wake(null);
    });
    socket.on('error', (err) => this.fail(err));
    socket.on('close', () => {
      this.ended = true;
      this.fail(new Error('connection closed'));
    });
  }

  /** The next line without CRLF; rejects when none comes in time or the connection ended. */
  async next(timeoutMs: number): Promise<string> {
    for (;;) {
      const line = this.lines.shift();
      if (line !== undefined) return line;
      if (this.failure) throw this.failure;
      await new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => {
          this.waiter = undefined;
          reject(new Error(`no line from the server within ${timeoutMs} ms`));
        }, timeoutMs);
        this.waiter = (err) => {
          clearTimeout(timer);
          if (err) reject(err);
          else resolve();
        };
      });
    }
  }

  /** Whether the server closes the connection within `timeoutMs`. */
  async waitEnded(timeoutMs: number): Promise<boolean> {
    const deadline = Date.now() + timeoutMs;
    while (!this.ended && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    return this.ended;
  }

  private wake(err: Error | null): void {
    const waiter = this.waiter;
    this.waiter = undefined;
    waiter?.(err);
  }

  private fail(err: Error): void {
    this.failure ??= err;
    this.wake(err);
  }
}

import { randomBytes } from 'node:crypto';
import type { Socket } from 'node:net';
import type { Logger } from 'pino';
import type { LimitsConfig } from '../config/schema.js';
import { relay, type RelayStats } from '../relay/pipe.js';
import type { LineFramer } from './line-framer.js';

/** How a connection ended, for the one log line per connection. */
export type Outcome = 'logout' | 'relayed' | 'client_closed' | 'timeout' | 'too_many_commands' | 'error' | 'shutdown';

/** Thrown inside a session to unwind it once the connection is over. */
export class SessionEnd extends Error {
  constructor(readonly outcome: Outcome) {
    super(outcome);
  }
}

/**
 * Replies a client has not read yet, beyond which sasl-gate stops reading its commands: a client
 * that sends without reading cannot make the proxy buffer its answers without bound.
 */
const MAX_UNREAD_OUTPUT = 64 * 1024;

/** What both protocols' pre-login sessions share: the socket's life, limits, and the hand-over to the relay. */
export interface SessionOptions {
  listener: string;
  limits: LimitsConfig;
  log: Logger;
}

/**
 * The life of one client connection before login, common to IMAP and SMTP: reading frames
 * with bounded input and output buffers, the pre-login timer, a half-closed client whose last
 * commands are still answered, shutdown, the one log line at the end, and the relay after a
 * successful login. Subclasses speak the protocol.
 */
export abstract class PreAuthSession<F extends LineFramer> {
  readonly id = randomBytes(6).toString('base64url');
  protected readonly log: Logger;
  protected mechanism: string | undefined;
  protected user: string | undefined;
  private readonly started = Date.now();
  private wake: (() => void) | undefined;
  private clientEnded = false;
  private closed = false;
  private endOutcome: Outcome | undefined;
  private relaying = false;
  private preAuthTimer: NodeJS.Timeout | undefined;
  private readonly onData = (chunk: Buffer) => {
    this.framer.push(chunk);
    if (this.framer.buffered > this.options.limits.maxLineLength + this.options.limits.maxLiteralSize) this.socket.pause();
    this.wake?.();
  };

  constructor(
    protected readonly socket: Socket,
    protected readonly framer: F,
    private readonly options: SessionOptions,
  ) {
    this.log = options.log.child({ session: this.id });
  }

  /** The first line(s) the server sends. */
  protected abstract greet(): void;
  /** The pre-login conversation; resolves when the relay after a successful login has ended. */
  protected abstract serve(): Promise<RelayStats>;
  /** The protocol's last words before sasl-gate closes the connection. */
  protected abstract farewell(reason: 'timeout' | 'shutdown' | 'error'): string;

  /** Serves the connection until the relay ends, the client leaves, or a limit is reached. */
  async run(): Promise<void> {
    const client = { address: this.socket.remoteAddress, port: this.socket.remotePort };
    this.log.debug({ client: client.address, listener: this.options.listener }, 'connection opened');
    this.socket.on('data', this.onData);
    this.socket.on('end', () => {
      this.clientEnded = true;
      this.wake?.();
    });
    this.socket.on('close', () => {
      this.closed = true;
      this.wake?.();
    });
    this.socket.on('drain', () => this.wake?.());
    this.socket.on('error', (err) => this.log.debug({ err: err.message }, 'client socket error'));
    this.preAuthTimer = setTimeout(() => this.end('timeout', this.farewell('timeout')), this.options.limits.preAuthTimeoutSeconds * 1000);
    this.preAuthTimer.unref();

    let outcome: Outcome = 'error';
    let stats: RelayStats | undefined;
    try {
      this.greet();
      stats = await this.serve();
      outcome = 'relayed';
    } catch (err) {
      if (err instanceof SessionEnd) outcome = err.outcome;
      else {
        this.log.error({ err: (err as Error).message }, 'session failed');
        this.end('error', this.farewell('error'));
      }
    } finally {
      clearTimeout(this.preAuthTimer);
    }
    this.log.info(
      {
        client: client.address,
        clientPort: client.port,
        listener: this.options.listener,
        mechanism: this.mechanism,
        user: this.user,
        outcome,
        durationMs: Date.now() - this.started,
        bytesFromClient: stats?.bytesFromClient ?? 0,
        bytesToClient: stats?.bytesToClient ?? 0,
      },
      'connection closed',
    );
  }

  /** Closes the session from outside (shutdown). */
  shutdown(): void {
    // Inside the relay the byte stream belongs to the backend: a farewell could land mid-reply.
    if (this.relaying) this.socket.destroy();
    else this.end('shutdown', this.farewell('shutdown'));
  }

  /** Whether the connection is over (or being closed). */
  protected get isClosed(): boolean {
    return this.closed || this.endOutcome !== undefined;
  }

  /** Sends one line (CRLF added). */
  protected send(line: string): void {
    if (!this.isClosed && !this.socket.destroyed) this.socket.write(`${line}\r\n`);
  }

  /** Ends the connection, after a last line if given. */
  protected end(outcome: Outcome, farewell?: string): void {
    if (this.isClosed) return;
    if (farewell !== undefined) this.send(farewell);
    this.endOutcome = outcome;
    this.socket.end();
    setTimeout(() => this.socket.destroy(), 2000).unref();
    this.wake?.();
  }

  /** Ends the connection and unwinds the session. */
  protected stop(outcome: Outcome, farewell?: string): never {
    this.end(outcome, farewell);
    throw new SessionEnd(outcome);
  }

  /**
   * Waits for the next frame from `read`. Frames the client sent before closing its side are
   * still served; reading pauses while the client leaves replies unread.
   */
  protected async nextFrame<T>(read: () => T | null): Promise<T> {
    for (;;) {
      if (this.endOutcome !== undefined) throw new SessionEnd(this.endOutcome);
      if (this.closed) throw new SessionEnd('client_closed');
      if (this.socket.writableLength <= MAX_UNREAD_OUTPUT) {
        const frame = read();
        if (this.socket.isPaused() && this.framer.buffered <= this.options.limits.maxLineLength) this.socket.resume();
        if (frame !== null) return frame;
        if (this.clientEnded) this.stop('client_closed');
      }
      await new Promise<void>((resolve) => (this.wake = resolve));
      this.wake = undefined;
    }
  }

  /** Answers the client's login and joins it to the backend; resolves when the relay ends. */
  protected startRelay(success: string, backend: Socket, backendRest: Buffer): Promise<RelayStats> {
    clearTimeout(this.preAuthTimer);
    this.send(success);
    this.socket.off('data', this.onData);
    this.relaying = true;
    const toBackend = this.framer.takeRest();
    // A client that already closed its side gets the answers to what it sent before, then the end.
    if (this.clientEnded) backend.end(toBackend);
    return relay(this.socket, backend, { toBackend: this.clientEnded ? Buffer.alloc(0) : toBackend, toClient: backendRest });
  }
}

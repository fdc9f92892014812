import { randomBytes } from 'node:crypto';
import type { Socket } from 'node:net';
import { TLSSocket } from 'node:tls';
import type { Logger } from 'pino';
import type { LineFramer } from '../net/line-framer.js';
import type { Metrics } from '../observe/metrics.js';
import { relay, type RelayStats } from '../relay/pipe.js';
import type { SessionOptions } from './options.js';
import { GateError, InternalError } from '../errors.js';

/** How a connection ended, for the one log line per connection. */
export type Outcome =
  | 'logout'
  | 'relayed'
  | 'client_closed'
  | 'timeout'
  | 'too_many_commands'
  | 'too_many_failures'
  | 'error'
  | 'shutdown';

/** Thrown inside a session to unwind it once the connection is over. */
export class SessionEnd extends GateError {
  constructor(readonly outcome: Outcome) {
    super('session_ended', outcome);
    this.name = 'SessionEnd';
  }
}

/**
 * Replies a client has not read yet, beyond which sasl-gate stops reading its commands: a client
 * that sends without reading cannot make the proxy buffer its answers without bound.
 */
const MAX_UNREAD_OUTPUT = 64 * 1024;

/** Joins a logged-in client to its backend; resolves when both are closed. */
export type RelayRunner = typeof relay;

/** The protocol's last words when sasl-gate itself closes the connection. */
export interface Farewells {
  timeout: string;
  shutdown: string;
  error: string;
}

/** Who the client last tried to log in as, and how: for the last log line. */
export interface LoginRecord {
  mechanism: string | undefined;
  user: string | undefined;
  /** What the client logged in with, once known: a token, an app password, or a password the backend checks. */
  credential?: Credential | undefined;
}

/** The kind of secret a login carried (a metric label and a log field). */
export type Credential = 'token' | 'app_password' | 'password';

/** What the connection needs of the session options. */
export type ConnectionOptions = Pick<SessionOptions, 'listener' | 'limits' | 'log' | 'clientAddress' | 'starttls' | 'metrics'>;

/** Random bytes for session ids, drawn in batches: one call per 512 connections, not one each. */
let idPool = Buffer.alloc(0);
let idOffset = 0;
const ID_BYTES = 6;

/** A random session id (8 base64url characters) for the logs and the backend's `x-session-id`. */
function sessionId(): string {
  if (idOffset + ID_BYTES > idPool.length) {
    idPool = randomBytes(ID_BYTES * 512);
    idOffset = 0;
  }
  idOffset += ID_BYTES;
  return idPool.toString('base64url', idOffset - ID_BYTES, idOffset);
}

/** The little a connection keeps for its last log line once the relay has it. */
interface ClosingRecord {
  log: Logger;
  metrics: Metrics;
  session: string;
  listener: string;
  client: { address: string; port: number };
  mechanism: string | undefined;
  user: string | undefined;
  credential: Credential | undefined;
  started: number;
}

// Closures that outlive the pre-login connection are made out here, so none can capture it.

/** What shutdown needs of a relayed connection: its client socket, nothing else. */
function relayStandIn(socket: Socket): { shutdown(): void } {
  return { shutdown: () => socket.destroy() };
}

/** The last log line once the relay ends. */
function afterRelay(relayEnded: Promise<RelayStats>, record: ClosingRecord): Promise<void> {
  return relayEnded.then((stats) => connectionClosed(record, 'relayed', stats));
}

/** The one log line per connection, and the relayed bytes for the metrics. */
function connectionClosed(record: ClosingRecord, outcome: Outcome, stats: RelayStats | undefined): void {
  const { log, metrics, listener, client } = record;
  if (stats) {
    metrics.bytesRelayed.inc({ listener, direction: 'to_backend' }, stats.bytesFromClient);
    metrics.bytesRelayed.inc({ listener, direction: 'to_client' }, stats.bytesToClient);
  }
  log.info(
    {
      session: record.session,
      client: client.address,
      clientPort: client.port,
      listener,
      mechanism: record.mechanism,
      user: record.user,
      credential: record.credential,
      outcome,
      durationMs: Date.now() - record.started,
      bytesFromClient: stats?.bytesFromClient ?? 0,
      bytesToClient: stats?.bytesToClient ?? 0,
    },
    'connection closed',
  );
}


/** The client's side of a connection, for a backend login to pass on. */
export interface ClientOrigin {
  address: string;
  port: number;
  localAddress: string;
  localPort: number;
  /** sasl-gate's session id, so the backend's log line names the same session. */
  sessionId: string;
  /** Whether the client reached sasl-gate over TLS. */
  tls: boolean;
}

/** The master-user login as `user`, the way every backend login takes it for a verified user. */
export function masterCredentials(user: string, master: { user: string; password: string }): { kind: 'master'; user: string; masterUser: string; masterPassword: string } {
  return { kind: 'master', user, masterUser: master.user, masterPassword: master.password };
}

/**
 * One client connection before login, whatever the protocol: reading frames with bounded input
 * and output buffers, the pre-login timer, STARTTLS, a half-closed client whose last commands are
 * still answered, shutdown, the one log line at the end, and the hand-over to the relay after a
 * successful login. It knows no protocol: sessions compose it with a command table and a login flow.
 */
export class ClientConnection<F extends LineFramer> {
  readonly id = sessionId();
  readonly log: Logger;
  /** Where the client really is (PROXY protocol), for logs and for the backend. */
  readonly client: { address: string; port: number };
  readonly record: LoginRecord = { mechanism: undefined, user: undefined };
  private readonly started = Date.now();
  private socket: Socket;
  private encrypted: boolean;
  private wake: (() => void) | undefined;
  private clientEnded = false;
  private closed = false;
  private endOutcome: Outcome | undefined;
  private relaying = false;
  /** Set at the hand-over: resolves when the relay ends. */
  private relayEnded: Promise<RelayStats> | undefined;
  private preAuthTimer: NodeJS.Timeout | undefined;
  /** Bumped when a pending read is abandoned; a read from an older generation stops. */
  private generation = 0;
  private readonly onEnd = () => {
    this.clientEnded = true;
    this.wake?.();
  };
  private readonly onClose = () => {
    this.closed = true;
    this.wake?.();
  };
  private readonly onDrain = () => this.wake?.();
  private readonly onError = (err: Error) => this.log.debug({ err: err.message }, 'client socket error');
  private readonly onData = (chunk: Buffer) => {
    this.framer.push(chunk);
    if (this.framer.buffered > this.options.limits.maxLineLength + this.options.limits.maxLiteralSize) this.socket.pause();
    this.wake?.();
  };

  constructor(
    socket: Socket,
    readonly framer: F,
    private readonly options: ConnectionOptions,
    private readonly farewells: Farewells,
  ) {
    this.socket = socket;
    this.log = options.log.child({ session: this.id });
    this.encrypted = options.starttls === undefined;
    this.client = options.clientAddress ?? { address: socket.remoteAddress ?? '', port: socket.remotePort ?? 0 };
  }

  /** Whether the connection is encrypted: from the start, or since STARTTLS. */
  get tlsActive(): boolean {
    return this.encrypted;
  }

  /** The address and port the client connected to. */
  get local(): { address: string; port: number } {
    return { address: this.socket.localAddress ?? '', port: this.socket.localPort ?? 0 };
  }

  /** Where the client is and what it reached, as a backend login passes it on (XCLIENT, ID, PROXY). */
  get origin(): ClientOrigin {
    const local = this.local;
    return {
      address: this.client.address,
      port: this.client.port,
      localAddress: local.address,
      localPort: local.port,
      sessionId: this.id,
      tls: this.encrypted,
    };
  }

  /**
   * Serves the connection with `serve` (the pre-login conversation, which returns once it has
   * handed the connection over) until the relay ends, the client leaves, or a limit is reached.
   */
  async run(serve: () => Promise<void>, onRelay?: (relay: { shutdown(): void }) => void): Promise<void> {
    this.log.debug({ client: this.client.address, listener: this.options.listener }, 'connection opened');
    this.listen(this.socket);
    this.armPreAuthTimer();

    let outcome: Outcome = 'error';
    try {
      await serve();
      if (this.relayEnded) outcome = 'relayed';
      else this.end('error', this.farewells.error);
    } catch (err) {
      if (err instanceof SessionEnd) outcome = err.outcome;
      else {
        this.log.error({ err: (err as Error).message }, 'session failed');
        this.end('error', this.farewells.error);
      }
    } finally {
      clearTimeout(this.preAuthTimer);
      this.preAuthTimer = undefined;
    }
    const record = this.closingRecord();
    const relayEnded = this.relayEnded;
    if (outcome === 'relayed' && relayEnded) {
      // Returning ends this call's frame: only the sockets, the relay and `record` stay, not
      // the pre-login conversation, its parsed commands or this connection's logger.
      onRelay?.(relayStandIn(this.socket));
      return afterRelay(relayEnded, record);
    }
    if (outcome === 'timeout' || outcome === 'too_many_commands') {
      this.options.metrics.refusals.inc({ listener: this.options.listener, limit: outcome === 'timeout' ? 'pre_auth_time' : 'commands' });
    }
    connectionClosed(record, outcome, undefined);
  }

  private armPreAuthTimer(): void {
    this.preAuthTimer = setTimeout(() => this.end('timeout', this.farewells.timeout), this.options.limits.preAuthTimeoutSeconds * 1000);
    this.preAuthTimer.unref();
  }

  /** What the last log line and the relay metrics need, without the connection itself. */
  private closingRecord(): ClosingRecord {
    return {
      log: this.options.log,
      metrics: this.options.metrics,
      session: this.id,
      listener: this.options.listener,
      client: this.client,
      mechanism: this.record.mechanism,
      user: this.record.user,
      credential: this.record.credential,
      started: this.started,
    };
  }

  private listen(socket: Socket): void {
    socket.on('data', this.onData);
    socket.on('end', this.onEnd);
    socket.on('close', this.onClose);
    socket.on('drain', this.onDrain);
    socket.on('error', this.onError);
  }

  private unlisten(socket: Socket): void {
    socket.off('data', this.onData);
    socket.off('end', this.onEnd);
    socket.off('close', this.onClose);
    socket.off('drain', this.onDrain);
    socket.off('error', this.onError);
  }

  /**
   * STARTTLS: whatever the client sent after the command is thrown away unread (commands
   * injected before the handshake must never run inside TLS), then the connection is encrypted.
   */
  async upgradeToTls(): Promise<void> {
    const context = this.options.starttls?.();
    if (!context) throw new InternalError('STARTTLS on a listener without it');
    const plain = this.socket;
    this.unlisten(plain);
    const injected = this.framer.takeRest();
    if (injected.length > 0) {
      this.log.warn({ client: this.client.address, bytes: injected.length }, 'discarded data sent after STARTTLS before the TLS handshake');
    }
    const secure = new TLSSocket(plain, { isServer: true, secureContext: context });
    let fail: (err: Error) => void = () => undefined;
    const onClosed = () => fail(new Error('closed during the TLS handshake'));
    const onFailed = (err: Error) => fail(err);
    try {
      await new Promise<void>((resolve, reject) => {
        fail = reject;
        secure.once('secure', resolve);
        secure.on('error', onFailed);
        secure.on('close', onClosed);
      });
    } catch (err) {
      this.log.info({ client: this.client.address, err: (err as Error).message }, 'STARTTLS handshake failed');
      secure.destroy();
      this.closed = true;
      throw new SessionEnd('client_closed');
    } finally {
      secure.off('error', onFailed);
      secure.off('close', onClosed);
    }
    this.socket = secure;
    this.encrypted = true;
    this.listen(secure);
  }

  /** Closes the connection from outside (shutdown). */
  shutdown(): void {
    // Inside the relay the byte stream belongs to the backend: a farewell could land mid-reply.
    if (this.relaying) this.socket.destroy();
    else this.end('shutdown', this.farewells.shutdown);
  }

  /** Whether the connection is over (or being closed). */
  get isClosed(): boolean {
    return this.closed || this.endOutcome !== undefined;
  }

  /** Sends one line (CRLF added). */
  send(line: string): void {
    if (!this.isClosed && !this.socket.destroyed) this.socket.write(`${line}\r\n`);
  }

  /** Ends the connection, after a last line if given. */
  end(outcome: Outcome, farewell?: string): void {
    if (this.isClosed) return;
    if (farewell !== undefined) this.send(farewell);
    this.endOutcome = outcome;
    this.socket.end();
    setTimeout(() => this.socket.destroy(), 2000).unref();
    this.wake?.();
  }

  /** Ends the connection and unwinds the session. */
  stop(outcome: Outcome, farewell?: string): never {
    this.end(outcome, farewell);
    throw new SessionEnd(outcome);
  }

  /** Forgets a read that is no longer awaited (it timed out), so it can never take a frame. */
  abandonWait(): void {
    this.generation += 1;
    this.wake = undefined;
  }

  /**
   * Waits for the next frame from `read`. Frames the client sent before closing its side are
   * still served; reading pauses while the client leaves replies unread.
   */
  async nextFrame<T>(read: (framer: F) => T | null): Promise<T> {
    const generation = this.generation;
    for (;;) {
      if (generation !== this.generation) return new Promise<T>(() => undefined);
      if (this.endOutcome !== undefined) throw new SessionEnd(this.endOutcome);
      if (this.closed) throw new SessionEnd('client_closed');
      if (this.socket.writableLength <= MAX_UNREAD_OUTPUT) {
        const frame = read(this.framer);
        if (this.socket.isPaused() && this.framer.buffered <= this.options.limits.maxLineLength) this.socket.resume();
        if (frame !== null) return frame;
        if (this.clientEnded) this.stop('client_closed');
      }
      await new Promise<void>((resolve) => (this.wake = resolve));
      this.wake = undefined;
    }
  }

  /**
   * Answers the client's login with `success` and joins it to the backend (the byte pipe unless
   * the protocol brings its own relay). Returns at once, so the pre-login conversation can unwind
   * and be freed while the relay runs (`run()` waits for its end).
   */
  handOver(success: string, backend: Socket, backendRest: Buffer, run: RelayRunner = relay): void {
    clearTimeout(this.preAuthTimer);
    this.send(success);
    this.unlisten(this.socket);
    this.socket.on('error', () => undefined);
    this.relaying = true;
    this.wake = undefined;
    this.relayEnded = run(
      this.socket,
      backend,
      { toBackend: this.framer.takeRest(), toClient: backendRest, clientEnded: this.clientEnded },
      { idleTimeoutMs: this.options.limits.idleTimeoutSeconds * 1000 },
    );
  }
}

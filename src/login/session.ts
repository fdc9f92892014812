import { randomBytes } from 'node:crypto';
import type { Socket } from 'node:net';
import { TLSSocket, type SecureContext } from 'node:tls';
import type { Logger } from 'pino';
import type { LimitsConfig } from '../config/schema.js';
import { relay, type RelayStats } from '../relay/pipe.js';
import type { AuthResult, Metrics, Protocol } from '../observe/metrics.js';
import type { FailureTracker } from './failures.js';
import { bindIdentity } from '../auth/identity.js';
import { openidConfigurationUrl } from '../auth/provider.js';
import type { TokenValidator } from '../auth/validator.js';
import { AuthError, SaslError } from '../errors.js';
import { decodeOauthbearer, decodeXoauth2, type BearerCredentials } from '../sasl/bearer.js';
import { isDummyReply, oauthbearerErrorChallenge, xoauth2ErrorChallenge } from '../sasl/challenge.js';
import type { LineFrame, LineFramer } from '../net/line-framer.js';

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
export class SessionEnd extends Error {
  constructor(readonly outcome: Outcome) {
    super(outcome);
  }
}

/** How long a client may take to answer an error challenge before it gets the refusal anyway. */
const DUMMY_REPLY_WAIT_MS = 5000;

/**
 * Replies a client has not read yet, beyond which sasl-gate stops reading its commands: a client
 * that sends without reading cannot make the proxy buffer its answers without bound.
 */
const MAX_UNREAD_OUTPUT = 64 * 1024;

/** Joins a logged-in client to its backend; resolves when both are closed. */
export type RelayRunner = typeof relay;

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

/** What `startRelay` resolves with: the figures come when the relay ends, through `run()`. */
const HANDED_OVER: RelayStats = Object.freeze({ bytesFromClient: 0, bytesToClient: 0, closedBy: 'client' });

/** The little a connection keeps for its last log line once the relay has it. */
interface ClosingRecord {
  log: Logger;
  metrics: Metrics | undefined;
  session: string;
  listener: string;
  client: { address: string; port: number };
  mechanism: string | undefined;
  user: string | undefined;
  started: number;
}

// Closures that outlive the pre-login session are made out here, so none can capture it.

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
    metrics?.bytesRelayed.inc({ listener, direction: 'to_backend' }, stats.bytesFromClient);
    metrics?.bytesRelayed.inc({ listener, direction: 'to_client' }, stats.bytesToClient);
  }
  log.info(
    {
      session: record.session,
      client: client.address,
      clientPort: client.port,
      listener,
      mechanism: record.mechanism,
      user: record.user,
      outcome,
      durationMs: Date.now() - record.started,
      bytesFromClient: stats?.bytesFromClient ?? 0,
      bytesToClient: stats?.bytesToClient ?? 0,
    },
    'connection closed',
  );
}

/** What both protocols' pre-login sessions share: the socket's life, limits, and the hand-over to the relay. */
export interface SessionOptions {
  listener: string;
  limits: LimitsConfig;
  log: Logger;
  /** The client's real address when a trusted PROXY header named it; else the socket's peer. */
  clientAddress?: { address: string; port: number } | undefined;
  /** On a STARTTLS listener: the certificate to upgrade with (looked up when the client asks). */
  starttls?: (() => SecureContext) | undefined;
  /** Failed logins by address and user name, shared by all connections, for growing delays. */
  failures?: FailureTracker | undefined;
  metrics?: Metrics | undefined;
  validator: TokenValidator;
  oauth: { issuer: string; scope: string };
  /** The directory's word on a token user (only active mail users may log in); unset, no directory. */
  directoryVerdict?: ((identity: string) => 'allowed' | 'disabled' | 'unknown' | 'not_loaded') | undefined;
}

/** What became of a bearer-token login before any backend was asked. */
export type BearerVerdict =
  | { kind: 'accepted'; identity: string }
  | { kind: 'bad_message'; detail: string }
  | { kind: 'rejected'; error: AuthError };

/**
 * The life of one client connection before login, common to IMAP and SMTP: reading frames
 * with bounded input and output buffers, the pre-login timer, a half-closed client whose last
 * commands are still answered, shutdown, the one log line at the end, and the relay after a
 * successful login. Subclasses speak the protocol.
 */
export abstract class PreAuthSession<F extends LineFramer> {
  readonly id = sessionId();
  protected readonly log: Logger;
  protected mechanism: string | undefined;
  protected user: string | undefined;
  private readonly started = Date.now();
  private wake: (() => void) | undefined;
  private clientEnded = false;
  private closed = false;
  private endOutcome: Outcome | undefined;
  private relaying = false;
  /** Set at the hand-over: resolves when the relay ends. */
  private relayEnded: Promise<RelayStats> | undefined;
  private preAuthTimer: NodeJS.Timeout | undefined;
  private failedLogins = 0;
  /** Bumped when a pending read is abandoned; a read from an older generation stops. */
  private generation = 0;
  /** Whether the connection is encrypted: from the start, or since STARTTLS. */
  protected tlsActive: boolean;
  /** Where the client really is (PROXY protocol), for logs and for the backend. */
  protected readonly client: { address: string; port: number };
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
    protected socket: Socket,
    protected readonly framer: F,
    private readonly options: SessionOptions,
  ) {
    this.log = options.log.child({ session: this.id });
    this.tlsActive = options.starttls === undefined;
    this.client = options.clientAddress ?? { address: socket.remoteAddress ?? '', port: socket.remotePort ?? 0 };
  }

  /** The first line(s) the server sends. */
  protected abstract greet(): void;
  /** The pre-login conversation; resolves once a successful login has handed the connection to the relay. */
  protected abstract serve(): Promise<RelayStats>;
  /** The protocol's last words before sasl-gate closes the connection. */
  protected abstract farewell(reason: 'timeout' | 'shutdown' | 'error' | 'too_many_failures'): string;

  /** Serves the connection until the relay ends, the client leaves, or a limit is reached. */
  async run(onRelay?: (relay: { shutdown(): void }) => void): Promise<void> {
    this.log.debug({ client: this.client.address, listener: this.options.listener }, 'connection opened');
    this.listen(this.socket);
    this.armPreAuthTimer();

    let outcome: Outcome = 'error';
    try {
      this.greet();
      await this.serve();
      outcome = 'relayed';
    } catch (err) {
      if (err instanceof SessionEnd) outcome = err.outcome;
      else {
        this.log.error({ err: (err as Error).message }, 'session failed');
        this.end('error', this.farewell('error'));
      }
    } finally {
      clearTimeout(this.preAuthTimer);
      this.preAuthTimer = undefined;
    }
    const record = this.closingRecord();
    const relayEnded = this.relayEnded;
    if (outcome === 'relayed' && relayEnded) {
      // Returning ends this call's frame: only the sockets, the relay and `record` stay, not
      // the pre-login conversation, its parsed commands or this session's logger.
      onRelay?.(relayStandIn(this.socket));
      return afterRelay(relayEnded, record);
    }
    if (outcome === 'timeout' || outcome === 'too_many_commands') {
      this.options.metrics?.refusals.inc({ listener: this.options.listener, limit: outcome === 'timeout' ? 'pre_auth_time' : 'commands' });
    }
    connectionClosed(record, outcome, undefined);
  }

  private armPreAuthTimer(): void {
    this.preAuthTimer = setTimeout(() => this.end('timeout', this.farewell('timeout')), this.options.limits.preAuthTimeoutSeconds * 1000);
    this.preAuthTimer.unref();
  }

  /** What the last log line and the relay metrics need, without the session itself. */
  private closingRecord(): ClosingRecord {
    return {
      log: this.options.log,
      metrics: this.options.metrics,
      session: this.id,
      listener: this.options.listener,
      client: this.client,
      mechanism: this.mechanism,
      user: this.user,
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
  protected async upgradeToTls(): Promise<void> {
    const context = this.options.starttls?.();
    if (!context) throw new Error('STARTTLS on a listener without it');
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
    this.tlsActive = true;
    this.listen(secure);
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

  /**
   * Answers a failed login: after a delay that grows with recent failures from this address and
   * for this user name (so guessing is slow), and ends the connection after too many failures.
   */
  protected async authenticationFailed(reply: string, user: string | undefined, reason: string): Promise<void> {
    this.countAuthentication('failure', reason);
    const failures = this.options.failures;
    if (failures) {
      failures.recordFailure(this.client.address, user);
      const delay = failures.delayFor(this.client.address, user);
      if (delay > 0) await new Promise((resolve) => setTimeout(resolve, delay).unref());
    }
    this.send(reply);
    this.failedLogins += 1;
    if (this.failedLogins >= this.options.limits.maxAuthFailures) {
      this.options.metrics?.refusals.inc({ listener: this.options.listener, limit: 'auth_failures' });
      this.stop('too_many_failures', this.farewell('too_many_failures'));
    }
  }

  /** A login that worked: the user name's failure record is cleared. */
  protected authenticationSucceeded(user: string | undefined): void {
    this.countAuthentication('success', 'ok');
    this.options.failures?.recordSuccess(this.client.address, user);
  }

  /** Counts an authentication attempt for the metrics; `reason` is a reason code. */
  protected countAuthentication(result: AuthResult, reason: string): void {
    this.options.metrics?.authentications.inc({ listener: this.options.listener, mechanism: this.mechanism ?? 'none', result, reason });
  }

  /** Records how long a backend login took. */
  protected timeBackendLogin(protocol: Protocol, seconds: number, result: 'ok' | 'refused' | 'unavailable'): void {
    this.options.metrics?.backendLoginSeconds.observe({ protocol, result }, seconds);
  }

  /**
   * A bearer-token login up to the backend: decodes the XOAUTH2 / OAUTHBEARER message,
   * validates the token and binds it to the user the client named. Logs every failure with its
   * reason; the protocol turns the verdict into its replies.
   */
  protected async verifyBearer(mechanism: 'XOAUTH2' | 'OAUTHBEARER', message: Buffer): Promise<BearerVerdict> {
    let credentials: BearerCredentials;
    try {
      credentials = mechanism === 'XOAUTH2' ? decodeXoauth2(message) : decodeOauthbearer(message);
    } catch (err) {
      if (!(err instanceof SaslError)) throw err;
      this.log.info({ mechanism, reason: 'bad_sasl', detail: err.message }, 'authentication failed');
      return { kind: 'bad_message', detail: err.message };
    }
    this.user = credentials.user;
    try {
      const result = await this.options.validator.validate(credentials.token);
      this.user = bindIdentity(credentials.user, result.identity);
      const verdict = this.options.directoryVerdict?.(this.user) ?? 'allowed';
      if (verdict === 'disabled') throw new AuthError('user_disabled', 'the user is disabled or removed in the directory');
      if (verdict === 'unknown') throw new AuthError('unknown_user', 'the user is not a mail user in the directory');
      if (verdict === 'not_loaded') {
        throw new AuthError('provider_unavailable', 'the user directory has not been loaded from the provider yet');
      }
      return { kind: 'accepted', identity: this.user };
    } catch (err) {
      const error = err instanceof AuthError ? err : new AuthError('provider_unavailable', String(err), { cause: err });
      this.log.info({ mechanism, user: credentials.user, reason: error.code, detail: error.message }, 'authentication failed');
      if (error.temporary) this.countAuthentication('temporary_failure', error.code);
      return { kind: 'rejected', error };
    }
  }

  /**
   * The error challenge of a refused token (XOAUTH2's JSON, or RFC 7628's), sent after `prefix`
   * (`+ ` or `334 `), then the client's dummy reply read and let go.
   */
  protected async errorChallenge(prefix: string, mechanism: 'XOAUTH2' | 'OAUTHBEARER', readLine: () => Promise<LineFrame>): Promise<void> {
    const { scope, issuer } = this.options.oauth;
    const challenge =
      mechanism === 'XOAUTH2'
        ? xoauth2ErrorChallenge({ scope })
        : oauthbearerErrorChallenge({ scope, openidConfiguration: openidConfigurationUrl(issuer) });
    this.send(`${prefix}${challenge}`);
    // Some clients never answer the challenge, or answer with a lone 0x01 and no line end: they
    // get the final refusal after a short wait instead of hanging until the pre-login timeout.
    let timer: NodeJS.Timeout | undefined;
    const waited = new Promise<'timeout'>((resolve) => {
      timer = setTimeout(() => resolve('timeout'), DUMMY_REPLY_WAIT_MS);
      timer.unref();
    });
    const reply = await Promise.race([readLine(), waited]);
    clearTimeout(timer);
    if (reply === 'timeout') {
      this.abandonWait();
      if (!this.framer.takeLoneByte(0x01)) this.log.debug('client did not answer the error challenge');
      return;
    }
    if (reply.type === 'line' && !isDummyReply(reply.line)) {
      this.log.debug('client answered the error challenge with something other than the dummy reply');
    }
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

  /** Forgets a read that is no longer awaited (it timed out), so it can never take a frame. */
  private abandonWait(): void {
    this.generation += 1;
    this.wake = undefined;
  }

  /**
   * Waits for the next frame from `read`. Frames the client sent before closing its side are
   * still served; reading pauses while the client leaves replies unread.
   */
  protected async nextFrame<T>(read: () => T | null): Promise<T> {
    const generation = this.generation;
    for (;;) {
      if (generation !== this.generation) return new Promise<T>(() => undefined);
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

  /**
   * Answers the client's login and joins it to the backend (the byte pipe unless the protocol
   * brings its own relay); resolves at once, so the pre-login conversation can unwind and be
   * freed while the relay runs (`run()` waits for its end).
   */
  protected startRelay(success: string, backend: Socket, backendRest: Buffer, run: RelayRunner = relay): Promise<RelayStats> {
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
    return Promise.resolve(HANDED_OVER);
  }
}

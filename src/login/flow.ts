import type { Socket } from 'node:net';
import type { Logger } from 'pino';
import type { AppPasswordRecord } from '../auth/app-passwords.js';
import { bindIdentity } from '../auth/identity.js';
import { checkPasswordLogin } from '../auth/password-policy.js';
import { openidConfigurationUrl } from '../auth/provider.js';
import { AuthError, GateError, SaslError } from '../errors.js';
import type { LineFrame } from '../net/line-framer.js';
import type { AuthResult, Protocol } from '../observe/metrics.js';
import { decodeSaslResponse } from '../sasl/base64.js';
import { decodeOauthbearer, decodeXoauth2, type BearerCredentials } from '../sasl/bearer.js';
import { isDummyReply, oauthbearerErrorChallenge, xoauth2ErrorChallenge } from '../sasl/challenge.js';
import { decodeLoginField, LOGIN_PASSWORD_PROMPT, LOGIN_USERNAME_PROMPT } from '../sasl/login.js';
import { decodePlain } from '../sasl/plain.js';
import type { Credential, LoginRecord } from './connection.js';
import type { SessionOptions } from './options.js';

/** The SASL mechanisms sasl-gate speaks itself. */
export type Mechanism = 'PLAIN' | 'LOGIN' | 'XOAUTH2' | 'OAUTHBEARER';
const MECHANISMS: readonly string[] = ['PLAIN', 'LOGIN', 'XOAUTH2', 'OAUTHBEARER'];

/** Whether `name` (upper case) is a mechanism sasl-gate speaks. */
export function isMechanism(name: string): name is Mechanism {
  return MECHANISMS.includes(name);
}

/** How long a client may take to answer an error challenge before it gets the refusal anyway. */
export const DUMMY_REPLY_WAIT_MS = 5000;

/** How often a session opened with an app password checks that the password is still live. */
export const APP_PASSWORD_RECHECK_MS = 30_000;

/** One login attempt as the client asked for it. */
export type LoginRequest =
  | { kind: 'sasl'; mechanism: Mechanism; initialResponse: string | undefined }
  /** IMAP's LOGIN command: the name and password as sent (bytes), and whether they came as literals. */
  | { kind: 'password'; user: Buffer; password: Buffer; literals: boolean };

/**
 * How the backend is to log the client in; `token` (a master login as the user) names a user only
 * after a token was verified and bound, or an app password verified.
 */
export type BackendCredentials =
  | { kind: 'token'; user: string }
  | { kind: 'plain'; initialResponse: string }
  | { kind: 'login-mechanism'; userResponse: string; passwordResponse: string }
  | { kind: 'password'; user: Buffer; password: Buffer; literals: boolean };

/** The backend's answer: a logged-in socket, or its refusal (`summary` is for the log). */
export type BackendAnswer<S, R> = { ok: true; socket: Socket; rest: Buffer; extras: S } | { ok: false; reply: R; summary: string };

/** Why a login was refused; the dialect words it. */
export type Refusal<R> =
  /** The XOAUTH2 / OAUTHBEARER message could not be read. */
  | { by: 'token_message'; mechanism: 'XOAUTH2' | 'OAUTHBEARER'; detail: string }
  /** The token was rejected (after the error challenge). */
  | { by: 'token' }
  /** sasl-gate refused the password login itself; `clientText` is safe to show when set. */
  | { by: 'policy'; clientText: string | undefined }
  /** The backend refused the client's own credentials. */
  | { by: 'backend'; reply: R };

/** What became of one login attempt. */
export type LoginOutcome<S, R> =
  | { kind: 'success'; user: string | undefined; socket: Socket; rest: Buffer; extras: S }
  /** `closing`: that was one failure too many, the connection is to end after the reply. */
  | { kind: 'refused'; reason: string; refusal: Refusal<R>; closing: boolean }
  | { kind: 'temporary'; which: 'provider' | 'backend' | 'mailbox' }
  | { kind: 'cancelled' }
  | { kind: 'malformed'; what: 'too_long' | 'base64' }
  /** The client left while the backend was logging in. */
  | { kind: 'gone' };

/** What a protocol supplies: how a challenge is written, how a response is read, and the backend login. */
export interface DialectPort<S, R> {
  /** Writes a challenge (`+ x`, `334 x`). */
  challenge(text: string): void;
  /** Reads the client's next response line. */
  response(): Promise<LineFrame>;
  /** Gives up a pending `response()`; true when a lone 0x01 (a dummy reply without line end) was waiting. */
  abandonResponse(): boolean;
  /** Whether the client connection is over. */
  isClosed(): boolean;
  /** Logs into the backend; rejects when it cannot be reached or misbehaves. */
  backendLogin(credentials: BackendCredentials): Promise<BackendAnswer<S, R>>;
}

/** Time for the flow: failure delays and the dummy-reply wait, injected so tests need no sleeps. */
export interface FlowClock {
  now(): number;
  /** A wait of `ms` that can be called off. */
  after(ms: number): { elapsed: Promise<void>; cancel(): void };
}

/** The real clock. */
export const systemClock: FlowClock = {
  now: () => Date.now(),
  after(ms) {
    let timer: NodeJS.Timeout | undefined;
    const elapsed = new Promise<void>((resolve) => {
      timer = setTimeout(resolve, ms);
      timer.unref();
    });
    return { elapsed, cancel: () => clearTimeout(timer) };
  },
};

/** What the flow needs of the session options, plus the connection it serves. */
export type LoginFlowOptions = Pick<
  SessionOptions,
  'listener' | 'failures' | 'metrics' | 'validator' | 'oauth' | 'master' | 'directoryVerdict' | 'appPasswords' | 'appPasswordsOnly'
> & {
  protocol: Protocol;
  maxAuthFailures: number;
  /** The connection's logger. */
  log: Logger;
  client: { address: string };
  /** Where the attempt's mechanism and user go, for the connection's last log line. */
  record: LoginRecord;
  clock?: FlowClock;
  /** The timer of the checks that end sessions of revoked app passwords (real timers unless injected). */
  recheckClock?: FlowClock;
};

const strictUtf8 = new TextDecoder('utf-8', { fatal: true });

type Response = { bytes: Buffer; text: string } | { failed: LoginOutcome<never, never> };

/**
 * One connection's logins, protocol-neutral: the SASL exchange, password policy, token
 * verification, the backend login through the dialect's port, and the failure policy (growing
 * delays, counting, too many failures). Each call runs one attempt and returns its outcome; the
 * dialect writes the reply.
 */
export class LoginFlow<S, R> {
  private failedLogins = 0;
  private readonly clock: FlowClock;

  constructor(
    private readonly options: LoginFlowOptions,
    private readonly port: DialectPort<S, R>,
  ) {
    this.clock = options.clock ?? systemClock;
  }

  /** Runs one login attempt. */
  async attempt(request: LoginRequest): Promise<LoginOutcome<S, R>> {
    if (request.kind === 'password') return this.passwordCommand(request);
    const { mechanism } = request;
    this.options.record.mechanism = mechanism;
    this.options.record.credential = mechanism === 'PLAIN' || mechanism === 'LOGIN' ? 'password' : 'token';
    if (mechanism === 'LOGIN') return this.loginMechanism(request.initialResponse);
    const response = await this.response(request.initialResponse, '');
    if ('failed' in response) return response.failed;
    if (mechanism === 'PLAIN') {
      // Unset until this attempt's name is read: a failure counts against no earlier attempt's name.
      let user: string | undefined;
      let password: string;
      try {
        const credentials = decodePlain(response.bytes);
        user = credentials.authcid;
        password = credentials.password;
        this.options.record.user = user;
        checkPasswordLogin(credentials, this.passwordPolicy());
      } catch (err) {
        return this.refusePassword(err, user);
      }
      return this.passwordLogin(user, password, { kind: 'plain', initialResponse: response.text });
    }
    return this.tokenLogin(mechanism, response.bytes);
  }

  /** IMAP's LOGIN command. */
  private async passwordCommand(request: Extract<LoginRequest, { kind: 'password' }>): Promise<LoginOutcome<S, R>> {
    this.options.record.mechanism = 'LOGIN-COMMAND';
    this.options.record.credential = 'password';
    let user: string;
    try {
      user = strictUtf8.decode(request.user);
    } catch {
      this.options.log.info({ mechanism: 'LOGIN-COMMAND', reason: 'bad_sasl', detail: 'user name is not UTF-8' }, 'authentication refused');
      return this.failed('bad_sasl', undefined, { by: 'policy', clientText: 'Invalid user name' });
    }
    this.options.record.user = user;
    try {
      checkPasswordLogin({ authcid: user }, this.passwordPolicy());
    } catch (err) {
      return this.refusePassword(err, user);
    }
    let password: string | undefined;
    try {
      password = strictUtf8.decode(request.password);
    } catch {
      // Not UTF-8: not an app password, perhaps still the backend's.
      password = undefined;
    }
    return this.passwordLogin(user, password, { kind: 'password', user: request.user, password: request.password, literals: request.literals });
  }

  /** The LOGIN mechanism: user name (possibly as initial response), then password, on request. */
  private async loginMechanism(initialResponse: string | undefined): Promise<LoginOutcome<S, R>> {
    const userResponse = await this.response(initialResponse, LOGIN_USERNAME_PROMPT);
    if ('failed' in userResponse) return userResponse.failed;
    const passwordResponse = await this.response(undefined, LOGIN_PASSWORD_PROMPT);
    if ('failed' in passwordResponse) return passwordResponse.failed;
    let user: string | undefined;
    let password: string;
    try {
      user = decodeLoginField(userResponse.bytes);
      this.options.record.user = user;
      password = decodeLoginField(passwordResponse.bytes);
      checkPasswordLogin({ authcid: user }, this.passwordPolicy());
    } catch (err) {
      return this.refusePassword(err, user);
    }
    return this.passwordLogin(user, password, { kind: 'login-mechanism', userResponse: userResponse.text, passwordResponse: passwordResponse.text });
  }

  /**
   * A password login that passed the policy: an app password of `user` for this protocol logs in
   * with the master user as the record's user; any other password goes to the backend as sent, or,
   * with `appPasswords.only`, is refused here.
   */
  private async passwordLogin(user: string, password: string | undefined, passThrough: BackendCredentials): Promise<LoginOutcome<S, R>> {
    const { appPasswords, log, record, client, protocol } = this.options;
    if (appPasswords && password !== undefined) {
      let found: AppPasswordRecord | undefined;
      try {
        found = await appPasswords.verify(user, password, protocol, client.address);
      } catch (err) {
        log.error({ mechanism: record.mechanism, user, reason: 'storage_unavailable', detail: (err as Error).message }, 'app passwords could not be read');
        this.count('temporary_failure', 'storage_unavailable');
        return { kind: 'temporary', which: 'provider' };
      }
      if (found) return this.appPasswordLogin(found);
    }
    if (this.options.appPasswordsOnly) {
      log.info({ mechanism: record.mechanism, user, credential: record.credential, reason: 'not_app_password' }, 'authentication failed');
      return this.failed('not_app_password', user, { by: 'policy', clientText: undefined });
    }
    return this.backend(passThrough, user);
  }

  /** A verified app password: the directory's word on its user, then the master login as that user. */
  private async appPasswordLogin(found: AppPasswordRecord): Promise<LoginOutcome<S, R>> {
    const { log, record } = this.options;
    record.credential = 'app_password';
    // The user the password was made for, never the client's spelling of it.
    record.user = found.user;
    const verdict = this.options.directoryVerdict?.(found.user) ?? 'allowed';
    if (verdict === 'not_loaded') {
      log.info({ mechanism: record.mechanism, user: found.user, credential: 'app_password', reason: 'provider_unavailable' }, 'authentication failed');
      this.count('temporary_failure', 'provider_unavailable');
      return { kind: 'temporary', which: 'provider' };
    }
    if (verdict !== 'allowed') {
      const reason = verdict === 'disabled' ? 'user_disabled' : 'unknown_user';
      log.info({ mechanism: record.mechanism, user: found.user, credential: 'app_password', reason }, 'authentication failed');
      return this.failed(reason, found.user, { by: 'policy', clientText: undefined });
    }
    const outcome = await this.backend({ kind: 'token', user: found.user }, found.user);
    if (outcome.kind === 'success') this.endWhenRevoked(found, outcome.socket);
    return outcome;
  }

  /**
   * Ends a session opened with an app password once the password is revoked or expired, or its
   * user left the directory: an IMAP IDLE could otherwise outlive the revocation by days. Checked
   * every {@link APP_PASSWORD_RECHECK_MS}; closing the backend side closes the client's too.
   */
  private endWhenRevoked(found: AppPasswordRecord, backend: Socket): void {
    const { appPasswords, log } = this.options;
    if (!appPasswords) return;
    let wait: { cancel(): void } | undefined;
    let stopped = false;
    backend.once('close', () => {
      stopped = true;
      wait?.cancel();
    });
    const stillLive = async (): Promise<boolean> => {
      const verdict = this.options.directoryVerdict?.(found.user) ?? 'allowed';
      if (verdict === 'disabled' || verdict === 'unknown') return false;
      try {
        return (await appPasswords.list(found.user)).some((r) => r.id === found.id);
      } catch {
        // A store that cannot be read just now ends no session; the next check asks again.
        return true;
      }
    };
    const schedule = (): void => {
      const next = (this.options.recheckClock ?? systemClock).after(APP_PASSWORD_RECHECK_MS);
      wait = next;
      void next.elapsed.then(async () => {
        if (stopped) return;
        if (await stillLive()) {
          if (!stopped) schedule();
          return;
        }
        if (stopped) return;
        log.info({ user: found.user, credential: 'app_password', id: found.id, reason: 'app_password_revoked' }, 'session ended: its app password was revoked or expired, or its user left');
        backend.destroy();
      });
    };
    if (!backend.destroyed) schedule();
  }

  /**
   * One SASL response: the initial response if given, else asked for with a challenge.
   * `*` cancels; an empty line is an empty response (RFC 3501 6.2.2, RFC 4954 4).
   */
  private async response(initial: string | undefined, challenge: string): Promise<Response> {
    let text = initial;
    if (text === undefined) {
      this.port.challenge(challenge);
      const frame = await this.port.response();
      if (frame.type === 'error') return { failed: { kind: 'malformed', what: 'too_long' } };
      text = frame.line.toString('latin1');
      if (text === '*') return { failed: { kind: 'cancelled' } };
      if (text === '') return { bytes: Buffer.alloc(0), text: '' };
    }
    try {
      return { bytes: decodeSaslResponse(text), text };
    } catch {
      return { failed: { kind: 'malformed', what: 'base64' } };
    }
  }

  /** A bearer-token login: decode, validate, bind the token to the named user, ask the directory. */
  private async tokenLogin(mechanism: 'XOAUTH2' | 'OAUTHBEARER', message: Buffer): Promise<LoginOutcome<S, R>> {
    const { log, record } = this.options;
    let credentials: BearerCredentials;
    try {
      credentials = mechanism === 'XOAUTH2' ? decodeXoauth2(message) : decodeOauthbearer(message);
    } catch (err) {
      if (!(err instanceof SaslError)) throw err;
      log.info({ mechanism, reason: 'bad_sasl', detail: err.message }, 'authentication failed');
      return this.failed('bad_sasl', undefined, { by: 'token_message', mechanism, detail: err.message });
    }
    // Only for the log: the backend hears of a user only once the token is bound to it.
    record.user = credentials.user;
    let identity: string;
    try {
      const result = await this.options.validator.validate(credentials.token);
      identity = bindIdentity(credentials.user, result.identity);
      record.user = identity;
      const verdict = this.options.directoryVerdict?.(identity) ?? 'allowed';
      if (verdict === 'disabled') throw new AuthError('user_disabled', 'the user is disabled or removed in the directory');
      if (verdict === 'unknown') throw new AuthError('unknown_user', 'the user is not a mail user in the directory');
      if (verdict === 'not_loaded') {
        throw new AuthError('provider_unavailable', 'the user directory has not been loaded from the provider yet');
      }
    } catch (err) {
      const error = err instanceof AuthError ? err : new AuthError('provider_unavailable', String(err), { cause: err });
      log.info({ mechanism, user: credentials.user, reason: error.code, detail: error.message }, 'authentication failed');
      if (error.temporary) {
        this.count('temporary_failure', error.code);
        return { kind: 'temporary', which: 'provider' };
      }
      await this.errorChallenge(mechanism);
      return this.failed(error.code, record.user, { by: 'token' });
    }
    return this.backend({ kind: 'token', user: identity }, identity);
  }

  /**
   * The error challenge of a refused token (XOAUTH2's JSON, or RFC 7628's), then the client's
   * dummy reply read and let go.
   */
  private async errorChallenge(mechanism: 'XOAUTH2' | 'OAUTHBEARER'): Promise<void> {
    const { scope, issuer } = this.options.oauth;
    this.port.challenge(
      mechanism === 'XOAUTH2'
        ? xoauth2ErrorChallenge({ scope })
        : oauthbearerErrorChallenge({ scope, openidConfiguration: openidConfigurationUrl(issuer) }),
    );
    // Some clients never answer the challenge, or answer with a lone 0x01 and no line end: they
    // get the final refusal after a short wait instead of hanging until the pre-login timeout.
    const wait = this.clock.after(DUMMY_REPLY_WAIT_MS);
    const reply = await Promise.race([this.port.response(), wait.elapsed.then(() => 'timeout' as const)]);
    wait.cancel();
    if (reply === 'timeout') {
      if (!this.port.abandonResponse()) this.options.log.debug('client did not answer the error challenge');
      return;
    }
    if (reply.type === 'line' && !isDummyReply(reply.line)) {
      this.options.log.debug('client answered the error challenge with something other than the dummy reply');
    }
  }

  /** A password login sasl-gate refuses itself (master user, bad SASL). */
  private refusePassword(err: unknown, user: string | undefined): Promise<LoginOutcome<S, R>> {
    if (!(err instanceof GateError)) throw err;
    this.options.log.info({ mechanism: this.options.record.mechanism, reason: err.code, detail: err.message }, 'authentication refused');
    return this.failed(err.code, user, { by: 'policy', clientText: err instanceof SaslError ? err.message : undefined });
  }

  /** Logs into the backend through the dialect; a refusal of a token user is sasl-gate's problem, not the client's. */
  private async backend(credentials: BackendCredentials, user: string): Promise<LoginOutcome<S, R>> {
    const { log, record, protocol, metrics } = this.options;
    const started = this.clock.now();
    const seconds = () => (this.clock.now() - started) / 1000;
    let answer: BackendAnswer<S, R>;
    try {
      answer = await this.port.backendLogin(credentials);
    } catch (err) {
      const code = err instanceof GateError ? err.code : 'backend_unavailable';
      log.warn({ mechanism: record.mechanism, user, reason: code, detail: (err as Error).message }, 'backend login failed');
      metrics.backendLoginSeconds.observe({ protocol, result: 'unavailable' }, seconds());
      this.count('temporary_failure', code);
      return { kind: 'temporary', which: 'backend' };
    }
    if (this.port.isClosed()) {
      if (answer.ok) answer.socket.destroy();
      return { kind: 'gone' };
    }
    metrics.backendLoginSeconds.observe({ protocol, result: answer.ok ? 'ok' : 'refused' }, seconds());
    if (!answer.ok) {
      if (credentials.kind === 'token') {
        // The token (or app password) was good: a refusal here is sasl-gate's configuration or a missing mailbox,
        // never something the client should drop its credentials over.
        log.error(
          { mechanism: record.mechanism, user, reason: 'backend_refused', backendReply: answer.summary },
          'backend refused the master login: check master.user / master.password, and that the user exists there',
        );
        this.count('temporary_failure', 'backend_refused');
        return { kind: 'temporary', which: 'mailbox' };
      }
      log.info({ mechanism: record.mechanism, user, reason: 'backend_refused', backendReply: answer.summary }, 'authentication failed');
      return this.failed('backend_refused', user, { by: 'backend', reply: answer.reply });
    }
    log.info({ mechanism: record.mechanism, user, credential: record.credential, backendLoginMs: this.clock.now() - started }, 'authenticated');
    this.count('success', 'ok');
    void this.options.failures.succeeded(this.options.client.address, user);
    return { kind: 'success', user, socket: answer.socket, rest: answer.rest, extras: answer.extras };
  }

  /**
   * A failed login: counted, then answered after a delay that grows with recent failures from this
   * address and for this user name (so guessing is slow); too many failures end the connection.
   */
  private async failed(reason: string, user: string | undefined, refusal: Refusal<R>): Promise<LoginOutcome<S, R>> {
    const { failures, client } = this.options;
    this.count('failure', reason);
    const delay = await failures.failed(client.address, user);
    if (delay > 0) await this.clock.after(delay).elapsed;
    this.failedLogins += 1;
    const closing = this.failedLogins >= this.options.maxAuthFailures;
    if (closing) this.options.metrics.refusals.inc({ listener: this.options.listener, limit: 'auth_failures' });
    return { kind: 'refused', reason, refusal, closing };
  }

  private count(result: AuthResult, reason: string): void {
    const { metrics, listener, record } = this.options;
    const credential: Credential = record.credential ?? 'password';
    metrics.authentications.inc({ listener, mechanism: record.mechanism ?? 'none', result, reason, credential });
  }

  private passwordPolicy() {
    return { masterUser: this.options.master.user, masterSeparator: this.options.master.separator };
  }
}

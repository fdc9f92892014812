import type { Socket } from 'node:net';
import type { Logger } from 'pino';
import { checkPasswordLogin } from '../auth/password-policy.js';
import type { TokenValidator } from '../auth/validator.js';
import type { LimitsConfig } from '../config/schema.js';
import { AuthError, GateError, SaslError } from '../errors.js';
import type { RelayStats } from '../relay/pipe.js';
import { PreAuthSession } from '../login/session.js';
import { decodeSaslResponse } from '../sasl/base64.js';
import { decodeLoginField, LOGIN_PASSWORD_PROMPT, LOGIN_USERNAME_PROMPT } from '../sasl/login.js';
import { decodePlain } from '../sasl/plain.js';
import type { BackendConnector } from '../net/connector.js';
import { loginToBackend, type BackendCredentials, type ClientOrigin } from './backend-login.js';
import { ImapFramer, type Frame } from './framer.js';
import { astringValue, ImapSyntaxError, parseCommand, type ImapCommand, type ImapValue } from './parser.js';

/** Everything a session needs from the rest of the program; each I/O seam is injected. */
export interface ImapSessionContext {
  listener: string;
  limits: LimitsConfig;
  master: { user: string; password: string; separator: string };
  oauth: { issuer: string; scope: string };
  /** Current pre-login capabilities (the backend's, adjusted) and what the backend supports. */
  capabilities: { current(): readonly string[] };
  validator: TokenValidator;
  connectBackend: BackendConnector;
  backendResponseTimeoutMs: number;
  log: Logger;
}

/** Commands that exist in IMAP but need a login first: answered with a clearer BAD. */
const AFTER_LOGIN = new Set([
  'SELECT', 'EXAMINE', 'CREATE', 'DELETE', 'RENAME', 'SUBSCRIBE', 'UNSUBSCRIBE', 'LIST', 'LSUB',
  'STATUS', 'APPEND', 'CHECK', 'CLOSE', 'EXPUNGE', 'SEARCH', 'FETCH', 'STORE', 'COPY', 'MOVE',
  'UID', 'IDLE', 'ENABLE', 'NAMESPACE', 'GETQUOTA', 'GETQUOTAROOT', 'SETQUOTA', 'GETACL', 'SETACL',
  'MYRIGHTS', 'LISTRIGHTS', 'UNSELECT', 'COMPRESS', 'NOTIFY', 'METADATA', 'GETMETADATA', 'SETMETADATA',
]);

const strictUtf8 = new TextDecoder('utf-8', { fatal: true });

/**
 * One client connection before login: sasl-gate answers it itself, authenticates the client,
 * logs into the backend on its behalf and then hands both sockets to the relay.
 */
export class ImapSession extends PreAuthSession<ImapFramer> {
  private commands = 0;
  private clientId: Array<[string, string]> = [];

  constructor(
    socket: Socket,
    private readonly ctx: ImapSessionContext,
  ) {
    super(socket, new ImapFramer(ctx.limits), ctx);
  }

  protected greet(): void {
    this.send(`* OK [CAPABILITY ${this.capabilities().join(' ')}] sasl-gate ready.`);
  }

  protected farewell(reason: 'timeout' | 'shutdown' | 'error' | 'too_many_failures'): string {
    if (reason === 'timeout') return '* BYE Login timeout: authentication took too long.';
    if (reason === 'too_many_failures') return '* BYE Too many authentication failures.';
    if (reason === 'shutdown') return '* BYE Server shutting down.';
    return '* BYE Internal error.';
  }

  /** Before STARTTLS: no mechanisms, LOGINDISABLED, and STARTTLS itself (RFC 3501, RFC 8314). */
  private capabilities(): readonly string[] {
    const current = this.ctx.capabilities.current();
    if (this.tlsActive) return current;
    return [...current.filter((c) => !/^(AUTH=|SASL-IR$)/i.test(c)), 'STARTTLS', 'LOGINDISABLED'];
  }

  private next(kind: 'command' | 'line'): Promise<Frame> {
    return this.nextFrame(() => (kind === 'command' ? this.framer.readCommand() : this.framer.readLine()));
  }

  /** The pre-login command loop; after a successful login it returns when the relay ends. */
  protected async serve(): Promise<RelayStats> {
    for (;;) {
      const frame = await this.next('command');
      if (frame.type === 'continue') {
        this.send('+ Ready for literal data');
        continue;
      }
      if (frame.type === 'error') {
        const what = { line_too_long: 'Command line too long', literal_too_large: 'Literal too large', too_many_literals: 'Too many literals' }[frame.error];
        this.send(`${frame.tag ?? '*'} BAD [TOOBIG] ${what}.`);
        this.countCommand();
        continue;
      }
      if (frame.type !== 'command') continue;
      this.countCommand();
      let command: ImapCommand;
      try {
        command = parseCommand(frame.segments);
      } catch (err) {
        if (!(err instanceof ImapSyntaxError)) throw err;
        this.send(`${err.tag ?? '*'} BAD Syntax error: ${err.message}.`);
        continue;
      }
      const relayed = await this.dispatch(command);
      if (relayed) return relayed;
    }
  }

  private countCommand(): void {
    this.commands += 1;
    if (this.commands > this.ctx.limits.maxPreAuthCommands) this.stop('too_many_commands', '* BYE Too many commands before login.');
  }

  private async dispatch(command: ImapCommand): Promise<RelayStats | void> {
    const { tag, name, args } = command;
    switch (name) {
      case 'CAPABILITY':
        if (args.length > 0) return this.send(`${tag} BAD CAPABILITY takes no arguments.`);
        this.send(`* CAPABILITY ${this.capabilities().join(' ')}`);
        return this.send(`${tag} OK Capability completed.`);
      case 'NOOP':
        return this.send(`${tag} OK NOOP completed.`);
      case 'LOGOUT':
        this.send('* BYE Logging out.');
        this.send(`${tag} OK Logout completed.`);
        return this.stop('logout');
      case 'ID':
        return this.handleId(tag, args);
      case 'STARTTLS':
        if (this.tlsActive) return this.send(`${tag} BAD TLS is already active.`);
        if (args.length > 0) return this.send(`${tag} BAD STARTTLS takes no arguments.`);
        this.send(`${tag} OK Begin TLS negotiation now.`);
        return this.upgradeToTls();
      case 'LOGIN':
        if (!this.tlsActive) return this.send(`${tag} NO [PRIVACYREQUIRED] Logins are disabled until STARTTLS.`);
        return this.handleLogin(tag, args);
      case 'AUTHENTICATE':
        if (!this.tlsActive) return this.send(`${tag} NO [PRIVACYREQUIRED] Authentication is disabled until STARTTLS.`);
        return this.handleAuthenticate(tag, args);
      default:
        if (AFTER_LOGIN.has(name)) return this.send(`${tag} BAD ${name} needs a login first.`);
        return this.send(`${tag} BAD Unknown command.`);
    }
  }

  private handleId(tag: string, args: ImapValue[]): void {
    const [list] = args;
    if (args.length !== 1 || (list?.type !== 'list' && list?.type !== 'nil')) {
      return this.send(`${tag} BAD ID expects a parenthesized list or NIL.`);
    }
    const fields: Array<[string, string]> = [];
    if (list.type === 'list') {
      for (let i = 0; i + 1 < list.items.length && fields.length < 30; i += 2) {
        const key = astringValue(list.items[i]);
        const value = astringValue(list.items[i + 1]);
        if (key && value) fields.push([key.toString('utf8').slice(0, 30), value.toString('utf8').slice(0, 1024)]);
      }
    }
    this.clientId = fields;
    this.send('* ID ("name" "sasl-gate")');
    this.send(`${tag} OK ID completed.`);
  }

  private async handleLogin(tag: string, args: ImapValue[]): Promise<RelayStats | void> {
    const user = astringValue(args[0]);
    const password = astringValue(args[1]);
    if (args.length !== 2 || !user || !password) return this.send(`${tag} BAD LOGIN expects a user name and a password.`);
    this.mechanism = 'LOGIN-COMMAND';
    let userName: string;
    try {
      userName = strictUtf8.decode(user);
      checkPasswordLogin({ authcid: userName }, this.passwordPolicy());
    } catch (err) {
      return this.refuse(tag, err);
    }
    this.user = userName;
    const literals = args.some((a) => a.type === 'string' && a.form === 'literal');
    return this.backendLogin(tag, { kind: 'login', user, password, literals });
  }

  private async handleAuthenticate(tag: string, args: ImapValue[]): Promise<RelayStats | void> {
    const [mechanismArg, initial] = args;
    if (mechanismArg?.type !== 'atom' || args.length > 2 || (initial !== undefined && initial.type !== 'atom')) {
      return this.send(`${tag} BAD AUTHENTICATE expects a mechanism and an optional initial response.`);
    }
    const mechanism = mechanismArg.value.toUpperCase();
    if (!this.capabilities().includes(`AUTH=${mechanism}`)) {
      return this.send(`${tag} NO Unsupported authentication mechanism.`);
    }
    this.mechanism = mechanism;
    const initialResponse = initial?.type === 'atom' ? initial.value : undefined;

    if (mechanism === 'LOGIN') return this.loginMechanism(tag, initialResponse);
    const response = await this.saslResponse(tag, initialResponse, '');
    if (response === undefined) return;
    switch (mechanism) {
      case 'XOAUTH2':
      case 'OAUTHBEARER':
        return this.tokenLogin(tag, mechanism, response.bytes);
      case 'PLAIN': {
        try {
          const credentials = decodePlain(response.bytes);
          checkPasswordLogin(credentials, this.passwordPolicy());
          this.user = credentials.authcid;
        } catch (err) {
          return this.refuse(tag, err);
        }
        return this.backendLogin(tag, { kind: 'plain', initialResponse: response.text });
      }
      default:
        return this.send(`${tag} NO Unsupported authentication mechanism.`);
    }
  }

  /** The LOGIN mechanism: user name (possibly as initial response), then password, on request. */
  private async loginMechanism(tag: string, initialResponse: string | undefined): Promise<RelayStats | void> {
    const userResponse = await this.saslResponse(tag, initialResponse, LOGIN_USERNAME_PROMPT);
    if (userResponse === undefined) return;
    const passwordResponse = await this.saslResponse(tag, undefined, LOGIN_PASSWORD_PROMPT);
    if (passwordResponse === undefined) return;
    try {
      const userName = decodeLoginField(userResponse.bytes);
      decodeLoginField(passwordResponse.bytes);
      checkPasswordLogin({ authcid: userName }, this.passwordPolicy());
      this.user = userName;
    } catch (err) {
      return this.refuse(tag, err);
    }
    return this.backendLogin(tag, {
      kind: 'login-mechanism',
      userResponse: userResponse.text,
      passwordResponse: passwordResponse.text,
    });
  }

  /**
   * One SASL response: the initial response if given, else asked for with `+ challenge`.
   * Handles `*` (cancel) and bad base64 itself and returns undefined after replying.
   */
  private async saslResponse(
    tag: string,
    initial: string | undefined,
    challenge: string,
  ): Promise<{ bytes: Buffer; text: string } | undefined> {
    let text = initial;
    if (text === undefined) {
      this.send(`+ ${challenge}`);
      const frame = await this.next('line');
      if (frame.type === 'error') {
        this.send(`${tag} BAD [TOOBIG] Authentication response too long.`);
        return undefined;
      }
      if (frame.type !== 'line') return undefined;
      text = frame.line.toString('latin1');
      if (text === '*') {
        this.send(`${tag} BAD Authentication cancelled.`);
        return undefined;
      }
      // An empty line is an empty response (RFC 3501 section 6.2.2).
      if (text === '') return { bytes: Buffer.alloc(0), text: '' };
    }
    try {
      return { bytes: decodeSaslResponse(text), text };
    } catch {
      this.send(`${tag} BAD Invalid base64 in authentication response.`);
      return undefined;
    }
  }

  private async tokenLogin(tag: string, mechanism: 'XOAUTH2' | 'OAUTHBEARER', message: Buffer): Promise<RelayStats | void> {
    const verdict = await this.verifyBearer(mechanism, message);
    switch (verdict.kind) {
      case 'bad_message':
        return this.authenticationFailed(`${tag} NO [AUTHENTICATIONFAILED] Invalid ${mechanism} message: ${verdict.detail}.`, undefined, 'bad_sasl');
      case 'rejected':
        if (verdict.error.temporary) {
          return this.send(`${tag} NO [UNAVAILABLE] Authentication service temporarily unavailable, try again later.`);
        }
        await this.errorChallenge('+ ', mechanism, () => this.nextFrame(() => this.framer.readLine()));
        return this.authenticationFailed(`${tag} NO [AUTHENTICATIONFAILED] Authentication failed.`, this.user, verdict.error.code);
      case 'accepted':
        return this.backendLogin(tag, {
          kind: 'master',
          user: verdict.identity,
          masterUser: this.ctx.master.user,
          masterPassword: this.ctx.master.password,
        });
    }
  }

  private refuse(tag: string, err: unknown): Promise<void> {
    if (err instanceof GateError) {
      this.log.info({ mechanism: this.mechanism, reason: err.code, detail: err.message }, 'authentication refused');
      if (err instanceof SaslError) return this.authenticationFailed(`${tag} NO [AUTHENTICATIONFAILED] ${err.message}.`, this.user, err.code);
      return this.authenticationFailed(`${tag} NO [AUTHENTICATIONFAILED] Authentication failed.`, this.user, err.code);
    }
    if (err instanceof TypeError) {
      // TextDecoder's verdict on invalid UTF-8.
      return this.authenticationFailed(`${tag} NO [AUTHENTICATIONFAILED] Invalid user name.`, undefined, 'bad_sasl');
    }
    throw err;
  }

  private passwordPolicy() {
    return { masterUser: this.ctx.master.user, masterSeparator: this.ctx.master.separator };
  }

  private origin(): ClientOrigin {
    return {
      address: this.client.address,
      port: this.client.port,
      localAddress: this.socket.localAddress ?? '',
      localPort: this.socket.localPort ?? 0,
      sessionId: this.id,
      clientId: this.clientId,
      tls: this.tlsActive,
    };
  }

  /** Logs into the backend and, on success, answers the client and starts the relay. */
  private async backendLogin(tag: string, credentials: BackendCredentials): Promise<RelayStats | void> {
    const started = Date.now();
    let result: Awaited<ReturnType<typeof loginToBackend>>;
    try {
      result = await loginToBackend({
        connect: this.ctx.connectBackend,
        responseTimeoutMs: this.ctx.backendResponseTimeoutMs,
        origin: this.origin(),
        credentials,
      });
    } catch (err) {
      const code = err instanceof AuthError ? err.code : 'backend_unavailable';
      this.log.warn({ mechanism: this.mechanism, user: this.user, reason: code, detail: (err as Error).message }, 'backend login failed');
      this.timeBackendLogin('imap', (Date.now() - started) / 1000, 'unavailable');
      this.countAuthentication('temporary_failure', code);
      return this.send(`${tag} NO [UNAVAILABLE] Mail server temporarily unavailable, try again later.`);
    }
    if (this.isClosed) {
      if (result.ok) result.socket.destroy();
      return;
    }
    this.timeBackendLogin('imap', (Date.now() - started) / 1000, result.ok ? 'ok' : 'refused');
    if (!result.ok) {
      if (credentials.kind === 'master') {
        // The token was good: a refusal here is sasl-gate's configuration or a missing mailbox,
        // never something the client should drop its credentials over.
        this.log.error(
          { mechanism: this.mechanism, user: this.user, reason: 'backend_refused', backendReply: result.text.slice(0, 200) },
          'backend refused the master login: check master.user / master.password, and that the user exists there',
        );
        this.countAuthentication('temporary_failure', 'backend_refused');
        return this.send(`${tag} NO [UNAVAILABLE] Mailbox temporarily unavailable, try again later.`);
      }
      this.log.info(
        { mechanism: this.mechanism, user: this.user, reason: 'backend_refused', backendReply: result.text.slice(0, 200) },
        'authentication failed',
      );
      return this.authenticationFailed(`${tag} ${result.status} ${result.text}`, this.user, 'backend_refused');
    }
    this.log.info({ mechanism: this.mechanism, user: this.user, backendLoginMs: Date.now() - started }, 'authenticated');
    this.authenticationSucceeded(this.user);
    this.clientId = [];
    return this.startRelay(`${tag} OK ${result.text}`, result.socket, result.rest);
  }
}

import type { Socket } from 'node:net';
import type { Logger } from 'pino';
import { checkPasswordLogin } from '../auth/password-policy.js';
import type { TokenValidator } from '../auth/validator.js';
import type { LimitsConfig } from '../config/schema.js';
import { AuthError, GateError } from '../errors.js';
import type { BackendConnector } from '../net/connector.js';
import type { RelayStats } from '../relay/pipe.js';
import { decodeSaslResponse } from '../sasl/base64.js';
import { decodeLoginField, LOGIN_PASSWORD_PROMPT, LOGIN_USERNAME_PROMPT } from '../sasl/login.js';
import { decodePlain } from '../sasl/plain.js';
import { LineFramer, type LineFrame } from '../net/line-framer.js';
import { PreAuthSession } from '../login/session.js';
import { loginToSmtpBackend, type SmtpBackendCredentials } from './backend-login.js';
import { offersChunking, runSmtpCommandRelay } from './relay.js';

/** Everything an SMTP session needs; each I/O seam is injected. */
export interface SmtpSessionContext {
  listener: string;
  hostname: string;
  limits: LimitsConfig;
  master: { user: string; password: string; separator: string };
  oauth: { issuer: string; scope: string };
  /** How token users are logged into the backend. */
  login: 'xclient' | 'master';
  /** Current EHLO extensions to advertise (the backend's, adjusted). */
  extensions: { current(): readonly string[] };
  validator: TokenValidator;
  connectBackend: BackendConnector;
  backendResponseTimeoutMs: number;
  log: Logger;
}

/** Commands of a mail transaction: refused until the client has authenticated. */
const MAIL_COMMANDS = new Set(['MAIL', 'RCPT', 'DATA', 'BDAT', 'VRFY', 'EXPN', 'ETRN', 'TURN', 'ATRN']);

/**
 * One SMTP submission connection before AUTH: sasl-gate answers EHLO and AUTH itself (RFC 4954
 * replies), logs into the backend on the client's behalf, then relays the session as a command relay
 * that owns the SMTP framing (see `relay.ts`).
 */
export class SmtpSession extends PreAuthSession<LineFramer> {
  private commands = 0;
  private helo: string | undefined;

  constructor(
    socket: Socket,
    private readonly ctx: SmtpSessionContext,
  ) {
    super(socket, new LineFramer(ctx.limits.maxLineLength), ctx);
  }

  protected greet(): void {
    this.send(`220 ${this.ctx.hostname} ESMTP ready`);
  }

  protected farewell(reason: 'timeout' | 'shutdown' | 'error' | 'too_many_failures'): string {
    if (reason === 'timeout') return '421 4.4.2 Timeout: authentication took too long, closing connection';
    if (reason === 'too_many_failures') return '421 4.7.0 Too many authentication failures, closing connection';
    if (reason === 'shutdown') return '421 4.3.2 Server shutting down';
    return '421 4.3.0 Internal error, closing connection';
  }

  /** Before STARTTLS: STARTTLS and no AUTH (RFC 3207, RFC 8314); after it, the full list. */
  private extensions(): readonly string[] {
    const current = this.ctx.extensions.current();
    if (this.tlsActive) return current;
    return [...current.filter((e) => !/^AUTH /i.test(e)), 'STARTTLS'];
  }

  private nextLine(): Promise<LineFrame> {
    return this.nextFrame(() => this.framer.readLine());
  }

  protected async serve(): Promise<RelayStats> {
    for (;;) {
      const frame = await this.nextLine();
      this.commands += 1;
      if (this.commands > this.ctx.limits.maxPreAuthCommands) {
        this.stop('too_many_commands', '421 4.7.0 Too many commands before authentication, closing connection');
      }
      if (frame.type === 'error') {
        this.send('500 5.5.2 Error: line too long');
        continue;
      }
      const line = frame.line.toString('latin1');
      const match = /^([A-Za-z]+)(?: (.*))?$/.exec(line);
      if (!match) {
        this.send('500 5.5.2 Error: command not recognized');
        continue;
      }
      const verb = match[1]!.toUpperCase();
      const argument = match[2] ?? '';
      const stats = await this.dispatch(verb, argument);
      if (stats) return stats;
    }
  }

  private async dispatch(verb: string, argument: string): Promise<RelayStats | void> {
    switch (verb) {
      case 'EHLO':
      case 'HELO': {
        const name = argument.trim();
        if (!/^[\x21-\x7e]{1,255}$/.test(name)) return this.send('501 5.5.4 Syntax: EHLO hostname');
        this.helo = name;
        if (verb === 'HELO') return this.send(`250 ${this.ctx.hostname}`);
        const lines = [this.ctx.hostname, ...this.extensions()];
        lines.forEach((l, i) => this.send(`250${i === lines.length - 1 ? ' ' : '-'}${l}`));
        return;
      }
      case 'NOOP':
        return this.send('250 2.0.0 OK');
      case 'RSET':
        return this.send('250 2.0.0 OK');
      case 'QUIT':
        return this.stop('logout', '221 2.0.0 Bye');
      case 'STARTTLS':
        if (this.tlsActive) return this.send('503 5.5.1 Error: TLS already active');
        if (argument !== '') return this.send('501 5.5.4 Syntax: STARTTLS');
        this.send('220 2.0.0 Ready to start TLS');
        await this.upgradeToTls();
        // RFC 3207: the client starts over with EHLO and learns the extensions anew.
        this.helo = undefined;
        return;
      case 'HELP':
        return this.send('214 2.0.0 See RFC 5321 and RFC 4954');
      case 'AUTH':
        if (!this.tlsActive) return this.send('530 5.7.0 Must issue a STARTTLS command first');
        return this.auth(argument);
      default:
        if (verb === 'BDAT') {
          // RFC 3030: the chunk follows the command whatever the reply; it is data, not commands.
          const size = /^(\d{1,15})(?: +LAST)? *$/i.exec(argument);
          if (size) this.framer.skip(Number(size[1]));
        }
        if (MAIL_COMMANDS.has(verb)) {
          return this.send(this.tlsActive ? '530 5.7.0 Authentication required' : '530 5.7.0 Must issue a STARTTLS command first');
        }
        return this.send('502 5.5.2 Error: command not recognized');
    }
  }

  private async auth(argument: string): Promise<RelayStats | void> {
    if (this.helo === undefined) return this.send('503 5.5.1 Error: send EHLO first');
    const [mechanismWord, initial, extra] = argument.split(' ');
    const mechanism = (mechanismWord ?? '').toUpperCase();
    if (!mechanism || extra !== undefined) return this.send('501 5.5.4 Syntax: AUTH mechanism [initial-response]');
    const offered = this.extensions().find((e) => e.startsWith('AUTH '))?.split(' ').slice(1) ?? [];
    if (!offered.includes(mechanism)) return this.send('504 5.5.4 Unrecognized authentication type');
    this.mechanism = mechanism;
    if (mechanism === 'LOGIN') return this.loginMechanism(initial);
    const response = await this.saslResponse(initial, '');
    if (!response) return;
    if (mechanism === 'XOAUTH2' || mechanism === 'OAUTHBEARER') return this.tokenLogin(mechanism, response.bytes);
    try {
      const credentials = decodePlain(response.bytes);
      checkPasswordLogin(credentials, this.passwordPolicy());
      this.user = credentials.authcid;
    } catch (err) {
      return this.refuse(err);
    }
    return this.backendLogin({ kind: 'plain', initialResponse: response.text });
  }

  private async loginMechanism(initial: string | undefined): Promise<RelayStats | void> {
    const userResponse = await this.saslResponse(initial, LOGIN_USERNAME_PROMPT);
    if (!userResponse) return;
    const passwordResponse = await this.saslResponse(undefined, LOGIN_PASSWORD_PROMPT);
    if (!passwordResponse) return;
    try {
      const userName = decodeLoginField(userResponse.bytes);
      decodeLoginField(passwordResponse.bytes);
      checkPasswordLogin({ authcid: userName }, this.passwordPolicy());
      this.user = userName;
    } catch (err) {
      return this.refuse(err);
    }
    return this.backendLogin({
      kind: 'login-mechanism',
      userResponse: userResponse.text,
      passwordResponse: passwordResponse.text,
    });
  }

  /** One SASL response: the initial one if given, else asked for with `334`. */
  private async saslResponse(initial: string | undefined, challenge: string): Promise<{ bytes: Buffer; text: string } | undefined> {
    let text = initial;
    if (text === undefined) {
      this.send(`334 ${challenge}`);
      const frame = await this.nextLine();
      if (frame.type === 'error') {
        this.send('500 5.5.6 Authentication exchange line is too long');
        return undefined;
      }
      text = frame.line.toString('latin1');
      if (text === '*') {
        this.send('501 5.7.0 Authentication cancelled');
        return undefined;
      }
      // An empty line is an empty response (RFC 4954 section 4).
      if (text === '') return { bytes: Buffer.alloc(0), text: '' };
    }
    try {
      return { bytes: decodeSaslResponse(text), text };
    } catch {
      this.send('501 5.5.2 Cannot decode response');
      return undefined;
    }
  }

  private async tokenLogin(mechanism: 'XOAUTH2' | 'OAUTHBEARER', message: Buffer): Promise<RelayStats | void> {
    const verdict = await this.verifyBearer(mechanism, message);
    switch (verdict.kind) {
      case 'bad_message':
        return this.authenticationFailed(`535 5.7.8 Invalid ${mechanism} message: ${verdict.detail}`, undefined, 'bad_sasl');
      case 'rejected':
        if (verdict.error.temporary) return this.send('454 4.7.0 Temporary authentication failure, try again later');
        await this.errorChallenge('334 ', mechanism, () => this.nextLine());
        return this.authenticationFailed('535 5.7.8 Authentication credentials invalid', this.user, verdict.error.code);
      case 'accepted':
        return this.backendLogin(
          this.ctx.login === 'xclient'
            ? { kind: 'xclient', user: verdict.identity }
            : { kind: 'master', user: verdict.identity, masterUser: this.ctx.master.user, masterPassword: this.ctx.master.password },
        );
    }
  }

  private refuse(err: unknown): Promise<void> {
    if (err instanceof GateError) {
      this.log.info({ mechanism: this.mechanism, reason: err.code, detail: err.message }, 'authentication refused');
      return this.authenticationFailed('535 5.7.8 Authentication credentials invalid', this.user, err.code);
    }
    throw err;
  }

  private passwordPolicy() {
    return { masterUser: this.ctx.master.user, masterSeparator: this.ctx.master.separator };
  }

  private async backendLogin(credentials: SmtpBackendCredentials): Promise<RelayStats | void> {
    const started = Date.now();
    let result: Awaited<ReturnType<typeof loginToSmtpBackend>>;
    try {
      result = await loginToSmtpBackend({
        connect: this.ctx.connectBackend,
        responseTimeoutMs: this.ctx.backendResponseTimeoutMs,
        origin: {
          address: this.client.address,
          port: this.client.port,
          helo: this.helo ?? 'unknown',
          local: { address: this.socket.localAddress ?? '', port: this.socket.localPort ?? 0 },
          tls: this.tlsActive,
        },
        credentials,
        localName: this.ctx.hostname,
      });
    } catch (err) {
      const code = err instanceof AuthError ? err.code : 'backend_unavailable';
      this.log.warn({ mechanism: this.mechanism, user: this.user, reason: code, detail: (err as Error).message }, 'backend login failed');
      this.timeBackendLogin('smtp', (Date.now() - started) / 1000, 'unavailable');
      this.countAuthentication('temporary_failure', code);
      return this.send('454 4.7.0 Mail server temporarily unavailable, try again later');
    }
    if (this.isClosed) {
      if (result.ok) result.socket.destroy();
      return;
    }
    this.timeBackendLogin('smtp', (Date.now() - started) / 1000, result.ok ? 'ok' : 'refused');
    if (!result.ok) {
      const backendReply = `${result.reply.code} ${result.reply.lines.join(' ')}`.slice(0, 200);
      if (credentials.kind === 'master') {
        // The token was good: a refusal here is sasl-gate's configuration or a missing mailbox.
        this.log.error(
          { mechanism: this.mechanism, user: this.user, reason: 'backend_refused', backendReply },
          'backend refused the master login: check master.user / master.password, and that the user exists there',
        );
        this.countAuthentication('temporary_failure', 'backend_refused');
        return this.send('454 4.7.0 Temporary authentication failure, try again later');
      }
      this.log.info({ mechanism: this.mechanism, user: this.user, reason: 'backend_refused', backendReply }, 'authentication failed');
      const { code, lines } = result.reply;
      return this.authenticationFailed(`${code === 334 ? 535 : code} ${lines[lines.length - 1] ?? ''}`.trimEnd(), this.user, 'backend_refused');
    }
    this.log.info({ mechanism: this.mechanism, user: this.user, backendLoginMs: Date.now() - started }, 'authenticated');
    this.authenticationSucceeded(this.user);
    const log = this.log.child({ user: this.user });
    const chunking = offersChunking(result.extensions);
    return this.startRelay('235 2.7.0 Authentication successful', result.socket, result.rest, (client, backend, pending, options) =>
      runSmtpCommandRelay({ client, backend, pending, log, chunking, ...options }),
    );
  }
}

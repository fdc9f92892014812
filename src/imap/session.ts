import type { Socket } from 'node:net';
import { ClientConnection, masterCredentials } from '../login/connection.js';
import { attemptLogin, connectionLoginFlow } from '../login/connection-flow.js';
import type { BackendAnswer, BackendCredentials, FlowClock, LoginFlow } from '../login/flow.js';
import type { SessionOptions } from '../login/options.js';
import type { BackendConnector } from '../net/connector.js';
import { loginToBackend, type BackendCredentials as ImapCredentials } from './backend-login.js';
import { imapCommand, type ImapAction } from './commands.js';
import { ImapFramer, type Frame } from './framer.js';
import { ImapSyntaxError, parseCommand, type ImapCommand } from './parser.js';
import { continuation, FAREWELLS, greeting, loginReply, syntaxError, tooBig, type ImapBackendRefusal } from './replies.js';

/** Everything an IMAP session needs: the shared options and the IMAP backend. */
export interface ImapSessionContext extends SessionOptions {
  /** Current pre-login capabilities (the backend's, adjusted). */
  capabilities: { current(): readonly string[] };
  connectBackend: BackendConnector;
  backendResponseTimeoutMs: number;
  clock?: FlowClock | undefined;
}

/**
 * One IMAP client connection before login: a client connection, the pre-login command table and
 * the login flow, composed. After a successful login both sockets go to the relay.
 */
export class ImapSession {
  private readonly connection: ClientConnection<ImapFramer>;
  private readonly flow: LoginFlow<string, ImapBackendRefusal>;
  private commands = 0;
  private clientId: Array<[string, string]> = [];

  constructor(
    socket: Socket,
    private readonly ctx: ImapSessionContext,
  ) {
    const connection = new ClientConnection(socket, new ImapFramer(ctx.limits), ctx, FAREWELLS);
    this.connection = connection;
    this.flow = connectionLoginFlow<string, ImapBackendRefusal>(connection, ctx, {
      protocol: 'imap',
      challenge: continuation,
      backendLogin: (credentials) => this.backendLogin(credentials),
    });
  }

  /** The session id, also the backend's `x-session-id`. */
  get id(): string {
    return this.connection.id;
  }

  /** Serves the connection until the relay ends, the client leaves, or a limit is reached. */
  run(onRelay?: (relay: { shutdown(): void }) => void): Promise<void> {
    return this.connection.run(() => this.serve(), onRelay);
  }

  /** Closes the session from outside (shutdown). */
  shutdown(): void {
    this.connection.shutdown();
  }

  /** Before STARTTLS: no mechanisms, LOGINDISABLED, and STARTTLS itself (RFC 3501, RFC 8314). */
  private capabilities(): readonly string[] {
    const current = this.ctx.capabilities.current();
    if (this.connection.tlsActive) return current;
    return [...current.filter((c) => !/^(AUTH=|SASL-IR$)/i.test(c)), 'STARTTLS', 'LOGINDISABLED'];
  }

  /** The pre-login command loop; returns once a login has handed the connection to the relay. */
  private async serve(): Promise<void> {
    const connection = this.connection;
    connection.send(greeting(this.capabilities()));
    for (;;) {
      const frame: Frame = await connection.nextFrame((framer) => framer.readCommand());
      if (frame.type === 'continue') {
        connection.send(continuation('Ready for literal data'));
        continue;
      }
      if (frame.type === 'error') {
        connection.send(tooBig(frame.tag, frame.error));
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
        connection.send(syntaxError(err.tag, err.message));
        continue;
      }
      const action = imapCommand(command.name, command.args, { capabilities: this.capabilities(), tlsActive: connection.tlsActive });
      if (await this.perform(command.tag, action)) return;
    }
  }

  private countCommand(): void {
    this.commands += 1;
    if (this.commands > this.ctx.limits.maxPreAuthCommands) this.connection.stop('too_many_commands', FAREWELLS.tooManyCommands);
  }

  /** Writes a command's response and does what follows it; true once the connection is handed over. */
  private async perform(tag: string, action: ImapAction): Promise<boolean> {
    const connection = this.connection;
    if (action.kind === 'login') return this.login(tag, action);
    for (const line of action.untagged ?? []) connection.send(`* ${line}`);
    connection.send(`${tag} ${action.status} ${action.text}`);
    if (action.clientId) this.clientId = action.clientId;
    if (action.then === 'logout') connection.stop('logout');
    if (action.then === 'starttls') {
      await connection.upgradeToTls();
      // Nothing said in plain text outlives the upgrade (as SMTP forgets EHLO, RFC 3207).
      this.clientId = [];
    }
    return false;
  }

  private async login(tag: string, action: Extract<ImapAction, { kind: 'login' }>): Promise<boolean> {
    const handedOver = await attemptLogin(this.connection, this.flow, action.request, {
      reply: (outcome) => loginReply(tag, outcome),
      tooManyFailures: FAREWELLS.tooManyFailures,
    });
    if (handedOver) this.clientId = [];
    return handedOver;
  }

  /** The IMAP backend login: token users through the master user, password users with their own credentials. */
  private async backendLogin(credentials: BackendCredentials): Promise<BackendAnswer<string, ImapBackendRefusal>> {
    const { master } = this.ctx;
    const imapCredentials: ImapCredentials =
      credentials.kind === 'token'
        ? masterCredentials(credentials.user, master)
        : credentials.kind === 'password'
          ? { kind: 'login', user: credentials.user, password: credentials.password, literals: credentials.literals }
          : credentials;
    const result = await loginToBackend({
      connect: this.ctx.connectBackend,
      responseTimeoutMs: this.ctx.backendResponseTimeoutMs,
      origin: { ...this.connection.origin, clientId: this.clientId },
      credentials: imapCredentials,
    });
    if (result.ok) return { ok: true, socket: result.socket, rest: result.rest, extras: result.text };
    return { ok: false, reply: { status: result.status, text: result.text }, summary: result.text.slice(0, 200) };
  }
}


import type { Socket } from 'node:net';
import { ClientConnection, masterCredentials } from '../login/connection.js';
import { attemptLogin, connectionLoginFlow } from '../login/connection-flow.js';
import type { BackendAnswer, BackendCredentials, FlowClock, LoginFlow } from '../login/flow.js';
import type { SessionOptions } from '../login/options.js';
import type { BackendConnector } from '../net/connector.js';
import { loginToBackend, type Pop3Credentials } from './backend-login.js';
import { plaintextCapabilities, saslMechanisms } from './capabilities.js';
import { pop3Command, type Pop3Action } from './commands.js';
import { Pop3Framer } from './framer.js';
import { continuation, FAREWELLS, GREETING, LINE_TOO_LONG, loginReply, type Pop3BackendRefusal } from './replies.js';

/** Everything a POP3 session needs: the shared options and the POP3 backend. */
export interface Pop3SessionContext extends SessionOptions {
  /** Current CAPA lines once TLS is active (the backend's, adjusted). */
  capabilities: { current(): readonly string[] };
  connectBackend: BackendConnector;
  backendResponseTimeoutMs: number;
  /** Whether to name the client's address with XCLIENT (false behind a PROXY header to the backend). */
  xclient: boolean;
  clock?: FlowClock | undefined;
}

/**
 * One POP3 client connection before login: a client connection, the pre-login command table and
 * the login flow, composed. After a successful login both sockets go to the byte relay.
 */
export class Pop3Session {
  private readonly connection: ClientConnection<Pop3Framer>;
  private readonly flow: LoginFlow<string, Pop3BackendRefusal>;
  private commands = 0;
  /** The name given with USER, waiting for PASS. */
  private user: Buffer | undefined;

  constructor(
    socket: Socket,
    private readonly ctx: Pop3SessionContext,
  ) {
    const connection = new ClientConnection(socket, new Pop3Framer(ctx.limits), ctx, FAREWELLS);
    this.connection = connection;
    this.flow = connectionLoginFlow<string, Pop3BackendRefusal>(connection, ctx, {
      protocol: 'pop3',
      challenge: continuation,
      backendLogin: (credentials) => this.backendLogin(credentials),
    });
  }

  /** The session id, as logged. */
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

  private capabilities(): readonly string[] {
    const current = this.ctx.capabilities.current();
    return this.connection.tlsActive ? current : plaintextCapabilities(current);
  }

  /** The pre-login command loop; returns once a login has handed the connection to the relay. */
  private async serve(): Promise<void> {
    const connection = this.connection;
    connection.send(GREETING);
    for (;;) {
      const frame = await connection.nextFrame((framer) => framer.readCommand());
      this.countCommand();
      if (frame.type === 'error') {
        connection.send(LINE_TOO_LONG);
        continue;
      }
      const { name, argument } = frame.command;
      const capabilities = this.capabilities();
      const action = pop3Command(name, argument, {
        capabilities,
        mechanisms: saslMechanisms(capabilities),
        tlsActive: connection.tlsActive,
        user: this.user,
      });
      if (await this.perform(action)) return;
    }
  }

  private countCommand(): void {
    this.commands += 1;
    if (this.commands > this.ctx.limits.maxPreAuthCommands) this.connection.stop('too_many_commands', FAREWELLS.tooManyCommands);
  }

  /** Writes a command's reply and does what follows it; true once the connection is handed over. */
  private async perform(action: Pop3Action): Promise<boolean> {
    const connection = this.connection;
    if (action.kind === 'login') {
      // A PASS uses the USER before it once, whatever the outcome (RFC 1939 7).
      this.user = undefined;
      return this.login(action);
    }
    for (const line of action.lines) connection.send(line);
    if (action.user !== undefined) this.user = action.user ?? undefined;
    if (action.then === 'quit') connection.stop('logout');
    if (action.then === 'stls') {
      await connection.upgradeToTls();
      // Nothing said in plain text outlives the upgrade.
      this.user = undefined;
    }
    return false;
  }

  private login(action: Extract<Pop3Action, { kind: 'login' }>): Promise<boolean> {
    return attemptLogin(this.connection, this.flow, action.request, { reply: loginReply, tooManyFailures: FAREWELLS.tooManyFailures });
  }

  /** The POP3 backend login: token users through the master user, password users with their own credentials. */
  private async backendLogin(credentials: BackendCredentials): Promise<BackendAnswer<string, Pop3BackendRefusal>> {
    const { master } = this.ctx;
    const pop3Credentials: Pop3Credentials =
      credentials.kind === 'token'
        ? masterCredentials(credentials.user, master)
        : credentials.kind === 'password'
          ? { kind: 'user-pass', user: credentials.user, password: credentials.password }
          : credentials;
    const result = await loginToBackend({
      connect: this.ctx.connectBackend,
      responseTimeoutMs: this.ctx.backendResponseTimeoutMs,
      origin: this.connection.origin,
      credentials: pop3Credentials,
      xclient: this.ctx.xclient,
    });
    if (result.ok) return { ok: true, socket: result.socket, rest: result.rest, extras: result.text };
    return { ok: false, reply: { text: result.text }, summary: result.text.slice(0, 200) };
  }
}

import type { Socket } from 'node:net';
import { InternalError } from '../errors.js';
import { ClientConnection, masterCredentials } from '../login/connection.js';
import { attemptLogin, connectionLoginFlow } from '../login/connection-flow.js';
import type { BackendAnswer, BackendCredentials, FlowClock, LoginFlow } from '../login/flow.js';
import type { SessionOptions } from '../login/options.js';
import type { BackendConnector } from '../net/connector.js';
import type { LineFrame } from '../net/line-framer.js';
import { loginToSieveBackend, type SieveBackendCredentials } from './backend-login.js';
import { mechanismsOf, withSasl } from './capabilities.js';
import { sieveCommand, type SieveAction } from './commands.js';
import { SieveFramer } from './framer.js';
import { parseCommand, parseStringLine, SieveSyntaxError, type SieveCommand, type SieveSegment } from './parser.js';
import { capabilityBlock, challenge, FAREWELLS, greeting, loginReply, syntaxError, tooBig, type SieveBackendRefusal } from './replies.js';

/** Everything a ManageSieve session needs: the shared options and the ManageSieve backend. */
export interface SieveSessionContext extends SessionOptions {
  /** Current capability lines for a TLS client (the backend's, with sasl-gate's SASL line). */
  capabilities: { current(): readonly string[] };
  connectBackend: BackendConnector;
  backendResponseTimeoutMs: number;
  clock?: FlowClock | undefined;
}

/**
 * One ManageSieve client connection before login: a client connection, the pre-login command
 * table and the login flow, composed. SASL challenges and responses are ManageSieve strings
 * (quoted or literal). After a successful login both sockets go to the relay.
 */
export class SieveSession {
  private readonly connection: ClientConnection<SieveFramer>;
  private readonly flow: LoginFlow<string, SieveBackendRefusal>;
  private commands = 0;

  constructor(
    socket: Socket,
    private readonly ctx: SieveSessionContext,
  ) {
    const connection = new ClientConnection(socket, new SieveFramer(ctx.limits), ctx, FAREWELLS);
    this.connection = connection;
    this.flow = connectionLoginFlow<string, SieveBackendRefusal>(connection, ctx, {
      protocol: 'sieve',
      challenge,
      response: () => this.saslResponse(),
      backendLogin: (credentials) => this.backendLogin(credentials),
    });
  }

  /** The session id. */
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

  /** Before STARTTLS: an empty SASL line and STARTTLS (RFC 5804 1.7); once encrypted, the mechanisms. */
  private capabilities(): readonly string[] {
    const current = this.ctx.capabilities.current();
    if (this.connection.tlsActive) return current;
    return withSasl(current, [], true);
  }

  /** The pre-login command loop; returns once a login has handed the connection to the relay. */
  private async serve(): Promise<void> {
    const connection = this.connection;
    for (const line of greeting(this.capabilities())) connection.send(line);
    for (;;) {
      const frame = await connection.nextFrame((framer) => framer.readFrame());
      this.countCommand();
      if (frame.type === 'error') {
        connection.send(tooBig(frame.error));
        continue;
      }
      let command: SieveCommand;
      try {
        command = parseCommand(frame.segments);
      } catch (err) {
        if (!(err instanceof SieveSyntaxError)) throw err;
        connection.send(syntaxError(err.message));
        continue;
      }
      const capabilities = this.capabilities();
      const action = sieveCommand(command.name, command.args, {
        capabilities,
        mechanisms: mechanismsOf(capabilities),
        tlsActive: connection.tlsActive,
      });
      if (await this.perform(action)) return;
    }
  }

  private countCommand(): void {
    this.commands += 1;
    if (this.commands > this.ctx.limits.maxPreAuthCommands) this.connection.stop('too_many_commands', FAREWELLS.tooManyCommands);
  }

  /** Writes a command's response and does what follows it; true once the connection is handed over. */
  private async perform(action: SieveAction): Promise<boolean> {
    const connection = this.connection;
    if (action.kind === 'login') return this.login(action);
    for (const line of action.lines) connection.send(line);
    if (action.then === 'logout') connection.stop('logout');
    if (action.then === 'starttls') {
      await connection.upgradeToTls();
      // RFC 5804 2.2: after the handshake the server issues its capabilities again.
      for (const line of capabilityBlock(this.capabilities(), 'TLS negotiation successful.')) connection.send(line);
    }
    return false;
  }

  private login(action: Extract<SieveAction, { kind: 'login' }>): Promise<boolean> {
    return attemptLogin(this.connection, this.flow, action.request, { reply: loginReply, tooManyFailures: FAREWELLS.tooManyFailures });
  }

  /**
   * A SASL response: one string, quoted or literal (RFC 5804 2.1), handed to the flow as its
   * bytes; `"*"` cancels. A line that is not a string is passed on as it came, so the flow
   * refuses it as an unreadable response (a bare `*` still cancels).
   */
  private async saslResponse(): Promise<LineFrame> {
    const frame = await this.connection.nextFrame((framer) => framer.readFrame());
    if (frame.type === 'error') return { type: 'error', error: 'line_too_long' };
    return { type: 'line', line: stringOrRaw(frame.segments) };
  }

  /** The ManageSieve backend login: token users through the master user, password users with their own exchange. */
  private async backendLogin(credentials: BackendCredentials): Promise<BackendAnswer<string, SieveBackendRefusal>> {
    const { master } = this.ctx;
    let sieveCredentials: SieveBackendCredentials;
    if (credentials.kind === 'token') {
      sieveCredentials = masterCredentials(credentials.user, master);
    } else if (credentials.kind === 'password') {
      throw new InternalError('ManageSieve has no LOGIN command');
    } else {
      sieveCredentials = credentials;
    }
    const result = await loginToSieveBackend({
      connect: this.ctx.connectBackend,
      responseTimeoutMs: this.ctx.backendResponseTimeoutMs,
      origin: this.connection.origin,
      credentials: sieveCredentials,
    });
    if (result.ok) return { ok: true, socket: result.socket, rest: result.rest, extras: result.line };
    return { ok: false, reply: { status: 'NO', line: result.line }, summary: result.line.slice(0, 200) };
  }
}

/** The bytes of a one-string line, or the line as it came when it is not one. */
function stringOrRaw(segments: readonly SieveSegment[]): Buffer {
  try {
    return parseStringLine(segments).value;
  } catch (err) {
    if (!(err instanceof SieveSyntaxError)) throw err;
    return segments.length === 1 ? segments[0]!.text : Buffer.from('!');
  }
}

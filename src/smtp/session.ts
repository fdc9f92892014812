import type { Socket } from 'node:net';
import { ClientConnection, masterCredentials } from '../login/connection.js';
import { attemptLogin, connectionLoginFlow } from '../login/connection-flow.js';
import type { BackendAnswer, BackendCredentials, FlowClock, LoginFlow } from '../login/flow.js';
import type { SessionOptions } from '../login/options.js';
import { LineFramer } from '../net/line-framer.js';
import type { BackendConnector } from '../net/connector.js';
import type { SmtpReply } from './backend.js';
import { loginToSmtpBackend, type SmtpBackendCredentials } from './backend-login.js';
import { smtpCommand, type SmtpAction } from './commands.js';
import { offersChunking, runSmtpCommandRelay } from './relay.js';
import { authReply, challenge, FAREWELLS, greeting, LINE_TOO_LONG, NOT_A_COMMAND } from './replies.js';
import { InternalError } from '../errors.js';

/** Everything an SMTP session needs: the shared options and the SMTP backend. */
export interface SmtpSessionContext extends SessionOptions {
  hostname: string;
  /** How token users are logged into the backend. */
  login: 'xclient' | 'master';
  /** Current EHLO extensions to advertise (the backend's, adjusted). */
  extensions: { current(): readonly string[] };
  connectBackend: BackendConnector;
  backendResponseTimeoutMs: number;
  clock?: FlowClock | undefined;
}

/**
 * One SMTP submission connection before AUTH: a client connection, the pre-login command table
 * and the login flow, composed. After AUTH the session runs as a command relay that owns the SMTP
 * framing (see `relay.ts`).
 */
export class SmtpSession {
  private readonly connection: ClientConnection<LineFramer>;
  private readonly flow: LoginFlow<string[], SmtpReply>;
  private commands = 0;
  private helo: string | undefined;

  constructor(
    socket: Socket,
    private readonly ctx: SmtpSessionContext,
  ) {
    const connection = new ClientConnection(socket, new LineFramer(ctx.limits.maxLineLength), ctx, FAREWELLS);
    this.connection = connection;
    this.flow = connectionLoginFlow<string[], SmtpReply>(connection, ctx, {
      protocol: 'smtp',
      challenge: challenge,
      backendLogin: (credentials) => this.backendLogin(credentials),
    });
  }

  /** Serves the connection until the relay ends, the client leaves, or a limit is reached. */
  run(onRelay?: (relay: { shutdown(): void }) => void): Promise<void> {
    return this.connection.run(() => this.serve(), onRelay);
  }

  /** Closes the session from outside (shutdown). */
  shutdown(): void {
    this.connection.shutdown();
  }

  /** Before STARTTLS: STARTTLS and no AUTH (RFC 3207, RFC 8314); after it, the full list. */
  private extensions(): readonly string[] {
    const current = this.ctx.extensions.current();
    if (this.connection.tlsActive) return current;
    return [...current.filter((e) => !/^AUTH /i.test(e)), 'STARTTLS'];
  }

  /** The pre-login command loop; returns once AUTH has handed the connection to the relay. */
  private async serve(): Promise<void> {
    const connection = this.connection;
    connection.send(greeting(this.ctx.hostname));
    for (;;) {
      const frame = await connection.nextFrame((framer) => framer.readLine());
      this.commands += 1;
      if (this.commands > this.ctx.limits.maxPreAuthCommands) connection.stop('too_many_commands', FAREWELLS.tooManyCommands);
      if (frame.type === 'error') {
        connection.send(LINE_TOO_LONG);
        continue;
      }
      const match = /^([A-Za-z]+)(?: (.*))?$/.exec(frame.line.toString('latin1'));
      if (!match) {
        connection.send(NOT_A_COMMAND);
        continue;
      }
      const action = smtpCommand(match[1]!.toUpperCase(), match[2] ?? '', {
        hostname: this.ctx.hostname,
        extensions: this.extensions(),
        tlsActive: connection.tlsActive,
        helo: this.helo,
      });
      if (await this.perform(action)) return;
    }
  }

  /** Writes a command's response and does what follows it; true once the connection is handed over. */
  private async perform(action: SmtpAction): Promise<boolean> {
    const connection = this.connection;
    if (action.kind === 'login') return this.login(action);
    if (action.skip !== undefined) connection.framer.skip(action.skip);
    if (action.helo !== undefined) this.helo = action.helo;
    if (action.then === 'quit') connection.stop('logout', action.lines[0]);
    for (const line of action.lines) connection.send(line);
    if (action.then === 'starttls') {
      await connection.upgradeToTls();
      // RFC 3207: the client starts over with EHLO and learns the extensions anew.
      this.helo = undefined;
    }
    return false;
  }

  private login(action: Extract<SmtpAction, { kind: 'login' }>): Promise<boolean> {
    const connection = this.connection;
    return attemptLogin(connection, this.flow, action.request, {
      reply: authReply,
      tooManyFailures: FAREWELLS.tooManyFailures,
      relay: (success) => {
        const log = connection.log.child({ user: success.user });
        const chunking = offersChunking(success.extras);
        return (client, backend, pending, options) => runSmtpCommandRelay({ client, backend, pending, log, chunking, ...options });
      },
    });
  }

  /** The SMTP backend login: token users by XCLIENT or the master user, password users with their own AUTH. */
  private async backendLogin(credentials: BackendCredentials): Promise<BackendAnswer<string[], SmtpReply>> {
    const { master } = this.ctx;
    let smtpCredentials: SmtpBackendCredentials;
    if (credentials.kind === 'token') {
      smtpCredentials =
        this.ctx.login === 'xclient'
          ? { kind: 'xclient', user: credentials.user }
          : masterCredentials(credentials.user, master);
    } else if (credentials.kind === 'password') {
      throw new InternalError('SMTP has no LOGIN command');
    } else {
      smtpCredentials = credentials;
    }
    const connection = this.connection;
    const result = await loginToSmtpBackend({
      connect: this.ctx.connectBackend,
      responseTimeoutMs: this.ctx.backendResponseTimeoutMs,
      origin: {
        address: connection.client.address,
        port: connection.client.port,
        helo: this.helo ?? 'unknown',
        local: connection.local,
        tls: connection.tlsActive,
      },
      credentials: smtpCredentials,
      localName: this.ctx.hostname,
    });
    if (result.ok) return { ok: true, socket: result.socket, rest: result.rest, extras: result.extensions };
    return { ok: false, reply: result.reply, summary: `${result.reply.code} ${result.reply.lines.join(' ')}`.slice(0, 200) };
  }
}

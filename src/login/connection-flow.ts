import type { LineFramer } from '../net/line-framer.js';
import type { Protocol } from '../observe/metrics.js';
import type { LineFrame } from '../net/line-framer.js';
import type { ClientConnection, RelayRunner } from './connection.js';
import { LoginFlow, type BackendAnswer, type BackendCredentials, type FlowClock, type LoginOutcome, type LoginRequest } from './flow.js';
import type { SessionOptions } from './options.js';

/** What a protocol adds to a connection's login flow. */
export interface Dialect<S, R> {
  protocol: Protocol;
  /** The challenge line (`+ x`, `334 x`). */
  challenge(text: string): string;
  /** Logs into the backend. */
  backendLogin(credentials: BackendCredentials): Promise<BackendAnswer<S, R>>;
  /** Reads a SASL response, where it is not one raw line (ManageSieve: a string); default: the next line. */
  response?: (() => Promise<LineFrame>) | undefined;
}

/** The login flow of one client connection: responses are lines read from it, challenges are written to it. */
export function connectionLoginFlow<S, R>(
  connection: ClientConnection<LineFramer>,
  options: SessionOptions & { clock?: FlowClock | undefined },
  dialect: Dialect<S, R>,
): LoginFlow<S, R> {
  return new LoginFlow<S, R>(
    {
      listener: options.listener,
      maxAuthFailures: options.limits.maxAuthFailures,
      failures: options.failures,
      metrics: options.metrics,
      validator: options.validator,
      oauth: options.oauth,
      master: options.master,
      directoryVerdict: options.directoryVerdict,
      appPasswords: options.appPasswords,
      appPasswordsOnly: options.appPasswordsOnly,
      protocol: dialect.protocol,
      log: connection.log,
      client: connection.client,
      record: connection.record,
      clock: options.clock,
    },
    {
      challenge: (text) => connection.send(dialect.challenge(text)),
      response: dialect.response ?? (() => connection.nextFrame((framer) => framer.readLine())),
      abandonResponse: () => {
        connection.abandonWait();
        return connection.framer.takeLoneByte(0x01);
      },
      isClosed: () => connection.isClosed,
      backendLogin: (credentials) => dialect.backendLogin(credentials),
    },
  );
}

/** How a protocol answers a login attempt. */
export interface LoginAnswer<S, R> {
  /** The reply to every outcome but `gone` (the client left: nothing to say). */
  reply(outcome: Exclude<LoginOutcome<S, R>, { kind: 'gone' }>): string;
  /** The last words after one failure too many. */
  tooManyFailures: string;
  /** The relay after a success, when not the byte pipe. */
  relay?: ((success: Extract<LoginOutcome<S, R>, { kind: 'success' }>) => RelayRunner) | undefined;
}

/**
 * Runs one login attempt and answers it: on success the reply and the hand-over to the relay, else
 * the reply, and the goodbye once that was one failure too many. True once handed over.
 */
export async function attemptLogin<S, R>(
  connection: ClientConnection<LineFramer>,
  flow: LoginFlow<S, R>,
  request: LoginRequest,
  answer: LoginAnswer<S, R>,
): Promise<boolean> {
  const outcome = await flow.attempt(request);
  if (outcome.kind === 'gone') return false;
  if (outcome.kind === 'success') {
    connection.handOver(answer.reply(outcome), outcome.socket, outcome.rest, answer.relay?.(outcome));
    return true;
  }
  connection.send(answer.reply(outcome));
  if (outcome.kind === 'refused' && outcome.closing) connection.stop('too_many_failures', answer.tooManyFailures);
  return false;
}

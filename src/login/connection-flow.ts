import type { LineFramer } from '../net/line-framer.js';
import type { Protocol } from '../observe/metrics.js';
import type { ClientConnection } from './connection.js';
import { LoginFlow, type BackendAnswer, type BackendCredentials, type FlowClock } from './flow.js';
import type { SessionOptions } from './options.js';

/** What a protocol adds to a connection's login flow. */
export interface Dialect<S, R> {
  protocol: Protocol;
  /** The challenge line (`+ x`, `334 x`). */
  challenge(text: string): string;
  /** Logs into the backend. */
  backendLogin(credentials: BackendCredentials): Promise<BackendAnswer<S, R>>;
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
      protocol: dialect.protocol,
      log: connection.log,
      client: connection.client,
      record: connection.record,
      clock: options.clock,
    },
    {
      challenge: (text) => connection.send(dialect.challenge(text)),
      response: () => connection.nextFrame((framer) => framer.readLine()),
      abandonResponse: () => {
        connection.abandonWait();
        return connection.framer.takeLoneByte(0x01);
      },
      isClosed: () => connection.isClosed,
      backendLogin: (credentials) => dialect.backendLogin(credentials),
    },
  );
}

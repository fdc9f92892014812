import { connect as netConnect, type Socket } from 'node:net';
import { BackendError } from '../errors.js';
import { encodeProxyV2, encodeProxyV2Local } from './proxy-protocol.js';

/** The two ends of the client's connection, for a PROXY protocol header to the backend. */
export interface ConnectionEnds {
  client: { address: string; port: number };
  local: { address: string; port: number };
  /** Whether the client's connection to sasl-gate is encrypted. */
  tls: boolean;
}

/**
 * Opens a raw byte stream to a backend, on behalf of a client (or, without `ends`, for
 * sasl-gate's own probes); injected so tests and other transports can replace it.
 */
export type BackendConnector = (ends?: ConnectionEnds) => Promise<Socket>;

/** A TCP connector with a connect timeout, optionally announcing the client with PROXY protocol v2. */
export function tcpConnector(host: string, port: number, timeoutMs: number, proxyProtocol = false): BackendConnector {
  return (ends) =>
    new Promise<Socket>((resolve, reject) => {
      const socket = netConnect({ host, port });
      const timer = setTimeout(() => {
        socket.destroy();
        reject(new BackendError(`connect to ${host}:${port} timed out`));
      }, timeoutMs);
      socket.once('connect', () => {
        clearTimeout(timer);
        socket.removeAllListeners('error');
        socket.setNoDelay(true);
        socket.setKeepAlive(true, 60_000);
        if (proxyProtocol) socket.write(ends ? encodeProxyV2(ends.client, ends.local, { tls: ends.tls }) : encodeProxyV2Local());
        resolve(socket);
      });
      socket.once('error', (err) => {
        clearTimeout(timer);
        reject(new BackendError(`connect to ${host}:${port} failed: ${err.message}`, { cause: err }));
      });
    });
}

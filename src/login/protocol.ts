import type { Socket } from 'node:net';
import type { ImapBackendConfig } from '../config/schema.js';
import type { BackendConnector } from '../net/connector.js';
import type { Protocol } from '../observe/metrics.js';
import type { SessionOptions } from './options.js';

/** What every backend section has (`backends.imap`, `backends.smtp`, ...). */
export type BackendSettings = Pick<
  ImapBackendConfig,
  'host' | 'port' | 'connectTimeoutSeconds' | 'responseTimeoutSeconds' | 'capabilityRefreshSeconds' | 'proxyProtocol'
>;

/** One client connection's session, as the composition root drives it. */
export interface Session {
  /** Serves the connection; `onRelay` gets a small stand-in for the session once the relay has it. */
  run(onRelay?: (relay: { shutdown(): void }) => void): Promise<void>;
  /** Ends the connection (shutdown). */
  shutdown(): void;
}

/** What a protocol's session is built from, besides the shared options. */
export interface SessionParts<B extends BackendSettings> {
  backend: B;
  connectBackend: BackendConnector;
  /** What to advertise before login: the backend's list as last probed, adjusted. */
  capabilities: { current(): readonly string[] };
  /** The name sasl-gate gives itself (SMTP greeting and EHLO). */
  hostname: string;
}

/**
 * A protocol as the composition root sees it: how its backend's capabilities are probed and
 * advertised, what a refused connection is told, and how a session is made. Everything else
 * (framing, commands, replies, backend login) stays inside the protocol's own module.
 */
export interface ProtocolFront<B extends BackendSettings> {
  protocol: Protocol;
  /** The refusal at the connection limit, in the protocol's words (one line, no CRLF). */
  connectionRefused: string;
  /** What the backend is assumed to offer until a probe answers. */
  fallbackCapabilities: string[];
  /** The backend's list turned into what sasl-gate advertises. */
  advertise(backendList: readonly string[]): string[];
  /** Asks the backend for its capabilities. */
  probe(connect: BackendConnector, backend: B, hostname: string): Promise<string[]>;
  /** A session for one client connection. */
  session(socket: Socket, options: SessionOptions, parts: SessionParts<B>): Session;
}

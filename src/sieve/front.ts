import type { ImapBackendConfig } from '../config/schema.js';
import type { ProtocolFront } from '../login/protocol.js';
import { advertisedCapabilities, probeSieveCapabilities, SIEVE_FALLBACK } from './capabilities.js';
import { CONNECTION_REFUSED } from './replies.js';
import { SieveSession, SIEVE_PROTOCOL } from './session.js';

/** `backends.sieve`: the same keys as `backends.imap`. */
export type SieveBackendConfig = ImapBackendConfig;

/** ManageSieve as the composition root sees it. */
export const sieveFront: ProtocolFront<SieveBackendConfig> = {
  protocol: SIEVE_PROTOCOL,
  connectionRefused: CONNECTION_REFUSED,
  fallbackCapabilities: SIEVE_FALLBACK,
  advertise: advertisedCapabilities,
  probe: (connect, backend) => probeSieveCapabilities(connect, backend.responseTimeoutSeconds * 1000),
  session: (socket, options, parts) =>
    new SieveSession(socket, {
      ...options,
      capabilities: parts.capabilities,
      connectBackend: parts.connectBackend,
      backendResponseTimeoutMs: parts.backend.responseTimeoutSeconds * 1000,
    }),
};

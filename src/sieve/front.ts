import type { SieveBackendConfig } from '../config/schema.js';
import type { ProtocolFront } from '../login/protocol.js';
import { advertisedCapabilities, probeSieveCapabilities, SIEVE_FALLBACK } from './capabilities.js';
import { CONNECTION_REFUSED } from './replies.js';
import { SieveSession } from './session.js';

/** ManageSieve as the composition root sees it. */
export const sieveFront: ProtocolFront<SieveBackendConfig> = {
  protocol: 'sieve',
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

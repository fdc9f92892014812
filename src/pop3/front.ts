import type { Pop3BackendConfig } from '../config/schema.js';
import type { ProtocolFront } from '../login/protocol.js';
import { advertisedCapabilities, POP3_FALLBACK, probePop3Capabilities } from './capabilities.js';
import { CONNECTION_REFUSED } from './replies.js';
import { Pop3Session } from './session.js';

/** POP3 as the composition root sees it. */
export const pop3Front: ProtocolFront<Pop3BackendConfig> = {
  protocol: 'pop3',
  connectionRefused: CONNECTION_REFUSED,
  fallbackCapabilities: POP3_FALLBACK,
  advertise: advertisedCapabilities,
  probe: (connect, backend) => probePop3Capabilities(connect, backend.responseTimeoutSeconds * 1000),
  session: (socket, options, parts) =>
    new Pop3Session(socket, {
      ...options,
      capabilities: parts.capabilities,
      connectBackend: parts.connectBackend,
      backendResponseTimeoutMs: parts.backend.responseTimeoutSeconds * 1000,
      xclient: !parts.backend.proxyProtocol,
    }),
};

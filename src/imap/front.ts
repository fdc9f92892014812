import type { ImapBackendConfig } from '../config/schema.js';
import type { ProtocolFront } from '../login/protocol.js';
import { advertisedCapabilities, IMAP_FALLBACK, probeImapCapabilities } from './capabilities.js';
import { CONNECTION_REFUSED } from './replies.js';
import { ImapSession } from './session.js';

/** IMAP as the composition root sees it. */
export const imapFront: ProtocolFront<ImapBackendConfig> = {
  protocol: 'imap',
  connectionRefused: CONNECTION_REFUSED,
  fallbackCapabilities: IMAP_FALLBACK,
  advertise: advertisedCapabilities,
  probe: (connect, backend) => probeImapCapabilities(connect, backend.responseTimeoutSeconds * 1000),
  session: (socket, options, parts) =>
    new ImapSession(socket, {
      ...options,
      capabilities: parts.capabilities,
      connectBackend: parts.connectBackend,
      backendResponseTimeoutMs: parts.backend.responseTimeoutSeconds * 1000,
    }),
};

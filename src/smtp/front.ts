import type { SmtpBackendConfig } from '../config/schema.js';
import type { ProtocolFront } from '../login/protocol.js';
import { advertisedSmtpExtensions, probeSmtpExtensions } from './capabilities.js';
import { CONNECTION_REFUSED } from './replies.js';
import { SmtpSession } from './session.js';

/** SMTP submission as the composition root sees it. */
export const smtpFront: ProtocolFront<SmtpBackendConfig> = {
  protocol: 'smtp',
  connectionRefused: CONNECTION_REFUSED,
  // Until Postfix answers: what any submission server offers, so password clients get a
  // temporary failure at AUTH rather than "unsupported mechanism".
  fallbackCapabilities: ['PIPELINING', 'ENHANCEDSTATUSCODES', '8BITMIME', 'AUTH PLAIN LOGIN'],
  advertise: advertisedSmtpExtensions,
  probe: (connect, backend, hostname) => probeSmtpExtensions(connect, backend.responseTimeoutSeconds * 1000, hostname),
  session: (socket, options, parts) =>
    new SmtpSession(socket, {
      ...options,
      hostname: parts.hostname,
      login: parts.backend.login,
      extensions: parts.capabilities,
      connectBackend: parts.connectBackend,
      backendResponseTimeoutMs: parts.backend.responseTimeoutSeconds * 1000,
    }),
};

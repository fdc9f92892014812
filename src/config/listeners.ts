import { ConfigError } from '../errors.js';
import type { GateConfig } from './load.js';
import type { ImapBackendConfig, ListenerConfig, SmtpBackendConfig } from './schema.js';

/** A listener with the backend it logs its clients into. */
export type ResolvedListener =
  | { protocol: 'imap'; name: string; listener: ListenerConfig; backend: ImapBackendConfig }
  | { protocol: 'smtp'; name: string; listener: ListenerConfig; backend: SmtpBackendConfig };

/** Pairs every configured listener with its protocol's backend, in configuration order. */
export function resolveListeners(config: Pick<GateConfig, 'listeners' | 'backends'>): ResolvedListener[] {
  return config.listeners.map((listener, index) => {
    const name = listener.name ?? `${listener.protocol}-${listener.bind.port || index}`;
    // The schema refuses a listener without its backend; this keeps the types honest about it.
    const missing = () => new ConfigError(`backends.${listener.protocol}`, `listener ${index} speaks ${listener.protocol}, so it is needed`);
    if (listener.protocol === 'imap') {
      const backend = config.backends.imap;
      if (!backend) throw missing();
      return { protocol: 'imap', name, listener, backend };
    }
    const backend = config.backends.smtp;
    if (!backend) throw missing();
    return { protocol: 'smtp', name, listener, backend };
  });
}

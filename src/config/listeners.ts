import { ConfigError } from '../errors.js';
import type { GateConfig } from './load.js';
import type { ImapBackendConfig, ListenerConfig, Pop3BackendConfig, SieveBackendConfig, SmtpBackendConfig } from './schema.js';

/** A listener with the backend it logs its clients into. */
export type ResolvedListener =
  | { protocol: 'imap'; name: string; listener: ListenerConfig; backend: ImapBackendConfig }
  | { protocol: 'smtp'; name: string; listener: ListenerConfig; backend: SmtpBackendConfig }
  | { protocol: 'pop3'; name: string; listener: ListenerConfig; backend: Pop3BackendConfig }
  | { protocol: 'sieve'; name: string; listener: ListenerConfig; backend: SieveBackendConfig };

/** Pairs every configured listener with its protocol's backend, in configuration order. */
export function resolveListeners(config: Pick<GateConfig, 'listeners' | 'backends'>): ResolvedListener[] {
  return config.listeners.map((listener, index): ResolvedListener => {
    const name = listener.name ?? `${listener.protocol}-${listener.bind.port || index}`;
    // The schema refuses a listener without its backend; this keeps the types honest about it.
    const missing = () => new ConfigError(`backends.${listener.protocol}`, `listener ${index} speaks ${listener.protocol}, so it is needed`);
    const { backends } = config;
    switch (listener.protocol) {
      case 'imap':
        if (!backends.imap) throw missing();
        return { protocol: 'imap', name, listener, backend: backends.imap };
      case 'smtp':
        if (!backends.smtp) throw missing();
        return { protocol: 'smtp', name, listener, backend: backends.smtp };
      case 'pop3':
        if (!backends.pop3) throw missing();
        return { protocol: 'pop3', name, listener, backend: backends.pop3 };
      case 'sieve':
        if (!backends.sieve) throw missing();
        return { protocol: 'sieve', name, listener, backend: backends.sieve };
    }
  });
}

import { describe, expect, it } from 'vitest';
import { resolveListeners } from '../../../src/config/listeners.js';
import { configSchema } from '../../../src/config/schema.js';
import { ConfigError } from '../../../src/errors.js';

const backends = configSchema.shape.backends.parse({
  imap: { host: '127.0.0.1', port: 143 },
  smtp: { host: '127.0.0.1', port: 10587 },
});
const listener = (protocol: 'imap' | 'smtp' | 'pop3' | 'sieve', port: number, name?: string) => ({
  protocol,
  bind: { host: '0.0.0.0', port },
  tls: 'implicit' as const,
  proxyProtocol: false,
  trustedProxies: [],
  ...(name ? { name } : {}),
});

describe('resolveListeners', () => {
  it('pairs each listener with its protocol’s backend and names it, in configuration order', () => {
    const resolved = resolveListeners({ listeners: [listener('smtp', 465), listener('imap', 993, 'imaps')], backends });
    expect(resolved.map((r) => [r.protocol, r.name, r.backend.port])).toEqual([
      ['smtp', 'smtp-465', 10587],
      ['imap', 'imaps', 143],
    ]);
    const [smtp] = resolved;
    // The union narrows: an SMTP listener's backend has the SMTP login mode.
    if (smtp?.protocol === 'smtp') expect(smtp.backend.login).toBeDefined();
  });

  it('a port of 0 is named by its position', () => {
    expect(resolveListeners({ listeners: [listener('imap', 0)], backends })[0]?.name).toBe('imap-0');
  });

  it('a listener without its backend is a configuration error naming the key', () => {
    const onlyImap = configSchema.shape.backends.parse({ imap: { host: '127.0.0.1', port: 143 } });
    expect(() => resolveListeners({ listeners: [listener('smtp', 587)], backends: onlyImap })).toThrow(ConfigError);
    expect(() => resolveListeners({ listeners: [listener('smtp', 587)], backends: onlyImap })).toThrow(/backends\.smtp/);
  });

  it('POP3 and ManageSieve listeners get their own Dovecot backends, with the standard ports by default', () => {
    const dovecot = configSchema.shape.backends.parse({ pop3: { host: 'dovecot' }, sieve: { host: 'dovecot' } });
    const resolved = resolveListeners({ listeners: [listener('pop3', 995), listener('sieve', 4190)], backends: dovecot });
    expect(resolved.map((r) => [r.protocol, r.name, r.backend.port])).toEqual([
      ['pop3', 'pop3-995', 110],
      ['sieve', 'sieve-4190', 4190],
    ]);
    expect(() => resolveListeners({ listeners: [listener('pop3', 995)], backends })).toThrow(/backends\.pop3/);
  });
});

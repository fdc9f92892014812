import pino from 'pino';
import { describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config/load.js';
import { ConfigError } from '../../src/errors.js';
import { startGate } from '../../src/gate.js';
import { configFile } from './config/config-files.js';

describe('the protocol registry', () => {
  it('a ManageSieve listener is refused at start-up, before anything listens, with a clear configuration error', async () => {
    const { config } = loadConfig({
      file: configFile(`
listeners: [{ protocol: imap, bind: "127.0.0.1:0" }, { protocol: sieve, bind: "127.0.0.1:0", tls: starttls }]
tls: { development: true }
backends: { imap: { host: 127.0.0.1 }, sieve: { host: 127.0.0.1 } }
master: { user: sasl-gate, password: pw }
oauth: { issuer: https://idp.example.com, audience: [mail] }
`),
      env: {},
    });
    const started = startGate(config, { log: pino({ level: 'silent' }), validator: { validate: () => Promise.reject(new Error('unused')) } });
    await expect(started).rejects.toBeInstanceOf(ConfigError);
    await expect(started).rejects.toThrow(/listeners: listener sieve-1 speaks sieve, which is not yet supported/);
  });
});

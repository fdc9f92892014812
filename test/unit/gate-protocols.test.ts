import { connect, type Socket } from 'node:net';
import { connect as tlsConnect } from 'node:tls';
import pino from 'pino';
import { describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config/load.js';
import { startGate } from '../../src/gate.js';
import { GateError } from '../../src/errors.js';
import { configFile } from './config/config-files.js';

/** Reads from `socket` until `done` holds for what arrived. */
function readUntil(socket: Socket, done: (text: string) => boolean): Promise<string> {
  return new Promise((resolve, reject) => {
    let text = '';
    const onData = (chunk: Buffer) => {
      text += chunk.toString('latin1');
      if (done(text)) {
        socket.off('data', onData);
        resolve(text);
      }
    };
    socket.on('data', onData);
    socket.once('error', reject);
  });
}

const completed = (text: string) => /^(OK|NO|BYE)\b.*\r\n/m.test(text);

describe('the protocol registry', () => {
  it('a ManageSieve listener greets with STARTTLS and no mechanism in clear text, then offers the token mechanisms over TLS', async () => {
    const { config } = loadConfig({
      file: configFile(`
listeners: [{ protocol: sieve, bind: "127.0.0.1:0", tls: starttls }]
tls: { development: true }
backends: { sieve: { host: 127.0.0.1 } }
master: { user: sasl-gate, password: pw }
oauth: { issuer: https://idp.example.com, audience: [mail] }
`),
      env: {},
    });
    const unreachable = () => Promise.reject(new GateError('backend_unreachable', 'no backend in this test'));
    const gate = await startGate(config, {
      log: pino({ level: 'silent' }),
      validator: { validate: () => Promise.reject(new Error('unused')) },
      connectors: { sieve: unreachable },
    });
    try {
      const listener = gate.listeners.find((l) => l.protocol === 'sieve');
      expect(listener).toBeDefined();
      const plain = connect({ host: '127.0.0.1', port: listener!.port });
      const greeting = await readUntil(plain, completed);
      expect(greeting).toMatch(/^"STARTTLS"\r$/m);
      expect(greeting).toMatch(/^"SASL" ""\r$/m);
      expect(greeting).toMatch(/^OK\b/m);
      const answer = readUntil(plain, completed);
      plain.write('STARTTLS\r\n');
      expect(await answer).toMatch(/^OK\b/);
      const secure = tlsConnect({ socket: plain, rejectUnauthorized: false });
      // RFC 5804 2.2: the server sends its capabilities again after the handshake.
      const capabilities = await readUntil(secure, completed);
      secure.destroy();
      expect(capabilities).toMatch(/^"SASL" "XOAUTH2 OAUTHBEARER( [^"]*)?"\r$/m);
      expect(capabilities).not.toMatch(/^"STARTTLS"/m);
    } finally {
      await gate.close();
    }
  });
});

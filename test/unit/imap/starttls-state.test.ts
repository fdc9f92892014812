/**
 * What an IMAP client said before STARTTLS is unauthenticated plaintext anyone on the path could
 * have written: none of it may follow the connection into TLS and on to Dovecot (RFC 3207 asks the
 * same of SMTP, where sasl-gate forgets the EHLO name).
 */
import type { SecureContext } from 'node:tls';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ImapSession } from '../../../src/imap/session.js';
import { ManualClock, scriptedBackend, sessionOptions, socketPair, TestClient, testCertificate } from '../login/flow-harness.js';

const CAPABILITIES = ['IMAP4rev1', 'ID', 'SASL-IR', 'AUTH=XOAUTH2', 'AUTH=PLAIN'];
const xoauth2 = (user: string, token: string) => Buffer.from(`user=${user}\x01auth=Bearer ${token}\x01\x01`).toString('base64');

let certificate: { context: SecureContext; cleanup(): void };
beforeAll(async () => {
  certificate = await testCertificate();
});
afterAll(() => certificate.cleanup());

describe('IMAP STARTTLS: state from before the handshake', () => {
  it('ID fields sent in plaintext before STARTTLS do not reach the backend after a login inside TLS', async () => {
    const backend = scriptedBackend('* OK [CAPABILITY IMAP4rev1 SASL-IR ID AUTH=PLAIN] Dovecot ready.', (line, reply) => {
      const [tag, command] = line.split(' ');
      if (command === 'ID') reply(`${tag} OK ID completed.`);
      else if (command === 'AUTHENTICATE') reply(`${tag} OK [CAPABILITY IMAP4rev1] Logged in`);
    });
    const { server, client: socket } = await socketPair();
    const session = new ImapSession(server, {
      ...sessionOptions({ starttls: () => certificate.context }),
      capabilities: { current: () => CAPABILITIES },
      connectBackend: backend.connect,
      backendResponseTimeoutMs: 2000,
      clock: new ManualClock(),
    });
    void session.run();
    const client = new TestClient(socket);
    try {
      await client.line();
      // What an attacker on the path injects into the plaintext phase.
      client.send('a ID ("name" "injected-before-tls" "vendor" "mitm")\r\n');
      expect(await client.lines(2)).toEqual(['* ID ("name" "sasl-gate")', 'a OK ID completed.']);
      client.send('b STARTTLS\r\n');
      expect(await client.line()).toBe('b OK Begin TLS negotiation now.');
      await client.startTls();
      client.send(`c AUTHENTICATE XOAUTH2 ${xoauth2('alice@example.test', 'alice-token')}\r\n`);
      expect(await client.line()).toMatch(/^c OK /);
      const id = backend.received.find((l) => / ID \(/.test(l))!;
      expect(id).toBeDefined();
      expect(id).not.toMatch(/injected-before-tls|mitm/);
    } finally {
      client.socket.destroy();
      backend.close();
    }
  });
});

/** Delivering test messages straight into Dovecot over LMTP, for tests that read mail back without Postfix. */
import { connect } from 'node:net';
import { LineReader } from './line-reader.js';

/** Delivers one message per body to `recipient` (from `sender@example.test` unless `from` says otherwise); resolves once Dovecot accepted them all. */
export async function deliverLmtp(host: string, port: number, recipient: string, messages: Array<{ subject: string; body: string; from?: string }>): Promise<void> {
  const socket = connect({ host, port });
  const reader = new LineReader(socket);
  /** Reads one (possibly multi-line) reply and checks its code. */
  const expectReply = async (code: string) => {
    for (;;) {
      const line = await reader.next(10_000);
      if (!line.startsWith(code)) throw new Error(`LMTP: expected ${code}, got ${line}`);
      if (line[3] !== '-') return;
    }
  };
  try {
    await expectReply('220');
    socket.write('LHLO test.example\r\n');
    await expectReply('250');
    for (const { subject, body, from = 'sender@example.test' } of messages) {
      socket.write(`MAIL FROM:<${from}>\r\nRCPT TO:<${recipient}>\r\nDATA\r\n`);
      await expectReply('250');
      await expectReply('250');
      await expectReply('354');
      const text = `From: ${from}\r\nTo: ${recipient}\r\nSubject: ${subject}\r\n\r\n${body.replace(/\r?\n/g, '\r\n').replace(/^\./gm, '..')}\r\n.\r\n`;
      socket.write(text);
      await expectReply('250');
    }
    socket.write('QUIT\r\n');
  } finally {
    socket.end();
  }
}

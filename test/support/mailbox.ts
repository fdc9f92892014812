/** Reading delivered mail back through sasl-gate's IMAPS, for tests that send through Postfix. */
import { ImapFlow } from 'imapflow';
import { expect } from 'vitest';
import type { Stack } from './stack.js';
import { sleep } from './wait.js';

/** A stored message: its source as Dovecot keeps it, and the subject of its envelope. */
export interface StoredMessage {
  source: Buffer;
  subject: string | undefined;
}

/**
 * Waits until a message with each subject is in `user`'s INBOX (Postfix delivers in the
 * background) and returns them by subject; each subject must match exactly one message.
 */
export async function readDelivered(stack: Stack, user: string, accessToken: string, subjects: string[], timeoutMs = 15_000): Promise<Map<string, StoredMessage>> {
  const client = new ImapFlow({
    host: stack.host,
    port: stack.imapPort,
    secure: true,
    tls: { ca: [stack.ca], servername: 'localhost' },
    auth: { user, accessToken },
    logger: false,
  });
  await client.connect();
  const found = new Map<string, StoredMessage>();
  try {
    const lock = await client.getMailboxLock('INBOX');
    try {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        for (const subject of subjects.filter((s) => !found.has(s))) {
          const uids = (await client.search({ subject }, { uid: true })) || [];
          if (uids.length === 0) continue;
          expect(uids, subject).toHaveLength(1);
          const message = await client.fetchOne(String(uids[0]), { source: true, envelope: true }, { uid: true });
          if (!message || !message.source) throw new Error('FETCH returned no source');
          found.set(subject, { source: message.source, subject: message.envelope?.subject });
        }
        if (found.size === subjects.length) return found;
        if (Date.now() > deadline) throw new Error(`not delivered to ${user} within ${timeoutMs} ms: ${subjects.filter((s) => !found.has(s)).join(', ')}`);
        await sleep(150);
        await client.noop();
      }
    } finally {
      lock.release();
    }
  } finally {
    await client.logout();
  }
}

/** The body of a stored message: everything after the header block. */
export function bodyOf(source: Buffer): Buffer {
  const end = source.indexOf('\r\n\r\n');
  expect(end).toBeGreaterThan(0);
  return source.subarray(end + 4);
}

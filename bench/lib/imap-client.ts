/**
 * IMAP for the throughput benchmark, over the IMAP client of `sasl-gate load`: connect (TLS or
 * not), log in, APPEND many messages pipelined with LITERAL+, and FETCH a whole mailbox while
 * only counting bytes (literals are skipped as they arrive, never copied).
 */
import { createSecureContext } from 'node:tls';
import { ImapClient } from '../../src/load/imap.js';

export interface ClientOptions {
  host: string;
  port: number;
  tls: boolean;
  /** PEM the server's certificate is checked against (for the name `localhost`). */
  ca?: string;
  timeoutMs?: number;
}

/** Connects and reads the greeting. */
export function connectImap(o: ClientOptions): Promise<ImapClient> {
  const tls = o.tls ? { insecure: false, servername: 'localhost', context: createSecureContext(o.ca ? { ca: o.ca } : {}) } : undefined;
  return ImapClient.open({ host: o.host, port: o.port, timeoutMs: o.timeoutMs ?? 60_000, ...(tls ? { tls } : {}) });
}

/** Runs one command; rejects unless it completes OK. Resolves with the tagged line. */
export async function run(c: ImapClient, command: string): Promise<string> {
  const done = await c.exchange(command);
  if (done.status !== 'OK') throw new Error(`${command.split(' ')[0]}: ${done.line}`);
  return done.line;
}

/**
 * `FETCH 1:* BODY.PEEK[]`, counting bytes until the tagged reply: resolves with the bytes
 * received, the bytes inside literals (the messages) and the number of literals.
 */
export async function fetchAll(c: ImapClient): Promise<{ bytes: number; literalBytes: number; literals: number; seconds: number }> {
  const bytesBefore = c.wire.bytesRead;
  const literalsBefore = { ...c.literals };
  const started = process.hrtime.bigint();
  const done = await c.command('FETCH 1:* BODY.PEEK[]', 'FETCH');
  const seconds = Number(process.hrtime.bigint() - started) / 1e9;
  if (done.status !== 'OK') throw new Error(`FETCH: ${done.line}`);
  return {
    bytes: c.wire.bytesRead - bytesBefore,
    literalBytes: c.literals.bytes - literalsBefore.bytes,
    literals: c.literals.count - literalsBefore.count,
    seconds,
  };
}

/** A text message of about `size` bytes: headers and 76-character lines. */
export function makeMessage(i: number, size: number): Buffer {
  const head =
    `From: Sender ${i} <sender${i}@example.test>\r\n` +
    `To: alice@example.test\r\n` +
    `Subject: throughput message ${i}\r\n` +
    `Date: Sun, 29 Nov 2026 12:00:00 +0000\r\n` +
    `Message-ID: <bench-${i}@example.test>\r\n` +
    `MIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n`;
  const alphabet = 'abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 ';
  const lines: string[] = [];
  let length = head.length;
  let seed = i * 7919 + 1;
  while (length < size) {
    let text = '';
    for (let c = 0; c < 76; c++) {
      seed = (seed * 1103515245 + 12345) & 0x7fffffff;
      text += alphabet[seed % alphabet.length];
    }
    lines.push(text);
    length += 78;
  }
  return Buffer.from(`${head}${lines.join('\r\n')}\r\n`, 'latin1');
}

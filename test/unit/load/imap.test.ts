import { createServer, type AddressInfo, type Server, type Socket } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { ImapClient } from '../../../src/load/imap.js';

/**
 * A scripted IMAP server on a loopback port: it greets, then hands every complete client line to
 * `answer` (APPEND literals, announced with `{n+}`, are collected into the line that carries them).
 */
async function scriptedServer(answer: (line: string, socket: Socket) => void): Promise<{ port: number; server: Server; seen: string[] }> {
  const seen: string[] = [];
  const server = createServer((socket) => {
    sockets.push(socket);
    socket.write('* OK [CAPABILITY IMAP4rev1 SASL-IR LITERAL+ AUTH=PLAIN] ready\r\n');
    let buffered = '';
    socket.on('data', (chunk: Buffer) => {
      buffered += chunk.toString('latin1');
      for (;;) {
        const end = buffered.indexOf('\r\n');
        if (end < 0) return;
        let line = buffered.slice(0, end);
        let rest = buffered.slice(end + 2);
        const literal = /\{(\d+)\+\}$/.exec(line);
        if (literal) {
          const size = Number(literal[1]);
          if (rest.length < size + 2) return;
          line = `${line}${rest.slice(0, size)}`;
          rest = rest.slice(size + 2);
        }
        buffered = rest;
        seen.push(line);
        answer(line, socket);
      }
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  servers.push(server);
  return { port: (server.address() as AddressInfo).port, server, seen };
}

const servers: Server[] = [];
const sockets: Socket[] = [];
afterEach(async () => {
  // A failed test leaves its connection open: the server would wait for it.
  for (const socket of sockets.splice(0)) socket.destroy();
  await Promise.all(servers.splice(0).map((s) => new Promise((resolve) => s.close(resolve))));
});

describe('ImapClient', () => {
  it('opens a connection, keeps the greeting and learns the capabilities in it', async () => {
    const { port } = await scriptedServer(() => undefined);
    const client = await ImapClient.open({ host: '127.0.0.1', port, timeoutMs: 2000 });
    expect(client.greetingLine).toBe('* OK [CAPABILITY IMAP4rev1 SASL-IR LITERAL+ AUTH=PLAIN] ready');
    expect([...client.capabilities]).toEqual(['IMAP4REV1', 'SASL-IR', 'LITERAL+', 'AUTH=PLAIN']);
    client.wire.close();
  });

  it('an exchange returns the untagged lines, literals skipped and counted, and the tagged status and text', async () => {
    const { port } = await scriptedServer((line, socket) => {
      const [tag, verb] = line.split(' ');
      if (verb === 'FETCH') socket.write(`* 1 FETCH (BODY[] {10}\r\nhello\r\nyou)\r\n* 2 FETCH (BODY[] {3}\r\nabc)\r\n${tag} OK done\r\n`);
      else socket.write(`${tag} NO [TRYCREATE] no such mailbox\r\n`);
    });
    const client = await ImapClient.open({ host: '127.0.0.1', port, timeoutMs: 2000 });
    const bytesBefore = client.wire.bytesRead;
    const fetched = await client.exchange('FETCH 1:* BODY.PEEK[]');
    expect(fetched).toMatchObject({ status: 'OK', text: 'done', untagged: ['* 1 FETCH (BODY[] {})', '* 2 FETCH (BODY[] {})'] });
    expect(client.literals).toEqual({ count: 2, bytes: 13 });
    expect(client.wire.bytesRead - bytesBefore).toBe(Buffer.byteLength(`* 1 FETCH (BODY[] {10}\r\nhello\r\nyou)\r\n* 2 FETCH (BODY[] {3}\r\nabc)\r\n${fetched.line}\r\n`));
    const refused = await client.exchange('SELECT Nowhere');
    expect(refused).toMatchObject({ status: 'NO', text: '[TRYCREATE] no such mailbox', untagged: [] });
    client.wire.close();
  });

  it('appends pipelined: every APPEND is sent before the first completion is read', async () => {
    const pending: string[] = [];
    const { port, seen } = await scriptedServer((line, socket) => {
      pending.push(line.split(' ')[0]!);
      // Answers only once all three arrived: a client waiting for each completion would hang.
      if (pending.length === 3) socket.write(pending.map((tag) => `${tag} OK [APPENDUID 1 ${tag}] Append completed.\r\n`).join(''));
    });
    const client = await ImapClient.open({ host: '127.0.0.1', port, timeoutMs: 2000 });
    const messages = ['first\r\n', 'second\r\n', 'Subject: x\r\n\r\nthird\r\n'].map((m) => Buffer.from(m));
    await client.appendAll('INBOX', messages);
    expect(seen.map((l) => l.replace(/^\S+ /, ''))).toEqual([
      'APPEND INBOX {7+}first\r\n',
      'APPEND INBOX {8+}second\r\n',
      'APPEND INBOX {21+}Subject: x\r\n\r\nthird\r\n',
    ]);
    client.wire.close();
  });

  it('a refused APPEND rejects with the server\'s words', async () => {
    const { port } = await scriptedServer((line, socket) => socket.write(`${line.split(' ')[0]} NO [OVERQUOTA] Quota exceeded\r\n`));
    const client = await ImapClient.open({ host: '127.0.0.1', port, timeoutMs: 2000 });
    await expect(client.appendAll('INBOX', [Buffer.from('x\r\n')])).rejects.toMatchObject({ kind: 'command_failed', message: expect.stringContaining('OVERQUOTA') });
    client.wire.close();
  });

  it('a refused connection is a connect error naming the cause', async () => {
    const { port, server } = await scriptedServer(() => undefined);
    await new Promise((resolve) => server.close(resolve));
    servers.length = 0;
    await expect(ImapClient.open({ host: '127.0.0.1', port, timeoutMs: 2000 })).rejects.toMatchObject({ kind: 'connect', message: expect.stringContaining('ECONNREFUSED') });
  });
});

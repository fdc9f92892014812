import { createServer, type AddressInfo, type Server, type Socket } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { Pop3Client } from '../../../src/load/pop3.js';
import { Wire } from '../../../src/load/wire.js';

/** A scripted POP3 server on a loopback port: it greets with `greeting`, then hands every client line to `answer`. */
async function scriptedServer(answer: (line: string, socket: Socket) => void, greeting = '+OK ready.'): Promise<{ port: number; seen: string[] }> {
  const seen: string[] = [];
  const server = createServer((socket) => {
    sockets.push(socket);
    socket.on('error', () => undefined);
    socket.write(`${greeting}\r\n`);
    let buffered = '';
    socket.on('data', (chunk: Buffer) => {
      buffered += chunk.toString('latin1');
      for (let end = buffered.indexOf('\r\n'); end >= 0; end = buffered.indexOf('\r\n')) {
        const line = buffered.slice(0, end);
        buffered = buffered.slice(end + 2);
        seen.push(line);
        answer(line, socket);
      }
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  servers.push(server);
  return { port: (server.address() as AddressInfo).port, seen };
}

const servers: Server[] = [];
const sockets: Socket[] = [];
afterEach(async () => {
  for (const socket of sockets.splice(0)) socket.destroy();
  await Promise.all(servers.splice(0).map((s) => new Promise((resolve) => s.close(resolve))));
});

async function open(port: number): Promise<Pop3Client> {
  const client = new Pop3Client(await Wire.connect('127.0.0.1', port, 2000));
  await client.greeting();
  return client;
}

const TOKEN = `eyJ${'a'.repeat(600)}.sig`;
const b64 = (text: string) => Buffer.from(text, 'utf8').toString('base64');

/** A Dovecot-like maildrop of two messages that takes alice's token (over a continuation) or password. */
function maildrop(line: string, socket: Socket, state: { auth?: string }): void {
  if (state.auth !== undefined) {
    const ok = line === b64(`user=alice@example.test\x01auth=Bearer ${TOKEN}\x01\x01`);
    state.auth = undefined;
    socket.write(ok ? '+OK Logged in.\r\n' : `+ ${b64('{"status":"401","schemes":"bearer"}')}\r\n`);
    return;
  }
  if (line === 'AUTH XOAUTH2') {
    state.auth = '';
    socket.write('+ \r\n');
  } else if (line.startsWith('AUTH PLAIN ')) {
    socket.write(line === `AUTH PLAIN ${b64('\0alice@example.test\0pw')}` ? '+OK Logged in.\r\n' : '-ERR [AUTH] Authentication failed.\r\n');
  } else if (line === '') {
    socket.write('-ERR [AUTH] Authentication failed.\r\n');
  } else if (line === 'CAPA') {
    socket.write('+OK\r\nCAPA\r\nTOP\r\nUIDL\r\nSASL XOAUTH2 PLAIN\r\n.\r\n');
  } else if (line === 'STAT') {
    socket.write('+OK 2 3072\r\n');
  } else if (line === 'LIST') {
    socket.write('+OK 2 messages:\r\n1 1024\r\n2 2048\r\n.\r\n');
  } else if (line === 'QUIT') {
    socket.end('+OK Logging out.\r\n');
  } else {
    socket.write('-ERR Unknown command.\r\n');
  }
}

describe('Pop3Client', () => {
  it('a token too long for the command line goes after the server’s “+ ” (RFC 5034); then STAT, LIST, QUIT', async () => {
    const state = {};
    const { port, seen } = await scriptedServer((line, socket) => maildrop(line, socket, state));
    const client = await open(port);
    expect(await client.capa()).toEqual(['CAPA', 'TOP', 'UIDL', 'SASL XOAUTH2 PLAIN']);
    await client.authenticate('xoauth2', { user: 'alice@example.test', secret: TOKEN }, '127.0.0.1', port);
    expect(await client.stat()).toEqual({ messages: 2, octets: 3072 });
    expect([...(await client.list())]).toEqual([
      [1, 1024],
      [2, 2048],
    ]);
    await client.quit();
    expect(seen[1]).toBe('AUTH XOAUTH2');
    expect(seen.slice(3)).toEqual(['STAT', 'LIST', 'QUIT']);
  });

  it('a short initial response goes on the AUTH line', async () => {
    const { port, seen } = await scriptedServer((line, socket) => maildrop(line, socket, {}));
    const client = await open(port);
    await client.authenticate('plain', { user: 'alice@example.test', secret: 'pw' }, '127.0.0.1', port);
    expect(seen).toEqual([`AUTH PLAIN ${b64('\0alice@example.test\0pw')}`]);
    client.wire.close();
  });

  it('a refused token: the error challenge gets the dummy reply, then -ERR [AUTH] is auth_rejected', async () => {
    const state = {};
    const { port, seen } = await scriptedServer((line, socket) => maildrop(line, socket, state));
    const client = await open(port);
    await expect(client.authenticate('xoauth2', { user: 'alice@example.test', secret: `${TOKEN}x` }, '127.0.0.1', port)).rejects.toMatchObject({
      kind: 'auth_rejected',
      message: 'AUTH XOAUTH2: -ERR [AUTH] Authentication failed.',
    });
    expect(seen.at(-1)).toBe('');
    client.wire.close();
  });

  it('-ERR [SYS/TEMP] to AUTH is auth_temporary, a refusing greeting is refused, a failed command command_failed', async () => {
    const temp = await scriptedServer((line, socket) => socket.write(line.startsWith('AUTH') ? '-ERR [SYS/TEMP] Authentication service temporarily unavailable, try again later.\r\n' : '-ERR [IN-USE] Mailbox locked.\r\n'));
    const client = await open(temp.port);
    await expect(client.authenticate('plain', { user: 'a@x', secret: 'pw' }, '127.0.0.1', temp.port)).rejects.toMatchObject({ kind: 'auth_temporary' });
    await expect(client.stat()).rejects.toMatchObject({ kind: 'command_failed', message: 'STAT: -ERR [IN-USE] Mailbox locked.' });
    client.wire.close();
    const full = await scriptedServer(() => undefined, '-ERR [SYS/TEMP] Too many connections from your address, try again later.');
    await expect(open(full.port)).rejects.toMatchObject({ kind: 'refused', message: expect.stringContaining('Too many connections') });
  });

  it('STLS refused is a tls error; a reply that is not POP3 a protocol error', async () => {
    const { port } = await scriptedServer((line, socket) => socket.write(line === 'STLS' ? '-ERR TLS not available.\r\n' : '* OK this is IMAP\r\n'));
    const client = await open(port);
    await expect(client.startTls({ insecure: true, context: undefined as never })).rejects.toMatchObject({ kind: 'tls' });
    await expect(client.stat()).rejects.toMatchObject({ kind: 'protocol' });
    client.wire.close();
  });
});

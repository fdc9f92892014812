/**
 * The Postfix socketmap: what each map answers for mailboxes, aliases, users in grace and unknown
 * addresses, TEMP while the directory cannot answer, and the server's handling of pipelined,
 * split, oversized and malformed requests on real sockets.
 */
import { connect, type Socket } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import type { AddressVerdict, DirectoryUser } from '../../../src/directory/model.js';
import {
  answerSocketmap,
  encodeNetstring,
  NetstringDecoder,
  startSocketmapServer,
  type DirectoryLookup,
  type SocketmapServer,
} from '../../../src/directory/socketmap.js';
import { MemoryDirectory } from '../../support/memory-directory.js';


const HOUR = 3_600_000;

function directory(): MemoryDirectory {
  const d = new MemoryDirectory(HOUR);
  d.upsert({ id: 'u1', mailbox: 'carol@example.test', aliases: ['info@example.test', 'sales@example.test'], active: true, groups: [] });
  d.upsert({ id: 'u2', mailbox: 'dave@example.test', aliases: ['dave.old@example.test'], active: true, groups: [] });
  return d;
}

describe('socketmap answers', () => {
  it.each([
    ['mailbox carol@example.test', 'OK example.test/carol/'],
    ['mailbox CAROL@Example.Test', 'OK example.test/carol/'],
    ['mailbox info@example.test', 'NOTFOUND '],
    ['mailbox nobody@example.test', 'NOTFOUND '],
    ['mailbox @example.test', 'NOTFOUND '],
    ['alias info@example.test', 'OK carol@example.test'],
    ['alias sales@example.test', 'OK carol@example.test'],
    ['alias carol@example.test', 'NOTFOUND '],
    ['alias nobody@example.test', 'NOTFOUND '],
    ['senders carol@example.test', 'OK carol@example.test'],
    ['senders info@example.test', 'OK carol@example.test'],
    ['senders nobody@example.test', 'NOTFOUND '],
    ['mailbox ', 'NOTFOUND '],
  ])('%j → %j', async (request, expected) => {
    expect(await answerSocketmap(directory(), request)).toBe(expected);
  });

  it('refuses unknown map names and requests without a key permanently', async () => {
    expect(await answerSocketmap(directory(), 'passwords carol@example.test')).toMatch(/^PERM unknown map name/);
    expect(await answerSocketmap(directory(), 'mailbox')).toMatch(/^PERM malformed request/);
    expect(await answerSocketmap(directory(), '')).toMatch(/^PERM /);
  });

  it('honours renamed maps', async () => {
    const names = { mailbox: 'vmailbox', alias: 'valias', senders: 'owners' };
    expect(await answerSocketmap(directory(), 'vmailbox carol@example.test', { names })).toBe('OK example.test/carol/');
    expect(await answerSocketmap(directory(), 'owners info@example.test', { names })).toBe('OK carol@example.test');
    expect(await answerSocketmap(directory(), 'mailbox carol@example.test', { names })).toMatch(/^PERM /);
  });

  it('keeps delivering to a disabled user during the grace period, but not letting them send, and refuses after it', async () => {
    const d = directory();
    d.upsert({ ...d.users.get('u1')!, active: false });
    expect(await answerSocketmap(d, 'mailbox carol@example.test')).toBe('OK example.test/carol/');
    expect(await answerSocketmap(d, 'alias info@example.test')).toBe('OK carol@example.test');
    expect(await answerSocketmap(d, 'senders carol@example.test')).toBe('NOTFOUND ');
    d.offsetMs = 2 * HOUR;
    expect(await answerSocketmap(d, 'mailbox carol@example.test')).toBe('NOTFOUND ');
    expect(await answerSocketmap(d, 'alias info@example.test')).toBe('NOTFOUND ');
  });

  it('treats a removed user like a disabled one', async () => {
    const d = directory();
    d.remove('u2');
    expect(await answerSocketmap(d, 'mailbox dave@example.test')).toBe('OK example.test/dave/');
    expect(await answerSocketmap(d, 'alias dave.old@example.test')).toBe('OK dave@example.test');
    d.offsetMs = 2 * HOUR;
    expect(await answerSocketmap(d, 'mailbox dave@example.test')).toBe('NOTFOUND ');
  });

  it('does not deliver to an inactive user a directory reports as a plain mailbox', async () => {
    const inactive: DirectoryUser = { id: 'x', mailbox: 'x@example.test', aliases: ['y@example.test'], active: false, groups: [] };
    const lookup = (address: string): AddressVerdict =>
      address === 'x@example.test' ? { kind: 'mailbox', user: inactive } : address === 'y@example.test' ? { kind: 'alias', user: inactive } : { kind: 'unknown' };
    expect(await answerSocketmap({ lookup }, 'mailbox x@example.test')).toBe('NOTFOUND ');
    expect(await answerSocketmap({ lookup }, 'alias y@example.test')).toBe('NOTFOUND ');
  });

  it('answers TEMP while the directory is not loaded or failing, so Postfix defers instead of bouncing', async () => {
    const d = directory();
    d.ready = false;
    expect(await answerSocketmap(d, 'mailbox carol@example.test')).toMatch(/^TEMP /);
    d.ready = true;
    d.failing = true;
    expect(await answerSocketmap(d, 'alias info@example.test')).toMatch(/^TEMP /);
    const rejecting: DirectoryLookup = { lookup: () => Promise.reject(new Error('slow database')) };
    expect(await answerSocketmap(rejecting, 'mailbox a@b.c')).toMatch(/^TEMP /);
  });

  it('answers lookups of bare domains (virtual_alias_domains) NOTFOUND without the directory, even while it loads', async () => {
    const d = directory();
    d.ready = false;
    d.failing = true;
    expect(await answerSocketmap(d, 'alias example.test')).toBe('NOTFOUND ');
    expect(await answerSocketmap(d, 'alias gmail.com')).toBe('NOTFOUND ');
    expect(await answerSocketmap(d, 'mailbox @example.test')).toBe('NOTFOUND ');
    expect(await answerSocketmap(d, 'alias carol@example.test')).toMatch(/^TEMP /);
  });

  it('strips an address extension when a recipient delimiter is configured, and carries it through aliases', async () => {
    const d = directory();
    expect(await answerSocketmap(d, 'mailbox carol+news@example.test')).toBe('NOTFOUND ');
    const opts = { recipientDelimiter: '+' };
    expect(await answerSocketmap(d, 'mailbox carol+news@example.test', opts)).toBe('OK example.test/carol/');
    expect(await answerSocketmap(d, 'alias info+x@example.test', opts)).toBe('OK carol+x@example.test');
    expect(await answerSocketmap(d, 'senders carol+x@example.test', opts)).toBe('OK carol@example.test');
    expect(await answerSocketmap(d, 'mailbox +news@example.test', opts)).toBe('NOTFOUND ');
  });

  it('takes the mailbox result from mailboxValue, and never lets a control character into a reply', async () => {
    const mailboxValue = (u: DirectoryUser): string => `/var/mail/${u.mailbox}\r\n`;
    expect(await answerSocketmap(directory(), 'mailbox carol@example.test', { mailboxValue })).toBe('OK /var/mail/carol@example.test??');
    expect(await answerSocketmap(directory(), 'mailbox carol@example.test\nx')).toBe('NOTFOUND ');
  });
});

/** A raw socketmap client: sends bytes, reads netstring replies. */
class Client {
  private readonly decoder = new NetstringDecoder(100_000);
  private readonly replies: string[] = [];
  private waiter: (() => void) | undefined;
  closed = false;

  private constructor(readonly socket: Socket) {
    socket.on('data', (chunk: Buffer) => {
      for (const r of this.decoder.push(chunk)) this.replies.push(r.toString('utf8'));
      this.waiter?.();
    });
    socket.on('close', () => {
      this.closed = true;
      this.waiter?.();
    });
    socket.on('error', () => undefined);
  }

  static async connect(port: number, localAddress?: string): Promise<Client> {
    const socket = connect({ host: '127.0.0.1', port, ...(localAddress ? { localAddress } : {}) });
    await new Promise<void>((resolve, reject) => {
      socket.once('connect', resolve);
      socket.once('error', reject);
    });
    return new Client(socket);
  }

  async read(count: number, timeoutMs = 3_000): Promise<string[]> {
    const deadline = Date.now() + timeoutMs;
    while (this.replies.length < count) {
      if (this.closed) break;
      if (Date.now() > deadline) throw new Error(`only ${this.replies.length} of ${count} replies`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, 50);
        this.waiter = () => {
          clearTimeout(timer);
          resolve();
        };
      });
    }
    return this.replies.splice(0, count);
  }

  async waitClosed(timeoutMs = 3_000): Promise<boolean> {
    const deadline = Date.now() + timeoutMs;
    while (!this.closed && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    return this.closed;
  }

  lookup(map: string, key: string): void {
    this.socket.write(encodeNetstring(`${map} ${key}`));
  }
}

describe('socketmap server', () => {
  let server: SocketmapServer | undefined;
  const clients: Client[] = [];

  afterEach(async () => {
    for (const c of clients.splice(0)) c.socket.destroy();
    await server?.close();
    server = undefined;
  });

  const open = async (localAddress?: string): Promise<Client> => {
    const c = await Client.connect(server!.port, localAddress);
    clients.push(c);
    return c;
  };

  it('answers many requests on one connection, in order, pipelined', async () => {
    server = await startSocketmapServer(directory(), { port: 0 });
    expect(server.host).toBe('127.0.0.1');
    const c = await open();
    c.lookup('mailbox', 'carol@example.test');
    c.lookup('alias', 'info@example.test');
    c.lookup('mailbox', 'nobody@example.test');
    c.lookup('senders', 'dave.old@example.test');
    expect(await c.read(4)).toEqual(['OK example.test/carol/', 'OK carol@example.test', 'NOTFOUND ', 'OK dave@example.test']);
    // The connection stays open for more, as Postfix expects.
    c.lookup('mailbox', 'dave@example.test');
    expect(await c.read(1)).toEqual(['OK example.test/dave/']);
  });

  it('reassembles requests split across writes', async () => {
    server = await startSocketmapServer(directory(), { port: 0 });
    const c = await open();
    const wire = Buffer.concat([encodeNetstring('mailbox carol@example.test'), encodeNetstring('alias sales@example.test')]);
    for (const part of [wire.subarray(0, 1), wire.subarray(1, 7), wire.subarray(7, 31), wire.subarray(31)]) {
      c.socket.write(part);
      await new Promise((r) => setTimeout(r, 10));
    }
    expect(await c.read(2)).toEqual(['OK example.test/carol/', 'OK carol@example.test']);
  });

  it('answers an oversized request PERM and closes, after the answers already due', async () => {
    server = await startSocketmapServer(directory(), { port: 0, maxRequestBytes: 64 });
    const c = await open();
    c.lookup('mailbox', 'carol@example.test');
    c.socket.write(`100000:${'a'.repeat(100)}`);
    expect(await c.read(2)).toEqual(['OK example.test/carol/', 'PERM request too long']);
    expect(await c.waitClosed()).toBe(true);
    // Other connections are not affected.
    const other = await open();
    other.lookup('mailbox', 'dave@example.test');
    expect(await other.read(1)).toEqual(['OK example.test/dave/']);
  });

  it('answers garbage PERM and closes', async () => {
    server = await startSocketmapServer(directory(), { port: 0 });
    const c = await open();
    c.socket.write('GET / HTTP/1.1\r\n\r\n');
    expect(await c.read(1)).toEqual(['PERM malformed netstring']);
    expect(await c.waitClosed()).toBe(true);
  });

  it('refuses clients outside allowFrom and beyond maxConnections', async () => {
    server = await startSocketmapServer(directory(), { port: 0, allowFrom: ['127.0.0.1/32'], maxConnections: 1 });
    const outsider = await open('127.0.0.2');
    expect(await outsider.waitClosed()).toBe(true);
    const first = await open();
    first.lookup('mailbox', 'carol@example.test');
    expect(await first.read(1)).toEqual(['OK example.test/carol/']);
    const second = await open();
    expect(await second.read(1)).toEqual(['TEMP too many connections']);
    expect(await second.waitClosed()).toBe(true);
  });

  it('answers TEMP while the directory is unavailable, then recovers on the same connection', async () => {
    const d = directory();
    d.failing = true;
    server = await startSocketmapServer(d, { port: 0 });
    const c = await open();
    c.lookup('mailbox', 'carol@example.test');
    expect((await c.read(1))[0]).toMatch(/^TEMP /);
    d.failing = false;
    c.lookup('mailbox', 'carol@example.test');
    expect(await c.read(1)).toEqual(['OK example.test/carol/']);
  });

  it('closes connections on close() and frees the port', async () => {
    server = await startSocketmapServer(directory(), { port: 0 });
    const c = await open();
    expect(server.connections).toBe(1);
    const { port } = server;
    await server.close();
    server = undefined;
    expect(await c.waitClosed()).toBe(true);
    await expect(Client.connect(port)).rejects.toThrow(/ECONNREFUSED/);
  });
});

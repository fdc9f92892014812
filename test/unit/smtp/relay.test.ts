import { Duplex, duplexPair } from 'node:stream';
import pino from 'pino';
import { afterEach, describe, expect, it, vi } from 'vitest';
import type { RelayStats } from '../../../src/relay/pipe.js';
import { filterEhloReply, runSmtpCommandRelay, withoutAuthParameter, type SmtpRelayLimits, type SmtpRelayOptions } from '../../../src/smtp/relay.js';

/** Lets queued stream events run (no timers involved). */
async function settle(): Promise<void> {
  for (let i = 0; i < 20; i++) await new Promise((resolve) => setImmediate(resolve));
}

/** One relay between an in-process client and a scripted backend. */
function harness(limits: Partial<SmtpRelayLimits> = {}, pending?: SmtpRelayOptions['pending'], backendClosesOnEof = true, chunking?: boolean) {
  const [clientSide, relayClient] = duplexPair();
  const [relayBackend, backendSide] = duplexPair();
  const logged: Array<Record<string, unknown>> = [];
  const log = pino({ level: 'debug' }, { write: (line: string) => logged.push(JSON.parse(line) as Record<string, unknown>) });
  const done = runSmtpCommandRelay({
    client: relayClient,
    backend: relayBackend,
    log,
    limits,
    ...(pending ? { pending } : {}),
    ...(chunking === undefined ? {} : { chunking }),
  });
  let toBackend = '';
  let toClient = '';
  let backendEnded = false;
  let clientEnded = false;
  backendSide.on('data', (c: Buffer) => (toBackend += c.toString('latin1')));
  clientSide.on('data', (c: Buffer) => (toClient += c.toString('latin1')));
  backendSide.on('end', () => {
    backendEnded = true;
    if (backendClosesOnEof) backendSide.end();
  });
  clientSide.on('end', () => {
    clientEnded = true;
    clientSide.end();
  });
  const send = async (side: Duplex, text: string | Buffer) => {
    side.write(typeof text === 'string' ? Buffer.from(text, 'latin1') : text);
    await settle();
  };
  return {
    done: done as Promise<RelayStats>,
    logged,
    client: (text: string | Buffer) => send(clientSide, text),
    backend: (text: string) => send(backendSide, text),
    clientSide,
    backendSide,
    /** What reached the backend since the last call. */
    takeBackend() {
      const out = toBackend;
      toBackend = '';
      return out;
    },
    /** What reached the client since the last call. */
    takeClient() {
      const out = toClient;
      toClient = '';
      return out;
    },
    ended: () => ({ backend: backendEnded, client: clientEnded }),
  };
}

describe('SMTP command relay', () => {
  it("answers identity verbs itself, in order behind the backend's pending replies", async () => {
    const h = harness();
    await h.client('NOOP\r\nXCLIENT LOGIN=bob@example.test\r\n auth plain AGJvYgBi\r\nXFORWARD ADDR=1.2.3.4\r\nSTARTTLS\r\nFROB x\r\nRSET\r\n');
    expect(h.takeBackend()).toBe('NOOP\r\nRSET\r\n');
    // Nothing for the client before the backend answered NOOP.
    expect(h.takeClient()).toBe('');
    await h.backend('250 2.0.0 Ok\r\n');
    expect(h.takeClient()).toBe(
      [
        '250 2.0.0 Ok',
        '502 5.5.1 Error: command not available',
        '503 5.5.1 Error: already authenticated',
        '502 5.5.1 Error: command not available',
        '503 5.5.1 Error: TLS already active',
        '502 5.5.2 Error: command not recognized',
        '',
      ].join('\r\n'),
    );
    await h.backend('250 2.0.0 Ok\r\n');
    expect(h.takeClient()).toBe('250 2.0.0 Ok\r\n');
    await h.client('QUIT\r\n');
    expect(h.takeBackend()).toBe('QUIT\r\n');
    await h.backend('221 2.0.0 Bye\r\n');
    expect(h.takeClient()).toBe('221 2.0.0 Bye\r\n');
    const stats = await h.done;
    expect(stats.bytesToClient).toBeGreaterThan(100);
    expect(h.ended()).toEqual({ backend: true, client: true });
    // One warning per connection, with counts and fixed names only (never the AUTH blob).
    const warnings = h.logged.filter((l) => l['msg'] === 'refused commands from a logged-in client');
    expect(warnings).toEqual([expect.objectContaining({ refused: { XCLIENT: 1, AUTH: 1, XFORWARD: 1, STARTTLS: 1, unknown: 1 } })]);
    expect(JSON.stringify(h.logged)).not.toContain('AGJvYgBi');
  });

  it('re-sends commands canonically and refuses bad lines without forwarding them', async () => {
    const h = harness();
    await h.client('\tmail\x0bFROM:<a@example.test>  \r\nNOOP\rXCLIENT LOGIN=bob\r\nNO\0OP\r\n\r\nrcpt  TO:<b@example.test>\r\nNOOP\n');
    expect(h.takeBackend()).toBe('MAIL FROM:<a@example.test>\r\nRCPT TO:<b@example.test>\r\n');
    await h.backend('250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n');
    expect(h.takeClient()).toBe(
      '250 2.1.0 Ok\r\n500 5.5.2 Error: bare CR in command line\r\n500 5.5.2 Error: NUL in command line\r\n500 5.5.2 Error: bad syntax\r\n250 2.1.5 Ok\r\n' +
        '500 5.5.2 Error: bare LF in command line; end commands with CRLF\r\n',
    );
  });

  it("filters the backend's EHLO reply and fixes the last line's mark", async () => {
    expect(filterEhloReply(['250-smtp.example', '250-PIPELINING', '250-AUTH PLAIN', '250-AUTH=PLAIN', '250-XCLIENT NAME ADDR', '250-STARTTLS', '250 XFORWARD NAME'])).toEqual([
      '250-smtp.example',
      '250 PIPELINING',
    ]);
    const h = harness();
    await h.client('EHLO client.example\r\n');
    await h.backend('250-smtp.example\r\n250-PIPELINING\r\n250-CHUNKING\r\n250 XCLIENT LOGIN\r\n');
    expect(h.takeClient()).toBe('250-smtp.example\r\n250-PIPELINING\r\n250 CHUNKING\r\n');
  });

  it('holds input after DATA until the reply; a refused DATA leaves the next lines as commands', async () => {
    const h = harness();
    await h.client('DATA\r\nXCLIENT LOGIN=bob\r\n.\r\nNOOP\r\n');
    expect(h.takeBackend()).toBe('DATA\r\n');
    await h.backend('503 5.5.1 Error: need RCPT command\r\n');
    expect(h.takeBackend()).toBe('NOOP\r\n');
    await h.backend('250 2.0.0 Ok\r\n');
    expect(h.takeClient()).toBe(
      '503 5.5.1 Error: need RCPT command\r\n502 5.5.1 Error: command not available\r\n502 5.5.2 Error: command not recognized\r\n250 2.0.0 Ok\r\n',
    );
  });

  it('after 354, content is re-encoded and the end of data is written by sasl-gate; two messages in a row', async () => {
    const h = harness();
    for (const n of [1, 2]) {
      await h.client(`MAIL FROM:<a@example.test>\r\nRCPT TO:<b@example.test>\r\nDATA\r\n`);
      expect(h.takeBackend()).toBe('MAIL FROM:<a@example.test>\r\nRCPT TO:<b@example.test>\r\nDATA\r\n');
      await h.client(`Subject: ${n}\n\n..dot\r\nXCLIENT LOGIN=bob\r\nend\r\r\n.\nNOOP\r\n`);
      expect(h.takeBackend()).toBe('');
      await h.backend('250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 End data with <CR><LF>.<CR><LF>\r\n');
      expect(h.takeBackend()).toBe(`Subject: ${n}\r\n\r\n..dot\r\nXCLIENT LOGIN=bob\r\nend\r\n.\r\nNOOP\r\n`);
      await h.backend(`250 2.0.0 Ok: queued as Q${n}\r\n250 2.0.0 Ok\r\n`);
      expect(h.takeClient()).toBe(`250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 End data with <CR><LF>.<CR><LF>\r\n250 2.0.0 Ok: queued as Q${n}\r\n250 2.0.0 Ok\r\n`);
    }
  });

  it('BDAT chunks are counted and forwarded as sent, one reply each', async () => {
    const h = harness();
    await h.client('BDAT 19\r\nXCLIENT LOGIN=bob\r\n bdat 0 last\r\nXCLIENT LOGIN=eve\r\n');
    expect(h.takeBackend()).toBe('BDAT 19\r\nXCLIENT LOGIN=bob\r\nBDAT 0 LAST\r\n');
    await h.backend('250 2.0.0 Ok: 19 bytes\r\n250 2.0.0 Ok: queued as X\r\n');
    expect(h.takeClient()).toBe('250 2.0.0 Ok: 19 bytes\r\n250 2.0.0 Ok: queued as X\r\n502 5.5.1 Error: command not available\r\n');
  });

  it('without CHUNKING at the backend, BDAT is answered here and its chunk dropped, never sent', async () => {
    const h = harness({}, undefined, true, false);
    await h.client('BDAT 19 LAST\r\nXCLIENT LOGIN=bob\r\nNOOP\r\n');
    expect(h.takeBackend()).toBe('NOOP\r\n');
    await h.backend('250 2.0.0 Ok\r\n');
    expect(h.takeClient()).toBe('502 5.5.1 Error: command not implemented\r\n250 2.0.0 Ok\r\n');

    // The backend's EHLO reply says whether it offers CHUNKING now.
    const later = harness();
    await later.client('EHLO client.example\r\n');
    await later.backend('250-smtp.example\r\n250 PIPELINING\r\n');
    await later.client('BDAT 6\r\nRSET\r\n');
    expect(later.takeBackend()).toBe('EHLO client.example\r\n');
    expect(later.takeClient()).toBe('250-smtp.example\r\n250 PIPELINING\r\n502 5.5.1 Error: command not implemented\r\n');
  });

  it('a malformed BDAT gets 501, then 421 after the earlier replies, and the connection closes', async () => {
    const h = harness();
    await h.client('NOOP\r\nBDAT 5x\r\nXCLIENT LOGIN=bob\r\nNOOP\r\n');
    expect(h.takeBackend()).toBe('NOOP\r\n');
    expect(h.takeClient()).toBe('');
    await h.backend('250 2.0.0 Ok\r\n');
    expect(h.takeClient()).toMatch(/^250 2\.0\.0 Ok\r\n501 5\.5\.4 Syntax: BDAT count \[LAST\]\r\n421 4\.5\.0 [^\r\n]*\r\n$/);
    await h.done;
    expect(h.takeBackend()).toBe('');
    expect(h.ended()).toEqual({ backend: true, client: true });
  });

  it("relays the backend's unsolicited 421 and closes", async () => {
    const h = harness();
    await h.backend('421 4.4.2 smtp.example Error: timeout exceeded\r\n');
    expect(h.takeClient()).toBe('421 4.4.2 smtp.example Error: timeout exceeded\r\n');
    await h.done;
    expect(h.ended()).toEqual({ backend: true, client: true });
  });

  it('backend output that is not SMTP, or a reply nobody asked for, ends the session with 421', async () => {
    const garbled = harness();
    await garbled.client('NOOP\r\nXCLIENT LOGIN=bob\r\n');
    await garbled.backend('hello there\r\n');
    expect(garbled.takeClient()).toBe('421 4.3.0 Error: mail server protocol error, closing connection\r\n');
    await garbled.done;
    expect(garbled.logged).toContainEqual(expect.objectContaining({ msg: 'unreadable reply from the backend; closing' }));

    const unasked = harness();
    await unasked.backend('250 2.0.0 Ok\r\n');
    expect(unasked.takeClient()).toBe('421 4.3.0 Error: mail server protocol error, closing connection\r\n');
    await unasked.done;
    expect(unasked.ended()).toEqual({ backend: true, client: true });
  });

  it('stops reading when too many replies are outstanding, and goes on as they come', async () => {
    const h = harness({ maxOutstandingReplies: 3 });
    await h.client('NOOP\r\n'.repeat(10));
    expect(h.takeBackend()).toBe('NOOP\r\n'.repeat(3));
    await h.backend('250 2.0.0 Ok\r\n'.repeat(2));
    expect(h.takeBackend()).toBe('NOOP\r\n'.repeat(2));
    await h.backend('250 2.0.0 Ok\r\n'.repeat(3));
    expect(h.takeBackend()).toBe('NOOP\r\n'.repeat(3));
    await h.backend('250 2.0.0 Ok\r\n'.repeat(3));
    expect(h.takeBackend()).toBe('NOOP\r\n'.repeat(2));
  });

  it('commands pipelined behind AUTH (read before the relay began) are handled like any other', async () => {
    const h = harness({}, { toBackend: Buffer.from('XCLIENT LOGIN=bob\r\nNOOP\r\n') });
    await settle();
    expect(h.takeBackend()).toBe('NOOP\r\n');
    await h.backend('250 2.0.0 Ok\r\n');
    expect(h.takeClient()).toBe('502 5.5.1 Error: command not available\r\n250 2.0.0 Ok\r\n');
  });

  it('a client that closes its side gets the answers to what it sent, then the end', async () => {
    // Like Postfix, the backend answers what it read before the end of its input, then closes.
    const h = harness({}, undefined, false);
    h.clientSide.end('NOOP\r\n');
    await settle();
    expect(h.takeBackend()).toBe('NOOP\r\n');
    expect(h.ended().backend).toBe(true);
    await h.backend('250 2.0.0 Ok\r\n');
    h.backendSide.end();
    const stats = await h.done;
    expect(h.takeClient()).toBe('250 2.0.0 Ok\r\n');
    expect(stats.bytesFromClient).toBe(6);
  });

  it('a backend that reads slowly stops the relay reading the client; nothing is lost', async () => {
    const h = harness();
    await h.client('DATA\r\n');
    await h.backend('354 go ahead\r\n');
    h.takeBackend();
    h.backendSide.pause();
    const line = `${'y'.repeat(998)}\r\n`;
    const content = line.repeat(1000);
    // In pieces the size of TLS records, as a socket delivers them.
    for (let at = 0; at < content.length; at += 16_000) h.clientSide.write(content.slice(at, at + 16_000));
    await settle();
    // The relay holds at most a socket buffer and a read-ahead, not the megabyte.
    expect(h.clientSide.writableLength).toBeGreaterThan(content.length - 256 * 1024);
    h.backendSide.resume();
    for (let i = 0; i < 50 && h.clientSide.writableLength > 0; i++) await settle();
    await h.client('.\r\n');
    expect(h.takeBackend()).toBe(`${content}.\r\n`);
  });
});

describe('SMTP command relay: bounds and time', () => {
  afterEach(() => {
    vi.useRealTimers();
  });

  it('drops AUTH= from MAIL on the way to the backend, and the reply still comes back in order', async () => {
    const h = harness();
    await h.client('MAIL FROM:<alice@example.test> AUTH=<bob@example.test> SIZE=10\r\nRCPT TO:<b@example.test>\r\n');
    expect(h.takeBackend()).toBe('MAIL FROM:<alice@example.test> SIZE=10\r\nRCPT TO:<b@example.test>\r\n');
    await h.backend('250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n');
    expect(h.takeClient()).toBe('250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n');
  });

  it('a BDAT message and a DATA message on one connection: the second is not held up by the first', async () => {
    const h = harness();
    // The chunk holds what would end a DATA message; in BDAT it is counted, not read.
    await h.client('MAIL FROM:<a@example.test>\r\nRCPT TO:<b@example.test>\r\nBDAT 6 LAST\r\n.\r\n.\r\n');
    expect(h.takeBackend()).toBe('MAIL FROM:<a@example.test>\r\nRCPT TO:<b@example.test>\r\nBDAT 6 LAST\r\n.\r\n.\r\n');
    await h.backend('250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n250 2.0.0 Ok: queued as B1\r\n');
    await h.client('MAIL FROM:<a@example.test>\r\nRCPT TO:<b@example.test>\r\nDATA\r\n');
    await h.backend('250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 go ahead\r\n');
    await h.client('.\r\n');
    expect(h.takeBackend()).toBe('MAIL FROM:<a@example.test>\r\nRCPT TO:<b@example.test>\r\nDATA\r\n.\r\n');
    await h.backend('250 2.0.0 Ok: queued as D2\r\n');
    expect(h.takeClient()).toBe(
      '250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n250 2.0.0 Ok: queued as B1\r\n250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 go ahead\r\n250 2.0.0 Ok: queued as D2\r\n',
    );
  });

  it('a client that does not read its replies stops the relay reading its commands; they go on once it reads', async () => {
    // A client connection whose reader is stalled: what the relay writes stays unread until `read`.
    const stalled: Array<() => void> = [];
    let reading = false;
    let received = '';
    const relayClient = new Duplex({
      // Below the bound, as a socket's is below the default one: 'drain' tells the relay to go on.
      writableHighWaterMark: 512,
      read() {},
      write(chunk: Buffer, _encoding, done) {
        received += chunk.toString('latin1');
        if (reading) done();
        else stalled.push(done);
      },
    });
    const [relayBackend, backendSide] = duplexPair();
    let toBackend = '';
    backendSide.on('data', (c: Buffer) => (toBackend += c.toString('latin1')));
    void runSmtpCommandRelay({ client: relayClient, backend: relayBackend, limits: { maxUnreadOutput: 1000 }, log: pino({ level: 'silent' }) });
    relayClient.push('NOOP\r\n'.repeat(3));
    await settle();
    expect(toBackend).toBe('NOOP\r\n'.repeat(3));
    backendSide.write(`250 2.0.0 ${'k'.repeat(1000)}\r\n`.repeat(3));
    await settle();
    // 2 kB owed to a client that does not read: its next commands wait.
    relayClient.push('RSET\r\nNOOP\r\n');
    await settle();
    expect(toBackend).toBe('NOOP\r\n'.repeat(3));
    reading = true;
    for (const done of stalled.splice(0)) done();
    await settle();
    expect(toBackend).toBe(`${'NOOP\r\n'.repeat(3)}RSET\r\nNOOP\r\n`);
    expect(received).toBe(`250 2.0.0 ${'k'.repeat(1000)}\r\n`.repeat(3));
  });

  it('a bound below the client stream\'s own high-water mark does not stall the relay (no drain would come)', async () => {
    let received = '';
    const relayClient = new Duplex({
      writableHighWaterMark: 16 * 1024,
      read() {},
      write(chunk: Buffer, _encoding, done) {
        received += chunk.toString('latin1');
        setImmediate(done);
      },
    });
    const [relayBackend, backendSide] = duplexPair();
    let toBackend = '';
    backendSide.on('data', (c: Buffer) => (toBackend += c.toString('latin1')));
    void runSmtpCommandRelay({ client: relayClient, backend: relayBackend, limits: { maxUnreadOutput: 100 }, log: pino({ level: 'silent' }) });
    relayClient.push('NOOP\r\n');
    await settle();
    backendSide.write(`250 2.0.0 ${'k'.repeat(1000)}\r\n`);
    relayClient.push('RSET\r\n');
    await settle();
    backendSide.write('250 2.0.0 Ok\r\n');
    await settle();
    expect(toBackend).toBe('NOOP\r\nRSET\r\n');
    expect(received).toBe(`250 2.0.0 ${'k'.repeat(1000)}\r\n250 2.0.0 Ok\r\n`);
  });

  it('holds no more than its read-ahead bound while content waits for the 354', async () => {
    const h = harness({ maxBufferedInput: 4096 });
    await h.client('DATA\r\n');
    const content = `${'c'.repeat(998)}\r\n`.repeat(1000);
    for (let at = 0; at < content.length; at += 16_000) h.clientSide.write(content.slice(at, at + 16_000));
    await settle();
    // The megabyte stays with the client: the relay holds the bound, a stream buffer and one piece.
    expect(h.clientSide.writableLength).toBeGreaterThan(content.length - 128 * 1024);
    expect(h.takeBackend()).toBe('DATA\r\n');
    await h.backend('354 go ahead\r\n');
    for (let i = 0; i < 50 && h.clientSide.writableLength > 0; i++) await settle();
    await h.client('.\r\n');
    expect(h.takeBackend()).toBe(`${content}.\r\n`);
  });

  it('what was read before the relay began is handled first: a 421 the backend already sent, a client that already closed', async () => {
    const [clientSide, relayClient] = duplexPair();
    const [relayBackend, backendSide] = duplexPair();
    let toClient = '';
    clientSide.on('data', (c: Buffer) => (toClient += c.toString('latin1')));
    clientSide.on('end', () => clientSide.end());
    backendSide.on('end', () => backendSide.end());
    backendSide.resume();
    const stats = await runSmtpCommandRelay({
      client: relayClient,
      backend: relayBackend,
      pending: { toClient: Buffer.from('421 4.3.2 Service shutting down\r\n') },
      log: pino({ level: 'silent' }),
    });
    expect(toClient).toBe('421 4.3.2 Service shutting down\r\n');
    expect(stats.bytesToClient).toBe(toClient.length);

    const h = harness({}, { toBackend: Buffer.from('NOOP\r\n'), clientEnded: true }, false);
    await settle();
    // The pipelined NOOP still reaches the backend, and its reply the client, before the end.
    expect(h.takeBackend()).toBe('NOOP\r\n');
    expect(h.ended().backend).toBe(true);
    await h.backend('250 2.0.0 Ok\r\n');
    h.backendSide.end();
    await h.done;
    expect(h.takeClient()).toBe('250 2.0.0 Ok\r\n');
  });

  it('an idle client is cut after idleTimeoutMs, and the backend connection ends with it', async () => {
    const [clientSide, relayClient] = duplexPair();
    const [relayBackend, backendSide] = duplexPair();
    let idle: { ms: number; fire: () => void } | undefined;
    const client = Object.assign(relayClient, {
      setTimeout(ms: number, fire: () => void) {
        idle = { ms, fire };
        return relayClient;
      },
    });
    let backendEnded = false;
    backendSide.on('end', () => {
      backendEnded = true;
      backendSide.end();
    });
    backendSide.resume();
    clientSide.resume();
    const done = runSmtpCommandRelay({ client, backend: relayBackend, idleTimeoutMs: 300_000, log: pino({ level: 'silent' }) });
    await settle();
    expect(idle?.ms).toBe(300_000);
    idle!.fire();
    const stats = await done;
    expect(stats.closedBy).toBe('client');
    expect(relayClient.destroyed).toBe(true);
    expect(backendEnded).toBe(true);
  });

  it('after QUIT, a client that never closes its side is cut after the linger time', async () => {
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout'] });
    const [clientSide, relayClient] = duplexPair();
    const [relayBackend, backendSide] = duplexPair();
    // Neither end answers the relay's end with its own.
    clientSide.resume();
    backendSide.resume();
    const done = runSmtpCommandRelay({ client: relayClient, backend: relayBackend, log: pino({ level: 'silent' }) });
    clientSide.write('QUIT\r\n');
    await settle();
    backendSide.write('221 2.0.0 Bye\r\n');
    await settle();
    expect(relayClient.writableEnded).toBe(true);
    expect(relayClient.destroyed).toBe(false);
    await vi.advanceTimersByTimeAsync(4999);
    expect(relayClient.destroyed).toBe(false);
    await vi.advanceTimersByTimeAsync(1);
    expect(relayClient.destroyed).toBe(true);
    expect(relayBackend.destroyed).toBe(true);
    await expect(done).resolves.toMatchObject({ bytesFromClient: 6 });
  });
});

describe('withoutAuthParameter', () => {
  it('drops every AUTH= word of MAIL, in any case and after any separator, and keeps the rest as sent', () => {
    expect(withoutAuthParameter('FROM:<alice@example.test> AUTH=<bob@example.test>')).toBe('FROM:<alice@example.test>');
    expect(withoutAuthParameter('FROM:<a@x>\tauth=<b@x>\x0bSIZE=10')).toBe('FROM:<a@x> SIZE=10');
    expect(withoutAuthParameter('FROM:<a@x> BODY=8BITMIME\x0cAuTh=b@x AUTH=<>')).toBe('FROM:<a@x> BODY=8BITMIME');
    expect(withoutAuthParameter('FROM:<a@x>  SIZE=10')).toBe('FROM:<a@x>  SIZE=10');
  });
});

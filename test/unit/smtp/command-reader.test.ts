import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { COMMAND_LINE_LIMIT, SmtpCommandReader, type SmtpInputEvent } from '../../../src/smtp/command-reader.js';

/** A simplified event: content and chunk bytes as latin1 text. */
type Seen =
  | { kind: 'command'; verb: string; args: string }
  | { kind: 'invalid'; reason: string }
  | { kind: 'bdat'; size: number; last: boolean }
  | { kind: 'bad_bdat' }
  | { kind: 'chunk'; text: string }
  | { kind: 'content'; text: string }
  | { kind: 'end_of_data' };

function simplify(event: SmtpInputEvent): Seen {
  if (event.kind === 'chunk' || event.kind === 'content') return { kind: event.kind, text: event.bytes.toString('latin1') };
  return event;
}

/**
 * Feeds `pieces` to a reader; every DATA is answered with 354 when `accept` says so. Adjacent
 * content (and chunk) events are merged: how bytes are grouped into events is not part of the contract.
 */
function read(pieces: string[], accept: (dataIndex: number) => boolean = () => true): Seen[] {
  const reader = new SmtpCommandReader();
  const events: Seen[] = [];
  let dataCount = 0;
  const drain = () => {
    for (;;) {
      const event = reader.next();
      if (!event) {
        if (!reader.awaitingDataReply) return;
        reader.dataReply(accept(dataCount++));
        continue;
      }
      const seen = simplify(event);
      const last = events.at(-1);
      if (last && 'text' in last && 'text' in seen && last.kind === seen.kind) last.text += seen.text;
      else events.push(seen);
    }
  };
  for (const piece of pieces) {
    reader.push(Buffer.from(piece, 'latin1'));
    drain();
  }
  return events;
}

const command = (verb: string, args = ''): Seen => ({ kind: 'command', verb, args });

describe('SmtpCommandReader: commands', () => {
  it('splits the verb off at any run of SP, HTAB, VT or FF, leading whitespace trimmed, case-insensitive', () => {
    expect(
      read([
        'XCLIENT\tLOGIN=bob@example.test\r\n',
        ' XCLIENT LOGIN=bob\r\n',
        '\txclient LOGIN=bob\r\n',
        'XCLIENT\x0bLOGIN=bob\r\n',
        'XCLIENT\x0cLOGIN=bob\r\n',
        'mail \t FROM:<a@b> SIZE=10  \r\n',
        'NOOP\r\n',
        'QUIT\r\n',
      ]),
    ).toEqual([
      command('XCLIENT', 'LOGIN=bob@example.test'),
      command('XCLIENT', 'LOGIN=bob'),
      command('XCLIENT', 'LOGIN=bob'),
      command('XCLIENT', 'LOGIN=bob'),
      command('XCLIENT', 'LOGIN=bob'),
      command('MAIL', 'FROM:<a@b> SIZE=10'),
      command('NOOP'),
      command('QUIT'),
    ]);
  });

  it('refuses a bare CR, a NUL, and a line over the limit (skipped without being stored)', () => {
    expect(read(['NOOP\rXCLIENT LOGIN=bob\r\n', 'NOOP\r\r\n', 'NO\0OP\r\n', 'RSET\r\n'])).toEqual([
      { kind: 'invalid', reason: 'bare_cr' },
      { kind: 'invalid', reason: 'bare_cr' },
      { kind: 'invalid', reason: 'nul' },
      command('RSET'),
    ]);
    const reader = new SmtpCommandReader();
    reader.push(Buffer.from('NOOP '));
    for (let i = 0; i < 100; i++) {
      reader.push(Buffer.alloc(10_000, 0x41));
      expect(reader.next()).toBeNull();
      expect(reader.buffered).toBeLessThan(20_000);
    }
    reader.push(Buffer.from('\r\nXCLIENT\r\n'));
    expect(reader.next()).toEqual({ kind: 'invalid', reason: 'too_long' });
    expect(reader.next()).toEqual(command('XCLIENT'));
  });

  it('refuses a command ended by a bare LF (RFC 5321 wants CRLF) and reads on at the next line', () => {
    expect(read(['NOOP\n', 'XCLIENT LOGIN=bob\n', 'RSET\r\n'])).toEqual([
      { kind: 'invalid', reason: 'bare_lf' },
      { kind: 'invalid', reason: 'bare_lf' },
      command('RSET'),
    ]);
  });

  it('takes a line of exactly the limit, refuses one byte more', () => {
    const args = 'x'.repeat(COMMAND_LINE_LIMIT - 5);
    expect(read([`NOOP ${args}\r\n`, `NOOP ${args}x\r\n`, `NOOP ${args}\n`])).toEqual([
      command('NOOP', args),
      { kind: 'invalid', reason: 'too_long' },
      { kind: 'invalid', reason: 'bare_lf' },
    ]);
  });
});

describe('SmtpCommandReader: message content', () => {
  it('waits for the DATA reply; after a refusal the next lines are commands', () => {
    const reader = new SmtpCommandReader();
    reader.push(Buffer.from('DATA\r\nXCLIENT LOGIN=bob\r\n'));
    expect(reader.next()).toEqual(command('DATA'));
    expect(reader.next()).toBeNull();
    reader.dataReply(false);
    expect(reader.next()).toEqual(command('XCLIENT', 'LOGIN=bob'));
  });

  it('ends only at a line that is exactly a dot; a bare LF ends a line and becomes CRLF', () => {
    expect(read(['DATA\r\n', 'hello\n.\nXCLIENT LOGIN=bob\r\n'])).toEqual([
      command('DATA'),
      { kind: 'content', text: 'hello\r\n' },
      { kind: 'end_of_data' },
      command('XCLIENT', 'LOGIN=bob'),
    ]);
  });

  it('reads CRs before a LF as Postfix does: `.\\r\\r\\n` ends the message; `\\r.\\r` and `..` do not', () => {
    expect(read(['DATA\r\n', 'a\r\r\n\r.\r\r\n..\r\n.x\r\n.\rx\r\nb\0c\r\n.\r\r\nNOOP\r\n'])).toEqual([
      command('DATA'),
      { kind: 'content', text: 'a\r\n\r.\r\n..\r\n.x\r\n.\rx\r\nb\0c\r\n' },
      { kind: 'end_of_data' },
      command('NOOP'),
    ]);
  });

  it('streams a long line without LF in pieces, holding back only trailing CRs', () => {
    const reader = new SmtpCommandReader();
    reader.push(Buffer.from('DATA\r\n'));
    expect(reader.next()).toEqual(command('DATA'));
    reader.dataReply(true);
    let out = 0;
    for (let i = 0; i < 50; i++) {
      reader.push(Buffer.alloc(100_000, i === 0 ? 0x2e : 0x61));
      for (let e = reader.next(); e; e = reader.next()) if (e.kind === 'content') out += e.bytes.length;
      expect(reader.buffered).toBe(0);
    }
    expect(out).toBe(5_000_000);
    reader.push(Buffer.from('\r\r'));
    expect(reader.next()).toBeNull();
    reader.push(Buffer.from('\r\n.\r\n'));
    expect(reader.next()).toEqual({ kind: 'content', bytes: Buffer.from('\r\n') });
    expect(reader.next()).toEqual({ kind: 'end_of_data' });
  });
});

describe('SmtpCommandReader: BDAT', () => {
  it('counts chunk bytes exactly and never reads them as commands', () => {
    expect(read(['BDAT 19\r\nXCLIENT LOGIN=bob\r\nbdat\t0  last\r\nXCLIENT LOGIN=eve\r\n'])).toEqual([
      { kind: 'bdat', size: 19, last: false },
      { kind: 'chunk', text: 'XCLIENT LOGIN=bob\r\n' },
      { kind: 'bdat', size: 0, last: true },
      command('XCLIENT', 'LOGIN=eve'),
    ]);
  });

  it('a malformed BDAT stops the reader: where its chunk ends is unknown', () => {
    for (const line of ['BDAT', 'BDAT x', 'BDAT -1', 'BDAT 1 2', 'BDAT 5 LASTX', 'BDAT 1234567890123456', 'BDAT +5']) {
      expect(read([`${line}\r\nXCLIENT LOGIN=bob\r\n`]), line).toEqual([{ kind: 'bad_bdat' }]);
    }
    expect(read(['BDAT 000000000000000000012\r\n0123456789\r\n'])).toEqual([
      { kind: 'bdat', size: 12, last: false },
      { kind: 'chunk', text: '0123456789\r\n' },
    ]);
  });
});

/** Input built from the bytes that matter to framing, so generated sessions hit the edge cases. */
const framingText = fc
  .array(
    fc.constantFrom('\r', '\n', '\r\n', '.', '.\r\n', '\r\n.\r\n', '\n.\n', ' ', '\t', '\x0b', '\0', 'a', 'DATA', 'BDAT ', '3', ' LAST', 'XCLIENT LOGIN=bob', 'NOOP'),
    { maxLength: 60 },
  )
  .map((parts) => parts.join(''));

/** Cuts `text` at the given offsets (taken modulo its length). */
function cut(text: string, cuts: number[]): string[] {
  const at = [...new Set(cuts.map((c) => (text.length === 0 ? 0 : c % (text.length + 1))))].sort((a, b) => a - b);
  const pieces: string[] = [];
  let from = 0;
  for (const c of at) {
    pieces.push(text.slice(from, c));
    from = c;
  }
  pieces.push(text.slice(from));
  return pieces;
}

/** Postfix's reading of message content (smtp_get): where, in `raw`, the end-of-data line ends, or -1. */
function postfixEndOfData(raw: string): number {
  let from = 0;
  for (;;) {
    const lf = raw.indexOf('\n', from);
    if (lf < 0) return -1;
    if (raw.slice(from, lf).replace(/\r+$/, '') === '.') return lf + 1;
    from = lf + 1;
  }
}

describe('SmtpCommandReader: properties', () => {
  it('however the input is split, the events are the same', () => {
    fc.assert(
      fc.property(framingText, fc.array(fc.nat(), { maxLength: 10 }), fc.array(fc.boolean(), { minLength: 4, maxLength: 4 }), (text, cuts, accepts) => {
        const accept = (i: number) => accepts[i % accepts.length]!;
        expect(read(cut(text, cuts), accept)).toEqual(read([text], accept));
      }),
      { numRuns: 2000 },
    );
  });

  it('re-encoded content ends exactly where Postfix would end it, and has no earlier CRLF.CRLF', () => {
    fc.assert(
      fc.property(framingText, fc.array(fc.nat(), { maxLength: 10 }), (content, cuts) => {
        const all = read(['DATA\r\n', ...cut(content, cuts)]);
        const endAt = all.findIndex((e) => e.kind === 'end_of_data');
        const ended = endAt >= 0;
        // The first message only: what follows its end is read as commands (and maybe another DATA).
        const events = ended ? all.slice(0, endAt) : all;
        const sent = events
          .filter((e) => e.kind === 'content')
          .map((e) => (e as { text: string }).text)
          .join('');
        const wire = `${sent}${ended ? '.\r\n' : ''}`;
        // sasl-gate ends the message where Postfix, reading the client's bytes, would have.
        expect(ended).toBe(postfixEndOfData(content) >= 0);
        // Postfix, reading what sasl-gate sends, ends it there too, never earlier.
        const end = postfixEndOfData(wire);
        expect(end).toBe(ended ? wire.length : -1);
        expect(`\r\n${wire}`.indexOf('\r\n.\r\n')).toBe(ended ? wire.length - 5 + 2 : -1);
        // Every line sent ends in CRLF and has no CR before it.
        if (ended && sent.length > 0) expect(sent.endsWith('\r\n')).toBe(true);
        expect(sent).not.toMatch(/(^|[^\r])\n|\r\r\n/);
      }),
      { numRuns: 3000 },
    );
  });

  it('no command carries a CR, LF or NUL, or is longer than the limit', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 3000 }), fc.array(fc.nat(), { maxLength: 5 }), (bytes, cuts) => {
        const text = Buffer.from(bytes).toString('latin1');
        for (const event of read(cut(text, cuts), () => false)) {
          if (event.kind !== 'command') continue;
          const line = `${event.verb} ${event.args}`;
          expect(line).not.toMatch(/[\r\n\0]/);
          expect(line.length).toBeLessThanOrEqual(COMMAND_LINE_LIMIT + 1);
          expect(event.verb).not.toMatch(/[ \t\x0b\x0c]/);
        }
      }),
      { numRuns: 1000 },
    );
  });
});

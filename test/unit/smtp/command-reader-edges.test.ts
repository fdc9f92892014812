import { describe, expect, it } from 'vitest';
import { COMMAND_LINE_LIMIT, SmtpCommandReader, type SmtpInputEvent } from '../../../src/smtp/command-reader.js';

type Seen = Exclude<SmtpInputEvent, { kind: 'content' | 'chunk' }> | { kind: 'content' | 'chunk'; text: string };

/** Every event available now, content and chunk bytes as latin1 text, adjacent ones merged (grouping is no contract). */
function drain(reader: SmtpCommandReader): Seen[] {
  const events: Seen[] = [];
  for (let event = reader.next(); event; event = reader.next()) {
    if (event.kind !== 'content' && event.kind !== 'chunk') {
      events.push(event);
      continue;
    }
    const last = events.at(-1);
    if (last && 'text' in last && last.kind === event.kind) last.text += event.bytes.toString('latin1');
    else events.push({ kind: event.kind, text: event.bytes.toString('latin1') });
  }
  return events;
}

const push = (reader: SmtpCommandReader, text: string) => reader.push(Buffer.from(text, 'latin1'));

describe('SmtpCommandReader: edges the relay relies on', () => {
  it('an answer to DATA that was never sent is a programming error, not a silent mode change', () => {
    const reader = new SmtpCommandReader();
    expect(() => reader.dataReply(true)).toThrow(/no DATA awaits a reply/);
    push(reader, 'NOOP\r\n');
    drain(reader);
    expect(() => reader.dataReply(false)).toThrow();
  });

  it('counts what it holds, including what waits behind DATA for the reply', () => {
    const reader = new SmtpCommandReader();
    reader.push(Buffer.alloc(0));
    expect(reader.buffered).toBe(0);
    push(reader, 'DATA\r\nSubject: x\r\n\r\nbody\r\n.\r\n');
    expect(drain(reader)).toEqual([{ kind: 'command', verb: 'DATA', args: '' }]);
    expect(reader.awaitingDataReply).toBe(true);
    // The content stays unread until the reply: the relay bounds this read-ahead.
    expect(reader.buffered).toBe('Subject: x\r\n\r\nbody\r\n.\r\n'.length);
    reader.dataReply(true);
    expect(drain(reader)).toEqual([{ kind: 'content', text: 'Subject: x\r\n\r\nbody\r\n' }, { kind: 'end_of_data' }]);
    expect(reader.buffered).toBe(0);
  });

  it('skips an over-long line sent in many small pieces without holding it, then reads on', () => {
    const reader = new SmtpCommandReader();
    let most = 0;
    for (let i = 0; i < 100; i++) {
      push(reader, 'x'.repeat(1000));
      drain(reader);
      most = Math.max(most, reader.buffered);
    }
    // Never more than about one line's worth held, although 100 kB arrived.
    expect(most).toBeLessThanOrEqual(COMMAND_LINE_LIMIT + 1000);
    push(reader, 'still the same line\r\nNOOP\r\n');
    expect(drain(reader)).toEqual([
      { kind: 'invalid', reason: 'too_long' },
      { kind: 'command', verb: 'NOOP', args: '' },
    ]);
  });

  it('an empty line is a command without a verb (answered, never forwarded)', () => {
    const reader = new SmtpCommandReader();
    push(reader, '\r\n \t\r\nNOOP\r\n');
    expect(drain(reader)).toEqual([
      { kind: 'command', verb: '', args: '' },
      { kind: 'command', verb: '', args: '' },
      { kind: 'command', verb: 'NOOP', args: '' },
    ]);
  });

  it('a BDAT chunk split across segments ends exactly at its size; commands pipelined after it are read', () => {
    const reader = new SmtpCommandReader();
    push(reader, 'BDAT 10 LAST\r\n0123');
    push(reader, '456');
    push(reader, '789RSET\r\nQUIT\r\n');
    expect(drain(reader)).toEqual([
      { kind: 'bdat', size: 10, last: true },
      { kind: 'chunk', text: '0123456789' },
      { kind: 'command', verb: 'RSET', args: '' },
      { kind: 'command', verb: 'QUIT', args: '' },
    ]);
  });

  it('a dot line cut between segments: `.` then CR then LF ends the message, `.` then text does not', () => {
    const reader = new SmtpCommandReader();
    push(reader, 'DATA\r\n');
    drain(reader);
    reader.dataReply(true);
    push(reader, 'a\r\n.');
    push(reader, 'x\r\n.');
    push(reader, '\r');
    expect(drain(reader)).toEqual([{ kind: 'content', text: 'a\r\n.x\r\n' }]);
    push(reader, '\nNOOP\r\n');
    expect(drain(reader)).toEqual([{ kind: 'end_of_data' }, { kind: 'command', verb: 'NOOP', args: '' }]);
  });

  it('after a refused DATA nothing is taken for content, and a second DATA waits again', () => {
    const reader = new SmtpCommandReader();
    push(reader, 'DATA\r\n.\r\nDATA\r\nline\r\n.\r\n');
    expect(drain(reader)).toEqual([{ kind: 'command', verb: 'DATA', args: '' }]);
    reader.dataReply(false);
    expect(drain(reader)).toEqual([
      { kind: 'command', verb: '.', args: '' },
      { kind: 'command', verb: 'DATA', args: '' },
    ]);
    reader.dataReply(true);
    expect(drain(reader)).toEqual([{ kind: 'content', text: 'line\r\n' }, { kind: 'end_of_data' }]);
  });
});

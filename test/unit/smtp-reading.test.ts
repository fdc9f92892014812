/**
 * The differential test's reference readings of a session: which replies end messages, with what
 * content, under RFC 5321's framing and under Postfix's.
 */
import { describe, expect, it } from 'vitest';
import { comparableContent, queuedContent, readSession, sameAsQueued, type ReadingRules, type SeenReply } from '../support/smtp-reading.js';

const RFC: ReadingRules = { framing: 'rfc', leadingSpace: 'verb' };
const POSTFIX: ReadingRules = { framing: 'postfix', commandCrs: 'all' };
const ok = (text = '250 2.0.0 Ok'): SeenReply => ({ code: Number(text.slice(0, 3)), text });
const bytes = (text: string) => Buffer.from(text, 'latin1');
const ENVELOPE = 'MAIL FROM:<a@x>\r\nRCPT TO:<b@x>\r\n';

describe('readSession', () => {
  it('takes the reply after CRLF.CRLF as the end of a DATA message, with the content unstuffed', () => {
    const sent = bytes(`${ENVELOPE}DATA\r\nSubject: s\r\n\r\n..dot\r\n.\r\nNOOP\r\n`);
    const replies = [ok(), ok(), ok('354 go'), ok('250 2.0.0 Ok: queued as ABC123'), ok()];
    for (const rules of [RFC, POSTFIX]) {
      const r = readSession(sent, replies, rules);
      expect(r.misplaced).toEqual([]);
      expect(r.accepted).toHaveLength(1);
      expect(r.accepted[0]!.queueId).toBe('ABC123');
      expect(r.accepted[0]!.content.toString('latin1')).toBe('Subject: s\r\n\r\n.dot\r\n');
    }
  });

  it('reads a bare LF dot line as content under RFC framing and as the end of data under Postfix framing', () => {
    const sent = bytes(`${ENVELOPE}DATA\r\nhello\n.\nNOOP\r\n.\r\n`);
    const rfc = readSession(sent, [ok(), ok(), ok('354 go'), ok('250 2.0.0 Ok: queued as A1')], RFC);
    expect(rfc.accepted[0]!.content.toString('latin1')).toBe('hello\n.\nNOOP\r\n');
    const postfix = readSession(sent, [ok(), ok(), ok('354 go'), ok('250 2.0.0 Ok: queued as A1'), ok(), ok('502 no')], POSTFIX);
    expect(postfix.accepted[0]!.content.toString('latin1')).toBe('hello\r\n');
    expect(postfix.misplaced).toEqual([]);
  });

  it('keeps a BDAT transaction going when the server refuses a nested MAIL', () => {
    const sent = bytes(`${ENVELOPE}BDAT 1\r\nBMAIL FROM:<a@x>\r\nBDAT 2 LAST\r\nxy`);
    const r = readSession(sent, [ok(), ok(), ok('250 2.0.0 Ok: 1 bytes'), ok('503 5.5.1 Error: nested MAIL command'), ok('250 2.0.0 Ok: 3 bytes queued as D4')], RFC);
    expect(r.accepted[0]!.content.toString('latin1')).toBe('Bxy');
  });

  it('keeps the messages sent whole whose answer never came', () => {
    const data = readSession(bytes(`${ENVELOPE}DATA\r\nSubject: s\r\n.\r\n`), [ok(), ok(), ok('354 go')], RFC);
    expect(data.unanswered.map((c) => c.toString('latin1'))).toEqual(['Subject: s\r\n']);
    const bdat = readSession(bytes(`${ENVELOPE}BDAT 2\r\nabBDAT 1 LAST\r\nc`), [ok(), ok(), ok('250 2.0.0 Ok: 2 bytes')], RFC);
    expect(bdat.unanswered.map((c) => c.toString('latin1'))).toEqual(['abc']);
    expect(readSession(bytes(`${ENVELOPE}DATA\r\nSubject: s\r\n`), [ok(), ok(), ok('354 go')], RFC).unanswered).toEqual([]);
  });

  it('counts BDAT chunks exactly, whatever they hold', () => {
    const sent = bytes(`${ENVELOPE}BDAT 12\r\nDATA\r\n.\r\nXYZBDAT 3 LAST\r\nabc`);
    const r = readSession(sent, [ok(), ok(), ok('250 2.0.0 Ok: 12 bytes'), ok('250 2.0.0 Ok: 15 bytes queued as B2')], RFC);
    expect(r.misplaced).toEqual([]);
    expect(r.accepted[0]!.content.toString('latin1')).toBe('DATA\r\n.\r\nXYZabc');
  });

  it('calls a "queued" reply to anything but the end of a message misplaced', () => {
    // What a reader that took "DATA\t" for no command would see: a queued reply where a content line stood.
    const sent = bytes(`${ENVELOPE}DATA\t\x0b\r\nSubject: s\r\n.\r\n`);
    const r = readSession(sent, [ok(), ok(), ok('502 no'), ok('250 2.0.0 Ok: queued as C3')], RFC);
    expect(r.misplaced).toEqual([{ reply: 3, text: '250 2.0.0 Ok: queued as C3', answers: '"Subject: s"' }]);
  });

  it('refuses a line with a bare CR or a NUL as a command, and under RFC framing one with a bare LF too', () => {
    const sent = bytes('NOOP\nXCLIENT LOGIN=b\r\nNO\0OP\r\nNOOP\rx\r\n');
    expect(readSession(sent, [ok('500 a'), ok('500 b'), ok('500 c')], RFC)).toMatchObject({ misplaced: [], extraReplies: 0 });
    expect(readSession(sent, [ok(), ok('503 d'), ok('500 b'), ok('500 c')], POSTFIX)).toMatchObject({ misplaced: [], extraReplies: 0 });
  });

  it('under Postfix framing drops every CR before a command line LF, or only the last one', () => {
    const sent = bytes(`${ENVELOPE}BDAT 3 LAST\r\r\nabcNOOP\r\n`);
    const all = readSession(sent, [ok(), ok(), ok('250 2.0.0 Ok: 3 bytes queued as E5'), ok()], POSTFIX);
    expect(all.accepted.map((m) => m.content.toString('latin1'))).toEqual(['abc']);
    const last = readSession(sent, [ok(), ok(), ok('500 bare CR'), ok('502 no')], { framing: 'postfix', commandCrs: 'last' });
    expect(last).toMatchObject({ accepted: [], misplaced: [], extraReplies: 0 });
  });

  it('with commands ended by CRLF only, a bare-LF command is one refused line, while a bare-LF dot still ends content', () => {
    const crlf: ReadingRules = { framing: 'postfix', commandCrs: 'crlf' };
    const sent = bytes(`BDAT 3\n\r\n${ENVELOPE}DATA\r\nhello\n.\nNOOP\r\n`);
    const replies = [ok('500 bare LF'), ok('500 empty'), ok(), ok(), ok('354 go'), ok('250 2.0.0 Ok: queued as F6'), ok()];
    const read = readSession(sent, replies, crlf);
    expect(read).toMatchObject({ misplaced: [], extraReplies: 0 });
    expect(read.accepted.map((m) => m.content.toString('latin1'))).toEqual(['hello\r\n']);
    // Read the Postfix way, the same replies do not fit: BDAT would have taken three bytes of chunk.
    expect(readSession(sent, replies, POSTFIX).misplaced.length + readSession(sent, replies, POSTFIX).extraReplies).toBeGreaterThan(0);
  });
});

describe('content comparison', () => {
  it("drops Postfix's Received header and compares lines, not line ends", () => {
    const postcat = 'Received: from x\n\tby y with ESMTPSA id Q1\n\tfor <b@x>; date\nSubject: s\n\nbody\n';
    expect(queuedContent(postcat)).toBe('Subject: s\n\nbody\n');
    expect(comparableContent(bytes('Subject: s\r\n\r\nbody\r\n'))).toBe(queuedContent(postcat));
    expect(comparableContent(bytes('Subject: s\r\n\r\nbody'))).toBe(queuedContent(postcat));
    expect(comparableContent(bytes('Subject: s\r\n\r\nbody\r'))).toBe(comparableContent('Subject: s\n\nbody \n'));
    expect(comparableContent(bytes('Subject: s\r\n\r\nother\r\n'))).not.toBe(queuedContent(postcat));
    expect(comparableContent(bytes('Subject: s\r\n\r\nbody\r\n\r\n'))).not.toBe(queuedContent(postcat));
    expect(comparableContent(bytes('Subject: s\r\n\r\n '))).toBe('Subject: s\n\n\n');
    expect(comparableContent(bytes('Subject: s\0\r\n'))).toBe('Subject: s\n');
  });

  it('allows for the headers and the empty line Postfix adds, and nothing else', () => {
    const sent = comparableContent('XSubject: s\n\nFrom: a@x\n');
    const queued = 'XSubject: s\nMessage-Id: <20261203091320.Q1@smtp.example.test>\nDate: Thu,  3 Dec 2026 09:13:20 +0000 (UTC)\nFrom: a@x\n\nFrom: a@x\n';
    expect(sameAsQueued(sent, queued, 'Q1')).toBe(true);
    expect(sameAsQueued(sent, queued, 'Q2')).toBe(false);
    expect(sameAsQueued(sent, 'XSubject: s\nX-Other: 1\n\nFrom: a@x\n', 'Q1')).toBe(false);
    // A body without headers: Postfix puts its own headers and an empty line on top.
    const headless = comparableContent('BDAT 5\nSubject: s\n\nbody\n');
    const stored = 'Message-Id: <20261203091556.Q3@smtp.example.test>\nDate: Thu,  3 Dec 2026 09:15:56 +0000 (UTC)\nFrom: a@x\n\nBDAT 5\nSubject: s\n\nbody\n';
    expect(sameAsQueued(headless, stored, 'Q3')).toBe(true);
    expect(sameAsQueued(headless, stored.replace('body', 'other'), 'Q3')).toBe(false);
  });
});

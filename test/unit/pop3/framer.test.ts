import { describe, expect, it } from 'vitest';
import { parsePop3Reply } from '../../../src/pop3/backend.js';
import { Pop3Framer, parsePop3Command } from '../../../src/pop3/framer.js';
import { loginReply, multiline } from '../../../src/pop3/replies.js';

describe('POP3 framer', () => {
  it('splits commands at LF (CR optional), keyword upper-cased, the argument kept whole', () => {
    const framer = new Pop3Framer({ maxLineLength: 100 });
    framer.push(Buffer.from('capa\r\nPASS two words \r\nUS'));
    expect(framer.readCommand()).toEqual({ type: 'command', command: { name: 'CAPA', argument: Buffer.alloc(0) } });
    expect(framer.readCommand()).toEqual({ type: 'command', command: { name: 'PASS', argument: Buffer.from('two words ') } });
    expect(framer.readCommand()).toBeNull();
    framer.push(Buffer.from('ER bob\nrest'));
    expect(framer.readCommand()).toEqual({ type: 'command', command: { name: 'USER', argument: Buffer.from('bob') } });
    // What has not been framed goes to the backend untouched.
    expect(framer.takeRest().toString()).toBe('rest');
  });

  it('an over-long line is reported once, skipped without being stored, and framing goes on', () => {
    const framer = new Pop3Framer({ maxLineLength: 10 });
    framer.push(Buffer.from('AUTH XOAUTH2 aaaaaaaaaa'));
    expect(framer.readCommand()).toEqual({ type: 'error', error: 'line_too_long' });
    framer.push(Buffer.from('aaaaaaaaaaaaaa\r\nQUIT\r\n'));
    expect(framer.readCommand()).toEqual({ type: 'command', command: { name: 'QUIT', argument: Buffer.alloc(0) } });
  });

  it('a line without a readable keyword gets no name', () => {
    expect(parsePop3Command(Buffer.from('')).name).toBe('');
    expect(parsePop3Command(Buffer.from(' USER bob')).name).toBe('');
    expect(parsePop3Command(Buffer.from('ÜSER bob', 'latin1')).name).toBe('');
  });
});

describe('POP3 replies', () => {
  it('multi-line bodies are dot-stuffed and end with a lone dot', () => {
    expect(multiline('list', ['A', '.hidden'])).toEqual(['+OK list', 'A', '..hidden', '.']);
  });

  it('outcomes map to +OK, -ERR [AUTH] and -ERR [SYS/TEMP] (RFC 3206)', () => {
    expect(loginReply({ kind: 'temporary', which: 'backend' })).toMatch(/^-ERR \[SYS\/TEMP\] /);
    expect(loginReply({ kind: 'temporary', which: 'mailbox' })).toMatch(/^-ERR \[SYS\/TEMP\] /);
    expect(loginReply({ kind: 'refused', reason: 'expired', refusal: { by: 'token' }, closing: false })).toBe('-ERR [AUTH] Authentication failed.');
    expect(loginReply({ kind: 'refused', reason: 'backend_refused', refusal: { by: 'backend', reply: { text: '[AUTH] Nope.' } }, closing: false })).toBe(
      '-ERR [AUTH] Nope.',
    );
  });

  it("reads Dovecot's status lines and continuations; anything else is a broken backend", () => {
    expect(parsePop3Reply('+OK Logged in.')).toEqual({ kind: 'ok', text: 'Logged in.' });
    expect(parsePop3Reply('-ERR [AUTH] Authentication failed.')).toEqual({ kind: 'err', text: '[AUTH] Authentication failed.' });
    expect(parsePop3Reply('+ VXNlcm5hbWU6')).toEqual({ kind: 'continue', text: 'VXNlcm5hbWU6' });
    expect(() => parsePop3Reply('* OK imap')).toThrow(/unexpected backend reply/);
  });
});

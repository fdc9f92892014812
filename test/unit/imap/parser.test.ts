import { describe, expect, it } from 'vitest';
import type { CommandSegment } from '../../../src/imap/framer.js';
import { encodeAstring, ImapSyntaxError, parseCommand } from '../../../src/imap/parser.js';

const seg = (text: string, literal?: string): CommandSegment =>
  literal === undefined ? { text: Buffer.from(text, 'latin1') } : { text: Buffer.from(text, 'latin1'), literal: Buffer.from(literal, 'latin1') };

describe('parseCommand', () => {
  it.each([
    ['a1 NOOP', { tag: 'a1', name: 'NOOP', args: [] }],
    ['A.b]2 capability', { tag: 'A.b]2', name: 'CAPABILITY', args: [] }],
    ['a1 LOGIN alice "p a\\"s\\\\s"', {
      tag: 'a1', name: 'LOGIN',
      args: [{ type: 'atom', value: 'alice' }, { type: 'string', value: Buffer.from('p a"s\\s'), form: 'quoted' }],
    }],
    ['a1 ID NIL', { tag: 'a1', name: 'ID', args: [{ type: 'nil' }] }],
    ['a1 ID ("name" "x" "version" NIL)', {
      tag: 'a1', name: 'ID',
      args: [{ type: 'list', items: [
        { type: 'string', value: Buffer.from('name'), form: 'quoted' },
        { type: 'string', value: Buffer.from('x'), form: 'quoted' },
        { type: 'string', value: Buffer.from('version'), form: 'quoted' },
        { type: 'nil' },
      ] }],
    }],
    ['a1 AUTHENTICATE XOAUTH2 dXNlcj1h==', {
      tag: 'a1', name: 'AUTHENTICATE', args: [{ type: 'atom', value: 'XOAUTH2' }, { type: 'atom', value: 'dXNlcj1h==' }],
    }],
  ])('parses %s', (line, expected) => {
    expect(parseCommand([seg(line)])).toEqual(expected);
  });

  it('parses literals across segments', () => {
    const cmd = parseCommand([seg('a1 LOGIN {5}', 'alice'), seg(' {4+}', 'p\r\nw'), seg('')]);
    expect(cmd.args).toEqual([
      { type: 'string', value: Buffer.from('alice'), form: 'literal' },
      { type: 'string', value: Buffer.from('p\r\nw'), form: 'literal' },
    ]);
  });

  it('parses a literal inside an ID list', () => {
    const cmd = parseCommand([seg('a1 ID ("name" {3}', 'abc'), seg(')')]);
    expect(cmd.args[0]).toEqual({ type: 'list', items: [
      { type: 'string', value: Buffer.from('name'), form: 'quoted' },
      { type: 'string', value: Buffer.from('abc'), form: 'literal' },
    ] });
  });

  it.each([
    ['', undefined],
    ['a1', 'a1'],
    ['a1 ', 'a1'],
    ['+x NOOP', undefined],
    ['a1 LOGIN "unterminated', 'a1'],
    ['a1 LOGIN a  b', 'a1'],
    ['a1 LOGIN "bad\\escape"', 'a1'],
    ['a1 ID ("a" "b"', 'a1'],
    ['a1 LOGIN a b ', 'a1'],
    ['a1 LOGIN {5}', 'a1'],
    ['a1 LOGIN "x"y', 'a1'],
    [`a1 ID ${'('.repeat(60_000)}`, 'a1'],
  ])('rejects %j with a syntax error carrying tag %s', (line, tag) => {
    try {
      parseCommand([seg(line)]);
      expect.unreachable();
    } catch (err) {
      expect(err).toBeInstanceOf(ImapSyntaxError);
      expect((err as ImapSyntaxError).tag).toBe(tag);
    }
  });
});

describe('encodeAstring', () => {
  it('quotes printable ASCII and escapes quotes and backslashes', () => {
    expect(encodeAstring(Buffer.from('a"b\\c'), { literal: false, literalPlus: true })).toEqual({ text: '"a\\"b\\\\c"' });
  });
  it('uses a literal for 8-bit data or when asked', () => {
    expect(encodeAstring(Buffer.from('jürgen'), { literal: false, literalPlus: true }).text).toBe('{7+}');
    expect(encodeAstring(Buffer.from('x'), { literal: true, literalPlus: false }).text).toBe('{1}');
  });
});

import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { ImapFramer, type Frame } from '../../../src/imap/framer.js';

const limits = { maxLineLength: 100, maxLiteralSize: 50 };

/** Feeds chunks and drains frames; answers continuation requests like a session would. */
function frames(chunks: Array<string | Buffer>, mode: 'command' | 'line' = 'command'): Frame[] {
  const framer = new ImapFramer(limits);
  const out: Frame[] = [];
  for (const chunk of chunks) {
    framer.push(Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk, 'latin1'));
    for (;;) {
      const frame = mode === 'command' ? framer.readCommand() : framer.readLine();
      if (!frame) break;
      out.push(frame);
    }
  }
  return out;
}

function texts(frame: Frame | undefined): string[] {
  if (frame?.type !== 'command') throw new Error(`expected a command, got ${JSON.stringify(frame)}`);
  return frame.segments.map((s) => s.text.toString('latin1') + (s.literal ? `<${s.literal.toString('latin1')}>` : ''));
}

describe('ImapFramer', () => {
  it('frames a simple command, with or without CR', () => {
    expect(texts(frames(['a1 NOOP\r\n'])[0])).toEqual(['a1 NOOP']);
    expect(texts(frames(['a1 NOOP\n'])[0])).toEqual(['a1 NOOP']);
  });

  it('asks for a synchronizing literal and joins it into the command', () => {
    const out = frames(['a1 LOGIN {5}\r\n', 'alice {3}\r\n', 'pwd\r\n']);
    expect(out[0]).toEqual({ type: 'continue', size: 5 });
    expect(out[1]).toEqual({ type: 'continue', size: 3 });
    expect(texts(out[2])).toEqual(['a1 LOGIN {5}<alice>', ' {3}<pwd>', '']);
  });

  it('takes non-synchronizing literals without asking', () => {
    const out = frames(['a1 LOGIN {5+}\r\nalice {3+}\r\npwd\r\n']);
    expect(out).toHaveLength(1);
    expect(texts(out[0])).toEqual(['a1 LOGIN {5+}<alice>', ' {3+}<pwd>', '']);
  });

  it('keeps CRLF inside a literal as data', () => {
    const out = frames(['a1 LOGIN {4+}\r\na\r\nb "x"\r\n']);
    expect(texts(out[0])).toEqual(['a1 LOGIN {4+}<a\r\nb>', ' "x"']);
  });

  it('refuses an over-long line with the tag, skips it, and carries on', () => {
    const out = frames([`t9 LOGIN ${'x'.repeat(150)}`, '\r\n', 'a2 NOOP\r\n']);
    expect(out[0]).toMatchObject({ type: 'error', error: 'line_too_long', tag: 't9' });
    expect(texts(out[1])).toEqual(['a2 NOOP']);
    expect(out).toHaveLength(2);
  });

  it('refuses a synchronizing literal over the limit without waiting for it', () => {
    const out = frames(['a1 LOGIN {51}\r\n', 'a2 NOOP\r\n']);
    expect(out[0]).toMatchObject({ type: 'error', error: 'literal_too_large', tag: 'a1', synchronizing: true });
    expect(texts(out[1])).toEqual(['a2 NOOP']);
  });

  it('skips a non-synchronizing literal over the limit and the rest of its command', () => {
    const out = frames(['a1 LOGIN {60+}\r\n', 'y'.repeat(60), ' {2+}\r\nzz\r\n', 'a2 NOOP\r\n']);
    expect(out[0]).toMatchObject({ type: 'error', error: 'literal_too_large', tag: 'a1', synchronizing: false });
    expect(texts(out[1])).toEqual(['a2 NOOP']);
    expect(out).toHaveLength(2);
  });

  it('counts literals of one command together against the limit', () => {
    const out = frames(['a1 X {30+}\r\n', 'a'.repeat(30), ' {30+}\r\n', 'b'.repeat(30), '\r\na2 NOOP\r\n']);
    expect(out[0]).toMatchObject({ type: 'error', error: 'literal_too_large', tag: 'a1' });
    expect(texts(out[1])).toEqual(['a2 NOOP']);
  });

  it('skips a literal announced at the end of an over-long line, instead of running it as commands', () => {
    const out = frames([`a NOOP ${'A'.repeat(150)}`, ' {8+}\r\nx NOOP\r\n', '\r\nc NOOP\r\n']);
    expect(out[0]).toMatchObject({ type: 'error', error: 'line_too_long', tag: 'a' });
    expect(texts(out[1])).toEqual(['c NOOP']);
    expect(out).toHaveLength(2);
  });

  it('skips a literal announced at the end of a complete over-long line', () => {
    const out = frames([`a NOOP ${'A'.repeat(150)} {3+}\r\nxyz\r\nb NOOP\r\n`]);
    expect(out[0]).toMatchObject({ type: 'error', error: 'line_too_long', tag: 'a' });
    expect(texts(out[1])).toEqual(['b NOOP']);
  });

  it('limits the number of literals in one command', () => {
    const framer = new ImapFramer({ maxLineLength: 100_000, maxLiteralSize: 100_000 });
    framer.push(Buffer.from(`a ID (${'{0+}\r\n'.repeat(40)})\r\nb NOOP\r\n`));
    const first = framer.readCommand();
    expect(first).toMatchObject({ type: 'error', error: 'too_many_literals', tag: 'a' });
    const next = framer.readCommand();
    expect(texts(next ?? undefined)).toEqual(['b NOOP']);
  });

  it('never buffers more than the line limit while waiting for a line end', () => {
    const framer = new ImapFramer(limits);
    for (let i = 0; i < 1000; i++) {
      framer.push(Buffer.alloc(64, 0x41));
      framer.readCommand();
      expect(framer.buffered).toBeLessThanOrEqual(limits.maxLineLength + 64);
    }
  });

  it('returns unframed bytes untouched for the relay', () => {
    const framer = new ImapFramer(limits);
    framer.push(Buffer.from('a1 NOOP\r\na2 SELECT INBOX\r\na3 {'));
    expect(framer.readCommand()?.type).toBe('command');
    expect(framer.takeRest().toString()).toBe('a2 SELECT INBOX\r\na3 {');
  });

  it('reads raw lines for SASL responses, with the same limit', () => {
    const out = frames(['dGVzdA==\r\n', '*\r\n', 'x'.repeat(101), '\r\n', '\r\n'], 'line');
    expect(out.map((f) => (f.type === 'line' ? f.line.toString() : f.type))).toEqual(['dGVzdA==', '*', 'error', '']);
  });

  it('gives the same frames however the input is split (property)', () => {
    const piece = fc.oneof(
      fc.constantFrom('a1 NOOP\r\n', 'a2 LOGIN {3+}\r\nabc "x"\r\n', 'a3 LOGIN {2}\r\nzz {1}\r\nq\r\n', '\r\n', '{', '}', '+', '\n'),
      fc.string({ maxLength: 30 }),
      fc.uint8Array({ maxLength: 40 }).map((a) => Buffer.from(a).toString('latin1')),
      fc.nat(200).map((n) => 'x'.repeat(n)),
    );
    fc.assert(
      fc.property(fc.array(piece, { maxLength: 20 }), fc.array(fc.nat(50), { maxLength: 10 }), (pieces, cuts) => {
        const input = Buffer.from(pieces.join(''), 'latin1');
        const whole = frames([input]);
        const chunks: Buffer[] = [];
        let at = 0;
        for (const cut of cuts) {
          chunks.push(input.subarray(at, Math.min(input.length, at + cut)));
          at = Math.min(input.length, at + cut);
        }
        chunks.push(input.subarray(at));
        const split = frames(chunks);
        expect(split).toEqual(whole);
        for (const f of whole) {
          if (f.type === 'command') {
            const literalBytes = f.segments.reduce((n, s) => n + (s.literal?.length ?? 0), 0);
            expect(literalBytes).toBeLessThanOrEqual(limits.maxLiteralSize);
            expect(f.segments.reduce((n, s) => n + s.text.length, 0)).toBeLessThanOrEqual(limits.maxLineLength);
          }
        }
      }),
      { numRuns: 300 },
    );
  });
});

import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { SieveFramer, type SieveFrame } from '../../../src/sieve/framer.js';
import {
  encodeString,
  parseCapability,
  parseCommand,
  parseResponse,
  parseStringLine,
  parseValues,
  SieveSyntaxError,
  type SieveSegment,
} from '../../../src/sieve/parser.js';

const LIMITS = { maxLineLength: 200, maxLiteralSize: 100 };

/** Frames `input` (in one push) and returns every frame. */
function frames(input: string | Buffer, limits = LIMITS): SieveFrame[] {
  const framer = new SieveFramer(limits);
  framer.push(typeof input === 'string' ? Buffer.from(input, 'latin1') : input);
  const out: SieveFrame[] = [];
  for (let frame = framer.readFrame(); frame !== null; frame = framer.readFrame()) out.push(frame);
  return out;
}

function line(input: string): SieveSegment[] {
  const [frame] = frames(input, { maxLineLength: 10_000, maxLiteralSize: 10_000 });
  if (frame?.type !== 'line') throw new Error(`not a line: ${JSON.stringify(frame)}`);
  return frame.segments;
}

describe('ManageSieve parser', () => {
  it('reads commands with quoted strings, escapes and literals of both forms', () => {
    expect(parseCommand(line('authenticate "PLAIN" "AGJvYgBwdw=="\r\n'))).toEqual({
      name: 'AUTHENTICATE',
      args: [
        { type: 'string', value: Buffer.from('PLAIN'), form: 'quoted' },
        { type: 'string', value: Buffer.from('AGJvYgBwdw=='), form: 'quoted' },
      ],
    });
    const token = 'x'.repeat(4000);
    expect(parseCommand(line(`AUTHENTICATE "XOAUTH2" "${token}"\r\n`)).args[1]).toMatchObject({ value: Buffer.from(token), form: 'quoted' });
    expect(parseCommand(line('NOOP "a \\"b\\" \\\\c"\r\n')).args[0]).toMatchObject({ value: Buffer.from('a "b" \\c') });
    const literal = parseCommand(line('AUTHENTICATE "XOAUTH2" {5+}\r\nab\r\nc\r\n'));
    expect(literal.args[1]).toEqual({ type: 'string', value: Buffer.from('ab\r\nc'), form: 'literal' });
    expect(parseCommand(line('AUTHENTICATE {7}\r\nXOAUTH2 {2+}\r\nxy\r\n')).args.map((a) => a.type === 'string' && a.value.toString())).toEqual([
      'XOAUTH2',
      'xy',
    ]);
  });

  it('reads responses with codes, and capability lines', () => {
    expect(parseResponse(line('OK (SASL "dGVzdA==") "Logged in."\r\n'))).toEqual({
      status: 'OK',
      code: [
        { type: 'atom', value: 'SASL' },
        { type: 'string', value: Buffer.from('dGVzdA=='), form: 'quoted' },
      ],
      text: Buffer.from('Logged in.'),
    });
    expect(parseResponse(line('NO (QUOTA/MAXSIZE) {3}\r\nbig\r\n'))).toMatchObject({ status: 'NO', code: [{ type: 'atom', value: 'QUOTA/MAXSIZE' }], text: Buffer.from('big') });
    expect(parseResponse(line('BYE\r\n'))).toEqual({ status: 'BYE', code: undefined, text: undefined });
    expect(parseCapability(line('"SIEVE" "fileinto reject"\r\n'))).toEqual({ name: 'SIEVE', value: 'fileinto reject' });
    expect(parseCapability(line('"STARTTLS"\r\n'))).toEqual({ name: 'STARTTLS', value: undefined });
    expect(() => parseResponse(line('"SIEVE" "x"\r\n'))).toThrow(SieveSyntaxError);
  });

  it('refuses what is not ManageSieve with its typed error', () => {
    for (const bad of ['"open\r\n', 'NOOP  "x"\r\n', 'NOOP "x" \r\n', 'NOOP "\\n"\r\n', 'NOOP ("a")\r\n', '"x"\r\n', 'NOOP {3+}\r\nabc\r\n'.replace('{3+}', '{3+}x')]) {
      const [frame] = frames(bad);
      if (frame?.type !== 'line') continue;
      expect(() => parseCommand(frame.segments), bad).toThrow(SieveSyntaxError);
    }
    expect(() => parseStringLine(line('"a" "b"\r\n'))).toThrow(SieveSyntaxError);
    expect(() => parseStringLine(line('abc\r\n'))).toThrow(SieveSyntaxError);
    expect(() => parseValues([])).toThrow(SieveSyntaxError);
  });

  it('never throws anything but SieveSyntaxError, whatever the bytes', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 300 }), (bytes) => {
        for (const frame of frames(Buffer.from(bytes), { maxLineLength: 100, maxLiteralSize: 50 })) {
          if (frame.type !== 'line') continue;
          for (const parse of [parseValues, parseCommand, parseResponse, parseCapability, parseStringLine]) {
            try {
              parse(frame.segments);
            } catch (err) {
              expect(err).toBeInstanceOf(SieveSyntaxError);
            }
          }
        }
      }),
      { numRuns: 2000 },
    );
  });

  it('round-trips any string through encodeString, quoted or literal, from either side', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 1100 }), fc.constantFrom('client' as const, 'server' as const), (bytes, from) => {
        const value = Buffer.from(bytes);
        const wire = Buffer.concat([Buffer.from('NOOP '), encodeString(value, from), Buffer.from('\r\n')]);
        const [frame] = frames(wire, { maxLineLength: 3000, maxLiteralSize: 2000 });
        expect(frame?.type).toBe('line');
        const command = parseCommand((frame as { segments: SieveSegment[] }).segments);
        expect(command.args).toHaveLength(1);
        expect(command.args[0]).toMatchObject({ type: 'string', value });
      }),
      { numRuns: 500 },
    );
  });
});

describe('ManageSieve framer', () => {
  it('needs the whole literal before it frames the line, whatever the split', () => {
    const input = Buffer.from('AUTHENTICATE "PLAIN" {4+}\r\nab\r\n\r\nNOOP\r\n', 'latin1');
    fc.assert(
      fc.property(fc.array(fc.integer({ min: 1, max: input.length - 1 }), { maxLength: 5 }), (cuts) => {
        const framer = new SieveFramer(LIMITS);
        const points = [0, ...[...new Set(cuts)].sort((a, b) => a - b), input.length];
        const out: SieveFrame[] = [];
        for (let i = 1; i < points.length; i++) {
          framer.push(input.subarray(points[i - 1], points[i]));
          for (let frame = framer.readFrame(); frame !== null; frame = framer.readFrame()) out.push(frame);
        }
        expect(out.map((f) => f.type === 'line' && parseCommand(f.segments).name)).toEqual(['AUTHENTICATE', 'NOOP']);
        expect((out[0] as { segments: SieveSegment[] }).segments[0]!.literal).toEqual(Buffer.from('ab\r\n'));
      }),
    );
  });

  it('refuses an over-long line, an over-large or too many literals, skips their data, and goes on', () => {
    expect(frames(`NOOP "${'x'.repeat(300)}"\r\nNOOP\r\n`).map((f) => f.type === 'error' ? f.error : 'line')).toEqual(['line_too_long', 'line']);
    expect(frames(`NOOP {101+}\r\n${'y'.repeat(101)}\r\nNOOP\r\n`).map((f) => (f.type === 'error' ? f.error : 'line'))).toEqual(['literal_too_large', 'line']);
    // Without a continuation request a synchronizing literal is on its way too: skipped the same.
    expect(frames(`NOOP {101}\r\n${'y'.repeat(101)}\r\nNOOP\r\n`).map((f) => (f.type === 'error' ? f.error : 'line'))).toEqual(['literal_too_large', 'line']);
    // The fifth literal is refused; its byte and the rest of its line are skipped.
    expect(frames('A {1+}\r\na {1+}\r\nb {1+}\r\nc {1+}\r\nd {1+}\r\ne\r\nNOOP\r\n').map((f) => (f.type === 'error' ? f.error : parseCommand(f.segments).name))).toEqual([
      'too_many_literals',
      'NOOP',
    ]);
    const long = frames(`NOOP "${'x'.repeat(300)}" {3+}\r\nabc\r\nNOOP\r\n`);
    expect(long.map((f) => (f.type === 'error' ? f.error : parseCommand(f.segments).name))).toEqual(['line_too_long', 'NOOP']);
  });
});

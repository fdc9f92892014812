/**
 * The socketmap's netstring codec: round trips however the bytes are split, and refuses bad
 * lengths, missing separators and announced lengths over the limit before buffering the payload.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { encodeNetstring, NetstringDecoder, NetstringError } from '../../../src/directory/socketmap.js';

/** Splits a buffer at the given cut points (positions are taken modulo the length). */
function split(buffer: Buffer, cuts: number[]): Buffer[] {
  const points = [...new Set(cuts.map((c) => (buffer.length === 0 ? 0 : c % (buffer.length + 1))))].sort((a, b) => a - b);
  const parts: Buffer[] = [];
  let last = 0;
  for (const p of points) {
    parts.push(buffer.subarray(last, p));
    last = p;
  }
  parts.push(buffer.subarray(last));
  return parts;
}

function decodeAll(decoder: NetstringDecoder, parts: Buffer[]): Buffer[] {
  return parts.flatMap((p) => decoder.push(p));
}

function errorOf(fn: () => unknown): NetstringError {
  try {
    fn();
  } catch (err) {
    if (err instanceof NetstringError) return err;
    throw err;
  }
  throw new Error('expected a NetstringError');
}

describe('netstring encoding', () => {
  it.each([
    ['', '0:,'],
    ['hello world!', '12:hello world!,'],
    ['mailbox alice@example.test', '26:mailbox alice@example.test,'],
    ['NOTFOUND ', '9:NOTFOUND ,'],
  ])('encodes %j as %j', (payload, wire) => {
    expect(encodeNetstring(payload).toString('latin1')).toBe(wire);
  });

  it('counts bytes, not characters', () => {
    expect(encodeNetstring('OK jörg@example.test').toString('latin1').startsWith('21:')).toBe(true);
  });
});

describe('netstring decoding', () => {
  it('hands over the netstrings completed before a bad byte with the error', () => {
    const err = errorOf(() => new NetstringDecoder(100).push(Buffer.from('3:abc,2:de,x')));
    expect(err.code).toBe('netstring_syntax');
    expect(err.decoded.map(String)).toEqual(['abc', 'de']);
  });

  it('decodes several netstrings in one chunk and keeps an incomplete one for later', () => {
    const d = new NetstringDecoder(100);
    expect(d.push(Buffer.from('5:alias,3:abc,4:ab')).map(String)).toEqual(['alias', 'abc']);
    expect(d.pending).toBe(true);
    expect(d.push(Buffer.from('cd,')).map(String)).toEqual(['abcd']);
    expect(d.pending).toBe(false);
  });

  it('round-trips any payloads, however the stream is split', () => {
    fc.assert(
      fc.property(
        fc.array(fc.uint8Array({ maxLength: 80 }), { maxLength: 8 }),
        fc.array(fc.nat(2000), { maxLength: 12 }),
        (payloads, cuts) => {
          const wire = Buffer.concat(payloads.map((p) => encodeNetstring(p)));
          const decoded = decodeAll(new NetstringDecoder(80), split(wire, cuts));
          expect(decoded.map((b) => Buffer.from(b).toString('hex'))).toEqual(payloads.map((p) => Buffer.from(p).toString('hex')));
        },
      ),
    );
  });

  it('round-trips byte by byte', () => {
    const wire = Buffer.concat([encodeNetstring('mailbox a@b.c'), encodeNetstring(''), encodeNetstring('x'.repeat(30))]);
    const d = new NetstringDecoder(64);
    const out: Buffer[] = [];
    for (const byte of wire) out.push(...d.push(Buffer.from([byte])));
    expect(out.map(String)).toEqual(['mailbox a@b.c', '', 'x'.repeat(30)]);
  });

  it.each([
    ['a length that is not a number', 'x:abc,'],
    ['a missing length', ':abc,'],
    ['a missing comma', '3:abcd'],
    ['a negative length', '-3:abc,'],
    ['a space before the colon', '3 :abc,'],
    ['a line instead of a netstring', 'mailbox alice@example.test\n'],
  ])('refuses %s', (_, wire) => {
    const err = errorOf(() => new NetstringDecoder(100).push(Buffer.from(wire)));
    expect(err.code).toBe('netstring_syntax');
  });

  it('refuses an announced length over the limit before any payload arrives', () => {
    const d = new NetstringDecoder(16);
    expect(errorOf(() => d.push(Buffer.from('17:'))).code).toBe('netstring_too_long');
    // Too many digits fail as soon as they show it, without waiting for the colon.
    expect(errorOf(() => new NetstringDecoder(16).push(Buffer.from('100'))).code).toBe('netstring_too_long');
    expect(errorOf(() => new NetstringDecoder(4096).push(Buffer.from('9'.repeat(10_000)))).code).toBe('netstring_too_long');
  });

  it('accepts exactly the limit, and leading zeros that do not exceed it', () => {
    expect(new NetstringDecoder(3).push(Buffer.from('3:abc,')).map(String)).toEqual(['abc']);
    expect(new NetstringDecoder(3).push(Buffer.from('003:abc,')).map(String)).toEqual(['abc']);
  });

  it('stays failed after an error', () => {
    const d = new NetstringDecoder(10);
    expect(() => d.push(Buffer.from('x'))).toThrow(NetstringError);
    expect(() => d.push(Buffer.from('1:a,'))).toThrow(NetstringError);
  });

  it('never throws anything but NetstringError, and never returns more than the limit, on arbitrary bytes', () => {
    fc.assert(
      fc.property(fc.array(fc.uint8Array({ maxLength: 40 }), { maxLength: 6 }), (chunks) => {
        const d = new NetstringDecoder(20);
        try {
          for (const c of chunks) for (const out of d.push(c)) expect(out.length).toBeLessThanOrEqual(20);
        } catch (err) {
          expect(err).toBeInstanceOf(NetstringError);
        }
      }),
    );
  });
});

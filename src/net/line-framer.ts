/** Line feed: lines end at LF; a CR before it is dropped. */
export const LF = 0x0a;

/** The line without its trailing CR, if any. */
export function stripCr(line: Buffer): Buffer {
  return line.length > 0 && line[line.length - 1] === 0x0d ? line.subarray(0, line.length - 1) : line;
}

/** Enough of a skipped line's end to recognise an IMAP literal announcement (`{n+}`). */
const TAIL_BYTES = 32;

/** A line, or the news that one was too long (and has been skipped). */
export type LineFrame = { type: 'line'; line: Buffer } | { type: 'error'; error: 'line_too_long' };

/**
 * Incremental line reader with a length limit and no I/O: bytes are pushed in, lines pulled
 * out, and whatever was not pulled is handed back untouched when the relay takes over. An
 * over-long line is reported once and skipped without being stored.
 */
export class LineFramer {
  protected buffer: Buffer = Buffer.alloc(0);
  /** Where to resume looking for LF in `buffer`, so a slow line is scanned once. */
  protected scanFrom = 0;
  /** Bytes to drop before framing resumes. */
  protected discardBytes = 0;
  /** Drop input up to and including the next LF (the rest of an over-long line). */
  private discardLine = false;
  /** The last bytes of the line being dropped: its end may announce more data to drop. */
  private discardTail: Buffer = Buffer.alloc(0);

  constructor(protected readonly maxLineLength: number) {}

  /** Appends bytes received from the client. */
  push(chunk: Buffer): void {
    this.buffer = this.buffer.length === 0 ? chunk : Buffer.concat([this.buffer, chunk]);
  }

  /** Bytes received and not yet framed. */
  get buffered(): number {
    return this.buffer.length;
  }

  /** Everything received and not yet framed: handed to the backend when the relay starts. */
  takeRest(): Buffer {
    const rest = this.buffer;
    this.buffer = Buffer.alloc(0);
    this.scanFrom = 0;
    return rest;
  }

  /** The next line without CRLF, a line-too-long error, or null when more input is needed. */
  readLine(): LineFrame | null {
    if (!this.skipDiscarded()) return null;
    const end = this.buffer.indexOf(LF, this.scanFrom);
    if (end < 0) {
      if (this.buffer.length > this.maxLineLength) {
        this.discardRestOfLine();
        return { type: 'error', error: 'line_too_long' };
      }
      this.scanFrom = this.buffer.length;
      return null;
    }
    const line = stripCr(this.buffer.subarray(0, end));
    this.consume(end + 1);
    if (line.length > this.maxLineLength) return { type: 'error', error: 'line_too_long' };
    return { type: 'line', line: Buffer.from(line) };
  }

  /** Consumes the input if it is exactly this one byte (an answer some clients send without CRLF). */
  takeLoneByte(byte: number): boolean {
    if (this.discardBytes > 0 || this.buffer.length !== 1 || this.buffer[0] !== byte) return false;
    this.consume(1);
    return true;
  }

  /** Drops the next `n` bytes of input (data that belongs to a refused command), stored or not. */
  skip(n: number): void {
    this.discardBytes += n;
  }

  /** Drops what has arrived of the current line and the rest of it, up to the next LF. */
  protected discardRestOfLine(): void {
    this.discardLine = true;
    this.discardTail = this.buffer.subarray(Math.max(0, this.buffer.length - TAIL_BYTES));
    this.buffer = Buffer.alloc(0);
    this.scanFrom = 0;
  }

  /** Drops input that belongs to rejected data; false when the buffer ran out doing so. */
  protected skipDiscarded(): boolean {
    if (this.discardBytes > 0) {
      const n = Math.min(this.discardBytes, this.buffer.length);
      this.consume(n);
      this.discardBytes -= n;
      if (this.discardBytes > 0) return false;
    }
    if (this.discardLine) {
      const end = this.buffer.indexOf(LF);
      if (end < 0) {
        this.discardTail = Buffer.concat([this.discardTail, this.buffer]).subarray(-TAIL_BYTES);
        this.buffer = Buffer.alloc(0);
        this.scanFrom = 0;
        return false;
      }
      const tail = stripCr(Buffer.concat([this.discardTail, this.buffer.subarray(0, end)]).subarray(-TAIL_BYTES));
      this.consume(end + 1);
      this.discardLine = false;
      this.discardTail = Buffer.alloc(0);
      this.onDiscardedLineEnd(tail);
      return this.skipDiscarded();
    }
    return true;
  }

  /** Called with the last bytes of a skipped over-long line; protocols with literals look there. */
  protected onDiscardedLineEnd(_tail: Buffer): void {}

  protected consume(n: number): void {
    this.buffer = this.buffer.subarray(n);
    this.scanFrom = 0;
  }
}

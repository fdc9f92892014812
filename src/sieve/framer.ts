import { LF, LineFramer, stripCr } from '../net/line-framer.js';
import { LITERAL_AT_END, MAX_NUMBER, type SieveSegment } from './parser.js';

/**
 * Splits a client's byte stream into ManageSieve lines joined by literals, within limits, without
 * any I/O. ManageSieve has no continuation request: a literal's bytes follow its `{n+}` at once
 * (clients that write `{n}` are read the same way), so a refused literal is skipped, not awaited.
 */

export type SieveFramerError = 'line_too_long' | 'literal_too_large' | 'too_many_literals';

export type SieveFrame =
  /** A complete line (a command or a SASL response), with its literals. */
  | { type: 'line'; segments: SieveSegment[] }
  /** A limit was hit; the offending line and its literals are skipped. */
  | { type: 'error'; error: SieveFramerError };

export interface SieveFramerLimits {
  maxLineLength: number;
  /** Upper bound of all literal bytes of one line together. */
  maxLiteralSize: number;
}

/** Literals one line may carry: pre-login commands need two at most (AUTHENTICATE). */
export const MAX_LITERALS_PER_LINE = 4;

/** Incremental ManageSieve framer: lines joined by literals, within limits. */
export class SieveFramer extends LineFramer {
  private segments: SieveSegment[] = [];
  private lineText = 0;
  private lineLiterals = 0;
  /** Bytes of an announced literal still to arrive (for the pending segment). */
  private literalNeeded: number | undefined;
  private pendingText: Buffer | undefined;
  /** After a refused literal, the rest of that line is dropped as well. */
  private discardCommand = false;

  constructor(private readonly limits: SieveFramerLimits) {
    super(limits.maxLineLength);
  }

  /** The next complete line with its literals, a limit error, or null when more input is needed. */
  readFrame(): SieveFrame | null {
    for (;;) {
      if (!this.skipDiscarded()) return null;
      if (this.literalNeeded !== undefined) {
        if (this.buffer.length < this.literalNeeded) return null;
        const literal = Buffer.from(this.buffer.subarray(0, this.literalNeeded));
        this.consume(this.literalNeeded);
        this.segments.push({ text: this.pendingText ?? Buffer.alloc(0), literal });
        this.literalNeeded = undefined;
        this.pendingText = undefined;
        continue;
      }
      const end = this.buffer.indexOf(LF, this.scanFrom);
      if (end < 0) {
        if (this.lineText + this.buffer.length > this.limits.maxLineLength) {
          this.reset();
          this.discardRestOfLine();
          this.discardCommand = true;
          return { type: 'error', error: 'line_too_long' };
        }
        this.scanFrom = this.buffer.length;
        return null;
      }
      const line = Buffer.from(stripCr(this.buffer.subarray(0, end)));
      this.consume(end + 1);
      if (this.discardCommand) {
        this.discardAfter(line);
        continue;
      }
      this.lineText += line.length;
      if (this.lineText > this.limits.maxLineLength) {
        this.reset();
        this.discardAfter(line);
        return { type: 'error', error: 'line_too_long' };
      }
      const literal = literalAtEnd(line);
      if (literal === undefined) {
        const segments = [...this.segments, { text: line }];
        this.reset();
        return { type: 'line', segments };
      }
      const tooMany = this.segments.length >= MAX_LITERALS_PER_LINE;
      if (tooMany || literal > MAX_NUMBER || this.lineLiterals + literal > this.limits.maxLiteralSize) {
        this.reset();
        this.discardAfter(line);
        return { type: 'error', error: tooMany ? 'too_many_literals' : 'literal_too_large' };
      }
      this.lineLiterals += literal;
      this.pendingText = line;
      this.literalNeeded = literal;
    }
  }

  /** The end of an over-long line that was skipped: a literal announced there is skipped too. */
  protected override onDiscardedLineEnd(tail: Buffer): void {
    if (this.discardCommand) this.discardAfter(tail);
  }

  /** After a refused line: the literal it announced is on its way and is skipped with the rest of the line. */
  private discardAfter(line: Buffer): void {
    const literal = literalAtEnd(line);
    this.discardCommand = literal !== undefined;
    if (literal !== undefined) this.discardBytes = literal;
  }

  private reset(): void {
    this.segments = [];
    this.lineText = 0;
    this.lineLiterals = 0;
    this.literalNeeded = undefined;
    this.pendingText = undefined;
  }
}

/** The size of the literal announced at the end of `line`, if any. */
function literalAtEnd(line: Buffer): number | undefined {
  const match = LITERAL_AT_END.exec(line.subarray(Math.max(0, line.length - 24)).toString('latin1'));
  return match ? Number(match[1]) : undefined;
}

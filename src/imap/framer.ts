import { LF, LineFramer, stripCr } from '../net/line-framer.js';

/**
 * Splits a client's byte stream into IMAP commands (lines joined by literals) or raw lines (SASL
 * responses), within limits, without any I/O. The session pushes bytes in and pulls frames out;
 * whatever has not been pulled when the session hands over to the relay is returned untouched.
 */

/** One line of a command and the literal announced at its end, if any. */
export interface CommandSegment {
  /** The line's text without CRLF; when a literal follows, it ends with `{n}` or `{n+}`. */
  text: Buffer;
  literal?: Buffer;
}

export type FramerLimitError = 'line_too_long' | 'literal_too_large' | 'too_many_literals';

export type Frame =
  /** A complete command. */
  | { type: 'command'; segments: CommandSegment[] }
  /** A raw line (only from readLine). */
  | { type: 'line'; line: Buffer }
  /** A synchronizing literal was announced: the server must answer `+` before the client sends it. */
  | { type: 'continue'; size: number }
  /** A limit was hit. The offending input is skipped; `tag` is the command's tag if one was seen. */
  | { type: 'error'; error: FramerLimitError; tag: string | undefined; synchronizing: boolean };

export interface FramerLimits {
  maxLineLength: number;
  /** Upper bound of all literal bytes of one command together. */
  maxLiteralSize: number;
}

/**
 * Literals one command may carry. Pre-login commands need two at most (LOGIN); `ID` may send
 * its fields as literals. Each synchronizing literal costs a `+` reply, so this also bounds the
 * output a single command can cause.
 */
export const MAX_LITERALS_PER_COMMAND = 16;

const LITERAL_AT_END = /\{(\d{1,20})(\+?)\}$/;
const TAG = /^[\x21-\x7e]+?(?= |$)/;
const TAG_BEFORE_SPACE = /^[\x21-\x7e]+?(?= )/;

/**
 * Extracts what looks like a command tag from the start of a line, for error replies. Of a
 * line that has not fully arrived, only a tag already followed by a space counts.
 */
export function tagOf(text: Buffer, lineComplete = true): string | undefined {
  const head = text.subarray(0, 1024).toString('latin1');
  const match = (lineComplete ? TAG : TAG_BEFORE_SPACE).exec(head);
  const tag = match?.[0];
  return tag !== undefined && !/[(){%*"\\+]/.test(tag) ? tag : undefined;
}

/** Incremental IMAP command framer: lines joined by literals, within limits. */
export class ImapFramer extends LineFramer {
  private segments: CommandSegment[] = [];
  private commandText = 0;
  private commandLiterals = 0;
  private literalCount = 0;
  /** Bytes of an announced literal still to arrive (for the pending segment). */
  private literalNeeded: number | undefined;
  private pendingText: Buffer | undefined;
  /** After a rejected literal, the rest of that command is dropped as well. */
  private discardCommand = false;

  constructor(private readonly limits: FramerLimits) {
    super(limits.maxLineLength);
  }

  /** The next raw line (SASL responses), without CRLF; null when more input is needed. */
  override readLine(): Extract<Frame, { type: 'line' }> | (Extract<Frame, { type: 'error' }> & { error: 'line_too_long' }) | null {
    const frame = super.readLine();
    return frame?.type === 'error' ? { ...frame, tag: undefined, synchronizing: false } : frame;
  }

  /** The next complete command, a request for a literal continuation, a limit error, or null. */
  readCommand(): Frame | null {
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
        if (this.commandText + this.buffer.length > this.limits.maxLineLength) {
          return this.lineTooLong(this.currentTag(this.buffer, false));
        }
        this.scanFrom = this.buffer.length;
        return null;
      }
      const line = Buffer.from(stripCr(this.buffer.subarray(0, end)));
      this.consume(end + 1);
      const tag = this.currentTag(line);
      if (this.discardCommand) {
        // Still inside a rejected command: skip its remaining lines and literals.
        this.discardAfter(line);
        continue;
      }
      this.commandText += line.length;
      if (this.commandText > this.limits.maxLineLength) {
        this.resetCommand();
        this.discardAfter(line);
        return { type: 'error', error: 'line_too_long', tag, synchronizing: false };
      }
      const literal = LITERAL_AT_END.exec(line.subarray(Math.max(0, line.length - 24)).toString('latin1'));
      if (!literal) {
        const segments = [...this.segments, { text: line }];
        this.resetCommand();
        return { type: 'command', segments };
      }
      const size = Number(literal[1]);
      const synchronizing = literal[2] !== '+';
      const tooMany = this.literalCount >= MAX_LITERALS_PER_COMMAND;
      if (tooMany || this.commandLiterals + size > this.limits.maxLiteralSize) {
        this.resetCommand();
        // A synchronizing literal is never sent once refused; a non-synchronizing one is already
        // on its way and has to be skipped without being stored.
        this.discardAfter(line);
        return { type: 'error', error: tooMany ? 'too_many_literals' : 'literal_too_large', tag, synchronizing };
      }
      this.literalCount += 1;
      this.commandLiterals += size;
      this.pendingText = line;
      this.literalNeeded = size;
      if (synchronizing) return { type: 'continue', size };
    }
  }

  /**
   * The tag of the command being framed. Of an over-long line only the first maxLineLength
   * bytes count, so the answer does not depend on how the line arrived.
   */
  private currentTag(line: Buffer, lineComplete = true): string | undefined {
    const first = this.segments[0]?.text ?? this.pendingText;
    if (first) return tagOf(first);
    return line.length > this.limits.maxLineLength ? tagOf(line.subarray(0, this.limits.maxLineLength), false) : tagOf(line, lineComplete);
  }

  private lineTooLong(tag: string | undefined): Frame {
    this.resetCommand();
    this.discardRestOfLine();
    this.discardCommand = true;
    return { type: 'error', error: 'line_too_long', tag, synchronizing: false };
  }

  /** The end of an over-long line that was skipped: a literal announced there is skipped too. */
  protected override onDiscardedLineEnd(tail: Buffer): void {
    if (this.discardCommand) this.discardAfter(tail);
  }

  /**
   * After a rejected line: a non-synchronizing literal it announced is on its way and is skipped
   * with the rest of the command; a synchronizing one will never be sent; otherwise the
   * command ended with this line.
   */
  private discardAfter(line: Buffer): void {
    const literal = LITERAL_AT_END.exec(line.subarray(Math.max(0, line.length - 24)).toString('latin1'));
    this.discardCommand = literal?.[2] === '+';
    if (this.discardCommand) this.discardBytes = Number(literal![1]);
  }

  private resetCommand(): void {
    this.segments = [];
    this.commandText = 0;
    this.commandLiterals = 0;
    this.literalCount = 0;
    this.literalNeeded = undefined;
    this.pendingText = undefined;
  }
}

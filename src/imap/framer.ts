import { LF, LineFramer, stripCr } from '../server/line-framer.js';

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

export type FramerLimitError = 'line_too_long' | 'literal_too_large';

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

const LITERAL_AT_END = /\{(\d{1,20})(\+?)\}$/;
const TAG = /^[\x21-\x7e]+?(?= |$)/;

/** Extracts what looks like a command tag from the start of a line, for error replies. */
export function tagOf(text: Buffer): string | undefined {
  const head = text.subarray(0, 64).toString('latin1');
  const match = TAG.exec(head);
  const tag = match?.[0];
  return tag !== undefined && !/[(){%*"\\+]/.test(tag) ? tag : undefined;
}

/** Incremental IMAP command framer: lines joined by literals, within limits. */
export class ImapFramer extends LineFramer {
  private segments: CommandSegment[] = [];
  private commandText = 0;
  private commandLiterals = 0;
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
          return this.lineTooLong(this.currentTag(this.buffer));
        }
        this.scanFrom = this.buffer.length;
        return null;
      }
      const line = Buffer.from(stripCr(this.buffer.subarray(0, end)));
      this.consume(end + 1);
      const tag = this.currentTag(line);
      if (this.discardCommand) {
        // Still inside a rejected command: skip its remaining lines and literals.
        const literal = LITERAL_AT_END.exec(line.toString('latin1'));
        if (literal?.[2] === '+') this.discardBytes = Number(literal[1]);
        else this.discardCommand = false;
        continue;
      }
      this.commandText += line.length;
      if (this.commandText > this.limits.maxLineLength) {
        this.resetCommand();
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
      if (this.commandLiterals + size > this.limits.maxLiteralSize) {
        this.resetCommand();
        // A synchronizing literal is never sent once refused; a non-synchronizing one is already
        // on its way and has to be skipped without being stored.
        if (!synchronizing) this.discardBytes = size;
        this.discardCommand = !synchronizing;
        return { type: 'error', error: 'literal_too_large', tag, synchronizing };
      }
      this.commandLiterals += size;
      this.pendingText = line;
      this.literalNeeded = size;
      if (synchronizing) return { type: 'continue', size };
    }
  }

  private currentTag(line: Buffer): string | undefined {
    return tagOf(this.segments[0]?.text ?? this.pendingText ?? line);
  }

  private lineTooLong(tag: string | undefined): Frame {
    this.resetCommand();
    this.discardRestOfLine();
    return { type: 'error', error: 'line_too_long', tag, synchronizing: false };
  }

  private resetCommand(): void {
    this.segments = [];
    this.commandText = 0;
    this.commandLiterals = 0;
    this.literalNeeded = undefined;
    this.pendingText = undefined;
  }
}

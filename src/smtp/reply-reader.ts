import { GateError } from '../errors.js';

/** A whole SMTP reply as the backend sent it: its code and its lines without CRLF. */
export interface SmtpWireReply {
  code: number;
  lines: string[];
}

/** Backend output that is not SMTP: the relay cannot tell which command it answers. */
export class SmtpReplySyntaxError extends GateError {
  constructor(message: string) {
    super('backend_protocol_error', message, { temporary: true });
    this.name = 'SmtpReplySyntaxError';
  }
}

const REPLY_LINE = /^(\d{3})([ -]|$)/;

/**
 * Splits the backend's output into whole (multi-line) replies. Pure: bytes in, replies out.
 * Lines end at LF (a CR before it is dropped); a line longer than `maxLine` is an error.
 */
export class SmtpReplyReader {
  private partial = '';
  private lines: string[] = [];

  constructor(private readonly maxLine = 4096) {}

  /** Adds backend bytes and returns the replies they complete. */
  push(chunk: Buffer): SmtpWireReply[] {
    const replies: SmtpWireReply[] = [];
    let text = this.partial + chunk.toString('latin1');
    let end: number;
    while ((end = text.indexOf('\n')) >= 0) {
      const line = text.slice(0, end > 0 && text[end - 1] === '\r' ? end - 1 : end);
      text = text.slice(end + 1);
      const match = REPLY_LINE.exec(line);
      if (!match || (this.lines.length > 0 && !this.lines[0]!.startsWith(match[1]!))) {
        throw new SmtpReplySyntaxError(`malformed backend reply line (${line.length} bytes)`);
      }
      this.lines.push(line);
      if (match[2] !== '-') {
        replies.push({ code: Number(match[1]), lines: this.lines });
        this.lines = [];
      } else if (this.lines.length > 1000) {
        throw new SmtpReplySyntaxError('backend reply has too many lines');
      }
    }
    if (text.length > this.maxLine) throw new SmtpReplySyntaxError('backend reply line too long');
    this.partial = text;
    return replies;
  }
}

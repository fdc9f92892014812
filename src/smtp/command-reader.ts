/**
 * The client side of an SMTP session after login, read the way Postfix reads it, so that sasl-gate
 * can re-write every command and every byte of message content before Postfix sees it. Pure: bytes
 * in, events out; the relay says when message content begins (after the backend's 354).
 */
import { InternalError } from '../errors.js';

/** Postfix's `line_length_limit`: no command line sasl-gate forwards is longer. */
export const COMMAND_LINE_LIMIT = 2048;
/** Largest BDAT chunk size accepted (15 digits: far below what Postfix's off_t parser refuses). */
const MAX_BDAT_DIGITS = 15;

const LF = 0x0a;
const CR = 0x0d;
const NUL = 0x00;
const DOT = 0x2e;
/** SP, HTAB, VT, FF: what separates a verb from its arguments. */
const WHITESPACE = /[ \t\x0b\x0c]+/;
const LEADING_WHITESPACE = /^[ \t\x0b\x0c]+/;
const TRAILING_WHITESPACE = /[ \t\x0b\x0c]+$/;
const CRLF = Buffer.from('\r\n');
/** CRs held back inside a content line are re-emitted in pieces of at most this size. */
const CR_PIECE = 64 * 1024;

/** What the client sent, one step at a time. */
export type SmtpInputEvent =
  /** A command line: the verb upper-cased, its arguments with the surrounding whitespace removed. */
  | { kind: 'command'; verb: string; args: string }
  /** A command line that must not be forwarded. */
  | { kind: 'invalid'; reason: 'too_long' | 'bare_cr' | 'bare_lf' | 'nul' }
  /** `BDAT n [LAST]`, well-formed: exactly `size` bytes of chunk follow. */
  | { kind: 'bdat'; size: number; last: boolean }
  /** A BDAT line whose size cannot be read: where its chunk ends is unknown, nothing after it is read. */
  | { kind: 'bad_bdat' }
  /** Bytes of a BDAT chunk, as sent. */
  | { kind: 'chunk'; bytes: Buffer }
  /** Message content after DATA, re-encoded: every line ends in CRLF, never the end-of-data line. */
  | { kind: 'content'; bytes: Buffer }
  /** The line that is exactly `.`: the message is complete. */
  | { kind: 'end_of_data' };

type Mode =
  | 'command'
  /** DATA was read: nothing more until the relay knows whether the backend said 354. */
  | 'awaiting_data_reply'
  | 'data'
  | 'chunk'
  /** After a malformed BDAT: the framing is lost. */
  | 'stopped';

/**
 * Reads SMTP client input after login. Lines end at LF; the CRs before it are not part of the
 * line (Postfix's `smtp_get` strips them all). A command line is at most
 * {@link COMMAND_LINE_LIMIT} bytes, ends in CRLF and holds no other CR and no NUL; a longer one is
 * skipped, unstored, up to its LF. Message content is streamed: every line is re-sent with one CRLF, a bare LF
 * included, so the backend's end of data is always the one found here.
 */
export class SmtpCommandReader {
  private readonly chunks: Buffer[] = [];
  private offset = 0;
  private bufferedBytes = 0;
  private mode: Mode = 'command';
  /** Inside an over-long command line, discarding up to its LF. */
  private skipping = false;
  private chunkRemaining = 0;
  /** Content: at the start of a line. */
  private lineStart = true;
  /** Content: the line so far is `.` (possibly with CRs after it, counted in `heldCr`). */
  private dotPending = false;
  /** Content: CRs read but not yet known to be inside the line (they might precede its LF). */
  private heldCr = 0;
  private readonly queued: SmtpInputEvent[] = [];

  constructor(private readonly lineLimit: number = COMMAND_LINE_LIMIT) {}

  /** Adds client bytes. */
  push(chunk: Buffer): void {
    if (chunk.length === 0) return;
    this.chunks.push(chunk);
    this.bufferedBytes += chunk.length;
  }

  /** Bytes received and not yet turned into events. */
  get buffered(): number {
    return this.bufferedBytes;
  }

  /** Whether the reader waits for the relay to say what the backend answered to DATA. */
  get awaitingDataReply(): boolean {
    return this.mode === 'awaiting_data_reply';
  }

  /** The backend's reply to DATA: 354 starts message content, anything else means commands follow. */
  dataReply(accepted: boolean): void {
    if (this.mode !== 'awaiting_data_reply') throw new InternalError('no DATA awaits a reply');
    this.mode = accepted ? 'data' : 'command';
    this.lineStart = true;
    this.dotPending = false;
    this.heldCr = 0;
  }

  /** The next event, or null when more input (or the DATA reply) is needed. */
  next(): SmtpInputEvent | null {
    for (;;) {
      const queued = this.queued.shift();
      if (queued) return queued;
      if (this.mode === 'awaiting_data_reply' || this.mode === 'stopped') return null;
      const current = this.chunks[0];
      if (!current) return null;
      let event: SmtpInputEvent | null | 'need_input';
      if (this.mode === 'chunk') event = this.readChunk(current);
      else if (this.mode === 'data') event = this.readContent(current);
      else event = this.readCommand();
      if (event === 'need_input') return null;
      if (event) return event;
    }
  }

  private consume(n: number): void {
    this.offset += n;
    this.bufferedBytes -= n;
    const first = this.chunks[0];
    if (first && this.offset >= first.length) {
      this.chunks.shift();
      this.offset = 0;
    }
  }

  private readChunk(current: Buffer): SmtpInputEvent {
    const n = Math.min(this.chunkRemaining, current.length - this.offset);
    const bytes = current.subarray(this.offset, this.offset + n);
    this.consume(n);
    this.chunkRemaining -= n;
    if (this.chunkRemaining === 0) this.mode = 'command';
    return { kind: 'chunk', bytes };
  }

  /** One command line; null when bytes were skipped; `need_input` when the line is incomplete. */
  private readCommand(): SmtpInputEvent | null | 'need_input' {
    if (this.skipping) {
      const current = this.chunks[0]!;
      const end = current.indexOf(LF, this.offset);
      if (end < 0) {
        this.consume(current.length - this.offset);
        return null;
      }
      this.consume(end + 1 - this.offset);
      this.skipping = false;
      return { kind: 'invalid', reason: 'too_long' };
    }
    // Find the LF across the buffered chunks, looking no further than the limit allows.
    let length = 0;
    let found = -1;
    for (let i = 0; i < this.chunks.length; i++) {
      const chunk = this.chunks[i]!;
      const from = i === 0 ? this.offset : 0;
      const end = chunk.indexOf(LF, from);
      if (end >= 0) {
        found = length + end - from;
        break;
      }
      length += chunk.length - from;
      if (length > this.lineLimit + 1) break;
    }
    if (found < 0) {
      // A line may carry one CR before its LF beyond the limit.
      if (length > this.lineLimit + 1) {
        this.skipping = true;
        this.consume(this.chunks[0]!.length - this.offset);
        return null;
      }
      return 'need_input';
    }
    const line = this.take(found + 1).subarray(0, found);
    const endsInCrLf = line.length > 0 && line[line.length - 1] === CR;
    const content = endsInCrLf ? line.subarray(0, line.length - 1) : line;
    if (content.length > this.lineLimit) return { kind: 'invalid', reason: 'too_long' };
    // RFC 5321 commands end in CRLF; Postfix would take a bare LF too, sasl-gate answers it instead.
    if (!endsInCrLf) return { kind: 'invalid', reason: 'bare_lf' };
    if (content.includes(NUL)) return { kind: 'invalid', reason: 'nul' };
    if (content.includes(CR)) return { kind: 'invalid', reason: 'bare_cr' };
    return this.command(content.toString('latin1'));
  }

  /** Takes `n` buffered bytes as one buffer. */
  private take(n: number): Buffer {
    const first = this.chunks[0]!;
    if (first.length - this.offset >= n) {
      const bytes = first.subarray(this.offset, this.offset + n);
      this.consume(n);
      return bytes;
    }
    const parts: Buffer[] = [];
    let left = n;
    while (left > 0) {
      const chunk = this.chunks[0]!;
      const k = Math.min(left, chunk.length - this.offset);
      parts.push(chunk.subarray(this.offset, this.offset + k));
      this.consume(k);
      left -= k;
    }
    return Buffer.concat(parts);
  }

  private command(line: string): SmtpInputEvent {
    const trimmed = line.replace(LEADING_WHITESPACE, '').replace(TRAILING_WHITESPACE, '');
    const split = WHITESPACE.exec(trimmed);
    const verb = (split ? trimmed.slice(0, split.index) : trimmed).toUpperCase();
    const args = split ? trimmed.slice(split.index + split[0].length) : '';
    if (verb === 'DATA') this.mode = 'awaiting_data_reply';
    if (verb !== 'BDAT') return { kind: 'command', verb, args };
    const words = args.split(WHITESPACE).filter((w) => w.length > 0);
    const size = words[0];
    const last = words[1];
    const sizeOk = size !== undefined && /^\d+$/.test(size) && size.replace(/^0+(?=\d)/, '').length <= MAX_BDAT_DIGITS;
    if (!sizeOk || words.length > 2 || (last !== undefined && last.toUpperCase() !== 'LAST')) {
      this.mode = 'stopped';
      return { kind: 'bad_bdat' };
    }
    const n = Number(size);
    if (n > 0) {
      this.mode = 'chunk';
      this.chunkRemaining = n;
    }
    return { kind: 'bdat', size: n, last: last !== undefined };
  }

  /**
   * Message content from `current`: as much as can be re-encoded now, as one event. Runs of
   * lines already in canonical form (`line` CRLF) are passed as one slice of the input.
   */
  private readContent(current: Buffer): SmtpInputEvent | null {
    const out: Buffer[] = [];
    let pos = this.offset;
    const end = current.length;
    /** Start of the canonical run being collected, or -1. */
    let run = -1;
    const flushRun = (upTo: number) => {
      if (run >= 0 && upTo > run) out.push(current.subarray(run, upTo));
      run = -1;
    };
    const emitHeldCr = () => {
      while (this.heldCr > 0) {
        const n = Math.min(this.heldCr, CR_PIECE);
        out.push(Buffer.alloc(n, CR));
        this.heldCr -= n;
      }
    };
    while (pos < end) {
      if (this.dotPending) {
        const byte = current[pos]!;
        if (byte === CR) {
          this.heldCr += 1;
          pos += 1;
          continue;
        }
        if (byte === LF) {
          // `.` alone on its line (CRs before the LF are not part of a line): end of data.
          flushRun(pos);
          this.consume(pos + 1 - this.offset);
          this.dotPending = false;
          this.heldCr = 0;
          this.lineStart = true;
          this.mode = 'command';
          if (out.length > 0) {
            this.queued.push({ kind: 'end_of_data' });
            return { kind: 'content', bytes: out.length === 1 ? out[0]! : Buffer.concat(out) };
          }
          return { kind: 'end_of_data' };
        }
        // A line starting with a dot that is not the end: kept as sent (dot-stuffing included).
        out.push(Buffer.from('.'));
        emitHeldCr();
        this.dotPending = false;
        this.lineStart = false;
        continue;
      }
      if (this.lineStart && current[pos] === DOT) {
        flushRun(pos);
        this.dotPending = true;
        this.lineStart = false;
        pos += 1;
        continue;
      }
      const lf = current.indexOf(LF, pos);
      if (lf < 0) {
        // A partial line: pass what is known to be inside it, hold back trailing CRs.
        flushRun(pos);
        let stop = end;
        while (stop > pos && current[stop - 1] === CR) stop -= 1;
        if (stop > pos) {
          emitHeldCr();
          out.push(current.subarray(pos, stop));
        }
        this.heldCr += end - stop;
        this.lineStart = false;
        pos = end;
        break;
      }
      let stop = lf;
      while (stop > pos && current[stop - 1] === CR) stop -= 1;
      const canonical = this.heldCr === 0 && stop === lf - 1;
      if (canonical) {
        if (run < 0) run = pos;
      } else {
        flushRun(pos);
        if (stop > pos) {
          emitHeldCr();
          out.push(current.subarray(pos, stop));
        }
        this.heldCr = 0;
        out.push(CRLF);
      }
      this.lineStart = true;
      pos = lf + 1;
    }
    flushRun(pos);
    this.consume(pos - this.offset);
    if (out.length === 0) return null;
    return { kind: 'content', bytes: out.length === 1 ? out[0]! : Buffer.concat(out) };
  }
}

import { LineFramer, type LineFrame } from '../net/line-framer.js';

/**
 * POP3 framing (RFC 1939): one command per line, a keyword and the rest of the line as its
 * argument. Pure: bytes are pushed in, commands pulled out; whatever has not been pulled when the
 * session hands over to the relay goes to the backend untouched.
 */

/** One POP3 command: its keyword in upper case and the bytes after the first space. */
export interface Pop3Command {
  name: string;
  /** Everything after `KEYWORD `, unparsed (PASS takes it whole, spaces included). */
  argument: Buffer;
}

export type Pop3Frame = { type: 'command'; command: Pop3Command } | { type: 'error'; error: 'line_too_long' };

/** Keywords are short printable words; anything else is not a command and gets `-ERR`. */
const KEYWORD = /^[A-Za-z0-9-]{1,32}$/;

/** Splits one command line into its keyword and argument; a line without a readable keyword gets an empty name. */
export function parsePop3Command(line: Buffer): Pop3Command {
  const space = line.indexOf(0x20);
  const keyword = (space < 0 ? line : line.subarray(0, space)).toString('latin1');
  const argument = space < 0 ? Buffer.alloc(0) : Buffer.from(line.subarray(space + 1));
  return { name: KEYWORD.test(keyword) ? keyword.toUpperCase() : '', argument };
}

/** Incremental POP3 command framer: bounded lines, each a command. */
export class Pop3Framer extends LineFramer {
  constructor(limits: { maxLineLength: number }) {
    super(limits.maxLineLength);
  }

  /** The next command, a line-too-long error (the line is skipped), or null when more input is needed. */
  readCommand(): Pop3Frame | null {
    const frame: LineFrame | null = this.readLine();
    if (frame === null) return null;
    if (frame.type === 'error') return frame;
    return { type: 'command', command: parsePop3Command(frame.line) };
  }
}

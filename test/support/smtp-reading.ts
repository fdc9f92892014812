/**
 * The reference reading of a post-login SMTP session: what RFC 5321 (and RFC 3030 for BDAT) says
 * the bytes a client sent mean, given the replies it got back in order (RFC 2920). Commands are
 * CRLF-terminated lines; message content ends only at CRLF.CRLF and is dot-unstuffed; BDAT chunks are
 * counted exactly. A line with a bare CR, a bare LF or a NUL is no command at all: it gets one reply
 * and changes nothing. Pure: bytes and replies in, the messages the client may rightly believe were
 * accepted out.
 */

/** One complete server reply as the client saw it. */
export interface SeenReply {
  code: number;
  /** Every line of the reply, joined with LF. */
  text: string;
}

/** How a command line with leading SP/HTAB is read: as its verb (Postfix's way) or as no command. */
export type LeadingSpace = 'verb' | 'refused';

/** A message the client sent and saw accepted: the reply that accepted it names its queue id. */
export interface AcceptedMessage {
  queueId: string;
  /** The content as the client meant it (unstuffed for DATA, chunks concatenated for BDAT). */
  content: Buffer;
  via: 'DATA' | 'BDAT';
  /** Index of the accepting reply in the session's replies. */
  reply: number;
}

/** A reply that says "queued" but answers something that was not the end of a message. */
export interface MisplacedReply {
  reply: number;
  text: string;
  /** What the client's bytes at that point were, per the reading. */
  answers: string;
}

/** The outcome of reading one session. */
export interface SessionReading {
  accepted: AcceptedMessage[];
  misplaced: MisplacedReply[];
  /** Replies beyond what the reading accounts for (a server that answered more than was asked). */
  extraReplies: number;
}

const CRLF = Buffer.from('\r\n');
const END_OF_DATA = Buffer.from('\r\n.\r\n');
/** RFC 5321 4.5.3.1.4: 512 octets including CRLF; longer lines are refused by any sound reader. */
const MAX_LINE = 512;

/** The queue id a `250 ... queued as ID` reply names, if any. */
export function queuedAs(text: string): string | undefined {
  return /queued as ([0-9A-Za-z]+)\s*$/.exec(text)?.[1];
}

/** Splits a command line into its verb (upper case) and arguments, or undefined when it is no command. */
export function parseCommand(line: Buffer, leading: LeadingSpace): { verb: string; args: string[] } | undefined {
  if (line.length > MAX_LINE || line.includes(0x0d) || line.includes(0x0a) || line.includes(0x00)) return undefined;
  let text = line.toString('latin1');
  if (/^[ \t]/.test(text)) {
    if (leading === 'refused') return undefined;
    text = text.replace(/^[ \t]+/, '');
  }
  const [verb = '', ...args] = text.split(/[ \t]+/).filter((part, i) => i === 0 || part.length > 0);
  if (!/^[A-Za-z]+$/.test(verb)) return { verb: '', args };
  return { verb: verb.toUpperCase(), args };
}

/** The size of a well-formed `BDAT n [LAST]`, or undefined. */
function bdatArguments(args: string[]): { size: number; last: boolean } | undefined {
  if (args.length < 1 || args.length > 2 || !/^\d{1,9}$/.test(args[0]!)) return undefined;
  if (args.length === 2 && args[1]!.toUpperCase() !== 'LAST') return undefined;
  return { size: Number(args[0]), last: args.length === 2 };
}

/** DATA content up to (not including) the CRLF.CRLF that ends it, dot-unstuffed. */
function unstuff(content: Buffer): Buffer {
  const lines: Buffer[] = [];
  let start = 0;
  for (;;) {
    const end = content.indexOf(CRLF, start);
    const line = content.subarray(start, end < 0 ? content.length : end);
    lines.push(line[0] === 0x2e ? line.subarray(1) : line);
    if (end < 0) break;
    start = end + 2;
  }
  return Buffer.concat(lines.flatMap((l, i) => (i === 0 ? [l] : [CRLF, l])));
}

/** Reads what the client sent after login against the replies it saw after login. */
export function readSession(sent: Buffer, replies: SeenReply[], leading: LeadingSpace): SessionReading {
  const accepted: AcceptedMessage[] = [];
  const misplaced: MisplacedReply[] = [];
  let pos = 0;
  let r = 0;
  let chunks: Buffer[] = [];
  /** Takes the next reply; a "queued" one that does not end a message is misplaced. */
  const answer = (what: string, endsMessage: boolean): SeenReply | undefined => {
    const reply = replies[r];
    if (reply === undefined) return undefined;
    if (!endsMessage && queuedAs(reply.text) !== undefined) misplaced.push({ reply: r, text: reply.text, answers: what });
    r += 1;
    return reply;
  };
  while (r < replies.length) {
    const eol = sent.indexOf(CRLF, pos);
    if (eol < 0) break;
    const line = sent.subarray(pos, eol);
    const shown = JSON.stringify(line.toString('latin1'));
    pos = eol + 2;
    const command = parseCommand(line, leading);
    if (command === undefined) {
      answer(`the refused line ${shown}`, false);
      continue;
    }
    const { verb, args } = command;
    if (verb === 'BDAT' && bdatArguments(args) !== undefined) {
      const { size, last } = bdatArguments(args)!;
      if (sent.length - pos < size) break;
      const chunk = sent.subarray(pos, pos + size);
      pos += size;
      const reply = answer(`${shown} and its ${size}-byte chunk`, last);
      if (reply === undefined) break;
      if (reply.code === 250) chunks.push(chunk);
      else chunks = [];
      if (last) {
        const id = queuedAs(reply.text);
        if (reply.code === 250 && id !== undefined) {
          accepted.push({ queueId: id, content: Buffer.concat(chunks), via: 'BDAT', reply: r - 1 });
        }
        chunks = [];
      }
      continue;
    }
    if (['MAIL', 'RSET', 'EHLO', 'HELO'].includes(verb)) chunks = [];
    const reply = answer(shown, false);
    if (reply === undefined) break;
    if (verb === 'QUIT') break;
    if (verb === 'DATA' && reply.code === 354) {
      // Content that is empty ends at once with its first line ".".
      const end = sent.subarray(pos, pos + 3).equals(Buffer.from('.\r\n')) ? pos - 2 : sent.indexOf(END_OF_DATA, pos);
      if (end < 0) break;
      const content = end < pos ? Buffer.alloc(0) : unstuff(sent.subarray(pos, end + 2));
      pos = end + END_OF_DATA.length;
      const done = answer('the end of DATA content', true);
      if (done === undefined) break;
      const id = queuedAs(done.text);
      if (done.code === 250 && id !== undefined) accepted.push({ queueId: id, content, via: 'DATA', reply: r - 1 });
    }
  }
  return { accepted, misplaced, extraReplies: replies.length - r };
}

/**
 * Message content in a form both sides can be compared in: Postfix stores lines, not line ends, so
 * line ends become LF, CRs are left out (whether a lone CR survives is Postfix's business, not a
 * question of who sent what), and a last line end is added where the message had none.
 */
export function comparableContent(content: Buffer | string): string {
  const text = (typeof content === 'string' ? content : content.toString('latin1')).replace(/\r/g, '');
  return text.endsWith('\n') || text.length === 0 ? text : `${text}\n`;
}

/**
 * The content of a queued message as `postcat -bh` prints it, without the `Received:` header Postfix
 * put on top (the first header and its continuation lines).
 */
export function queuedContent(postcat: string): string {
  const lines = postcat.split('\n');
  if (!lines[0]?.startsWith('Received: ')) return postcat;
  let i = 1;
  while (i < lines.length && /^[ \t]/.test(lines[i]!)) i += 1;
  return lines.slice(i).join('\n');
}

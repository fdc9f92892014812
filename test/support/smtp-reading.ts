/**
 * Reference readings of a post-login SMTP session: what the bytes a client sent mean, given the
 * replies it got back in order (RFC 2920), read consistently one way from start to end. Two
 * framings are sound for a relay that re-sends what it read canonically:
 *  - `rfc`: RFC 5321 to the letter. Commands are CRLF-terminated lines, the verb split off on SP or
 *    HTAB; message content ends only at CRLF.CRLF; a line with a bare CR, a bare LF or a NUL is no
 *    command at all (one reply, nothing changes);
 *  - `postfix`: Postfix's own reading. Lines end at LF and the CRs before it are dropped (for a
 *    command line, all of them as Postfix does, or only the last, the rest making the line invalid,
 *    or, as RFC 5321 wants for commands, exactly one, a command line ended by a bare LF being none);
 *    SP, HTAB, VT and FF separate words; a line that is `.` ends content; a CR inside a line or a NUL
 *    makes a command line invalid.
 * Either way BDAT chunks are counted exactly and content is dot-unstuffed. Pure: bytes and replies
 * in, the messages the client may rightly believe were accepted out.
 */

/** One complete server reply as the client saw it. */
export interface SeenReply {
  code: number;
  /** Every line of the reply, joined with LF. */
  text: string;
}

/** How a whole session is read: its framing, and whether a command line may start with whitespace. */
export type ReadingRules =
  | { framing: 'rfc'; leadingSpace: 'verb' | 'refused' }
  | { framing: 'postfix'; commandCrs: 'all' | 'last' | 'crlf' };

/** Every reading a sound relay may follow. */
export const READINGS: ReadingRules[] = [
  { framing: 'rfc', leadingSpace: 'verb' },
  { framing: 'rfc', leadingSpace: 'refused' },
  { framing: 'postfix', commandCrs: 'all' },
  { framing: 'postfix', commandCrs: 'last' },
  { framing: 'postfix', commandCrs: 'crlf' },
];

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
  /**
   * Messages sent whole whose answer the client never saw (it stopped waiting): the server may have
   * queued them, and the client cannot know.
   */
  unanswered: Buffer[];
}

const CRLF = Buffer.from('\r\n');
const END_OF_DATA = Buffer.from('\r\n.\r\n');
/** Generated sessions stay far below every line limit (RFC 5321's 512, Postfix's 2048). */
const MAX_LINE = 512;

/** The queue id a `250 ... queued as ID` reply names, if any. */
export function queuedAs(text: string): string | undefined {
  return /queued as ([0-9A-Za-z]+)\s*$/.exec(text)?.[1];
}

/** Splits a command line into its verb (upper case) and arguments, or undefined when it is no command. */
export function parseCommand(line: Buffer, rules: ReadingRules): { verb: string; args: string[] } | undefined {
  if (line.length > MAX_LINE || line.includes(0x0d) || line.includes(0x0a) || line.includes(0x00)) return undefined;
  let text = line.toString('latin1');
  const space = rules.framing === 'rfc' ? /[ \t]+/ : /[ \t\x0b\x0c]+/;
  const leading = new RegExp(`^${space.source}`);
  if (leading.test(text)) {
    if (rules.framing === 'rfc' && rules.leadingSpace === 'refused') return undefined;
    text = text.replace(leading, '');
  }
  const [verb = '', ...args] = text.split(space).filter((part, i) => i === 0 || part.length > 0);
  if (!/^[A-Za-z]+$/.test(verb)) return { verb: '', args };
  return { verb: verb.toUpperCase(), args };
}

/**
 * The next line from `pos` without its line end (for Postfix's framing, without the CRs before its
 * LF: all of them, or for `crs: 'last'` only one), and where the line after it starts; undefined
 * when the line is incomplete.
 */
function nextLine(sent: Buffer, pos: number, rules: ReadingRules, crs: 'all' | 'last' | 'crlf' = 'all'): { line: Buffer; next: number } | undefined {
  if (rules.framing === 'rfc') {
    const eol = sent.indexOf(CRLF, pos);
    return eol < 0 ? undefined : { line: sent.subarray(pos, eol), next: eol + 2 };
  }
  const lf = sent.indexOf(0x0a, pos);
  if (lf < 0) return undefined;
  if (crs === 'crlf') {
    // Without its CR the line keeps its LF, which makes it no command at all.
    const crlf = lf > pos && sent[lf - 1] === 0x0d;
    return { line: sent.subarray(pos, crlf ? lf - 1 : lf + 1), next: lf + 1 };
  }
  let end = lf;
  while (end > pos && sent[end - 1] === 0x0d) {
    end -= 1;
    if (crs === 'last') break;
  }
  return { line: sent.subarray(pos, end), next: lf + 1 };
}

/** DATA content from `pos` up to its end of data: the unstuffed content, and where commands resume. */
function dataContent(sent: Buffer, pos: number, rules: ReadingRules): { content: Buffer; next: number } | undefined {
  if (rules.framing === 'rfc') {
    // Content that is empty ends at once with its first line ".".
    if (sent.subarray(pos, pos + 3).equals(Buffer.from('.\r\n'))) return { content: Buffer.alloc(0), next: pos + 3 };
    const end = sent.indexOf(END_OF_DATA, pos);
    return end < 0 ? undefined : { content: unstuff(sent.subarray(pos, end + 2)), next: end + END_OF_DATA.length };
  }
  const lines: Buffer[] = [];
  for (let at = pos; ; ) {
    const read = nextLine(sent, at, rules);
    if (read === undefined) return undefined;
    at = read.next;
    if (read.line.length === 1 && read.line[0] === 0x2e) {
      return { content: Buffer.concat(lines.flatMap((l) => [l[0] === 0x2e ? l.subarray(1) : l, CRLF])), next: at };
    }
    lines.push(read.line);
  }
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
export function readSession(sent: Buffer, replies: SeenReply[], rules: ReadingRules): SessionReading {
  const accepted: AcceptedMessage[] = [];
  const misplaced: MisplacedReply[] = [];
  const unanswered: Buffer[] = [];
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
  for (;;) {
    const read = nextLine(sent, pos, rules, rules.framing === 'postfix' ? rules.commandCrs : 'all');
    if (read === undefined) break;
    const line = read.line;
    const shown = JSON.stringify(line.toString('latin1'));
    pos = read.next;
    const command = parseCommand(line, rules);
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
      if (reply === undefined) {
        if (last) unanswered.push(Buffer.concat([...chunks, chunk]));
        break;
      }
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
    const reply = answer(shown, false);
    if (reply === undefined) {
      // A DATA whose 354 never arrived may still have been followed by content the server queued.
      const data = verb === 'DATA' ? dataContent(sent, pos, rules) : undefined;
      if (data !== undefined) unanswered.push(data.content);
      break;
    }
    // A transaction ends where the server agreed to start anew.
    if (['MAIL', 'RSET', 'EHLO', 'HELO'].includes(verb) && reply.code === 250) chunks = [];
    if (verb === 'QUIT') break;
    if (verb === 'DATA' && reply.code === 354) {
      const data = dataContent(sent, pos, rules);
      if (data === undefined) break;
      const { content } = data;
      pos = data.next;
      const done = answer('the end of DATA content', true);
      if (done === undefined) {
        unanswered.push(content);
        break;
      }
      const id = queuedAs(done.text);
      if (done.code === 250 && id !== undefined) accepted.push({ queueId: id, content, via: 'DATA', reply: r - 1 });
    }
  }
  return { accepted, misplaced, extraReplies: replies.length - r, unanswered };
}

/**
 * Message content in a form both sides can be compared in. Postfix stores lines, not line ends, and
 * has its own ways with a stray CR or a NUL (it may keep it, drop it or turn it into a space), which say
 * nothing about who sent what: so line ends become LF, a CR or NUL counts as a space, trailing spaces are dropped,
 * and a last line end is added where the message had none.
 */
export function comparableContent(content: Buffer | string): string {
  const text = (typeof content === 'string' ? content : content.toString('latin1')).replace(/\r\n/g, '\n').replace(/[\r\0]/g, ' ');
  const lines = text.split('\n');
  if (text.endsWith('\n') || text.length === 0) lines.pop();
  return lines.map((line) => `${line.replace(/[ \t]+$/, '')}\n`).join('');
}

/**
 * Whether queued content (comparable form) is the sent content as Postfix's cleanup(8) stores it:
 * the same lines, give or take the headers it adds to a message that lacks them (`Message-Id`,
 * `Date`, `From`, at the end of the header block) and the empty line it puts between the headers
 * and a body that did not start with one.
 */
export function sameAsQueued(sent: string, queued: string, queueId: string): boolean {
  const sentLines = sent.split('\n');
  let headers = 0;
  while (headers < sentLines.length - 1 && /^([!-9;-~]+:|[ \t])/.test(sentLines[headers]!)) headers += 1;
  const expected = [...sentLines];
  if (expected[headers] !== '') expected.splice(headers, 0, '');
  const own = new Set(sentLines.slice(0, headers));
  const added = [new RegExp(`^Message-Id: <\\d{14}\\.${queueId}@`), /^Date: .* \(UTC\)$/, /^From: \S+@\S+$/];
  const queuedLines = queued.split('\n');
  const blank = queuedLines.indexOf('');
  const headerEnd = blank < 0 ? queuedLines.length : blank;
  const stored = queuedLines.filter((line, i) => i >= headerEnd || own.has(line) || !added.some((re) => re.test(line)));
  return stored.join('\n') === sent || stored.join('\n') === expected.join('\n');
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

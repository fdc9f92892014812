/**
 * Generated post-login SMTP sessions for the differential test: random mixes of commands with
 * whitespace, case and line-end variants, DATA and BDAT transactions (right and wrong chunk sizes,
 * dot lines, fake commands inside content), and the ways of hiding a command from one reader but not
 * another. A session is plain latin1 text plus the byte offsets where it is cut into writes.
 */
import fc from 'fast-check';
import { secret } from './evidence.js';

const ALICE = 'alice@example.test';
const BOB = 'bob@example.test';

/** One generated session: what is sent after login, and how it is cut into separate writes. */
export interface GeneratedSession {
  /** The pieces of the session, in order (each a command, a transaction or an attempt to smuggle one). */
  steps: string[];
  /** Byte offsets (modulo the length) where the stream is cut into separate writes. */
  cuts: number[];
}

/**
 * The bytes a session sends after login: its steps, then an end of data (for a session left inside
 * message content; otherwise an empty line and a lone dot, which Postfix answers by hanging up) and QUIT.
 */
export function sessionBytes(session: GeneratedSession): Buffer {
  return Buffer.from(`${session.steps.join('')}\r\n.\r\nQUIT\r\n`, 'latin1');
}

/** The session's bytes cut into the writes it is sent in. */
export function sessionWrites(session: GeneratedSession): Buffer[] {
  const bytes = sessionBytes(session);
  const offsets = [...new Set(session.cuts.map((c) => c % bytes.length))].filter((c) => c > 0).sort((a, b) => a - b);
  const writes: Buffer[] = [];
  let start = 0;
  for (const offset of [...offsets, bytes.length]) {
    writes.push(bytes.subarray(start, offset));
    start = offset;
  }
  return writes;
}

/** A wrong password for bob, so AUTH as him can never succeed; kept out of logs all the same. */
const BOB_PLAIN = secret(Buffer.from(`\0${BOB}\0not-bobs-Pa55word`).toString('base64'), 'PLAIN message');

const separator = fc.constantFrom(' ', ' ', ' ', ' ', '\t', '  ', ' \t', '\x0b', '\x0c');
const leading = fc.constantFrom('', '', '', '', '', '', ' ', '\t', '\x0b', '\x0c');
const lineEnd = fc.constantFrom('\r\n', '\r\n', '\r\n', '\r\n', '\r\n', '\r\n', '\r\n', '\n', '\r', '\r\r\n', '\0\r\n', '\n\r\n');

function cased(verb: string): fc.Arbitrary<string> {
  const mixed = [...verb].map((ch, i) => (i % 2 === 0 ? ch.toLowerCase() : ch.toUpperCase())).join('');
  return fc.constantFrom(verb, verb, verb, verb.toLowerCase(), mixed);
}

/** A command line with a verb, optional arguments, and whitespace, case and line-end variants. */
function command(verb: string, args?: string, end: fc.Arbitrary<string> = lineEnd): fc.Arbitrary<string> {
  return fc
    .tuple(leading, cased(verb), separator, end)
    .map(([lead, v, sep, eol]) => `${lead}${v}${args === undefined ? '' : `${sep}${args}`}${eol}`);
}

/** A well-formed command line (only case varies): the parts of a transaction meant to work. */
function plainCommand(verb: string, args?: string): fc.Arbitrary<string> {
  return cased(verb).map((v) => `${v}${args === undefined ? '' : ` ${args}`}\r\n`);
}

const XCLIENT_BOB = `LOGIN=${BOB}`;

const anyCommand: fc.Arbitrary<string> = fc.oneof(
  command('EHLO', 'client.example'),
  command('HELO', 'client.example'),
  command('MAIL', `FROM:<${ALICE}>`),
  command('MAIL', `FROM:<${BOB}>`),
  command('RCPT', `TO:<${BOB}>`),
  command('RCPT', `TO:<${ALICE}>`),
  command('RSET'),
  command('NOOP'),
  command('VRFY', ALICE),
  command('HELP'),
  command('XCLIENT', XCLIENT_BOB),
  command('XCLIENT', `ADDR=192.0.2.7 ${XCLIENT_BOB}`),
  command('XFORWARD', 'ADDR=192.0.2.7'),
  command('AUTH', `PLAIN ${BOB_PLAIN}`),
  command('STARTTLS'),
  command('XYZZY', 'plugh'),
  command('DATA'),
  fc.tuple(fc.nat(40), fc.boolean()).chain(([n, last]) => command('BDAT', `${n}${last ? ' LAST' : ''}`)),
);

/** The header block every generated message starts with: nothing Postfix would add or rewrite. */
const headers = fc.nat(99_999).map((n) => {
  return `Message-ID: <m${n}@diff.example>\r\nFrom: ${ALICE}\r\nTo: ${BOB}\r\nDate: Thu, 3 Dec 2026 08:00:00 +0000\r\nSubject: differential\r\n\r\n`;
});

const textLine = fc.string({ unit: fc.constantFrom(...'abc xyz.:<>=@-019'.split('')), maxLength: 20 });
const bodyLine = fc.oneof(
  { weight: 4, arbitrary: textLine },
  { weight: 3, arbitrary: fc.constantFrom('.', '..', '.\r', '..x', '. ', '', ' .') },
  {
    weight: 3,
    arbitrary: fc.constantFrom(
      'DATA',
      'DATA\t',
      'BDAT 5',
      'BDAT 12 LAST',
      ` BDAT 3`,
      `XCLIENT ${XCLIENT_BOB}`,
      `XCLIENT\t${XCLIENT_BOB}`,
      `MAIL FROM:<${BOB}>`,
      'RSET',
      'QUIT',
      '\0',
    ),
  },
);
const bodySeparator = fc.constantFrom('\r\n', '\r\n', '\r\n', '\r\n', '\n', '\r');
const body = fc
  .array(fc.tuple(bodyLine, bodySeparator), { maxLength: 6 })
  .map((lines) => lines.map(([line, sep]) => `${line}${sep}`).join(''));
const terminator = fc.constantFrom('\r\n.\r\n', '\r\n.\r\n', '\r\n.\r\n', '\r\n.\r\n', '\n.\n', '\r\n.\n', '\n.\r\n', '\r\n.\r\r\n');
const dataVerb = fc.constantFrom('DATA\r\n', 'DATA\r\n', 'DATA\r\n', 'data\r\n', 'DATA\t\r\n', ' DATA\r\n', 'DATA \r\n', 'DATA\x0b\r\n');

/** MAIL as alice and RCPT to bob, as a client would send them. */
const envelope = fc.tuple(plainCommand('MAIL', `FROM:<${ALICE}>`), plainCommand('RCPT', `TO:<${BOB}>`)).map(([m, r]) => m + r);

const dataTransaction = fc
  .tuple(envelope, dataVerb, headers, body, terminator)
  .map(([env, verb, head, text, end]) => `${env}${verb}${head}${text}${end}`);

const bdatTransaction = fc
  .tuple(envelope, headers, body, fc.array(fc.nat(200), { maxLength: 2 }), fc.array(fc.integer({ min: -3, max: 3 }), { maxLength: 3 }), leading)
  .map(([env, head, text, cuts, deltas, lead]) => {
    const content = `${head}${text}`;
    const points = [...new Set(cuts.map((c) => c % content.length))].sort((a, b) => a - b);
    const chunks: string[] = [];
    let start = 0;
    for (const p of [...points, content.length]) {
      chunks.push(content.slice(start, p));
      start = p;
    }
    return (
      env +
      chunks
        .map((chunk, i) => {
          const size = Math.max(0, chunk.length + (deltas[i] ?? 0));
          return `${i === 0 ? lead : ''}BDAT ${size}${i === chunks.length - 1 ? ' LAST' : ''}\r\n${chunk}`;
        })
        .join('')
    );
  });

/** Commands that would make Postfix take mail from bob, if any of them reached it as a command. */
const impersonation = fc
  .tuple(separator, fc.boolean(), headers)
  .map(
    ([sep, ehlo, head]) =>
      `XCLIENT${sep}${XCLIENT_BOB}\r\n${ehlo ? 'EHLO evil.example\r\n' : ''}MAIL FROM:<${BOB}>\r\nRCPT TO:<${ALICE}>\r\nDATA\r\n${head}sent as bob\r\n.\r\n`,
  );

/** The known ways of hiding those commands from a reader that reads the stream differently from Postfix. */
const smuggle = fc.oneof(
  // Straight, pipelined, with whitespace variants.
  impersonation,
  // Message content ended by a bare LF (or a dot line with a stray CR).
  fc
    .tuple(envelope, headers, fc.constantFrom('\n.\n', '\r\n.\n', '\n.\r\n', '\r\n.\r\r\n', '\r\n.\r'), impersonation)
    .map(([env, head, end, evil]) => `${env}DATA\r\n${head}hello${end}${evil}\r\n.\r\n`),
  // DATA that one reader takes for DATA and the other not, then a fake BDAT line hiding the end of data.
  fc
    .tuple(envelope, dataVerb, headers, fc.constantFrom('.\r\n', '\n.\n', '.\n'), impersonation)
    .map(([env, verb, head, end, evil]) => {
      const hidden = `${end}${evil}`;
      return `${env}${verb}${head}BDAT ${Buffer.byteLength(hidden, 'latin1')}\r\n${hidden}\r\n.\r\n`;
    }),
  // A BDAT that one reader takes for BDAT and the other not, whose chunk is a fake BDAT line.
  fc.tuple(envelope, leading, cased('BDAT'), impersonation).map(([env, lead, verb, evil]) => {
    const fake = `BDAT ${Buffer.byteLength(evil, 'latin1')}\r\n`;
    return `${env}${lead}${verb} ${Buffer.byteLength(fake, 'latin1')}\r\n${fake}${evil}`;
  }),
);

/** A step of a session: mostly ordinary, sometimes hostile. */
const step: fc.Arbitrary<string> = fc.oneof(
  { weight: 5, arbitrary: anyCommand },
  { weight: 3, arbitrary: dataTransaction },
  { weight: 2, arbitrary: bdatTransaction },
  { weight: 2, arbitrary: smuggle },
);

/** A whole session after login: one to six steps, cut into writes at up to six places. */
export const generatedSession: fc.Arbitrary<GeneratedSession> = fc.record({
  steps: fc.array(step, { minLength: 1, maxLength: 6 }),
  cuts: fc.array(fc.nat(4000), { maxLength: 6 }),
});

/** Well-formed sessions only (CRLF lines, no whitespace tricks, right chunk sizes): to check the oracle against Postfix itself. */
export const wellFormedSession: fc.Arbitrary<GeneratedSession> = fc.record({
  steps: fc.array(
    fc.oneof(
      plainCommand('NOOP'),
      plainCommand('RSET'),
      plainCommand('HELP'),
      plainCommand('VRFY', ALICE),
      plainCommand('MAIL', `FROM:<${BOB}>`),
      fc
        .tuple(envelope, headers, fc.array(fc.tuple(textLine, fc.constantFrom('..', '..x', '.. ', 'DATA', `XCLIENT ${XCLIENT_BOB}`)), { maxLength: 4 }))
        .map(([env, head, lines]) => `${env}DATA\r\n${head}${lines.map(([a, b]) => `${a}\r\n${b}\r\n`).join('')}.\r\n`),
      fc.tuple(envelope, headers, textLine).map(([env, head, text]) => {
        const content = `${head}${text}\r\n`;
        return `${env}BDAT ${Buffer.byteLength(content, 'latin1')} LAST\r\n${content}`;
      }),
    ),
    { minLength: 1, maxLength: 5 },
  ),
  cuts: fc.array(fc.nat(4000), { maxLength: 6 }),
});

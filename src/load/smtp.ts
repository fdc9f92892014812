/**
 * A minimal SMTP submission client for the load harness: greeting, EHLO, STARTTLS, AUTH with an
 * initial response, MAIL / RCPT / DATA and QUIT.
 */
import { LoadError, quote } from './errors.js';
import { answerToChallenge, initialResponse, MECH_NAMES, type Credential, type Mech } from './sasl.js';
import type { TlsSettings, Wire } from './wire.js';

export interface SmtpReply {
  code: number;
  /** The text of each line, without code and separator. */
  lines: string[];
}

/** Lines of one reply before the harness calls it a runaway server. */
const MAX_REPLY_LINES = 1000;
/** Challenges in one AUTH exchange. */
const MAX_SASL_ROUNDS = 4;

function shown(reply: SmtpReply): string {
  return quote(`${reply.code} ${reply.lines.at(-1) ?? ''}`);
}

export class SmtpClient {
  /** EHLO keywords, upper-cased, with their parameters. */
  extensions = new Map<string, string>();

  constructor(readonly wire: Wire) {}

  /** Reads one (possibly multi-line) reply. */
  async reply(what: string): Promise<SmtpReply> {
    const lines: string[] = [];
    for (let n = 0; n < MAX_REPLY_LINES; n += 1) {
      const line = await this.wire.readLine(what);
      const match = /^(\d{3})([ -]|$)(.*)$/.exec(line);
      if (!match) throw new LoadError('protocol', `${what}: not an SMTP reply: ${quote(line)}`);
      lines.push(match[3]!);
      if (match[2] !== '-') return { code: Number(match[1]), lines };
    }
    throw new LoadError('protocol', `${what}: a reply of more than ${MAX_REPLY_LINES} lines`);
  }

  /** The greeting: `220` goes on, anything else is a refusal. */
  async greeting(): Promise<void> {
    const reply = await this.reply('the greeting');
    if (reply.code === 220) return;
    throw new LoadError(reply.code >= 400 ? 'refused' : 'protocol', `greeting: ${shown(reply)}`);
  }

  async ehlo(name: string): Promise<void> {
    this.wire.write(`EHLO ${name}\r\n`);
    const reply = await this.reply('the EHLO reply');
    if (reply.code !== 250) throw new LoadError('command_failed', `EHLO: ${shown(reply)}`);
    this.extensions.clear();
    for (const line of reply.lines.slice(1)) {
      const [keyword, ...params] = line.trim().split(/\s+/);
      if (keyword) this.extensions.set(keyword.toUpperCase(), params.join(' '));
    }
  }

  /** STARTTLS and the handshake; EHLO must follow. */
  async startTls(settings: TlsSettings): Promise<void> {
    this.wire.write('STARTTLS\r\n');
    const reply = await this.reply('the STARTTLS reply');
    if (reply.code !== 220) throw new LoadError('tls', `STARTTLS: ${shown(reply)}`);
    await this.wire.secure(settings);
    this.extensions.clear();
  }

  /** AUTH with an initial response: `535` is `auth_rejected`, `454` and other `4xx` `auth_temporary`. */
  async authenticate(mech: Mech, credential: Credential, host: string, port: number): Promise<void> {
    this.wire.write(`AUTH ${MECH_NAMES[mech]} ${initialResponse(mech, credential, host, port)}\r\n`);
    for (let round = 0; round <= MAX_SASL_ROUNDS; round += 1) {
      const reply = await this.reply('the AUTH reply');
      if (reply.code === 235) return;
      if (reply.code === 334) {
        // An error challenge: answered so the server sends its verdict.
        this.wire.write(`${answerToChallenge(mech)}\r\n`);
        continue;
      }
      const kind = reply.code === 535 || reply.code === 534 || reply.code === 538 ? 'auth_rejected' : reply.code >= 400 && reply.code < 500 ? 'auth_temporary' : 'protocol';
      throw new LoadError(kind, `AUTH ${MECH_NAMES[mech]}: ${shown(reply)}`);
    }
    throw new LoadError('protocol', 'AUTH: too many challenges');
  }

  /** MAIL, RCPT, DATA and the message (already in wire form: CRLF, dot-stuffed, ending in CRLF). */
  async send(from: string, to: string, message: Buffer): Promise<void> {
    await this.expect(`MAIL FROM:<${from}>`, [250], 'MAIL');
    await this.expect(`RCPT TO:<${to}>`, [250, 251], 'RCPT');
    await this.expect('DATA', [354], 'DATA');
    this.wire.write(message);
    this.wire.write('.\r\n');
    const reply = await this.reply('the reply to the message');
    if (reply.code !== 250) throw new LoadError('command_failed', `message: ${shown(reply)}`);
  }

  /** QUIT, then the connection is closed. */
  async quit(): Promise<void> {
    try {
      await this.expect('QUIT', [221], 'QUIT');
    } finally {
      this.wire.close();
    }
  }

  private async expect(command: string, codes: number[], name: string): Promise<SmtpReply> {
    this.wire.write(`${command}\r\n`);
    const reply = await this.reply(`the ${name} reply`);
    if (!codes.includes(reply.code)) throw new LoadError('command_failed', `${name}: ${shown(reply)}`);
    return reply;
  }
}

/** A text line of filler for message bodies (never starts with a dot, so no dot-stuffing needed). */
const FILLER_LINE = 'The quick brown fox jumps over the lazy dog while the load test measures mail.';

/**
 * A message of about `size` bytes from `from` to `to`, in wire form. The body is built once and
 * shared by every message of a run; only the headers differ (by a few bytes at most).
 */
export function messageFactory(size: number): (from: string, to: string, id: string) => Buffer {
  let body: Buffer | undefined;
  return (from, to, id) => {
    const headers = Buffer.from(
      `From: <${from}>\r\nTo: <${to}>\r\nSubject: sasl-gate load test ${id}\r\nDate: ${new Date().toUTCString().replace('GMT', '+0000')}\r\n` +
        `Message-ID: <${id}@load.sasl-gate.invalid>\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n`,
      'utf8',
    );
    body ??= filler(Math.max(2, size - headers.length));
    return Buffer.concat([headers, body]);
  };
}

/** `bytes` bytes of text lines, CRLF-terminated. */
function filler(bytes: number): Buffer {
  const lines: string[] = [];
  let length = 0;
  for (let i = 0; length < bytes; i += 1) {
    const line = `${String(i).padStart(6, '0')} ${FILLER_LINE}`.slice(0, Math.max(1, bytes - length - 2));
    lines.push(line);
    length += line.length + 2;
  }
  return Buffer.from(lines.map((l) => `${l}\r\n`).join(''), 'latin1');
}

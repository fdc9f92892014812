/**
 * A minimal IMAP4rev1 client: greeting, CAPABILITY, STARTTLS, AUTHENTICATE (with or without
 * SASL-IR), SELECT, FETCH, SEARCH, NOOP, IDLE, pipelined APPEND and LOGOUT. It reads responses
 * with their literals (skipping the literal bytes, counting them) and keeps nothing it does not
 * need, so a large FETCH costs little memory. The load harness, the benchmarks and the tests
 * that talk to an IMAP server directly share it.
 */
import { LoadError, quote } from './errors.js';
import { answerToChallenge, initialResponse, MECH_NAMES, type Credential, type Mech } from './sasl.js';
import { Wire, type TlsSettings } from './wire.js';

/** A tagged completion. */
export interface Completion {
  status: 'OK' | 'NO' | 'BAD';
  line: string;
}

/** A tagged completion with the untagged responses before it. */
export interface Exchange extends Completion {
  /** The untagged responses, in order (literals replaced by `{}`). */
  untagged: string[];
  /** What follows the status in the tagged line: `[CODE ...] human text`. */
  text: string;
}

/** Where {@link ImapClient.open} connects. */
export interface ImapTarget {
  host: string;
  port: number;
  /** Deadline of each read, and of the connect and the handshake. */
  timeoutMs: number;
  /** TLS from the start (implicit TLS); plain TCP without it. */
  tls?: TlsSettings;
}

/** Untagged responses a single command may produce before the harness calls it a runaway server. */
const MAX_UNTAGGED = 10_000_000;
/** Continuations of one AUTHENTICATE exchange. */
const MAX_SASL_ROUNDS = 4;
/** Literals in one response. */
const MAX_LITERALS = 100_000;
const LITERAL = /\{(\d+)\+?\}$/;

function capabilitiesIn(text: string): string[] | undefined {
  const match = /\[CAPABILITY ([^\]]*)\]/i.exec(text);
  return match ? match[1]!.trim().toUpperCase().split(/\s+/) : undefined;
}

export class ImapClient {
  /** Upper-cased capability atoms, as last announced. */
  capabilities = new Set<string>();
  /** The server's greeting line, once read. */
  greetingLine = '';
  /** Literals read (and skipped) so far, and the bytes in them: a FETCH's message data. */
  readonly literals = { count: 0, bytes: 0 };
  /** The server's `* BYE`, once it sent one. */
  private bye: string | undefined;
  private tagCounter = 0;

  constructor(readonly wire: Wire) {}

  /** Connects (with TLS when the target says so) and reads the greeting. */
  static async open(target: ImapTarget): Promise<ImapClient> {
    const wire = await Wire.connect(target.host, target.port, target.timeoutMs);
    try {
      if (target.tls) await wire.secure(target.tls);
      const client = new ImapClient(wire);
      await client.greeting();
      return client;
    } catch (err) {
      wire.close();
      throw err;
    }
  }

  /** Reads the greeting: `* OK` goes on, `* BYE` is a refusal. */
  async greeting(): Promise<void> {
    const line = await this.response('the greeting');
    this.greetingLine = line;
    if (/^\* OK\b/i.test(line)) {
      this.learn(line);
      return;
    }
    if (/^\* BYE\b/i.test(line)) throw new LoadError('refused', `greeting: ${quote(line)}`);
    if (/^\* PREAUTH\b/i.test(line)) throw new LoadError('protocol', `greeting: ${quote(line)}: already logged in, nothing to test`);
    throw new LoadError('protocol', `greeting: ${quote(line)}`);
  }

  /** Asks for the capabilities unless the greeting (or the last login) told them. */
  async ensureCapabilities(): Promise<void> {
    if (this.capabilities.size > 0) return;
    const done = await this.command('CAPABILITY', 'CAPABILITY');
    this.expectOk(done, 'CAPABILITY', 'protocol');
  }

  /** STARTTLS and the handshake; the capabilities are forgotten, as RFC 3501 wants. */
  async startTls(settings: TlsSettings): Promise<void> {
    const done = await this.command('STARTTLS', 'STARTTLS');
    this.expectOk(done, 'STARTTLS', 'tls');
    await this.wire.secure(settings);
    this.capabilities.clear();
  }

  /**
   * AUTHENTICATE with `mech`. A refusal is `auth_rejected`, `NO [UNAVAILABLE]` (or any other
   * sign of a temporary failure) `auth_temporary`.
   */
  async authenticate(mech: Mech, credential: Credential, host: string, port: number): Promise<void> {
    const ir = initialResponse(mech, credential, host, port);
    const tag = this.nextTag();
    const saslIr = this.capabilities.has('SASL-IR');
    this.wire.write(saslIr ? `${tag} AUTHENTICATE ${MECH_NAMES[mech]} ${ir}\r\n` : `${tag} AUTHENTICATE ${MECH_NAMES[mech]}\r\n`);
    let sent = saslIr;
    let rounds = 0;
    for (let untagged = 0; untagged < MAX_UNTAGGED; ) {
      const line = await this.response('the AUTHENTICATE reply');
      if (line.startsWith('+')) {
        rounds += 1;
        if (rounds > MAX_SASL_ROUNDS) throw new LoadError('protocol', 'AUTHENTICATE: too many challenges');
        // Without SASL-IR the first (empty) challenge asks for the initial response; any later
        // one is an error challenge, answered so the server can send its verdict.
        this.wire.write(`${sent ? answerToChallenge(mech) : ir}\r\n`);
        sent = true;
        continue;
      }
      if (line.startsWith('* ')) {
        untagged += 1;
        this.learnUntagged(line);
        continue;
      }
      const done = this.completion(tag, line, 'AUTHENTICATE');
      if (done.status === 'OK') {
        const caps = capabilitiesIn(done.line);
        // Capabilities change at login; those in the reply are the new ones, others must be asked.
        this.capabilities = new Set(caps ?? []);
        return;
      }
      if (done.status === 'NO') {
        const temporary = /\[(UNAVAILABLE|INUSE|SERVERBUG|LIMIT)\]/i.test(done.line) || /try again|temporar/i.test(done.line);
        throw new LoadError(temporary ? 'auth_temporary' : 'auth_rejected', `AUTHENTICATE ${MECH_NAMES[mech]}: ${quote(done.line)}`);
      }
      throw new LoadError('protocol', `AUTHENTICATE ${MECH_NAMES[mech]}: ${quote(done.line)}`);
    }
    throw new LoadError('protocol', 'AUTHENTICATE: endless untagged responses');
  }

  /** SELECT; resolves with the number of messages. */
  async select(mailbox: string): Promise<number> {
    let exists = 0;
    const done = await this.command(`SELECT ${quoteMailbox(mailbox)}`, 'SELECT', (line) => {
      const m = /^\* (\d+) EXISTS\b/i.exec(line);
      if (m) exists = Number(m[1]);
    });
    this.expectOk(done, 'SELECT');
    return exists;
  }

  /** FETCH of the last `last` messages' `items` (UID FETCH 1:* on an empty mailbox, which is valid there). */
  async fetchLast(exists: number, last: number, items: string): Promise<number> {
    let fetched = 0;
    const command = exists === 0 ? `UID FETCH 1:* ${items}` : `FETCH ${Math.max(1, exists - last + 1)}:${exists} ${items}`;
    const done = await this.command(command, 'FETCH', (line) => {
      if (/^\* \d+ FETCH\b/i.test(line)) fetched += 1;
    });
    this.expectOk(done, 'FETCH');
    return fetched;
  }

  /** SEARCH ALL; resolves with the number of hits. */
  async searchAll(): Promise<number> {
    let hits = 0;
    const done = await this.command('SEARCH ALL', 'SEARCH', (line) => {
      if (/^\* SEARCH\b/i.test(line)) hits += line.trim().split(/\s+/).length - 2;
    });
    this.expectOk(done, 'SEARCH');
    return hits;
  }

  async noop(): Promise<void> {
    this.expectOk(await this.command('NOOP', 'NOOP'), 'NOOP');
  }

  /** Sends IDLE and waits for the continuation; resolves with the tag, for {@link endIdle}. */
  async startIdle(): Promise<string> {
    const tag = this.nextTag();
    this.wire.write(`${tag} IDLE\r\n`);
    for (let untagged = 0; untagged < MAX_UNTAGGED; untagged += 1) {
      const line = await this.response('the IDLE continuation');
      if (line.startsWith('+')) return tag;
      if (line.startsWith('* ')) continue;
      const done = this.completion(tag, line, 'IDLE');
      throw new LoadError(done.status === 'BAD' ? 'protocol' : 'command_failed', `IDLE: ${quote(done.line)}`);
    }
    throw new LoadError('protocol', 'IDLE: endless untagged responses');
  }

  /** DONE, and the tagged completion of the IDLE (what the server sent meanwhile is read and dropped). */
  async endIdle(tag: string): Promise<void> {
    this.wire.write('DONE\r\n');
    this.expectOk(await this.until(tag, 'IDLE'), 'IDLE');
  }

  /**
   * LOGOUT, then the connection is closed. A server that closes right after its `* BYE`, without
   * the tagged OK, has still logged the client out.
   */
  async logout(): Promise<void> {
    try {
      const done = await this.command('LOGOUT', 'LOGOUT');
      this.expectOk(done, 'LOGOUT');
    } catch (err) {
      if (!(err instanceof LoadError && err.kind === 'closed' && this.bye !== undefined)) throw err;
    } finally {
      this.wire.close();
    }
  }

  /**
   * APPENDs `messages` to `mailbox` pipelined in one write with non-synchronizing literals
   * (LITERAL+, RFC 7888), then reads every completion; rejects on the first that is not OK.
   */
  async appendAll(mailbox: string, messages: readonly Buffer[]): Promise<void> {
    const tags: string[] = [];
    const parts: Buffer[] = [];
    for (const message of messages) {
      const tag = this.nextTag();
      tags.push(tag);
      parts.push(Buffer.from(`${tag} APPEND ${quoteMailbox(mailbox)} {${message.length}+}\r\n`, 'latin1'), message, Buffer.from('\r\n'));
    }
    this.wire.write(Buffer.concat(parts));
    for (const tag of tags) this.expectOk(await this.until(tag, 'APPEND'), 'APPEND');
  }

  /** Sends `tag command` and resolves with its completion and the untagged responses before it. */
  async exchange(command: string): Promise<Exchange> {
    const untagged: string[] = [];
    const done = await this.command(command, command.split(' ')[0]!.toUpperCase(), (line) => untagged.push(line));
    return { ...done, untagged, text: done.line.replace(/^\S+ \S+ ?/, '') };
  }

  /** Sends `tag command` and reads up to its completion, passing untagged responses to `onUntagged`. */
  async command(command: string, name: string, onUntagged?: (line: string) => void): Promise<Completion> {
    const tag = this.nextTag();
    this.wire.write(`${tag} ${command}\r\n`);
    return this.until(tag, name, onUntagged);
  }

  private async until(tag: string, name: string, onUntagged?: (line: string) => void): Promise<Completion> {
    for (let untagged = 0; untagged < MAX_UNTAGGED; untagged += 1) {
      const line = await this.response(`the ${name} reply`);
      if (line.startsWith('* ')) {
        this.learnUntagged(line);
        onUntagged?.(line);
        continue;
      }
      if (line.startsWith('+')) throw new LoadError('protocol', `${name}: unexpected continuation ${quote(line)}`);
      return this.completion(tag, line, name);
    }
    throw new LoadError('protocol', `${name}: endless untagged responses`);
  }

  private completion(tag: string, line: string, name: string): Completion {
    const match = /^(\S+) (OK|NO|BAD)\b/i.exec(line);
    if (!match || match[1] !== tag) throw new LoadError('protocol', `${name}: unexpected reply ${quote(line)}`);
    return { status: match[2]!.toUpperCase() as Completion['status'], line };
  }

  private expectOk(done: Completion, name: string, kind: 'command_failed' | 'protocol' | 'tls' = 'command_failed'): void {
    if (done.status === 'OK') return;
    throw new LoadError(done.status === 'BAD' && kind === 'command_failed' ? 'protocol' : kind, `${name}: ${quote(done.line)}`);
  }

  /** One response: a line, with any literals it announces skipped over (replaced by `{}`). */
  private async response(what: string): Promise<string> {
    try {
      return await this.readResponse(what);
    } catch (err) {
      // A connection the server closed after saying why: the why is the better message.
      if (err instanceof LoadError && err.kind === 'closed' && this.bye !== undefined) {
        throw new LoadError('closed', `${what}: the server said ${quote(this.bye)} and closed the connection`);
      }
      throw err;
    }
  }

  private async readResponse(what: string): Promise<string> {
    let line = await this.wire.readLine(what);
    // Each literal is followed by the rest of the response on a new line.
    for (let count = 0; count < MAX_LITERALS; count += 1) {
      const literal = LITERAL.exec(line);
      if (!literal) return line;
      const size = Number(literal[1]);
      await this.wire.skip(size, what);
      this.literals.count += 1;
      this.literals.bytes += size;
      line = `${line.slice(0, literal.index)}{}${await this.wire.readLine(what)}`;
    }
    throw new LoadError('protocol', `${what}: more than ${MAX_LITERALS} literals in one response`);
  }

  private learn(line: string): void {
    const caps = capabilitiesIn(line);
    if (caps) this.capabilities = new Set(caps);
  }

  private learnUntagged(line: string): void {
    if (/^\* BYE\b/i.test(line)) this.bye = line;
    else if (/^\* CAPABILITY /i.test(line)) this.capabilities = new Set(line.slice(13).trim().toUpperCase().split(/\s+/));
    else if (/^\* OK \[CAPABILITY /i.test(line)) this.learn(line);
  }

  private nextTag(): string {
    this.tagCounter += 1;
    return `L${this.tagCounter}`;
  }
}

/** A mailbox name as an atom when it is one, a quoted string otherwise. */
function quoteMailbox(name: string): string {
  return /^[A-Za-z0-9._/-]+$/.test(name) ? name : `"${name.replace(/(["\\])/g, '\\$1')}"`;
}

/**
 * A minimal POP3 client for the load harness: greeting, CAPA, STLS, AUTH (RFC 5034), STAT, LIST
 * and QUIT, enough to log in and look at the maildrop the way a POP3 client does on each poll.
 */
import { LoadError, quote } from './errors.js';
import { answerToChallenge, initialResponse, MECH_NAMES, type Credential, type Mech } from './sasl.js';
import type { TlsSettings, Wire } from './wire.js';

/** A POP3 command line may be 255 octets with its CRLF (RFC 5034 4): a longer initial response waits for `+ `. */
const MAX_COMMAND_OCTETS = 255;
/** Challenges in one AUTH exchange. */
const MAX_SASL_ROUNDS = 4;
/** Lines of one multi-line reply before the harness calls it a runaway server. */
const MAX_BODY_LINES = 10_000_000;

/** A drop's size: messages and octets (STAT). */
export interface Maildrop {
  messages: number;
  octets: number;
}

/** Whether a `-ERR` to AUTH is temporary (RFC 3206 `SYS/TEMP`, `IN-USE`, `LOGIN-DELAY`) rather than a refusal. */
function temporary(line: string): boolean {
  return /^-ERR \[(SYS\/TEMP|IN-USE|LOGIN-DELAY)\]/i.test(line);
}

export class Pop3Client {
  /** CAPA lines, upper-cased, as last listed. */
  capabilities: string[] = [];

  constructor(readonly wire: Wire) {}

  /** The greeting: `+OK` goes on, `-ERR` is a refusal (a connection limit, usually). */
  async greeting(): Promise<void> {
    const line = await this.wire.readLine('the greeting');
    if (line.startsWith('+OK')) return;
    throw new LoadError(line.startsWith('-ERR') ? 'refused' : 'protocol', `greeting: ${quote(line)}`);
  }

  /** CAPA: the capability lines. */
  async capa(): Promise<string[]> {
    this.wire.write('CAPA\r\n');
    await this.expectOk('CAPA');
    this.capabilities = (await this.body('CAPA')).map((line) => line.toUpperCase());
    return this.capabilities;
  }

  /** STLS and the handshake. */
  async startTls(settings: TlsSettings): Promise<void> {
    this.wire.write('STLS\r\n');
    const line = await this.wire.readLine('the STLS reply');
    if (!line.startsWith('+OK')) throw new LoadError('tls', `STLS: ${quote(line)}`);
    await this.wire.secure(settings);
    this.capabilities = [];
  }

  /**
   * AUTH with the initial response on the command line when it fits (RFC 5034), else after the
   * server's `+ `; an error challenge gets the mechanism's dummy reply. `-ERR [SYS/TEMP]` (and
   * `IN-USE`, `LOGIN-DELAY`) is `auth_temporary`, any other `-ERR` `auth_rejected`.
   */
  async authenticate(mech: Mech, credential: Credential, host: string, port: number): Promise<void> {
    const name = MECH_NAMES[mech];
    const response = initialResponse(mech, credential, host, port);
    const inline = `AUTH ${name} ${response}\r\n`;
    let pending: string | undefined;
    if (Buffer.byteLength(inline) <= MAX_COMMAND_OCTETS) {
      this.wire.write(inline);
    } else {
      this.wire.write(`AUTH ${name}\r\n`);
      pending = response;
    }
    for (let round = 0; round <= MAX_SASL_ROUNDS; round += 1) {
      const line = await this.wire.readLine('the AUTH reply');
      if (line.startsWith('+OK')) return;
      if (line === '+' || line.startsWith('+ ')) {
        // The go-ahead for the response, then any error challenge: answered so the server sends its verdict.
        this.wire.write(`${pending ?? answerToChallenge(mech)}\r\n`);
        pending = undefined;
        continue;
      }
      if (line.startsWith('-ERR')) throw new LoadError(temporary(line) ? 'auth_temporary' : 'auth_rejected', `AUTH ${name}: ${quote(line)}`);
      throw new LoadError('protocol', `AUTH ${name}: ${quote(line)}`);
    }
    throw new LoadError('protocol', `AUTH ${name}: too many challenges`);
  }

  /** STAT: how many messages, how many octets. */
  async stat(): Promise<Maildrop> {
    this.wire.write('STAT\r\n');
    const line = await this.expectOk('STAT');
    const match = /^\+OK (\d+) (\d+)/.exec(line);
    if (!match) throw new LoadError('protocol', `STAT: ${quote(line)}`);
    return { messages: Number(match[1]), octets: Number(match[2]) };
  }

  /** LIST: the size of each message, by message number. */
  async list(): Promise<Map<number, number>> {
    this.wire.write('LIST\r\n');
    await this.expectOk('LIST');
    const sizes = new Map<number, number>();
    for (const line of await this.body('LIST')) {
      const match = /^(\d+) (\d+)/.exec(line);
      if (!match) throw new LoadError('protocol', `LIST: not a scan listing: ${quote(line)}`);
      sizes.set(Number(match[1]), Number(match[2]));
    }
    return sizes;
  }

  /** QUIT, then the connection is closed. */
  async quit(): Promise<void> {
    try {
      this.wire.write('QUIT\r\n');
      await this.expectOk('QUIT');
    } finally {
      this.wire.close();
    }
  }

  private async expectOk(name: string): Promise<string> {
    const line = await this.wire.readLine(`the ${name} reply`);
    if (line.startsWith('+OK')) return line;
    throw new LoadError(line.startsWith('-ERR') ? 'command_failed' : 'protocol', `${name}: ${quote(line)}`);
  }

  /** The lines of a multi-line reply up to its `.`, dot-stuffing undone. */
  private async body(name: string): Promise<string[]> {
    const lines: string[] = [];
    for (let n = 0; n < MAX_BODY_LINES; n += 1) {
      const line = await this.wire.readLine(`the ${name} reply`);
      if (line === '.') return lines;
      lines.push(line.startsWith('.') ? line.slice(1) : line);
    }
    throw new LoadError('protocol', `${name}: a reply of more than ${MAX_BODY_LINES} lines`);
  }
}

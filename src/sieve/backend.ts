import { BackendError } from '../errors.js';
import { BackendConversation } from '../net/backend-conversation.js';
import { LITERAL_AT_END, parseCapability, parseResponse, SieveSyntaxError, type SieveResponse, type SieveSegment } from './parser.js';
import { capabilityLine } from './replies.js';

/**
 * A pre-login conversation with a ManageSieve backend: the capability block, then the login.
 * Reads response lines (with the literals a server may send), and hands the socket (and any
 * bytes read past the login reply) to the relay.
 */
export class SieveBackendConversation extends BackendConversation {
  protected farewell(): string {
    return 'LOGOUT\r\n';
  }

  /**
   * The next line with its literals. The line reader knows lines, not octets: a literal is
   * taken from the lines that follow, joined with CRLF (how servers end the lines of a text).
   */
  async readSegments(): Promise<SieveSegment[]> {
    const segments: SieveSegment[] = [];
    let text = Buffer.from(await this.readLine(), 'utf8');
    for (let literals = 0; ; literals++) {
      const announced = LITERAL_AT_END.exec(text.subarray(Math.max(0, text.length - 24)).toString('latin1'));
      if (!announced || literals >= 4) break;
      const size = Number(announced[1]);
      if (size > 1 << 20) throw new BackendError('backend sent an over-large literal');
      let collected = Buffer.alloc(0);
      for (let first = true; collected.length < size; first = false) {
        collected = Buffer.concat([collected, Buffer.from(first ? '' : '\r\n'), Buffer.from(await this.readLine(), 'utf8')]);
      }
      segments.push({ text, literal: collected.subarray(0, size) });
      text = collected.subarray(size);
    }
    segments.push({ text });
    return segments;
  }

  /** Reads the capability block up to its `OK`; a backend that says `NO` or `BYE` is unavailable. */
  async readCapabilities(): Promise<string[]> {
    const lines: string[] = [];
    for (;;) {
      const segments = await this.readSegments();
      const reply = tryResponse(segments);
      if (reply) {
        if (reply.status !== 'OK') throw new BackendError(`backend said ${reply.status}: ${reply.text?.toString('utf8').slice(0, 200) ?? ''}`);
        return lines;
      }
      try {
        const { name, value } = parseCapability(segments);
        lines.push(capabilityLine(name, value));
      } catch (err) {
        if (!(err instanceof SieveSyntaxError)) throw err;
        throw new BackendError('backend sent an unreadable capability line');
      }
      if (lines.length > 100) throw new BackendError('backend sent too many capability lines');
    }
  }
}

/** The line as a response (`OK`, `NO`, `BYE`), or undefined when it is something else. */
export function tryResponse(segments: readonly SieveSegment[]): SieveResponse | undefined {
  try {
    return parseResponse(segments);
  } catch (err) {
    if (err instanceof SieveSyntaxError) return undefined;
    throw err;
  }
}

/**
 * The SMTP session after login. sasl-gate owns the framing: every client command is parsed and
 * re-sent canonically, message content is re-encoded line by line, BDAT chunks are counted, and
 * the commands that say who the client is (XCLIENT, XFORWARD, AUTH, STARTTLS) are answered here.
 * Postfix only ever reads bytes sasl-gate wrote; its replies go back in command order (RFC 2920).
 */
import type { Duplex } from 'node:stream';
import type { Logger } from 'pino';
import type { RelayStats } from '../relay/pipe.js';
import { NOT_FORWARDED } from './capabilities.js';
import { COMMAND_LINE_LIMIT, SmtpCommandReader, type SmtpInputEvent } from './command-reader.js';
import { SmtpReplyReader, type SmtpWireReply } from './reply-reader.js';

/** How much the relay holds for one connection. */
export interface SmtpRelayLimits {
  /** Longest command line (without CRLF) forwarded. */
  commandLineLimit: number;
  /** Replies owed to the client (the backend's and sasl-gate's) before reading stops. */
  maxOutstandingReplies: number;
  /** Reply bytes the client has not read, beyond which reading its commands stops. */
  maxUnreadOutput: number;
  /** Client bytes read ahead and not yet handled, beyond which reading stops. */
  maxBufferedInput: number;
}

/** The relay's bounds unless a caller (a test) sets others. */
export const DEFAULT_SMTP_RELAY_LIMITS: SmtpRelayLimits = {
  commandLineLimit: COMMAND_LINE_LIMIT,
  maxOutstandingReplies: 100,
  maxUnreadOutput: 64 * 1024,
  maxBufferedInput: 64 * 1024,
};

/** Everything the relay needs; both ends are plain duplex streams so tests can drive it in-process. */
export interface SmtpRelayOptions {
  client: Duplex & { setTimeout?(ms: number, callback?: () => void): unknown };
  backend: Duplex;
  /** Client bytes read before the relay began, backend bytes read past its last login reply. */
  pending?: { toBackend?: Buffer; toClient?: Buffer; clientEnded?: boolean };
  idleTimeoutMs?: number;
  limits?: Partial<SmtpRelayLimits>;
  /**
   * Whether the backend offers CHUNKING (true when not given). Without it Postfix answers BDAT
   * with 521 and hangs up without reading the chunk; sasl-gate answers BDAT itself instead and
   * drops the chunk, so the session goes on. The backend's EHLO replies during the session update it.
   */
  chunking?: boolean;
  log: Logger;
}

/** Commands forwarded after login; any other verb is answered by sasl-gate. */
const FORWARDED = new Set(['EHLO', 'HELO', 'MAIL', 'RCPT', 'DATA', 'RSET', 'NOOP', 'QUIT', 'VRFY', 'HELP']);

/** sasl-gate's own answers to commands that never reach the backend after login. */
const REFUSALS: Record<string, string> = {
  AUTH: '503 5.5.1 Error: already authenticated',
  STARTTLS: '503 5.5.1 Error: TLS already active',
  XCLIENT: '502 5.5.1 Error: command not available',
  XFORWARD: '502 5.5.1 Error: command not available',
};
const UNKNOWN = '502 5.5.2 Error: command not recognized';
const INVALID: Record<'too_long' | 'bare_cr' | 'bare_lf' | 'nul' | 'empty', string> = {
  too_long: '500 5.5.2 Error: line too long',
  bare_cr: '500 5.5.2 Error: bare CR in command line',
  bare_lf: '500 5.5.2 Error: bare LF in command line; end commands with CRLF',
  nul: '500 5.5.2 Error: NUL in command line',
  empty: '500 5.5.2 Error: bad syntax',
};
const BAD_BDAT = '501 5.5.4 Syntax: BDAT count [LAST]';
const NO_CHUNKING = '502 5.5.1 Error: command not implemented';
const BAD_BDAT_CLOSE = '421 4.5.0 Error: unreadable BDAT size, the chunk cannot be skipped; closing connection';
const BACKEND_ERROR = '421 4.3.0 Error: mail server protocol error, closing connection';

/** How long a side may take to flush after the other closed, before it is cut. */
const LINGER_MS = 5000;

type Expected =
  /** A reply the backend owes for a command sent to it (`.` is the end of message content). */
  | { from: 'backend'; verb: string }
  /** sasl-gate's own reply, held until every earlier reply went out. */
  | { from: 'local'; text: string; close: boolean };

/** Removes what the client must not see after login from an EHLO reply and fixes the continuation marks. */
export function filterEhloReply(lines: readonly string[]): string[] {
  const [greeting, ...rest] = lines;
  if (greeting === undefined) return [];
  const kept = [greeting, ...rest.filter((l) => !NOT_FORWARDED.test(l.slice(4)))];
  const code = greeting.slice(0, 3);
  return kept.map((l, i) => `${code}${i === kept.length - 1 ? ' ' : '-'}${l.slice(4)}`);
}

/** Whether EHLO keywords (without the reply code) include CHUNKING. */
export function offersChunking(extensions: readonly string[]): boolean {
  return extensions.some((e) => /^CHUNKING(\s|$)/i.test(e.trim()));
}

/** SP, HTAB, VT, FF: the separators Postfix's command tokenizer splits on. */
const ARGUMENT_SEPARATOR = /[ \t\x0b\x0c]+/;

/**
 * MAIL's arguments without an `AUTH=` parameter (RFC 4954 section 5): it names who submitted the
 * message, and Postfix would log it as `sasl_sender` and hand it to milters and policy services.
 * Only sasl-gate says who the client is, so every word starting with `AUTH=` is dropped; Postfix
 * starts a parameter only after a separator, so no parameter it reads can escape this.
 */
export function withoutAuthParameter(args: string): string {
  const words = args.split(ARGUMENT_SEPARATOR);
  const kept = words.filter((word) => !/^AUTH=/i.test(word));
  return kept.length === words.length ? args : kept.join(' ');
}

/** The canonical form of a command sent to the backend. */
function canonical(verb: string, args: string): string {
  return args.length > 0 ? `${verb} ${args}\r\n` : `${verb}\r\n`;
}

/**
 * Relays one logged-in SMTP session between the client and the backend; resolves when both are
 * closed. The client's input is read only while the outstanding replies, the client's unread
 * output and the backend's socket buffer are within bounds.
 */
export function runSmtpCommandRelay(options: SmtpRelayOptions): Promise<RelayStats> {
  const { client, backend, log } = options;
  const limits = { ...DEFAULT_SMTP_RELAY_LIMITS, ...options.limits };
  const reader = new SmtpCommandReader(limits.commandLineLimit);
  const replies = new SmtpReplyReader();
  const queue: Expected[] = [];
  const refused = new Map<string, number>();
  const stats: RelayStats = { bytesFromClient: 0, bytesToClient: 0, closedBy: 'client' };
  let chunking = options.chunking ?? true;
  /** Inside a BDAT chunk answered here: its bytes are read and dropped. */
  let droppingChunk = false;
  let backendBlocked = false;
  let clientEnded = false;
  let backendEnded = false;
  /** No more client input is read: QUIT sent, a lost BDAT framing, or the end. */
  let stopReading = false;
  let closing = false;

  const count = (what: string) => refused.set(what, (refused.get(what) ?? 0) + 1);

  const writeClient = (text: string) => {
    if (client.destroyed || client.writableEnded) return;
    const bytes = Buffer.from(text, 'latin1');
    stats.bytesToClient += bytes.length;
    client.write(bytes);
  };

  const writeBackend = (bytes: Buffer | string) => {
    if (backend.destroyed || backend.writableEnded) return;
    if (!backend.write(bytes)) backendBlocked = true;
  };

  const endSide = (side: Duplex) => {
    if (side.destroyed) return;
    side.end();
    setTimeout(() => side.destroy(), LINGER_MS).unref();
  };

  /** Ends both sides once what is owed to the client has been written. */
  const close = () => {
    if (closing) return;
    closing = true;
    stopReading = true;
    // Whatever the client still sends is read and dropped, so its close is seen.
    client.resume();
    endSide(client);
    endSide(backend);
  };

  const local = (text: string, closeAfter = false) => {
    queue.push({ from: 'local', text, close: closeAfter });
    deliverLocal();
  };

  const deliverLocal = () => {
    while (queue[0]?.from === 'local') {
      const entry = queue.shift() as Extract<Expected, { from: 'local' }>;
      writeClient(`${entry.text}\r\n`);
      if (entry.close) return close();
    }
  };

  const handle = (event: SmtpInputEvent) => {
    switch (event.kind) {
      case 'command': {
        if (FORWARDED.has(event.verb)) {
          writeBackend(canonical(event.verb, event.verb === 'MAIL' ? withoutAuthParameter(event.args) : event.args));
          queue.push({ from: 'backend', verb: event.verb });
          if (event.verb === 'QUIT') stopReading = true;
          return;
        }
        if (event.verb === '') {
          count('empty');
          return local(INVALID.empty);
        }
        const refusal = REFUSALS[event.verb];
        // Only fixed names are counted: an unknown "verb" may be a password sent by mistake.
        count(refusal ? event.verb : 'unknown');
        return local(refusal ?? UNKNOWN);
      }
      case 'invalid':
        count(event.reason);
        return local(INVALID[event.reason]);
      case 'bdat':
        droppingChunk = !chunking;
        if (!chunking) {
          count('BDAT');
          return local(NO_CHUNKING);
        }
        writeBackend(`BDAT ${event.size}${event.last ? ' LAST' : ''}\r\n`);
        queue.push({ from: 'backend', verb: 'BDAT' });
        return;
      case 'bad_bdat':
        // RFC 3030: the chunk follows whatever the reply; with no readable size it cannot be skipped.
        count('bad_bdat');
        stopReading = true;
        local(BAD_BDAT);
        return local(BAD_BDAT_CLOSE, true);
      case 'chunk':
        if (!droppingChunk) writeBackend(event.bytes);
        return;
      case 'content':
        return writeBackend(event.bytes);
      case 'end_of_data':
        writeBackend('.\r\n');
        queue.push({ from: 'backend', verb: '.' });
        return;
    }
  };

  /** Reads client input while every bound allows it. */
  const pump = () => {
    let drained = false;
    // What one batch of client input yields goes to the backend in one write: pipelined commands
    // in one segment, as the client sent them, so Postfix answers them together instead of
    // replying per segment and stalling on delayed ACKs.
    backend.cork();
    try {
      while (!stopReading && !backendBlocked && queue.length < limits.maxOutstandingReplies) {
        // Only while a 'drain' is owed: below the stream's own high-water mark none would come to
        // wake the relay, so the bound is in effect at least that mark.
        if (client.writableLength > limits.maxUnreadOutput && client.writableNeedDrain) break;
        const event = reader.next();
        if (!event) {
          drained = true;
          break;
        }
        handle(event);
      }
    } finally {
      backend.uncork();
    }
    if (closing) return;
    if (reader.buffered > limits.maxBufferedInput || stopReading) client.pause();
    else client.resume();
    // A client that closed its side: once its input is used up, the backend learns it too, answers
    // what it was sent, and closes.
    if (clientEnded && drained && !stopReading && !backendEnded && !reader.awaitingDataReply) {
      backendEnded = true;
      backend.end();
    }
  };

  const onReply = (reply: SmtpWireReply) => {
    deliverLocal();
    const expected = queue.shift();
    if (!expected || expected.from !== 'backend') {
      // Only a 421 (timeout, shutdown) may come unasked; it ends the session like any other 421.
      if (reply.code === 421) writeClient(`${reply.lines.join('\r\n')}\r\n`);
      else {
        log.warn({ code: reply.code }, 'backend sent a reply no command asked for; closing');
        writeClient(`${BACKEND_ERROR}\r\n`);
      }
      return close();
    }
    if (expected.verb === 'EHLO' && reply.code === 250) chunking = offersChunking(reply.lines.slice(1).map((l) => l.slice(4)));
    const lines = expected.verb === 'EHLO' && reply.code === 250 ? filterEhloReply(reply.lines) : reply.lines;
    writeClient(`${lines.join('\r\n')}\r\n`);
    if (reply.code === 421 || expected.verb === 'QUIT') return close();
    if (expected.verb === 'DATA') reader.dataReply(reply.code === 354);
    deliverLocal();
  };

  const onBackendData = (chunk: Buffer) => {
    if (closing) return;
    let complete: SmtpWireReply[];
    try {
      complete = replies.push(chunk);
    } catch (err) {
      log.warn({ reason: 'backend_protocol_error', detail: (err as Error).message }, 'unreadable reply from the backend; closing');
      deliverLocal();
      writeClient(`${BACKEND_ERROR}\r\n`);
      return close();
    }
    // Replies that arrived together reach the client together (one TLS record, one segment).
    client.cork();
    try {
      for (const reply of complete) {
        onReply(reply);
        if (closing) return;
      }
    } finally {
      client.uncork();
    }
    pump();
  };

  return new Promise((resolve) => {
    let closedSides = 0;
    let first: 'client' | 'backend' | undefined;
    const onClose = (side: 'client' | 'backend') => () => {
      first ??= side;
      closedSides += 1;
      if (side === 'client') endSide(backend);
      else {
        // Replies already owed by sasl-gate itself still go out before the end.
        deliverLocal();
        endSide(client);
      }
      if (closedSides === 2) {
        stats.closedBy = first;
        if (refused.size > 0) log.warn({ refused: Object.fromEntries(refused) }, 'refused commands from a logged-in client');
        resolve(stats);
      }
    };
    client.on('error', () => client.destroy());
    backend.on('error', () => backend.destroy());
    client.once('close', onClose('client'));
    backend.once('close', onClose('backend'));
    backend.on('data', onBackendData);
    backend.on('end', () => {
      deliverLocal();
      endSide(client);
    });
    backend.on('drain', () => {
      backendBlocked = false;
      pump();
    });
    client.on('drain', pump);
    client.on('data', (chunk: Buffer) => {
      stats.bytesFromClient += chunk.length;
      if (stopReading) return;
      reader.push(chunk);
      pump();
    });
    client.on('end', () => {
      clientEnded = true;
      pump();
    });
    if (options.idleTimeoutMs && client.setTimeout) {
      // No byte either way for this long: the client is gone without saying so.
      client.setTimeout(options.idleTimeoutMs, () => client.destroy());
    }
    const pending = options.pending ?? {};
    if (pending.toClient && pending.toClient.length > 0) onBackendData(pending.toClient);
    if (pending.toBackend && pending.toBackend.length > 0) {
      stats.bytesFromClient += pending.toBackend.length;
      reader.push(pending.toBackend);
    }
    if (pending.clientEnded) clientEnded = true;
    pump();
  });
}

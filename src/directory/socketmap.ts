/**
 * The directory served to Postfix as a `socketmap` table (socketmap_table(5)): one TCP listener
 * answering three maps by name,
 *
 * - `mailbox` for `virtual_mailbox_maps`: `OK <domain>/<local>/` for the mailbox of an active user
 *   or of one disabled or removed less than the grace period ago, `NOTFOUND ` for anything else;
 * - `alias` for `virtual_alias_maps`: `OK <mailbox>` for an alias of such a user;
 * - `senders` for `smtpd_sender_login_maps`: `OK <login>` (the mailbox) for an address of an
 *   active user only (a disabled user may not send, grace or not).
 *
 * A directory that throws or says it is not ready yet gets `TEMP`, so Postfix answers
 * `451 4.3.0` and the sender retries, instead of bouncing mail while the directory loads.
 *
 * Requests and replies are netstrings (`<length>:<bytes>,`). The codec below is pure and bounded:
 * a request longer than `maxRequestBytes`, or bytes that are not a netstring, get one
 * `PERM` reply and the connection is closed (a broken stream cannot be resynchronised).
 */
import { createServer, type Server, type Socket } from 'node:net';
import type { Logger } from 'pino';
import { GateError } from '../errors.js';
import { parseNetworks, type NetworkList } from '../net/networks.js';
import type { AddressVerdict, DirectoryUser } from './model.js';

// ---------------------------------------------------------------------------------------------
// Netstring codec (http://cr.yp.to/proto/netstrings.txt), pure.
// ---------------------------------------------------------------------------------------------

/** Why a byte stream is not a sequence of netstrings. */
export type NetstringErrorCode = 'netstring_syntax' | 'netstring_too_long';

export class NetstringError extends GateError {
  declare readonly code: NetstringErrorCode;
  /** Netstrings completed in the same `push()` before the bad byte (they are valid requests). */
  decoded: Buffer[] = [];

  constructor(code: NetstringErrorCode, message: string) {
    super(code, message);
    this.name = 'NetstringError';
  }
}

/** `<decimal length>:<payload>,` */
export function encodeNetstring(payload: string | Uint8Array): Buffer {
  const body = typeof payload === 'string' ? Buffer.from(payload, 'utf8') : Buffer.from(payload);
  return Buffer.concat([Buffer.from(`${body.length}:`, 'latin1'), body, Buffer.from(',', 'latin1')]);
}

const COLON = 0x3a;
const COMMA = 0x2c;
const ZERO = 0x30;
const NINE = 0x39;

/**
 * Incremental netstring decoder: `push()` takes whatever bytes arrived (split anywhere) and returns
 * the complete payloads so far. It holds at most one incomplete netstring, never more than
 * `maxPayload` bytes of it, and throws {@link NetstringError} on the first bad byte or an announced
 * length over the limit (before reading the payload). After an error it stays failed.
 */
export class NetstringDecoder {
  private readonly maxDigits: number;
  private state: 'length' | 'payload' | 'comma' | 'failed' = 'length';
  private digits = '';
  private expected = 0;
  private chunks: Buffer[] = [];
  private received = 0;

  constructor(readonly maxPayload: number) {
    if (!Number.isSafeInteger(maxPayload) || maxPayload < 0) throw new RangeError('maxPayload must be a non-negative integer');
    this.maxDigits = String(maxPayload).length;
  }

  /** True while part of a netstring is buffered (the stream may not end here). */
  get pending(): boolean {
    return this.state !== 'failed' && (this.state !== 'length' || this.digits.length > 0);
  }

  push(data: Uint8Array): Buffer[] {
    if (this.state === 'failed') throw new NetstringError('netstring_syntax', 'the stream already failed');
    const out: Buffer[] = [];
    const bytes = Buffer.isBuffer(data) ? data : Buffer.from(data.buffer, data.byteOffset, data.byteLength);
    let i = 0;
    try {
      while (i < bytes.length) {
        if (this.state === 'length') {
          const byte = bytes[i]!;
          i += 1;
          if (byte >= ZERO && byte <= NINE) {
            this.digits += String.fromCharCode(byte);
            // More digits than the limit has can only announce a longer payload (leading zeros aside).
            if (this.digits.replace(/^0+(?=\d)/, '').length > this.maxDigits) {
              throw new NetstringError('netstring_too_long', `netstring longer than ${this.maxPayload} bytes`);
            }
            continue;
          }
          if (byte !== COLON || this.digits === '') {
            throw new NetstringError('netstring_syntax', `expected a digit or ':' but got byte 0x${byte.toString(16).padStart(2, '0')}`);
          }
          const length = Number(this.digits);
          if (length > this.maxPayload) {
            throw new NetstringError('netstring_too_long', `netstring of ${length} bytes exceeds the limit of ${this.maxPayload}`);
          }
          this.expected = length;
          this.digits = '';
          this.state = length === 0 ? 'comma' : 'payload';
          continue;
        }
        if (this.state === 'payload') {
          const take = Math.min(this.expected - this.received, bytes.length - i);
          this.chunks.push(Buffer.from(bytes.subarray(i, i + take)));
          this.received += take;
          i += take;
          if (this.received === this.expected) this.state = 'comma';
          continue;
        }
        // state === 'comma'
        const byte = bytes[i]!;
        i += 1;
        if (byte !== COMMA) {
          throw new NetstringError('netstring_syntax', `expected ',' after ${this.expected} bytes but got byte 0x${byte.toString(16).padStart(2, '0')}`);
        }
        out.push(this.chunks.length === 1 ? this.chunks[0]! : Buffer.concat(this.chunks));
        this.chunks = [];
        this.received = 0;
        this.expected = 0;
        this.state = 'length';
      }
    } catch (err) {
      this.state = 'failed';
      this.chunks = [];
      if (err instanceof NetstringError) err.decoded = out;
      throw err;
    }
    return out;
  }
}

// ---------------------------------------------------------------------------------------------
// Lookups.
// ---------------------------------------------------------------------------------------------

/** What the socketmap needs from the directory (the `Directory` class offers it). */
export interface DirectoryLookup {
  /**
   * The verdict for an address (lower case). `grace` means disabled or removed but still within
   * the grace period for mail; a `mailbox` or `alias` verdict for an inactive user counts as
   * unknown. May throw (answered `TEMP`).
   */
  lookup(address: string): AddressVerdict | Promise<AddressVerdict>;
  /** When present and false (e.g. nothing loaded yet, nothing persisted), every lookup answers `TEMP`. */
  isReady?(): boolean;
}

/** The map names Postfix sends (the last field of `socketmap:inet:host:port:<name>`). */
export interface SocketmapNames {
  mailbox: string;
  alias: string;
  senders: string;
}

export const DEFAULT_SOCKETMAP_NAMES: SocketmapNames = { mailbox: 'mailbox', alias: 'alias', senders: 'senders' };

export interface SocketmapAnswerOptions {
  names?: Partial<SocketmapNames>;
  /**
   * Postfix's `recipient_delimiter` (e.g. `+`), when one is set: socketmap tables get only whole
   * addresses (Postfix makes no partial keys for them), so `user+tag@domain` is looked up again
   * without the extension here. Unset, extensions are not special.
   */
  recipientDelimiter?: string;
  /** The `virtual_mailbox_maps` result for a mailbox; `<domain>/<local>/` by default (only its presence matters for LMTP delivery). */
  mailboxValue?: (user: DirectoryUser) => string;
}

/** Socketmap keys are addresses; anything longer than this is no address (RFC 5321 paths are at most 256). */
const MAX_KEY_LENGTH = 512;

/** Reply texts (without netstring framing). */
export const reply = {
  ok: (value: string): string => `OK ${value}`,
  notFound: (): string => 'NOTFOUND ',
  temp: (reason: string): string => `TEMP ${reason}`,
  perm: (reason: string): string => `PERM ${reason}`,
};

function defaultMailboxValue(user: DirectoryUser): string {
  const at = user.mailbox.lastIndexOf('@');
  return at < 0 ? `${user.mailbox}/` : `${user.mailbox.slice(at + 1)}/${user.mailbox.slice(0, at)}/`;
}

/** Replies never carry control characters (a value is one line of text in Postfix). */
function clean(text: string): string {
  // eslint-disable-next-line no-control-regex
  return text.replace(/[\x00-\x1f\x7f]/g, '?');
}

/** `user+tag@domain` → { base: `user@domain`, extension: `+tag` } for the first delimiter character found. */
function splitExtension(address: string, delimiters: string): { base: string; extension: string } | undefined {
  const at = address.lastIndexOf('@');
  const local = at < 0 ? address : address.slice(0, at);
  const domain = at < 0 ? '' : address.slice(at);
  let cut = -1;
  for (const d of delimiters) {
    const i = local.indexOf(d);
    if (i > 0 && (cut < 0 || i < cut)) cut = i;
  }
  if (cut <= 0) return undefined;
  return { base: `${local.slice(0, cut)}${domain}`, extension: local.slice(cut) };
}

function withExtension(address: string, extension: string): string {
  const at = address.lastIndexOf('@');
  return at < 0 ? `${address}${extension}` : `${address.slice(0, at)}${extension}${address.slice(at)}`;
}

/** Which user an address delivers to (for mail), or undefined; `viaAlias` when it is not the mailbox itself. */
function deliverable(verdict: AddressVerdict, address: string): { user: DirectoryUser; viaAlias: boolean } | undefined {
  switch (verdict.kind) {
    case 'mailbox':
      return verdict.user.active ? { user: verdict.user, viaAlias: false } : undefined;
    case 'alias':
      return verdict.user.active ? { user: verdict.user, viaAlias: true } : undefined;
    case 'grace':
      return { user: verdict.user, viaAlias: verdict.user.mailbox !== address };
    default:
      return undefined;
  }
}

/**
 * Answers one socketmap request (`<name> <key>`, already de-framed) with the reply text. Pure
 * apart from the directory lookups; never throws (a failing directory is `TEMP`).
 */
export async function answerSocketmap(
  directory: DirectoryLookup,
  request: string,
  options: SocketmapAnswerOptions = {},
): Promise<string> {
  const names = { ...DEFAULT_SOCKETMAP_NAMES, ...options.names };
  const space = request.indexOf(' ');
  if (space <= 0) return reply.perm('malformed request: expected "<name> <key>"');
  const name = request.slice(0, space);
  const key = request.slice(space + 1).trim().toLowerCase();
  const kind =
    name === names.mailbox ? 'mailbox' : name === names.alias ? 'alias' : name === names.senders ? 'senders' : undefined;
  if (kind === undefined) return reply.perm(`unknown map name ${clean(JSON.stringify(name.slice(0, 64)))}`);
  if (key === '' || key.length > MAX_KEY_LENGTH) return reply.notFound();
  // eslint-disable-next-line no-control-regex
  if (/[\x00-\x20\x7f]/.test(key)) return reply.notFound();
  // No address: Postfix asks virtual_alias_maps about bare domains (virtual_alias_domains defaults to
  // $virtual_alias_maps) for every address it routes, outbound mail included. The directory holds no
  // domains, so the answer needs no directory and never waits for one that is still loading.
  if (!key.includes('@') || key.startsWith('@')) return reply.notFound();

  try {
    if (directory.isReady !== undefined && !directory.isReady()) return reply.temp('directory not loaded yet');
    const find = async (address: string): Promise<{ user: DirectoryUser; viaAlias: boolean; active: boolean } | undefined> => {
      const verdict = await directory.lookup(address);
      const hit = deliverable(verdict, address);
      return hit === undefined ? undefined : { ...hit, active: verdict.kind !== 'grace' && hit.user.active };
    };
    let extension = '';
    let hit = await find(key);
    if (hit === undefined && options.recipientDelimiter) {
      const split = splitExtension(key, options.recipientDelimiter);
      if (split !== undefined) {
        hit = await find(split.base);
        extension = split.extension;
      }
    }
    if (hit === undefined) return reply.notFound();
    switch (kind) {
      case 'mailbox':
        return hit.viaAlias ? reply.notFound() : reply.ok(clean((options.mailboxValue ?? defaultMailboxValue)(hit.user)));
      case 'alias':
        // Like Postfix's propagate_unmatched_extensions: info+x@ → mailbox+x@.
        return hit.viaAlias ? reply.ok(clean(withExtension(hit.user.mailbox, extension))) : reply.notFound();
      case 'senders':
        return hit.active ? reply.ok(clean(hit.user.mailbox)) : reply.notFound();
    }
  } catch {
    return reply.temp('directory lookup failed');
  }
}

// ---------------------------------------------------------------------------------------------
// Server.
// ---------------------------------------------------------------------------------------------

export interface SocketmapServerOptions extends SocketmapAnswerOptions {
  /** Address to bind; `127.0.0.1` by default. Postfix's socketmap has no authentication: keep it private. */
  host?: string;
  /** Port to bind; 0 picks a free one (see {@link SocketmapServer.port}). */
  port: number;
  /** Client addresses or CIDR blocks allowed to connect; unset, any that can reach `host`. */
  allowFrom?: readonly string[];
  /** Largest request accepted (netstring payload bytes); 4096 by default. */
  maxRequestBytes?: number;
  /** Connections at once; 256 by default (one per Postfix process that has the table open). */
  maxConnections?: number;
  /** A connection quiet this long is closed; 5 minutes by default (Postfix closes idle ones after 10 s itself). */
  idleTimeoutMs?: number;
  /** Requests read ahead of their answers per connection before reading pauses; 32 by default. */
  maxPipelined?: number;
  log?: Pick<Logger, 'info' | 'warn' | 'debug'>;
}

export interface SocketmapServer {
  host: string;
  port: number;
  /** Open connections. */
  readonly connections: number;
  /** Stops listening and closes every connection. */
  close(): Promise<void>;
}

/** Starts the socketmap listener; resolves once it is bound. */
export async function startSocketmapServer(
  directory: DirectoryLookup,
  options: SocketmapServerOptions,
): Promise<SocketmapServer> {
  const host = options.host ?? '127.0.0.1';
  const maxRequestBytes = options.maxRequestBytes ?? 4096;
  const maxConnections = options.maxConnections ?? 256;
  const idleTimeoutMs = options.idleTimeoutMs ?? 300_000;
  const maxPipelined = options.maxPipelined ?? 32;
  const allow: NetworkList | undefined = options.allowFrom === undefined ? undefined : parseNetworks(options.allowFrom);
  const log = options.log;
  const sockets = new Set<Socket>();

  const serve = (socket: Socket): void => {
    const peer = socket.remoteAddress ?? '';
    if (allow !== undefined && !allow.contains(peer)) {
      log?.warn({ event: 'socketmap_refused', client: peer, reason: 'not_allowed' }, 'socketmap connection from a client outside allowFrom refused');
      socket.destroy();
      return;
    }
    if (sockets.size >= maxConnections) {
      log?.warn({ event: 'socketmap_refused', client: peer, reason: 'max_connections' }, 'socketmap connection refused: too many connections');
      socket.end(encodeNetstring(reply.temp('too many connections')));
      socket.destroySoon();
      return;
    }
    sockets.add(socket);
    socket.setNoDelay(true);
    socket.setTimeout(idleTimeoutMs, () => socket.destroy());
    socket.on('error', () => undefined);
    socket.on('close', () => sockets.delete(socket));

    const decoder = new NetstringDecoder(maxRequestBytes);
    let queue: Promise<void> = Promise.resolve();
    let inFlight = 0;
    let closing = false;

    const fail = (text: string): void => {
      closing = true;
      socket.pause();
      // Answers already queued go out first, then the PERM, then the connection ends.
      queue = queue.then(() => {
        if (!socket.destroyed) socket.end(encodeNetstring(text));
      });
    };

    socket.on('data', (chunk: Buffer) => {
      if (closing) return;
      let requests: Buffer[];
      let failure: NetstringError | undefined;
      try {
        requests = decoder.push(chunk);
      } catch (err) {
        failure = err instanceof NetstringError ? err : new NetstringError('netstring_syntax', String(err));
        requests = failure.decoded;
      }
      for (const request of requests) {
        inFlight += 1;
        if (inFlight >= maxPipelined) socket.pause();
        queue = queue.then(async () => {
          const answer = await answerSocketmap(directory, request.toString('utf8'), options);
          inFlight -= 1;
          if (socket.destroyed) return;
          socket.write(encodeNetstring(answer));
          if (!closing && inFlight < maxPipelined && socket.isPaused()) socket.resume();
        });
      }
      if (failure !== undefined) {
        log?.warn({ event: 'socketmap_bad_request', client: peer, reason: failure.code }, 'socketmap request refused');
        fail(reply.perm(failure.code === 'netstring_too_long' ? 'request too long' : 'malformed netstring'));
      }
    });
  };

  const server: Server = createServer(serve);
  server.on('error', () => undefined);
  await new Promise<void>((resolve, reject) => {
    const onError = (err: Error): void => reject(err);
    server.once('error', onError);
    server.listen({ host, port: options.port, exclusive: true }, () => {
      server.off('error', onError);
      resolve();
    });
  });
  const address = server.address();
  const port = address !== null && typeof address === 'object' ? address.port : options.port;
  log?.info({ event: 'socketmap_listening', host, port }, 'Postfix socketmap listening');

  let closed: Promise<void> | undefined;
  return {
    host,
    port,
    get connections() {
      return sockets.size;
    },
    close: () =>
      (closed ??= new Promise<void>((resolve) => {
        server.close(() => resolve());
        for (const socket of sockets) socket.destroy();
      })),
  };
}

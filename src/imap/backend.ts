import { connect as netConnect, type Socket } from 'node:net';
import { AuthError } from '../errors.js';
import { encodeProxyV2, encodeProxyV2Local } from '../server/proxy-protocol.js';
import { encodeAstring } from './parser.js';

/** The two ends of the client's connection, for a PROXY protocol header to the backend. */
export interface ConnectionEnds {
  client: { address: string; port: number };
  local: { address: string; port: number };
}

/**
 * Opens a raw byte stream to a backend, on behalf of a client (or, without `ends`, for
 * sasl-gate's own probes); injected so tests and other transports can replace it.
 */
export type BackendConnector = (ends?: ConnectionEnds) => Promise<Socket>;

/** A TCP connector with a connect timeout, optionally announcing the client with PROXY protocol v2. */
export function tcpConnector(host: string, port: number, timeoutMs: number, proxyProtocol = false): BackendConnector {
  return (ends) =>
    new Promise<Socket>((resolve, reject) => {
      const socket = netConnect({ host, port });
      const timer = setTimeout(() => {
        socket.destroy();
        reject(new AuthError('backend_unavailable', `connect to ${host}:${port} timed out`));
      }, timeoutMs);
      socket.once('connect', () => {
        clearTimeout(timer);
        socket.removeAllListeners('error');
        socket.setNoDelay(true);
        socket.setKeepAlive(true, 60_000);
        if (proxyProtocol) socket.write(ends ? encodeProxyV2(ends.client, ends.local) : encodeProxyV2Local());
        resolve(socket);
      });
      socket.once('error', (err) => {
        clearTimeout(timer);
        reject(new AuthError('backend_unavailable', `connect to ${host}:${port} failed: ${err.message}`, { cause: err }));
      });
    });
}

/** Capabilities from a `[CAPABILITY ...]` response code or a `* CAPABILITY` line. */
export function parseCapabilities(line: string): string[] | undefined {
  const code = /^\S+ (?:OK|PREAUTH) \[CAPABILITY ([^\]]*)\]/i.exec(line) ?? /^\* CAPABILITY (.*)$/i.exec(line);
  return code?.[1]?.split(' ').filter((c) => c.length > 0);
}

const MAX_BACKEND_LINE = 1 << 20;

/**
 * A pre-login conversation with the backend: greeting, ID, login. Reads lines, sends commands
 * with its own tags, and hands the socket (and any bytes read past the login reply) to the relay.
 */
export class ImapBackendConversation {
  private buffer: Buffer = Buffer.alloc(0);
  private waiters: Array<() => void> = [];
  private failure: Error | undefined;
  private tagCounter = 0;
  private readonly onData = (chunk: Buffer) => {
    this.buffer = this.buffer.length === 0 ? chunk : Buffer.concat([this.buffer, chunk]);
    if (this.buffer.length > MAX_BACKEND_LINE && this.buffer.indexOf(0x0a) < 0) {
      this.fail(new AuthError('backend_unavailable', 'backend sent an over-long line'));
    }
    this.wake();
  };
  private readonly onEnd = () => this.fail(new AuthError('backend_unavailable', 'backend closed the connection'));
  private readonly onError = (err: Error) =>
    this.fail(new AuthError('backend_unavailable', `backend connection failed: ${err.message}`, { cause: err }));

  /** Capabilities from the backend's greeting, when it sent them. */
  greetingCapabilities: string[] | undefined;

  constructor(
    readonly socket: Socket,
    private readonly responseTimeoutMs: number,
  ) {
    socket.on('data', this.onData);
    socket.on('end', this.onEnd);
    socket.on('close', this.onEnd);
    socket.on('error', this.onError);
  }

  /** Reads the greeting; a backend that does not greet with `* OK` is unavailable. */
  async greeting(): Promise<void> {
    const line = await this.readLine();
    if (!/^\* OK\b/i.test(line)) {
      throw new AuthError('backend_unavailable', `unexpected backend greeting: ${line.slice(0, 200)}`);
    }
    this.greetingCapabilities = parseCapabilities(line);
  }

  /** The next tag for a command of ours. */
  nextTag(): string {
    this.tagCounter += 1;
    return `sg${this.tagCounter}`;
  }

  /** Sends raw bytes. */
  write(data: string | Buffer): void {
    this.socket.write(data);
  }

  /** Reads lines until the tagged reply to `tag`; returns it and the untagged lines before it. */
  async readTagged(tag: string): Promise<{ line: string; untagged: string[] }> {
    const untagged: string[] = [];
    for (;;) {
      const line = await this.readLine();
      if (line.startsWith(`${tag} `)) return { line, untagged };
      if (/^\* BYE\b/i.test(line)) {
        throw new AuthError('backend_unavailable', `backend said: ${line.slice(0, 200)}`);
      }
      untagged.push(line);
    }
  }

  /** Reads lines until a continuation request (`+`) or the tagged reply to `tag`. */
  async readContinuationOrTagged(tag: string): Promise<{ continuation: boolean; line: string }> {
    for (;;) {
      const line = await this.readLine();
      if (line.startsWith('+')) return { continuation: true, line };
      if (line.startsWith(`${tag} `)) return { continuation: false, line };
      if (/^\* BYE\b/i.test(line)) {
        throw new AuthError('backend_unavailable', `backend said: ${line.slice(0, 200)}`);
      }
    }
  }

  /** Sends `ID` with the real client's address, so the backend logs and rate-limits the client. */
  async sendId(fields: Array<[string, string]>): Promise<string> {
    const tag = this.nextTag();
    const list = fields
      .map(([k, v]) => `${encodeAstring(Buffer.from(k), { literal: false, literalPlus: false }).text} ${quoteIdValue(v)}`)
      .join(' ');
    this.write(`${tag} ID (${list})\r\n`);
    return tag;
  }

  /**
   * Sends a command whose string arguments may need literals: with LITERAL+ in one write,
   * otherwise waiting for each `+` as RFC 3501 requires.
   */
  async sendCommand(
    tag: string,
    parts: Array<{ text: string; literal?: Buffer }>,
    literalPlus: boolean,
  ): Promise<{ line: string } | undefined> {
    for (const [i, part] of parts.entries()) {
      const last = i === parts.length - 1;
      if (part.literal === undefined) {
        this.write(`${part.text}${last ? '\r\n' : ''}`);
        continue;
      }
      this.write(`${part.text}\r\n`);
      if (!literalPlus) {
        const reply = await this.readContinuationOrTagged(tag);
        if (!reply.continuation) return { line: reply.line };
      }
      this.write(part.literal);
      if (last) this.write('\r\n');
    }
    return undefined;
  }

  /** Stops reading for the conversation and returns bytes that arrived after the login reply. */
  detach(): Buffer {
    this.socket.off('data', this.onData);
    this.socket.off('end', this.onEnd);
    this.socket.off('close', this.onEnd);
    this.socket.off('error', this.onError);
    const rest = this.buffer;
    this.buffer = Buffer.alloc(0);
    return rest;
  }

  /** Ends the conversation without a login (after a refusal, or on error). */
  close(): void {
    this.detach();
    this.socket.on('error', () => undefined);
    if (!this.socket.destroyed) this.socket.end(`${this.nextTag()} LOGOUT\r\n`);
    setTimeout(() => this.socket.destroy(), 2000).unref();
  }

  private fail(error: Error): void {
    if (!this.failure) this.failure = error;
    this.wake();
  }

  private wake(): void {
    const waiters = this.waiters;
    this.waiters = [];
    for (const w of waiters) w();
  }

  private async readLine(): Promise<string> {
    const deadline = Date.now() + this.responseTimeoutMs;
    for (;;) {
      const end = this.buffer.indexOf(0x0a);
      if (end >= 0) {
        const line = this.buffer.subarray(0, end).toString('utf8').replace(/\r$/, '');
        this.buffer = this.buffer.subarray(end + 1);
        return line;
      }
      if (this.failure) throw this.failure;
      const remaining = deadline - Date.now();
      if (remaining <= 0) throw new AuthError('backend_unavailable', 'backend did not answer in time');
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, remaining);
        this.waiters.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
  }
}

function quoteIdValue(value: string): string {
  // ID values are shown in logs: keep them printable and short rather than using literals.
  const clean = value.replace(/[^\x20-\x7e]/g, '?').slice(0, 1024);
  return `"${clean.replace(/[\\"]/g, (c) => `\\${c}`)}"`;
}

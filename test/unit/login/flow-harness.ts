/**
 * In-process pieces for driving a session over a loopback socket pair: a client that reads lines,
 * a scripted backend on the other end of another pair, a fake validator, an instant clock.
 */
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect as tlsConnect, createSecureContext, type SecureContext, type TLSSocket } from 'node:tls';
import { pino, type Logger } from 'pino';
import type { TokenIdentity, TokenValidator } from '../../../src/auth/validator.js';
import { configSchema } from '../../../src/config/schema.js';
import { AuthError } from '../../../src/errors.js';
import { FailureTracker } from '../../../src/login/failures.js';
import type { FlowClock } from '../../../src/login/flow.js';
import type { SessionOptions } from '../../../src/login/options.js';
import type { BackendConnector } from '../../../src/net/connector.js';
import { Metrics } from '../../../src/observe/metrics.js';
import { generateDevCertificate } from '../../../src/tls/devcert.js';
import { LineReader } from '../../support/line-reader.js';

export const MASTER = { user: 'gate-master', password: 'master-secret-pw', separator: '*' };

/** Both ends of a loopback TCP connection. */
export async function socketPair(): Promise<{ server: Socket; client: Socket }> {
  const listener = createServer({ allowHalfOpen: true });
  await new Promise<void>((resolve) => listener.listen(0, '127.0.0.1', resolve));
  const { port } = listener.address() as { port: number };
  const accepted = new Promise<Socket>((resolve) => listener.once('connection', resolve));
  const { connect } = await import('node:net');
  const client = connect(port, '127.0.0.1');
  const server = await accepted;
  await new Promise<void>((resolve) => (client.readyState === 'open' ? resolve() : client.once('connect', () => resolve())));
  listener.close();
  return { server, client };
}

/** A client's view of a session: lines to send, lines to read. */
export class TestClient {
  reader: LineReader;
  constructor(public socket: Socket) {
    this.reader = new LineReader(socket);
  }

  send(text: string): void {
    this.socket.write(text);
  }

  line(): Promise<string> {
    return this.reader.next(2000);
  }

  async lines(n: number): Promise<string[]> {
    const out: string[] = [];
    for (let i = 0; i < n; i++) out.push(await this.line());
    return out;
  }

  /** Resolves once the server has closed the connection. */
  closed(): Promise<void> {
    return new Promise((resolve) => (this.socket.destroyed || this.reader.ended ? resolve() : this.socket.once('close', () => resolve())));
  }

  /** Upgrades the connection to TLS (after the server's go-ahead). */
  async startTls(): Promise<void> {
    const secure: TLSSocket = tlsConnect({ socket: this.socket, rejectUnauthorized: false, servername: 'localhost' });
    await new Promise<void>((resolve, reject) => {
      secure.once('secureConnect', resolve);
      secure.once('error', reject);
    });
    this.socket = secure;
    this.reader = new LineReader(secure);
  }
}

/** A certificate for STARTTLS, made once per test file. */
export async function testCertificate(): Promise<{ context: SecureContext; cleanup(): void }> {
  const dir = mkdtempSync(join(tmpdir(), 'sasl-gate-dialect-'));
  const cert = await generateDevCertificate(dir);
  const context = createSecureContext({ cert: readFileSync(cert.certPath), key: readFileSync(cert.keyPath) });
  return { context, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

/** A validator that knows a few tokens: `alice-token` is alice's, `outage` finds the provider down. */
export const fakeValidator: TokenValidator = {
  async validate(token: string): Promise<TokenIdentity> {
    if (token === 'alice-token') return { identity: 'alice@example.test', claim: 'email', strategy: 'jwt', expiresAt: undefined, claims: {} };
    if (token === 'outage') throw new AuthError('provider_unavailable', 'provider did not answer');
    throw new AuthError('expired', 'the token has expired');
  },
};

/** A clock whose waits end only when the test says so. */
export class ManualClock implements FlowClock {
  private readonly pending = new Set<() => void>();

  now(): number {
    return 0;
  }

  after(_ms: number): { elapsed: Promise<void>; cancel(): void } {
    let fire = () => undefined as void;
    const elapsed = new Promise<void>((resolve) => {
      fire = () => {
        this.pending.delete(fire);
        resolve();
      };
    });
    this.pending.add(fire);
    return { elapsed, cancel: () => void this.pending.delete(fire) };
  }

  /** How many waits are running. */
  get waiting(): number {
    return this.pending.size;
  }

  /** Ends every running wait. */
  elapse(): void {
    for (const fire of [...this.pending]) fire();
  }
}

/** The shared session options for a test, with overrides. */
export function sessionOptions(
  overrides: Partial<Omit<SessionOptions, 'limits'>> & { limits?: Partial<SessionOptions['limits']> } = {},
): SessionOptions & { logLines: string[] } {
  const logLines: string[] = [];
  const log: Logger = pino({ level: 'debug' }, { write: (line: string) => void logLines.push(line) });
  const { limits, ...rest } = overrides;
  return {
    listener: 'test',
    log,
    clientAddress: undefined,
    starttls: undefined,
    // No failure delays here: the login flow's own tests cover them on their clock.
    failures: new FailureTracker({ baseDelayMs: 0 }),
    metrics: new Metrics(),
    validator: fakeValidator,
    oauth: { issuer: 'https://id.example.test', scope: 'openid email' },
    master: MASTER,
    directoryVerdict: undefined,
    appPasswords: undefined,
    appPasswordsOnly: false,
    ...rest,
    limits: { ...configSchema.shape.limits.parse({}), ...limits },
    logLines,
  };
}

/**
 * A backend connector whose connections are answered by `script`: it gets each line the gate
 * sends and a function to answer with. Every line received is kept in `received`.
 */
export function scriptedBackend(greeting: string, script: (line: string, reply: (text: string) => void) => void) {
  const received: string[] = [];
  const sockets: Socket[] = [];
  const connect: BackendConnector = async () => {
    const { server, client } = await socketPair();
    sockets.push(server, client);
    const reply = (text: string) => server.write(`${text}\r\n`);
    let buffer = '';
    server.on('data', (chunk: Buffer) => {
      buffer += chunk.toString('latin1');
      for (let end = buffer.indexOf('\r\n'); end >= 0; end = buffer.indexOf('\r\n')) {
        const line = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        received.push(line);
        script(line, reply);
      }
    });
    server.on('error', () => undefined);
    reply(greeting);
    return client;
  };
  return { connect, received, close: () => sockets.forEach((s) => s.destroy()) };
}

/** Weak references to a session and its connection (a private part: it holds the framer, the logger and the timers). */
export function sessionRefs(session: object): Array<WeakRef<object>> {
  return [new WeakRef(session), new WeakRef((session as { connection: object }).connection)];
}

/** How many of `refs` are still alive after a few rounds of the event loop and garbage collection. */
export async function aliveAfterGc(refs: ReadonlyArray<WeakRef<object>>): Promise<number> {
  setFlagsFromString('--expose-gc');
  const gc = runInNewContext('gc') as () => void;
  const alive = () => refs.filter((ref) => ref.deref() !== undefined).length;
  for (let i = 0; i < 5 && alive() > 0; i++) {
    await new Promise((resolve) => setImmediate(resolve));
    gc();
  }
  return alive();
}

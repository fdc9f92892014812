/**
 * The whole chain for integration tests: a real Dovecot, a real OpenID provider and sasl-gate
 * itself, configured through the same YAML loader users use, with every log line captured so
 * tests can check what was (and was not) logged.
 */
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { connect as tlsConnect } from 'node:tls';
import { stringify } from 'yaml';
import { loadConfig } from '../../src/config/load.js';
import { startDovecot, type DovecotInstance } from '../../tools/dovecot.js';
import { startDevIdp, type DevIdp, type DevIdpOptions } from '../../tools/idp.js';
import { startPostfix, type PostfixInstance } from '../../tools/postfix.js';
import { createLogger } from '../../src/observe/logger.js';
import { ensureDevCertificate } from '../../src/tls/devcert.js';
import { startGate, type GateDependencies, type RunningGate } from '../../src/gate.js';
import { keepLog, secret } from './evidence.js';
import { LineReader } from './line-reader.js';

export const USERS = [
  { name: 'alice@example.test', password: secret('alice-Pa55word', 'password') },
  { name: 'bob@example.test', password: secret('bob-Pa55word', 'password') },
];
export const MASTER = { user: 'sasl-gate-master', password: secret('master-Pa55-9f3k2', 'master password') };

/** Records every token the IdP hands out (and its signature alone, in case a log cut it). */
function recordTokens(idp: DevIdp): DevIdp {
  const mint = idp.mintAccessToken.bind(idp);
  const sign = idp.signToken.bind(idp);
  const record = (token: string) => {
    secret(token, 'access token');
    const signature = token.split('.')[2];
    if (signature) secret(signature, 'token signature');
    return token;
  };
  idp.mintAccessToken = async (opts) => record(await mint(opts));
  idp.signToken = async (claims, opts) => record(await sign(claims, opts));
  secret(idp.clientSecret, 'client secret');
  return idp;
}

export interface Stack {
  dovecot: DovecotInstance;
  /** Present when the stack was started with `smtp`. */
  postfix: PostfixInstance | undefined;
  /** The SMTPS listener's port (0 without `smtp`). */
  smtpPort: number;
  /** The POP3S listener's port (0 without `pop3`). */
  pop3Port: number;
  /** The POP3 listener with STLS (0 without `pop3`). */
  pop3StarttlsPort: number;
  /** The ManageSieve listener with implicit TLS (0 without `sieve`). */
  sievePort: number;
  /** The ManageSieve listener with STARTTLS (0 without `sieve`). */
  sieveStarttlsPort: number;
  idp: DevIdp;
  gate: RunningGate;
  host: string;
  imapPort: number;
  /** PEM of the CA that signed the proxy's certificate. */
  ca: string;
  /** The certificate files sasl-gate was configured with. */
  tlsPaths: { cert: string; key: string };
  /** Every log line sasl-gate wrote, parsed. */
  logs: Array<Record<string, unknown>>;
  /** The raw log text, for secret scans. */
  rawLog(): string;
  close(): Promise<void>;
}

export interface StackOptions {
  /** Top-level configuration keys, replacing the defaults. */
  config?: Record<string, unknown>;
  /** Keys merged into the default `oauth` section. */
  oauth?: Record<string, unknown>;
  /** Options for the development IdP. */
  idp?: Partial<DevIdpOptions>;
  /** Also start Postfix (delivering into Dovecot) and an SMTPS listener in front of it. */
  smtp?: { login: 'xclient' | 'master' };
  /**
   * Also serve POP3 from Dovecot, with a POP3S and a POP3 STLS listener in front of it; `proxyProtocol`
   * reaches Dovecot's POP3 with a PROXY v2 header instead of XCLIENT.
   */
  pop3?: boolean | { proxyProtocol: true };
  /**
   * Also serve ManageSieve from Dovecot (with Sieve filtering at delivery), with a ManageSieve STARTTLS
   * and an implicit-TLS listener in front of it; `proxyProtocol` reaches Dovecot's ManageSieve with a
   * PROXY v2 header instead of XCLIENT.
   */
  sieve?: boolean | { proxyProtocol: true };
  /** Seams of the gate besides its logger (e.g. the app-password service). */
  deps?: Omit<GateDependencies, 'log'>;
}

/** Starts Dovecot, the development IdP and sasl-gate, configured through the YAML loader. */
export async function startStack(options: StackOptions = {}): Promise<Stack> {
  const dir = mkdtempSync(join(tmpdir(), 'sasl-gate-stack-'));
  const [dovecot, idp] = await Promise.all([
    startDovecot({
      users: USERS,
      master: MASTER,
      authPenalty: false,
      ...(options.pop3 ? { pop3: true } : {}),
      ...(options.sieve ? { sieve: true } : {}),
      ...(typeof options.pop3 === 'object' || typeof options.sieve === 'object' ? { haproxy: true } : {}),
    }),
    startDevIdp({
      users: USERS.map((u) => ({ id: u.name.split('@')[0]!, email: u.name })),
      audience: 'mail',
      ...options.idp,
    }).then(recordTokens),
  ]);
  const certs = await ensureDevCertificate(join(dir, 'certs'));
  const postfix = options.smtp ? await startPostfix({ dovecot, domain: 'example.test' }) : undefined;
  const yaml = {
    listeners: [
      { protocol: 'imap', bind: '127.0.0.1:0', tls: 'implicit' },
      ...(postfix ? [{ protocol: 'smtp', bind: '127.0.0.1:0', tls: 'implicit' }] : []),
      ...(options.pop3
        ? [
            { protocol: 'pop3', bind: '127.0.0.1:0', tls: 'implicit', name: 'pop3s' },
            { protocol: 'pop3', bind: '127.0.0.1:0', tls: 'starttls', name: 'pop3-stls' },
          ]
        : []),
      ...(options.sieve
        ? [
            { protocol: 'sieve', bind: '127.0.0.1:0', tls: 'implicit', name: 'sieve-tls' },
            { protocol: 'sieve', bind: '127.0.0.1:0', tls: 'starttls', name: 'sieve-starttls' },
          ]
        : []),
    ],
    tls: { cert: certs.certPath, key: certs.keyPath },
    backends: {
      imap: { host: dovecot.host, port: dovecot.imapPort },
      ...(postfix ? { smtp: { host: postfix.host, port: postfix.submissionPort, login: options.smtp!.login } } : {}),
      ...(options.pop3
        ? {
            pop3:
              typeof options.pop3 === 'object'
                ? { host: dovecot.host, port: dovecot.pop3HaproxyPort, proxyProtocol: true }
                : { host: dovecot.host, port: dovecot.pop3Port },
          }
        : {}),
      ...(options.sieve
        ? {
            sieve:
              typeof options.sieve === 'object'
                ? { host: dovecot.host, port: dovecot.sieveHaproxyPort, proxyProtocol: true }
                : { host: dovecot.host, port: dovecot.sievePort },
          }
        : {}),
    },
    master: MASTER,
    oauth: {
      issuer: idp.issuer,
      audience: ['mail'],
      validation: ['jwt'],
      clientId: idp.clientId,
      clientSecret: idp.clientSecret,
      ...options.oauth,
    },
    // Tests fail logins on purpose, from one address: growing delays are tested on their own.
    limits: { authFailureDelaySeconds: 0 },
    ...options.config,
  };
  const configPath = join(dir, 'sasl-gate.yaml');
  writeFileSync(configPath, stringify(yaml));
  const { config } = loadConfig({ file: configPath, env: {} });

  let raw = '';
  const logs: Array<Record<string, unknown>> = [];
  const sink = new Writable({
    write(chunk: Buffer, _encoding, callback) {
      const text = chunk.toString('utf8');
      raw += text;
      for (const line of text.split('\n')) if (line.trim()) logs.push(JSON.parse(line) as Record<string, unknown>);
      callback();
    },
  });
  const log = createLogger({ level: 'debug', destination: sink });
  const gate = await startGate(config, { ...options.deps, log });
  const imap = gate.listeners.find((l) => l.protocol === 'imap')!;
  const smtp = gate.listeners.find((l) => l.protocol === 'smtp');
  const [pop3s, pop3Stls] = gate.listeners.filter((l) => l.protocol === 'pop3');
  const [sieveTls, sieveStarttls] = gate.listeners.filter((l) => l.protocol === 'sieve');
  return {
    dovecot,
    postfix,
    idp,
    gate,
    host: '127.0.0.1',
    imapPort: imap.port,
    smtpPort: smtp?.port ?? 0,
    pop3Port: pop3s?.port ?? 0,
    pop3StarttlsPort: pop3Stls?.port ?? 0,
    sievePort: sieveTls?.port ?? 0,
    sieveStarttlsPort: sieveStarttls?.port ?? 0,
    ca: readFileSync(certs.caPath, 'utf8'),
    tlsPaths: { cert: certs.certPath, key: certs.keyPath },
    logs,
    rawLog: () => raw,
    async close() {
      keepLog(raw, `stack-${dir.split('-').at(-1)}`);
      await gate.close(0);
      await Promise.all([dovecot.stop(), idp.close(), postfix?.stop()]);
    },
  };
}

/** A raw IMAP client over TLS that shows the exact lines sasl-gate sends. */
export class TlsImap {
  greeting = '';
  private tagCounter = 0;
  private readonly reader: LineReader;

  private constructor(readonly socket: import('node:tls').TLSSocket) {
    this.reader = new LineReader(socket);
  }

  /** Connects with TLS, checking the certificate against `ca`, and reads the greeting. */
  static async connect(stack: Pick<Stack, 'host' | 'imapPort' | 'ca'> & { localAddress?: string }): Promise<TlsImap> {
    const socket = tlsConnect({
      host: stack.host,
      port: stack.imapPort,
      ca: stack.ca,
      servername: 'localhost',
      ...(stack.localAddress ? { localAddress: stack.localAddress } : {}),
    });
    await new Promise<void>((resolve, reject) => {
      socket.once('secureConnect', resolve);
      socket.once('error', reject);
    });
    const client = new TlsImap(socket);
    client.greeting = await client.readLine();
    return client;
  }

  /** Next line, without CRLF; rejects when the server closed or nothing came within the timeout. */
  readLine(timeoutMs = 10_000): Promise<string> {
    return this.reader.next(timeoutMs);
  }

  /** Whether the server has closed the connection (after draining what it sent). */
  waitClosed(timeoutMs = 5000): Promise<boolean> {
    return this.reader.waitEnded(timeoutMs);
  }

  write(text: string | Buffer): void {
    this.socket.write(text);
  }

  /** A fresh tag. */
  tag(): string {
    this.tagCounter += 1;
    return `t${this.tagCounter}`;
  }

  /** Sends `tag command` and returns all lines up to and including the tagged one. */
  async command(command: string): Promise<{ lines: string[]; tagged: string }> {
    const tag = this.tag();
    this.write(`${tag} ${command}\r\n`);
    return this.until(tag);
  }

  /** Reads lines until the tagged reply for `tag`. */
  async until(tag: string): Promise<{ lines: string[]; tagged: string }> {
    const lines: string[] = [];
    for (;;) {
      const line = await this.readLine();
      lines.push(line);
      if (line.startsWith(`${tag} `)) return { lines, tagged: line };
    }
  }

  close(): void {
    this.socket.destroy();
  }
}

/** XOAUTH2 initial response for a user and token. */
export function xoauth2(user: string, token: string): string {
  return secret(Buffer.from(`user=${user}\x01auth=Bearer ${token}\x01\x01`).toString('base64'), 'XOAUTH2 message');
}

/** OAUTHBEARER initial response (RFC 7628), optionally without `a=`. */
export function oauthbearer(user: string | undefined, token: string, host = 'localhost', port = 993): string {
  const gs2 = user === undefined ? 'n,,' : `n,a=${user.replace(/=/g, '=3D').replace(/,/g, '=2C')},`;
  return secret(Buffer.from(`${gs2}\x01host=${host}\x01port=${port}\x01auth=Bearer ${token}\x01\x01`).toString('base64'), 'OAUTHBEARER message');
}

/** Base64 of SASL PLAIN. */
export function plain(authzid: string, authcid: string, password: string): string {
  return secret(Buffer.from(`${authzid}\0${authcid}\0${password}`).toString('base64'), 'PLAIN message');
}

/**
 * One XOAUTH2 (or OAUTHBEARER) login on a fresh connection. Returns the final tagged line, and
 * the decoded error challenge when there was one (answered with the dummy reply).
 */
export async function tokenLogin(
  stack: Pick<Stack, 'host' | 'imapPort' | 'ca'>,
  user: string,
  token: string,
  mechanism: 'XOAUTH2' | 'OAUTHBEARER' = 'XOAUTH2',
): Promise<{ tagged: string; challenge?: unknown }> {
  const c = await TlsImap.connect(stack);
  try {
    const response = mechanism === 'XOAUTH2' ? xoauth2(user, token) : oauthbearer(user, token);
    c.write(`a1 AUTHENTICATE ${mechanism} ${response}\r\n`);
    const first = await c.readLine(30_000);
    if (first.startsWith('+ ')) {
      const challenge = JSON.parse(Buffer.from(first.slice(2), 'base64').toString('utf8')) as unknown;
      c.write('AQ==\r\n');
      return { tagged: (await c.until('a1')).tagged, challenge };
    }
    return { tagged: first.startsWith('a1 ') ? first : (await c.until('a1')).tagged };
  } finally {
    c.close();
  }
}

/** The two ways sasl-gate logs token users into Postfix. */
export const SMTP_LOGIN_MODES = ['xclient', 'master'] as const;
export type SmtpLoginMode = (typeof SMTP_LOGIN_MODES)[number];

/** One stack with Postfix per SMTP login mode, started side by side; none is left running if one fails. */
export async function startSmtpStacks(options: Omit<StackOptions, 'smtp'> = {}): Promise<Record<SmtpLoginMode, Stack>> {
  const started = await Promise.allSettled(SMTP_LOGIN_MODES.map((login) => startStack({ ...options, smtp: { login } })));
  const failure = started.find((r) => r.status === 'rejected');
  if (failure) {
    await Promise.all(started.map((r) => (r.status === 'fulfilled' ? r.value.close() : undefined)));
    throw failure.reason;
  }
  const [xclient, master] = started.map((r) => (r as PromiseFulfilledResult<Stack>).value) as [Stack, Stack];
  return { xclient, master };
}

/**
 * The real client address reaches the backend in every mode, and Dovecot's and Postfix's logs show
 * it. Clients arrive through a trusted load balancer (127.0.0.5) that announces them with a PROXY
 * v2 header as 198.51.100.23, an address no loopback connection could have, so every
 * `rip=198.51.100.23` / `client=unknown[198.51.100.23]` in a backend's log proves sasl-gate passed
 * the client on: with `ID` and `XCLIENT`, with master-user logins, with password pass-through, and
 * with a PROXY v2 header of its own towards Dovecot's and Postfix's PROXY listeners. A second
 * Dovecot keeps its production default `disable_plaintext_auth = yes`, where only connections Dovecot
 * deems secured may log in.
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { connect as netConnect } from 'node:net';
import { connect as tlsConnect, type TLSSocket } from 'node:tls';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import { loadConfig } from '../../src/config/load.js';
import { startDovecot, type DovecotInstance } from '../../tools/dovecot.js';
import { startDevIdp, type DevIdp } from '../../tools/idp.js';
import { startPostfix, type PostfixInstance } from '../../tools/postfix.js';
import { createLogger } from '../../src/observe/logger.js';
import { ensureDevCertificate } from '../../src/tls/devcert.js';
import { startGate, type RunningGate } from '../../src/gate.js';
import { encodeProxyV2 } from '../../src/net/proxy-protocol.js';
import { keepLog, secret } from '../support/evidence.js';
import { MASTER, plain, USERS, xoauth2 } from '../support/stack.js';
import { waitForLine } from '../support/wait.js';

const [ALICE, BOB] = USERS as [(typeof USERS)[0], (typeof USERS)[0]];
/** The load balancer in front of sasl-gate, and the client it announces (RFC 5737 documentation range). */
const BALANCER = '127.0.0.5';
const CLIENT = '198.51.100.23';
const CLIENT_RE = CLIENT.replace(/\./g, '\\.');
/** Postfix's `client=name[address]:port` for CLIENT, whatever name Postfix holds for it. */
const postfixClient = (port: number) => `: client=[^\\s\\[]+\\[${CLIENT_RE}\\]:${port}`;

/** A TLS client that reaches sasl-gate through the load balancer: PROXY v2 header, then TLS. */
class ProxiedClient {
  private buffer = '';
  private readonly lines: string[] = [];
  private waiter: (() => void) | undefined;
  private closed = false;

  private constructor(private readonly socket: TLSSocket) {
    socket.on('data', (chunk: Buffer) => {
      this.buffer += chunk.toString('latin1');
      for (let end = this.buffer.indexOf('\r\n'); end >= 0; end = this.buffer.indexOf('\r\n')) {
        this.lines.push(this.buffer.slice(0, end));
        this.buffer = this.buffer.slice(end + 2);
      }
      this.waiter?.();
    });
    socket.on('error', () => undefined);
    socket.on('close', () => {
      this.closed = true;
      this.waiter?.();
    });
  }

  /** Connects from the balancer's address, announces `clientPort` of CLIENT, and does the TLS handshake. */
  static async open(port: number, clientPort: number, ca: string): Promise<ProxiedClient> {
    const raw = netConnect({ host: '127.0.0.1', port, localAddress: BALANCER });
    await new Promise<void>((resolve, reject) => raw.once('connect', resolve).once('error', reject));
    raw.write(encodeProxyV2({ address: CLIENT, port: clientPort }, { address: '127.0.0.1', port }));
    const secure = tlsConnect({ socket: raw, ca, servername: 'localhost' });
    await new Promise<void>((resolve, reject) =>
      secure
        .once('secureConnect', resolve)
        .once('error', reject)
        .once('close', () => reject(new Error('closed during the TLS handshake'))),
    );
    return new ProxiedClient(secure);
  }

  async line(timeoutMs = 15_000): Promise<string> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const next = this.lines.shift();
      if (next !== undefined) return next;
      if (this.closed) throw new Error('connection closed');
      const remaining = deadline - Date.now();
      if (remaining <= 0) throw new Error('timeout waiting for a line');
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, remaining);
        this.waiter = () => {
          clearTimeout(timer);
          resolve();
        };
      });
      this.waiter = undefined;
    }
  }

  /** Reads lines up to and including one matching `pattern`. */
  async until(pattern: RegExp): Promise<string[]> {
    const seen: string[] = [];
    for (;;) {
      const line = await this.line();
      seen.push(line);
      if (pattern.test(line)) return seen;
    }
  }

  write(text: string): void {
    this.socket.write(text);
  }

  /** Sends an IMAP command with `tag` and returns its tagged reply. */
  async imap(tag: string, command: string): Promise<string> {
    this.socket.write(`${tag} ${command}\r\n`);
    return (await this.until(new RegExp(`^${tag} `))).at(-1)!;
  }

  /** Sends an SMTP command and returns the last line of its (possibly multi-line) reply. */
  async smtp(command: string): Promise<string> {
    this.socket.write(`${command}\r\n`);
    return (await this.until(/^\d{3} /)).at(-1)!;
  }

  close(): void {
    this.socket.destroy();
  }
}

/** The first line of a backend's log, written after `offset`, that matches; waits for it a little. */
function logLine(backend: Pick<DovecotInstance | PostfixInstance, 'readLog'>, offset: number, pattern: RegExp, timeoutMs = 5_000): Promise<string> {
  return waitForLine(async () => (await backend.readLog()).slice(offset), pattern, { timeoutMs });
}

const logLength = async (backend: Pick<DovecotInstance | PostfixInstance, 'readLog'>) => (await backend.readLog()).length;

interface Gate {
  running: RunningGate;
  imapPort: number;
  smtpPort: number;
  logs: Array<Record<string, unknown>>;
  raw: () => string;
}

describe('the real client address reaches the backend', () => {
  const dir = mkdtempSync(join(tmpdir(), 'sasl-gate-client-address-'));
  let dovecot: DovecotInstance;
  /** A second Dovecot with its production default `disable_plaintext_auth = yes`. */
  let strictDovecot: DovecotInstance;
  let postfix: PostfixInstance;
  let idp: DevIdp;
  let ca: string;
  let certs: { certPath: string; keyPath: string };
  const gates: Gate[] = [];
  /** IMAP with ID, SMTP with XCLIENT (LOGIN for token users, ADDR for everyone). */
  let idMode: Gate;
  /** IMAP with a PROXY v2 header to Dovecot's haproxy listener, SMTP with the master user (and XCLIENT ADDR). */
  let imapProxy: Gate;
  /** SMTP with a PROXY v2 header to Postfix's proxy submission port, token users by master login. */
  let smtpProxy: Gate;
  /** IMAP with ID, and IMAP with a PROXY v2 header, to the strict Dovecot. */
  let strictId: Gate;
  let strictProxy: Gate;

  /** Starts sasl-gate from a YAML file, with PROXY listeners trusting the balancer only. */
  async function gate(name: string, backends: Record<string, unknown>): Promise<Gate> {
    const yaml = {
      listeners: [
        { protocol: 'imap', bind: '127.0.0.1:0', tls: 'implicit', proxyProtocol: true, trustedProxies: [`${BALANCER}/32`] },
        { protocol: 'smtp', bind: '127.0.0.1:0', tls: 'implicit', proxyProtocol: true, trustedProxies: [`${BALANCER}/32`] },
      ],
      tls: { cert: certs.certPath, key: certs.keyPath },
      backends,
      master: MASTER,
      oauth: {
        issuer: idp.issuer,
        audience: ['mail'],
        validation: ['jwt'],
        clientId: idp.clientId,
        clientSecret: idp.clientSecret,
        usernameClaims: ['email', 'preferred_username'],
      },
      limits: { authFailureDelaySeconds: 0 },
    };
    const configPath = join(dir, `${name}.yaml`);
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
    const running = await startGate(config, { log: createLogger({ level: 'debug', destination: sink }) });
    const created: Gate = {
      running,
      imapPort: running.listeners[0]!.port,
      smtpPort: running.listeners[1]!.port,
      logs,
      raw: () => raw,
    };
    gates.push(created);
    return created;
  }

  const token = async (user: string) => secret(await idp.mintAccessToken({ user }), 'access token');

  beforeAll(async () => {
    [dovecot, strictDovecot, idp] = await Promise.all([
      startDovecot({ users: USERS, master: MASTER, authPenalty: false, haproxy: true }),
      startDovecot({ users: USERS, master: MASTER, authPenalty: false, haproxy: true, disablePlaintextAuth: true }),
      startDevIdp({ users: USERS.map((u) => ({ id: u.name.split('@')[0]!, email: u.name })), audience: 'mail' }),
    ]);
    secret(idp.clientSecret, 'client secret');
    const [dev, started] = await Promise.all([
      ensureDevCertificate(join(dir, 'certs')),
      startPostfix({ dovecot, domain: 'example.test', proxyProtocol: true }),
    ]);
    certs = dev;
    postfix = started;
    ca = readFileSync(dev.caPath, 'utf8');
    const imap = { host: dovecot.host, port: dovecot.imapPort };
    const smtp = { host: postfix.host, port: postfix.submissionPort };
    const strict = { host: strictDovecot.host, port: strictDovecot.imapPort };
    [idMode, imapProxy, smtpProxy, strictId, strictProxy] = await Promise.all([
      gate('id-mode', { imap, smtp: { ...smtp, login: 'xclient' } }),
      gate('imap-proxy', { imap: { ...imap, port: dovecot.haproxyPort, proxyProtocol: true }, smtp: { ...smtp, login: 'master' } }),
      gate('smtp-proxy', { imap, smtp: { ...smtp, port: postfix.proxySubmissionPort, login: 'master', proxyProtocol: true } }),
      gate('strict-id', { imap: strict, smtp: { ...smtp, login: 'xclient' } }),
      gate('strict-proxy', { imap: { ...strict, port: strictDovecot.haproxyPort, proxyProtocol: true }, smtp: { ...smtp, login: 'xclient' } }),
    ]);
  });

  afterAll(async () => {
    for (const [i, g] of gates.entries()) keepLog(g.raw(), `client-address-${i}`);
    await Promise.all(gates.map((g) => g.running.close(0)));
    await Promise.all([dovecot?.stop(), strictDovecot?.stop(), postfix?.stop(), idp?.close()]);
    rmSync(dir, { recursive: true, force: true });
  });

  /** One IMAP login through the balancer; returns the tagged reply. */
  async function imapLogin(g: Gate, clientPort: number, command: string): Promise<{ greeting: string; reply: string }> {
    const c = await ProxiedClient.open(g.imapPort, clientPort, ca);
    try {
      const greeting = await c.line();
      const reply = await c.imap('a1', command);
      if (reply.startsWith('a1 OK')) await c.imap('a2', 'LOGOUT');
      return { greeting, reply };
    } finally {
      c.close();
    }
  }

  /** One SMTP session through the balancer: EHLO, AUTH, then MAIL and RCPT so Postfix opens a queue file and logs `client=`. */
  async function smtpSubmission(g: Gate, clientPort: number, auth: string, from: string, to: string): Promise<string[]> {
    const c = await ProxiedClient.open(g.smtpPort, clientPort, ca);
    try {
      const replies = [(await c.until(/^220 /)).at(-1)!, await c.smtp('EHLO client.example')];
      replies.push(await c.smtp(auth));
      if (replies[2]!.startsWith('235')) {
        replies.push(await c.smtp(`MAIL FROM:<${from}>`), await c.smtp(`RCPT TO:<${to}>`), await c.smtp('QUIT'));
      }
      return replies;
    } finally {
      c.close();
    }
  }

  describe('IMAP, client address by ID', () => {
    it('token login: Dovecot logs the client as rip', async () => {
      const offset = await logLength(dovecot);
      const { reply } = await imapLogin(idMode, 50101, `AUTHENTICATE XOAUTH2 ${xoauth2(ALICE.name, await token(ALICE.name))}`);
      expect(reply).toMatch(/^a1 OK /);
      const line = await logLine(dovecot, offset, /imap-login: Info: Login: user=<alice@example\.test>/);
      expect(line).toMatch(new RegExp(`Login: user=<alice@example\\.test>, method=PLAIN, rip=${CLIENT_RE}, lip=127\\.0\\.0\\.1,`));
      // sasl-gate's own log names the client the balancer announced, too.
      expect(idMode.logs.some((l) => l['client'] === CLIENT)).toBe(true);
    });

    it('password login: Dovecot logs the client as rip', async () => {
      const offset = await logLength(dovecot);
      const { reply } = await imapLogin(idMode, 50102, `LOGIN "${BOB.name}" "${BOB.password}"`);
      expect(reply).toMatch(/^a1 OK /);
      const line = await logLine(dovecot, offset, /imap-login: Info: Login: user=<bob@example\.test>/);
      expect(line).toMatch(new RegExp(`Login: user=<bob@example\\.test>, method=PLAIN, rip=${CLIENT_RE},`));
    });
  });

  describe('IMAP, PROXY v2 to Dovecot (haproxy = yes)', () => {
    it("sasl-gate's capability probe (a LOCAL header) still reads Dovecot's capabilities", async () => {
      const c = await ProxiedClient.open(imapProxy.imapPort, 50110, ca);
      try {
        const greeting = await c.line();
        // Not the fallback list (IMAP4rev1 AUTH=PLAIN): Dovecot's own, probed through its PROXY listener.
        expect(greeting).toMatch(/^\* OK \[CAPABILITY IMAP4rev1 .*\bLOGIN-REFERRALS ID ENABLE IDLE LITERAL\+ .*AUTH=XOAUTH2/);
      } finally {
        c.close();
      }
      const probed = imapProxy.logs.find((l) => l['msg'] === 'backend capabilities probed' && l['backend'] === 'imap');
      expect(probed?.['capabilities']).toMatch(/LOGIN-REFERRALS ID ENABLE IDLE/);
      expect(imapProxy.logs.filter((l) => String(l['msg']).startsWith('backend capability probe failed'))).toEqual([]);
      expect(await dovecot.readLog()).not.toMatch(/haproxy: Client disconnected/);
    });

    it('token login: Dovecot logs the client from the PROXY header as rip', async () => {
      const offset = await logLength(dovecot);
      const { reply } = await imapLogin(imapProxy, 50111, `AUTHENTICATE XOAUTH2 ${xoauth2(ALICE.name, await token(ALICE.name))}`);
      expect(reply).toMatch(/^a1 OK \[CAPABILITY IMAP4rev1 /);
      const line = await logLine(dovecot, offset, /imap-login: Info: Login: user=<alice@example\.test>/);
      expect(line).toMatch(new RegExp(`Login: user=<alice@example\\.test>, method=PLAIN, rip=${CLIENT_RE}, lip=127\\.0\\.0\\.1,`));
    });

    it('password login: Dovecot logs the client from the PROXY header as rip', async () => {
      const offset = await logLength(dovecot);
      const { reply } = await imapLogin(imapProxy, 50112, `LOGIN "${BOB.name}" "${BOB.password}"`);
      expect(reply).toMatch(/^a1 OK /);
      const line = await logLine(dovecot, offset, /imap-login: Info: Login: user=<bob@example\.test>/);
      expect(line).toMatch(new RegExp(`Login: user=<bob@example\\.test>, method=PLAIN, rip=${CLIENT_RE},`));
      expect(await dovecot.readLog()).not.toMatch(/haproxy: Client disconnected/);
    });
  });

  describe('IMAP to a Dovecot with disable_plaintext_auth = yes (its default, as in production)', () => {
    it('ID mode: the loopback link counts as secured; Dovecot takes the login and logs the client', async () => {
      const offset = await logLength(strictDovecot);
      const { reply } = await imapLogin(strictId, 50121, `AUTHENTICATE XOAUTH2 ${xoauth2(ALICE.name, await token(ALICE.name))}`);
      expect(reply).toMatch(/^a1 OK /);
      const line = await logLine(strictDovecot, offset, /imap-login: Info: Login: user=<alice@example\.test>/);
      expect(line).toMatch(new RegExp(`Login: user=<alice@example\\.test>, method=PLAIN, rip=${CLIENT_RE}, lip=127\\.0\\.0\\.1, mpid=\\d+, secured,`));
    });

    // Known bug: sasl-gate's PROXY v2 header carries no PP2_TYPE_SSL TLV, so Dovecot takes the
    // connection for plaintext from 198.51.100.23 and refuses every login with NO [PRIVACYREQUIRED].
    it('PROXY v2: the header tells Dovecot the client used TLS; Dovecot takes the login and logs the client', async () => {
      const offset = await logLength(strictDovecot);
      const { reply } = await imapLogin(strictProxy, 50122, `AUTHENTICATE XOAUTH2 ${xoauth2(ALICE.name, await token(ALICE.name))}`);
      expect(reply).toMatch(/^a1 OK /);
      const line = await logLine(strictDovecot, offset, /imap-login: Info: Login: user=<alice@example\.test>/);
      expect(line).toMatch(new RegExp(`Login: user=<alice@example\\.test>, method=PLAIN, rip=${CLIENT_RE}, lip=127\\.0\\.0\\.1, mpid=\\d+, secured,`));
    });
  });

  describe('SMTP', () => {
    it('xclient mode: Postfix logs the client address and port, and the user', async () => {
      const offset = await logLength(postfix);
      const replies = await smtpSubmission(idMode, 50201, `AUTH XOAUTH2 ${xoauth2(ALICE.name, await token(ALICE.name))}`, ALICE.name, BOB.name);
      expect(replies.slice(2)).toEqual(['235 2.7.0 Authentication successful', '250 2.1.0 Ok', '250 2.1.5 Ok', '221 2.0.0 Bye']);
      const line = await logLine(postfix, offset, /: client=/);
      expect(line).toMatch(new RegExp(`${postfixClient(50201)}, sasl_method=XCLIENT, sasl_username=alice@example\\.test$`));
    });

    it('master mode: Postfix logs the client address (XCLIENT ADDR before the master login)', async () => {
      const offset = await logLength(postfix);
      const replies = await smtpSubmission(imapProxy, 50202, `AUTH XOAUTH2 ${xoauth2(ALICE.name, await token(ALICE.name))}`, ALICE.name, BOB.name);
      expect(replies.slice(2)).toEqual(['235 2.7.0 Authentication successful', '250 2.1.0 Ok', '250 2.1.5 Ok', '221 2.0.0 Bye']);
      const line = await logLine(postfix, offset, /: client=/);
      expect(line).toMatch(new RegExp(`${postfixClient(50202)}, sasl_method=PLAIN, sasl_username=alice@example\\.test$`));
    });

    it('PROXY v2 to the proxy submission port: Postfix logs the client address from the header', async () => {
      const offset = await logLength(postfix);
      const replies = await smtpSubmission(smtpProxy, 50203, `AUTH XOAUTH2 ${xoauth2(ALICE.name, await token(ALICE.name))}`, ALICE.name, BOB.name);
      expect(replies.slice(2)).toEqual(['235 2.7.0 Authentication successful', '250 2.1.0 Ok', '250 2.1.5 Ok', '221 2.0.0 Bye']);
      const connect = await logLine(postfix, offset, new RegExp(`postfix/submission/smtpd\\[\\d+\\]: connect from unknown\\[${CLIENT_RE}\\]:50203$`));
      expect(connect).toBeDefined();
      const line = await logLine(postfix, offset, /: client=/);
      expect(line).toMatch(new RegExp(`: client=unknown\\[${CLIENT_RE}\\]:50203, sasl_method=PLAIN, sasl_username=alice@example\\.test$`));
    });

    it("PROXY v2: sasl-gate's extension probe (a LOCAL header) still reads Postfix's EHLO", async () => {
      const c = await ProxiedClient.open(smtpProxy.smtpPort, 50204, ca);
      try {
        await c.until(/^220 /);
        c.write('EHLO client.example\r\n');
        const ehlo = await c.until(/^250 /);
        // Not the fallback list (PIPELINING ENHANCEDSTATUSCODES 8BITMIME): Postfix's own.
        expect(ehlo).toContain('250-SIZE 52428800');
        expect(ehlo).toContain('250-DSN');
      } finally {
        c.close();
      }
      expect(smtpProxy.logs.filter((l) => String(l['msg']).startsWith('backend capability probe failed'))).toEqual([]);
    });

    // Known bug: sasl-gate's XCLIENT carries ADDR and PORT but no NAME, so Postfix keeps the reverse
    // name of sasl-gate's own address and logs (and checks access for) `localhost[198.51.100.23]`.
    it('xclient mode: Postfix names the client unknown, not after sasl-gate\'s own address', async () => {
      const offset = await logLength(postfix);
      const replies = await smtpSubmission(idMode, 50208, `AUTH XOAUTH2 ${xoauth2(ALICE.name, await token(ALICE.name))}`, ALICE.name, BOB.name);
      expect(replies.slice(2)).toEqual(['235 2.7.0 Authentication successful', '250 2.1.0 Ok', '250 2.1.5 Ok', '221 2.0.0 Bye']);
      const line = await logLine(postfix, offset, /: client=/);
      expect(line).toMatch(new RegExp(`: client=unknown\\[${CLIENT_RE}\\]:50208, sasl_method=XCLIENT, sasl_username=alice@example\\.test$`));
    });

    it('password pass-through (XCLIENT ADDR, then the client\'s AUTH PLAIN): Postfix logs the client address', async () => {
      const offset = await logLength(postfix);
      const replies = await smtpSubmission(idMode, 50205, `AUTH PLAIN ${plain('', BOB.name, BOB.password)}`, BOB.name, ALICE.name);
      expect(replies.slice(2)).toEqual(['235 2.7.0 Authentication successful', '250 2.1.0 Ok', '250 2.1.5 Ok', '221 2.0.0 Bye']);
      const line = await logLine(postfix, offset, /: client=/);
      expect(line).toMatch(new RegExp(`${postfixClient(50205)}, sasl_method=PLAIN, sasl_username=bob@example\\.test$`));
    });

    it('password pass-through over PROXY v2: Postfix logs the client address, for a failure too', async () => {
      const offset = await logLength(postfix);
      const replies = await smtpSubmission(smtpProxy, 50206, `AUTH PLAIN ${plain('', BOB.name, BOB.password)}`, BOB.name, ALICE.name);
      expect(replies.slice(2)).toEqual(['235 2.7.0 Authentication successful', '250 2.1.0 Ok', '250 2.1.5 Ok', '221 2.0.0 Bye']);
      const line = await logLine(postfix, offset, /: client=/);
      expect(line).toMatch(new RegExp(`: client=unknown\\[${CLIENT_RE}\\]:50206, sasl_method=PLAIN, sasl_username=bob@example\\.test$`));

      const failed = await smtpSubmission(smtpProxy, 50207, `AUTH PLAIN ${plain('', BOB.name, secret('not-bobs-Pa55word', 'password'))}`, BOB.name, ALICE.name);
      expect(failed[2]).toMatch(/^535 5\.7\.8 /);
      const warning = await logLine(postfix, offset, /SASL PLAIN authentication failed/);
      expect(warning).toMatch(new RegExp(`warning: unknown\\[${CLIENT_RE}\\]:50207: SASL PLAIN authentication failed`));
    });
  });
});

/**
 * sasl-gate's POP3 front door against a real Dovecot POP3 and a real OpenID provider, driven by
 * Python's poplib: token logins download the user's own mail, password logins pass through, and
 * every way of misusing a token, the master user or STLS is refused, with Dovecot's own log as
 * the witness.
 */
import { execFile } from 'node:child_process';
import { chmodSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { connect, createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { connect as tlsConnect } from 'node:tls';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import { loadConfig } from '../../src/config/load.js';
import { runDoctor } from '../../src/doctor.js';
import { runLoad } from '../../src/load/cli.js';
import type { LoadReport } from '../../src/load/report.js';
import { dovecotLogins, masterMentions as masterMentionsIn } from '../support/dovecot-log.js';
import { LineReader } from '../support/line-reader.js';
import { deliverLmtp } from '../support/lmtp.js';
import { poplib, type PoplibStep } from '../support/poplib.js';
import { MASTER, oauthbearer, plain, startStack, USERS, xoauth2, type Stack } from '../support/stack.js';

const [ALICE, BOB] = USERS as [(typeof USERS)[0], (typeof USERS)[0]];
const MESSAGES = [1, 2, 3].map((n) => ({ subject: `pop3 message ${n}`, body: `Body of message ${n}.\n.A line that starts with a dot.\nEnd ${n}.` }));

let stack: Stack;
let dir: string;
let cafile: string;
let aliceToken: string;

beforeAll(async () => {
  stack = await startStack({ pop3: true });
  dir = mkdtempSync(join(tmpdir(), 'sasl-gate-pop3-'));
  cafile = join(dir, 'ca.pem');
  writeFileSync(cafile, stack.ca);
  aliceToken = await stack.idp.mintAccessToken({ user: ALICE.name });
  await deliverLmtp(stack.dovecot.host, stack.dovecot.lmtpPort, ALICE.name, MESSAGES);
});

afterAll(async () => {
  await stack?.close();
});

const pop3s = (steps: PoplibStep[], source?: string) => poplib({ port: stack.pop3Port, tls: 'implicit', cafile, steps, ...(source ? { source } : {}) });

/** Dovecot's pop3 login lines so far. */
const pop3Logins = () => dovecotLogins(stack.dovecot, 'pop3');

/** Dovecot's log lines that mention a login of the master user (successful or not). */
const masterMentions = () => masterMentionsIn(stack.dovecot, MASTER.user);

describe('POP3 through sasl-gate: downloads', () => {
  it('lists capabilities: Dovecot’s, with the token mechanisms, and STLS only before TLS', async () => {
    const [greeting, capa] = await pop3s([{ op: 'capa' }, { op: 'quit' }]);
    expect(greeting!.reply).toBe('+OK sasl-gate ready.');
    expect(capa!.lines).toEqual(expect.arrayContaining(['TOP', 'UIDL', 'USER', 'SASL XOAUTH2 OAUTHBEARER PLAIN LOGIN']));
    expect(capa!.lines).not.toContain('STLS');
    const [, plainCapa] = await poplib({ port: stack.pop3StarttlsPort, tls: 'stls', cafile, steps: [{ op: 'capa' }, { op: 'quit' }] });
    expect(plainCapa!.lines).toContain('STLS');
    expect(plainCapa!.lines!.some((l) => l.startsWith('SASL') || l === 'USER')).toBe(false);
  });

  it('a raw AUTH XOAUTH2 with a token from the provider lists and retrieves every message in one session, from the client’s address', async () => {
    const steps: PoplibStep[] = [{ op: 'raw', arg: `AUTH XOAUTH2 ${xoauth2(ALICE.name, aliceToken)}` }, { op: 'stat' }, { op: 'list' }, { op: 'retr', arg: 1 }, { op: 'retr', arg: 2 }, { op: 'retr', arg: 3 }, { op: 'quit' }];
    const before = (await pop3Logins()).length;
    const [, auth, stat, list, ...rest] = await pop3s(steps, '127.0.0.2');
    expect(auth).toEqual({ ok: true, reply: '+OK Logged in.' });
    expect(stat!.reply).toMatch(/^3 \d+$/);
    expect(list!.lines).toHaveLength(3);
    for (const [i, message] of MESSAGES.entries()) {
      const retr = rest[i]!;
      expect(retr.ok).toBe(true);
      expect(retr.lines).toContain(`Subject: ${message.subject}`);
      expect(retr.lines).toContain('.A line that starts with a dot.');
      expect(retr.lines).toContain(`End ${i + 1}.`);
    }
    expect(rest[3]!.reply).toMatch(/^\+OK/);
    const logins = (await pop3Logins()).slice(before);
    // Dovecot logged the client's own address (XCLIENT), not sasl-gate's.
    expect(logins).toHaveLength(1);
    expect(logins[0]).toContain(`user=<${ALICE.name}>`);
    expect(logins[0]).toContain('rip=127.0.0.2');
  });

  it('a reconnect with the same token (OAUTHBEARER) and a continuation finds the same messages', async () => {
    const [, go, auth, uidl, retr] = await pop3s([
      { op: 'raw', arg: 'AUTH OAUTHBEARER' },
      { op: 'raw', arg: oauthbearer(ALICE.name, aliceToken, 'localhost', stack.pop3Port) },
      { op: 'uidl' },
      { op: 'retr', arg: 2 },
      { op: 'quit' },
    ]);
    expect(go!.reply).toBe('+ ');
    expect(auth!.reply).toBe('+OK Logged in.');
    expect(uidl!.lines).toHaveLength(3);
    expect(retr!.lines).toContain('Subject: pop3 message 2');
  });

  it('USER / PASS and AUTH PLAIN with a password pass through', async () => {
    const [, user, pass, stat] = await pop3s([{ op: 'user', arg: ALICE.name }, { op: 'pass_', arg: ALICE.password }, { op: 'stat' }, { op: 'quit' }]);
    expect(user!.ok).toBe(true);
    expect(pass!.reply).toMatch(/^\+OK/);
    expect(stat!.reply).toMatch(/^3 /);
    const [, auth, list] = await pop3s([{ op: 'raw', arg: `AUTH PLAIN ${plain('', ALICE.name, ALICE.password)}` }, { op: 'list' }, { op: 'quit' }]);
    expect(auth!.reply).toMatch(/^\+OK/);
    expect(list!.lines).toHaveLength(3);
    const [, , wrong] = await pop3s([{ op: 'user', arg: ALICE.name }, { op: 'pass_', arg: 'not-the-password' }, { op: 'quit' }]);
    expect(wrong).toEqual({ ok: false, reply: '-ERR [AUTH] Authentication failed.' });
  });

  it('STLS, then a token login, on the POP3 listener with STLS', async () => {
    const [, stls, auth, stat] = await poplib({
      port: stack.pop3StarttlsPort,
      tls: 'stls',
      cafile,
      steps: [{ op: 'stls' }, { op: 'raw', arg: `AUTH XOAUTH2 ${xoauth2(ALICE.name, aliceToken)}` }, { op: 'stat' }, { op: 'quit' }],
    });
    expect(stls!.reply).toMatch(/^\+OK/);
    expect(auth!.reply).toBe('+OK Logged in.');
    expect(stat!.reply).toMatch(/^3 /);
  });
});

describe('POP3 through sasl-gate: fetchmail', () => {
  it('fetchmail downloads every message with the user’s password (pass-through), keeping them on the server', async () => {
    const out = join(dir, 'fetchmail.mbox');
    const rc = join(dir, 'fetchmailrc');
    writeFileSync(
      rc,
      `poll localhost port ${stack.pop3Port} protocol POP3 user "${ALICE.name}" password "${ALICE.password}" ssl sslcertfile "${cafile}" sslcertck keep mda "cat >> ${out}"\n`,
      { mode: 0o600 },
    );
    const from = stack.logs.length;
    const code = await new Promise<number>((resolve) => {
      const child = execFile('fetchmail', ['-f', rc, '--nodetach', '--nosyslog', '-a'], { env: { ...process.env, HOME: dir }, timeout: 60_000 });
      child.on('exit', (c) => resolve(c ?? -1));
    });
    expect(code).toBe(0);
    const mbox = readFileSync(out, 'latin1');
    for (const message of MESSAGES) expect(mbox).toContain(`Subject: ${message.subject}`);
    const login = stack.logs.slice(from).find((l) => l.msg === 'authenticated');
    expect(login).toMatchObject({ user: ALICE.name });
    // Kept on the server: a token client still sees all three.
    const [, , stat] = await pop3s([{ op: 'raw', arg: `AUTH XOAUTH2 ${xoauth2(ALICE.name, aliceToken)}` }, { op: 'stat' }, { op: 'quit' }]);
    expect(stat!.reply).toMatch(/^3 /);
  });
});

describe('POP3 through sasl-gate: getmail', () => {
  /** Bob's own messages, with lines a careless relay would break: dot lines, a long line, 8-bit text. */
  const BOB_MESSAGES = [1, 2, 3].map((n) => ({
    subject: `getmail message ${n}`,
    body: `Hello ${n}.\n.\n..two dots\n${'x'.repeat(900 + n)}\nGr\u00fc\u00dfe\ttab\nEnd ${n}.`,
  }));
  let getmailDir: string;
  let maildir: string;
  let rc: string;

  /** Runs getmail with the rc file; resolves with its exit code and output. */
  const getmail = () =>
    new Promise<{ code: number; output: string }>((resolve) => {
      execFile('getmail', ['--rcfile', rc, '--getmaildir', getmailDir], { env: { ...process.env, HOME: dir }, timeout: 60_000 }, (err, stdout, stderr) => {
        resolve({ code: err ? ((err as { code?: number }).code ?? -1) : 0, output: `${stdout}${stderr}` });
      });
    });

  /** The messages of a Maildir (new/ and cur/), by file contents, sorted. */
  const maildirMessages = (path: string) =>
    ['new', 'cur'].flatMap((sub) => readdirSync(join(path, sub)).map((file) => readFileSync(join(path, sub, file)))).sort(Buffer.compare);

  beforeAll(async () => {
    await deliverLmtp(stack.dovecot.host, stack.dovecot.lmtpPort, BOB.name, BOB_MESSAGES);
    getmailDir = join(dir, 'getmail');
    // As root, getmail delivers as another user (it refuses to deliver as root): the Maildir is theirs to write.
    const asRoot = process.getuid?.() === 0;
    maildir = join(mkdtempSync(join(tmpdir(), 'sasl-gate-getmail-')), 'Maildir');
    for (const sub of ['cur', 'new', 'tmp']) mkdirSync(join(maildir, sub), { recursive: true });
    if (asRoot) for (const path of [dirname(maildir), maildir, ...['cur', 'new', 'tmp'].map((sub) => join(maildir, sub))]) chmodSync(path, 0o777);
    mkdirSync(getmailDir, { recursive: true });
    rc = join(dir, 'getmailrc');
    writeFileSync(
      rc,
      [
        '[retriever]',
        'type = SimplePOP3SSLRetriever',
        'server = localhost',
        `port = ${stack.pop3Port}`,
        `username = ${BOB.name}`,
        `password = ${BOB.password}`,
        `ca_certs = ${cafile}`,
        '',
        '[destination]',
        'type = Maildir',
        `path = ${maildir}/`,
        ...(asRoot ? ['user = nobody'] : []),
        '',
        '[options]',
        'read_all = false',
        'delete = false',
        // The message as the server holds it, without getmail's own trace headers.
        'delivered_to = false',
        'received = false',
        '',
      ].join('\n'),
      { mode: 0o600 },
    );
  });

  it('downloads every message with the password (pass-through) into a Maildir, byte for byte as Dovecot stored it', async () => {
    const before = (await pop3Logins()).length;
    const from = stack.logs.length;
    const run = await getmail();
    expect(run.code, run.output).toBe(0);
    expect(run.output).toMatch(/3 messages \(\d+ bytes\) retrieved, 0 skipped/);
    // Dovecot's own Maildir for bob holds the same bytes getmail wrote (both with LF line ends).
    const stored = maildirMessages(join(stack.dovecot.dir, 'mail', BOB.name));
    const downloaded = maildirMessages(maildir);
    expect(stored).toHaveLength(3);
    expect(downloaded).toEqual(stored);
    for (const message of BOB_MESSAGES) {
      const text = downloaded.map((m) => m.toString('utf8')).find((m) => m.includes(`Subject: ${message.subject}\n`));
      expect(text).toContain(`\n\n${message.body}\n`);
    }
    const logins = (await pop3Logins()).slice(before);
    expect(logins).toHaveLength(1);
    expect(logins[0]).toContain(`user=<${BOB.name}>`);
    expect(stack.logs.slice(from).find((l) => l.msg === 'authenticated')).toMatchObject({ user: BOB.name });
  });

  it('a second run downloads nothing new: getmail remembers what it has (read_all = false), the server keeps it', async () => {
    const before = (await pop3Logins()).length;
    const run = await getmail();
    expect(run.code, run.output).toBe(0);
    expect(run.output).toMatch(/0 messages \(0 bytes\) retrieved, 3 skipped/);
    expect(maildirMessages(maildir)).toHaveLength(3);
    // It did log in again, through sasl-gate, to find out.
    expect((await pop3Logins()).slice(before)).toHaveLength(1);
  });
});

describe('sasl-gate load pop3-session through sasl-gate', () => {
  /** Runs the harness with `--json`; its report and exit code. */
  async function load(args: string[]): Promise<{ code: number; report: LoadReport; stderr: string }> {
    let stdout = '';
    let stderr = '';
    const code = await runLoad([...args, '--json', '--quiet'], {
      stdout: { write: (chunk: string) => ((stdout += chunk), true) },
      stderr: { write: (chunk: string) => ((stderr += chunk), true) },
    });
    return { code, report: JSON.parse(stdout) as LoadReport, stderr };
  }
  const authenticated = (from: number, mechanism: string) => stack.logs.slice(from).filter((l) => l.msg === 'authenticated' && l['mechanism'] === mechanism).length;

  it('token logins over POP3S (XOAUTH2) and STLS (OAUTHBEARER): every session logs in, sees the maildrop and quits', async () => {
    const users = join(dir, 'load-tokens.tsv');
    writeFileSync(users, `${ALICE.name}\t${aliceToken}\n`, { mode: 0o600 });
    const from = stack.logs.length;
    const before = (await pop3Logins()).length;
    const implicit = await load(['pop3-session', '--target', `pop3s://127.0.0.1:${stack.pop3Port}`, '--ca', cafile, '--servername', 'localhost', '--users', users, '--count', '12', '--concurrency', '3']);
    expect(implicit.code, implicit.stderr).toBe(0);
    expect(implicit.report).toMatchObject({ scenario: 'pop3-session', mech: 'xoauth2', ok: 12, failed: 0 });
    expect(Object.keys(implicit.report.steps)).toEqual(['connect', 'tls', 'greeting', 'auth', 'stat', 'list', 'quit']);
    const stls = await load(['pop3-session', '--target', `pop3://127.0.0.1:${stack.pop3StarttlsPort}`, '--starttls', '--insecure', '--mech', 'oauthbearer', '--users', users, '--count', '4', '--concurrency', '2']);
    expect(stls.code, stls.stderr).toBe(0);
    expect(stls.report).toMatchObject({ ok: 4, failed: 0 });
    expect(Object.keys(stls.report.steps)).toEqual(['connect', 'greeting', 'starttls', 'auth', 'stat', 'list', 'quit']);
    // Each session was a login in sasl-gate's log and in Dovecot's, as alice.
    await new Promise((resolve) => setTimeout(resolve, 200));
    expect(authenticated(from, 'XOAUTH2')).toBe(12);
    expect(authenticated(from, 'OAUTHBEARER')).toBe(4);
    const logins = (await pop3Logins()).slice(before);
    expect(logins).toHaveLength(16);
    expect(logins.every((l) => l.includes(`user=<${ALICE.name}>`))).toBe(true);
  });

  it('a wrong password is auth_rejected, with Dovecot’s words', async () => {
    const users = join(dir, 'load-wrong.tsv');
    writeFileSync(users, `${ALICE.name}\tnot-the-password\n`, { mode: 0o600 });
    const run = await load(['pop3-session', '--target', `pop3s://127.0.0.1:${stack.pop3Port}`, '--insecure', '--mech', 'plain', '--users', users, '--count', '1', '--concurrency', '1']);
    expect(run.code).toBe(1);
    expect(run.report).toMatchObject({ ok: 0, failed: 1 });
    expect(run.report.errors.auth_rejected).toBe(1);
    expect(run.report.errorSamples.auth_rejected).toBe('AUTH PLAIN: -ERR [AUTH] Authentication failed.');
  });
});

describe('POP3 through sasl-gate: attacks', () => {
  it('a token for alice presented as bob, the master name with USER and PLAIN, and separator tricks are refused; Dovecot sees no such login', async () => {
    const loginsBefore = (await pop3Logins()).length;
    const mastersBefore = (await masterMentions()).length;
    const results = await pop3s([
      { op: 'raw', arg: `AUTH XOAUTH2 ${xoauth2(BOB.name, aliceToken)}` },
      { op: 'raw', arg: 'AQ==' },
      { op: 'user', arg: MASTER.user },
      { op: 'pass_', arg: MASTER.password },
      { op: 'raw', arg: `AUTH PLAIN ${plain(ALICE.name, MASTER.user, MASTER.password)}` },
      { op: 'user', arg: `${ALICE.name}*${MASTER.user}` },
      { op: 'pass_', arg: MASTER.password },
      { op: 'raw', arg: `AUTH PLAIN ${plain('', `${ALICE.name}*${MASTER.user}`, MASTER.password)}` },
      { op: 'raw', arg: `AUTH PLAIN ${plain(BOB.name, ALICE.name, ALICE.password)}` },
      { op: 'stat' },
    ]);
    const [, challenge, afterDummy, , masterPass, masterPlain, , separatorPass, separatorPlain, otherUser, stat] = results;
    // The token is refused with the error challenge, then -ERR [AUTH] after the dummy reply.
    expect(JSON.parse(Buffer.from(challenge!.reply.slice(2), 'base64').toString())).toMatchObject({ status: '401' });
    expect(afterDummy).toEqual({ ok: false, reply: '-ERR [AUTH] Authentication failed.' });
    for (const refused of [masterPass, masterPlain, separatorPass, separatorPlain, otherUser]) {
      expect(refused!.ok).toBe(false);
      expect(refused!.reply).toMatch(/^-ERR \[AUTH\] /);
    }
    // Five failures: the connection was closed after the last one.
    expect(stat!.ok).toBe(false);
    expect((await pop3Logins()).length).toBe(loginsBefore);
    expect((await masterMentions()).length).toBe(mastersBefore);
  });

  it('commands injected after STLS, before the handshake, never run: no login, and Dovecot sees none', async () => {
    const before = (await pop3Logins()).length;
    const plainSocket = connect({ host: '127.0.0.1', port: stack.pop3StarttlsPort });
    const reader = new LineReader(plainSocket);
    expect(await reader.next(5000)).toBe('+OK sasl-gate ready.');
    plainSocket.write(`STLS\r\nAUTH PLAIN ${plain('', ALICE.name, ALICE.password)}\r\nUSER ${ALICE.name}\r\n`);
    expect(await reader.next(5000)).toBe('+OK Begin TLS negotiation now.');
    plainSocket.removeAllListeners('data');
    const secure = tlsConnect({ socket: plainSocket, ca: stack.ca, servername: 'localhost' });
    await new Promise<void>((resolve, reject) => {
      secure.once('secureConnect', resolve);
      secure.once('error', reject);
    });
    const tls = new LineReader(secure);
    secure.write('STAT\r\nPASS x\r\nQUIT\r\n');
    expect(await tls.next(5000)).toBe('-ERR STAT needs a login first.');
    expect(await tls.next(5000)).toBe('-ERR No user name given, send USER first.');
    expect(await tls.next(5000)).toBe('+OK Logging out.');
    secure.destroy();
    expect((await pop3Logins()).length).toBe(before);
    expect(stack.logs.some((l) => l.msg === 'discarded data sent after STARTTLS before the TLS handshake')).toBe(true);
  });
});

/** One POP3S connection from `localAddress`: each command's status line (the first line of its reply). */
async function rawPop3(commands: string[], localAddress: string): Promise<string[]> {
  // localAddress goes to the underlying TCP connection (net.connect's option).
  const socket = tlsConnect({ host: '127.0.0.1', port: stack.pop3Port, ca: stack.ca, servername: 'localhost', ...{ localAddress } });
  await new Promise<void>((resolve, reject) => {
    socket.once('secureConnect', resolve);
    socket.once('error', reject);
  });
  const reader = new LineReader(socket);
  try {
    expect(await reader.next(5000)).toBe('+OK sasl-gate ready.');
    const replies: string[] = [];
    for (const command of commands) {
      socket.write(`${command}\r\n`);
      replies.push(await reader.next(10_000));
    }
    return replies;
  } finally {
    socket.destroy();
  }
}

describe('POP3: whatever name the client gives, a token logs in only as its own user', () => {
  it('XOAUTH2 and OAUTHBEARER under other names: only alice ever reaches Dovecot', async () => {
    const names = [
      BOB.name,
      `${ALICE.name}*${MASTER.user}`,
      `${BOB.name}*${MASTER.user}`,
      MASTER.user,
      `${MASTER.user}*${ALICE.name}`,
      `${ALICE.name}\u0000${BOB.name}`,
      ` ${ALICE.name}`,
      ALICE.name.toUpperCase(),
      ALICE.name,
    ];
    const before = (await pop3Logins()).length;
    const outcomes = await Promise.all(
      names.flatMap((name) =>
        (['XOAUTH2', 'OAUTHBEARER'] as const).map(async (mechanism) => {
          const response = mechanism === 'XOAUTH2' ? xoauth2(name, aliceToken) : oauthbearer(name, aliceToken, 'localhost', stack.pop3Port);
          const [first] = await rawPop3([`AUTH ${mechanism} ${response}`], '127.0.0.4');
          const final = first!.startsWith('+ ') ? 'challenge' : first!.split(' ')[0];
          return `${mechanism} ${JSON.stringify(name)}: ${final}`;
        }),
      ),
    );
    // Case differences are the same user: those log in as the token's spelling.
    expect(outcomes.filter((o) => o.endsWith(': +OK'))).toEqual([
      `XOAUTH2 ${JSON.stringify(ALICE.name.toUpperCase())}: +OK`,
      `OAUTHBEARER ${JSON.stringify(ALICE.name.toUpperCase())}: +OK`,
      `XOAUTH2 ${JSON.stringify(ALICE.name)}: +OK`,
      `OAUTHBEARER ${JSON.stringify(ALICE.name)}: +OK`,
    ]);
    await new Promise((r) => setTimeout(r, 300));
    const logins = (await pop3Logins()).slice(before);
    expect(logins).toHaveLength(4);
    for (const line of logins) expect(line).toContain(`user=<${ALICE.name}>`);
  });

  it('the master password under other spellings of the master name, with USER/PASS and AUTH PLAIN: nobody logs in', async () => {
    const spellings = [
      MASTER.user,
      MASTER.user.toUpperCase(),
      ` ${MASTER.user}`,
      `${MASTER.user}@example.test`,
      `${MASTER.user}@`,
      [...MASTER.user].map((ch) => (/[a-z]/.test(ch) ? String.fromCharCode(ch.charCodeAt(0) + 0xfee0) : ch)).join(''),
      `${ALICE.name}*${MASTER.user}`,
      `*${MASTER.user}`,
    ];
    const before = (await pop3Logins()).length;
    const replies = await Promise.all(
      spellings.flatMap((name) => [
        rawPop3([`USER ${name}`, `PASS ${MASTER.password}`], '127.0.0.5').then(([, pass]) => pass!),
        rawPop3([`AUTH PLAIN ${plain('', name, MASTER.password)}`], '127.0.0.5').then(([auth]) => auth!),
      ]),
    );
    for (const reply of replies) expect(reply).toMatch(/^-ERR /);
    await new Promise((r) => setTimeout(r, 300));
    expect((await pop3Logins()).slice(before)).toEqual([]);
  });
});

describe('sasl-gate doctor with a POP3 backend', () => {
  it('probes Dovecot’s POP3 and tries the master login for the token’s user, which Dovecot logs', async () => {
    const path = join(dir, 'doctor.yaml');
    writeFileSync(
      path,
      stringify({
        listeners: [{ protocol: 'pop3', bind: '127.0.0.1:0' }],
        tls: stack.tlsPaths,
        backends: { pop3: { host: stack.dovecot.host, port: stack.dovecot.pop3Port } },
        master: MASTER,
        oauth: { issuer: stack.idp.issuer, audience: ['mail'], validation: ['jwt'], clientId: stack.idp.clientId, allowedEmailDomains: ['example.test'] },
      }),
    );
    const { config } = loadConfig({ file: path, env: {} });
    const before = (await pop3Logins()).length;
    const lines: string[] = [];
    const code = await runDoctor(config, { token: aliceToken, out: (line) => lines.push(line) });
    expect(code, lines.join('\n')).toBe(0);
    expect(lines.find((l) => l.includes('pop3 backend'))).toMatch(/^PASS  pop3 backend +127\.0\.0\.1:\d+ answers; capabilities .*SASL PLAIN LOGIN/);
    expect(lines.find((l) => l.includes('pop3 master'))).toBe(
      `PASS  pop3 master    login as ${ALICE.name} (master user ${MASTER.user}) accepted, after XCLIENT with the client address`,
    );
    const logins = (await pop3Logins()).slice(before);
    expect(logins).toHaveLength(1);
    expect(logins[0]).toContain(`user=<${ALICE.name}>`);
  });
});

describe('sasl-gate doctor with a POP3 server that does not trust sasl-gate with XCLIENT', () => {
  it('warns that POP3 clients would be logged under sasl-gate’s address, with the fix', async () => {
    // Answers like a Dovecot whose login_trusted_networks leaves sasl-gate out but allows plaintext logins.
    const server = createServer((socket) => {
      socket.on('error', () => undefined);
      socket.write('+OK Dovecot ready.\r\n');
      let buffer = '';
      socket.on('data', (chunk: Buffer) => {
        buffer += chunk.toString('latin1');
        for (let end = buffer.indexOf('\r\n'); end >= 0; end = buffer.indexOf('\r\n')) {
          const command = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          if (command === 'CAPA') socket.write('+OK\r\nCAPA\r\nUIDL\r\nUSER\r\nSASL PLAIN LOGIN\r\n.\r\n');
          else if (command.startsWith('AUTH PLAIN ')) socket.write('+OK Logged in.\r\n');
          else if (command === 'QUIT') socket.end('+OK Logging out.\r\n');
          else socket.write('-ERR Unknown command.\r\n');
        }
      });
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    try {
      const path = join(dir, 'doctor-untrusted.yaml');
      writeFileSync(
        path,
        stringify({
          listeners: [{ protocol: 'pop3', bind: '127.0.0.1:0' }],
          tls: stack.tlsPaths,
          backends: { pop3: { host: '127.0.0.1', port: (server.address() as { port: number }).port } },
          master: MASTER,
          oauth: { issuer: stack.idp.issuer, audience: ['mail'], validation: ['jwt'], clientId: stack.idp.clientId, allowedEmailDomains: ['example.test'] },
        }),
      );
      const lines: string[] = [];
      await runDoctor(loadConfig({ file: path, env: {} }).config, { user: ALICE.name, out: (line) => lines.push(line) });
      expect(lines.find((l) => l.includes('pop3 master'))).toMatch(
        /^WARN  pop3 master +login as alice@example\.test .*accepted, but Dovecot did not offer XCLIENT.* — add sasl-gate's address to Dovecot's login_trusted_networks/,
      );
    } finally {
      await new Promise<void>((resolve) => server.close(() => resolve()));
    }
  });
});

describe('POP3 through sasl-gate: a PROXY v2 header to Dovecot instead of XCLIENT', () => {
  let proxied: Stack;
  let proxiedCa: string;
  beforeAll(async () => {
    proxied = await startStack({ pop3: { proxyProtocol: true } });
    proxiedCa = join(dir, 'proxied-ca.pem');
    writeFileSync(proxiedCa, proxied.ca);
    await deliverLmtp(proxied.dovecot.host, proxied.dovecot.lmtpPort, BOB.name, [MESSAGES[0]!]);
  });
  afterAll(async () => {
    await proxied?.close();
  });

  it('a token login and a password login reach Dovecot’s PROXY listener, which logs the client’s own address', async () => {
    const token = await proxied.idp.mintAccessToken({ user: BOB.name });
    const run = (steps: PoplibStep[]) => poplib({ port: proxied.pop3Port, tls: 'implicit', cafile: proxiedCa, steps, source: '127.0.0.3' });
    const [, auth, stat] = await run([{ op: 'raw', arg: `AUTH XOAUTH2 ${xoauth2(BOB.name, token)}` }, { op: 'stat' }, { op: 'quit' }]);
    expect(auth!.reply).toBe('+OK Logged in.');
    expect(stat!.reply).toMatch(/^1 /);
    const [, , pass, retr] = await run([{ op: 'user', arg: BOB.name }, { op: 'pass_', arg: BOB.password }, { op: 'retr', arg: 1 }, { op: 'quit' }]);
    expect(pass!.reply).toMatch(/^\+OK/);
    expect(retr!.lines).toContain(`Subject: ${MESSAGES[0]!.subject}`);
    const logins = (await proxied.dovecot.readLog()).split('\n').filter((l) => /pop3-login: Info: Login: /.test(l));
    expect(logins).toHaveLength(2);
    for (const line of logins) expect(line).toContain('rip=127.0.0.3');
  });
});

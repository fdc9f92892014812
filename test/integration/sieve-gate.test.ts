/**
 * sasl-gate's ManageSieve front door against a real Dovecot managesieve (Pigeonhole) and a real
 * OpenID provider: Roundcube's library (PHP Net_Sieve) signs in with XOAUTH2 and installs a filter
 * that Dovecot then runs on delivered mail, sieve-connect passes a password through, and a raw
 * client checks the SASL framing, the error challenge and the capabilities, with Dovecot's own log
 * as the witness of who logged in from where.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ImapFlow } from 'imapflow';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import { loadConfig } from '../../src/config/load.js';
import { runDoctor } from '../../src/doctor.js';
import { dovecotLogins } from '../support/dovecot-log.js';
import { secret } from '../support/evidence.js';
import { deliverLmtp } from '../support/lmtp.js';
import { netSieve } from '../support/net-sieve.js';
import { literal, quoted, RawSieve } from '../support/sieve-raw.js';
import { MASTER, oauthbearer, plain, startStack, USERS, xoauth2, type Stack } from '../support/stack.js';
import { sleep, waitFor } from '../support/wait.js';

const [ALICE, BOB] = USERS as [(typeof USERS)[0], (typeof USERS)[0]];
const BOSS = 'boss@example.test';
/** The filter a Roundcube user would write: mail from the boss goes to its own folder. */
const FILTER = `require ["fileinto", "mailbox"];\r\n# rule:[boss]\r\nif address :is "from" "${BOSS}"\r\n{\r\n\tfileinto :create "Filed";\r\n}\r\n`;

let stack: Stack;
let dir: string;
let cafile: string;
let aliceToken: string;
let bobToken: string;

beforeAll(async () => {
  stack = await startStack({ sieve: true });
  dir = mkdtempSync(join(tmpdir(), 'sasl-gate-sieve-'));
  cafile = join(dir, 'ca.pem');
  writeFileSync(cafile, stack.ca);
  [aliceToken, bobToken] = await Promise.all([stack.idp.mintAccessToken({ user: ALICE.name }), stack.idp.mintAccessToken({ user: BOB.name })]);
});

afterAll(async () => {
  await stack?.close();
});

/** Dovecot's managesieve login lines so far. */
const sieveLogins = () => dovecotLogins(stack.dovecot, 'managesieve');

/** Subjects of the messages in one of `user`'s folders, read through sasl-gate's IMAPS with a token. */
async function subjectsIn(user: string, token: string, folder: string): Promise<string[]> {
  const client = new ImapFlow({
    host: stack.host,
    port: stack.imapPort,
    secure: true,
    tls: { ca: [stack.ca], servername: 'localhost' },
    auth: { user, accessToken: token },
    logger: false,
  });
  await client.connect();
  try {
    const lock = await client.getMailboxLock(folder);
    try {
      const subjects: string[] = [];
      for await (const message of client.fetch('1:*', { envelope: true })) subjects.push(message.envelope?.subject ?? '');
      return subjects;
    } finally {
      lock.release();
    }
  } finally {
    await client.logout();
  }
}

/** A raw client on the STARTTLS listener, after STARTTLS; returns it with the capabilities it got then. */
async function secured(localAddress?: string): Promise<{ c: RawSieve; capabilities: string[] }> {
  const c = await RawSieve.connect({ port: stack.sieveStarttlsPort, tls: false, ca: stack.ca, ...(localAddress ? { localAddress } : {}) });
  await c.readResponse();
  const after = await c.starttls(stack.ca);
  return { c, capabilities: after.lines };
}

/** Dovecot's own capability block, read straight from its ManageSieve listener (`login` first, if given). */
async function dovecotCapabilities(login?: { user: string; password: string }): Promise<string[]> {
  const c = await RawSieve.connect({ port: stack.dovecot.sievePort!, tls: false, ca: stack.ca });
  try {
    const greeting = await c.readResponse();
    if (!login) return greeting.lines;
    const auth = await c.command(`AUTHENTICATE "PLAIN" ${quoted(plain('', login.user, login.password))}`);
    expect(auth.status).toMatch(/^OK/);
    return (await c.command('CAPABILITY')).lines;
  } finally {
    c.close();
  }
}

/** LISTSCRIPTS straight from Dovecot, logged in with the user's password. */
async function dovecotListScripts(user: { name: string; password: string }): Promise<string[]> {
  const c = await RawSieve.connect({ port: stack.dovecot.sievePort!, tls: false, ca: stack.ca });
  try {
    await c.readResponse();
    expect((await c.command(`AUTHENTICATE "PLAIN" ${quoted(plain('', user.name, user.password))}`)).status).toMatch(/^OK/);
    return (await c.command('LISTSCRIPTS')).lines;
  } finally {
    c.close();
  }
}

describe('Roundcube’s managesieve path: Net_Sieve with XOAUTH2 through sasl-gate', () => {
  it('a user signed in with OAuth uploads and activates a filter, which Dovecot then runs on delivered mail', async () => {
    const before = (await sieveLogins()).length;
    const session = await netSieve({
      port: stack.sieveStarttlsPort,
      cafile,
      user: ALICE.name,
      token: aliceToken,
      steps: [{ op: 'installScript', name: 'roundcube', script: FILTER, activate: true }, { op: 'listScripts' }, { op: 'getScript', name: 'roundcube' }],
    });
    expect(session.error).toBeUndefined();
    expect(session.connected).toBe(true);
    // Net_Sieve saw STARTTLS offered, upgraded, found XOAUTH2 and logged in; then asked Dovecot for its capabilities.
    expect(session.commands.slice(0, 3)).toEqual(['STARTTLS', 'AUTHENTICATE', 'CAPABILITY']);
    expect(session.extensions).toEqual(expect.arrayContaining(['FILEINTO', 'MAILBOX', 'VACATION']));
    const [install, list, get] = session.steps;
    expect(install).toEqual({ ok: true, value: true });
    expect(list).toEqual({ ok: true, value: { scripts: ['roundcube'], active: 'roundcube' } });
    // Net_Sieve keeps the CRLF that ends the literal (Roundcube's parser ignores it).
    expect(get).toEqual({ ok: true, value: `${FILTER}\r\n` });

    const logins = (await sieveLogins()).slice(before);
    expect(logins).toHaveLength(1);
    expect(logins[0]).toContain(`user=<${ALICE.name}>`);
    expect(logins[0]).toContain('method=PLAIN');

    await deliverLmtp(stack.dovecot.host, stack.dovecot.lmtpPort, ALICE.name, [
      { subject: 'Quarterly numbers', body: 'From the boss.', from: BOSS },
      { subject: 'Lunch on Friday?', body: 'From a friend.', from: 'friend@example.test' },
    ]);
    expect(await subjectsIn(ALICE.name, aliceToken, 'Filed')).toEqual(['Quarterly numbers']);
    expect(await subjectsIn(ALICE.name, aliceToken, 'INBOX')).toEqual(['Lunch on Friday?']);
  });

  it('a token for another user is refused: Net_Sieve, which never answers the error challenge, gets NO once sasl-gate stops waiting for the dummy reply; Dovecot sees no login', async () => {
    const before = (await sieveLogins()).length;
    const session = await netSieve({ port: stack.sieveStarttlsPort, cafile, user: BOB.name, token: aliceToken, steps: [] });
    expect(session.connected).toBe(true);
    const [challenge, refusal] = session.error!.split(/(?<=")\s+(?=")/);
    expect(JSON.parse(Buffer.from(JSON.parse(challenge!) as string, 'base64').toString('utf8'))).toMatchObject({ status: '401', schemes: 'bearer' });
    expect(refusal).toBe('"Authentication failed."');
    expect((await sieveLogins()).slice(before)).toEqual([]);
  });
});

/** Runs sieve-connect with the password on file descriptor 3 (never argv); resolves with its output. */
function sieveConnect(args: string[], password: string): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(
      'sieve-connect',
      ['--server', '127.0.0.1', '--port', String(stack.sieveStarttlsPort), '--tlscafile', cafile, '--tlshostname', 'localhost', '--user', ALICE.name, '--authmech', 'PLAIN', '--passwordfd', '3', ...args],
      { stdio: ['ignore', 'pipe', 'pipe', 'pipe'], env: { ...process.env, HOME: dir } },
    );
    let stdout = '';
    let stderr = '';
    child.stdout!.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
    (child.stdio[3] as NodeJS.WritableStream).end(`${password}\n`);
    const timer = setTimeout(() => child.kill('SIGKILL'), 30_000);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code: code ?? -1, stdout, stderr });
    });
  });
}

describe('sieve-connect with a password (PLAIN pass-through) over STARTTLS', () => {
  it('uploads, lists and downloads a script byte-exact', async () => {
    const script = `require ["vacation"];\r\n# Grüße, café: UTF-8 survives.\r\nvacation :days 3 :subject "Away" "Back on Monday.";\r\n`;
    const local = join(dir, 'away.sieve');
    writeFileSync(local, script);
    const before = (await sieveLogins()).length;
    const upload = await sieveConnect(['--upload', '--localsieve', local, '--remotesieve', 'away'], ALICE.password);
    expect(upload.code, upload.stderr).toBe(0);
    const list = await sieveConnect(['--list'], ALICE.password);
    expect(list.code, list.stderr).toBe(0);
    expect(list.stdout.split('\n')).toEqual(expect.arrayContaining(['"away"']));
    const out = join(dir, 'away.downloaded');
    const download = await sieveConnect(['--download', '--remotesieve', 'away', '--localsieve', out], ALICE.password);
    expect(download.code, download.stderr).toBe(0);
    expect(readFileSync(out)).toEqual(Buffer.from(script, 'utf8'));
    const logins = (await sieveLogins()).slice(before);
    expect(logins).toHaveLength(3);
    for (const line of logins) expect(line).toContain(`user=<${ALICE.name}>`);

    const wrong = await sieveConnect(['--list'], secret('not-alices-password', 'password'));
    expect(wrong.code).not.toBe(0);
    expect((await sieveLogins()).slice(before)).toHaveLength(3);
  });
});

describe('ManageSieve SASL framing and capabilities (raw client)', () => {
  it('before STARTTLS: no mechanism and STARTTLS; after it and after login: Dovecot’s own capabilities', async () => {
    const plainClient = await RawSieve.connect({ port: stack.sieveStarttlsPort, tls: false, ca: stack.ca });
    const greeting = await plainClient.readResponse();
    plainClient.close();
    expect(greeting.lines).toContain('"SASL" ""');
    expect(greeting.lines).toContain('"STARTTLS"');

    const dovecot = await dovecotCapabilities();
    const dovecotSieve = dovecot.find((l) => l.startsWith('"SIEVE" '));
    expect(dovecotSieve).toMatch(/fileinto .*vacation/);
    const { c, capabilities } = await secured();
    try {
      expect(capabilities).toContain(dovecotSieve);
      expect(capabilities).toContain('"SASL" "XOAUTH2 OAUTHBEARER PLAIN LOGIN"');
      expect(capabilities).not.toContain('"STARTTLS"');
      expect(capabilities.some((l) => l.startsWith('"XCLIENT"'))).toBe(false);
      // Everything else is Dovecot's, line for line.
      const others = (lines: string[]) => lines.filter((l) => !/^"(SASL|STARTTLS|XCLIENT)"/.test(l));
      expect(others(capabilities)).toEqual(others(dovecot));

      const auth = await c.command(Buffer.concat([Buffer.from('AUTHENTICATE "OAUTHBEARER" '), literal(oauthbearer(ALICE.name, aliceToken, 'localhost', stack.sieveStarttlsPort)), Buffer.from('\r\n')]));
      expect(auth.status).toMatch(/^OK/);
      const after = await c.command('CAPABILITY');
      expect(after.status).toMatch(/^OK/);
      expect(after.lines).toEqual(await dovecotCapabilities({ user: ALICE.name, password: ALICE.password }));
    } finally {
      c.close();
    }
  });

  it('OAUTHBEARER with the initial response as a literal {N+}, as a quoted string, and in a continuation', async () => {
    const response = oauthbearer(ALICE.name, aliceToken, 'localhost', stack.sieveStarttlsPort);
    const alicesScripts = await dovecotListScripts(ALICE);
    for (const send of [
      async (c: RawSieve) => c.command(Buffer.concat([Buffer.from('AUTHENTICATE "OAUTHBEARER" '), literal(response), Buffer.from('\r\n')])),
      async (c: RawSieve) => c.command(`AUTHENTICATE "OAUTHBEARER" ${quoted(response)}`),
      async (c: RawSieve) => {
        c.write('AUTHENTICATE "OAUTHBEARER"\r\n');
        // The empty challenge, as a string on its own line.
        expect(await c.readLine()).toBe('""');
        return c.command(quoted(response));
      },
      async (c: RawSieve) => {
        c.write('AUTHENTICATE "OAUTHBEARER"\r\n');
        expect(await c.readLine()).toBe('""');
        return c.command(Buffer.concat([literal(response), Buffer.from('\r\n')]));
      },
    ]) {
      const { c } = await secured();
      try {
        const auth = await send(c);
        expect(auth.status).toMatch(/^OK/);
        const list = await c.command('LISTSCRIPTS');
        expect(list.status).toMatch(/^OK/);
        // Alice's own scripts, as Dovecot lists them to her password login.
        expect(list.lines).toEqual(alicesScripts);
      } finally {
        c.close();
      }
    }
  });

  it('a bad token gets the RFC 7628 error challenge, then NO after the dummy reply; the connection and other sessions go on', async () => {
    const before = (await sieveLogins()).length;
    const { c } = await secured();
    try {
      const forged = secret(`${aliceToken.slice(0, -6)}AAAAAA`, 'access token');
      c.write(`AUTHENTICATE "OAUTHBEARER" ${quoted(oauthbearer(ALICE.name, forged, 'localhost', stack.sieveStarttlsPort))}\r\n`);
      const challengeLine = await c.readLine();
      const challenge = JSON.parse(Buffer.from(JSON.parse(challengeLine) as string, 'base64').toString('utf8')) as Record<string, unknown>;
      expect(challenge).toMatchObject({ status: 'invalid_token' });
      expect(challenge['openid-configuration']).toBe(`${stack.idp.issuer}/.well-known/openid-configuration`);
      const refused = await c.command('"AQ=="');
      expect(refused.status).toBe('NO "Authentication failed."');
      // XOAUTH2's challenge, and a token for someone else.
      c.write(`AUTHENTICATE "XOAUTH2" ${quoted(xoauth2(BOB.name, aliceToken))}\r\n`);
      const xoauthChallenge = JSON.parse(Buffer.from(JSON.parse(await c.readLine()) as string, 'base64').toString('utf8')) as Record<string, unknown>;
      expect(xoauthChallenge).toMatchObject({ status: '401', schemes: 'bearer' });
      expect((await c.command('"*"')).status).toMatch(/^NO/);
      // The same connection still logs in with the right token.
      const ok = await c.command(`AUTHENTICATE "XOAUTH2" ${quoted(xoauth2(BOB.name, bobToken))}`);
      expect(ok.status).toMatch(/^OK/);
      expect((await c.command('LISTSCRIPTS')).status).toMatch(/^OK/);
    } finally {
      c.close();
    }
    const logins = (await sieveLogins()).slice(before);
    expect(logins).toHaveLength(1);
    expect(logins[0]).toContain(`user=<${BOB.name}>`);
  });
});

describe('what a ManageSieve user notices', () => {
  it('many commands on one connection (a 60 KB script as a literal among them), then a reconnect finds the same scripts', async () => {
    const big = `require ["fileinto"];\r\n${Array.from({ length: 1200 }, (_, i) => `# rule ${String(i).padStart(4, '0')}: ${'x'.repeat(30)}\r\nif header :contains "subject" "topic-${i}" { fileinto "INBOX"; }\r\n`).join('')}`;
    expect(big.length).toBeGreaterThan(60_000);
    const small = 'keep;\r\n';
    const c = await RawSieve.connect({ port: stack.sievePort, tls: true, ca: stack.ca, localAddress: '127.0.0.2' });
    const before = (await sieveLogins()).length;
    try {
      const greeting = await c.readResponse();
      expect(greeting.lines).toContain('"SASL" "XOAUTH2 OAUTHBEARER PLAIN LOGIN"');
      expect((await c.command(`AUTHENTICATE "XOAUTH2" ${quoted(xoauth2(BOB.name, bobToken))}`)).status).toMatch(/^OK/);
      expect((await c.command(Buffer.concat([Buffer.from('PUTSCRIPT "big" '), literal(big), Buffer.from('\r\n')]))).status).toMatch(/^OK/);
      expect((await c.command(Buffer.concat([Buffer.from('PUTSCRIPT "small" '), literal(small), Buffer.from('\r\n')]))).status).toMatch(/^OK/);
      expect((await c.command(Buffer.concat([Buffer.from('CHECKSCRIPT '), literal('require "nonsense"; bogus;\r\n'), Buffer.from('\r\n')]))).status).toMatch(/^NO/);
      expect((await c.command('SETACTIVE "big"')).status).toMatch(/^OK/);
      const list = await c.command('LISTSCRIPTS');
      expect(list.lines.sort()).toEqual(['"big" ACTIVE', '"small"']);
      const get = await c.command('GETSCRIPT "big"');
      expect(get.status).toMatch(/^OK/);
      expect(get.literals[0]!.toString('utf8')).toBe(big);
      expect((await c.command('DELETESCRIPT "small"')).status).toMatch(/^OK/);
      expect((await c.command('DELETESCRIPT "big"')).status).toMatch(/^NO \(ACTIVE\)/);
      expect((await c.command('LOGOUT')).status).toMatch(/^OK/);
    } finally {
      c.close();
    }
    const again = await RawSieve.connect({ port: stack.sievePort, tls: true, ca: stack.ca, localAddress: '127.0.0.2' });
    try {
      await again.readResponse();
      expect((await again.command(`AUTHENTICATE "OAUTHBEARER" ${quoted(oauthbearer(BOB.name, bobToken, 'localhost', stack.sievePort))}`)).status).toMatch(/^OK/);
      expect((await again.command('LISTSCRIPTS')).lines).toEqual(['"big" ACTIVE']);
      const get = await again.command('GETSCRIPT "big"');
      expect(get.literals[0]!.toString('utf8')).toBe(big);
    } finally {
      again.close();
    }
    await sleep(100);
    // Dovecot logged both logins as bob, from the client's own address (XCLIENT), not sasl-gate's.
    const logins = (await sieveLogins()).slice(before);
    expect(logins).toHaveLength(2);
    for (const line of logins) {
      expect(line).toContain(`user=<${BOB.name}>`);
      expect(line).toContain('rip=127.0.0.2');
    }
  });
});

describe('ManageSieve attacks', () => {
  it('the master user by name, with the separator or as another authzid, and a token under another name: refused, and Dovecot sees no such login', async () => {
    const logBefore = (await stack.dovecot.readLog()).length;
    const before = (await sieveLogins()).length;
    const attempts = [
      `AUTHENTICATE "PLAIN" ${quoted(plain('', MASTER.user, MASTER.password))}`,
      `AUTHENTICATE "PLAIN" ${quoted(plain(ALICE.name, MASTER.user, MASTER.password))}`,
      `AUTHENTICATE "PLAIN" ${quoted(plain('', `${ALICE.name}*${MASTER.user}`, MASTER.password))}`,
      `AUTHENTICATE "PLAIN" ${quoted(plain(BOB.name, ALICE.name, ALICE.password))}`,
    ];
    for (const attempt of attempts) {
      const { c } = await secured('127.0.0.6');
      try {
        expect((await c.command(attempt)).status).toMatch(/^NO/);
        // The connection survives a refusal.
        expect((await c.command('CAPABILITY')).status).toMatch(/^OK/);
      } finally {
        c.close();
      }
    }
    const { c } = await secured('127.0.0.6');
    try {
      c.write(`AUTHENTICATE "XOAUTH2" ${quoted(xoauth2(`${BOB.name}*${MASTER.user}`, aliceToken))}\r\n`);
      expect(await c.readLine()).toMatch(/^"/);
      expect((await c.command('"AQ=="')).status).toMatch(/^NO/);
    } finally {
      c.close();
    }
    await sleep(100);
    expect((await sieveLogins()).slice(before)).toEqual([]);
    const newLog = (await stack.dovecot.readLog()).slice(logBefore);
    expect(newLog.split('\n').filter((l) => l.includes(MASTER.user) && !/no auth attempts/.test(l))).toEqual([]);
  });

  it('commands sent after STARTTLS before the handshake never run', async () => {
    const before = (await sieveLogins()).length;
    const c = await RawSieve.connect({ port: stack.sieveStarttlsPort, tls: false, ca: stack.ca });
    try {
      await c.readResponse();
      // A man in the middle appends a login to the client's STARTTLS.
      c.write(`STARTTLS\r\nAUTHENTICATE "PLAIN" ${quoted(plain('', ALICE.name, ALICE.password))}\r\n`);
      const capabilities = await c.starttlsAfterWrite(stack.ca);
      expect(capabilities.status).toMatch(/^OK/);
      // Not logged in: LISTSCRIPTS is refused before login.
      expect((await c.command('LISTSCRIPTS')).status).toMatch(/^NO/);
    } finally {
      c.close();
    }
    expect((await sieveLogins()).slice(before)).toEqual([]);
    expect(stack.logs.some((l) => l.msg === 'discarded data sent after STARTTLS before the TLS handshake')).toBe(true);
  });
});

describe('ManageSieve with a PROXY v2 header to Dovecot instead of XCLIENT', () => {
  let proxied: Stack;
  beforeAll(async () => {
    proxied = await startStack({ sieve: { proxyProtocol: true } });
  });
  afterAll(async () => {
    await proxied?.close();
  });

  it('a token login and a password login reach Dovecot’s PROXY listener, which logs the client’s own address', async () => {
    const token = await proxied.idp.mintAccessToken({ user: BOB.name });
    for (const auth of [`AUTHENTICATE "XOAUTH2" ${quoted(xoauth2(BOB.name, token))}`, `AUTHENTICATE "PLAIN" ${quoted(plain('', BOB.name, BOB.password))}`]) {
      const c = await RawSieve.connect({ port: proxied.sievePort, tls: true, ca: proxied.ca, localAddress: '127.0.0.3' });
      try {
        await c.readResponse();
        expect((await c.command(auth)).status).toMatch(/^OK/);
        expect((await c.command('LISTSCRIPTS')).status).toMatch(/^OK/);
      } finally {
        c.close();
      }
    }
    await sleep(100);
    const logins = (await proxied.dovecot.readLog()).split('\n').filter((l) => /managesieve-login: Info: Login: /.test(l));
    expect(logins).toHaveLength(2);
    for (const line of logins) {
      expect(line).toContain(`user=<${BOB.name}>`);
      expect(line).toContain('rip=127.0.0.3');
    }
  });
});

describe('sasl-gate doctor with a ManageSieve backend', () => {
  it('probes Dovecot’s managesieve and tries the master login for the token’s user, which Dovecot logs', async () => {
    const path = join(dir, 'doctor.yaml');
    writeFileSync(
      path,
      stringify({
        listeners: [{ protocol: 'sieve', bind: '127.0.0.1:0', tls: 'starttls' }],
        tls: stack.tlsPaths,
        backends: { sieve: { host: stack.dovecot.host, port: stack.dovecot.sievePort } },
        master: MASTER,
        oauth: { issuer: stack.idp.issuer, audience: ['mail'], validation: ['jwt'], clientId: stack.idp.clientId, allowedEmailDomains: ['example.test'] },
      }),
    );
    const { config } = loadConfig({ file: path, env: {} });
    const before = (await sieveLogins()).length;
    const lines: string[] = [];
    const code = await runDoctor(config, { token: aliceToken, out: (line) => lines.push(line) });
    expect(code, lines.join('\n')).toBe(0);
    expect(lines.find((l) => l.includes('sieve backend'))).toMatch(/^PASS  sieve backend +127\.0\.0\.1:\d+ /);
    expect(lines.find((l) => l.includes('sieve master'))).toMatch(
      new RegExp(`^PASS  sieve master +login as ${ALICE.name.replace('.', '\\.')} \\(master user ${MASTER.user}\\) accepted, after XCLIENT with the client address$`),
    );
    // Dovecot writes the line once the login process has handed over, a moment after the answer.
    await waitFor(async () => (await sieveLogins()).length > before, { what: 'the login line in Dovecot’s log' });
    const logins = (await sieveLogins()).slice(before);
    expect(logins).toHaveLength(1);
    expect(logins[0]).toContain(`user=<${ALICE.name}>`);
  });
});

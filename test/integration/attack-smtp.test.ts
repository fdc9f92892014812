/**
 * Attacks on the SMTP session after an OAuth login, against real Postfix 3.7 (which authorises
 * XCLIENT from sasl-gate) in both login modes. Postfix itself is the judge: a command filter
 * added to its configuration logs every command line it reads that carries the attack markers
 * (`PWNED`, `LOGIN=bob`), so any byte sequence Postfix reads as a command that sasl-gate did not
 * parse and re-send shows up in Postfix's own log, as does any session it thinks is bob's.
 */
import { randomBytes } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RawSmtps } from '../support/smtps-raw.js';
import { startSmtpStacks, USERS, xoauth2, type Stack } from '../support/stack.js';

const [ALICE, BOB] = USERS as [(typeof USERS)[0], (typeof USERS)[0]];
const MODES = ['xclient', 'master'] as const;
type Mode = (typeof MODES)[number];
const stacks = {} as Record<Mode, Stack>;
const tokens = {} as Record<Mode, string>;

/** Makes Postfix log every command line that carries an attack marker (and change nothing). */
function watchPostfixCommands(stack: Stack): void {
  const postfix = stack.postfix!;
  const filter = join(postfix.configDir, 'attack_command_filter.regexp');
  writeFileSync(filter, ['/^(.*PWNED.*)$/ $1', '/^(.*LOGIN=bob.*)$/ $1', ''].join('\n'));
  execFileSync('/usr/sbin/postconf', ['-c', postfix.configDir, '-e', `smtpd_command_filter = regexp:${filter}`]);
  execFileSync('/usr/sbin/postfix', ['-c', postfix.configDir, 'reload'], { stdio: 'ignore' });
}

beforeAll(async () => {
  Object.assign(stacks, await startSmtpStacks());
  for (const mode of MODES) {
    watchPostfixCommands(stacks[mode]);
    tokens[mode] = await stacks[mode].idp.mintAccessToken({ user: ALICE.name });
  }
  // The reload restarts Postfix's daemons; give the master a moment.
  await new Promise((r) => setTimeout(r, 1500));
}, 120_000);

afterAll(async () => {
  await Promise.all(Object.values(stacks).map((s) => s.close()));
});

async function loggedIn(stack: Stack, token: string): Promise<RawSmtps> {
  const c = await RawSmtps.connect({ host: stack.host, port: stack.smtpPort, ca: stack.ca, timeoutMs: 4000 });
  expect((await c.command('EHLO client.example')).code).toBe(250);
  expect((await c.command(`AUTH XOAUTH2 ${xoauth2(ALICE.name, token)}`)).code).toBe(235);
  return c;
}

/** What Postfix logged that shows a command or an identity sasl-gate should never have let through. */
function breaches(log: string): string[] {
  return log
    .split('\n')
    .filter(
      (l) =>
        (/replacing command/.test(l) && !/PWNED-control/.test(l)) ||
        /sasl_username=(?!alice@example\.test\b)/.test(l) ||
        /: from=<bob@example\.test>/.test(l),
    );
}

describe.each(MODES)('attack: logged-in alice (backends.smtp.login: %s)', (mode) => {
  it('MAIL FROM AUTH=<bob> does not reach Postfix as an authenticated-sender claim', async () => {
    const stack = stacks[mode];
    const c = await loggedIn(stack, tokens[mode]);
    try {
      c.write(`MAIL FROM:<${ALICE.name}> AUTH=<${BOB.name}>\r\nRCPT TO:<${BOB.name}>\r\nDATA\r\n`);
      const replies = await c.readReplies(3);
      if (replies[2]?.code === 354) {
        c.write(`Subject: auth-param ${randomBytes(4).toString('hex')}\r\n\r\nhello\r\n.\r\n`);
        await c.readReply();
      }
      await c.command('QUIT');
    } finally {
      c.close();
    }
    await new Promise((r) => setTimeout(r, 500));
    const log = await stack.postfix!.readLog();
    // Postfix logs `sasl_sender=bob@example.test` and hands it to milters as {auth_author}.
    expect(log.split('\n').filter((l) => /sasl_sender=<?bob/.test(l))).toEqual([]);
  });

  it('control: the command filter does log a marker that sasl-gate forwards on purpose', async () => {
    const stack = stacks[mode];
    const c = await loggedIn(stack, tokens[mode]);
    try {
      await c.command('VRFY PWNED-control');
      await c.command('QUIT');
    } finally {
      c.close();
    }
    await new Promise((r) => setTimeout(r, 300));
    expect(await stack.postfix!.readLog()).toMatch(/replacing command "VRFY PWNED-control"/);
  });

  it('randomly generated pipelined sessions split at random offsets: Postfix never reads a hidden command', async () => {
    const stack = stacks[mode];
    const seedBase = Number(process.env['ATTACK_SEED'] ?? Date.now());
    const sessions = Number(process.env['ATTACK_SESSIONS'] ?? 8);
    let seed = seedBase;
    // The high bits of the LCG: its low bits repeat with a short period (every fourth write paused).
    const rnd = (n: number) => {
      seed = (seed * 1103515245 + 12345) % 2 ** 31;
      return Math.floor((seed / 2 ** 31) * n);
    };
    const pick = <T>(xs: readonly T[]): T => xs[rnd(xs.length)]!;
    const ws = ['', ' ', '\t', '\x0b', '\x0c', '  ', ' \t'];
    const ends = ['\r\n', '\n', '\r\r\n', '\r', '\n\r', '\r\n\r'];
    const hidden = () => `PWNED\r\nXCLIENT LOGIN=${BOB.name}\r\nAUTH PLAIN PWNED\r\nMAIL FROM:<${BOB.name}>\r\n`;
    const dotLines = ['.', '. ', '.\x00', '.\r', '\r.', ' .', '..', '.\t', '.\x0b'];
    const pieces: Array<() => string> = [
      () => `${pick(ws)}MAIL FROM:<${ALICE.name}>${pick(ends)}`,
      () => `RCPT TO:<${BOB.name}>${pick(ends)}`,
      () => `${pick(ws)}${pick(['DATA', 'data', 'DaTa'])}${pick(ws)}${pick(ends)}`,
      () => `${pick(dotLines)}${pick(ends)}${hidden()}`,
      () => `${pick(['Subject: x', 'body line', '', 'BDAT 5', 'DATA', `${pick(ws)}BDAT 40 LAST`])}${pick(ends)}`,
      () => {
        const body = `${pick(dotLines)}${pick(ends)}${hidden()}`.slice(0, 60);
        const n = body.length + rnd(5) - 2;
        return `${pick(ws)}BDAT${pick(ws) || ' '}${Math.max(0, n)}${pick(['', ' LAST', ' last', '  LAST'])}${pick(ends)}${body}`;
      },
      () => `${pick(['RSET', 'NOOP', 'EHLO client.example', 'HELO client.example', 'VRFY alice', 'HELP', 'ETRN x', 'XCLIENT LOGIN=bob@example.test'])}${pick(ends)}`,
      () => `${pick(ws)}PWNED${pick(ws)}LOGIN=${BOB.name}${pick(ends)}`,
      () => `${'A'.repeat(2040 + rnd(16))}${pick(ends)}PWNED\r\n`,
      () => `\x00PWNED\r\n`,
      () => `\xff\xfePWNED ${BOB.name}\r\n`,
    ];
    for (let s = 0; s < sessions; s++) {
      let script = '';
      const count = 3 + rnd(12);
      for (let i = 0; i < count; i++) script += pick(pieces)();
      script += 'QUIT\r\n';
      const bytes = Buffer.from(script, 'latin1');
      const c = await loggedIn(stack, tokens[mode]);
      try {
        let at = 0;
        while (at < bytes.length) {
          const n = 1 + rnd(Math.min(64, bytes.length - at));
          c.write(bytes.subarray(at, at + n));
          at += n;
          // Now and then a pause, so the pieces also reach sasl-gate as separate segments.
          if (rnd(8) === 0) await new Promise((r) => setTimeout(r, 1 + rnd(10)));
        }
        await c.waitClosed(800);
      } finally {
        c.close();
      }
    }
    await new Promise((r) => setTimeout(r, 1000));
    expect(breaches(await stack.postfix!.readLog()), `seed ${seedBase}`).toEqual([]);
  }, 300_000);
});

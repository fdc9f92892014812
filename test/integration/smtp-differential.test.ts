/**
 * Differential test of the SMTP relay after login against real Postfix 3.7, which authorises
 * XCLIENT from sasl-gate's address (so a single command smuggled past sasl-gate would make it
 * another user). fast-check generates post-login sessions as alice: random mixes of commands with
 * whitespace, case and line-end variants, bare CR and LF, NUL, dot lines, DATA and BDAT with right
 * and wrong sizes, fake commands inside content, several transactions per connection, pipelined and
 * cut into writes at arbitrary bytes; several sessions run at once. The oracle is Postfix's own
 * evidence: its log never names another `sasl_username` nor accepts an XCLIENT or AUTH beyond
 * sasl-gate's login, and every message it queued is one whose end the client saw accepted, with the
 * same content (`postcat`). A failure prints the shrunk sessions with what each client saw.
 *
 * SMTP_DIFF_RUNS sets the runs per login mode (each run plays up to 8 sessions at once).
 */
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { secret } from '../support/evidence.js';
import { RawSmtp } from '../support/smtp-raw.js';
import { RawSmtps } from '../support/smtps-raw.js';
import { contradictions, keepQueuedMail, playSession, type SessionRecord } from '../support/smtp-differential.js';
import { generatedSession, wellFormedSession, type GeneratedSession } from '../support/smtp-sessions.js';
import { startSmtpStacks, USERS, xoauth2, type Stack } from '../support/stack.js';

const ALICE = USERS[0]!;
const MODES = ['xclient', 'master'] as const;
type Mode = (typeof MODES)[number];

const RUNS = Number(process.env.SMTP_DIFF_RUNS ?? 15);
const SESSIONS_PER_RUN = 8;
/** How long a client waits for more replies before it gives up on a session that went quiet. */
const QUIET_MS = 500;

const stacks = {} as Record<Mode, Stack>;
const logins = {} as Record<Mode, string>;

beforeAll(async () => {
  Object.assign(stacks, await startSmtpStacks());
  for (const mode of MODES) {
    const stack = stacks[mode];
    await keepQueuedMail(stack.postfix!);
    const token = secret(await stack.idp.mintAccessToken({ user: ALICE.name }), 'access token');
    logins[mode] = xoauth2(ALICE.name, token);
  }
});

afterAll(async () => {
  await Promise.all(Object.values(stacks).map((s) => s.close()));
});

/** One generated session through sasl-gate, after EHLO and a token login as alice. */
async function throughGate(mode: Mode, session: GeneratedSession): Promise<SessionRecord> {
  const stack = stacks[mode];
  const client = await RawSmtps.connect({ host: stack.host, port: stack.smtpPort, ca: stack.ca });
  expect((await client.command('EHLO client.example')).code).toBe(250);
  expect((await client.command(`AUTH XOAUTH2 ${logins[mode]}`)).code).toBe(235);
  return playSession(client, session, QUIET_MS);
}

/** Plays sessions at once and returns every contradiction Postfix's evidence shows. */
async function judge(
  mode: Mode | 'direct',
  stack: Stack,
  sessions: GeneratedSession[],
  play: (s: GeneratedSession) => Promise<SessionRecord>,
): Promise<string[]> {
  const offset = (await stack.postfix!.readLog()).length;
  const records = await Promise.all(sessions.map(play));
  return contradictions({ postfix: stack.postfix!, offset, user: ALICE.name, clientAddress: '127.0.0.1', login: mode, records });
}

describe('the oracle', () => {
  it('finds nothing to object to in well-formed sessions straight to Postfix', async () => {
    const stack = stacks.master;
    const password = Buffer.from(`\0${ALICE.name}\0${ALICE.password}`).toString('base64');
    secret(password, 'PLAIN message');
    await fc.assert(
      fc.asyncProperty(fc.array(wellFormedSession, { minLength: 1, maxLength: SESSIONS_PER_RUN }), async (batch) => {
        const problems = await judge('direct', stack, batch, async (session) => {
          const client = await RawSmtp.connect(stack.postfix!.host, stack.postfix!.submissionPort);
          expect((await client.command('EHLO client.example')).code).toBe(250);
          expect((await client.command(`AUTH PLAIN ${password}`)).code).toBe(235);
          return playSession(client, session, QUIET_MS);
        });
        if (problems.length > 0) throw new Error(problems.join('\n\n'));
      }),
      { numRuns: 5 },
    );
  }, 120_000);
});

describe.concurrent('generated post-login sessions through sasl-gate into Postfix', () => {
  it.each(MODES)(
    'never become another user nor queue mail the client did not see accepted (backends.smtp.login: %s)',
    async (mode) => {
      let sessions = 0;
      await fc.assert(
        fc.asyncProperty(fc.array(generatedSession, { minLength: 1, maxLength: SESSIONS_PER_RUN }), async (batch) => {
          sessions += batch.length;
          const problems = await judge(mode, stacks[mode], batch, (s) => throughGate(mode, s));
          if (problems.length > 0) throw new Error(problems.join('\n\n'));
        }),
        // Shrinking replays sessions against the real servers: bounded, it still ends on the smallest failure found.
        { numRuns: RUNS, interruptAfterTimeLimit: Math.max(180_000, RUNS * 10_000) },
      );
      console.log(`smtp-differential (${mode}): ${sessions} sessions, no contradiction`);
    },
    Math.max(240_000, RUNS * 12_000),
  );

});

/**
 * Runs generated post-login SMTP sessions against a real Postfix (through sasl-gate or straight)
 * and judges them by Postfix's own evidence: its log (who it thought the client was, which
 * messages it queued, how many XCLIENT and AUTH commands it accepted) and its queue (`postcat`),
 * against the reference reading of what each client sent and saw.
 */
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import type { PostfixInstance } from '../../tools/postfix.js';
import type { RawSmtp, SmtpReply } from './smtp-raw.js';
import {
  comparableContent,
  queuedContent,
  READINGS,
  readSession,
  sameAsQueued,
  type SeenReply,
  type SessionReading,
} from './smtp-reading.js';
import { sessionBytes, sessionWrites, type GeneratedSession } from './smtp-sessions.js';
import { sleep, waitFor } from './wait.js';

const run = promisify(execFile);
const POSTCONF = '/usr/sbin/postconf';
const POSTFIX = '/usr/sbin/postfix';
const POSTCAT = '/usr/sbin/postcat';

/** What one session sent and saw. */
export interface SessionRecord {
  session: GeneratedSession;
  sent: Buffer;
  replies: SeenReply[];
  /** Why reading replies stopped: the server closed, went quiet, or sent something that is no SMTP reply. */
  ended: string;
}

/**
 * Keeps every message Postfix queues in its queue (delivery deferred), so `postcat` can show each
 * one, and stored as it came: no header addresses rewritten, no missing headers added. Postfix also
 * answers at once after many errors (no `smtpd_error_sleep_time`), so a client that waits a fixed
 * time for replies sees them all. Reloads the running instance.
 */
export async function keepQueuedMail(postfix: PostfixInstance): Promise<void> {
  await run(POSTCONF, [
    '-c',
    postfix.configDir,
    '-e',
    'defer_transports = lmtp error',
    'local_header_rewrite_clients =',
    'smtpd_error_sleep_time = 0',
  ]);
  const before = (await postfix.readLog()).length;
  await run(POSTFIX, ['-c', postfix.configDir, 'reload']);
  await waitFor(async () => /reload -- version/.test((await postfix.readLog()).slice(before)), { timeoutMs: 10_000, what: 'Postfix to log its reload' });
}

/**
 * Sends a session over a logged-in connection, cut into its writes with a pause after each, and
 * collects every reply until the server closes or stays quiet for `quietMs`.
 */
export async function playSession(client: RawSmtp, session: GeneratedSession, quietMs: number): Promise<SessionRecord> {
  const replies: SeenReply[] = [];
  let ended = 'open';
  const reading = (async () => {
    for (;;) {
      let reply: SmtpReply;
      try {
        reply = await client.readReply(quietMs);
      } catch (err) {
        ended = err instanceof Error ? err.message : String(err);
        return;
      }
      replies.push({ code: reply.code, text: reply.lines.join('\n') });
    }
  })();
  for (const write of sessionWrites(session)) {
    if (client.socket.destroyed) break;
    client.write(write);
    await sleep(1);
  }
  await reading;
  client.close();
  return { session, sent: sessionBytes(session), replies, ended };
}

/** A session's transcript, for a failure message: what was sent and every reply seen. */
export function transcript(record: SessionRecord): string {
  return [
    `sent: ${JSON.stringify(record.sent.toString('latin1'))}`,
    ...record.replies.map((r, i) => `reply ${i}: ${JSON.stringify(r.text)}`),
    `then: ${record.ended}`,
  ].join('\n');
}

/** Postfix's log lines from `offset` on, once every SMTP session in them has ended (or after `timeoutMs`). */
export async function settledLog(postfix: PostfixInstance, offset: number, timeoutMs = 5_000): Promise<string[]> {
  let lines: string[] = [];
  const settled = async () => {
    lines = (await postfix.readLog()).slice(offset).split('\n');
    const connects = lines.filter((l) => /\/smtpd\[\d+\]: connect from /.test(l)).length;
    const disconnects = lines.filter((l) => /\/smtpd\[\d+\]: disconnect from /.test(l)).length;
    return connects === disconnects;
  };
  // After the time is up the lines are returned as they are: the caller's checks say what is missing.
  await waitFor(settled, { timeoutMs }).catch(() => undefined);
  return lines;
}

/**
 * The content of a message Postfix queued (Postfix's `Received:` header left out, comparable form),
 * or undefined when the transaction that opened the queue file never completed.
 */
async function queuedMessage(postfix: PostfixInstance, id: string): Promise<string | undefined> {
  const deadline = Date.now() + 2_000;
  for (;;) {
    try {
      const { stdout } = await run(POSTCAT, ['-c', postfix.configDir, '-bh', '-q', id], { encoding: 'latin1', maxBuffer: 64 << 20 });
      return comparableContent(queuedContent(stdout));
    } catch (err) {
      // A queue file that was opened and then dropped: no queue manager line ever names it.
      const log = await postfix.readLog();
      if (!new RegExp(`postfix/qmgr\\[\\d+\\]: ${id}: from=`).test(log)) return undefined;
      if (Date.now() > deadline) throw new Error(`Postfix queued ${id} but postcat cannot show it`, { cause: err });
      await sleep(50);
    }
  }
}

/** The count of accepted commands of one kind in a `disconnect from ... xclient=1/2 auth=1` line. */
function accepted(line: string, command: string): number {
  const match = new RegExp(`\\b${command}=(\\d+)`).exec(line);
  return match ? Number(match[1]) : 0;
}

/** What the login mode lets Postfix accept on one connection: sasl-gate's own login, nothing more. */
export const LOGIN_COMMANDS: Record<'xclient' | 'master' | 'direct', { xclient: number; auth: number }> = {
  xclient: { xclient: 1, auth: 0 },
  master: { xclient: 0, auth: 1 },
  direct: { xclient: 0, auth: 1 },
};

/**
 * Every way Postfix's evidence contradicts what the clients sent and saw, for the sessions played
 * since `offset` in Postfix's log: another `sasl_username` than `user`, more XCLIENT or AUTH than the
 * login needs, another client address or a new greeting (both mean an XCLIENT got through), a queued message no client saw accepted at the end of its content, content that differs,
 * and "queued" replies answering something that was not the end of a message.
 */
export async function contradictions(options: {
  postfix: PostfixInstance;
  offset: number;
  user: string;
  /** The address every client connects from, which Postfix must keep logging. */
  clientAddress: string;
  login: keyof typeof LOGIN_COMMANDS;
  records: SessionRecord[];
}): Promise<string[]> {
  const { postfix, user, records } = options;
  const problems: string[] = [];
  const lines = await settledLog(postfix, options.offset);

  for (const line of lines) {
    const name = /sasl_username=([^,\s]+)/.exec(line)?.[1];
    if (name !== undefined && name !== user) problems.push(`Postfix took a session for ${name}: ${line}`);
    const client = /\/smtpd\[\d+\]: (?:dis)?connect from [^\s\[]*\[([^\]]+)\]/.exec(line)?.[1];
    if (client !== undefined && client !== options.clientAddress) problems.push(`Postfix took another client address: ${line}`);
    if (/\/smtpd\[\d+\]: disconnect from /.test(line)) {
      const allowed = LOGIN_COMMANDS[options.login];
      if (accepted(line, 'xclient') > allowed.xclient || accepted(line, 'auth') > allowed.auth) {
        problems.push(`Postfix accepted XCLIENT or AUTH from a client: ${line}`);
      }
    }
  }

  for (const record of records) {
    // Postfix greets anew only after an XCLIENT it accepted; after login no client may see that.
    const greeting = record.replies.findIndex((r) => r.code === 220);
    if (greeting >= 0) problems.push(`reply ${greeting} is a new greeting: Postfix accepted an XCLIENT\n${transcript(record)}`);
  }

  // Each session is read every sound way; it must make sense, whole, in one of them.
  const readings: Array<{ record: SessionRecord; reading: SessionReading }> = records.flatMap((record) => {
    const all = READINGS.map((rules) => ({ record, reading: readSession(record.sent, record.replies, rules) }));
    const consistent = all.filter((r) => r.reading.misplaced.length === 0);
    if (consistent.length === 0) {
      const m = all[0]!.reading.misplaced[0]!;
      problems.push(`reply ${m.reply} ${JSON.stringify(m.text)} answered ${m.answers}, not the end of a message\n${transcript(record)}`);
      return all;
    }
    return consistent;
  });

  // smtpd opens a queue file at the first accepted RCPT; only the queue manager's line says it was queued.
  const opened = lines
    .map((l) => /postfix\/[\w-]+\/smtpd\[\d+\]: ([0-9A-F]+): client=/.exec(l)?.[1])
    .filter((id): id is string => id !== undefined);
  for (const id of opened) {
    const stored = await queuedMessage(postfix, id);
    if (stored === undefined) continue;
    // A client that stopped waiting cannot have seen the answer to its last message; that message may be queued.
    const unanswered = readings.some((r) => r.reading.unanswered.some((content) => sameAsQueued(comparableContent(content), stored, id)));
    if (unanswered && !readings.some((r) => r.reading.accepted.some((a) => a.queueId === id))) continue;
    const claims = readings.flatMap((r) => r.reading.accepted.filter((a) => a.queueId === id).map((a) => ({ ...r, message: a })));
    const owner = records.find((rec) => rec.replies.some((reply) => reply.text.includes(`queued as ${id}`)));
    if (claims.length === 0) {
      problems.push(
        `Postfix queued ${id}, which no client saw accepted at the end of its content` +
          (owner ? `\n${transcript(owner)}` : ' (no client saw its queue id at all)'),
      );
      continue;
    }
    if (!claims.some((c) => sameAsQueued(comparableContent(c.message.content), stored, id))) {
      const claim = claims[0]!;
      problems.push(
        `Postfix queued ${id} with other content than the client sent:\n  sent:   ${JSON.stringify(comparableContent(claim.message.content))}\n  queued: ${JSON.stringify(stored)}\n${transcript(claim.record)}`,
      );
    }
  }
  return problems;
}

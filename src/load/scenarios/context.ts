/** What every scenario gets: where to connect, how, as whom, and where to record. */
import { performance } from 'node:perf_hooks';
import type { Plan } from '../engine.js';
import { ImapClient } from '../imap.js';
import { Pop3Client } from '../pop3.js';
import type { Recorder, Writer } from '../recorder.js';
import type { Credential, Mech } from '../sasl.js';
import { SmtpClient } from '../smtp.js';
import type { Protocol, Target } from '../target.js';
import { Wire, type TlsSettings } from '../wire.js';

/** IMAP commands of an `imap-session`, and how many of each per session. */
export const MIX_COMMANDS = ['select', 'fetch', 'search', 'idle', 'noop'] as const;
export type MixCommand = (typeof MIX_COMMANDS)[number];
export type Mix = Record<MixCommand, number>;

export interface ScenarioOptions {
  /** imap-session: commands per session. */
  mix: Mix;
  /** imap-session: how long each IDLE lasts. */
  idleMs: number;
  /** imap-session: messages each FETCH asks for (the newest ones). */
  fetchLast: number;
  /** imap-session, imap-idle: the mailbox to select. */
  mailbox: string;
  /** smtp-send: message size in bytes. */
  size: number;
  /** smtp-send: recipient; default the user itself. */
  rcpt: string | undefined;
  /** imap-idle: most connections being opened at once. */
  ramp: number;
  /** imap-idle: a local process whose resident memory to report (Linux). */
  targetPid: number | undefined;
}

export interface ScenarioContext {
  target: Target;
  tls: TlsSettings;
  /** Upgrade plain imap://, smtp:// or pop3:// connections with STARTTLS (POP3: STLS). */
  starttls: boolean;
  /** Limit of every wait for the server. */
  timeoutMs: number;
  mech: Mech;
  /** The credential for transaction `index` (round-robin over the users). */
  credential(index: number): Credential;
  recorder: Recorder;
  plan: Plan;
  options: ScenarioOptions;
  /** For notes while running (the progress line is not written here). */
  stderr: Writer;
}

/** Scenario-specific results for the report. */
export interface ScenarioExtras {
  idle?: IdleResult;
}

export interface MemorySample {
  rssBytes: number;
  heapUsedBytes: number;
  externalBytes: number;
}

export interface IdleResult {
  /** Connections asked for (`--concurrency`). */
  requested: number;
  /** Connections that reached IDLE. */
  established: number;
  /** Connections still in IDLE at the end of the hold. */
  held: number;
  /** Connections that could not be opened, or the server closed while held. */
  failed: number;
  /** Of those: closed by the server during the hold. */
  dropped: number;
  /** Seconds the connections were held. */
  holdSeconds: number;
  /** The harness's own memory before opening and while holding. */
  harness: { before: MemorySample; holding: MemorySample; perConnectionBytes: number | null };
  /** `--target-pid`: that process's resident memory before and while holding. */
  targetProcess?: { pid: number; beforeRssBytes: number | null; holdingRssBytes: number | null; perConnectionBytes: number | null };
}

export interface Scenario {
  name: string;
  protocol: Protocol;
  run(ctx: ScenarioContext): Promise<ScenarioExtras>;
}

/** Records the time since the previous lap (or the start) as the duration of `step`. */
export interface Lap {
  (step: string): void;
  /** Leaves `ms` the harness itself waited out of the current step. */
  exclude(ms: number): void;
}

/** Measures consecutive steps of one transaction. */
export function stepClock(recorder: Recorder): Lap {
  let last = performance.now();
  const lap = (step: string) => {
    const now = performance.now();
    recorder.step(step, Math.max(0, now - last));
    last = now;
  };
  lap.exclude = (ms: number) => {
    last += ms;
  };
  return lap;
}

/** Connects, secures, reads the greeting and logs in over IMAP. */
export async function openImap(ctx: ScenarioContext, credential: Credential, lap: Lap): Promise<ImapClient> {
  const wire = await Wire.connect(ctx.target.host, ctx.target.port, ctx.timeoutMs);
  lap('connect');
  try {
    if (ctx.target.implicitTls) {
      await wire.secure(ctx.tls);
      lap('tls');
    }
    const imap = new ImapClient(wire);
    await imap.greeting();
    lap('greeting');
    if (ctx.starttls) {
      await imap.startTls(ctx.tls);
      lap('starttls');
    }
    if (imap.capabilities.size === 0) {
      await imap.ensureCapabilities();
      lap('capability');
    }
    await imap.authenticate(ctx.mech, credential, ctx.target.host, ctx.target.port);
    lap('auth');
    return imap;
  } catch (err) {
    wire.close();
    throw err;
  }
}

/** The EHLO name the harness uses. */
export const EHLO_NAME = 'load.sasl-gate.invalid';

/** Connects, secures, reads the greeting, EHLO and logs in over SMTP. */
export async function openSmtp(ctx: ScenarioContext, credential: Credential, lap: Lap): Promise<SmtpClient> {
  const wire = await Wire.connect(ctx.target.host, ctx.target.port, ctx.timeoutMs);
  lap('connect');
  try {
    if (ctx.target.implicitTls) {
      await wire.secure(ctx.tls);
      lap('tls');
    }
    const smtp = new SmtpClient(wire);
    await smtp.greeting();
    lap('greeting');
    await smtp.ehlo(EHLO_NAME);
    lap('ehlo');
    if (ctx.starttls) {
      await smtp.startTls(ctx.tls);
      await smtp.ehlo(EHLO_NAME);
      lap('starttls');
    }
    await smtp.authenticate(ctx.mech, credential, ctx.target.host, ctx.target.port);
    lap('auth');
    return smtp;
  } catch (err) {
    wire.close();
    throw err;
  }
}

/** Connects, secures (TLS, or STLS), reads the greeting and logs in over POP3. */
export async function openPop3(ctx: ScenarioContext, credential: Credential, lap: Lap): Promise<Pop3Client> {
  const wire = await Wire.connect(ctx.target.host, ctx.target.port, ctx.timeoutMs);
  lap('connect');
  try {
    if (ctx.target.implicitTls) {
      await wire.secure(ctx.tls);
      lap('tls');
    }
    const pop3 = new Pop3Client(wire);
    await pop3.greeting();
    lap('greeting');
    if (ctx.starttls) {
      await pop3.startTls(ctx.tls);
      lap('starttls');
    }
    await pop3.authenticate(ctx.mech, credential, ctx.target.host, ctx.target.port);
    lap('auth');
    return pop3;
  } catch (err) {
    wire.close();
    throw err;
  }
}

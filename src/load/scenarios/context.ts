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

/** What every mail client of the harness does to log in. */
interface LoginClient {
  greeting(): Promise<void>;
  startTls(settings: TlsSettings): Promise<void>;
  authenticate(mech: Mech, credential: Credential, host: string, port: number): Promise<void>;
}

/** A protocol's own steps around the common ones; each records its own lap. */
interface LoginSteps<C> {
  afterGreeting?(client: C): Promise<void>;
  /** Runs before the `starttls` lap is recorded. */
  afterStartTls?(client: C): Promise<void>;
  beforeAuth?(client: C): Promise<void>;
}

/**
 * Connects, secures (TLS, or STARTTLS when `ctx.starttls`), reads the greeting and logs in,
 * recording a lap a step; the connection is closed when any step fails.
 */
async function openSession<C extends LoginClient>(
  ctx: ScenarioContext,
  credential: Credential,
  lap: Lap,
  newClient: (wire: Wire) => C,
  steps: LoginSteps<C> = {},
): Promise<C> {
  const wire = await Wire.connect(ctx.target.host, ctx.target.port, ctx.timeoutMs);
  lap('connect');
  try {
    if (ctx.target.implicitTls) {
      await wire.secure(ctx.tls);
      lap('tls');
    }
    const client = newClient(wire);
    await client.greeting();
    lap('greeting');
    await steps.afterGreeting?.(client);
    if (ctx.starttls) {
      await client.startTls(ctx.tls);
      await steps.afterStartTls?.(client);
      lap('starttls');
    }
    await steps.beforeAuth?.(client);
    await client.authenticate(ctx.mech, credential, ctx.target.host, ctx.target.port);
    lap('auth');
    return client;
  } catch (err) {
    wire.close();
    throw err;
  }
}

/** Connects, secures, reads the greeting and logs in over IMAP. */
export async function openImap(ctx: ScenarioContext, credential: Credential, lap: Lap): Promise<ImapClient> {
  return openSession(ctx, credential, lap, (wire) => new ImapClient(wire), {
    async beforeAuth(imap) {
      if (imap.capabilities.size > 0) return;
      await imap.ensureCapabilities();
      lap('capability');
    },
  });
}

/** The EHLO name the harness uses. */
export const EHLO_NAME = 'load.sasl-gate.invalid';

/** Connects, secures, reads the greeting, EHLO and logs in over SMTP. */
export async function openSmtp(ctx: ScenarioContext, credential: Credential, lap: Lap): Promise<SmtpClient> {
  return openSession(ctx, credential, lap, (wire) => new SmtpClient(wire), {
    async afterGreeting(smtp) {
      await smtp.ehlo(EHLO_NAME);
      lap('ehlo');
    },
    async afterStartTls(smtp) {
      await smtp.ehlo(EHLO_NAME);
    },
  });
}

/** Connects, secures (TLS, or STLS), reads the greeting and logs in over POP3. */
export async function openPop3(ctx: ScenarioContext, credential: Credential, lap: Lap): Promise<Pop3Client> {
  return openSession(ctx, credential, lap, (wire) => new Pop3Client(wire));
}

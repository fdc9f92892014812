import type { Logger } from 'pino';
import { ImapBackendConversation, parseCapabilities, type BackendConnector } from './backend.js';

/** The token mechanisms sasl-gate answers itself. */
export const TOKEN_MECHANISMS = ['XOAUTH2', 'OAUTHBEARER'] as const;
/** Password mechanisms passed through when the backend offers them. */
export const PASSWORD_MECHANISMS = ['PLAIN', 'LOGIN'] as const;

/** What a backend that could not be probed is assumed to offer (any IMAP4rev1 server does). */
const FALLBACK = ['IMAP4rev1', 'AUTH=PLAIN'];

/** Capabilities only meaningful between the client and whoever terminates TLS and SASL. */
const NOT_FORWARDED = /^(AUTH=|STARTTLS$|LOGINDISABLED$|SASL-IR$)/i;

/**
 * The pre-login capability list clients see: the backend's own (so nothing changes in an
 * unexpected way after login) less what sasl-gate terminates itself, plus SASL-IR and the
 * mechanisms sasl-gate offers.
 */
export function advertisedCapabilities(backend: readonly string[]): string[] {
  const upper = new Set(backend.map((c) => c.toUpperCase()));
  const kept = backend.filter((c) => !NOT_FORWARDED.test(c));
  if (!upper.has('IMAP4REV1')) kept.unshift('IMAP4rev1');
  const passwords = PASSWORD_MECHANISMS.filter((m) => upper.has(`AUTH=${m}`));
  return [...kept, 'SASL-IR', ...[...TOKEN_MECHANISMS, ...passwords].map((m) => `AUTH=${m}`)];
}

/** Asks the backend for its pre-login capabilities. */
export async function probeImapCapabilities(connect: BackendConnector, timeoutMs: number): Promise<string[]> {
  const socket = await connect();
  const conversation = new ImapBackendConversation(socket, timeoutMs);
  try {
    await conversation.greeting();
    if (conversation.greetingCapabilities) return conversation.greetingCapabilities;
    const tag = conversation.nextTag();
    conversation.write(`${tag} CAPABILITY\r\n`);
    const { untagged } = await conversation.readTagged(tag);
    const found = untagged.map(parseCapabilities).find((c) => c !== undefined);
    if (!found) throw new Error('backend sent no CAPABILITY');
    return found;
  } finally {
    conversation.close();
  }
}

/** Keeps the backend's capabilities fresh: probed at start and then periodically. */
export class CapabilityCache {
  private backend: string[] = FALLBACK;
  private advertised: string[] = advertisedCapabilities(FALLBACK);
  private probed = false;
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly connect: BackendConnector,
    private readonly options: { timeoutMs: number; refreshMs: number; log: Logger },
  ) {}

  /** Pre-login capabilities to advertise to clients. */
  current(): readonly string[] {
    return this.advertised;
  }

  /** Whether the backend's list has been seen at least once. */
  get isProbed(): boolean {
    return this.probed;
  }

  /** Whether the backend advertises a capability (case-insensitive). */
  backendHas(capability: string): boolean {
    return this.backend.some((c) => c.toUpperCase() === capability.toUpperCase());
  }

  /** Probes once now, then keeps refreshing in the background. */
  async start(): Promise<void> {
    await this.refresh();
    this.timer = setInterval(() => void this.refresh(), this.options.refreshMs);
    this.timer.unref();
  }

  /** Stops refreshing. */
  stop(): void {
    if (this.timer) clearInterval(this.timer);
  }

  /** Probes now; on failure keeps the last known list and logs why. */
  async refresh(): Promise<void> {
    try {
      const list = await probeImapCapabilities(this.connect, this.options.timeoutMs);
      const changed = list.join(' ') !== this.backend.join(' ');
      this.backend = list;
      this.advertised = advertisedCapabilities(list);
      if (changed || !this.probed) {
        this.options.log.info({ capabilities: this.advertised.join(' ') }, 'imap backend capabilities probed');
      }
      this.probed = true;
    } catch (err) {
      this.options.log.warn(
        { err: (err as Error).message },
        this.probed ? 'imap backend capability probe failed; keeping the last list' : 'imap backend capability probe failed; advertising a minimal list until it answers',
      );
    }
  }
}

import { BackendError } from '../errors.js';
import type { BackendConnector } from '../net/connector.js';
import { ImapBackendConversation, parseCapabilities } from './backend.js';

/** The token mechanisms sasl-gate answers itself. */
export const TOKEN_MECHANISMS = ['XOAUTH2', 'OAUTHBEARER'] as const;
/** Password mechanisms passed through when the backend offers them. */
export const PASSWORD_MECHANISMS = ['PLAIN', 'LOGIN'] as const;

/** What a backend that could not be probed is assumed to offer (any IMAP4rev1 server does). */
export const IMAP_FALLBACK = ['IMAP4rev1', 'AUTH=PLAIN'];

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
    if (!found) throw new BackendError('backend sent no CAPABILITY');
    return found;
  } finally {
    conversation.close();
  }
}


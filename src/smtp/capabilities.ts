import { BackendError } from '../errors.js';
import type { BackendConnector } from '../net/connector.js';
import { ehloExtensions, SmtpBackendConversation } from './backend.js';

/** Token mechanisms sasl-gate answers itself, then password mechanisms passed through when offered. */
const TOKEN_MECHANISMS = ['XOAUTH2', 'OAUTHBEARER'];
const PASSWORD_MECHANISMS = ['PLAIN', 'LOGIN'];

/** Extensions sasl-gate handles itself or that only concern sasl-gate's own link to the backend. */
export const NOT_FORWARDED = /^(AUTH|AUTH=.*|STARTTLS|XCLIENT|XFORWARD)(\s|$)/i;

/**
 * The EHLO extensions clients see: the backend's own (so the session after AUTH offers what
 * was promised) less those sasl-gate terminates or reserves, plus sasl-gate's AUTH list.
 */
export function advertisedSmtpExtensions(backend: readonly string[]): string[] {
  const kept = backend.filter((e) => !NOT_FORWARDED.test(e));
  const backendAuth = backend.find((e) => /^AUTH[ =]/i.test(e));
  const offered = new Set((backendAuth?.slice(5).toUpperCase().split(/\s+/) ?? []).filter(Boolean));
  const passwords = PASSWORD_MECHANISMS.filter((m) => offered.has(m));
  return [...kept, `AUTH ${[...TOKEN_MECHANISMS, ...passwords].join(' ')}`];
}

/** Asks the backend for its EHLO extensions. */
export async function probeSmtpExtensions(connect: BackendConnector, timeoutMs: number, localName: string): Promise<string[]> {
  const conversation = await SmtpBackendConversation.open(connect, timeoutMs);
  try {
    const reply = await conversation.command(`EHLO ${localName}`);
    if (reply.code !== 250) throw new BackendError(`backend answered EHLO with ${reply.code}`);
    return ehloExtensions(reply);
  } finally {
    conversation.close();
  }
}

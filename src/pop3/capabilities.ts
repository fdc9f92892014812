import { BackendError } from '../errors.js';
import type { BackendConnector } from '../net/connector.js';
import { Pop3BackendConversation } from './backend.js';

/** The token mechanisms sasl-gate answers itself. */
export const TOKEN_MECHANISMS = ['XOAUTH2', 'OAUTHBEARER'] as const;
/** Password mechanisms passed through when the backend offers them. */
export const PASSWORD_MECHANISMS = ['PLAIN', 'LOGIN'] as const;

/** What a backend that could not be probed is assumed to offer (what Dovecot's POP3 offers). */
export const POP3_FALLBACK = ['CAPA', 'TOP', 'UIDL', 'RESP-CODES', 'PIPELINING', 'AUTH-RESP-CODE', 'USER', 'SASL PLAIN LOGIN'];

/** Capabilities only meaningful between the client and whoever terminates TLS and SASL. */
const NOT_FORWARDED = /^(SASL|STLS|USER|XCLIENT)(\s|$)/i;

/** The keyword of a CAPA line (`SASL PLAIN LOGIN` -> `SASL`). */
function keyword(line: string): string {
  return line.split(' ', 1)[0]!.toUpperCase();
}

/**
 * The CAPA lines clients see once TLS is active: the backend's own (so nothing changes after
 * login) less what sasl-gate terminates itself, the response codes its own replies use, USER when
 * the backend takes it, and the SASL mechanisms sasl-gate offers.
 */
export function advertisedCapabilities(backend: readonly string[]): string[] {
  const keywords = new Set(backend.map(keyword));
  const kept = backend.filter((line) => !NOT_FORWARDED.test(line));
  for (const own of ['CAPA', 'RESP-CODES', 'AUTH-RESP-CODE']) if (!keywords.has(own)) kept.push(own);
  const sasl = backend.find((line) => keyword(line) === 'SASL');
  const offered = new Set((sasl ?? '').toUpperCase().split(' ').slice(1));
  const passwords = PASSWORD_MECHANISMS.filter((m) => offered.has(m));
  return [...kept, ...(keywords.has('USER') ? ['USER'] : []), `SASL ${[...TOKEN_MECHANISMS, ...passwords].join(' ')}`];
}

/** Before TLS: no way to send a password or token, and STLS itself (RFC 2595 4). */
export function plaintextCapabilities(advertised: readonly string[]): string[] {
  return [...advertised.filter((line) => !/^(SASL|USER)(\s|$)/i.test(line)), 'STLS'];
}

/** The mechanisms of the `SASL` line of a capability list. */
export function saslMechanisms(capabilities: readonly string[]): string[] {
  const sasl = capabilities.find((line) => keyword(line) === 'SASL');
  return sasl === undefined ? [] : sasl.toUpperCase().split(' ').slice(1).filter((m) => m.length > 0);
}

/** Asks the backend for its CAPA list. */
export async function probePop3Capabilities(connect: BackendConnector, timeoutMs: number): Promise<string[]> {
  const socket = await connect();
  const conversation = new Pop3BackendConversation(socket, timeoutMs);
  try {
    await conversation.greeting();
    conversation.write('CAPA\r\n');
    const reply = await conversation.reply();
    if (reply.kind !== 'ok') throw new BackendError(`backend refused CAPA: ${reply.text.slice(0, 200)}`);
    return await conversation.readBody();
  } finally {
    conversation.close();
  }
}

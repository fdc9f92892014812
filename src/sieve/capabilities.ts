import type { BackendConnector } from '../net/connector.js';
import { SieveBackendConversation } from './backend.js';
import { SieveFramer } from './framer.js';
import { parseCapability } from './parser.js';
import { capabilityLine } from './replies.js';

/** The token mechanisms sasl-gate answers itself. */
export const TOKEN_MECHANISMS = ['XOAUTH2', 'OAUTHBEARER'] as const;
/** Password mechanisms passed through when the backend offers them. */
export const PASSWORD_MECHANISMS = ['PLAIN', 'LOGIN'] as const;

/** What a backend that could not be probed is assumed to offer (RFC 5804's required lines). */
export const SIEVE_FALLBACK = [
  capabilityLine('IMPLEMENTATION', 'sasl-gate'),
  capabilityLine('SIEVE', ''),
  capabilityLine('SASL', 'PLAIN'),
  capabilityLine('VERSION', '1.0'),
];

/** A canonical capability line's name (upper case) and value. */
export function splitCapability(line: string): { name: string; value: string | undefined } {
  const framer = new SieveFramer({ maxLineLength: 1 << 16, maxLiteralSize: 1 << 16 });
  framer.push(Buffer.from(`${line}\r\n`, 'utf8'));
  const frame = framer.readFrame();
  if (frame?.type !== 'line') return { name: '', value: undefined };
  try {
    return parseCapability(frame.segments);
  } catch {
    return { name: '', value: undefined };
  }
}

/** The SASL mechanisms a capability list advertises (upper case). */
export function mechanismsOf(capabilities: readonly string[]): string[] {
  for (const line of capabilities) {
    const { name, value } = splitCapability(line);
    if (name === 'SASL') return (value ?? '').split(' ').filter((m) => m.length > 0).map((m) => m.toUpperCase());
  }
  return [];
}

/** Lines only meaningful between sasl-gate and the backend (XCLIENT is for trusted proxies). */
const NOT_FORWARDED = new Set(['STARTTLS', 'XCLIENT']);

/**
 * Replaces (or adds) the SASL line and drops STARTTLS and XCLIENT, keeping the backend's order: the SASL line
 * where the backend had it, else before VERSION.
 */
export function withSasl(capabilities: readonly string[], mechanisms: readonly string[], starttls: boolean): string[] {
  const out: string[] = [];
  let placed = false;
  const place = () => {
    if (placed) return;
    out.push(capabilityLine('SASL', mechanisms.join(' ')));
    if (starttls) out.push(capabilityLine('STARTTLS'));
    placed = true;
  };
  for (const line of capabilities) {
    const { name } = splitCapability(line);
    if (name === 'SASL') place();
    else if (name === 'VERSION') {
      place();
      out.push(line);
    } else if (!NOT_FORWARDED.has(name)) out.push(line);
  }
  place();
  return out;
}

/**
 * The capability lines clients see once TLS is active: the backend's own (so nothing changes in
 * an unexpected way after login) with sasl-gate's mechanisms in the SASL line: the token
 * mechanisms, and the password ones the backend offers.
 */
export function advertisedCapabilities(backend: readonly string[]): string[] {
  const offered = new Set(mechanismsOf(backend));
  return withSasl(backend, [...TOKEN_MECHANISMS, ...PASSWORD_MECHANISMS.filter((m) => offered.has(m))], false);
}

/** Asks the backend for its pre-login capabilities (its greeting). */
export async function probeSieveCapabilities(connect: BackendConnector, timeoutMs: number): Promise<string[]> {
  const socket = await connect();
  const conversation = new SieveBackendConversation(socket, timeoutMs);
  try {
    return await conversation.readCapabilities();
  } finally {
    conversation.close();
  }
}

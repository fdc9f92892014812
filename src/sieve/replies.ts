import type { Farewells } from '../login/connection.js';
import type { LoginOutcome } from '../login/flow.js';
import type { SieveFramerError } from './framer.js';
import { encodeString } from './parser.js';

/**
 * What sasl-gate says in ManageSieve (RFC 5804): `OK`, `NO` and `BYE` with an optional response
 * code and a quoted text, the capability block, and SASL challenges as strings.
 */

/** The backend's answer to a login, as the backend login reports it: its whole response line. */
export type SieveBackendRefusal = { status: 'NO'; line: string };

/** A response text as a ManageSieve string (quoted, or a literal when it cannot be quoted). */
export function quote(text: string): string {
  return encodeString(text, 'server').toString('utf8');
}

/** A response line: status, optional response code (without parentheses), quoted text. */
export function response(status: 'OK' | 'NO' | 'BYE', text: string, code?: string): string {
  return `${status}${code ? ` (${code})` : ''} ${quote(text)}`;
}

/** A capability line: `"NAME"` or `"NAME" "value"`. */
export function capabilityLine(name: string, value?: string): string {
  return value === undefined ? quote(name) : `${quote(name)} ${quote(value)}`;
}

/** The capability block and its `OK`: the greeting, the answer to CAPABILITY, and what follows STARTTLS. */
export function capabilityBlock(capabilities: readonly string[], text: string): string[] {
  return [...capabilities, response('OK', text)];
}

/** The greeting (RFC 5804 1.7: the capabilities, then OK). */
export function greeting(capabilities: readonly string[]): string[] {
  return capabilityBlock(capabilities, 'sasl-gate ready.');
}

/** Last words when sasl-gate closes the connection. */
export const FAREWELLS: Farewells & { tooManyFailures: string; tooManyCommands: string } = {
  timeout: response('BYE', 'Login timeout: authentication took too long.'),
  shutdown: response('BYE', 'Server shutting down.'),
  error: response('BYE', 'Internal error.'),
  tooManyFailures: response('BYE', 'Too many authentication failures.'),
  tooManyCommands: response('BYE', 'Too many commands before login.'),
};

/** Refuses a connection over the connection limits. */
export const CONNECTION_REFUSED = response('BYE', 'Too many connections from your address, try again later.', 'TRYLATER');

const TOO_BIG: Record<SieveFramerError, string> = {
  line_too_long: 'Command line too long.',
  literal_too_large: 'Literal too large.',
  too_many_literals: 'Too many literals.',
};

/** A command over the framer's bounds. */
export function tooBig(error: SieveFramerError): string {
  return response('NO', TOO_BIG[error]);
}

/** A command the parser could not read. */
export function syntaxError(detail: string): string {
  return response('NO', `Syntax error: ${detail}.`);
}

/** A SASL challenge (RFC 5804 2.1: a string on a line of its own); `text` is base64. */
export function challenge(text: string): string {
  return quote(text);
}

/** The reply to a login attempt: the one table from outcome to words. */
export function loginReply(outcome: Exclude<LoginOutcome<string, SieveBackendRefusal>, { kind: 'gone' }>): string {
  switch (outcome.kind) {
    case 'success':
      // The backend's own OK line, so what follows the login is the backend's word.
      return outcome.extras;
    case 'cancelled':
      return response('NO', 'Authentication cancelled.');
    case 'malformed':
      return outcome.what === 'too_long'
        ? response('NO', 'Authentication response too long.')
        : response('NO', 'Invalid base64 in authentication response.');
    case 'temporary':
      if (outcome.which === 'provider') return response('NO', 'Authentication service temporarily unavailable, try again later.', 'TRYLATER');
      if (outcome.which === 'backend') return response('NO', 'Mail server temporarily unavailable, try again later.', 'TRYLATER');
      return response('NO', 'Mailbox temporarily unavailable, try again later.', 'TRYLATER');
    case 'refused': {
      const { refusal } = outcome;
      switch (refusal.by) {
        case 'token_message':
          return response('NO', `Invalid ${refusal.mechanism} message: ${refusal.detail}.`);
        case 'token':
          return response('NO', 'Authentication failed.');
        case 'policy':
          return response('NO', `${refusal.clientText ?? 'Authentication failed'}.`);
        case 'backend':
          // The backend's own words, so a password client sees what Dovecot said.
          return refusal.reply.line;
      }
    }
  }
}

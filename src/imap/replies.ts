import type { Farewells } from '../login/connection.js';
import type { LoginOutcome } from '../login/flow.js';

/** The backend's answer to a login, as the IMAP backend login reports it. */
export type ImapBackendRefusal = { status: 'NO' | 'BAD'; text: string };

/** The greeting, with the pre-login capabilities. */
export function greeting(capabilities: readonly string[]): string {
  return `* OK [CAPABILITY ${capabilities.join(' ')}] sasl-gate ready.`;
}

/** Last words when sasl-gate closes the connection. */
export const FAREWELLS: Farewells & { tooManyFailures: string; tooManyCommands: string } = {
  timeout: '* BYE Login timeout: authentication took too long.',
  shutdown: '* BYE Server shutting down.',
  error: '* BYE Internal error.',
  tooManyFailures: '* BYE Too many authentication failures.',
  tooManyCommands: '* BYE Too many commands before login.',
};

/** Refuses a connection over the connection limits. */
export const CONNECTION_REFUSED = '* BYE [UNAVAILABLE] Too many connections from your address, try again later.';

const TOO_BIG = { line_too_long: 'Command line too long', literal_too_large: 'Literal too large', too_many_literals: 'Too many literals' };

/** A command over the framer's bounds (RFC 7162's TOOBIG). */
export function tooBig(tag: string | undefined, error: keyof typeof TOO_BIG): string {
  return `${tag ?? '*'} BAD [TOOBIG] ${TOO_BIG[error]}.`;
}

/** A command the parser could not read. */
export function syntaxError(tag: string | undefined, detail: string): string {
  return `${tag ?? '*'} BAD Syntax error: ${detail}.`;
}

/** The continuation request before a SASL challenge or literal. */
export function continuation(text: string): string {
  return `+ ${text}`;
}

/** The tagged reply to a login attempt: the one table from outcome to words. */
export function loginReply(tag: string, outcome: Exclude<LoginOutcome<string, ImapBackendRefusal>, { kind: 'gone' }>): string {
  switch (outcome.kind) {
    case 'success':
      return `${tag} OK ${outcome.extras}`;
    case 'cancelled':
      return `${tag} BAD Authentication cancelled.`;
    case 'malformed':
      return outcome.what === 'too_long'
        ? `${tag} BAD [TOOBIG] Authentication response too long.`
        : `${tag} BAD Invalid base64 in authentication response.`;
    case 'temporary':
      if (outcome.which === 'provider') return `${tag} NO [UNAVAILABLE] Authentication service temporarily unavailable, try again later.`;
      if (outcome.which === 'backend') return `${tag} NO [UNAVAILABLE] Mail server temporarily unavailable, try again later.`;
      return `${tag} NO [UNAVAILABLE] Mailbox temporarily unavailable, try again later.`;
    case 'refused': {
      const { refusal } = outcome;
      switch (refusal.by) {
        case 'token_message':
          return `${tag} NO [AUTHENTICATIONFAILED] Invalid ${refusal.mechanism} message: ${refusal.detail}.`;
        case 'token':
          return `${tag} NO [AUTHENTICATIONFAILED] Authentication failed.`;
        case 'policy':
          return `${tag} NO [AUTHENTICATIONFAILED] ${refusal.clientText ?? 'Authentication failed'}.`;
        case 'backend':
          // The backend's own words, so a password client sees what Dovecot said.
          return `${tag} ${refusal.reply.status} ${refusal.reply.text}`;
      }
    }
  }
}

import type { Farewells } from '../login/connection.js';
import type { LoginOutcome } from '../login/flow.js';

/** The backend's refusal of a password login: the text after its `-ERR`. */
export type Pop3BackendRefusal = { text: string };

/** The greeting. */
export const GREETING = '+OK sasl-gate ready.';

/** Last words when sasl-gate closes the connection (RFC 3206 response codes). */
export const FAREWELLS: Farewells & { tooManyFailures: string; tooManyCommands: string } = {
  timeout: '-ERR Disconnected for inactivity.',
  shutdown: '-ERR [SYS/TEMP] Server shutting down.',
  error: '-ERR [SYS/TEMP] Internal error.',
  tooManyFailures: '-ERR [AUTH] Too many authentication failures.',
  tooManyCommands: '-ERR Too many commands before login.',
};

/** Refuses a connection over the connection limits. */
export const CONNECTION_REFUSED = '-ERR [SYS/TEMP] Too many connections from your address, try again later.';

/** A command line over the length limit. */
export const LINE_TOO_LONG = '-ERR Command line too long.';

/** The continuation before a SASL challenge (RFC 5034 4). */
export function continuation(text: string): string {
  return `+ ${text}`;
}

/** A positive reply with a multi-line body, dot-stuffed and ended with `.` (RFC 1939 3). */
export function multiline(first: string, body: readonly string[]): string[] {
  return [`+OK ${first}`, ...body.map((line) => (line.startsWith('.') ? `.${line}` : line)), '.'];
}

/** The reply to a login attempt: the one table from outcome to words. */
export function loginReply(outcome: Exclude<LoginOutcome<string, Pop3BackendRefusal>, { kind: 'gone' }>): string {
  switch (outcome.kind) {
    case 'success':
      return `+OK ${outcome.extras}`;
    case 'cancelled':
      return '-ERR Authentication cancelled.';
    case 'malformed':
      return outcome.what === 'too_long' ? '-ERR Authentication response too long.' : '-ERR Invalid base64 in authentication response.';
    case 'temporary':
      if (outcome.which === 'provider') return '-ERR [SYS/TEMP] Authentication service temporarily unavailable, try again later.';
      if (outcome.which === 'backend') return '-ERR [SYS/TEMP] Mail server temporarily unavailable, try again later.';
      return '-ERR [SYS/TEMP] Mailbox temporarily unavailable, try again later.';
    case 'refused': {
      const { refusal } = outcome;
      switch (refusal.by) {
        case 'token_message':
          return `-ERR [AUTH] Invalid ${refusal.mechanism} message: ${refusal.detail}.`;
        case 'token':
          return '-ERR [AUTH] Authentication failed.';
        case 'policy':
          return `-ERR [AUTH] ${refusal.clientText ?? 'Authentication failed'}.`;
        case 'backend':
          // The backend's own words, so a password client sees what Dovecot said.
          return `-ERR ${refusal.reply.text}`;
      }
    }
  }
}

import type { Farewells } from '../login/connection.js';
import type { LoginOutcome } from '../login/flow.js';
import type { SmtpReply } from './backend.js';

/** The greeting. */
export function greeting(hostname: string): string {
  return `220 ${hostname} ESMTP ready`;
}

/** Last words when sasl-gate closes the connection. */
export const FAREWELLS: Farewells & { tooManyFailures: string; tooManyCommands: string } = {
  timeout: '421 4.4.2 Timeout: authentication took too long, closing connection',
  shutdown: '421 4.3.2 Server shutting down',
  error: '421 4.3.0 Internal error, closing connection',
  tooManyFailures: '421 4.7.0 Too many authentication failures, closing connection',
  tooManyCommands: '421 4.7.0 Too many commands before authentication, closing connection',
};

/** Refuses a connection over the connection limits. */
export const CONNECTION_REFUSED = '421 4.7.0 Too many connections from your address, try again later';

/** A command line over the length limit. */
export const LINE_TOO_LONG = '500 5.5.2 Error: line too long';

/** A line that is not a command. */
export const NOT_A_COMMAND = '500 5.5.2 Error: command not recognized';

/** A SASL challenge (RFC 4954). */
export function challenge(text: string): string {
  return `334 ${text}`;
}

/** The reply to AUTH: the one table from outcome to words. */
export function authReply(outcome: Exclude<LoginOutcome<string[], SmtpReply>, { kind: 'gone' }>): string {
  switch (outcome.kind) {
    case 'success':
      return '235 2.7.0 Authentication successful';
    case 'cancelled':
      return '501 5.7.0 Authentication cancelled';
    case 'malformed':
      return outcome.what === 'too_long' ? '500 5.5.6 Authentication exchange line is too long' : '501 5.5.2 Cannot decode response';
    case 'temporary':
      if (outcome.which === 'backend') return '454 4.7.0 Mail server temporarily unavailable, try again later';
      return '454 4.7.0 Temporary authentication failure, try again later';
    case 'refused': {
      const { refusal } = outcome;
      switch (refusal.by) {
        case 'token_message':
          return `535 5.7.8 Invalid ${refusal.mechanism} message: ${refusal.detail}`;
        case 'token':
        case 'policy':
          return '535 5.7.8 Authentication credentials invalid';
        case 'backend': {
          // The backend's own words; a 334 (it wanted more) is no answer to give a client.
          const { code, lines } = refusal.reply;
          return `${code === 334 ? 535 : code} ${lines[lines.length - 1] ?? ''}`.trimEnd();
        }
      }
    }
  }
}

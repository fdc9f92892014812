import { isMechanism, type LoginRequest } from '../login/flow.js';
import { multiline } from './replies.js';

/** What a pre-login command asks the session to do; one composer writes it. */
export type Pop3Action =
  | {
      kind: 'reply';
      /** The status line and, for multi-line replies, the body and the final `.`. */
      lines: readonly string[];
      /** After the reply: log out, or start TLS. */
      then?: 'quit' | 'stls';
      /** The name given with USER, for the PASS that follows; `null` forgets it. */
      user?: Buffer | null;
    }
  | { kind: 'login'; request: LoginRequest };

/** What a command may see of the connection. */
export interface Pop3CommandState {
  /** The CAPA lines to advertise now (they change with STLS). */
  capabilities: readonly string[];
  /** The SASL mechanisms offered now. */
  mechanisms: readonly string[];
  tlsActive: boolean;
  /** The name of an earlier USER, waiting for PASS. */
  user: Buffer | undefined;
}

/** One pre-login command: when it is allowed, and what it does. */
export interface Pop3CommandSpec {
  /** Allowed only before TLS (`plain`) or only once encrypted (`tls`), with the refusal otherwise; unset, always. */
  tls?: { only: 'plain' | 'tls'; refusal: Pop3Action };
  handle(argument: Buffer, state: Pop3CommandState): Pop3Action;
}

const ok = (text: string, more: Omit<Extract<Pop3Action, { kind: 'reply' }>, 'kind' | 'lines'> = {}): Pop3Action => ({
  kind: 'reply',
  lines: [`+OK ${text}`],
  ...more,
});
const err = (text: string, more: Omit<Extract<Pop3Action, { kind: 'reply' }>, 'kind' | 'lines'> = {}): Pop3Action => ({
  kind: 'reply',
  lines: [`-ERR ${text}`],
  ...more,
});

/** NUL, CR and other control bytes never reach a backend inside a name or password. */
const CONTROL = /[\x00-\x1f\x7f]/;
function hasControl(bytes: Buffer): boolean {
  return CONTROL.test(bytes.toString('latin1'));
}

const PLAINTEXT_REFUSED = err('[AUTH] Plaintext authentication disallowed on non-secure (SSL/TLS) connections, use STLS first.');

/** The commands sasl-gate answers before login (RFC 1939 AUTHORIZATION state, RFC 2449, 2595, 5034). */
export const POP3_COMMANDS: Readonly<Record<string, Pop3CommandSpec>> = {
  CAPA: {
    handle: (argument, state) =>
      argument.length > 0 ? err('CAPA takes no arguments.') : { kind: 'reply', lines: multiline('Capability list follows', state.capabilities) },
  },
  QUIT: { handle: () => ok('Logging out.', { then: 'quit' }) },
  STLS: {
    tls: { only: 'plain', refusal: err('TLS is already active.') },
    handle: (argument) => (argument.length > 0 ? err('STLS takes no arguments.') : ok('Begin TLS negotiation now.', { then: 'stls' })),
  },
  USER: {
    tls: { only: 'tls', refusal: PLAINTEXT_REFUSED },
    handle: (argument, state) => {
      if (!state.capabilities.includes('USER')) return err('USER is not supported, use AUTH.');
      if (argument.length === 0 || hasControl(argument)) return err('USER expects a user name.', { user: null });
      return ok('Send your password.', { user: argument });
    },
  },
  PASS: {
    tls: { only: 'tls', refusal: PLAINTEXT_REFUSED },
    handle: (argument, state) => {
      if (state.user === undefined) return err('No user name given, send USER first.');
      if (argument.length === 0 || hasControl(argument)) return err('PASS expects a password.', { user: null });
      return { kind: 'login', request: { kind: 'password', user: state.user, password: argument, literals: false } };
    },
  },
  AUTH: {
    tls: { only: 'tls', refusal: err('[AUTH] Authentication is disabled until STLS.') },
    handle: (argument, state) => {
      // Without a mechanism: the list, as many servers answer (RFC 1734's form, which clients still probe with).
      if (argument.length === 0) return { kind: 'reply', lines: multiline('Mechanisms follow', state.mechanisms) };
      const parts = argument.toString('latin1').split(' ');
      if (parts.length > 2 || parts.some((p) => p === '')) return err('AUTH expects a mechanism and an optional initial response.');
      const mechanism = parts[0]!.toUpperCase();
      if (!state.mechanisms.includes(mechanism) || !isMechanism(mechanism)) return err('Unsupported authentication mechanism.');
      return { kind: 'login', request: { kind: 'sasl', mechanism, initialResponse: parts[1] } };
    },
  },
  APOP: { handle: () => err('APOP is not supported.') },
};

/** Commands that exist in POP3 but need a login first. */
const AFTER_LOGIN = new Set(['STAT', 'LIST', 'RETR', 'DELE', 'NOOP', 'RSET', 'TOP', 'UIDL', 'LAST']);

/** Decides a pre-login command: the table's handler, its TLS rule, or the refusal of an unknown one. */
export function pop3Command(name: string, argument: Buffer, state: Pop3CommandState): Pop3Action {
  const spec = Object.hasOwn(POP3_COMMANDS, name) ? POP3_COMMANDS[name] : undefined;
  if (!spec) return err(AFTER_LOGIN.has(name) ? `${name} needs a login first.` : 'Unknown command.');
  if (spec.tls && (spec.tls.only === 'tls') !== state.tlsActive) return spec.tls.refusal;
  return spec.handle(argument, state);
}

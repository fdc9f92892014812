import { isMechanism, type LoginRequest } from '../login/flow.js';
import { astringValue, type ImapValue } from './parser.js';

/** What a pre-login command asks the session to do; one composer writes it. */
export type ImapAction =
  | {
      kind: 'reply';
      /** Untagged lines, without the `* `. */
      untagged?: readonly string[];
      status: 'OK' | 'NO' | 'BAD';
      text: string;
      /** After the reply: log out, or start TLS. */
      then?: 'logout' | 'starttls';
      /** The client's `ID` fields, remembered for the backend's logs. */
      clientId?: Array<[string, string]>;
    }
  | { kind: 'login'; request: LoginRequest };

/** What a command may see of the connection. */
export interface ImapCommandState {
  /** The capabilities to advertise now (they change with STARTTLS). */
  capabilities: readonly string[];
}

/** One pre-login command: when it is allowed, and what it does. */
export interface ImapCommandSpec {
  /** Allowed only before TLS (`plain`) or only once encrypted (`tls`), with the refusal otherwise; unset, always. */
  tls?: { only: 'plain' | 'tls'; refusal: ImapAction };
  handle(args: readonly ImapValue[], state: ImapCommandState): ImapAction;
}

const reply = (status: 'OK' | 'NO' | 'BAD', text: string, more: Omit<Extract<ImapAction, { kind: 'reply' }>, 'kind' | 'status' | 'text'> = {}): ImapAction => ({
  kind: 'reply',
  status,
  text,
  ...more,
});

/** The commands sasl-gate answers before login (RFC 3501 not-authenticated state, ID, STARTTLS). */
export const IMAP_COMMANDS: Readonly<Record<string, ImapCommandSpec>> = {
  CAPABILITY: {
    handle: (args, state) =>
      args.length > 0
        ? reply('BAD', 'CAPABILITY takes no arguments.')
        : reply('OK', 'Capability completed.', { untagged: [`CAPABILITY ${state.capabilities.join(' ')}`] }),
  },
  NOOP: { handle: () => reply('OK', 'NOOP completed.') },
  LOGOUT: { handle: () => reply('OK', 'Logout completed.', { untagged: ['BYE Logging out.'], then: 'logout' }) },
  ID: { handle: (args) => idCommand(args) },
  STARTTLS: {
    tls: { only: 'plain', refusal: reply('BAD', 'TLS is already active.') },
    handle: (args) => (args.length > 0 ? reply('BAD', 'STARTTLS takes no arguments.') : reply('OK', 'Begin TLS negotiation now.', { then: 'starttls' })),
  },
  LOGIN: {
    tls: { only: 'tls', refusal: reply('NO', '[PRIVACYREQUIRED] Logins are disabled until STARTTLS.') },
    handle: (args) => {
      const user = astringValue(args[0]);
      const password = astringValue(args[1]);
      if (args.length !== 2 || !user || !password) return reply('BAD', 'LOGIN expects a user name and a password.');
      const literals = args.some((a) => a.type === 'string' && a.form === 'literal');
      return { kind: 'login', request: { kind: 'password', user, password, literals } };
    },
  },
  AUTHENTICATE: {
    tls: { only: 'tls', refusal: reply('NO', '[PRIVACYREQUIRED] Authentication is disabled until STARTTLS.') },
    handle: (args, state) => {
      const [mechanismArg, initial] = args;
      if (mechanismArg?.type !== 'atom' || args.length > 2 || (initial !== undefined && initial.type !== 'atom')) {
        return reply('BAD', 'AUTHENTICATE expects a mechanism and an optional initial response.');
      }
      const mechanism = mechanismArg.value.toUpperCase();
      if (!state.capabilities.includes(`AUTH=${mechanism}`) || !isMechanism(mechanism)) {
        return reply('NO', 'Unsupported authentication mechanism.');
      }
      return { kind: 'login', request: { kind: 'sasl', mechanism, initialResponse: initial?.type === 'atom' ? initial.value : undefined } };
    },
  },
};

/** Commands that exist in IMAP but need a login first: answered with a clearer BAD. */
const AFTER_LOGIN = new Set([
  'SELECT', 'EXAMINE', 'CREATE', 'DELETE', 'RENAME', 'SUBSCRIBE', 'UNSUBSCRIBE', 'LIST', 'LSUB',
  'STATUS', 'APPEND', 'CHECK', 'CLOSE', 'EXPUNGE', 'SEARCH', 'FETCH', 'STORE', 'COPY', 'MOVE',
  'UID', 'IDLE', 'ENABLE', 'NAMESPACE', 'GETQUOTA', 'GETQUOTAROOT', 'SETQUOTA', 'GETACL', 'SETACL',
  'MYRIGHTS', 'LISTRIGHTS', 'UNSELECT', 'COMPRESS', 'NOTIFY', 'METADATA', 'GETMETADATA', 'SETMETADATA',
]);

/** Decides a pre-login command: the table's handler, its TLS rule, or the refusal of an unknown one. */
export function imapCommand(name: string, args: readonly ImapValue[], state: ImapCommandState & { tlsActive: boolean }): ImapAction {
  const spec = Object.hasOwn(IMAP_COMMANDS, name) ? IMAP_COMMANDS[name] : undefined;
  if (!spec) return reply('BAD', AFTER_LOGIN.has(name) ? `${name} needs a login first.` : 'Unknown command.');
  if (spec.tls && (spec.tls.only === 'tls') !== state.tlsActive) return spec.tls.refusal;
  return spec.handle(args, state);
}

function idCommand(args: readonly ImapValue[]): ImapAction {
  const [list] = args;
  if (args.length !== 1 || (list?.type !== 'list' && list?.type !== 'nil')) {
    return reply('BAD', 'ID expects a parenthesized list or NIL.');
  }
  const fields: Array<[string, string]> = [];
  if (list.type === 'list') {
    for (let i = 0; i + 1 < list.items.length && fields.length < 30; i += 2) {
      const key = astringValue(list.items[i]);
      const value = astringValue(list.items[i + 1]);
      if (key && value) fields.push([key.toString('utf8').slice(0, 30), value.toString('utf8').slice(0, 1024)]);
    }
  }
  return reply('OK', 'ID completed.', { untagged: ['ID ("name" "sasl-gate")'], clientId: fields });
}

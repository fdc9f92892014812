import { isMechanism, type LoginRequest } from '../login/flow.js';
import type { SieveValue } from './parser.js';
import { capabilityBlock, response } from './replies.js';

/** What a pre-login command asks the session to do. */
export type SieveAction =
  | {
      kind: 'reply';
      /** The lines to send, the last one being the `OK` / `NO`. */
      lines: string[];
      /** After the reply: log out, or start TLS. */
      then?: 'logout' | 'starttls';
    }
  | { kind: 'login'; request: LoginRequest };

/** What a command may see of the connection. */
export interface SieveCommandState {
  /** The capability lines to advertise now (they change with STARTTLS). */
  capabilities: readonly string[];
  /** The SASL mechanisms advertised now (upper case). */
  mechanisms: readonly string[];
  tlsActive: boolean;
}

/** One pre-login command: when it is allowed, and what it does. */
export interface SieveCommandSpec {
  /** Allowed only before TLS (`plain`) or only once encrypted (`tls`), with the refusal otherwise; unset, always. */
  tls?: { only: 'plain' | 'tls'; refusal: SieveAction };
  handle(args: readonly SieveValue[], state: SieveCommandState): SieveAction;
}

const reply = (line: string, then?: 'logout' | 'starttls'): SieveAction => ({ kind: 'reply', lines: [line], ...(then ? { then } : {}) });

const stringArg = (value: SieveValue | undefined): Buffer | undefined => (value?.type === 'string' ? value.value : undefined);

/** The commands sasl-gate answers before login (RFC 5804 non-authenticated state). */
export const SIEVE_COMMANDS: Readonly<Record<string, SieveCommandSpec>> = {
  CAPABILITY: {
    handle: (args, state) =>
      args.length > 0 ? reply(response('NO', 'CAPABILITY takes no arguments.')) : { kind: 'reply', lines: capabilityBlock(state.capabilities, 'Capability completed.') },
  },
  NOOP: {
    handle: (args) => {
      const tag = stringArg(args[0]);
      if (args.length > 1 || (args.length === 1 && !tag)) return reply(response('NO', 'NOOP takes one optional string.'));
      // RFC 5804 2.13: the string comes back as a TAG response code.
      return reply(tag ? `OK (TAG ${quoteTag(tag)}) "Done"` : response('OK', 'Done'));
    },
  },
  LOGOUT: { handle: () => reply(response('OK', 'Logout completed.'), 'logout') },
  STARTTLS: {
    tls: { only: 'plain', refusal: reply(response('NO', 'TLS is already active.')) },
    handle: (args) => (args.length > 0 ? reply(response('NO', 'STARTTLS takes no arguments.')) : reply(response('OK', 'Begin TLS negotiation now.'), 'starttls')),
  },
  AUTHENTICATE: {
    tls: { only: 'tls', refusal: reply(response('NO', 'Authentication is disabled until STARTTLS.', 'ENCRYPT-NEEDED')) },
    handle: (args, state) => {
      const mechanismArg = stringArg(args[0]);
      const initial = args[1];
      if (!mechanismArg || args.length > 2 || (initial !== undefined && initial.type !== 'string')) {
        return reply(response('NO', 'AUTHENTICATE expects a mechanism and an optional initial response, as strings.'));
      }
      const mechanism = mechanismArg.toString('latin1').toUpperCase();
      if (!state.mechanisms.includes(mechanism) || !isMechanism(mechanism)) return reply(response('NO', 'Unsupported authentication mechanism.'));
      // An empty string is an empty initial response (the SASL layer's "=").
      const initialResponse = initial?.type === 'string' ? (initial.value.length === 0 ? '=' : initial.value.toString('latin1')) : undefined;
      return { kind: 'login', request: { kind: 'sasl', mechanism, initialResponse } };
    },
  },
};

/** Commands that exist in ManageSieve but need a login first. */
const AFTER_LOGIN = new Set([
  'HAVESPACE', 'PUTSCRIPT', 'LISTSCRIPTS', 'SETACTIVE', 'GETSCRIPT', 'DELETESCRIPT', 'RENAMESCRIPT', 'CHECKSCRIPT', 'UNAUTHENTICATE',
]);

/** Decides a pre-login command: the table's handler, its TLS rule, or the refusal of an unknown one. */
export function sieveCommand(name: string, args: readonly SieveValue[], state: SieveCommandState): SieveAction {
  const spec = Object.hasOwn(SIEVE_COMMANDS, name) ? SIEVE_COMMANDS[name] : undefined;
  if (!spec) return reply(response('NO', AFTER_LOGIN.has(name) ? `${name} needs a login first.` : 'Unknown command.'));
  if (spec.tls && (spec.tls.only === 'tls') !== state.tlsActive) return spec.tls.refusal;
  return spec.handle(args, state);
}

/** The NOOP tag echoed back: printable text only, so a tag cannot break the reply line. */
function quoteTag(tag: Buffer): string {
  const clean = tag.toString('utf8').replace(/[^\x20-\x7e]/g, '?').slice(0, 200);
  return `"${clean.replace(/[\\"]/g, (c) => `\\${c}`)}"`;
}

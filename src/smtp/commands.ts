import { isMechanism, type LoginRequest } from '../login/flow.js';

/** What a pre-login command asks the session to do; one composer writes it. */
export type SmtpAction =
  | {
      kind: 'reply';
      /** The reply's lines, each with its code. */
      lines: readonly string[];
      /** After the reply: close (QUIT), or start TLS. */
      then?: 'quit' | 'starttls';
      /** The name the client gave in EHLO/HELO, to remember. */
      helo?: string;
      /** Bytes of BDAT data that follow the command and are not commands. */
      skip?: number;
    }
  | { kind: 'login'; request: LoginRequest };

/** What a command may see of the connection. */
export interface SmtpCommandState {
  hostname: string;
  /** The EHLO extensions to advertise now (they change with STARTTLS). */
  extensions: readonly string[];
  tlsActive: boolean;
  /** The EHLO/HELO name, unset until the client gave one (again, after STARTTLS). */
  helo: string | undefined;
}

/** One pre-login command: when it is allowed, and what it does. */
export interface SmtpCommandSpec {
  /** Allowed only before TLS (`plain`) or only once encrypted (`tls`), with the refusal otherwise; unset, always. */
  tls?: { only: 'plain' | 'tls'; refusal: SmtpAction };
  handle(argument: string, state: SmtpCommandState, verb: string): SmtpAction;
}

const reply = (...lines: string[]): SmtpAction => ({ kind: 'reply', lines });

const MUST_STARTTLS = reply('530 5.7.0 Must issue a STARTTLS command first');

function hello(argument: string, state: SmtpCommandState, verb: string): SmtpAction {
  const name = argument.trim();
  if (!/^[\x21-\x7e]{1,255}$/.test(name)) return reply('501 5.5.4 Syntax: EHLO hostname');
  if (verb === 'HELO') return { kind: 'reply', lines: [`250 ${state.hostname}`], helo: name };
  const lines = [state.hostname, ...state.extensions];
  return { kind: 'reply', lines: lines.map((l, i) => `250${i === lines.length - 1 ? ' ' : '-'}${l}`), helo: name };
}

/** Commands of a mail transaction: refused until the client has authenticated. */
function mailCommand(argument: string, state: SmtpCommandState, verb: string): SmtpAction {
  const refusal = state.tlsActive ? '530 5.7.0 Authentication required' : '530 5.7.0 Must issue a STARTTLS command first';
  if (verb !== 'BDAT') return reply(refusal);
  // RFC 3030: the chunk follows the command whatever the reply; it is data, not commands.
  const size = /^(\d{1,15})(?: +LAST)? *$/i.exec(argument);
  return { kind: 'reply', lines: [refusal], ...(size ? { skip: Number(size[1]) } : {}) };
}

/** The commands sasl-gate answers before AUTH (RFC 5321, RFC 3207, RFC 4954). */
export const SMTP_COMMANDS: Readonly<Record<string, SmtpCommandSpec>> = {
  EHLO: { handle: hello },
  HELO: { handle: hello },
  NOOP: { handle: () => reply('250 2.0.0 OK') },
  RSET: { handle: () => reply('250 2.0.0 OK') },
  QUIT: { handle: () => ({ kind: 'reply', lines: ['221 2.0.0 Bye'], then: 'quit' }) },
  HELP: { handle: () => reply('214 2.0.0 See RFC 5321 and RFC 4954') },
  STARTTLS: {
    tls: { only: 'plain', refusal: reply('503 5.5.1 Error: TLS already active') },
    handle: (argument) =>
      argument !== '' ? reply('501 5.5.4 Syntax: STARTTLS') : { kind: 'reply', lines: ['220 2.0.0 Ready to start TLS'], then: 'starttls' },
  },
  AUTH: {
    tls: { only: 'tls', refusal: MUST_STARTTLS },
    handle: (argument, state) => {
      if (state.helo === undefined) return reply('503 5.5.1 Error: send EHLO first');
      const [mechanismWord, initial, extra] = argument.split(' ');
      const mechanism = (mechanismWord ?? '').toUpperCase();
      if (!mechanism || extra !== undefined) return reply('501 5.5.4 Syntax: AUTH mechanism [initial-response]');
      const offered = state.extensions.find((e) => e.startsWith('AUTH '))?.split(' ').slice(1) ?? [];
      if (!offered.includes(mechanism) || !isMechanism(mechanism)) return reply('504 5.5.4 Unrecognized authentication type');
      return { kind: 'login', request: { kind: 'sasl', mechanism, initialResponse: initial } };
    },
  },
  ...Object.fromEntries(['MAIL', 'RCPT', 'DATA', 'BDAT', 'VRFY', 'EXPN', 'ETRN', 'TURN', 'ATRN'].map((verb) => [verb, { handle: mailCommand }])),
};

/** Decides a pre-login command: the table's handler, its TLS rule, or the refusal of an unknown one. */
export function smtpCommand(verb: string, argument: string, state: SmtpCommandState): SmtpAction {
  const spec = Object.hasOwn(SMTP_COMMANDS, verb) ? SMTP_COMMANDS[verb] : undefined;
  if (!spec) return reply('502 5.5.2 Error: command not recognized');
  if (spec.tls && (spec.tls.only === 'tls') !== state.tlsActive) return spec.tls.refusal;
  return spec.handle(argument, state, verb);
}

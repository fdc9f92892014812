import type { Socket } from 'node:net';
import { BackendError } from '../errors.js';
import type { BackendConnector } from '../net/connector.js';
import { encodePlain } from '../sasl/plain.js';
import { ehloExtensions, SmtpBackendConversation, xtext, type SmtpReply } from './backend.js';

/** The client as the backend should see it. */
export interface SmtpClientOrigin {
  address: string;
  port: number;
  /** The name the client gave in EHLO/HELO. */
  helo: string;
  /** The address and port the client connected to. */
  local: { address: string; port: number };
  /** Whether the client reached sasl-gate over TLS. */
  tls: boolean;
}

/** How the backend login is done: on the user's behalf (token users) or with the client's own credentials. */
export type SmtpBackendCredentials =
  | { kind: 'xclient'; user: string }
  | { kind: 'master'; user: string; masterUser: string; masterPassword: string }
  | { kind: 'plain'; initialResponse: string }
  | { kind: 'login-mechanism'; userResponse: string; passwordResponse: string };

export type SmtpBackendLoginResult =
  /** `extensions`: the backend's EHLO keywords for this session (what the relay may use, e.g. CHUNKING). */
  | { ok: true; socket: Socket; rest: Buffer; extensions: string[] }
  | { ok: false; reply: SmtpReply };

/** Whether the EHLO reply offers an extension (and, optionally, one of its parameters). */
function offers(extensions: string[], keyword: string, parameter?: string): boolean {
  return extensions.some((line) => {
    const [word, ...params] = line.toUpperCase().split(/\s+/);
    return word === keyword && (parameter === undefined || params.includes(parameter));
  });
}

/** XCLIENT attributes for the client's address (and login), in Postfix's xtext form. */
function xclientCommand(origin: SmtpClientOrigin, extensions: string[], login: string | undefined): string | undefined {
  const attributes: Array<[string, string]> = [
    // The client's name is not looked up: without NAME Postfix would keep sasl-gate's own.
    ['NAME', '[UNAVAILABLE]'],
    ['REVERSE_NAME', '[UNAVAILABLE]'],
    ['ADDR', origin.address.replace(/^::ffff:/, '')],
    ['PORT', String(origin.port)],
    ['HELO', origin.helo],
    ['PROTO', 'ESMTP'],
  ];
  if (login !== undefined) attributes.push(['LOGIN', login]);
  const supported = attributes.filter(([name]) => offers(extensions, 'XCLIENT', name));
  if (supported.length === 0) return undefined;
  // Postfix caps a command line at line_length_limit (2048); a HELO name never needs that much.
  return `XCLIENT ${supported.map(([name, value]) => `${name}=${xtext(value.slice(0, 255))}`).join(' ')}`;
}

/**
 * Logs into the backend SMTP server. Token users: `XCLIENT LOGIN=` (Postfix then treats the
 * session as authenticated by that user) or `AUTH PLAIN` with the master user and authzid.
 * Password users: their own AUTH, forwarded as sent. Where the backend allows XCLIENT, the
 * client's address is passed first, so the backend logs and limits the real client.
 */
export async function loginToSmtpBackend(options: {
  connect: BackendConnector;
  responseTimeoutMs: number;
  origin: SmtpClientOrigin;
  credentials: SmtpBackendCredentials;
  /** The name sasl-gate greets the backend with before XCLIENT. */
  localName: string;
}): Promise<SmtpBackendLoginResult> {
  const { credentials, origin } = options;
  const conversation = await SmtpBackendConversation.open(options.connect, options.responseTimeoutMs, {
    client: { address: origin.address, port: origin.port },
    local: origin.local,
    tls: origin.tls,
  });
  const unavailable = (what: string, reply: SmtpReply) =>
    new BackendError(`backend refused ${what}: ${reply.code} ${reply.lines.join(' ').slice(0, 200)}`);
  try {
    let ehlo = await conversation.command(`EHLO ${options.localName}`);
    if (ehlo.code !== 250) throw unavailable('EHLO', ehlo);
    const extensions = ehloExtensions(ehlo);
    const login = credentials.kind === 'xclient' ? credentials.user : undefined;
    const xclient = xclientCommand(origin, extensions, login);
    if (xclient === undefined && credentials.kind === 'xclient') {
      throw new BackendError('backend does not offer XCLIENT LOGIN to sasl-gate: add its address to smtpd_authorized_xclient_hosts');
    }
    if (xclient !== undefined) {
      const reply = await conversation.command(xclient);
      if (reply.code !== 220) throw unavailable('XCLIENT', reply);
    }
    // After XCLIENT the session starts anew; greet as the client did.
    ehlo = await conversation.command(`EHLO ${origin.helo}`);
    if (ehlo.code !== 250) throw unavailable('EHLO', ehlo);

    let verdict: SmtpReply | undefined;
    switch (credentials.kind) {
      case 'xclient':
        break;
      case 'master':
      case 'plain': {
        const response =
          credentials.kind === 'plain'
            ? credentials.initialResponse || '='
            : encodePlain({ authzid: credentials.user, authcid: credentials.masterUser, password: credentials.masterPassword }).toString('base64');
        verdict = await conversation.command(`AUTH PLAIN ${response}`);
        break;
      }
      case 'login-mechanism': {
        verdict = await conversation.command('AUTH LOGIN');
        for (const response of [credentials.userResponse, credentials.passwordResponse]) {
          if (verdict.code !== 334) break;
          verdict = await conversation.command(response);
        }
        break;
      }
    }
    if (verdict !== undefined && verdict.code !== 235) {
      conversation.close();
      if (verdict.code >= 500 || verdict.code === 454 || verdict.code === 334) return { ok: false, reply: verdict };
      throw unavailable('the login', verdict);
    }
    const rest = conversation.detach();
    return { ok: true, socket: conversation.socket, rest, extensions: ehloExtensions(ehlo) };
  } catch (err) {
    conversation.close();
    if (err instanceof BackendError) throw err;
    throw new BackendError(`backend login failed: ${(err as Error).message}`, { cause: err });
  }
}

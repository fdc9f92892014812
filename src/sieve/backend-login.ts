import type { Socket } from 'node:net';
import { BackendError, InternalError } from '../errors.js';
import type { BackendConnector } from '../net/connector.js';
import { encodePlain } from '../sasl/plain.js';
import { SieveBackendConversation, tryResponse } from './backend.js';
import { splitCapability } from './capabilities.js';
import { encodeString, parseStringLine, SieveSyntaxError, type SieveValue } from './parser.js';
import { quote, response } from './replies.js';

/** Where the client really is, for a PROXY protocol header to the backend. */
export interface SieveClientOrigin {
  address: string;
  port: number;
  localAddress: string;
  localPort: number;
  /** sasl-gate's session id, so the backend's log line names the same session. */
  sessionId: string;
  /** Whether the client reached sasl-gate over TLS. */
  tls: boolean;
}

/** How the client authenticated, for the backend to judge (pass-through) or to trust (master). */
export type SieveBackendCredentials =
  | { kind: 'master'; user: string; masterUser: string; masterPassword: string }
  | { kind: 'plain'; initialResponse: string }
  | { kind: 'login-mechanism'; userResponse: string; passwordResponse: string };

export type SieveBackendLoginResult =
  | {
      ok: true;
      socket: Socket;
      /** Bytes the backend sent after its login reply, for the client. */
      rest: Buffer;
      /** The backend's `OK` line, for the client. */
      line: string;
    }
  | { ok: false; line: string };

export interface SieveBackendLoginOptions {
  connect: BackendConnector;
  responseTimeoutMs: number;
  origin: SieveClientOrigin;
  credentials: SieveBackendCredentials;
}

/** A SASL response as the client side of ManageSieve sends it: a quoted string (base64 always fits). */
const saslString = (base64: string): string => encodeString(base64 === '=' ? '' : base64, 'client').toString('latin1');

/**
 * Logs into a ManageSieve backend (Dovecot's managesieve): reads its capability block, then
 * `AUTHENTICATE "PLAIN"` with the master user acting for the token's user, or the client's own
 * PLAIN or LOGIN exchange. Without a SASL security layer the backend does not repeat its
 * capabilities (RFC 5804 2.1); whatever it sends after its `OK` is handed on untouched.
 */
export async function loginToSieveBackend(options: SieveBackendLoginOptions): Promise<SieveBackendLoginResult> {
  const { origin, credentials } = options;
  const socket = await options.connect({
    client: { address: origin.address, port: origin.port },
    local: { address: origin.localAddress, port: origin.localPort },
    tls: origin.tls,
  });
  const conversation = new SieveBackendConversation(socket, options.responseTimeoutMs);
  try {
    const capabilities = await conversation.readCapabilities();
    const announce = capabilityNames(capabilities).has('XCLIENT') ? xclient(origin) : undefined;
    if (announce) {
      // Dovecot's managesieve-login takes the client's address from a trusted proxy this way.
      conversation.write(announce);
      const reply = tryResponse(await conversation.readSegments());
      if (reply?.status === 'BYE') throw new BackendError('backend said BYE to XCLIENT');
    }
    let responses: string[];
    switch (credentials.kind) {
      case 'master':
      case 'plain': {
        const initial =
          credentials.kind === 'plain'
            ? credentials.initialResponse
            : encodePlain({ authzid: credentials.user, authcid: credentials.masterUser, password: credentials.masterPassword }).toString('base64');
        conversation.write(`AUTHENTICATE "PLAIN" ${saslString(initial)}\r\n`);
        responses = [];
        break;
      }
      case 'login-mechanism':
        conversation.write('AUTHENTICATE "LOGIN"\r\n');
        responses = [credentials.userResponse, credentials.passwordResponse];
        break;
      default:
        throw new InternalError('ManageSieve has no LOGIN command');
    }
    for (;;) {
      const segments = await conversation.readSegments();
      const reply = tryResponse(segments);
      if (reply) {
        if (reply.status === 'BYE') throw new BackendError(`backend said BYE: ${reply.text?.toString('utf8').slice(0, 200) ?? ''}`);
        const line = response(reply.status, reply.text?.toString('utf8') ?? (reply.status === 'OK' ? 'Logged in.' : 'Authentication failed.'), codeOf(reply.code));
        if (reply.status === 'NO') {
          conversation.close();
          return { ok: false, line };
        }
        const rest = conversation.detach();
        return { ok: true, socket, rest, line };
      }
      // A challenge: the next of the client's responses, or a cancel when there is none.
      try {
        parseStringLine(segments);
      } catch (err) {
        if (!(err instanceof SieveSyntaxError)) throw err;
        throw new BackendError('backend sent an unreadable line during the login');
      }
      const next = responses.shift();
      conversation.write(`${saslString(next ?? '*')}\r\n`);
    }
  } catch (err) {
    conversation.close();
    if (err instanceof BackendError || err instanceof InternalError) throw err;
    throw new BackendError(`backend login failed: ${(err as Error).message}`, { cause: err });
  }
}

/** The names of a capability list (upper case). */
function capabilityNames(lines: readonly string[]): Set<string> {
  return new Set(lines.map((line) => splitCapability(line).name));
}

/** `XCLIENT` with the client's address and port and the session id; values that could break the line are left out. */
function xclient(origin: SieveClientOrigin): string | undefined {
  const fields = [
    /^[0-9A-Fa-f:.]{2,45}$/.test(origin.address) ? `ADDR=${origin.address}` : undefined,
    Number.isInteger(origin.port) && origin.port > 0 ? `PORT=${origin.port}` : undefined,
    /^[A-Za-z0-9_-]{1,64}$/.test(origin.sessionId) ? `SESSION=${origin.sessionId}` : undefined,
  ].filter((f) => f !== undefined);
  return fields.length === 0 ? undefined : `XCLIENT ${fields.join(' ')}\r\n`;
}

/** A response code as the backend gave it (`SASL "..."`, `TRYLATER`), re-encoded. */
function codeOf(code: readonly SieveValue[] | undefined): string | undefined {
  return code?.map((v) => (v.type === 'atom' ? v.value : v.type === 'string' ? quote(v.value.toString('utf8')) : '')).join(' ');
}

import type { Socket } from 'node:net';
import { BackendError } from '../errors.js';
import { encodePlain } from '../sasl/plain.js';
import type { BackendConnector } from '../net/connector.js';
import { ImapBackendConversation, parseCapabilities } from './backend.js';
import { encodeAstring } from './parser.js';

/** Where the client really is, passed to the backend so its logs and rate limits see the client. */
export interface ClientOrigin {
  address: string;
  port: number;
  localAddress: string;
  localPort: number;
  sessionId: string;
  /** The client's own `ID` fields (name, version, ...), forwarded for the backend's logs. */
  clientId: Array<[string, string]>;
  /** Whether the client reached sasl-gate over TLS. */
  tls: boolean;
}

/** How the client authenticated, for the backend to judge (pass-through) or to trust (master). */
export type BackendCredentials =
  | { kind: 'master'; user: string; masterUser: string; masterPassword: string }
  | { kind: 'login'; user: Buffer; password: Buffer; literals: boolean }
  | { kind: 'plain'; initialResponse: string }
  | { kind: 'login-mechanism'; userResponse: string; passwordResponse: string };

export type BackendLoginResult =
  | {
      ok: true;
      socket: Socket;
      /** Bytes the backend sent after its login reply, for the client. */
      rest: Buffer;
      /** The reply's text after `OK`, carrying `[CAPABILITY ...]`. */
      text: string;
    }
  | { ok: false; status: 'NO' | 'BAD'; text: string };

export interface BackendLoginOptions {
  connect: BackendConnector;
  responseTimeoutMs: number;
  origin: ClientOrigin;
  credentials: BackendCredentials;
}

const ID_CLIENT_FIELDS = new Set(['name', 'version', 'os', 'os-version', 'vendor', 'support-url', 'address', 'date', 'command', 'arguments', 'environment']);

function idFields(origin: ClientOrigin): Array<[string, string]> {
  const own: Array<[string, string]> = origin.clientId
    .filter(([k]) => ID_CLIENT_FIELDS.has(k.toLowerCase()))
    .slice(0, 20);
  return [
    ...own,
    ['x-originating-ip', origin.address],
    ['x-originating-port', String(origin.port)],
    ['x-connected-ip', origin.localAddress],
    ['x-connected-port', String(origin.localPort)],
    ['x-session-id', origin.sessionId],
  ];
}

function splitReply(line: string): { status: string; text: string } {
  const match = /^\S+ (OK|NO|BAD)(?: (.*))?$/i.exec(line);
  return { status: match?.[1]?.toUpperCase() ?? 'BAD', text: match?.[2] ?? '' };
}

/**
 * Logs into the backend: greeting, `ID` with the client's address, then the login the
 * credentials call for. The `ID` and a SASL-IR login go out in one write to save a round trip.
 */
export async function loginToBackend(options: BackendLoginOptions): Promise<BackendLoginResult> {
  const { origin } = options;
  const socket = await options.connect({
    client: { address: origin.address, port: origin.port },
    local: { address: origin.localAddress, port: origin.localPort },
    tls: origin.tls,
  });
  const conversation = new ImapBackendConversation(socket, options.responseTimeoutMs);
  try {
    await conversation.greeting();
    const capabilities = new Set((conversation.greetingCapabilities ?? []).map((c) => c.toUpperCase()));
    const saslIr = capabilities.has('SASL-IR');
    const literalPlus = capabilities.has('LITERAL+');
    const idTag = await conversation.sendId(idFields(options.origin));
    const tag = conversation.nextTag();
    let early: { line: string } | undefined;
    const credentials = options.credentials;
    switch (credentials.kind) {
      case 'master':
      case 'plain': {
        const response =
          credentials.kind === 'plain'
            ? credentials.initialResponse
            : encodePlain({
                authzid: credentials.user,
                authcid: credentials.masterUser,
                password: credentials.masterPassword,
              }).toString('base64');
        if (saslIr) {
          conversation.write(`${tag} AUTHENTICATE PLAIN ${response === '' ? '=' : response}\r\n`);
        } else {
          conversation.write(`${tag} AUTHENTICATE PLAIN\r\n`);
          await conversation.readTagged(idTag);
          const reply = await conversation.readContinuationOrTagged(tag);
          if (!reply.continuation) early = reply;
          else conversation.write(`${response}\r\n`);
        }
        break;
      }
      case 'login': {
        const user = encodeAstring(credentials.user, { literal: credentials.literals, literalPlus });
        const password = encodeAstring(credentials.password, { literal: credentials.literals, literalPlus });
        await conversation.readTagged(idTag);
        early = await conversation.sendCommand(
          tag,
          [
            { text: `${tag} LOGIN ${user.text}`, ...(user.literal ? { literal: user.literal } : {}) },
            { text: ` ${password.text}`, ...(password.literal ? { literal: password.literal } : {}) },
          ],
          literalPlus,
        );
        break;
      }
      case 'login-mechanism': {
        conversation.write(`${tag} AUTHENTICATE LOGIN\r\n`);
        await conversation.readTagged(idTag);
        for (const response of [credentials.userResponse, credentials.passwordResponse]) {
          const reply = await conversation.readContinuationOrTagged(tag);
          if (!reply.continuation) {
            early = reply;
            break;
          }
          conversation.write(`${response}\r\n`);
        }
        break;
      }
    }
    const reply = early ?? (await conversation.readTagged(tag));
    const { status, text } = splitReply(reply.line);
    if (status !== 'OK') {
      conversation.close();
      return { ok: false, status: status === 'NO' ? 'NO' : 'BAD', text };
    }
    let okText = text;
    if (!parseCapabilities(`${tag} OK ${text}`)) {
      const capabilityTag = conversation.nextTag();
      conversation.write(`${capabilityTag} CAPABILITY\r\n`);
      const { untagged } = await conversation.readTagged(capabilityTag);
      const list = untagged.map(parseCapabilities).find((c) => c !== undefined);
      if (list) okText = `[CAPABILITY ${list.join(' ')}] ${text.replace(/^\[[^\]]*\]\s*/, '')}`;
    }
    const rest = conversation.detach();
    return { ok: true, socket, rest, text: okText };
  } catch (err) {
    conversation.close();
    if (err instanceof BackendError) throw err;
    throw new BackendError(`backend login failed: ${(err as Error).message}`, { cause: err });
  }
}

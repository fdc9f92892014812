import { isIP, type Socket } from 'node:net';
import { BackendError } from '../errors.js';
import type { BackendConnector } from '../net/connector.js';
import { encodePlain } from '../sasl/plain.js';
import { Pop3BackendConversation, type Pop3Reply } from './backend.js';

/** Where the client really is, passed to the backend so its logs and rate limits see the client. */
export interface ClientOrigin {
  address: string;
  port: number;
  localAddress: string;
  localPort: number;
  /** Whether the client reached sasl-gate over TLS. */
  tls: boolean;
}

/** How the client authenticated, for the backend to judge (pass-through) or to trust (master). */
export type Pop3Credentials =
  | { kind: 'master'; user: string; masterUser: string; masterPassword: string }
  | { kind: 'plain'; initialResponse: string }
  | { kind: 'login-mechanism'; userResponse: string; passwordResponse: string }
  | { kind: 'user-pass'; user: Buffer; password: Buffer };

export type BackendLoginResult =
  | {
      ok: true;
      socket: Socket;
      rest: Buffer;
      /** The text of the backend's `+OK`. */
      text: string;
      /** Whether the client's address went to the backend with XCLIENT. */
      xclientSent: boolean;
    }
  | { ok: false; /** The text of the backend's `-ERR`. */ text: string };

export interface BackendLoginOptions {
  connect: BackendConnector;
  responseTimeoutMs: number;
  origin: ClientOrigin;
  credentials: Pop3Credentials;
  /** Name the client's address with XCLIENT when the backend offers it (not needed behind a PROXY header). */
  xclient: boolean;
}

/** Expects a continuation; a status line instead ends the exchange early. */
function expectContinuation(reply: Pop3Reply): Pop3Reply | undefined {
  return reply.kind === 'continue' ? undefined : reply;
}

/**
 * Logs into Dovecot's POP3: greeting, `XCLIENT ADDR= PORT=` when offered (so Dovecot logs and
 * rate-limits the client, not sasl-gate), then the login the credentials call for.
 */
export async function loginToBackend(options: BackendLoginOptions): Promise<BackendLoginResult> {
  const { origin } = options;
  const socket = await options.connect({
    client: { address: origin.address, port: origin.port },
    local: { address: origin.localAddress, port: origin.localPort },
    tls: origin.tls,
  });
  const conversation = new Pop3BackendConversation(socket, options.responseTimeoutMs);
  try {
    await conversation.greeting();
    const xclientSent = options.xclient && conversation.xclientOffered && isIP(origin.address) !== 0;
    if (xclientSent) {
      conversation.write(`XCLIENT ADDR=${origin.address} PORT=${origin.port}\r\n`);
      const answer = await conversation.reply();
      if (answer.kind !== 'ok') throw new BackendError(`backend refused XCLIENT: ${answer.text.slice(0, 200)}`);
    }
    const credentials = options.credentials;
    let final: Pop3Reply;
    switch (credentials.kind) {
      case 'master':
      case 'plain': {
        const response =
          credentials.kind === 'plain'
            ? credentials.initialResponse
            : encodePlain({ authzid: credentials.user, authcid: credentials.masterUser, password: credentials.masterPassword }).toString('base64');
        conversation.write(`AUTH PLAIN ${response === '' ? '=' : response}\r\n`);
        final = await conversation.reply();
        break;
      }
      case 'login-mechanism': {
        conversation.write('AUTH LOGIN\r\n');
        let early: Pop3Reply | undefined;
        for (const response of [credentials.userResponse, credentials.passwordResponse]) {
          early = expectContinuation(await conversation.reply());
          if (early) break;
          conversation.write(`${response}\r\n`);
        }
        final = early ?? (await conversation.reply());
        break;
      }
      case 'user-pass': {
        conversation.write(Buffer.concat([Buffer.from('USER '), credentials.user, Buffer.from('\r\n')]));
        const user = await conversation.reply();
        if (user.kind !== 'ok') {
          final = user;
          break;
        }
        conversation.write(Buffer.concat([Buffer.from('PASS '), credentials.password, Buffer.from('\r\n')]));
        final = await conversation.reply();
        break;
      }
    }
    if (final.kind === 'continue') throw new BackendError('backend asked for more than the login needs');
    if (final.kind === 'err') {
      conversation.close();
      return { ok: false, text: final.text };
    }
    const rest = conversation.detach();
    return { ok: true, socket, rest, text: final.text, xclientSent };
  } catch (err) {
    conversation.close();
    if (err instanceof BackendError) throw err;
    throw new BackendError(`backend login failed: ${(err as Error).message}`, { cause: err });
  }
}

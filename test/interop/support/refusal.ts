/**
 * What a client did when sasl-gate refused its token, read from a wire tap: the AUTH line
 * (mechanism, initial response), the error challenge, the client's answer to it, byte for byte,
 * and the final reply, if the exchange got that far.
 */
import { authCommand, decodeChallenge, registerSaslSecrets } from './clients.js';
import type { WireSession, WireTap } from './wire.js';

export interface Refusal {
  session: WireSession;
  mechanism: string;
  initialResponse: boolean;
  challenge: unknown;
  /** Everything the client sent after the challenge (empty when it sent nothing). */
  reply: Buffer;
  /** The server's final reply to the exchange, when there was one. */
  final: string | undefined;
}

const CHALLENGE = /^(?:\+ |334 )\S+$/;

/**
 * Like {@link refusalOn}, but waits (up to `timeoutMs`) until the exchange is over on the wire:
 * the server's final reply has passed or the connection has closed.
 */
export async function settledRefusalOn(tap: WireTap, from: number, timeoutMs = 5_000): Promise<Refusal> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    let refusal: Refusal | undefined;
    try {
      refusal = refusalOn(tap, from);
    } catch (err) {
      if (Date.now() > deadline) throw err;
    }
    if (refusal && (refusal.final !== undefined || refusal.session.closed || Date.now() > deadline)) return refusal;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

/** The first connection since `from` whose token was refused with an error challenge. */
export function refusalOn(tap: WireTap, from: number): Refusal {
  for (const session of tap.sessions.slice(from)) {
    const client = session.clientLines();
    registerSaslSecrets(client);
    const auth = authCommand(client);
    if (!auth) continue;
    const server = session.serverLines();
    const at = server.findIndex((l) => CHALLENGE.test(l) && l.length > 6);
    if (at < 0) continue;
    const final = server.slice(at + 1).find((l) => /^\S+ (?:OK|NO|BAD) |^[2-5]\d\d /.test(l));
    return {
      session,
      mechanism: auth.mechanism,
      initialResponse: auth.initialResponse,
      challenge: decodeChallenge(server[at]!),
      reply: session.clientBytesAfter(CHALLENGE) ?? Buffer.alloc(0),
      final,
    };
  }
  throw new Error(`no refused token exchange on the tap since connection ${from}:\n${tap.sessions
    .slice(from)
    .map((s) => s.serverLines().concat(s.clientLines()).join('\n'))
    .join('\n---\n')}`);
}

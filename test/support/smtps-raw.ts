/**
 * A deliberately tiny SMTP client over implicit TLS (SMTPS, RFC 8314) for tests that need to see
 * the exact replies a server sends, to pipeline several commands in one write, or to send bytes
 * a polite client never would.
 */
import { connect } from 'node:tls';
import { RawSmtp } from './smtp-raw.js';

export { dataBlock, type SmtpReply } from './smtp-raw.js';

/** Where to connect and which CA to trust. */
export interface SmtpsTarget {
  host: string;
  port: number;
  /** PEM of the CA that signed the server's certificate. */
  ca: string;
  /** Name checked against the certificate; `localhost` by default. */
  servername?: string;
  timeoutMs?: number;
  /** Local address to connect from (any 127.x.y.z works on Linux loopback). */
  localAddress?: string;
}

/** A raw SMTP client over implicit TLS: the plain client's methods on an encrypted socket. */
export type RawSmtps = RawSmtp;

export const RawSmtps = {
  /** Connects with TLS, verifying the certificate against `ca`, and reads the greeting. */
  async connect(target: SmtpsTarget): Promise<RawSmtps> {
    const socket = connect({
      host: target.host,
      port: target.port,
      ca: target.ca,
      servername: target.servername ?? 'localhost',
      ...(target.localAddress ? { localAddress: target.localAddress } : {}),
    });
    await new Promise<void>((resolve, reject) => {
      socket.once('secureConnect', resolve);
      socket.once('error', reject);
    });
    return RawSmtp.over(socket, target.timeoutMs ?? 10_000);
  },
};

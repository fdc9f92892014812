/**
 * An introspection endpoint that reads HTTP Basic client credentials the way Authentik does: the
 * Base64 is decoded, split at the first colon, and compared as it is, without the form-decoding
 * RFC 6749 asks for. A request whose credentials match goes on to the development provider's
 * real introspection endpoint (with credentials it accepts), so the answer is a real one.
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { DevIdp } from '../../tools/idp.js';

export interface RawIntrospection {
  url: string;
  /** Every client id and secret this endpoint was sent, exactly as they arrived. */
  seen: Array<{ clientId: string; clientSecret: string }>;
  close(): Promise<void>;
}

/** Starts the endpoint on loopback; it accepts exactly `clientId` / `clientSecret`, compared raw. */
export async function startRawIntrospection(idp: DevIdp, clientId: string, clientSecret: string): Promise<RawIntrospection> {
  const seen: RawIntrospection['seen'] = [];
  const server: Server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const header = req.headers.authorization ?? '';
      const decoded = header.startsWith('Basic ') ? Buffer.from(header.slice(6), 'base64').toString('utf8') : '';
      const colon = decoded.indexOf(':');
      const sent = { clientId: decoded.slice(0, Math.max(colon, 0)), clientSecret: colon < 0 ? '' : decoded.slice(colon + 1) };
      seen.push(sent);
      if (sent.clientId !== clientId || sent.clientSecret !== clientSecret) {
        res.writeHead(401, { 'content-type': 'application/json' }).end(JSON.stringify({ error: 'invalid_client' }));
        return;
      }
      const basic = Buffer.from(`${encodeURIComponent(idp.clientId)}:${encodeURIComponent(idp.clientSecret)}`).toString('base64');
      fetch(idp.introspectionEndpoint, {
        method: 'POST',
        headers: { authorization: `Basic ${basic}`, 'content-type': 'application/x-www-form-urlencoded', accept: 'application/json' },
        body: Buffer.concat(chunks).toString('utf8'),
      }).then(
        async (answer) => res.writeHead(answer.status, { 'content-type': 'application/json' }).end(await answer.text()),
        () => res.writeHead(502).end(),
      );
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}/introspect`,
    seen,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

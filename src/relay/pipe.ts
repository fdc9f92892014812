import type { Socket } from 'node:net';
import type { Duplex } from 'node:stream';

export interface RelayStats {
  /** Bytes the client sent after login, including those read before the relay began. */
  bytesFromClient: number;
  /** Bytes sent to the client after login. */
  bytesToClient: number;
  /** Which side closed first. */
  closedBy: 'client' | 'backend';
}

/** How long a side may take to flush after the other closed, before it is cut. */
const LINGER_MS = 5000;

/**
 * Joins the client and the backend after login: bytes flow untouched both ways with the
 * streams' own backpressure, and when one side closes, the other is ended too.
 */
export function relay(
  client: Duplex & { setTimeout?(ms: number, callback?: () => void): unknown },
  backend: Socket,
  pending: { toBackend: Buffer; toClient: Buffer; clientEnded?: boolean },
  options: { idleTimeoutMs?: number } = {},
): Promise<RelayStats> {
  return new Promise((resolve) => {
    // Counted from the backend socket's own counters at the end: no per-chunk work, nothing
    // per connection but two numbers while it is open.
    const readBefore = backend.bytesRead - pending.toClient.length;
    const writtenBefore = backend.bytesWritten;
    const stats: RelayStats = { bytesFromClient: 0, bytesToClient: 0, closedBy: 'client' };
    let closed = 0;
    let first: 'client' | 'backend' | undefined;
    const onClose = (side: 'client' | 'backend', other: Duplex) => () => {
      first ??= side;
      closed += 1;
      if (!other.destroyed) {
        other.end();
        setTimeout(() => other.destroy(), LINGER_MS).unref();
      }
      if (closed === 2) {
        stats.closedBy = first;
        stats.bytesFromClient = backend.bytesWritten - writtenBefore;
        stats.bytesToClient = backend.bytesRead - readBefore;
        resolve(stats);
      }
    };
    // Errors end the connection; the close handlers do the rest.
    client.on('error', () => client.destroy());
    backend.on('error', () => backend.destroy());
    client.once('close', onClose('client', backend));
    backend.once('close', onClose('backend', client));
    if (pending.toClient.length > 0) client.write(pending.toClient);
    // A client that already closed its side gets the answers to what it sent before, then the end.
    if (pending.clientEnded) backend.end(pending.toBackend);
    else if (pending.toBackend.length > 0) backend.write(pending.toBackend);
    if (options.idleTimeoutMs && client.setTimeout) {
      // No byte either way for this long: the client is gone without saying so.
      client.setTimeout(options.idleTimeoutMs, () => {
        client.destroy();
      });
    }
    if (!pending.clientEnded) client.pipe(backend);
    backend.pipe(client);
  });
}

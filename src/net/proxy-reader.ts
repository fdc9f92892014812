import type { Readable } from 'node:stream';
import { GateError } from '../errors.js';
import { parseProxyHeader } from './proxy-protocol.js';

/**
 * Reads the PROXY protocol header at the start of a connection from a trusted proxy and returns
 * the client's address it names (undefined for a LOCAL header, e.g. the proxy's health check).
 * Bytes after the header are put back for TLS or the protocol. Rejects on a malformed or
 * missing header, or when none arrives in time.
 */
export function readProxyHeader(socket: Readable, timeoutMs: number): Promise<{ address: string; port: number } | undefined> {
  return new Promise((resolve, reject) => {
    let buffer: Buffer = Buffer.alloc(0);
    const finish = (error: Error | undefined, value?: { address: string; port: number }) => {
      clearTimeout(timer);
      socket.off('data', onData);
      socket.off('end', onEnd);
      socket.off('close', onEnd);
      if (error) reject(error);
      else resolve(value);
    };
    const onData = (chunk: Buffer) => {
      buffer = Buffer.concat([buffer, chunk]);
      let parsed: ReturnType<typeof parseProxyHeader>;
      try {
        parsed = parseProxyHeader(buffer);
      } catch (err) {
        finish(err as Error);
        return;
      }
      if ('needMore' in parsed) return;
      socket.pause();
      const rest = buffer.subarray(parsed.length);
      if (rest.length > 0) socket.unshift(rest);
      const source = parsed.header.command === 'PROXY' ? parsed.header.source : undefined;
      finish(undefined, source ? { address: source.address, port: source.port } : undefined);
    };
    const onEnd = () => finish(new GateError('bad_proxy_header', 'connection ended before the PROXY header'));
    const timer = setTimeout(() => finish(new GateError('bad_proxy_header', 'no PROXY header in time')), timeoutMs);
    socket.on('data', onData);
    socket.on('end', onEnd);
    // A reset sends no 'end': without this the slot would be held until the timeout.
    socket.on('close', onEnd);
  });
}

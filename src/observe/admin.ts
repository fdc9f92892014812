import type { IncomingMessage, ServerResponse } from 'node:http';

/** What the admin endpoint serves; the metrics and readiness may come from several processes. */
export interface AdminSources {
  /** Whether a request's Authorization header may read `/metrics`. */
  metricsAllowed(authorization: string | undefined): boolean;
  /** The text exposition for `/metrics`. */
  metrics(): Promise<{ contentType: string; body: string }>;
  /** The `/readyz` answer. */
  readiness(): { ready: boolean; body: string } | Promise<{ ready: boolean; body: string }>;
}

/** The request handler of the admin endpoint: /metrics, /healthz, /readyz. */
export function adminHandler(sources: AdminSources): (req: IncomingMessage, res: ServerResponse) => void {
  return (req, res) => {
    if (req.url === '/metrics' && !sources.metricsAllowed(req.headers.authorization)) {
      res.writeHead(401, { 'www-authenticate': 'Bearer realm="sasl-gate metrics"', 'content-type': 'text/plain' }).end('unauthorized\n');
    } else if (req.url === '/metrics') {
      sources.metrics().then(
        ({ contentType, body }) => res.writeHead(200, { 'content-type': contentType }).end(body),
        () => res.writeHead(500).end(),
      );
    } else if (req.url === '/healthz') {
      res.writeHead(200, { 'content-type': 'text/plain' }).end('ok\n');
    } else if (req.url === '/readyz') {
      Promise.resolve(sources.readiness()).then(
        ({ ready, body }) => res.writeHead(ready ? 200 : 503, { 'content-type': 'text/plain' }).end(body),
        () => res.writeHead(500).end(),
      );
    } else {
      res.writeHead(404).end();
    }
  };
}

import { readFileSync } from 'node:fs';
import { createServer as createHttpServer, type Server as HttpServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { createServer as createTlsServer, type Server as TlsServer, type TLSSocket } from 'node:tls';
import type { Logger } from 'pino';
import { ChainValidator } from '../auth/chain.js';
import type { TokenValidator } from '../auth/validator.js';
import type { GateConfig } from '../config/load.js';
import type { ListenerConfig } from '../config/schema.js';
import { tcpConnector, type BackendConnector } from '../imap/backend.js';
import { advertisedCapabilities, IMAP_FALLBACK, probeImapCapabilities } from '../imap/capabilities.js';
import { CapabilityCache } from './capability-cache.js';
import { ConnectionLimiter } from './limits.js';
import { ImapSession } from '../imap/session.js';
import { advertisedSmtpExtensions, probeSmtpExtensions } from '../smtp/capabilities.js';
import { SmtpSession } from '../smtp/session.js';
import { ensureDevCertificate } from './devcert.js';

/** Seams a caller (tests, the demo) may replace. */
export interface GateDependencies {
  log: Logger;
  validator?: TokenValidator;
  imapConnector?: BackendConnector;
  smtpConnector?: BackendConnector;
}

export interface RunningGate {
  /** Bound addresses of the listeners, in configuration order (skipped ones are absent). */
  listeners: Array<{ protocol: 'imap' | 'smtp'; host: string; port: number }>;
  admin: { host: string; port: number } | undefined;
  /** Stops accepting, ends sessions, releases the ports. */
  close(): Promise<void>;
}

async function tlsMaterial(config: GateConfig, log: Logger): Promise<{ cert: Buffer; key: Buffer }> {
  if (config.tls.cert && config.tls.key) {
    return { cert: readFileSync(config.tls.cert), key: readFileSync(config.tls.key) };
  }
  const dev = await ensureDevCertificate(config.tls.devCertDir);
  log.warn(
    { cert: dev.certPath, ca: dev.caPath, generated: dev.generated },
    'tls.cert and tls.key are not set: using a development certificate that clients will not trust; configure real ones for production',
  );
  return { cert: readFileSync(dev.certPath), key: readFileSync(dev.keyPath) };
}

function listen(server: TlsServer | HttpServer, host: string, port: number): Promise<AddressInfo> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen({ host, port }, () => {
      server.off('error', reject);
      resolve(server.address() as AddressInfo);
    });
  });
}

/** Starts every configured listener and the admin endpoint; resolves once all are bound. */
export async function startGate(config: GateConfig, deps: GateDependencies): Promise<RunningGate> {
  const { log } = deps;
  const material = await tlsMaterial(config, log);
  const validator =
    deps.validator ?? new ChainValidator(config.oauth, { masterSeparator: config.master.separator, log });
  if (validator instanceof ChainValidator) {
    validator.provider.warmUp().then(
      (meta) =>
        log.info(
          { issuer: meta.issuer, jwks: meta.jwksUri, introspection: meta.introspectionEndpoint, userinfo: meta.userinfoEndpoint },
          'openid provider discovered',
        ),
      (err: Error) => log.warn({ err: err.message }, 'openid provider not reachable yet; token logins fail temporarily until it is'),
    );
  }

  const servers: TlsServer[] = [];
  const sessions = new Set<{ shutdown(): void }>();
  const bound: RunningGate['listeners'] = [];
  const caches: CapabilityCache[] = [];

  /** One session factory per protocol, sharing a capability cache across that protocol's listeners. */
  const factories = new Map<'imap' | 'smtp', (socket: TLSSocket, name: string) => { run(): Promise<void>; shutdown(): void }>();
  const factoryFor = async (protocol: 'imap' | 'smtp') => {
    const existing = factories.get(protocol);
    if (existing) return existing;
    let factory: (socket: TLSSocket, name: string) => { run(): Promise<void>; shutdown(): void };
    if (protocol === 'imap') {
      const backend = config.backends.imap!;
      const connect = deps.imapConnector ?? tcpConnector(backend.host, backend.port, backend.connectTimeoutSeconds * 1000);
      const capabilities = new CapabilityCache({
        name: 'imap',
        probe: () => probeImapCapabilities(connect, backend.responseTimeoutSeconds * 1000),
        advertise: advertisedCapabilities,
        fallback: IMAP_FALLBACK,
        refreshMs: backend.capabilityRefreshSeconds * 1000,
        log,
      });
      await capabilities.start();
      caches.push(capabilities);
      factory = (socket, name) =>
        new ImapSession(socket, {
          listener: name,
          limits: config.limits,
          master: config.master,
          oauth: { issuer: config.oauth.issuer, scope: config.oauth.scope },
          capabilities,
          validator,
          connectBackend: connect,
          backendResponseTimeoutMs: backend.responseTimeoutSeconds * 1000,
          log,
        });
    } else {
      const backend = config.backends.smtp!;
      const connect = deps.smtpConnector ?? tcpConnector(backend.host, backend.port, backend.connectTimeoutSeconds * 1000);
      const extensions = new CapabilityCache({
        name: 'smtp',
        probe: () => probeSmtpExtensions(connect, backend.responseTimeoutSeconds * 1000, config.hostname),
        advertise: advertisedSmtpExtensions,
        fallback: [],
        refreshMs: backend.capabilityRefreshSeconds * 1000,
        log,
      });
      await extensions.start();
      caches.push(extensions);
      factory = (socket, name) =>
        new SmtpSession(socket, {
          listener: name,
          hostname: config.hostname,
          limits: config.limits,
          master: config.master,
          oauth: { issuer: config.oauth.issuer, scope: config.oauth.scope },
          login: backend.login,
          extensions,
          validator,
          connectBackend: connect,
          backendResponseTimeoutMs: backend.responseTimeoutSeconds * 1000,
          log,
        });
    }
    factories.set(protocol, factory);
    return factory;
  };

  const connections = new ConnectionLimiter(config.limits.maxConnections, config.limits.maxConnectionsPerAddress);
  const refusals = {
    imap: '* BYE [UNAVAILABLE] Too many connections from your address, try again later.',
    smtp: '421 4.7.0 Too many connections from your address, try again later',
  };

  for (const [index, listener] of config.listeners.entries()) {
    if (listener.tls !== 'implicit') continue;
    const createSession = await factoryFor(listener.protocol);
    const name = listenerName(listener, index);
    const server = createTlsServer({ cert: material.cert, key: material.key, minVersion: 'TLSv1.2', allowHalfOpen: true }, (socket: TLSSocket) => {
      socket.setNoDelay(true);
      socket.setKeepAlive(true, 60_000);
      const address = socket.remoteAddress ?? '';
      const refused = connections.admit(address);
      if (refused) {
        log.warn({ listener: name, client: address, limit: refused }, 'connection refused: limit reached');
        socket.on('error', () => undefined);
        socket.end(`${refusals[listener.protocol]}\r\n`);
        setTimeout(() => socket.destroy(), 2000).unref();
        return;
      }
      socket.once('close', () => connections.release(address));
      const session = createSession(socket, name);
      sessions.add(session);
      void session.run().finally(() => sessions.delete(session));
    });
    server.on('tlsClientError', (err) => log.debug({ listener: name, err: err.message }, 'TLS handshake failed'));
    const address = await listen(server, listener.bind.host, listener.bind.port);
    log.info({ listener: name, address: `${address.address}:${address.port}` }, 'listening');
    servers.push(server);
    bound.push({ protocol: listener.protocol, host: address.address, port: address.port });
  }

  let admin: HttpServer | undefined;
  let adminAddress: RunningGate['admin'];
  if (config.admin.bind) {
    admin = createHttpServer((req, res) => {
      if (req.url === '/healthz') {
        res.writeHead(200, { 'content-type': 'text/plain' }).end('ok\n');
      } else if (req.url === '/readyz') {
        const checks = [
          ...caches.map((c) => [`${c.name} backend`, c.isProbed] as const),
          ['openid provider', validator.isReady?.() ?? true] as const,
        ];
        const ready = checks.every(([, ok]) => ok);
        const body = checks.map(([what, ok]) => `${what}: ${ok ? 'ok' : 'not reachable yet'}`).join('\n');
        res.writeHead(ready ? 200 : 503, { 'content-type': 'text/plain' }).end(`${body}\n`);
      } else {
        res.writeHead(404).end();
      }
    });
    const address = await listen(admin, config.admin.bind.host, config.admin.bind.port);
    adminAddress = { host: address.address, port: address.port };
    log.info({ address: `${address.address}:${address.port}` }, 'admin endpoint listening');
  }

  return {
    listeners: bound,
    admin: adminAddress,
    async close() {
      for (const cache of caches) cache.stop();
      const closing = [...servers, ...(admin ? [admin] : [])].map(
        (s) => new Promise<void>((resolve) => s.close(() => resolve())),
      );
      for (const session of sessions) session.shutdown();
      admin?.closeAllConnections();
      await Promise.all(closing);
    },
  };
}

function listenerName(listener: ListenerConfig, index: number): string {
  return listener.name ?? `${listener.protocol}-${listener.bind.port || index}`;
}

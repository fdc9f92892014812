import { createServer as createHttpServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { createServer as createNetServer, type AddressInfo, type Socket } from 'node:net';
import { TLSSocket } from 'node:tls';
import type { Logger } from 'pino';
import type { AppPasswordService } from '../auth/app-passwords.js';
import { acceptedDomains } from '../config/schema.js';
import type { GateConfig } from '../config/load.js';
import type { DirectoryVerdict } from '../login/options.js';
import { readSecret } from '../config/secrets.js';
import type { CertificateStore } from '../tls/certificates.js';
import { autoconfigSettings } from '../autoconfig/documents.js';
import { OAuthEndpointSource } from '../autoconfig/endpoints.js';
import { createPortalApp, securityHeaders, type PortalApp, type PortalRequest, type PortalResponse } from './app.js';
import { autoconfigRoutes, type AutoconfigRoutes } from './autoconfig.js';
import { problemPage, STYLESHEET, type ServerSetting } from './html.js';
import { CookieSigner, loadCookieKey } from './session.js';
import { openIdSignIn, type SignInClient } from './signin.js';

/** The page, listening. */
export interface RunningPortal {
  host: string;
  port: number;
  close(): Promise<void>;
}

/** What the page needs from the rest of sasl-gate. */
export interface PortalParts {
  log: Logger;
  certificates: CertificateStore;
  /** App passwords; without them the listener serves autoconfiguration only. */
  service?: AppPasswordService | undefined;
  /** The listeners users' mail apps connect to (bound ports). */
  servers: ServerSetting[];
  directoryVerdict?: DirectoryVerdict | undefined;
  /** In place of the provider (tests). */
  signIn?: SignInClient;
  now?: () => number;
  /** Reaches the provider's discovery document for autoconfiguration (tests). */
  fetch?: typeof fetch;
}

/** Forms are a label, a few checkboxes and a token. */
const MAX_BODY_BYTES = 16 * 1024;
const HEADERS_TIMEOUT_MS = 20_000;

function readBody(req: IncomingMessage): Promise<string | undefined> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (size > MAX_BODY_BYTES) {
        resolve(undefined);
        req.destroy();
        return;
      }
      chunks.push(chunk);
    });
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.on('error', reject);
  });
}

/** The provider's name for the sign-in button: `portal.providerName`, else the issuer's host. */
function providerName(config: GateConfig): string {
  return config.portal?.providerName ?? new URL(config.oauth.issuer).hostname;
}

/** Builds the page's handler from the configuration. */
export function portalApp(config: GateConfig, parts: PortalParts & { service: AppPasswordService }): PortalApp {
  const portal = config.portal!;
  const clientId = portal.clientId ?? config.oauth.clientId!;
  const clientSecret =
    portal.clientId === undefined
      ? config.oauth.clientSecret
      : readSecret(portal.clientSecret, portal.clientSecretFile, 'portal.clientSecret');
  const signIn =
    parts.signIn ??
    openIdSignIn({
      issuer: config.oauth.issuer,
      clientId,
      clientSecret,
      redirectUri: `${portal.publicUrl.replace(/\/+$/, '')}/callback`,
      scope: portal.scope,
      timeoutSeconds: config.oauth.requestTimeoutSeconds,
      usernameClaims: config.oauth.usernameClaims,
    });
  return createPortalApp(
    {
      publicUrl: portal.publicUrl,
      providerName: providerName(config),
      sessionIdleSeconds: portal.sessionIdleSeconds,
      recentSignInSeconds: portal.recentSignInSeconds,
      identity: { claims: config.oauth.usernameClaims, masterSeparator: config.master.separator, domains: acceptedDomains(config) },
      oauth: config.oauth,
      defaultProtocols: config.appPasswords.defaultProtocols,
      servers: parts.servers,
    },
    {
      service: parts.service,
      signIn,
      signer: new CookieSigner(loadCookieKey(config.storage.dir)),
      log: parts.log,
      directoryVerdict: parts.directoryVerdict,
      ...(parts.now ? { now: parts.now } : {}),
    },
  );
}

/** The autoconfiguration routes of the configuration, for the listeners given. */
export function portalAutoconfig(config: GateConfig, parts: Pick<PortalParts, 'log' | 'servers' | 'fetch'>): AutoconfigRoutes {
  const settings = autoconfigSettings(config, acceptedDomains(config), parts.servers);
  const source = new OAuthEndpointSource(config.oauth.issuer, config.autoconfig, {
    timeoutSeconds: config.oauth.requestTimeoutSeconds,
    ...(parts.fetch ? { fetch: parts.fetch } : {}),
  });
  const base = new URL(config.portal!.publicUrl).pathname.replace(/\/+$/, '');
  return autoconfigRoutes({ settings, endpoints: () => source.get(), cacheSeconds: config.autoconfig.cacheSeconds, log: parts.log }, base);
}

/** Without app passwords: a page that says what the listener is for, and nothing else. */
function autoconfigOnlyApp(config: GateConfig): PortalApp {
  const base = new URL(config.portal!.publicUrl).pathname.replace(/\/+$/, '');
  const page = { base, providerName: providerName(config) };
  const respond = (status: number, body: string, type = 'text/html; charset=utf-8'): PortalResponse => ({
    status,
    headers: { ...securityHeaders([]), 'content-type': type },
    body,
  });
  return {
    handle(request: PortalRequest) {
      const path = new URL(request.url, 'https://portal.invalid').pathname.slice(base.length) || '/';
      const method = request.method.toUpperCase();
      if ((method === 'GET' || method === 'HEAD') && path === '/static/portal.css') return Promise.resolve(respond(200, STYLESHEET, 'text/css; charset=utf-8'));
      if ((method === 'GET' || method === 'HEAD') && path === '/') {
        return Promise.resolve(respond(200, problemPage(page, 'Mail settings', 'Mail apps find their settings here on their own: type your address in your mail app.')));
      }
      return Promise.resolve(respond(404, problemPage(page, 'Not found', 'There is no such page.')));
    },
  };
}

/**
 * Starts the self-service page on `portal.bind`: HTTPS with the certificate store's current
 * certificate for each new connection (so a renewal counts without a restart), HTTP/1.1 inside.
 */
export async function startPortal(config: GateConfig, parts: PortalParts): Promise<RunningPortal> {
  const portal = config.portal!;
  const { log } = parts;
  const { service } = parts;
  const app = service ? portalApp(config, { ...parts, service }) : autoconfigOnlyApp(config);
  const autoconfig = portalAutoconfig(config, parts);
  const sockets = new Set<Socket>();

  const http = createHttpServer({ headersTimeout: HEADERS_TIMEOUT_MS, requestTimeout: HEADERS_TIMEOUT_MS }, (req: IncomingMessage, res: ServerResponse) => {
    void (async () => {
      const body = req.method === 'POST' ? await readBody(req) : '';
      if (body === undefined) {
        res.writeHead(413, { 'content-type': 'text/plain', connection: 'close' }).end('request too large\n');
        return;
      }
      const request = { method: req.method ?? 'GET', url: req.url ?? '/', headers: req.headers, body };
      const response = (await autoconfig(request)) ?? (await app.handle(request));
      res.writeHead(response.status, response.headers).end(response.body);
    })().catch((err: unknown) => {
      log.error({ err: (err as Error).message }, 'portal response failed');
      if (!res.headersSent) res.writeHead(500).end();
      else res.destroy();
    });
  });
  http.on('clientError', (err: Error, socket: Socket) => {
    log.debug({ err: err.message }, 'portal client error');
    socket.destroy();
  });

  const server = createNetServer((raw) => {
    sockets.add(raw);
    raw.once('close', () => sockets.delete(raw));
    raw.on('error', (err) => log.debug({ err: err.message }, 'portal connection error'));
    const secure = new TLSSocket(raw, { isServer: true, secureContext: parts.certificates.current(), ALPNProtocols: ['http/1.1'] });
    secure.on('error', (err) => {
      log.debug({ err: err.message }, 'portal TLS error');
      secure.destroy();
    });
    // A handshake must not hold a socket forever.
    secure.setTimeout(HEADERS_TIMEOUT_MS, () => secure.destroy());
    secure.once('secure', () => secure.setTimeout(0));
    http.emit('connection', secure);
  });
  const address = await new Promise<AddressInfo>((resolve, reject) => {
    server.once('error', reject);
    server.listen({ host: portal.bind.host, port: portal.bind.port }, () => {
      server.off('error', reject);
      resolve(server.address() as AddressInfo);
    });
  });
  log.info({ address: `${address.address}:${address.port}`, publicUrl: portal.publicUrl }, 'portal listening');
  return {
    host: address.address,
    port: address.port,
    async close() {
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      http.closeAllConnections();
      for (const socket of sockets) socket.destroy();
      await closed;
    },
  };
}

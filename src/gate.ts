import { createServer as createHttpServer, type Server as HttpServer } from 'node:http';
import { createServer as createNetServer, type AddressInfo, type Server as NetServer, type Socket } from 'node:net';
import { TLSSocket } from 'node:tls';
import type { Logger } from 'pino';
import { ChainValidator } from './auth/chain.js';
import type { TokenValidator } from './auth/validator.js';
import type { GateConfig } from './config/load.js';
import { acceptedDomains, type ListenerConfig } from './config/schema.js';
import { resolveListeners, type ResolvedListener } from './config/listeners.js';
import { tcpConnector, type BackendConnector } from './net/connector.js';
import { imapFront } from './imap/front.js';
import { smtpFront } from './smtp/front.js';
import { pop3Front } from './pop3/front.js';
import { sieveFront } from './sieve/front.js';
import type { BackendSettings, ProtocolFront, Session } from './login/protocol.js';
import type { Protocol } from './observe/metrics.js';
import { CapabilityCache } from './login/capability-cache.js';
import { CertificateStore } from './tls/certificates.js';
import type { FailureStore } from './login/failures.js';
import { ConnectionLimiter, type Admission } from './net/limits.js';
import { adminHandler } from './observe/admin.js';
import { metricsAuthorizer } from './observe/metrics-auth.js';
import { startDirectory, type RunningDirectory } from './directory/service.js';
import { DependencyHealth, Readiness, tracked } from './observe/health.js';
import { Metrics } from './observe/metrics.js';
import { canonicalAddress, parseNetworks, type NetworkList } from './net/networks.js';
import { readProxyHeader } from './net/proxy-reader.js';
import type { ConnectionParameters, DirectoryVerdict, SessionOptions } from './login/options.js';
import type { AppPasswordService } from './auth/app-passwords.js';
import { startPortal, type RunningPortal } from './portal/server.js';
import type { SignInClient } from './portal/signin.js';
import { openSharedState } from './login/shared-state.js';

/** Seams a caller (tests, the demo) may replace. */
export interface GateDependencies {
  log: Logger;
  validator?: TokenValidator;
  /** Backend connectors by protocol, in place of TCP to the configured backend. */
  connectors?: Partial<Record<Protocol, BackendConnector>>;
  /** In place of the store in storage.dir or storage.postgres (with `appPasswords.enabled`); the self-service page manages it too. */
  appPasswords?: AppPasswordService;
  /** In place of the provider for the self-service page's sign-in. */
  portalSignIn?: SignInClient;
  /** In place of this process's failure tracker: a store every worker of the instance shares. */
  failures?: FailureStore;
  /** In place of this process's connection counts: counts for the whole instance. */
  admission?: Admission;
  /** Login verdicts of a directory that runs in another process (`directory` is then unset here). */
  directoryVerdict?: DirectoryVerdict;
  /** false: no admin listener here; another process serves {@link RunningGate.metrics} and {@link RunningGate.readiness}. */
  adminEndpoint?: boolean;
}

export interface RunningGate {
  /** The user directory, when one is configured. */
  directory: RunningDirectory | undefined;
  /** The app-password store logins check (the self-service page shares it), with `appPasswords.enabled`. */
  appPasswords: AppPasswordService | undefined;
  /** Bound addresses of the listeners, in configuration order. */
  listeners: Array<{ protocol: ListenerConfig['protocol']; host: string; port: number }>;
  admin: { host: string; port: number } | undefined;
  /** The self-service page's bound address, when `portal` is configured. */
  portal: { host: string; port: number } | undefined;
  /** This process's metrics. */
  metrics: Metrics;
  /** What `/readyz` says about this process (always ready without `admin.bind`). */
  readiness(): { ready: boolean; body: string };
  /** Reads the certificate files again (SIGHUP); open connections keep theirs. */
  reloadCertificates(): boolean;
  /**
   * Stops accepting, lets sessions finish for `graceMs` (default `limits.shutdownGraceSeconds`),
   * then closes the rest and releases the ports.
   */
  close(graceMs?: number): Promise<void>;
}

/** What shutdown needs of an open connection. */
interface Closable {
  shutdown(): void;
}

type SessionFactory = (socket: Socket, connection: ConnectionParameters) => Session;

/** A protocol's sessions and its words for a connection refused at the limits. */
interface ProtocolEntry {
  createSession: SessionFactory;
  refusal: string;
}

function listen(server: NetServer | HttpServer, host: string, port: number): Promise<AddressInfo> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen({ host, port }, () => {
      server.off('error', reject);
      resolve(server.address() as AddressInfo);
    });
  });
}

/** How long a connection that is going to be refused may take for its TLS handshake. */
const REFUSAL_HANDSHAKE_MS = 10_000;
/** Refusals in progress at once, over all addresses. */
const MAX_REFUSALS_IN_PROGRESS = 1000;

/** A connector that records each connection attempt's outcome in `health`. */
function trackedConnector(connect: BackendConnector, health: DependencyHealth): BackendConnector {
  return (ends) => tracked(health, ends ? 'login' : 'probe', () => connect(ends));
}

/** Starts every configured listener and the admin endpoint; resolves once all are bound. */
export async function startGate(config: GateConfig, deps: GateDependencies): Promise<RunningGate> {
  const { log } = deps;
  const resolvedListeners = resolveListeners(config);
  // Read before anything listens, so an unreadable token file stops the start.
  const metricsAllowed = metricsAuthorizer(config.admin);
  const certificates = new CertificateStore(config, log);
  await certificates.load();
  certificates.watch();
  /** The provider's recent record, from readiness probes and from the validations of logins. */
  const providerHealth = new DependencyHealth();
  const validator =
    deps.validator ??
    new ChainValidator(config.oauth, {
      masterSeparator: config.master.separator,
      domains: acceptedDomains(config),
      log,
      onStrategy: (strategy, seconds, verdict) => {
        metrics.validationSeconds.observe({ strategy, verdict }, seconds);
        if (verdict === 'unavailable') providerHealth.failed(`${strategy} validation could not reach the provider`, 'login');
        else if (verdict === 'accepted' || verdict === 'rejected') providerHealth.succeeded();
      },
    });
  /** Each backend's recent record (probes and client connections), for /readyz and the metrics. */
  const backendHealth: Array<{ name: string; health: DependencyHealth; cache: CapabilityCache }> = [];
  /** The OpenID provider behind the validator, when it has one (a test's validator may not). */
  const provider = validator.providerStatus?.();
  const metrics = new Metrics({
    ...(provider ? { tokenCache: () => provider.cacheStats(), breakerState: () => provider.breakerState() } : {}),
    certificateExpiry: () => certificates.expiresAt(),
    dependencies: () => [
      ...backendHealth.map(({ cache, health }) => ({ dependency: cache.name, up: health.check().ok })),
      ...(provider ? [{ dependency: 'provider', up: providerHealth.check().ok }] : []),
    ],
  });
  if (provider) {
    tracked(providerHealth, 'probe', () => provider.warmUp()).then(
      (meta) =>
        log.info(
          { issuer: meta.issuer, jwks: meta.jwksUri, introspection: meta.introspectionEndpoint, userinfo: meta.userinfoEndpoint },
          'openid provider discovered',
        ),
      (err: Error) => log.warn({ err: err.message }, 'openid provider not reachable yet; token logins fail temporarily until it is'),
    );
  }

  // The failure counts and app passwords (one store for logins, the directory's revocations and the
  // page): this process and storage.dir, or PostgreSQL every replica shares. What was injected is
  // used as it is, and is its owner's to close.
  const sharedState = await openSharedState(config, { injectedAppPasswords: deps.appPasswords, injectedFailures: deps.failures });
  const appPasswords = config.appPasswords.enabled ? (deps.appPasswords ?? sharedState.appPasswords) : undefined;
  const directory = config.directory ? await startDirectory(config.directory, { log, certificates, appPasswords, postgres: sharedState.postgres }) : undefined;

  const servers: NetServer[] = [];
  const sessions = new Set<Closable>();
  /** Every client connection, whatever its stage (PROXY header, TLS handshake, session, relay). */
  const sockets = new Set<Socket>();
  const bound: RunningGate['listeners'] = [];
  const caches: CapabilityCache[] = [];
  const connections: Admission = deps.admission ?? new ConnectionLimiter(config.limits.maxConnections, config.limits.maxConnectionsPerAddress);
  /** Connections being refused (handshake, then the refusal): bounded like the admitted ones. */
  const refusing = new ConnectionLimiter(MAX_REFUSALS_IN_PROGRESS, config.limits.maxConnectionsPerAddress);
  const failures = sharedState.failures;

  /** The options every session shares; typed, so a renamed or forgotten field does not compile. */
  const shared: Omit<SessionOptions, keyof ConnectionParameters> = {
    limits: config.limits,
    master: config.master,
    oauth: { issuer: config.oauth.issuer, scope: config.oauth.scope },
    validator,
    log,
    failures,
    metrics,
    directoryVerdict: directory ? (identity: string) => directory.loginVerdict(identity) : deps.directoryVerdict,
    appPasswords,
    appPasswordsOnly: config.appPasswords.only,
  };
  /** One session factory per protocol, sharing a backend connector and capability cache across its listeners. */
  const factories = new Map<Protocol, ProtocolEntry>();
  const factoryOf = async <B extends BackendSettings>(front: ProtocolFront<B>, backend: B): Promise<ProtocolEntry> => {
    const existing = factories.get(front.protocol);
    if (existing) return existing;
    const health = new DependencyHealth();
    const connect = trackedConnector(
      deps.connectors?.[front.protocol] ?? tcpConnector(backend.host, backend.port, backend.connectTimeoutSeconds * 1000, backend.proxyProtocol),
      health,
    );
    const capabilities = new CapabilityCache({
      name: front.protocol,
      probe: () => tracked(health, 'probe', () => front.probe(connect, backend, config.hostname)),
      advertise: front.advertise,
      fallback: front.fallbackCapabilities,
      refreshMs: backend.capabilityRefreshSeconds * 1000,
      log,
    });
    await capabilities.start();
    caches.push(capabilities);
    backendHealth.push({ name: `${front.protocol} backend`, health, cache: capabilities });
    const parts = { backend, connectBackend: connect, capabilities, hostname: config.hostname };
    const entry: ProtocolEntry = {
      createSession: (socket, connection) => front.session(socket, { ...shared, ...connection }, parts),
      refusal: front.connectionRefused,
    };
    factories.set(front.protocol, entry);
    return entry;
  };
  /** The registry: every protocol with a front. */
  const factoryFor = (resolved: ResolvedListener): Promise<ProtocolEntry> => {
    switch (resolved.protocol) {
      case 'imap':
        return factoryOf(imapFront, resolved.backend);
      case 'smtp':
        return factoryOf(smtpFront, resolved.backend);
      case 'pop3':
        return factoryOf(pop3Front, resolved.backend);
      case 'sieve':
        return factoryOf(sieveFront, resolved.backend);
    }
  };

  /** Accepts one TCP connection: PROXY header, limits, TLS (implicit), then the session. */
  const accept = async (raw: Socket, listener: ListenerConfig, name: string, entry: ProtocolEntry, trusted: NetworkList | undefined) => {
    const { createSession, refusal } = entry;
    sockets.add(raw);
    raw.once('close', () => sockets.delete(raw));
    raw.on('error', (err) => log.debug({ listener: name, err: err.message }, 'connection error'));
    raw.setNoDelay(true);
    raw.setKeepAlive(true, 60_000);
    let clientAddress: SessionOptions['clientAddress'];
    if (trusted) {
      const peer = raw.remoteAddress ?? '';
      if (!trusted.contains(peer)) {
        metrics.refusals.inc({ listener: name, limit: 'untrusted_proxy' });
        log.warn({ listener: name, peer }, 'connection refused: PROXY protocol header from an untrusted address');
        raw.destroy();
        return;
      }
      try {
        clientAddress = await readProxyHeader(raw, config.limits.preAuthTimeoutSeconds * 1000);
      } catch (err) {
        metrics.refusals.inc({ listener: name, limit: 'bad_proxy_header' });
        log.warn({ listener: name, peer, err: (err as Error).message }, 'connection refused: no valid PROXY protocol header');
        raw.destroy();
        return;
      }
    }
    // One spelling per host (`::ffff:192.0.2.1` is 192.0.2.1), so limits count clients, not notations.
    const address = canonicalAddress(clientAddress?.address ?? raw.remoteAddress ?? '') ?? '';
    if (clientAddress) clientAddress = { address, port: clientAddress.port };
    // Counts kept in another process answer later; this process's own answer at once.
    const verdict = connections.admit(address);
    const refused = verdict instanceof Promise ? await verdict : verdict;
    if (verdict instanceof Promise && raw.destroyed) {
      if (!refused) connections.release(address);
      return;
    }
    let releaseRefusal = () => {};
    if (refused) {
      // A refusal is said in protocol terms, which takes a TLS handshake; those handshakes are
      // limited too, or a flood of silent connections would hold sockets without limit.
      if (refusing.admit(address) !== undefined) {
        metrics.refusals.inc({ listener: name, limit: refused });
        log.debug({ listener: name, client: address, limit: refused }, 'connection dropped: limit reached and refusals in progress');
        raw.destroy();
        return;
      }
      let released = false;
      releaseRefusal = () => {
        if (!released) refusing.release(address);
        released = true;
      };
      raw.once('close', releaseRefusal);
    }
    let socket: Socket = raw;
    if (listener.tls === 'implicit') {
      const secure = new TLSSocket(raw, { isServer: true, secureContext: certificates.current() });
      const handshakeMs = Math.min(refused ? REFUSAL_HANDSHAKE_MS : Infinity, config.limits.preAuthTimeoutSeconds * 1000);
      let onSecure = () => {};
      let onFailed = (_err: Error) => {};
      let onClosed = () => {};
      let timer: NodeJS.Timeout | undefined;
      const handshake = await new Promise<boolean>((resolve) => {
        timer = setTimeout(() => {
          log.debug({ listener: name, client: address }, 'TLS handshake timed out');
          resolve(false);
        }, handshakeMs);
        onSecure = () => resolve(true);
        onFailed = (err) => {
          log.debug({ listener: name, client: address, err: err.message }, 'TLS handshake failed');
          resolve(false);
        };
        onClosed = () => resolve(false);
        secure.once('secure', onSecure);
        secure.once('error', onFailed);
        secure.once('close', onClosed);
      });
      // Nothing of the handshake stays attached to a connection that may live for hours.
      clearTimeout(timer);
      secure.off('secure', onSecure);
      secure.off('error', onFailed);
      secure.off('close', onClosed);
      if (!handshake) {
        metrics.tlsHandshakeFailures.inc({ listener: name });
        secure.on('error', () => undefined);
        secure.destroy();
        if (!refused) connections.release(address);
        return;
      }
      socket = secure;
    }
    if (refused) {
      metrics.refusals.inc({ listener: name, limit: refused });
      log.warn({ listener: name, client: address, limit: refused }, 'connection refused: limit reached');
      socket.on('error', () => undefined);
      socket.end(`${refusal}\r\n`);
      // Said: the slot is free for the next refusal, the socket has two seconds to go.
      releaseRefusal();
      setTimeout(() => socket.destroy(), 2000).unref();
      return;
    }
    metrics.connectionsTotal.inc({ listener: name });
    metrics.connectionsOpen.inc({ listener: name });
    socket.once('close', () => {
      connections.release(address);
      metrics.connectionsOpen.dec({ listener: name });
    });
    const session = createSession(socket, {
      listener: name,
      clientAddress,
      starttls: listener.tls === 'starttls' ? () => certificates.current() : undefined,
    });
    // During the relay the set holds a stand-in, not the session: the pre-login session can go.
    let open: Closable = session;
    sessions.add(open);
    const handOver = (relay: Closable) => {
      sessions.delete(open);
      open = relay;
      sessions.add(open);
    };
    void session.run(handOver).finally(() => sessions.delete(open));
  };

  for (const resolved of resolvedListeners) {
    const { listener, name } = resolved;
    const entry = await factoryFor(resolved);
    const trusted = listener.proxyProtocol ? parseNetworks(listener.trustedProxies) : undefined;
    const server = createNetServer({ allowHalfOpen: true }, (raw) => void accept(raw, listener, name, entry, trusted));
    const address = await listen(server, listener.bind.host, listener.bind.port);
    log.info({ listener: name, address: `${address.address}:${address.port}`, tls: listener.tls }, 'listening');
    servers.push(server);
    bound.push({ protocol: listener.protocol, host: address.address, port: address.port });
  }

  let admin: HttpServer | undefined;
  let adminAddress: RunningGate['admin'];
  let probeTimer: NodeJS.Timeout | undefined;
  const readiness = new Readiness();
  // After SIGTERM, /readyz says so first, so a load balancer stops sending before the listeners close.
  let stopping = false;
  const readyz = (): { ready: boolean; body: string } => {
    const report = readiness.report();
    return stopping ? { ready: false, body: `shutting down\n${report.body}` } : report;
  };
  if (config.admin.bind) {
    for (const { name, health } of backendHealth) readiness.add(name, () => health.check());
    if (provider) {
      // With introspection or userinfo every new token needs the provider; with jwt alone only
      // fetching keys does, so a failed probe is shown but counts only once logins fail too.
      const perLogin = config.oauth.validation.some((strategy) => strategy !== 'jwt');
      readiness.add('openid provider', () => {
        const result = providerHealth.check();
        if (result.ok || perLogin || providerHealth.failing === 'login' || !provider.isReady()) return result;
        return { ok: true, text: `${result.text} (not needed per login while the signing keys are cached)` };
      });
    } else {
      readiness.add('openid provider', () => (validator.isReady?.() ?? true ? { ok: true, text: 'ok' } : { ok: false, text: 'not reachable yet' }));
    }
    if (directory) {
      readiness.add('directory', () => (directory.directory.isLoaded() ? { ok: true, text: 'ok' } : { ok: false, text: 'not loaded yet' }));
    }
    // Dependencies nobody needed lately are probed, failing ones until they answer again.
    const probeMs = config.admin.readinessProbeSeconds * 1000;
    const probing = new Set<DependencyHealth>();
    const probe = (health: DependencyHealth, run: () => Promise<unknown>) => {
      if (probing.has(health) || (!health.failing && !health.isStale(probeMs))) return;
      probing.add(health);
      void run()
        .catch(() => undefined)
        .finally(() => probing.delete(health));
    };
    probeTimer = setInterval(() => {
      for (const { health, cache } of backendHealth) probe(health, () => cache.refresh());
      if (provider) probe(providerHealth, () => tracked(providerHealth, 'probe', () => provider.probe()));
    }, probeMs);
    probeTimer.unref();

  }
  if (config.admin.bind && deps.adminEndpoint !== false) {
    admin = createHttpServer(
      adminHandler({ metricsAllowed, metrics: () => metrics.render(), readiness: readyz }),
    );
    const address = await listen(admin, config.admin.bind.host, config.admin.bind.port);
    adminAddress = { host: address.address, port: address.port };
    log.info({ address: `${address.address}:${address.port}` }, 'admin endpoint listening');
  }

  let portal: RunningPortal | undefined;
  if (config.portal) {
    // Without app passwords the listener still serves autoconfiguration.
    if (!appPasswords) log.info('appPasswords.enabled is false: the portal serves autoconfiguration only');
    portal = await startPortal(config, {
      log,
      certificates,
      service: appPasswords,
      servers: bound.map((b, i) => ({ protocol: b.protocol, port: b.port, tls: resolvedListeners[i]!.listener.tls })),
      directoryVerdict: directory ? (identity: string) => directory.loginVerdict(identity) : undefined,
      ...(deps.portalSignIn ? { signIn: deps.portalSignIn } : {}),
    });
  }

  return {
    directory,
    appPasswords,
    listeners: bound,
    admin: adminAddress,
    metrics,
    readiness: readyz,
    portal: portal ? { host: portal.host, port: portal.port } : undefined,
    reloadCertificates: () => certificates.reload('reload requested'),
    async close(graceMs = config.limits.shutdownGraceSeconds * 1000) {
      stopping = true;
      const delayMs = config.limits.shutdownDelaySeconds * 1000;
      if (graceMs > 0 && delayMs > 0) {
        log.info({ delayMs }, 'unready: listeners close after the delay');
        await new Promise((r) => setTimeout(r, delayMs));
      }
      for (const cache of caches) cache.stop();
      clearInterval(probeTimer);
      certificates.stop();
      await directory?.close();
      await portal?.close();
      const closing = servers.map((s) => new Promise<void>((resolve) => s.close(() => resolve())));
      if (sessions.size > 0 && graceMs > 0) {
        log.info({ sessions: sessions.size, graceMs }, 'letting open sessions finish');
        const deadline = Date.now() + graceMs;
        while (sessions.size > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
      }
      for (const session of sessions) session.shutdown();
      // Whatever has not closed after its goodbye (a handshake in progress, a peer that does not
      // read) is cut, so shutdown always ends.
      const cutAt = Date.now() + 2000;
      while (sockets.size > 0 && Date.now() < cutAt) await new Promise((r) => setTimeout(r, 50));
      for (const socket of sockets) socket.destroy();
      if (admin) {
        admin.closeAllConnections();
        closing.push(new Promise<void>((resolve) => admin!.close(() => resolve())));
      }
      await Promise.all(closing);
      await sharedState.close();
    },
  };
}

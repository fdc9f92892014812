import { createServer as createHttpsServer, type Server } from 'node:https';
import type { AddressInfo } from 'node:net';
import type { Logger } from 'pino';
import type { AppPasswordService } from '../auth/app-passwords.js';
import type { DirectoryConfig } from '../config/schema.js';
import { readSecret } from '../config/secrets.js';
import { ConfigError } from '../errors.js';
import type { PostgresPool } from '../storage/postgres.js';
import type { CertificateStore } from '../tls/certificates.js';
import { revokeAppPasswordsOnDeparture } from './app-passwords.js';
import { Directory, type DirectoryEvent } from './directory.js';
import { PasswdFileWriter } from './dovecot.js';
import { createScimHandler } from './scim.js';
import { startSocketmapServer } from './socketmap.js';
import { createDirectorySource } from './sources/index.js';
import { DirectoryLease, followSharedDirectory, PostgresDirectoryStore } from './shared.js';
import { DirectoryStore } from './store.js';
import { DirectorySync } from './sync.js';

/** How often a replica looks for a newer shared directory (storage.postgres). */
const SHARED_POLL_MS = 2000;

/** The directory as the rest of sasl-gate uses it once it runs. */
export interface RunningDirectory {
  directory: Directory;
  /**
   * Whether a token login by `identity` may go on: `allowed` for an active mail user, `disabled`
   * or `unknown` otherwise, and `not_loaded` until a first set of users is known.
   */
  loginVerdict(identity: string): 'allowed' | 'disabled' | 'unknown' | 'not_loaded';
  /** Where the optional servers listen, for logs and tests. */
  socketmap: { host: string; port: number } | undefined;
  scim: { host: string; port: number } | undefined;
  close(): Promise<void>;
}


/** The bearer token SCIM clients must send, from `directory.scim.token` or its file. */
function scimToken(scim: { token?: string | undefined; tokenFile?: string | undefined }): string {
  const token = readSecret(scim.token, scim.tokenFile, 'directory.scim.token');
  if (token === undefined) throw new ConfigError('directory.scim.token', 'set directory.scim.token or directory.scim.tokenFile');
  return token;
}

function describe(event: DirectoryEvent): Record<string, unknown> {
  const { type, ...rest } = event as DirectoryEvent & Record<string, unknown>;
  return { event: type, ...rest };
}

/**
 * Starts the directory: loads the last good set, syncs from the provider on schedule (or takes
 * SCIM pushes), and serves it to Postfix (socketmap) and Dovecot (passwd-file). A provider that
 * is down never empties it: the last good set is served until the provider answers again.
 */
export async function startDirectory(
  config: DirectoryConfig,
  deps: { log: Logger; certificates: CertificateStore; appPasswords?: AppPasswordService | undefined; postgres?: PostgresPool | undefined },
): Promise<RunningDirectory> {
  const log = deps.log.child({ component: 'directory' });
  const directory = new Directory({
    graceSeconds: config.graceSeconds,
    maxRemovalShare: config.maxRemovalShare,
    maxRemovalsAlwaysAllowed: config.maxRemovalsAlwaysAllowed,
    onEvent: (event) => {
      if (event.type === 'held') log.warn(describe(event), 'directory sync held back: it would remove too many users');
    },
  });
  // Subscribed before the first sync, so no departure goes by unrevoked.
  const stopRevoking = deps.appPasswords ? revokeAppPasswordsOnDeparture(directory, deps.appPasswords, log) : () => {};
  const source = createDirectorySource(config);
  // With storage.postgres the last good set lives in the database every replica serves from, and
  // only the replica holding the lease syncs from the provider.
  const lease = deps.postgres && source ? new DirectoryLease(deps.postgres, config.syncIntervalSeconds * 1500 + 30_000) : undefined;
  const shared = deps.postgres ? new PostgresDirectoryStore(deps.postgres, lease) : undefined;
  const store = shared ?? (config.stateFile ? new DirectoryStore(config.stateFile) : undefined);
  const persist = () => {
    if (store && directory.isLoaded()) store.save(directory.exportState()).catch((err: Error) => log.error({ err: err.message }, 'could not save the directory'));
  };

  let sync: DirectorySync | undefined;
  if (source) {
    sync = new DirectorySync({
      directory,
      source,
      ...(store ? { store } : {}),
      intervalSeconds: config.syncIntervalSeconds,
      jitter: config.syncJitter,
      retrySeconds: config.retrySeconds,
      logger: log,
      ...(lease ? { lease } : {}),
    });
    // The first sync may wait for a provider that is down: the saved set serves meanwhile.
    await sync.loadStored();
    void sync.start();
  } else if (store) {
    const state = await store.load().catch((err: Error) => {
      log.error({ err: err.message }, 'could not load the saved directory');
      return undefined;
    });
    if (state) directory.restore(state);
  }

  const stopFollowing = shared ? followSharedDirectory(directory, shared, SHARED_POLL_MS, log) : () => {};

  let writer: PasswdFileWriter | undefined;
  if (config.dovecot) {
    writer = new PasswdFileWriter(directory, {
      path: config.dovecot.passwdFile,
      ...(config.dovecot.uid !== undefined ? { uid: config.dovecot.uid } : {}),
      ...(config.dovecot.gid !== undefined ? { gid: config.dovecot.gid } : {}),
      ...(config.dovecot.home !== undefined ? { home: config.dovecot.home } : {}),
      refreshIntervalMs: config.dovecot.refreshIntervalSeconds * 1000,
      log,
    });
    await writer.start();
  }
  const unsubscribe = directory.subscribe(() => writer?.schedule());

  let socketmap: Awaited<ReturnType<typeof startSocketmapServer>> | undefined;
  if (config.socketmap) {
    socketmap = await startSocketmapServer(directory, {
      host: config.socketmap.bind.host,
      port: config.socketmap.bind.port,
      ...(config.socketmap.allowFrom ? { allowFrom: config.socketmap.allowFrom } : {}),
      ...(config.socketmap.recipientDelimiter ? { recipientDelimiter: config.socketmap.recipientDelimiter } : {}),
      maxConnections: config.socketmap.maxConnections,
      log,
    });
    log.info({ address: `${socketmap.host}:${socketmap.port}` }, 'socketmap server listening');
  }

  let scimServer: Server | undefined;
  let scimAddress: RunningDirectory['scim'];
  if (config.scim) {
    const handler = createScimHandler(directory, {
      token: scimToken(config.scim),
      basePath: config.scim.basePath,
      domains: config.domains,
      ...(config.scim.allowFrom ? { allowFrom: config.scim.allowFrom } : {}),
      maxBodyBytes: config.scim.maxBodyBytes,
      onChange: persist,
      log,
    });
    // New connections use the certificate in use now, reloads included.
    scimServer = createHttpsServer(
      { ...deps.certificates.pem(), minVersion: 'TLSv1.2', SNICallback: (_name, cb) => cb(null, deps.certificates.current()) },
      handler,
    );
    await new Promise<void>((resolve, reject) => {
      scimServer!.once('error', reject);
      scimServer!.listen({ host: config.scim!.bind.host, port: config.scim!.bind.port }, () => resolve());
    });
    const address = scimServer.address() as AddressInfo;
    scimAddress = { host: address.address, port: address.port };
    log.info({ address: `${address.address}:${address.port}`, path: config.scim.basePath }, 'SCIM endpoint listening');
  }

  return {
    directory,
    socketmap: socketmap ? { host: socketmap.host, port: socketmap.port } : undefined,
    scim: scimAddress,
    loginVerdict(identity) {
      // Until a first set is known (no saved state, provider down) nobody is known to be a user.
      return directory.isLoaded() ? directory.loginVerdict(identity) : 'not_loaded';
    },
    async close() {
      sync?.stop();
      stopFollowing();
      await lease?.release();
      unsubscribe();
      stopRevoking();
      await writer?.stop();
      await socketmap?.close();
      if (scimServer) {
        scimServer.closeAllConnections();
        await new Promise<void>((resolve) => scimServer!.close(() => resolve()));
      }
    },
  };
}

import { listenerServers } from '../autoconfig/documents.js';
import cluster, { type Worker } from 'node:cluster';
import { createServer as createHttpServer, type Server as HttpServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Logger } from 'pino';
import { AggregatorRegistry, Counter, Gauge, type MetricObjectWithValues, type MetricValue } from 'prom-client';
import { openSharedState } from '../login/shared-state.js';
import type { GateConfig } from '../config/load.js';
import { startDirectory } from '../directory/service.js';
import { adminHandler } from '../observe/admin.js';
import { metricsAuthorizer } from '../observe/metrics-auth.js';
import { Metrics } from '../observe/metrics.js';
import { startPortal } from '../portal/server.js';
import { CertificateStore } from '../tls/certificates.js';
import { packageVersion } from '../version.js';
import { isClusterMessage, RequestClient, workerChannel } from './channel.js';
import { answerFailures } from './failures.js';
import { InstanceLimits } from './limits.js';

/** First wait before a crashed worker is started again; it doubles with each crash in a row. */
const RESTART_BASE_MS = 250;
const RESTART_MAX_MS = 30_000;
/** A worker that ran this long before it died starts the backoff afresh. */
const STABLE_AFTER_MS = 60_000;
/** How long `/metrics` and `/readyz` wait for a worker's report. */
const REPORT_TIMEOUT_MS = 2000;

interface Slot {
  index: number;
  worker: Worker | undefined;
  /** Asks the worker for its report. */
  requests: RequestClient | undefined;
  ready: boolean;
  startedAt: number;
  crashes: number;
}

/** What a worker answers a `report` request with. */
interface WorkerReport {
  metrics: Array<MetricObjectWithValues<MetricValue<string>>>;
  ready: boolean;
  readiness: string;
}

interface Report extends WorkerReport {
  pid: number;
}

function isWorkerReport(value: unknown): value is WorkerReport {
  const report = value as Partial<WorkerReport> | null;
  return typeof report === 'object' && report !== null && Array.isArray(report.metrics) && typeof report.ready === 'boolean' && typeof report.readiness === 'string';
}

/**
 * Runs the supervisor of `count` workers that share the listeners (node:cluster): it keeps the
 * instance's failure delays and connection counts, runs the directory, the portal and the admin
 * endpoint (one `/metrics` merged over every worker, a `/readyz` that waits for all of them),
 * restarts a worker that dies, and passes SIGHUP, SIGTERM and SIGINT on. Resolves with the exit code.
 */
export async function runSupervisor(config: GateConfig, log: Logger, count: number): Promise<number> {
  const metricsAllowed = metricsAuthorizer(config.admin);
  const certificates = new CertificateStore(config, log);
  await certificates.load();
  certificates.watch();
  // Opened (and its key made, its schema migrated) before any worker opens the same store. The
  // failure counts are the instance's (memory) or, with storage.postgres, every replica's.
  const shared = await openSharedState(config);
  const appPasswords = config.appPasswords.enabled ? shared.appPasswords : undefined;
  const directory = config.directory ? await startDirectory(config.directory, { log, certificates, appPasswords, postgres: shared.postgres }) : undefined;
  const limits = new InstanceLimits(config.limits.maxConnections, config.limits.maxConnectionsPerAddress);
  const metrics = new Metrics({ certificateExpiry: () => certificates.expiresAt() });
  const restarts = new Counter({ name: 'sasl_gate_worker_restarts_total', help: 'Workers started again after they died.', registers: [metrics.registry] });
  const slots: Slot[] = Array.from({ length: count }, (_, index) => ({ index, worker: undefined, requests: undefined, ready: false, startedAt: 0, crashes: 0 }));
  new Gauge({
    name: 'sasl_gate_workers_ready',
    help: 'Worker processes serving the listeners now.',
    registers: [metrics.registry],
    collect() {
      this.set(slots.filter((s) => s.ready).length);
    },
  });

  let stopping = false;
  let starting = true;
  let exitCode = 0;
  let finished = () => {};
  const allExited = new Promise<void>((resolve) => (finished = resolve));
  const checkFinished = () => {
    if (stopping && slots.every((s) => s.worker === undefined)) finished();
  };

  let pushScheduled = false;
  /** Sends the directory's set to `targets` (every ready worker by default). */
  const pushDirectory = (targets: Slot[] = slots.filter((s) => s.ready)) => {
    if (!directory?.directory.isLoaded()) return;
    const state = directory.directory.exportState();
    for (const slot of targets) if (slot.worker?.isConnected()) slot.worker.send({ saslGate: 'directory', state });
  };
  const unsubscribe = directory?.directory.subscribe(() => {
    if (pushScheduled) return;
    pushScheduled = true;
    setImmediate(() => {
      pushScheduled = false;
      pushDirectory();
    });
  });

  const fork = (slot: Slot) => {
    const worker = cluster.fork();
    slot.worker = worker;
    slot.ready = false;
    slot.startedAt = Date.now();
    const channel = workerChannel(worker);
    slot.requests = new RequestClient(channel, REPORT_TIMEOUT_MS);
    answerFailures(channel, shared.failures);
    limits.serve(String(worker.id), channel);
    worker.on('message', (message: unknown) => {
      if (isClusterMessage(message) && message.saslGate === 'ready') {
        slot.ready = true;
        pushDirectory([slot]);
        if (starting && slots.every((s) => s.ready)) {
          starting = false;
          log.info({ version: packageVersion(), workers: count }, 'sasl-gate started');
        }
      }
    });
    worker.on('exit', (code, signal) => {
      limits.forget(String(worker.id));
      const wasReady = slot.ready;
      slot.worker = undefined;
      slot.requests = undefined;
      slot.ready = false;
      if (stopping) {
        checkFinished();
        return;
      }
      if (starting && !wasReady) {
        // A worker that cannot start (a port taken) stops the instance, as a single process would.
        log.error({ pid: worker.process.pid, code, signal }, 'a worker could not start: stopping');
        exitCode = 1;
        stop('start-up failed', true);
        return;
      }
      const lived = Date.now() - slot.startedAt;
      slot.crashes = lived >= STABLE_AFTER_MS ? 1 : slot.crashes + 1;
      const delayMs = Math.min(RESTART_MAX_MS, RESTART_BASE_MS * 2 ** (slot.crashes - 1));
      log.error({ pid: worker.process.pid, code, signal, restartInMs: delayMs }, 'worker died: starting it again');
      setTimeout(() => {
        if (stopping) return;
        restarts.inc();
        fork(slot);
      }, delayMs);
    });
  };

  /** Each live worker's report, or none from a worker that does not answer in time. */
  const reports = (): Promise<Report[]> =>
    Promise.all(
      slots.map(async ({ worker, requests, ready }): Promise<Report | undefined> => {
        if (!worker || !requests || !ready) return undefined;
        const report = await requests.request<WorkerReport | undefined>({ saslGate: 'report' }, undefined, isWorkerReport);
        return report && { pid: worker.process.pid ?? 0, ...report };
      }),
    ).then((all) => all.filter((r): r is Report => r !== undefined));

  let admin: HttpServer | undefined;
  if (config.admin.bind) {
    admin = createHttpServer(
      adminHandler({
        metricsAllowed,
        async metrics() {
          const merged = AggregatorRegistry.aggregate([await metrics.registry.getMetricsAsJSON(), ...(await reports()).map((r) => r.metrics)]);
          return { contentType: merged.contentType, body: await merged.metrics() };
        },
        async readiness() {
          const all = await reports();
          const readyWorkers = all.filter((r) => r.ready).length;
          const directoryLoaded = directory ? directory.directory.isLoaded() : true;
          const lines = [
            `workers: ${stopping ? 'shutting down' : `${readyWorkers} of ${count} ready`}\n`,
            ...(directory ? [`directory: ${directoryLoaded ? 'ok' : 'not loaded yet'}\n`] : []),
            ...all.flatMap((r) => r.readiness.split('\n').filter(Boolean).map((line) => `worker ${r.pid} ${line}\n`)),
          ];
          return { ready: !stopping && readyWorkers === count && directoryLoaded, body: lines.join('') };
        },
      }),
    );
    const { host, port } = config.admin.bind;
    await new Promise<void>((resolve, reject) => {
      admin!.once('error', reject);
      admin!.listen({ host, port }, () => resolve());
    });
    const address = admin.address() as AddressInfo;
    log.info({ address: `${address.address}:${address.port}` }, 'admin endpoint listening');
  }

  const portal = config.portal
    ? await startPortal(config, {
        log,
        certificates,
        service: appPasswords,
        servers: listenerServers(config.listeners),
        directoryVerdict: directory ? (identity: string) => directory.loginVerdict(identity) : undefined,
      })
    : undefined;

  const stop = (reason: string, now: boolean) => {
    if (!stopping) log.info({ reason, graceSeconds: config.limits.shutdownGraceSeconds }, 'shutting down: every worker drains');
    stopping = true;
    for (const slot of slots) {
      // A worker still starting has no handler for the message yet: its signal ends it.
      if (slot.worker && !slot.ready) slot.worker.process.kill('SIGTERM');
      else if (slot.worker?.isConnected()) slot.worker.send({ saslGate: 'stop', now });
    }
    checkFinished();
  };
  let signals = 0;
  const onSignal = (signal: string) => stop(signal, ++signals > 1);
  process.on('SIGTERM', () => onSignal('SIGTERM'));
  process.on('SIGINT', () => onSignal('SIGINT'));
  process.on('SIGHUP', () => {
    certificates.reload('reload requested');
    for (const slot of slots) if (slot.worker?.isConnected()) slot.worker.send({ saslGate: 'reload' });
  });

  // Workers accept from the shared socket themselves: round-robin through the supervisor costs
  // it a handle transfer per connection (measured in bench/workers.ts: 0.40x against 1.11x the
  // logins/s of one worker). NODE_CLUSTER_SCHED_POLICY=rr still chooses round-robin.
  if (process.env['NODE_CLUSTER_SCHED_POLICY'] === undefined) cluster.schedulingPolicy = cluster.SCHED_NONE;
  log.info({ workers: count }, 'starting workers');
  for (const slot of slots) fork(slot);
  await allExited;

  unsubscribe?.();
  certificates.stop();
  await directory?.close();
  await portal?.close();
  if (admin) {
    admin.closeAllConnections();
    await new Promise<void>((resolve) => admin!.close(() => resolve()));
  }
  await shared.close();
  return exitCode;
}

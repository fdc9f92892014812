import type { Logger } from 'pino';
import type { GateConfig } from '../config/load.js';
import { Directory } from '../directory/directory.js';
import { startGate } from '../gate.js';
import { isClusterMessage, processChannel } from './channel.js';
import { IpcFailureStore } from './failures.js';
import { IpcAdmission } from './limits.js';

/**
 * Runs one worker of a supervised instance: the listeners (shared with the other workers), with
 * failure delays and connection limits counted by the supervisor and the directory's verdicts from
 * the copy it pushes. The admin endpoint, the portal and the directory run in the supervisor.
 * Resolves with the exit code once the worker has drained.
 */
export async function runWorker(config: GateConfig, log: Logger): Promise<number> {
  const channel = processChannel();
  const directory = config.directory
    ? new Directory({
        graceSeconds: config.directory.graceSeconds,
        maxRemovalShare: config.directory.maxRemovalShare,
        maxRemovalsAlwaysAllowed: config.directory.maxRemovalsAlwaysAllowed,
      })
    : undefined;
  const gate = await startGate(
    { ...config, directory: undefined, portal: undefined },
    {
      log,
      failures: new IpcFailureStore(channel, Math.round(config.limits.authFailureMaxDelaySeconds * 1000)),
      admission: new IpcAdmission(channel),
      ...(directory ? { directoryVerdict: (identity: string) => (directory.isLoaded() ? directory.loginVerdict(identity) : 'not_loaded') } : {}),
      adminEndpoint: false,
    },
  );

  let closing: Promise<void> | undefined;
  let stopped = () => {};
  const done = new Promise<void>((resolve) => (stopped = resolve));
  /** The first stop drains; a second one closes what is left at once. */
  const stop = (reason: string, now: boolean) => {
    if (closing && !now) return;
    log.info({ reason, graceSeconds: now ? 0 : config.limits.shutdownGraceSeconds }, 'worker shutting down: no new connections');
    closing = gate.close(now ? 0 : undefined);
    closing.then(stopped, stopped);
  };
  let signals = 0;
  const onSignal = (signal: string) => stop(signal, ++signals > 1);
  process.on('SIGTERM', () => onSignal('SIGTERM'));
  process.on('SIGINT', () => onSignal('SIGINT'));
  process.on('SIGHUP', () => gate.reloadCertificates());

  channel.onMessage((message) => {
    if (!isClusterMessage(message)) return;
    switch (message.saslGate) {
      case 'directory':
        // The supervisor's directory is the one that syncs; this copy only answers logins.
        directory?.restore(message.state as Parameters<Directory['restore']>[0]);
        break;
      case 'reload':
        gate.reloadCertificates();
        break;
      case 'stop':
        stop('supervisor', message.now);
        break;
      case 'report': {
        const { id } = message;
        const { ready, body } = gate.readiness();
        gate.metrics.registry.getMetricsAsJSON().then(
          (metrics) => channel.send({ saslGate: 'answer', id, value: { metrics, ready, readiness: body } }),
          () => channel.send({ saslGate: 'answer', id, value: { metrics: [], ready, readiness: body } }),
        );
        break;
      }
      default:
        break;
    }
  });
  channel.send({ saslGate: 'ready' });
  log.info('worker started');
  await done;
  log.info('worker stopped');
  return 0;
}

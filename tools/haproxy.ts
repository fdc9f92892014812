/**
 * A private HAProxy from the distribution's package in front of sasl-gate replicas, for the cluster
 * tests and benchmarks: one TCP frontend per named service (IMAPS, SMTPS, ...) on a free loopback
 * port, a PROXY protocol v2 header to every replica, and health checks on each replica's admin
 * `/readyz`. Runs in the foreground with its log on standard output and an admin stats socket, so a
 * test can read server states and take a replica out or back (`setServer`). Short check timings
 * (200 ms, 2 failures down, 2 successes up) by default: a test's, not a production's.
 */
import { connect } from 'node:net';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { aptAvailable, aptInstall } from './apt.js';
import { freePort } from './ports.js';
import { exists, signalGroup, sleep, spawnGroup, StartupError, trackGroup, untrackGroup } from './processes.js';

const HAPROXY = '/usr/sbin/haproxy';

/** One sasl-gate replica behind HAProxy. */
export interface HaproxyReplica {
  /** Server name in HAProxy (`r1`, `r2`, ...). */
  name: string;
  host?: string;
  /** The replica's listener port for each service (keys as in {@link HaproxyOptions.services}). */
  ports: Record<string, number>;
  /** The replica's admin endpoint port: where `/readyz` is checked. */
  adminPort: number;
}

/** What to start. */
export interface HaproxyOptions {
  /** Service names, one frontend and one backend each (e.g. `imaps`, `smtps`). */
  services: string[];
  replicas: HaproxyReplica[];
  /** Health-check interval in ms (200). */
  interMs?: number;
  /** Failed checks before a replica is taken out (2). */
  fall?: number;
  /** Passed checks before it is put back (2). */
  rise?: number;
}

/** A server's state as HAProxy's stats say it: `UP`, `DOWN`, `MAINT`, `UP 1/2`, ... */
export interface ServerState {
  service: string;
  server: string;
  status: string;
  /** Sessions open now. */
  current: number;
  /** Sessions since start. */
  total: number;
}

/** One ended session from HAProxy's TCP log (`option tcplog`). */
export interface LoggedSession {
  service: string;
  server: string;
  /** When HAProxy accepted it (ms since the epoch, from the log's local time). */
  acceptedAt: number;
  /** Whether HAProxy connected to the server (`Tc` is not -1). */
  connected: boolean;
  /** Its whole life in ms (`Tt`). */
  totalMs: number;
  /** Bytes sent to the client. */
  bytes: number;
  /** The termination state: `--` for a normal end, `SD` for a server that went away, ... */
  termination: string;
}

const MONTHS = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];
const TCPLOG = /^\S+ \[(\d{2})\/(\w{3})\/(\d{4}):(\d{2}):(\d{2}):(\d{2})\.(\d{3})\] (\S+) ([^/\s]+)\/(\S+) -?\d+\/(-?\d+)\/\+?(\d+) \+?(\d+) (\S\S) /;

/** The sessions in HAProxy's TCP log, in the order they ended. */
export function parseTcpLog(log: string): LoggedSession[] {
  const sessions: LoggedSession[] = [];
  for (const line of log.split('\n')) {
    const m = TCPLOG.exec(line);
    if (!m) continue;
    const [, day, month, year, hour, minute, second, ms, , service, server, connect, total, bytes, termination] = m;
    const acceptedAt = new Date(Number(year), MONTHS.indexOf(month!), Number(day), Number(hour), Number(minute), Number(second), Number(ms)).getTime();
    sessions.push({ service: service!, server: server!, acceptedAt, connected: Number(connect) >= 0, totalMs: Number(total), bytes: Number(bytes), termination: termination! });
  }
  return sessions;
}

/** A running private HAProxy. */
export interface HaproxyInstance {
  host: string;
  /** The frontend port of each service. */
  ports: Record<string, number>;
  /** The generated configuration. */
  config: string;
  pid: number;
  /** One command on the admin socket (`show stat`, `disable server imaps/r1`, ...): its answer. */
  command(line: string): Promise<string>;
  /** Every replica's state per service, from `show stat`. */
  servers(): Promise<ServerState[]>;
  /** Waits until `server` is in `status` (by prefix: `UP`, `DOWN`, `MAINT`) in every service. */
  waitForServer(server: string, status: string, timeoutMs?: number): Promise<void>;
  /** Takes a replica out of every service (`maint`) or puts it back (`ready`). */
  setServer(server: string, state: 'maint' | 'ready'): Promise<void>;
  /** HAProxy's log so far (standard output and error). */
  log(): string;
  /** The sessions that ended so far, from the log. */
  sessions(): LoggedSession[];
  stop(): Promise<void>;
}

/** The path of the haproxy program, installing the `haproxy` package when missing and apt-get can. */
export async function haproxyBin(): Promise<string> {
  if (await exists(HAPROXY)) return HAPROXY;
  if (!(await aptAvailable())) throw new StartupError('HAProxy is not installed (apt-get install haproxy)', false);
  await aptInstall(['haproxy']);
  if (!(await exists(HAPROXY))) throw new StartupError(`apt-get installed haproxy but ${HAPROXY} is missing`, false);
  return HAPROXY;
}

/** The configuration: one TCP frontend and backend per service, PROXY v2 to and `/readyz` checks on every replica. */
export function haproxyConfig(options: HaproxyOptions & { host: string; ports: Record<string, number>; socket: string }): string {
  const inter = options.interMs ?? 200;
  const lines = [
    'global',
    '  maxconn 4096',
    `  stats socket ${options.socket} mode 600 level admin`,
    '  log stdout format raw local0 info',
    '',
    'defaults',
    '  mode tcp',
    '  log global',
    '  option tcplog',
    '  timeout connect 1s',
    // Longer than sasl-gate's own idle limit (limits.idleTimeoutSeconds, 31 minutes by default), so
    // an IMAP IDLE is ended by sasl-gate with a proper goodbye, never cut by HAProxy.
    '  timeout client 32m',
    '  timeout server 32m',
    '  timeout check 1s',
    // A replica that refuses the connection (stopped, or gone before its check failed) costs a
    // retry on another one, not the client's connection.
    '  retries 3',
    '  option redispatch 1',
    `  default-server inter ${inter}ms fastinter ${inter}ms downinter ${inter}ms fall ${options.fall ?? 2} rise ${options.rise ?? 2}`,
  ];
  for (const service of options.services) {
    lines.push(
      '',
      `frontend ${service}`,
      `  bind ${options.host}:${options.ports[service]}`,
      `  default_backend ${service}`,
      '',
      `backend ${service}`,
      '  balance leastconn',
      // The check goes to the admin endpoint, not the mail port: plain HTTP, no PROXY header.
      '  option httpchk GET /readyz',
      '  http-check expect status 200',
    );
    for (const replica of options.replicas) {
      const port = replica.ports[service];
      if (port === undefined) throw new Error(`replica ${replica.name} has no port for ${service}`);
      lines.push(`  server ${replica.name} ${replica.host ?? '127.0.0.1'}:${port} send-proxy-v2 check port ${replica.adminPort}`);
    }
  }
  return `${lines.join('\n')}\n`;
}

/** Starts HAProxy on free loopback ports; resolves once its admin socket answers. */
export async function startHaproxy(options: HaproxyOptions): Promise<HaproxyInstance> {
  const bin = await haproxyBin();
  const dir = await mkdtemp(join(tmpdir(), 'sasl-gate-haproxy-'));
  const host = '127.0.0.1';
  const ports: Record<string, number> = {};
  for (const service of options.services) ports[service] = await freePort(host);
  const socket = join(dir, 'admin.sock');
  const config = haproxyConfig({ ...options, host, ports, socket });
  const configPath = join(dir, 'haproxy.cfg');
  await writeFile(configPath, config);
  const check = spawnGroup(bin, ['-c', '-f', configPath]);
  await check.exited;
  if (check.exitCode() !== '0') throw new StartupError(`haproxy -c refused the configuration:\n${check.output()}\n${config}`, false);

  // -db: foreground, log to standard output; -W would add a master process, which is not needed.
  const spawned = spawnGroup(bin, ['-db', '-f', configPath]);
  // The whole log, not only the last 16 KiB spawnGroup keeps: tests count sessions in it.
  let log = '';
  spawned.child.stdout?.on('data', (chunk: Buffer) => (log += chunk.toString('utf8')));
  spawned.child.stderr?.on('data', (chunk: Buffer) => (log += chunk.toString('utf8')));
  const pgid = spawned.pgid;
  if (pgid === undefined) throw new StartupError(`haproxy could not be started: ${spawned.spawnError()?.message ?? ''}`, false);
  trackGroup(pgid);

  const command = (line: string): Promise<string> =>
    new Promise((resolve, reject) => {
      const conn = connect(socket);
      let answer = '';
      conn.setEncoding('utf8');
      conn.on('data', (chunk: string) => (answer += chunk));
      conn.once('error', reject);
      conn.once('end', () => resolve(answer));
      conn.once('connect', () => conn.write(`${line}\n`));
    });

  const deadline = Date.now() + 10_000;
  for (;;) {
    if (spawned.exitCode() !== undefined) {
      untrackGroup(pgid);
      await rm(dir, { recursive: true, force: true });
      throw new StartupError(`haproxy exited at start (${spawned.exitCode()}):\n${spawned.output()}`, /Address already in use|cannot bind/.test(spawned.output()));
    }
    if (await command('show info').then((a) => a.includes('Pid:'), () => false)) break;
    if (Date.now() > deadline) {
      signalGroup(pgid, 'SIGKILL');
      throw new StartupError(`haproxy's admin socket did not answer within 10 s:\n${spawned.output()}`, false);
    }
    await sleep(50);
  }

  const servers = async (): Promise<ServerState[]> => {
    const csv = (await command('show stat')).split('\n');
    const header = (csv[0] ?? '').replace(/^# /, '').split(',');
    const at = (name: string) => header.indexOf(name);
    return csv
      .slice(1)
      .filter((l) => l.trim() !== '')
      .map((l) => l.split(','))
      .filter((f) => f[at('svname')] !== 'FRONTEND' && f[at('svname')] !== 'BACKEND')
      .map((f) => ({
        service: f[at('pxname')]!,
        server: f[at('svname')]!,
        status: f[at('status')]!,
        current: Number(f[at('scur')]),
        total: Number(f[at('stot')]),
      }));
  };

  return {
    host,
    ports,
    config,
    pid: pgid,
    command,
    servers,
    async waitForServer(server, status, timeoutMs = 15_000) {
      const until = Date.now() + timeoutMs;
      let seen: ServerState[] = [];
      for (;;) {
        seen = (await servers()).filter((s) => s.server === server);
        if (seen.length > 0 && seen.every((s) => s.status.startsWith(status))) return;
        if (Date.now() > until) throw new Error(`HAProxy server ${server} not ${status} within ${timeoutMs} ms: ${seen.map((s) => `${s.service} ${s.status}`).join(', ')}`);
        await sleep(50);
      }
    },
    async setServer(server, state) {
      for (const service of options.services) {
        const answer = await command(`set server ${service}/${server} state ${state}`);
        if (answer.trim() !== '') throw new Error(`haproxy: set server ${service}/${server} state ${state}: ${answer.trim()}`);
      }
    },
    log: () => log,
    sessions: () => parseTcpLog(log),
    async stop() {
      // SIGUSR1: HAProxy's soft stop (stops listening, lets sessions end); SIGTERM cuts them.
      signalGroup(pgid, 'SIGTERM');
      const stopped = await Promise.race([spawned.exited.then(() => true), sleep(5000).then(() => false)]);
      if (!stopped) signalGroup(pgid, 'SIGKILL');
      untrackGroup(pgid);
      await rm(dir, { recursive: true, force: true });
    },
  };
}

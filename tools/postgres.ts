/**
 * A private PostgreSQL from the distribution's package, for integration tests: its own data
 * directory and socket under one temporary directory, on a free loopback port, run as the
 * `postgres` account (PostgreSQL refuses root), with a database and a password user for sasl-gate.
 * Tuned to start in seconds and to lose everything on a crash (fsync off): never a production setup.
 * `halt()` and `resume()` freeze and thaw every PostgreSQL process, for outage tests.
 */
import { execFile } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { chmod, chown, mkdir, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { spawn } from 'node:child_process';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { aptAvailable, aptInstall } from './apt.js';
import { freePort } from './ports.js';
import { closedAncestor, exists, groupAlive, signalGroup, sleep, StartupError, trackGroup, untrackGroup } from './processes.js';

const PACKAGE_ROOT = '/usr/lib/postgresql';

/** What to start; everything has a default. */
export interface PostgresOptions {
  /** Name of the database and of the user that owns it; `sasl_gate` by default. */
  database?: string;
}

/** A running private PostgreSQL. */
export interface PostgresInstance {
  host: string;
  port: number;
  database: string;
  user: string;
  /** The user's password (random per instance). */
  password: string;
  /** `postgres://user:password@host:port/database`. */
  url: string;
  /** Freezes every PostgreSQL process (SIGSTOP): connections and queries hang, as in a network partition. */
  halt(): void;
  /** Thaws them (SIGCONT). */
  resume(): void;
  /** Stops the server and removes its directory. */
  stop(): Promise<void>;
}

/** The bin directory of the newest PostgreSQL installed, installing `postgresql` when none is and apt-get can. */
export async function postgresBin(): Promise<string> {
  const find = async (): Promise<string | undefined> => {
    const versions = (await readdir(PACKAGE_ROOT).catch(() => [] as string[])).filter((v) => /^\d+$/.test(v)).sort((a, b) => Number(b) - Number(a));
    for (const version of versions) {
      const bin = join(PACKAGE_ROOT, version, 'bin');
      if (await exists(join(bin, 'postgres'))) return bin;
    }
    return undefined;
  };
  const found = await find();
  if (found) return found;
  if (!(await aptAvailable())) throw new StartupError('PostgreSQL is not installed (apt-get install postgresql)', false);
  await aptInstall(['postgresql']);
  const installed = await find();
  if (!installed) throw new StartupError(`apt-get installed postgresql but no server is in ${PACKAGE_ROOT}`, false);
  return installed;
}

/** The uid and gid of the `postgres` account the package creates. */
async function postgresAccount(): Promise<{ uid: number; gid: number }> {
  const id = (flag: string) =>
    new Promise<number>((resolve, reject) =>
      execFile('id', [flag, 'postgres'], (err, stdout) => (err ? reject(new StartupError(`no postgres account: ${err.message}`, false)) : resolve(Number(stdout.trim())))),
    );
  return { uid: await id('-u'), gid: await id('-g') };
}

function runAs(account: { uid: number; gid: number }, file: string, args: string[]): Promise<void> {
  return new Promise((resolve, reject) =>
    execFile(file, args, { uid: account.uid, gid: account.gid, env: { PATH: process.env['PATH'] ?? '/usr/bin:/bin', LANG: 'C.UTF-8' } }, (err, stdout, stderr) =>
      err ? reject(new StartupError(`${file} failed: ${err.message}\n${stdout}\n${stderr}`, false)) : resolve(),
    ),
  );
}

/** Starts a private PostgreSQL on a free loopback port; resolves once the sasl-gate database accepts logins. */
export async function startPostgres(options: PostgresOptions = {}): Promise<PostgresInstance> {
  const bin = await postgresBin();
  const account = await postgresAccount();
  const dir = await mkdtemp(join(tmpdir(), 'sasl-gate-pg-'));
  const closed = await closedAncestor(dir);
  if (closed) throw new StartupError(`${closed} is closed to other accounts: the postgres account cannot reach ${dir}`, false);
  await chmod(dir, 0o755);
  const data = join(dir, 'data');
  const sockets = join(dir, 'run');
  await mkdir(data, { mode: 0o700 });
  await mkdir(sockets, { mode: 0o700 });
  const superPassword = randomBytes(18).toString('base64url');
  const pwfile = join(dir, 'superuser-password');
  await writeFile(pwfile, `${superPassword}\n`, { mode: 0o600 });
  for (const path of [data, sockets, pwfile]) await chown(path, account.uid, account.gid);
  await runAs(account, join(bin, 'initdb'), ['-D', data, '-U', 'postgres', '--pwfile', pwfile, '--auth-local=trust', '--auth-host=scram-sha-256', '-E', 'UTF8', '--locale=C', '--no-sync', '--no-instructions']);
  await rm(pwfile);

  const host = '127.0.0.1';
  const port = await freePort(host);
  const child = spawn(
    join(bin, 'postgres'),
    [
      '-D', data, '-p', String(port), '-k', sockets,
      '-c', `listen_addresses=${host}`,
      '-c', 'fsync=off', '-c', 'synchronous_commit=off', '-c', 'full_page_writes=off',
      '-c', 'shared_buffers=16MB', '-c', 'max_connections=60', '-c', 'logging_collector=off',
    ],
    { uid: account.uid, gid: account.gid, detached: true, stdio: ['ignore', 'pipe', 'pipe'] },
  );
  let output = '';
  const collect = (chunk: Buffer) => (output = (output + chunk.toString('utf8')).slice(-16_384));
  child.stdout.on('data', collect);
  child.stderr.on('data', collect);
  let ended = false;
  const exited = new Promise<void>((resolve) => child.once('exit', () => ((ended = true), resolve())));
  const pgid = child.pid!;
  trackGroup(pgid);

  const database = options.database ?? 'sasl_gate';
  const user = database;
  const password = randomBytes(18).toString('base64url');
  const admin = { host, port, user: 'postgres', password: superPassword, database: 'postgres', connectionTimeoutMillis: 2000 };
  const deadline = Date.now() + 30_000;
  for (;;) {
    if (ended) {
      untrackGroup(pgid);
      await rm(dir, { recursive: true, force: true });
      throw new StartupError(`PostgreSQL exited at start:\n${output}`, /already in use/.test(output));
    }
    const client = new pg.Client(admin);
    try {
      await client.connect();
      await client.query(`CREATE ROLE ${user} LOGIN PASSWORD '${password}'`);
      await client.query(`CREATE DATABASE ${database} OWNER ${user}`);
      await client.end();
      break;
    } catch (err) {
      await client.end().catch(() => undefined);
      if (Date.now() > deadline) {
        signalGroup(pgid, 'SIGKILL');
        throw new StartupError(`PostgreSQL did not accept logins within 30 s: ${(err as Error).message}\n${output}`, false);
      }
      await sleep(100);
    }
  }

  return {
    host,
    port,
    database,
    user,
    password,
    url: `postgres://${user}:${password}@${host}:${port}/${database}`,
    halt: () => {
      // The postmaster first, so it forks no new backend; each backend is a session of its own (setsid).
      signalGroup(pgid, 'SIGSTOP');
      for (const child of childrenOf(pgid)) signalProcess(child, 'SIGSTOP');
    },
    resume: () => {
      for (const child of childrenOf(pgid)) signalProcess(child, 'SIGCONT');
      signalGroup(pgid, 'SIGCONT');
    },
    async stop() {
      for (const child of childrenOf(pgid)) signalProcess(child, 'SIGCONT');
      signalGroup(pgid, 'SIGCONT');
      // SIGINT: PostgreSQL's fast shutdown (sessions are ended, no checkpoint wait worth having here).
      child.kill('SIGINT');
      const stopped = await Promise.race([exited.then(() => true), sleep(10_000).then(() => false)]);
      if (!stopped || groupAlive(pgid)) {
        for (const child of childrenOf(pgid)) signalProcess(child, 'SIGKILL');
        signalGroup(pgid, 'SIGKILL');
      }
      untrackGroup(pgid);
      await rm(dir, { recursive: true, force: true });
    },
  };
}

/** The pids whose parent is `parent` (from /proc). */
function childrenOf(parent: number): number[] {
  const children: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      // The parent pid is the second field after the command name, which may hold spaces or parentheses.
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      if (Number(fields[1]) === parent) children.push(Number(entry));
    } catch {
      // Gone meanwhile.
    }
  }
  return children;
}

function signalProcess(pid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(pid, signal);
  } catch {
    // Already gone.
  }
}

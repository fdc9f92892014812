/**
 * sasl-gate as a child process, `node bin/sasl-gate.js serve --config FILE`, so that its CPU time
 * and resident memory are its own.
 *
 * What runs is the current source: src/ is compiled file by file with esbuild (no bundling, the
 * same JavaScript tsc would emit, minus types) into a temporary directory laid out like the
 * package (`bin/sasl-gate.js` importing `../dist/cli.js`, node_modules linked), so a stale or
 * half-written dist/ of a concurrent build cannot be measured by mistake. `--use-dist` runs the
 * repository's own bin/sasl-gate.js and dist/ instead.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, openSync, readFileSync, readdirSync, rmSync, symlinkSync, writeFileSync, closeSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { stringify } from 'yaml';
import { freePort } from '../../tools/ports.js';
import { args, fileLimitFor, onCleanup, processCpuSeconds, processRss, sleep } from './common.js';

export const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
const USE_DIST = args.includes('--use-dist');

let built: Promise<string> | undefined;

function sourceFiles(dir: string): string[] {
  const out: string[] = [];
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) out.push(...sourceFiles(path));
    else if (entry.name.endsWith('.ts') && !entry.name.endsWith('.d.ts')) out.push(path);
  }
  return out;
}

/** The bin script to run: the repository's (`--use-dist`) or one over a fresh build of src/. */
export function gateBin(): Promise<string> {
  if (USE_DIST) return Promise.resolve(join(ROOT, 'bin', 'sasl-gate.js'));
  built ??= (async () => {
    const { build } = await import('esbuild');
    const out = mkdtempSync(join(tmpdir(), 'sasl-gate-bench-build-'));
    onCleanup(() => rmSync(out, { recursive: true, force: true }));
    const src = join(ROOT, 'src');
    await build({
      entryPoints: sourceFiles(src),
      outdir: join(out, 'dist'),
      outbase: src,
      format: 'esm',
      platform: 'node',
      target: 'node20',
      bundle: false,
      sourcemap: false,
      logLevel: 'error',
    });
    const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { version: string };
    writeFileSync(join(out, 'package.json'), JSON.stringify({ name: 'sasl-gate', version: pkg.version, type: 'module' }));
    symlinkSync(join(ROOT, 'node_modules'), join(out, 'node_modules'), 'dir');
    const bin = join(out, 'bin', 'sasl-gate.js');
    const { mkdirSync } = await import('node:fs');
    mkdirSync(dirname(bin));
    writeFileSync(bin, readFileSync(join(ROOT, 'bin', 'sasl-gate.js'), 'utf8'));
    return bin;
  })();
  return built;
}

/** How the gate was run, for the report. */
export function gateCommandNote(): string {
  return USE_DIST ? 'node bin/sasl-gate.js (the repository\'s dist/)' : 'node bin/sasl-gate.js over src/ compiled by esbuild at the start of the run';
}

export interface GateProcess {
  pid: number;
  /** Its working directory (where `--heapsnapshot-signal` snapshots land). */
  dir: string;
  host: string;
  port: number;
  logPath: string;
  /** CPU seconds the process has used so far. */
  cpuSeconds(): number;
  rss(): number;
  /** Log lines so far (JSON), parsed. */
  logLines(): Array<Record<string, unknown>>;
  /** SIGTERM, wait for the exit (the CPU profile, if any, is written then); SIGKILL after 15 s. */
  stop(): Promise<void>;
  /** With `cpuProfile`: the .cpuprofile files written at exit. */
  profiles(): string[];
}

export interface GateOptions {
  /** The configuration, as YAML would hold it; `listeners` is set here (one implicit-TLS listener). */
  config: Record<string, unknown>;
  /** The listener's protocol: `imap` (IMAPS) by default, or `smtp` (SMTPS). */
  protocol?: 'imap' | 'smtp';
  /** More keys of the listener (e.g. `proxyProtocol`, `trustedProxies`). */
  listener?: Record<string, unknown>;
  /** Write a V8 CPU profile (`node --cpu-prof`) into this directory at exit. */
  cpuProfileDir?: string;
  /** Open-file limit of the process (`ulimit -n`). */
  fileLimit?: number;
  /** Extra node options, e.g. `--max-semi-space-size=...`. */
  nodeOptions?: string[];
}

/** Starts sasl-gate on a free loopback port; resolves once it logged that it started. */
export async function startGateProcess(opts: GateOptions): Promise<GateProcess> {
  const bin = await gateBin();
  const dir = mkdtempSync(join(tmpdir(), 'sasl-gate-bench-gate-'));
  onCleanup(() => rmSync(dir, { recursive: true, force: true }));
  const host = '127.0.0.1';
  const port = await freePort(host);
  const configPath = join(dir, 'sasl-gate.yaml');
  writeFileSync(
    configPath,
    stringify({ ...opts.config, listeners: [{ protocol: opts.protocol ?? 'imap', bind: `${host}:${port}`, tls: 'implicit', ...opts.listener }] }),
  );
  const logPath = join(dir, 'sasl-gate.log');
  const logFd = openSync(logPath, 'a');
  const nodeArgs = [
    ...(opts.nodeOptions ?? []),
    ...(opts.cpuProfileDir ? ['--cpu-prof', `--cpu-prof-dir=${opts.cpuProfileDir}`] : []),
    bin,
    'serve',
    '--config',
    configPath,
  ];
  // sasl-gate reads SASL_GATE_* variables as configuration: only the file may configure it here.
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('SASL_GATE_')));
  env['NODE_OPTIONS'] = '';
  let child: ChildProcess;
  if (opts.fileLimit) {
    child = spawn('/bin/sh', ['-c', `ulimit -n ${fileLimitFor(opts.fileLimit)} && exec "$@"`, 'sh', process.execPath, ...nodeArgs], {
      stdio: ['ignore', logFd, logFd],
      cwd: dir,
      env,
    });
  } else {
    child = spawn(process.execPath, nodeArgs, { stdio: ['ignore', logFd, logFd], cwd: dir, env });
  }
  closeSync(logFd);
  const pid = child.pid!;
  let exited = false;
  const exit = new Promise<void>((resolve) => child.once('exit', () => ((exited = true), resolve())));
  const stop = async (): Promise<void> => {
    if (exited) return;
    child.kill('SIGTERM');
    const done = await Promise.race([exit.then(() => true), sleep(15_000).then(() => false)]);
    if (!done) {
      child.kill('SIGKILL');
      await exit;
    }
  };
  onCleanup(stop);
  const logText = () => {
    try {
      return readFileSync(logPath, 'utf8');
    } catch {
      return '';
    }
  };
  const logLines = () =>
    logText()
      .split('\n')
      .filter((l) => l.startsWith('{'))
      .map((l) => {
        try {
          return JSON.parse(l) as Record<string, unknown>;
        } catch {
          return { unparsed: l };
        }
      });
  const level = ((opts.config['log'] as { level?: string } | undefined)?.level ?? 'info').toLowerCase();
  const quietLog = !['info', 'debug', 'trace'].includes(level);
  const deadline = Date.now() + 30_000;
  for (;;) {
    if (exited) throw new Error(`sasl-gate exited during start-up:\n${logText().slice(-4000)}`);
    if (logLines().some((l) => l['msg'] === 'sasl-gate started')) break;
    // Below `info` that line is not written: a listener that takes a TCP connection will do.
    if (quietLog && (await accepts(host, port))) break;
    if (Date.now() > deadline) {
      await stop();
      throw new Error(`sasl-gate did not start within 30 s:\n${logText().slice(-4000)}`);
    }
    await sleep(50);
  }
  return {
    pid,
    dir,
    host,
    port,
    logPath,
    cpuSeconds: () => processCpuSeconds(pid),
    rss: () => processRss(pid),
    logLines,
    stop,
    profiles: () =>
      opts.cpuProfileDir && existsSync(opts.cpuProfileDir)
        ? readdirSync(opts.cpuProfileDir)
            .filter((f) => f.endsWith('.cpuprofile'))
            .map((f) => join(opts.cpuProfileDir!, f))
        : [],
  };
}

function accepts(host: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect({ host, port }, () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });
}

/** A path relative to the repository, for printing. */
export function repoPath(path: string): string {
  const rel = relative(ROOT, path);
  return rel.startsWith('..') ? path : rel;
}

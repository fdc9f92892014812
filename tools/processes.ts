/**
 * What the private Dovecot and Postfix launchers (and the package installer) share: running a
 * program to completion, whole process groups that die with the test process, and the small
 * file-system questions their start-up checks ask.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { access, readFile, stat } from 'node:fs/promises';
import { dirname } from 'node:path';

/** How a program run to completion ended. */
export interface RunResult {
  /** The exit code; null when the program could not be run at all (ENOENT, EACCES, ...). */
  code: number | null;
  stdout: string;
  stderr: string;
  /** Standard output and error together, trimmed; the error's message when there was none. */
  output: string;
}

/** Runs a program to completion (never rejects), optionally with an environment and standard input. */
export function run(file: string, args: string[], options: { env?: NodeJS.ProcessEnv; input?: string } = {}): Promise<RunResult> {
  return new Promise((resolve) => {
    const child = execFile(
      file,
      args,
      { env: options.env ?? process.env, maxBuffer: 64 * 1024 * 1024, encoding: 'utf8' },
      (error, stdout, stderr) => {
        const output = `${stdout}\n${stderr}`.trim();
        if (error === null) {
          resolve({ code: 0, stdout, stderr, output });
          return;
        }
        const code = typeof error.code === 'number' ? error.code : null;
        resolve({ code, stdout, stderr: stderr || error.message, output: output || error.message });
      },
    );
    if (options.input !== undefined) child.stdin?.end(options.input);
  });
}

/** Whether a path exists. */
export const exists = (path: string): Promise<boolean> =>
  access(path).then(
    () => true,
    () => false,
  );

/** Resolves after `ms` milliseconds. */
export const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/** The nearest parent of `dir` that other accounts cannot enter, if any (they must reach files below it). */
export async function closedAncestor(dir: string): Promise<string | undefined> {
  for (let current = dirname(dir); ; current = dirname(current)) {
    const info = await stat(current);
    if ((info.mode & 0o001) === 0) return current;
    if (dirname(current) === current) return undefined;
  }
}

/** The last lines of a log file ('' when it cannot be read). */
export async function tailOf(path: string, lines = 40): Promise<string> {
  const text = await readFile(path, 'utf8').catch(() => '');
  return text.trimEnd().split('\n').slice(-lines).join('\n');
}

/** Whether any process of the group is still alive. */
export function groupAlive(pgid: number): boolean {
  try {
    process.kill(-pgid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Sends a signal to a whole process group; a group that is gone is no error. */
export function signalGroup(pgid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(-pgid, signal);
  } catch {
    // Already gone.
  }
}

// Process groups of instances still running; killed if the test process exits without stop().
const liveGroups = new Set<number>();
let exitHookInstalled = false;

/** Remembers a running instance's process group, so it dies with this process. */
export function trackGroup(pgid: number): void {
  liveGroups.add(pgid);
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.once('exit', () => {
    for (const group of liveGroups) signalGroup(group, 'SIGTERM');
  });
}

/** Forgets a process group that has ended. */
export function untrackGroup(pgid: number): void {
  liveGroups.delete(pgid);
}

/** A launch that failed; `addressInUse` says a retry on other ports may work. */
export class StartupError extends Error {
  constructor(
    message: string,
    readonly addressInUse: boolean,
  ) {
    super(message);
    this.name = 'StartupError';
  }
}

/** A server started in a process group of its own, watched until it exits. */
export interface Spawned {
  child: ChildProcess;
  /** The process group (the child's pid); undefined when it could not be started. */
  pgid: number | undefined;
  /** Resolves when the child exits, or could not be started. */
  exited: Promise<void>;
  /** The last 16 KiB it wrote to standard output and error. */
  output(): string;
  /** How it ended (exit code, signal, or `spawn error`); undefined while it runs. */
  exitCode(): string | undefined;
  spawnError(): Error | undefined;
}

/** Starts a server in its own process group, so that stop() can signal it and all its children at once. */
export function spawnGroup(file: string, args: string[]): Spawned {
  const child = spawn(file, args, { detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  const collect = (chunk: Buffer): void => {
    output = (output + chunk.toString('utf8')).slice(-16_384);
  };
  child.stdout?.on('data', collect);
  child.stderr?.on('data', collect);
  let exitCode: string | undefined;
  let spawnError: Error | undefined;
  const exited = new Promise<void>((resolve) => {
    child.once('error', (err) => {
      spawnError = err;
      exitCode = 'spawn error';
      resolve();
    });
    child.once('exit', (code, signal) => {
      exitCode = signal ?? String(code);
      resolve();
    });
  });
  return { child, pgid: child.pid, exited, output: () => output, exitCode: () => exitCode, spawnError: () => spawnError };
}

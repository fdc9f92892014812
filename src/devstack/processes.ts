/**
 * What the private Dovecot and Postfix launchers (and the package installer) share: running a
 * program to completion, whole process groups that die with the test process, and the small
 * file-system questions their start-up checks ask.
 */
import { execFile } from 'node:child_process';
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

/**
 * Installs Debian packages for the private mail servers (Dovecot, Postfix) with apt-get: unattended,
 * one `apt-get update` per process and one dpkg run at a time, whichever launcher asks first.
 */
import { access } from 'node:fs/promises';
import { run } from './processes.js';

const APT_GET = '/usr/bin/apt-get';
const DEBCONF_SET_SELECTIONS = '/usr/bin/debconf-set-selections';

async function mustRun(file: string, args: string[], input?: string): Promise<void> {
  const result = await run(file, args, { env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' }, ...(input !== undefined ? { input } : {}) });
  if (result.code !== 0) {
    const tail = result.output.split('\n').slice(-20).join('\n');
    throw new Error(`${file} ${args.join(' ')} failed (exit ${String(result.code)}):\n${tail}`);
  }
}

/** Whether apt-get can be used here (present, and we are root). */
export async function aptAvailable(): Promise<boolean> {
  if (process.getuid?.() !== 0) return false;
  return access(APT_GET).then(
    () => true,
    () => false,
  );
}

let updated: Promise<void> | undefined;
// dpkg takes a lock, so concurrent installs from two launchers would fail rather than wait.
let queue: Promise<unknown> = Promise.resolve();

/**
 * Installs packages with `apt-get install -y`, after one `apt-get update` per process; `debconf`
 * lines (`package question type value`) are preseeded first so maintainer scripts never ask.
 */
export function aptInstall(packages: string[], debconf: string[] = []): Promise<void> {
  const job = queue.then(async () => {
    if (debconf.length > 0) await mustRun(DEBCONF_SET_SELECTIONS, [], `${debconf.join('\n')}\n`);
    updated ??= mustRun(APT_GET, ['update']).catch((err: unknown) => {
      updated = undefined;
      throw err;
    });
    await updated;
    await mustRun(APT_GET, ['install', '-y', ...packages]);
  });
  queue = job.catch(() => undefined);
  return job;
}

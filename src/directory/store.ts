/**
 * The last good directory on disk, so that a restart while the provider is down still serves
 * the users it had. Written atomically (a temporary file renamed over the old one), readable by
 * sasl-gate's user only: it lists every mail address of the organisation.
 */
import { randomBytes } from 'node:crypto';
import { mkdir, open, readFile, rename, unlink } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { GateError } from '../errors.js';
import type { DirectoryState } from './directory.js';
import type { DirectoryUser } from './model.js';

const FORMAT = 'sasl-gate-directory';
const VERSION = 1;

/** The state file exists but cannot be used (not JSON, wrong shape, unreadable). */
export class DirectoryStoreError extends GateError {
  constructor(message: string, options: { cause?: unknown } = {}) {
    super('directory_store', message, { temporary: true, cause: options.cause });
    this.name = 'DirectoryStoreError';
  }
}

function isStringArray(value: unknown): value is string[] {
  return Array.isArray(value) && value.every((v) => typeof v === 'string');
}

function checkUser(value: unknown, where: string): DirectoryUser {
  const u = value as Partial<DirectoryUser> | null;
  if (
    typeof u !== 'object' ||
    u === null ||
    typeof u.id !== 'string' ||
    typeof u.mailbox !== 'string' ||
    typeof u.active !== 'boolean' ||
    !isStringArray(u.aliases) ||
    !isStringArray(u.groups)
  ) {
    throw new DirectoryStoreError(`${where} is not a directory user`);
  }
  return { id: u.id, mailbox: u.mailbox, aliases: [...u.aliases], active: u.active, groups: [...u.groups] };
}

/** Checks the parsed file, so a hand-edited or truncated file is refused rather than half-used. */
export function parseState(value: unknown): DirectoryState {
  const file = value as Record<string, unknown> | null;
  if (typeof file !== 'object' || file === null || file['format'] !== FORMAT) {
    throw new DirectoryStoreError(`not a ${FORMAT} file`);
  }
  if (file['version'] !== VERSION) throw new DirectoryStoreError(`unsupported version ${String(file['version'])}`);
  const snapshot = file['snapshot'] as Record<string, unknown> | null;
  if (
    typeof snapshot !== 'object' ||
    snapshot === null ||
    typeof snapshot['source'] !== 'string' ||
    typeof snapshot['fetchedAt'] !== 'string' ||
    !Array.isArray(snapshot['users'])
  ) {
    throw new DirectoryStoreError('snapshot is missing or malformed');
  }
  const departed = file['departed'];
  if (!Array.isArray(departed)) throw new DirectoryStoreError('departed is not a list');
  return {
    snapshot: {
      source: snapshot['source'],
      fetchedAt: snapshot['fetchedAt'],
      users: snapshot['users'].map((u, i) => checkUser(u, `snapshot.users[${i}]`)),
    },
    departed: departed.map((d: unknown, i) => {
      const entry = d as { user?: unknown; since?: unknown } | null;
      if (typeof entry !== 'object' || entry === null || typeof entry.since !== 'string') {
        throw new DirectoryStoreError(`departed[${i}] is malformed`);
      }
      return { user: checkUser(entry.user, `departed[${i}].user`), since: entry.since };
    }),
  };
}

/** The state as it is saved (the file's JSON, or a database's document): format and version stamped. */
export function stateDocument(state: DirectoryState): Record<string, unknown> {
  return { format: FORMAT, version: VERSION, savedAt: new Date().toISOString(), ...state };
}

/** Where the directory's last good state is kept: a file, or the database replicas share. */
export interface DirectoryPersistence {
  /** What it is, for logs. */
  readonly file: string;
  load(): Promise<DirectoryState | undefined>;
  save(state: DirectoryState): Promise<void>;
}

/** Persists and loads the directory's state as one JSON file. */
export class DirectoryStore implements DirectoryPersistence {
  private writing: Promise<void> | undefined;
  private pending: DirectoryState | undefined;
  private pendingWaiters: Array<{ resolve: () => void; reject: (err: unknown) => void }> = [];

  constructor(readonly file: string) {}

  /** The saved state, or undefined when there is no file yet; rejects when the file is unusable. */
  async load(): Promise<DirectoryState | undefined> {
    let text: string;
    try {
      text = await readFile(this.file, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw new DirectoryStoreError(`cannot read ${this.file}: ${(err as Error).message}`, { cause: err });
    }
    let parsed: unknown;
    try {
      parsed = JSON.parse(text);
    } catch (err) {
      throw new DirectoryStoreError(`${this.file} is not JSON: ${(err as Error).message}`, { cause: err });
    }
    try {
      return parseState(parsed);
    } catch (err) {
      if (err instanceof DirectoryStoreError) {
        throw new DirectoryStoreError(`${this.file}: ${err.message}`, { cause: err });
      }
      throw err;
    }
  }

  /**
   * Writes the state atomically. Saves never run concurrently; while one is on disk, later calls
   * coalesce into one write of the newest state (a burst of SCIM updates costs two writes).
   */
  save(state: DirectoryState): Promise<void> {
    this.pending = state;
    const done = new Promise<void>((resolve, reject) => this.pendingWaiters.push({ resolve, reject }));
    if (!this.writing) this.writing = this.drain();
    return done;
  }

  private async drain(): Promise<void> {
    while (this.pending) {
      const state = this.pending;
      const waiters = this.pendingWaiters;
      this.pending = undefined;
      this.pendingWaiters = [];
      try {
        await this.write(state);
        for (const w of waiters) w.resolve();
      } catch (err) {
        for (const w of waiters) w.reject(err);
      }
    }
    this.writing = undefined;
  }

  private async write(state: DirectoryState): Promise<void> {
    const dir = dirname(this.file);
    await mkdir(dir, { recursive: true, mode: 0o700 });
    const body = `${JSON.stringify({ format: FORMAT, version: VERSION, savedAt: new Date().toISOString(), ...state }, null, 1)}\n`;
    const temp = join(dir, `.${basename(this.file)}.${process.pid}.${randomBytes(6).toString('hex')}.tmp`);
    // 'wx' with mode 0600: the file is created private, never briefly readable by others, and a
    // symlink planted at the temporary name is refused instead of followed.
    const handle = await open(temp, 'wx', 0o600);
    try {
      await handle.writeFile(body, 'utf8');
      // Data on disk before the rename, so a crash cannot leave an empty file under the real name.
      await handle.sync();
    } catch (err) {
      await handle.close().catch(() => undefined);
      await unlink(temp).catch(() => undefined);
      throw err;
    }
    await handle.close();
    try {
      await rename(temp, this.file);
    } catch (err) {
      await unlink(temp).catch(() => undefined);
      throw err;
    }
    // The rename itself is durable only once the directory entry is flushed; not every file
    // system lets a directory be opened for that, which is no reason to fail the save.
    try {
      const dirHandle = await open(dir, 'r');
      await dirHandle.sync().finally(() => dirHandle.close());
    } catch {
      // best effort
    }
  }
}

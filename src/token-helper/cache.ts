/**
 * The token helper's saved sign-in: one JSON file per issuer, client and user under the user's
 * cache directory, readable by the user alone, replaced atomically, and guarded by a lock file
 * so that two mail programs refreshing at once do not both spend a rotating refresh token.
 */
import { createHash, randomBytes } from 'node:crypto';
import { chmodSync, closeSync, constants, fchmodSync, fstatSync, fsyncSync, lstatSync, mkdirSync, openSync, readFileSync, renameSync, rmSync, statSync, writeSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { GateError } from '../errors.js';

/** What is kept between two calls. Times are seconds since the epoch. */
export interface SavedSignIn {
  issuer: string;
  clientId: string;
  /** The `--login-hint` the file belongs to; empty without one. */
  user: string;
  /** Who the provider said signed in (the ID token's `email`), for messages only. */
  signedInAs?: string | undefined;
  refreshToken?: string | undefined;
  accessToken?: string | undefined;
  /** When the access token expires; unset when the provider did not say. */
  expiresAt?: number | undefined;
}

/** Which saved sign-in: one file each. */
export interface CacheKey {
  issuer: string;
  clientId: string;
  user: string;
}

const FORMAT_VERSION = 1;

/** `$XDG_CACHE_HOME/sasl-gate`, else `~/.cache/sasl-gate` (a relative XDG_CACHE_HOME is ignored, as the spec says). */
export function cacheDirectory(env: NodeJS.ProcessEnv = process.env, home: () => string = homedir): string {
  const xdg = env['XDG_CACHE_HOME'];
  const base = xdg !== undefined && xdg.startsWith('/') ? xdg : join(home(), '.cache');
  return join(base, 'sasl-gate');
}

/** The file name of a saved sign-in: a digest of issuer, client and user, so no name needs escaping. */
export function cacheFileName(key: CacheKey): string {
  const digest = createHash('sha256').update(`${key.issuer}\n${key.clientId}\n${key.user}`).digest('hex');
  return `token-${digest.slice(0, 32)}.json`;
}

/** A lock held longer than this is left over from a process that died (a device sign-in lasts at most minutes). */
const STALE_LOCK_MS = 15 * 60_000;

/** Seams of {@link SignInCache}: time and waiting, so that tests need no real clock. */
export interface CacheSeams {
  now(): number;
  sleep(ms: number): Promise<void>;
  /** Whether a process id is alive; a lock of a dead process is taken over. */
  alive(pid: number): boolean;
}

const realSeams: CacheSeams = {
  now: () => Date.now(),
  sleep: (ms) => new Promise((resolve) => setTimeout(resolve, ms)),
  alive: (pid) => {
    try {
      process.kill(pid, 0);
      return true;
    } catch (err) {
      return (err as NodeJS.ErrnoException).code === 'EPERM';
    }
  },
};

/** A cache file that cannot be used: unreadable, not ours, or another program's JSON. */
export class CacheError extends GateError {
  constructor(message: string, options: { cause?: unknown; temporary?: boolean } = {}) {
    super(options.temporary ? 'cache_busy' : 'cache_unusable', message, options);
    this.name = 'CacheError';
  }
}

/** One saved sign-in on disk. */
export class SignInCache {
  readonly path: string;
  private readonly lockPath: string;

  constructor(
    readonly directory: string,
    readonly key: CacheKey,
    private readonly seams: CacheSeams = realSeams,
  ) {
    this.path = join(directory, cacheFileName(key));
    this.lockPath = `${this.path}.lock`;
  }

  /** The saved sign-in, or undefined when there is none (or it belongs to another key). */
  read(): SavedSignIn | undefined {
    let text: string;
    try {
      text = readOwnFile(this.path);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      // A symbolic link is none of this command's files: the next write replaces the link itself.
      if (code === 'ENOENT' || code === 'ELOOP') return undefined;
      if (err instanceof CacheError) throw err;
      throw new CacheError(`cannot read ${this.path}: ${code ?? 'error'}`, { cause: err });
    }
    let parsed: unknown;
    try {
      parsed = JSON.parse(text);
    } catch {
      // A torn or foreign file is no sign-in; the next write replaces it.
      return undefined;
    }
    if (!isSavedSignIn(parsed)) return undefined;
    const { issuer, clientId, user } = parsed;
    if (issuer !== this.key.issuer || clientId !== this.key.clientId || user !== this.key.user) return undefined;
    return parsed;
  }

  /** Replaces the file atomically: a new 0600 file beside it, flushed, renamed over it. */
  write(signIn: SavedSignIn): void {
    this.ensureDirectory();
    const body = `${JSON.stringify({ version: FORMAT_VERSION, ...signIn, ...this.key }, null, 2)}\n`;
    const temporary = `${this.path}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`;
    const fd = openSync(temporary, 'wx', 0o600);
    try {
      writeSync(fd, body);
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    try {
      renameSync(temporary, this.path);
    } catch (err) {
      rmSync(temporary, { force: true });
      throw err;
    }
  }

  /** Forgets the saved sign-in. */
  remove(): void {
    rmSync(this.path, { force: true });
  }

  /**
   * Runs `work` holding the lock file, waiting (up to `waitMs`) while another process holds it;
   * a lock of a process that is gone, or older than any sign-in, is taken over.
   */
  async withLock<T>(work: () => Promise<T>, waitMs = STALE_LOCK_MS): Promise<T> {
    this.ensureDirectory();
    const started = this.seams.now();
    for (;;) {
      try {
        const fd = openSync(this.lockPath, 'wx', 0o600);
        writeSync(fd, `${process.pid} ${this.seams.now()}\n`);
        closeSync(fd);
        break;
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      }
      if (this.lockIsStale()) {
        rmSync(this.lockPath, { force: true });
        continue;
      }
      if (this.seams.now() - started >= waitMs) {
        throw new CacheError(
          `another sasl-gate token is signing in or refreshing (it holds ${this.lockPath}; remove that file if no such process runs)`,
          { temporary: true },
        );
      }
      await this.seams.sleep(100);
    }
    try {
      return await work();
    } finally {
      rmSync(this.lockPath, { force: true });
    }
  }

  private lockIsStale(): boolean {
    let text: string;
    try {
      // A lock is a plain file this command wrote; a link or a pipe in its place is no lock.
      if (!lstatSync(this.lockPath).isFile()) return true;
      text = readFileSync(this.lockPath, 'utf8');
    } catch {
      // Gone in the meantime: the next attempt takes it.
      return false;
    }
    const [pidText, sinceText] = text.trim().split(' ');
    const pid = Number(pidText);
    const since = Number(sinceText);
    if (!Number.isSafeInteger(pid) || pid <= 0 || !Number.isFinite(since)) return true;
    return !this.seams.alive(pid) || this.seams.now() - since > STALE_LOCK_MS;
  }

  /**
   * The directory, 0700, created when missing; an existing one is narrowed to 0700. One that
   * another user owns is refused: its owner could read, replace or plant a sign-in.
   */
  private ensureDirectory(): void {
    mkdirSync(this.directory, { recursive: true, mode: 0o700 });
    const found = statSync(this.directory);
    if (!found.isDirectory()) throw new CacheError(`${this.directory} is not a directory`);
    if (!ownedByMe(found.uid)) {
      throw new CacheError(`${this.directory} belongs to another user (uid ${found.uid}): remove it, or set XDG_CACHE_HOME to a directory of your own`);
    }
    if ((found.mode & 0o077) !== 0) chmodSync(this.directory, 0o700);
  }
}

/** Whether a file's owner is this process's user (always, where the system has no user ids). */
function ownedByMe(uid: number): boolean {
  const mine = process.getuid?.();
  return mine === undefined || uid === mine;
}

/**
 * Reads a saved sign-in without following a symbolic link or waiting on a pipe; refuses a file
 * another user owns (it could hold someone else's sign-in) and narrows one others may read.
 */
function readOwnFile(path: string): string {
  const fd = openSync(path, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
  try {
    const found = fstatSync(fd);
    if (!found.isFile()) throw new CacheError(`${path} is not a regular file`);
    if (!ownedByMe(found.uid)) throw new CacheError(`${path} belongs to another user (uid ${found.uid}): remove it`);
    if ((found.mode & 0o077) !== 0) fchmodSync(fd, 0o600);
    return readFileSync(fd, 'utf8');
  } finally {
    closeSync(fd);
  }
}

function isSavedSignIn(value: unknown): value is SavedSignIn {
  if (value === null || typeof value !== 'object') return false;
  const v = value as Record<string, unknown>;
  const optionalString = (name: string) => v[name] === undefined || typeof v[name] === 'string';
  return (
    v['version'] === FORMAT_VERSION &&
    typeof v['issuer'] === 'string' &&
    typeof v['clientId'] === 'string' &&
    typeof v['user'] === 'string' &&
    optionalString('refreshToken') &&
    optionalString('accessToken') &&
    optionalString('signedInAs') &&
    (v['expiresAt'] === undefined || typeof v['expiresAt'] === 'number')
  );
}

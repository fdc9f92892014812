/** Server keys kept in files: read from the admin's file, or generated once in storage.dir. */
import { randomBytes } from 'node:crypto';
import { readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ensureStorageDir, StorageError } from './database.js';

/** The shortest key accepted: 256 bits. */
export const MIN_KEY_BYTES = 32;

/**
 * The key in `keyFile` (at least {@link MIN_KEY_BYTES} bytes), or the one in `<dir>/<name>`,
 * generated (32 random bytes, mode 0600) the first time.
 */
export function loadOrCreateKey(options: { keyFile: string | undefined; dir: string; name: string; setting: string }): Buffer {
  if (options.keyFile !== undefined) return readKey(options.keyFile, options.setting);
  ensureStorageDir(options.dir);
  const path = join(options.dir, options.name);
  try {
    // `wx`: never overwrite a key another process wrote a moment ago (that would orphan every hash).
    writeFileSync(path, randomBytes(MIN_KEY_BYTES), { flag: 'wx', mode: 0o600 });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') {
      throw new StorageError(`cannot create the key ${path}: ${(err as Error).message}`, { cause: err });
    }
  }
  return readKey(path, `the generated key ${path}`);
}

function readKey(path: string, setting: string): Buffer {
  let key: Buffer;
  try {
    const stat = statSync(path);
    if (!stat.isFile()) throw new StorageError(`${setting}: ${path} is not a file`);
    // Any local account could read (or replace) a key others may access: refuse it rather than use it.
    if ((stat.mode & 0o007) !== 0) {
      throw new StorageError(`${setting}: ${path} is accessible to every local user (mode 0${(stat.mode & 0o777).toString(8)}): chmod o= it (0600 or 0640)`);
    }
    key = readFileSync(path);
  } catch (err) {
    if (err instanceof StorageError) throw err;
    throw new StorageError(`${setting}: cannot read ${path}: ${(err as Error).message}`, { cause: err });
  }
  if (key.length < MIN_KEY_BYTES) throw new StorageError(`${setting}: ${path} holds ${key.length} bytes; a key needs at least ${MIN_KEY_BYTES}`);
  return key;
}

import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { Directory, type DirectoryState } from '../../../src/directory/directory.js';
import type { DirectoryUser } from '../../../src/directory/model.js';
import { DirectoryStore, DirectoryStoreError } from '../../../src/directory/store.js';

function user(id: string, mailbox: string, extra: Partial<DirectoryUser> = {}): DirectoryUser {
  return { id, mailbox, aliases: [], active: true, groups: [], ...extra };
}

function state(n: number, tag = 'x'): DirectoryState {
  return {
    snapshot: {
      source: 'test',
      fetchedAt: '2024-05-01T00:00:00.000Z',
      users: Array.from({ length: n }, (_, i) => user(`${tag}${i}`, `${tag}${i}@example.org`, { aliases: [`${tag}${i}.alias@example.org`] })),
    },
    departed: [],
  };
}

let dir: string;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'sasl-gate-store-'));
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

describe('DirectoryStore', () => {
  it('has nothing to load before the first save', async () => {
    expect(await new DirectoryStore(join(dir, 'directory.json')).load()).toBeUndefined();
  });

  it('saves a private file, creating its directory, and loads the same state back', async () => {
    const file = join(dir, 'state', 'sub', 'directory.json');
    const store = new DirectoryStore(file);
    const saved: DirectoryState = {
      ...state(3),
      departed: [{ user: user('gone', 'gone@example.org', { active: false, groups: ['mail'] }), since: '2024-04-30T12:00:00.000Z' }],
    };
    await store.save(saved);
    expect(statSync(file).mode & 0o777).toBe(0o600);
    expect(statSync(join(dir, 'state')).mode & 0o077).toBe(0);
    expect(await store.load()).toEqual(saved);
    expect(JSON.parse(readFileSync(file, 'utf8'))).toMatchObject({ format: 'sasl-gate-directory', version: 1 });
  });

  it('replaces the file by renaming a complete new one over it, leaving no temporary files', async () => {
    const file = join(dir, 'directory.json');
    const store = new DirectoryStore(file);
    await store.save(state(2, 'a'));
    const before = statSync(file).ino;
    await store.save(state(2, 'b'));
    // A new inode: the old file was never opened for writing, so a crash mid-save leaves it whole.
    expect(statSync(file).ino).not.toBe(before);
    expect(readdirSync(dir)).toEqual(['directory.json']);
    expect((await store.load())?.snapshot.users[0]?.id).toBe('b0');
  });

  it('never shows a reader a partial file while saves follow each other, and ends with the newest state', async () => {
    const file = join(dir, 'directory.json');
    const store = new DirectoryStore(file);
    await store.save(state(500, 'first'));
    let reads = 0;
    let writing = true;
    const reader = (async () => {
      while (writing) {
        const parsed = JSON.parse(readFileSync(file, 'utf8')) as { snapshot: { users: unknown[] } };
        expect(parsed.snapshot.users).toHaveLength(500);
        reads += 1;
        await new Promise((r) => setImmediate(r));
      }
    })();
    const saves = Array.from({ length: 20 }, (_, i) => store.save(state(500, `s${i}-`)));
    await Promise.all(saves);
    writing = false;
    await reader;
    expect(reads).toBeGreaterThan(0);
    expect((await store.load())?.snapshot.users[0]?.id).toBe('s19-0');
    expect(readdirSync(dir)).toEqual(['directory.json']);
  });

  it('refuses a file that is not JSON, not its format, or malformed, instead of serving part of it', async () => {
    const file = join(dir, 'directory.json');
    const store = new DirectoryStore(file);
    writeFileSync(file, '{"format":"sasl-gate-directory","vers');
    await expect(store.load()).rejects.toBeInstanceOf(DirectoryStoreError);
    writeFileSync(file, JSON.stringify({ hello: 'world' }));
    await expect(store.load()).rejects.toThrow(/not a sasl-gate-directory file/);
    writeFileSync(file, JSON.stringify({ format: 'sasl-gate-directory', version: 2 }));
    await expect(store.load()).rejects.toThrow(/unsupported version 2/);
    writeFileSync(
      file,
      JSON.stringify({
        format: 'sasl-gate-directory',
        version: 1,
        snapshot: { source: 's', fetchedAt: 't', users: [{ id: 1, mailbox: 'x@example.org' }] },
        departed: [],
      }),
    );
    await expect(store.load()).rejects.toThrow(/snapshot.users\[0\] is not a directory user/);
  });

  it('rejects a save that cannot be written, and the old file stays', async () => {
    const file = join(dir, 'directory.json');
    const store = new DirectoryStore(file);
    await store.save(state(1));
    // A directory where the file should be: the rename fails.
    const blocked = new DirectoryStore(join(dir, 'directory.json', 'inner.json'));
    await expect(blocked.save(state(2))).rejects.toThrow();
    expect((await store.load())?.snapshot.users).toHaveLength(1);
  });

  it('lets a restarted directory answer like the one that saved', async () => {
    const clock = { now: Date.parse('2024-05-01T00:00:00Z') };
    const first = new Directory({ graceSeconds: 3600, maxRemovalShare: 1, now: () => clock.now });
    first.replace({
      source: 'authentik',
      fetchedAt: new Date(clock.now).toISOString(),
      users: [user('1', 'alice@example.org', { aliases: ['info@example.org'] }), user('2', 'bob@example.org')],
    });
    first.replace({ source: 'authentik', fetchedAt: new Date(clock.now).toISOString(), users: [user('1', 'alice@example.org', { aliases: ['info@example.org'] })] });
    const store = new DirectoryStore(join(dir, 'directory.json'));
    await store.save(first.exportState());

    clock.now += 60_000;
    const second = new Directory({ graceSeconds: 3600, maxRemovalShare: 1, now: () => clock.now });
    const loaded = await store.load();
    second.restore(loaded!);
    for (const address of ['alice@example.org', 'INFO@example.org', 'bob@example.org', 'nobody@example.org']) {
      expect(second.lookup(address)).toEqual(first.lookup(address));
      expect(second.isLoginAllowed(address)).toBe(first.isLoginAllowed(address));
    }
    expect(second.lookup('bob@example.org').kind).toBe('grace');
    expect(second.stats()).toMatchObject({ loaded: true, source: 'authentik', active: 1, inGrace: 1 });
  });
});

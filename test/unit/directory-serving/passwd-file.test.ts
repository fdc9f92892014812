/**
 * The Dovecot passwd-file userdb written from the directory: its lines, which users it holds
 * (active ones and those in grace, not those past it), atomic replacement with an mtime Dovecot
 * notices, no rewrite without a change, and nothing written while the directory is not loaded.
 */
import { mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { PasswdFileWriter, renderPasswdFile, safeAddress } from '../../../src/directory/dovecot.js';
import type { DirectoryUser } from '../../../src/directory/model.js';
import { MemoryDirectory } from '../../support/memory-directory.js';


const HOUR = 3_600_000;
const user = (id: string, mailbox: string, active = true, aliases: string[] = []): DirectoryUser => ({ id, mailbox, aliases, active, groups: [] });

/** The user names in a passwd-file's text. */
const namesIn = (text: string): string[] =>
  text
    .split('\n')
    .filter((l) => l !== '' && !l.startsWith('#'))
    .map((l) => l.split(':')[0]!);

describe('passwd-file lines', () => {
  it('writes user::uid:gid::home:: with a locked password and userdb_ fields, sorted', () => {
    const { text, count, skipped } = renderPasswdFile(['zoe@example.test', 'carol@example.test'], {
      uid: 5000,
      gid: 5000,
      home: '/var/mail/{domain}/{local}/home',
      fields: { mail: 'maildir:/var/mail/{domain}/{local}', quota_rule: '*:storage=1G' },
    });
    expect(count).toBe(2);
    expect(skipped).toEqual([]);
    const lines = text.split('\n').filter((l) => l !== '' && !l.startsWith('#'));
    expect(lines).toEqual([
      'carol@example.test:{CRYPT}!:5000:5000::/var/mail/example.test/carol/home::userdb_mail=maildir:/var/mail/example.test/carol userdb_quota_rule=*:storage=1G',
      'zoe@example.test:{CRYPT}!:5000:5000::/var/mail/example.test/zoe/home::userdb_mail=maildir:/var/mail/example.test/zoe userdb_quota_rule=*:storage=1G',
    ]);
    expect(text.startsWith('#')).toBe(true);
  });

  it('leaves uid, gid and home empty when not configured (Dovecot\'s mail_uid, mail_gid, mail_home apply)', () => {
    const { text } = renderPasswdFile(['carol@example.test'], {});
    expect(namesIn(text)).toEqual(['carol@example.test']);
    expect(text).toContain('\ncarol@example.test:{CRYPT}!::::::\n');
  });

  it.each([
    'no-at-sign',
    'Carol@example.test',
    'a:b@example.test',
    'a b@example.test',
    '../../etc@example.test',
    '.hidden@example.test',
    'a..b@example.test',
    'a/b@example.test',
    'a%d@example.test',
    'a@exa_mple.test',
    'line\nbreak@example.test',
    `${'x'.repeat(65)}@example.test`,
  ])('leaves out the unsafe address %j', (address) => {
    expect(safeAddress(address)).toBeUndefined();
    const { count, skipped } = renderPasswdFile([address, 'ok@example.test'], { home: '/home/{local}' });
    expect(count).toBe(1);
    expect(skipped).toEqual([address]);
  });

  it('accepts ordinary addresses', () => {
    for (const a of ['carol@example.test', 'first.last+tag@mail.example.co.uk', "o'brien@example.test", 'x_y-z@a-b.example']) {
      expect(safeAddress(a)).toBeDefined();
    }
  });

  it('refuses bad options at construction', () => {
    const d = new MemoryDirectory();
    expect(() => new PasswdFileWriter(d, { path: '/tmp/x', uid: 0 })).toThrow(/uid/);
    expect(() => new PasswdFileWriter(d, { path: '/tmp/x', home: 'relative/{local}' })).toThrow(/home/);
    expect(() => new PasswdFileWriter(d, { path: '/tmp/x', fields: { mail: 'a b' } })).toThrow(/whitespace/);
    expect(() => new PasswdFileWriter(d, { path: '/tmp/x', fields: { 'bad name': 'x' } })).toThrow(/field name/);
  });
});

describe('PasswdFileWriter', () => {
  let dir: string;
  let writer: PasswdFileWriter | undefined;

  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'sasl-gate-passwd-'));
  });

  afterEach(async () => {
    await writer?.stop();
    writer = undefined;
    await rm(dir, { recursive: true, force: true });
  });

  const start = async (d: MemoryDirectory, extra: Partial<ConstructorParameters<typeof PasswdFileWriter>[1]> = {}): Promise<PasswdFileWriter> => {
    writer = new PasswdFileWriter(d, { path: join(dir, 'users'), uid: 5000, gid: 5000, refreshIntervalMs: 60_000, now: () => d.now(), ...extra });
    await writer.start();
    return writer;
  };

  const read = async (): Promise<string[]> => namesIn(await readFile(join(dir, 'users'), 'utf8'));

  it('holds active users and users in grace, not users past it nor aliases', async () => {
    const d = new MemoryDirectory(HOUR);
    d.upsert(user('1', 'carol@example.test', true, ['info@example.test']));
    d.upsert(user('2', 'dave@example.test'));
    d.upsert(user('3', 'erin@example.test'));
    const w = await start(d);
    expect(await read()).toEqual(['carol@example.test', 'dave@example.test', 'erin@example.test']);

    d.upsert(user('2', 'dave@example.test', false));
    d.remove('3');
    expect(await w.refresh()).toBe(false);
    // In grace both stay, although erin is gone from list().
    expect(await read()).toEqual(['carol@example.test', 'dave@example.test', 'erin@example.test']);

    d.offsetMs = 2 * HOUR;
    expect(await w.refresh()).toBe(true);
    expect(await read()).toEqual(['carol@example.test']);
  });

  it('replaces the file atomically with a newer mtime each time, even within one second and at equal size', async () => {
    const d = new MemoryDirectory();
    d.upsert(user('1', 'bob@example.test'));
    const w = await start(d, { mode: 0o640 });
    const path = join(dir, 'users');
    const first = await stat(path);
    expect(first.mode & 0o777).toBe(0o640);

    // Same length, different content: Dovecot compares mtime seconds and size only.
    d.remove('1');
    d.upsert(user('2', 'rob@example.test'));
    expect(await w.refresh()).toBe(true);
    const second = await stat(path);
    expect(second.size).toBe(first.size);
    expect(Math.floor(second.mtimeMs / 1000)).toBeGreaterThan(Math.floor(first.mtimeMs / 1000));
    expect(second.ino).not.toBe(first.ino);
    expect(await read()).toEqual(['rob@example.test']);
    // No temp files left behind.
    expect(await readdir(dir)).toEqual(['users']);
  });

  it('does not rewrite an unchanged file, not even across a restart', async () => {
    const d = new MemoryDirectory();
    d.upsert(user('1', 'carol@example.test'));
    const w = await start(d);
    const before = await stat(join(dir, 'users'));
    expect(await w.refresh()).toBe(false);
    await w.stop();
    writer = undefined;
    await start(d);
    const after = await stat(join(dir, 'users'));
    expect(after.ino).toBe(before.ino);
    expect(after.mtimeMs).toBe(before.mtimeMs);
  });

  it('writes nothing while the directory is not loaded (an empty directory must not empty the file)', async () => {
    await writeFile(join(dir, 'users'), 'carol@example.test:{CRYPT}!:5000:5000::::\n');
    const d = new MemoryDirectory();
    d.ready = false;
    const w = await start(d);
    expect(await w.refresh()).toBe(false);
    expect(await read()).toEqual(['carol@example.test']);
    d.ready = true;
    expect(await w.refresh()).toBe(true);
    expect(await read()).toEqual([]);
  });

  it('folds a burst of schedule() calls into one write after the quiet time', async () => {
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout'] });
    try {
      const d = new MemoryDirectory();
      const w = await start(d, { debounceMs: 50 });
      const before = (await stat(join(dir, 'users'))).mtimeMs;
      for (let i = 0; i < 5; i++) {
        d.upsert(user(String(i), `user${i}@example.test`));
        w.schedule();
        await vi.advanceTimersByTimeAsync(10);
      }
      // Quiet for less than debounceMs since the last call: nothing written yet.
      await vi.advanceTimersByTimeAsync(39);
      expect(await read()).toEqual([]);
      await vi.advanceTimersByTimeAsync(1);
      await vi.waitFor(async () =>
        expect(await read()).toEqual(['user0@example.test', 'user1@example.test', 'user2@example.test', 'user3@example.test', 'user4@example.test']),
      );
      await vi.advanceTimersByTimeAsync(1_000);
      const after = (await stat(join(dir, 'users'))).mtimeMs;
      // One write: the mtime moved by exactly one second.
      expect(Math.floor(after / 1000) - Math.floor(before / 1000)).toBe(1);
    } finally {
      vi.useRealTimers();
    }
  });

  it('leaves the file as it was when the directory fails, and logs failures of checks nobody awaits', async () => {
    const d = new MemoryDirectory();
    d.upsert(user('1', 'carol@example.test'));
    const errors: unknown[] = [];
    const log = { info: () => undefined, warn: () => undefined, debug: () => undefined, error: (o: unknown) => void errors.push(o) };
    const w = await start(d, { debounceMs: 10, log });
    d.lookup = () => {
      throw new Error('directory broke');
    };
    d.upsert(user('2', 'dave@example.test'));
    await expect(w.refresh()).rejects.toThrow('directory broke');
    expect(await read()).toEqual(['carol@example.test']);
    w.schedule();
    await vi.waitFor(() => expect(errors).toEqual([expect.objectContaining({ event: 'passwd_file_refresh_failed' })]));
    expect(await readdir(dir)).toEqual(['users']);
  });

  it('fails to start when the file cannot be written', async () => {
    const w = new PasswdFileWriter(new MemoryDirectory(), { path: join(dir, 'missing-dir', 'users') });
    await expect(w.start()).rejects.toThrow(/ENOENT/);
    await w.stop();
  });

  it('rewrites by itself when a grace period ends', async () => {
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout'] });
    try {
      const d = new MemoryDirectory(1_500);
      d.upsert(user('1', 'carol@example.test'));
      await start(d);
      d.upsert(user('1', 'carol@example.test', false));
      await writer!.refresh();
      expect(await read()).toEqual(['carol@example.test']);
      // The grace timer fires a second after the end of the grace period, on the directory's clock.
      d.offsetMs = 2_500;
      await vi.advanceTimersByTimeAsync(2_499);
      expect(await read()).toEqual(['carol@example.test']);
      await vi.advanceTimersByTimeAsync(1);
      await vi.waitFor(async () => expect(await read()).toEqual([]));
    } finally {
      vi.useRealTimers();
    }
  });
});

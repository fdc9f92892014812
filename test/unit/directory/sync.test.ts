import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { Directory } from '../../../src/directory/directory.js';
import type { DirectorySource, DirectoryUser } from '../../../src/directory/model.js';
import { DirectoryStore } from '../../../src/directory/store.js';
import { DirectorySync, type DirectoryLogger } from '../../../src/directory/sync.js';

function user(id: string, active = true): DirectoryUser {
  return { id, mailbox: `${id}@example.org`, aliases: [], active, groups: [] };
}

/** A source whose answer the test sets: a user list, or an error. */
class FakeSource implements DirectorySource {
  readonly name = 'fake';
  calls = 0;
  answer: DirectoryUser[] | Error = [];
  async fetchAll(): Promise<DirectoryUser[]> {
    this.calls += 1;
    if (this.answer instanceof Error) throw this.answer;
    return this.answer;
  }
}

function recordingLogger() {
  const lines: Array<{ level: string; msg: string; obj: Record<string, unknown> }> = [];
  const at =
    (level: string) =>
    (obj: object, msg: string): void => {
      lines.push({ level, msg, obj: obj as Record<string, unknown> });
    };
  const logger: DirectoryLogger = { info: at('info'), warn: at('warn'), error: at('error') };
  return { logger, lines };
}

let dir: string;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'sasl-gate-sync-'));
});
afterEach(() => {
  vi.useRealTimers();
  rmSync(dir, { recursive: true, force: true });
});

const team = (n: number) => Array.from({ length: n }, (_, i) => user(`u${i}`));

describe('DirectorySync', () => {
  it('applies a good sync and saves it; a failing source leaves the last good set served and unsaved', async () => {
    const directory = new Directory({ graceSeconds: 60, maxRemovalShare: 0.2 });
    const source = new FakeSource();
    const store = new DirectoryStore(join(dir, 'directory.json'));
    const { logger, lines } = recordingLogger();
    const sync = new DirectorySync({ directory, source, store, intervalSeconds: 300, logger });

    source.answer = team(5);
    const first = await sync.syncNow();
    expect(first).toMatchObject({ ok: true, result: { applied: true, added: 5 } });
    expect((await store.load())?.snapshot.users).toHaveLength(5);
    expect(lines.at(-1)).toMatchObject({ level: 'info', msg: 'directory synced', obj: { source: 'fake', added: 5 } });

    source.answer = new Error('GET https://auth.example.org/api/v3/core/users/ failed: connect ECONNREFUSED');
    const second = await sync.syncNow();
    expect(second).toMatchObject({ ok: false, error: expect.stringContaining('ECONNREFUSED') });
    expect(directory.lookup('u3@example.org').kind).toBe('mailbox');
    expect(lines.at(-1)).toMatchObject({
      level: 'warn',
      msg: 'directory sync failed; serving the last good set',
      obj: { reason: expect.stringContaining('ECONNREFUSED'), consecutiveFailures: 1, servingUsers: 5 },
    });
    expect(sync.status()).toMatchObject({ consecutiveFailures: 1, lastError: expect.stringContaining('ECONNREFUSED') });
    expect((await store.load())?.snapshot.users).toHaveLength(5);
  });

  it('logs a held-back set, keeps the old one on disk, and applies it when forced', async () => {
    const directory = new Directory({ graceSeconds: 60, maxRemovalShare: 0.2 });
    const source = new FakeSource();
    const store = new DirectoryStore(join(dir, 'directory.json'));
    const { logger, lines } = recordingLogger();
    const sync = new DirectorySync({ directory, source, store, intervalSeconds: 300, logger });
    source.answer = team(10);
    await sync.syncNow();

    source.answer = team(10).slice(5);
    expect(await sync.syncNow()).toMatchObject({ ok: true, result: { applied: false, removals: 5 } });
    expect(lines.at(-1)).toMatchObject({
      level: 'warn',
      obj: { removals: 5, activeBefore: 10, share: 0.5, maxRemovalShare: 0.2, sample: expect.arrayContaining(['u0@example.org']) },
    });
    expect(sync.status().heldSince).toBeDefined();
    expect((await store.load())?.snapshot.users).toHaveLength(10);

    expect(await sync.syncNow({ force: true })).toMatchObject({ ok: true, result: { applied: true, removed: 5 } });
    expect((await store.load())?.snapshot.users).toHaveLength(5);
    expect(sync.status().heldSince).toBeUndefined();
  });

  it('serves the saved set at start while the source is down', async () => {
    const file = join(dir, 'directory.json');
    const before = new Directory({ graceSeconds: 60, maxRemovalShare: 0.2 });
    before.replace({ source: 'fake', fetchedAt: new Date().toISOString(), users: team(3) });
    await new DirectoryStore(file).save(before.exportState());

    const directory = new Directory({ graceSeconds: 60, maxRemovalShare: 0.2 });
    const source = new FakeSource();
    source.answer = new Error('down');
    const { logger, lines } = recordingLogger();
    const sync = new DirectorySync({ directory, source, store: new DirectoryStore(file), intervalSeconds: 300, logger });
    const outcome = await sync.start();
    sync.stop();
    expect(outcome.ok).toBe(false);
    expect(directory.isLoaded()).toBe(true);
    expect(directory.lookup('u1@example.org').kind).toBe('mailbox');
    expect(lines.map((l) => l.msg)).toEqual(['directory loaded from the state file', 'directory sync failed; serving the last good set']);
  });

  it('logs an unusable state file and goes on', async () => {
    const file = join(dir, 'directory.json');
    const { writeFileSync } = await import('node:fs');
    writeFileSync(file, 'not json');
    const directory = new Directory({ graceSeconds: 60, maxRemovalShare: 0.2 });
    const source = new FakeSource();
    source.answer = team(2);
    const { logger, lines } = recordingLogger();
    const sync = new DirectorySync({ directory, source, store: new DirectoryStore(file), intervalSeconds: 300, logger });
    expect(await sync.start()).toMatchObject({ ok: true });
    sync.stop();
    expect(lines[0]).toMatchObject({ level: 'error', msg: 'could not load the saved directory' });
    expect(directory.stats().active).toBe(2);
  });

  it('joins concurrent syncs into one source call', async () => {
    const directory = new Directory({ graceSeconds: 60, maxRemovalShare: 0.2 });
    const source = new FakeSource();
    source.answer = team(2);
    const sync = new DirectorySync({ directory, source, intervalSeconds: 300 });
    const [a, b] = await Promise.all([sync.syncNow(), sync.syncNow()]);
    expect(a).toBe(b);
    expect(source.calls).toBe(1);
  });

  it('syncs on a jittered schedule, retrying a failing source sooner with backoff', async () => {
    vi.useFakeTimers();
    const directory = new Directory({ graceSeconds: 60, maxRemovalShare: 0.2 });
    const source = new FakeSource();
    source.answer = team(2);
    let random = 1; // the longest jitter: +10 %
    const sync = new DirectorySync({ directory, source, intervalSeconds: 100, retrySeconds: 10, jitter: 0.1, random: () => random });
    await sync.start();
    expect(source.calls).toBe(1);
    expect(Date.parse(sync.status().nextSyncAt!) - Date.now()).toBe(110_000);

    await vi.advanceTimersByTimeAsync(109_999);
    expect(source.calls).toBe(1);
    random = 0; // the shortest: -10 %
    source.answer = new Error('down');
    await vi.advanceTimersByTimeAsync(1);
    expect(source.calls).toBe(2);
    // First retry after 10 s (-10 %), then 20 s, 40 s, 80 s, then capped at the interval.
    await vi.advanceTimersByTimeAsync(9_000);
    expect(source.calls).toBe(3);
    await vi.advanceTimersByTimeAsync(18_000);
    expect(source.calls).toBe(4);
    await vi.advanceTimersByTimeAsync(36_000);
    expect(source.calls).toBe(5);
    await vi.advanceTimersByTimeAsync(72_000);
    expect(source.calls).toBe(6);
    await vi.advanceTimersByTimeAsync(89_999);
    expect(source.calls).toBe(6);
    source.answer = team(2);
    await vi.advanceTimersByTimeAsync(1);
    expect(source.calls).toBe(7);
    expect(sync.status()).toMatchObject({ consecutiveFailures: 0, lastError: undefined });

    sync.stop();
    await vi.advanceTimersByTimeAsync(1_000_000);
    expect(source.calls).toBe(7);
  });
});

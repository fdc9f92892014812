import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { openAppPasswordService, type SqliteAppPasswordService } from '../../../src/auth/app-passwords-sqlite.js';
import { revokeAppPasswordsOnDeparture } from '../../../src/directory/app-passwords.js';
import { Directory, type DirectoryEvent } from '../../../src/directory/directory.js';
import type { DirectoryUser } from '../../../src/directory/model.js';

const user = (id: string, mailbox: string, extra: Partial<DirectoryUser> = {}): DirectoryUser => ({ id, mailbox, aliases: [], active: true, groups: [], ...extra });
const snap = (users: DirectoryUser[]) => ({ source: 'test', fetchedAt: '2026-05-01T00:00:00.000Z', users });

let dir: string;
let store: SqliteAppPasswordService;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'sasl-gate-dir-apppw-'));
  store = openAppPasswordService({ dir, keyFile: undefined, defaultProtocols: ['imap', 'smtp'], maxPerUser: 10, lastUseWriteSeconds: 300 });
});
afterEach(async () => {
  await store.close();
  rmSync(dir, { recursive: true, force: true });
});

function setup() {
  const events: DirectoryEvent[] = [];
  const directory = new Directory({ graceSeconds: 3600, maxRemovalShare: 1, onEvent: (e) => events.push(e) });
  const logged: string[] = [];
  revokeAppPasswordsOnDeparture(directory, store, pino({}, { write: (l: string) => void logged.push(l) }));
  return { directory, events, logged };
}

/** Lets the revocations, started from a synchronous event, finish. */
const settled = () => new Promise((resolve) => setImmediate(resolve));
const labels = async (name: string) => (await store.list(name)).map((r) => r.label);

describe('app passwords end with their directory user', () => {
  it('a sync that disables one user and drops another revokes theirs, under mailbox and aliases; others keep theirs', async () => {
    const { directory, events } = setup();
    directory.replace(snap([user('1', 'alice@example.org', { aliases: ['a@example.org'] }), user('2', 'bob@example.org'), user('3', 'carol@example.org')]));
    await store.create({ user: 'alice@example.org', label: 'phone' });
    await store.create({ user: 'A@example.org', label: 'alias' });
    await store.create({ user: 'bob@example.org', label: 'phone' });
    await store.create({ user: 'carol@example.org', label: 'phone' });
    directory.replace(snap([user('1', 'alice@example.org', { aliases: ['a@example.org'], active: false }), user('3', 'carol@example.org')]));
    await settled();
    expect(events.filter((e) => e.type === 'departed').map((e) => e.type === 'departed' && [e.user.mailbox, e.how])).toEqual([
      ['bob@example.org', 'removed'],
      ['alice@example.org', 'disabled'],
    ]);
    // The change's own event stays last.
    expect(events.at(-1)?.type).toBe('replaced');
    expect(await labels('alice@example.org')).toEqual([]);
    expect(await labels('a@example.org')).toEqual([]);
    expect(await labels('bob@example.org')).toEqual([]);
    expect(await labels('carol@example.org')).toEqual(['phone']);
    expect(store.history('bob@example.org')[0]?.revokedBy).toBe('directory');
  });

  it('a SCIM-style deactivation and deletion revoke at once; a user moving to a new id with the same mailbox keeps them', async () => {
    const { directory } = setup();
    directory.upsert(user('1', 'alice@example.org'));
    directory.upsert(user('2', 'bob@example.org'));
    await store.create({ user: 'alice@example.org', label: 'phone' });
    await store.create({ user: 'bob@example.org', label: 'phone' });
    directory.upsert(user('1', 'alice@example.org', { active: false }));
    directory.remove('2');
    await settled();
    expect(await labels('alice@example.org')).toEqual([]);
    expect(await labels('bob@example.org')).toEqual([]);

    directory.replace(snap([user('3', 'carol@example.org')]));
    await store.create({ user: 'carol@example.org', label: 'phone' });
    directory.replace(snap([user('carol-new-id', 'carol@example.org')]));
    await settled();
    expect(await labels('carol@example.org')).toEqual(['phone']);
  });
});

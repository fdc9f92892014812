/**
 * What an attacker (or an unlucky admin) tries against the state replicas share in a real
 * PostgreSQL: one user or one address under many spellings, hostile text through every query, and
 * a leaseholder that froze mid-sync and woke up after another replica had synced a newer set.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { PostgresAppPasswordService } from '../../src/auth/app-passwords-postgres.js';
import { Directory } from '../../src/directory/directory.js';
import type { DirectoryUser } from '../../src/directory/model.js';
import { DirectoryLease, followSharedDirectory, PostgresDirectoryStore } from '../../src/directory/shared.js';
import { DirectorySync } from '../../src/directory/sync.js';
import { FailureTracker } from '../../src/login/failures.js';
import { PostgresFailureStore } from '../../src/login/failures-postgres.js';
import { openPostgres, PostgresPool } from '../../src/storage/postgres.js';
import { startPostgres, type PostgresInstance } from '../../tools/postgres.js';
import { secret } from '../support/evidence.js';
import { sleep, waitFor } from '../support/wait.js';

let postgres: PostgresInstance;
let admin: PostgresPool;
const dir = mkdtempSync(join(tmpdir(), 'sasl-gate-pgattack-'));
const settings = () => ({ url: postgres.url, maxConnections: 4, timeoutSeconds: 3 });

beforeAll(async () => {
  postgres = await startPostgres();
  secret(postgres.password, 'PostgreSQL password');
  admin = await openPostgres(settings());
}, 60_000);
afterAll(async () => {
  await admin?.close();
  await postgres?.stop();
  rmSync(dir, { recursive: true, force: true });
});

describe('failure keys', () => {
  const clock = { now: Date.parse('2026-05-01T10:00:00Z') };
  const options = { baseDelayMs: 500, maxDelayMs: 15_000, forgetAfterMs: 15 * 60_000, now: () => clock.now };

  it('count one user under any case and one address under any IPv6 notation as one process does', async () => {
    await admin.query('TRUNCATE auth_failures');
    const shared = new PostgresFailureStore(admin, options);
    const memory = new FailureTracker(options);
    const long = 'v'.repeat(300);
    // [address, user]: each row spells the same address or user differently from the others.
    const attempts: Array<[string, string | undefined]> = [
      ['2001:db8:0:1::1', 'Alice@Example.test'],
      ['2001:DB8:0:1:0:0:0:2', 'ALICE@EXAMPLE.TEST'],
      ['[2001:db8:0:1::3]', 'alice@example.test'],
      ['2001:db8:0:1::4%eth0', 'Åsa'],
      ['2001:0db8:0000:0001::5', 'A\u030asa'],
      ['::ffff:192.0.2.9', `${long}x`],
      ['192.0.2.9', `${long}y`],
      ['::FFFF:c000:209', undefined],
      ['2001:db8:0:1::6', 'ALİCE'],
    ];
    for (const [address, user] of attempts) {
      clock.now += 10;
      expect({ address, user, delay: await shared.failed(address, user) }).toEqual({ address, user, delay: await memory.failed(address, user) });
    }
    // The last attempt for the /64 waited as long as six failures from it, whichever spelling.
    expect(await shared.failed('2001:db8:0:1:ffff::1', 'nobody')).toBe(15_000);
    const { rows } = await admin.query<{ kind: string; key: string; failures: number }>("SELECT kind, key, failures FROM auth_failures WHERE kind = 'a' ORDER BY key");
    expect(rows).toEqual([
      { kind: 'a', key: '192.0.2.9', failures: 3 },
      { kind: 'a', key: '2001:db8:0:1::/64', failures: 7 },
    ]);
  });
  it('a replica whose clock runs ahead neither restarts the counts nor prunes every replica’s rows', async () => {
    await admin.query('TRUNCATE auth_failures');
    // As serve opens them: no injected clock.
    const replicaA = new PostgresFailureStore(admin, { baseDelayMs: 500, maxDelayMs: 60_000 });
    for (const expected of [500, 1000, 2000]) expect(await replicaA.failed('203.0.113.5', 'dave')).toBe(expected);
    vi.useFakeTimers({ toFake: ['Date'] });
    try {
      // Replica B's clock is twenty minutes ahead (more than the fifteen a count lasts).
      vi.setSystemTime(Date.now() + 20 * 60_000);
      const replicaB = new PostgresFailureStore(admin, { baseDelayMs: 500, maxDelayMs: 60_000 });
      expect(await replicaB.failed('203.0.113.5', 'dave')).toBe(4000);
      await replicaB.prune();
    } finally {
      vi.useRealTimers();
    }
    expect(await replicaA.failed('203.0.113.5', 'dave')).toBe(8000);
  });
});

describe('hostile text through every query', () => {
  const hostile = ["o'brien", 'back\\slash', "x'); DROP TABLE auth_failures; --", '"quoted"', '$1', 'nul\u0000byte', '\ud800lone', 'h'.repeat(1 << 20)];

  it('failure counts: each is a value, a name PostgreSQL cannot store gets the longest delay, and the table stays', async () => {
    await admin.query('TRUNCATE auth_failures');
    const shared = new PostgresFailureStore(admin, { baseDelayMs: 500, maxDelayMs: 15_000 });
    for (const user of hostile) {
      const delay = await shared.failed('198.51.100.1', user);
      // NUL is refused by PostgreSQL: no count, but the longest delay (never zero).
      expect({ user: user.slice(0, 40), delay }).toEqual({ user: user.slice(0, 40), delay: user.includes('\u0000') ? 15_000 : expect.any(Number) });
      expect(delay).toBeGreaterThan(0);
      await shared.succeeded('198.51.100.1', user);
    }
    const { rows } = await admin.query<{ key: string }>("SELECT key FROM auth_failures WHERE kind = 'a'");
    expect(rows).toEqual([{ key: '198.51.100.1' }]);
    // A name PostgreSQL refused did not start the fail-fast second: the next login counts normally.
    await shared.failed('198.51.100.2', 'nul\u0000byte');
    expect(await shared.failed('198.51.100.3', 'carol')).toBe(500);
  });

  it('app passwords: labels and names are stored as given, and a refused name is only this login’s failure', async () => {
    await admin.query('TRUNCATE app_passwords');
    const service = new PostgresAppPasswordService(admin, Buffer.alloc(32, 3), { defaultProtocols: ['imap'], maxPerUser: 50, lastUseWriteSeconds: 60, flushTimer: false });
    const labels = ["o'brien's phone", 'back\\slash', "x'); DELETE FROM app_passwords; --", '$1 $2'];
    const created = [];
    for (const label of labels) created.push(await service.create({ user: "o'brien@example.test", label, createdBy: 'user' }));
    expect((await service.list("O'BRIEN@example.test")).map((r) => r.label).sort()).toEqual([...labels].sort());
    for (const user of hostile) {
      const outcome = await service.verify(user, created[0]!.password, 'imap', '198.51.100.1').then(
        (found) => ({ found: found?.id }),
        (err: Error) => ({ rejected: err.name }),
      );
      // Never a match for another user's password; at worst a temporary failure for this one name.
      expect(outcome).not.toHaveProperty('found', expect.any(String));
    }
    // ...and the owner logs in at once afterwards (no fail-fast window was started by them).
    expect((await service.verify("o'brien@example.test", created[0]!.password, 'imap', '198.51.100.1'))?.id).toBe(created[0]!.record.id);
    expect(await service.revokeByLabel("o'brien@example.test", "x'); DELETE FROM app_passwords; --")).toBe(true);
    expect((await service.list("o'brien@example.test")).length).toBe(labels.length - 1);
    await service.close();
  });
});

describe('the directory lease', () => {
  const user = (name: string, active = true): DirectoryUser => ({ id: name, mailbox: `${name}@example.test`, aliases: [], active, groups: [] });
  const silent = { info() {}, warn() {}, error() {} };

  function replica(ttlMs: number) {
    const pool = new PostgresPool(settings());
    const directory = new Directory({ graceSeconds: 0, maxRemovalShare: 1 });
    const provider: { users: DirectoryUser[]; hold: Promise<void> | undefined } = { users: [], hold: undefined };
    const lease = new DirectoryLease(pool, ttlMs);
    const store = new PostgresDirectoryStore(pool, lease);
    const source = {
      name: 'test',
      fetchAll: async () => {
        const users = provider.users.map((u) => ({ ...u }));
        await provider.hold;
        return users;
      },
    };
    const sync = new DirectorySync({ directory, source, store, intervalSeconds: 3600, lease, logger: silent });
    const stopFollowing = followSharedDirectory(directory, store, 50, silent);
    return { directory, provider, sync, close: async () => (sync.stop(), stopFollowing(), await lease.release(), await pool.close()) };
  }

  it('a leaseholder that froze mid-sync and wakes after another replica synced does not roll the set back', async () => {
    await admin.query('TRUNCATE directory_state, directory_lease');
    const a = replica(300);
    const b = replica(300);
    try {
      // A takes the lease and reads the provider while bob is active, then freezes.
      a.provider.users = [user('alice'), user('bob')];
      let wake = () => {};
      a.provider.hold = new Promise<void>((resolve) => (wake = resolve));
      const frozen = a.sync.syncNow();
      await sleep(500);
      // Meanwhile bob is disabled, A's lease lapses and B syncs that.
      b.provider.users = [user('alice'), user('bob', false)];
      expect((await b.sync.syncNow()).ok).toBe(true);
      await waitFor(() => a.directory.loginVerdict('bob@example.test') === 'disabled', { timeoutMs: 5000, intervalMs: 20, what: 'B’s set at A' });
      // A wakes up with what it read before the freeze.
      wake();
      await frozen;
      // The shared set is still B's, and after a few polls no replica lets bob in.
      await sleep(300);
      const saved = await new PostgresDirectoryStore(admin).load();
      expect(saved?.snapshot.users.find((u) => u.id === 'bob')?.active).toBe(false);
      expect(b.directory.loginVerdict('bob@example.test')).toBe('disabled');
      await waitFor(() => a.directory.loginVerdict('bob@example.test') === 'disabled', { timeoutMs: 5000, intervalMs: 20, what: 'A back on the shared set' });
    } finally {
      await Promise.all([a.close(), b.close()]);
    }
  }, 30_000);
});

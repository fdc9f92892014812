/**
 * The shared state on a real PostgreSQL (Debian's, started by tools/postgres.ts): migrations that
 * two replicas start at once, the app-password contract every store passes, failure delays counted
 * across replicas by FailureTracker's rules, and an outage (the server frozen) that gives temporary
 * failures and the longest delay, then recovery without a restart.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PostgresAppPasswordService } from '../../src/auth/app-passwords-postgres.js';
import { FailureTracker } from '../../src/login/failures.js';
import { PostgresFailureStore } from '../../src/login/failures-postgres.js';
import { Directory } from '../../src/directory/directory.js';
import type { DirectoryUser } from '../../src/directory/model.js';
import { DirectoryLease, followSharedDirectory, PostgresDirectoryStore } from '../../src/directory/shared.js';
import { DirectorySync } from '../../src/directory/sync.js';
import { StorageError } from '../../src/storage/database.js';
import { migratePostgres, openPostgres, POSTGRES_MIGRATIONS, PostgresPool } from '../../src/storage/postgres.js';
import { startPostgres, type PostgresInstance } from '../../tools/postgres.js';
import { appPasswordContract, type ContractService } from '../support/app-password-contract.js';
import { secret } from '../support/evidence.js';
import { sleep, waitFor } from '../support/wait.js';

let postgres: PostgresInstance;
let admin: PostgresPool;
const dir = mkdtempSync(join(tmpdir(), 'sasl-gate-pgstate-'));
const keyFile = join(dir, 'app-passwords.key');
const otherKeyFile = join(dir, 'other.key');
writeFileSync(keyFile, Buffer.alloc(32, 7), { mode: 0o600 });
writeFileSync(otherKeyFile, Buffer.alloc(32, 1), { mode: 0o600 });
const settings = (timeoutSeconds = 3) => ({ url: postgres.url, maxConnections: 4, timeoutSeconds });

beforeAll(async () => {
  postgres = await startPostgres();
  secret(postgres.password, 'PostgreSQL password');
  admin = new PostgresPool(settings());
}, 60_000);
afterAll(async () => {
  await admin?.close();
  await postgres?.stop();
  rmSync(dir, { recursive: true, force: true });
});

describe('migrations', () => {
  it('two replicas starting at once on an empty database apply each step once', async () => {
    const [a, b] = await Promise.all([openPostgres(settings()), openPostgres(settings())]);
    await Promise.all([a.close(), b.close()]);
    const { rows } = await admin.query<{ version: number }>('SELECT version FROM schema_version ORDER BY version');
    expect(rows.map((r) => r.version)).toEqual(POSTGRES_MIGRATIONS.map((m) => m.version));
    // A third start finds nothing to do and fails nothing.
    await (await openPostgres(settings())).close();
  });

  it('refuses a database whose schema is newer than this sasl-gate knows', async () => {
    await expect(migratePostgres(admin, POSTGRES_MIGRATIONS.slice(0, 0))).rejects.toThrow(/newer than this sasl-gate knows/);
  });

  it('a wrong password is a StorageError that never shows the URL', async () => {
    const wrong = postgres.url.replace(postgres.password, 'not-the-password');
    const err = await openPostgres({ url: wrong, maxConnections: 1, timeoutSeconds: 3 }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(StorageError);
    expect(String((err as Error).message)).not.toContain('not-the-password');
    expect(String((err as Error).message)).not.toContain(postgres.password);
  });
});

appPasswordContract('PostgreSQL', {
  setUp: async () => {
    await admin.query('TRUNCATE app_passwords');
  },
  tearDown: async () => {},
  open: async ({ otherKey, flushTimer, ...options }) => {
    const pool = await openPostgres(settings());
    const service = new PostgresAppPasswordService(pool, Buffer.alloc(32, otherKey ? 1 : 7), { defaultProtocols: ['imap', 'smtp', 'pop3', 'sieve'], ...options, flushTimer: flushTimer ?? false });
    const close = service.close.bind(service);
    service.close = async () => {
      await close();
      await pool.close();
    };
    return service as ContractService;
  },
  dump: async () => {
    const { rows } = await admin.query('SELECT * FROM app_passwords');
    return JSON.stringify(rows, (_k, v: unknown) => (v && typeof v === 'object' && (v as { type?: string }).type === 'Buffer' ? Buffer.from((v as { data: number[] }).data).toString('hex') : v));
  },
  storedUse: async (id) => {
    const { rows } = await admin.query<{ at: string | null; address: string | null; protocol: string | null }>(
      'SELECT last_used_at AS at, last_used_address AS address, last_used_protocol AS protocol FROM app_passwords WHERE id = $1',
      [id],
    );
    const row = rows[0]!;
    return { at: row.at === null ? null : Number(row.at), address: row.address, protocol: row.protocol };
  },
});

describe('failure delays in PostgreSQL', () => {
  const clock = { now: Date.parse('2026-05-01T10:00:00Z') };
  const options = { baseDelayMs: 500, maxDelayMs: 15_000, forgetAfterMs: 15 * 60_000, now: () => clock.now };

  it('counts by FailureTracker’s rules, event for event, across two replicas', async () => {
    await admin.query('TRUNCATE auth_failures');
    const [poolA, poolB] = [new PostgresPool(settings()), new PostgresPool(settings())];
    const replicaA = new PostgresFailureStore(poolA, options);
    const replicaB = new PostgresFailureStore(poolB, options);
    const memory = new FailureTracker(options);
    // A script of events alternating between the replicas; the memory tracker sees them all.
    const events: Array<['f' | 's', string, string | undefined, number]> = [
      ['f', '192.0.2.1', 'alice@example.test', 0],
      ['f', '192.0.2.1', 'ALICE@example.test', 1000],
      ['f', '192.0.2.2', 'alice@example.test', 1000],
      ['f', '192.0.2.1', undefined, 1000],
      ['f', '192.0.2.1', 'bob@example.test', 1000],
      ['s', '192.0.2.1', 'alice@example.test', 1000],
      ['f', '192.0.2.3', 'alice@example.test', 1000],
      ['f', '192.0.2.1', 'carol@example.test', 1000],
      ['s', '192.0.2.1', 'carol@example.test', 1000],
      ['f', '192.0.2.1', 'dave@example.test', 1000],
      ['f', '2001:db8::1', 'erin@example.test', 1000],
      ['f', '2001:db8::2', 'erin@example.test', 1000],
      // Past the forgetting time: everything starts again at one.
      ['f', '192.0.2.1', 'alice@example.test', 15 * 60_000],
      ['f', '192.0.2.1', 'alice@example.test', 1000],
    ];
    const delays: Array<[number, number]> = [];
    for (const [kind, address, user, advance] of events) {
      clock.now += advance;
      const replica = delays.length % 2 === 0 ? replicaA : replicaB;
      if (kind === 'f') {
        delays.push([await replica.failed(address, user), await memory.failed(address, user)]);
      } else {
        await replica.succeeded(address, user);
        await memory.succeeded(address, user);
        delays.push([0, 0]);
      }
    }
    expect(delays.map(([shared]) => shared)).toEqual(delays.map(([, local]) => local));
    // Not trivially equal: the delays grew and came back down.
    expect(Math.max(...delays.map(([shared]) => shared))).toBeGreaterThanOrEqual(2000);
    await Promise.all([poolA.close(), poolB.close()]);
  });

  it('stays bounded: stale rows go, and each kind keeps at most maxEntries', async () => {
    await admin.query('TRUNCATE auth_failures');
    const pool = new PostgresPool(settings());
    const store = new PostgresFailureStore(pool, { ...options, maxEntries: 50, pruneEveryFailures: 1_000_000 });
    for (let i = 0; i < 120; i += 1) {
      clock.now += 1;
      await store.failed(`198.51.100.${i % 250}`, `spray${i}@example.test`);
    }
    await store.prune();
    const count = async (kind: string) => Number((await admin.query<{ n: string }>('SELECT count(*) AS n FROM auth_failures WHERE kind = $1', [kind])).rows[0]!.n);
    expect(await count('a')).toBe(50);
    expect(await count('u')).toBe(50);
    // The newest are kept: the last sprayer still waits.
    expect(await store.failed('198.51.100.119', undefined)).toBe(1000);
    clock.now += 16 * 60_000;
    await store.prune();
    expect(await count('a')).toBe(0);
    await pool.close();
  });
});

describe('a PostgreSQL outage', () => {
  it('gives the longest delay and a temporary failure for app passwords, and recovers without a restart', async () => {
    await admin.query('TRUNCATE auth_failures, app_passwords');
    const pool = await openPostgres(settings(0.5));
    const failures = new PostgresFailureStore(pool, { baseDelayMs: 500, maxDelayMs: 15_000 });
    const service = new PostgresAppPasswordService(pool, Buffer.alloc(32, 7), { defaultProtocols: ['imap'], maxPerUser: 5, lastUseWriteSeconds: 0 });
    const { password } = await service.create({ user: 'alice@example.test', label: 'phone' });
    expect(await failures.failed('192.0.2.50', 'alice@example.test')).toBe(500);

    postgres.halt();
    try {
      const started = Date.now();
      expect(await failures.failed('192.0.2.50', 'alice@example.test')).toBe(15_000);
      const err = await service.verify('alice@example.test', password, 'imap', '192.0.2.50').catch((e: unknown) => e);
      expect(err).toBeInstanceOf(StorageError);
      await expect(failures.succeeded('192.0.2.50', 'alice@example.test')).resolves.toBeUndefined();
      // The first waited for the timeout (0.5 s), the next ones not even that: one timeout per second.
      expect(Date.now() - started).toBeLessThan(1500);
      const again = Date.now();
      expect(await failures.failed('192.0.2.52', undefined)).toBe(15_000);
      expect(Date.now() - again).toBeLessThan(100);
    } finally {
      postgres.resume();
    }
    // The same pool, no restart: it answers again within a second or so, with the count the outage did not add to.
    const back = await waitFor(() => service.verify('alice@example.test', password, 'imap', '192.0.2.50').catch(() => undefined), { timeoutMs: 5000, what: 'PostgreSQL back' });
    expect(back.user).toBe('alice@example.test');
    expect(await failures.failed('192.0.2.51', 'bob@example.test')).toBe(500);
    await service.close();
    await pool.close();
  }, 30_000);
});

describe('the directory shared by replicas', () => {
  const user = (name: string): DirectoryUser => ({ id: name, mailbox: `${name}@example.test`, aliases: [], active: true, groups: [] });
  const silent = { info() {}, warn() {}, error() {} };

  /** A replica: its own pool, directory, provider view (what its source would answer), lease and follower. */
  function replica(ttlMs: number) {
    const pool = new PostgresPool(settings());
    const directory = new Directory({ graceSeconds: 0, maxRemovalShare: 1 });
    const provider = { users: [user('alice')], asked: 0 };
    const store = new PostgresDirectoryStore(pool);
    const lease = new DirectoryLease(pool, ttlMs);
    const source = { name: 'test', fetchAll: async () => (provider.asked++, provider.users.map((u) => ({ ...u }))) };
    const sync = new DirectorySync({ directory, source, store, intervalSeconds: 3600, lease, logger: silent });
    const stopFollowing = followSharedDirectory(directory, store, 50, silent);
    return { pool, directory, provider, lease, sync, close: async () => (sync.stop(), stopFollowing(), await lease.release(), await pool.close()) };
  }

  it('one replica syncs under the lease, the other serves its set; a released or lapsed lease passes over', async () => {
    await admin.query('TRUNCATE directory_state, directory_lease');
    const a = replica(400);
    const b = replica(400);
    try {
      a.provider.users = [user('alice'), user('bob')];
      b.provider.users = [user('alice'), user('mallory')];
      expect((await a.sync.syncNow()).ok).toBe(true);
      const followed = await b.sync.syncNow();
      expect(followed).toMatchObject({ ok: false, error: 'another replica holds the directory lease' });
      // B never asked its provider, and serves A's set from the shared copy.
      expect(b.provider.asked).toBe(0);
      await waitFor(() => b.directory.loginVerdict('bob@example.test') === 'allowed', { timeoutMs: 5000, intervalMs: 20, what: 'the shared set' });
      expect(b.directory.loginVerdict('mallory@example.test')).toBe('unknown');

      // A change at the provider reaches B through A's next sync.
      a.provider.users = [user('alice'), user('carol')];
      expect((await a.sync.syncNow()).ok).toBe(true);
      await waitFor(() => b.directory.loginVerdict('carol@example.test') === 'allowed', { timeoutMs: 5000, intervalMs: 20, what: 'the change' });
      expect(b.directory.loginVerdict('bob@example.test')).not.toBe('allowed');

      // A shuts down: B takes over at its next attempt, and A's set stays served meanwhile.
      await a.lease.release();
      b.provider.users = [user('alice'), user('dave')];
      expect((await b.sync.syncNow()).ok).toBe(true);
      expect(b.provider.asked).toBe(1);
      await waitFor(() => a.directory.loginVerdict('dave@example.test') === 'allowed', { timeoutMs: 5000, intervalMs: 20, what: 'B’s set at A' });

      // B stops renewing (a crash): once its lease lapses, A takes it.
      expect(await a.lease.acquire()).toBe(false);
      await sleep(500);
      expect(await a.lease.acquire()).toBe(true);
      expect(await b.lease.acquire()).toBe(false);
    } finally {
      await Promise.all([a.close(), b.close()]);
    }
  });

  it('with the database frozen, each replica serves the set it holds, and none syncs', async () => {
    await admin.query('TRUNCATE directory_state, directory_lease');
    const a = replica(60_000);
    try {
      expect((await a.sync.syncNow()).ok).toBe(true);
      postgres.halt();
      try {
        // The lease cannot be renewed, so no sync runs (no replica syncs it does not know it leads).
        const outcome = await a.sync.syncNow();
        expect(outcome.ok).toBe(false);
        expect(a.directory.loginVerdict('alice@example.test')).toBe('allowed');
      } finally {
        postgres.resume();
      }
      await waitFor(async () => (await a.sync.syncNow()).ok, { timeoutMs: 5000, intervalMs: 200, what: 'a sync after the thaw' });
    } finally {
      await a.close();
    }
  }, 30_000);
});

/**
 * What every app-password store must do, whatever holds it (SQLite in storage.dir, PostgreSQL):
 * the same tests run against each, so a replica on PostgreSQL behaves as a single instance does.
 * Includes the attacks (look-alike spellings, expiry at the millisecond, a last use racing a
 * revocation, two processes on one store).
 */
import { createHash } from 'node:crypto';
import fc from 'fast-check';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { AppPasswordError, type AppPasswordService } from '../../src/auth/app-passwords.js';
import type { AppPasswordHistoryRecord } from '../../src/auth/app-password-rules.js';
import { userNameKey } from '../../src/login/failures.js';

/** A store's service as the tests drive it. */
export interface ContractService extends AppPasswordService {
  history(user?: string): AppPasswordHistoryRecord[] | Promise<AppPasswordHistoryRecord[]>;
  writePendingUses(): void | Promise<void>;
}

/** What the tests need of a store: a fresh one per test, services on it, and a look at its rows. */
export interface ContractStore {
  /** Makes the store empty (called before each test). */
  setUp(): Promise<void>;
  /** Releases what setUp made (after each test, services already closed). */
  tearDown(): Promise<void>;
  /** A service on the store; every call within a test shares the rows (as two processes would). */
  open(options: { maxPerUser: number; lastUseWriteSeconds: number; now: () => Date; otherKey?: boolean; flushTimer?: boolean }): Promise<ContractService>;
  /** Every stored row, as text (binary columns in hex). */
  dump(): Promise<string>;
  /** The last use stored for a password, as written in the store. */
  storedUse(id: string): Promise<{ at: number | null; address: string | null; protocol: string | null }>;
}

const ALICE = 'alice@example.test';

async function refusal(promise: Promise<unknown>): Promise<string> {
  try {
    await promise;
  } catch (err) {
    if (err instanceof AppPasswordError) return err.code;
    throw err;
  }
  return 'created';
}

const fullWidth = (c: string) => (/[!-~]/.test(c) ? String.fromCharCode(c.charCodeAt(0) + 0xfee0) : c);

/** A spelling of `name`: each character as is, upper case or full-width; maybe with space around. */
const spellingOf = (name: string) =>
  fc
    .tuple(
      fc.tuple(...[...name].map((c) => fc.constantFrom(c, c.toUpperCase(), fullWidth(c)))),
      fc.constantFrom('', ' ', '\u00a0', '\t'),
      fc.constantFrom('', ' ', '\u3000'),
    )
    .map(([chars, before, after]) => `${before}${chars.join('')}${after}`);

/** Registers the contract's tests for `store` under `name`. */
export function appPasswordContract(name: string, store: ContractStore): void {
  let clock: { now: number };
  const open: ContractService[] = [];
  const service = async (overrides: { maxPerUser?: number; lastUseWriteSeconds?: number; otherKey?: boolean; flushTimer?: boolean } = {}) => {
    const s = await store.open({ maxPerUser: 3, lastUseWriteSeconds: 300, now: () => new Date(clock.now), ...overrides });
    open.push(s);
    return s;
  };

  describe(`${name}: the app-password store`, () => {
    beforeEach(async () => {
      clock = { now: Date.parse('2026-05-01T10:00:00Z') };
      await store.setUp();
    });
    afterEach(async () => {
      for (const s of open.splice(0)) await s.close();
      await store.tearDown();
    });

    it('creates a password that verifies for its user and protocols, in any spelling of both', async () => {
      const s = await service();
      const { password, record } = await s.create({ user: 'Alice@Example.com', label: 'phone', protocols: ['imap', 'smtp'] });
      expect(record).toMatchObject({ user: 'Alice@Example.com', label: 'phone', protocols: ['imap', 'smtp'], expiresAt: undefined, lastUse: undefined });
      const verified = await s.verify('alice@example.COM', password.toUpperCase().replace(/-/g, ' '), 'imap', '192.0.2.7');
      expect(verified?.id).toBe(record.id);
      expect(verified?.user).toBe('Alice@Example.com');
      expect(await s.verify('alice@example.com', password, 'pop3', '192.0.2.7')).toBeUndefined();
      expect(await s.verify('bob@example.com', password, 'imap', '192.0.2.7')).toBeUndefined();
      expect(await s.verify('alice@example.com', 'abcd-efgh-ijkl-mnop-qrst-uvwx-yzab', 'imap', '192.0.2.7')).toBeUndefined();
    });

    it('stores only a keyed hash: the store holds neither the password nor its plain SHA-256', async () => {
      const s = await service();
      const { password } = await s.create({ user: 'alice@example.com', label: 'phone' });
      await s.close();
      const dump = await store.dump();
      expect(dump).toContain('alice@example.com');
      expect(dump).not.toContain(password);
      expect(dump).not.toContain(password.replace(/-/g, ''));
      expect(dump).not.toContain(createHash('sha256').update(password.replace(/-/g, '')).digest('hex'));
    });

    it('refuses a duplicate live label, too many passwords, bad labels and protocols', async () => {
      const s = await service();
      await s.create({ user: 'alice@example.com', label: 'phone' });
      expect(await refusal(s.create({ user: 'ALICE@example.com', label: ' phone ' }))).toBe('duplicate_label');
      expect(await refusal(s.create({ user: 'bob@example.com', label: 'phone' }))).toBe('created');
      expect(await refusal(s.create({ user: 'alice@example.com', label: '' }))).toBe('bad_label');
      expect(await refusal(s.create({ user: 'alice@example.com', label: 'x'.repeat(65) }))).toBe('bad_label');
      expect(await refusal(s.create({ user: 'alice@example.com', label: 'tab\there' }))).toBe('bad_label');
      expect(await refusal(s.create({ user: 'alice@example.com', label: 'é'.repeat(64) }))).toBe('created');
      expect(await refusal(s.create({ user: 'alice@example.com', label: 'none', protocols: [] }))).toBe('bad_protocols');
      expect(await refusal(s.create({ user: 'alice@example.com', label: 'odd', protocols: ['imap', 'ftp' as 'imap'] }))).toBe('bad_protocols');
      expect(await refusal(s.create({ user: 'alice@example.com', label: 'laptop' }))).toBe('created');
      expect(await refusal(s.create({ user: 'alice@example.com', label: 'fourth' }))).toBe('too_many');
      expect(await s.revokeByLabel('alice@example.com', 'phone')).toBe(true);
      expect(await refusal(s.create({ user: 'alice@example.com', label: 'phone' }))).toBe('created');
    });

    it('two processes creating at once cannot pass the per-user limit together', async () => {
      const a = await service();
      const b = await service();
      const outcomes = await Promise.all(['1', '2', '3', '4', '5', '6'].map((label, i) => refusal((i % 2 ? a : b).create({ user: ALICE, label }))));
      expect(outcomes.filter((o) => o === 'created')).toHaveLength(3);
      expect(await a.list(ALICE)).toHaveLength(3);
    });

    it('lists live passwords newest first, per user or all; never a hash', async () => {
      const s = await service();
      await s.create({ user: 'alice@example.com', label: 'one' });
      clock.now += 1000;
      await s.create({ user: 'bob@example.com', label: 'bob' });
      clock.now += 1000;
      await s.create({ user: 'alice@example.com', label: 'two', protocols: ['smtp'] });
      expect((await s.list('Alice@example.com')).map((r) => r.label)).toEqual(['two', 'one']);
      expect((await s.list()).map((r) => r.label)).toEqual(['two', 'bob', 'one']);
      expect(Object.keys((await s.list())[0]!).sort()).toEqual(['createdAt', 'expiresAt', 'id', 'label', 'lastUse', 'protocols', 'user']);
    });

    it('revokes by id, by label and all; a revoked password stays in the history and never verifies', async () => {
      const s = await service();
      const a = await s.create({ user: 'alice@example.com', label: 'a' });
      const b = await s.create({ user: 'alice@example.com', label: 'b' });
      const c = await s.create({ user: 'alice@example.com', label: 'c' });
      expect(await s.revokeById('bob@example.com', a.record.id)).toBe(false);
      expect(await s.revokeById('alice@example.com', a.record.id)).toBe(true);
      expect(await s.revokeById('alice@example.com', a.record.id)).toBe(false);
      expect(await s.verify('alice@example.com', a.password, 'imap', '192.0.2.1')).toBeUndefined();
      expect(await s.revokeByLabel('alice@example.com', 'nope')).toBe(false);
      expect(await s.revokeByLabel('alice@example.com', 'b')).toBe(true);
      expect(await s.verify('alice@example.com', b.password, 'imap', '192.0.2.1')).toBeUndefined();
      expect(await s.verify('alice@example.com', c.password, 'imap', '192.0.2.1')).toBeDefined();
      expect(await s.revokeAll('alice@example.com', 'directory')).toBe(1);
      expect(await s.verify('alice@example.com', c.password, 'imap', '192.0.2.1')).toBeUndefined();
      expect(await s.list('alice@example.com')).toEqual([]);
      const history = await s.history('alice@example.com');
      expect(history.map((r) => [r.label, r.status, r.revokedBy])).toEqual([
        ['c', 'revoked', 'directory'],
        ['b', 'revoked', 'user'],
        ['a', 'revoked', 'user'],
      ]);
    });

    it('stops verifying at the expiry, by the injected clock', async () => {
      const s = await service();
      const { password } = await s.create({ user: 'alice@example.com', label: 'week', expiresAt: new Date(clock.now + 7 * 86_400_000) });
      clock.now += 7 * 86_400_000 - 1;
      expect(await s.verify('alice@example.com', password, 'imap', '192.0.2.1')).toBeDefined();
      clock.now += 1;
      expect(await s.verify('alice@example.com', password, 'imap', '192.0.2.1')).toBeUndefined();
      expect(await s.list('alice@example.com')).toEqual([]);
      expect((await s.history('alice@example.com'))[0]?.status).toBe('expired');
      expect((await s.create({ user: 'alice@example.com', label: 'week' })).record.label).toBe('week');
      await expect(s.create({ user: 'alice@example.com', label: 'past', expiresAt: new Date(clock.now) })).rejects.toMatchObject({ code: 'bad_expiry' });
    });

    it('keeps the last use in memory and writes it at most every lastUseWriteSeconds, and at close', async () => {
      const s = await service({ lastUseWriteSeconds: 60 });
      const { password, record } = await s.create({ user: 'alice@example.com', label: 'phone' });
      const stored = () => store.storedUse(record.id);
      const loggedInAt = clock.now;
      await s.verify('alice@example.com', password, 'imap', '192.0.2.1');
      expect(await stored()).toEqual({ at: loggedInAt, address: '192.0.2.1', protocol: 'imap' });
      clock.now += 30_000;
      await s.verify('alice@example.com', password, 'smtp', '192.0.2.2');
      expect((await stored()).address).toBe('192.0.2.1');
      expect((await s.list('alice@example.com'))[0]?.lastUse).toEqual({ at: new Date(clock.now), address: '192.0.2.2', protocol: 'smtp' });
      clock.now += 30_000;
      await s.verify('alice@example.com', password, 'pop3', '192.0.2.3');
      expect(await stored()).toEqual({ at: clock.now, address: '192.0.2.3', protocol: 'pop3' });
      clock.now += 1000;
      await s.verify('alice@example.com', password, 'sieve', '192.0.2.4');
      expect((await stored()).protocol).toBe('pop3');
      await s.close();
      expect(await stored()).toEqual({ at: clock.now, address: '192.0.2.4', protocol: 'sieve' });
    });

    it('sees another process’s changes at once: no list is cached', async () => {
      const serve = await service();
      const cli = await service();
      const { password } = await cli.create({ user: 'alice@example.com', label: 'phone', createdBy: 'admin' });
      expect(await serve.verify('alice@example.com', password, 'imap', '192.0.2.1')).toBeDefined();
      expect(await cli.revokeByLabel('alice@example.com', 'phone')).toBe(true);
      expect(await serve.verify('alice@example.com', password, 'imap', '192.0.2.1')).toBeUndefined();
    });

    it('a password hashed under another key does not verify', async () => {
      const s = await service();
      const { password } = await s.create({ user: 'alice@example.com', label: 'phone' });
      const other = await service({ otherKey: true });
      expect(await other.verify('alice@example.com', password, 'imap', '192.0.2.1')).toBeUndefined();
    });

    it('every spelling that finds alice’s password counts its failures under alice’s own name, and logs in as the stored user', async () => {
      const s = await service();
      const { password } = await s.create({ user: ALICE, label: 'phone' });
      const aliceKey = userNameKey(ALICE);
      await fc.assert(
        fc.asyncProperty(spellingOf(ALICE), async (spelling) => {
          const found = await s.verify(spelling, password, 'imap', '192.0.2.1');
          if (found) {
            expect(userNameKey(spelling)).toBe(aliceKey);
            expect(found.user).toBe(ALICE);
          }
        }),
        { numRuns: 100 },
      );
      expect((await s.verify('ALICE@Example.TEST', password, 'imap', '192.0.2.1'))?.user).toBe(ALICE);
      expect(await s.verify('ａlice@example.test', password, 'imap', '192.0.2.1')).toBeUndefined();
      expect(await s.verify(` ${ALICE}`, password, 'imap', '192.0.2.1')).toBeUndefined();
    });

    it('never for another user, an alias-like spelling, a +tag or a trailing dot', async () => {
      const s = await service();
      const { password } = await s.create({ user: ALICE, label: 'phone' });
      for (const other of ['bob@example.test', 'alice+tag@example.test', 'alice@example.test.', 'alice@example.test*master', 'alıce@example.test', 'alice']) {
        expect(await s.verify(other, password, 'imap', '192.0.2.1'), other).toBeUndefined();
      }
    });

    it('an admin cannot create a password for a look-alike spelling that logins could never name', async () => {
      const s = await service();
      await expect(s.create({ user: 'ａlice@example.test', label: 'phone' })).rejects.toMatchObject({ code: 'bad_user' });
      expect(await s.list()).toEqual([]);
    });

    it('an SMTP-only password opens nothing else and records no use there', async () => {
      const s = await service();
      const { password, record } = await s.create({ user: ALICE, label: 'printer', protocols: ['smtp'] });
      for (const protocol of ['imap', 'pop3', 'sieve'] as const) expect(await s.verify(ALICE, password, protocol, '192.0.2.9')).toBeUndefined();
      expect((await s.list(ALICE)).find((r) => r.id === record.id)?.lastUse).toBeUndefined();
    });

    it('an extra or missing letter is not the password', async () => {
      const s = await service();
      const { password } = await s.create({ user: ALICE, label: 'phone' });
      const plainLetters = password.replace(/-/g, '');
      for (const typed of [`${plainLetters}a`, plainLetters.slice(1), `a${plainLetters.slice(0, 27)}`, `${password}-`.replace(/-$/, '-x')]) {
        expect(await s.verify(ALICE, typed, 'imap', '192.0.2.1'), typed).toBeUndefined();
      }
    });

    it('expires at the millisecond it says', async () => {
      const s = await service();
      const expiresAt = new Date(clock.now + 86_400_000);
      const { password } = await s.create({ user: ALICE, label: 'day', expiresAt });
      clock.now = expiresAt.getTime() - 1;
      expect(await s.verify(ALICE, password, 'imap', '192.0.2.1')).toBeDefined();
      clock.now = expiresAt.getTime();
      expect(await s.verify(ALICE, password, 'imap', '192.0.2.1')).toBeUndefined();
      expect(await s.list(ALICE)).toEqual([]);
    });

    it('a last use written after the revocation does not bring the password back', async () => {
      const s = await service();
      const { password, record } = await s.create({ user: ALICE, label: 'phone' });
      expect(await s.verify(ALICE, password, 'imap', '192.0.2.1')).toBeDefined();
      clock.now += 1000;
      expect(await s.verify(ALICE, password, 'smtp', '192.0.2.2')).toBeDefined();
      expect(await s.revokeById(ALICE, record.id)).toBe(true);
      await s.writePendingUses();
      expect(await s.verify(ALICE, password, 'imap', '192.0.2.1')).toBeUndefined();
      expect((await s.history(ALICE))[0]).toMatchObject({ id: record.id, status: 'revoked' });
    });

    it('another process’s revocation counts at the next login, and serve’s pending uses written later leave it revoked', async () => {
      const serve = await service({ lastUseWriteSeconds: 3600 });
      const cli = await service({ flushTimer: false });
      const { password, record } = await cli.create({ user: ALICE, label: 'phone', createdBy: 'admin' });
      expect(await serve.verify(ALICE, password, 'imap', '192.0.2.1')).toBeDefined();
      clock.now += 5;
      expect(await serve.verify(ALICE, password, 'imap', '192.0.2.1')).toBeDefined();
      expect(await cli.revokeByLabel(ALICE, 'phone')).toBe(true);
      expect(await serve.verify(ALICE, password, 'imap', '192.0.2.1')).toBeUndefined();
      await serve.close();
      expect((await cli.history(ALICE)).find((r) => r.id === record.id)?.status).toBe('revoked');
      expect(await cli.revokeByLabel(ALICE, 'phone')).toBe(false);
    });

    it('the directory’s revocation of every password leaves none of them working', async () => {
      const s = await service({ maxPerUser: 10 });
      const created = await Promise.all(['a', 'b', 'c'].map((label) => s.create({ user: ALICE, label })));
      expect(await s.revokeAll('ALICE@example.test', 'directory')).toBe(3);
      for (const { password } of created) expect(await s.verify(ALICE, password, 'imap', '192.0.2.1')).toBeUndefined();
    });
  });
}

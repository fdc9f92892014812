/**
 * Attacks on the app-password store: look-alike spellings of a user or a password, expiry at the
 * millisecond, a throttled last use racing a revocation, two processes on one database, and key
 * files others can read.
 */
import { chmodSync, mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { normalizeAppPassword } from '../../../src/auth/app-passwords-format.js';
import { KEY_FILE, openAppPasswordService, type SqliteAppPasswordOptions } from '../../../src/auth/app-passwords-sqlite.js';
import { userNameKey } from '../../../src/login/failures.js';

const ALICE = 'alice@example.test';
let dir: string;
let clock: { now: number };
const open: Array<{ close(): Promise<void> }> = [];

function service(overrides: Partial<SqliteAppPasswordOptions> = {}) {
  const s = openAppPasswordService({
    dir,
    keyFile: undefined,
    defaultProtocols: ['imap', 'smtp', 'pop3', 'sieve'],
    maxPerUser: 10,
    lastUseWriteSeconds: 300,
    now: () => new Date(clock.now),
    ...overrides,
  });
  open.push(s);
  return s;
}

beforeEach(() => {
  dir = join(mkdtempSync(join(tmpdir(), 'sasl-gate-apppw-attack-')), 'state');
  clock = { now: Date.parse('2026-05-01T10:00:00Z') };
});
afterEach(async () => {
  for (const s of open.splice(0)) await s.close();
  rmSync(join(dir, '..'), { recursive: true, force: true });
});

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

describe('who an app password opens', () => {
  it('every spelling that finds alice’s password counts its failures under alice’s own name, and logs in as the stored user', async () => {
    const s = service();
    const { password } = await s.create({ user: ALICE, label: 'phone' });
    const aliceKey = userNameKey(ALICE);
    await fc.assert(
      fc.asyncProperty(spellingOf(ALICE), async (spelling) => {
        const found = await s.verify(spelling, password, 'imap', '192.0.2.1');
        if (found) {
          // Were it otherwise, look-alike spellings would each get their own failure delay.
          expect(userNameKey(spelling)).toBe(aliceKey);
          expect(found.user).toBe(ALICE);
        }
      }),
      { numRuns: 300 },
    );
    // Case alone is the same mailbox everywhere: it still works.
    expect((await s.verify('ALICE@Example.TEST', password, 'imap', '192.0.2.1'))?.user).toBe(ALICE);
    expect(await s.verify('ａlice@example.test', password, 'imap', '192.0.2.1')).toBeUndefined();
    expect(await s.verify(` ${ALICE}`, password, 'imap', '192.0.2.1')).toBeUndefined();
  });

  it('never for another user, an alias-like spelling, a +tag or a trailing dot', async () => {
    const s = service();
    const { password } = await s.create({ user: ALICE, label: 'phone' });
    for (const name of ['bob@example.test', 'alice+tag@example.test', 'alice@example.test.', 'alice@example.test*master', 'alıce@example.test', 'alice']) {
      expect(await s.verify(name, password, 'imap', '192.0.2.1'), name).toBeUndefined();
    }
  });

  it('an admin cannot create a password for a look-alike spelling that logins could never name', async () => {
    const s = service();
    await expect(s.create({ user: 'ａlice@example.test', label: 'phone' })).rejects.toMatchObject({ code: 'bad_user' });
    expect(await s.list()).toEqual([]);
  });

  it('an SMTP-only password opens nothing else and records no use there', async () => {
    const s = service();
    const { password, record } = await s.create({ user: ALICE, label: 'printer', protocols: ['smtp'] });
    for (const protocol of ['imap', 'pop3', 'sieve'] as const) expect(await s.verify(ALICE, password, protocol, '192.0.2.9')).toBeUndefined();
    expect((await s.list(ALICE)).find((r) => r.id === record.id)?.lastUse).toBeUndefined();
  });
});

describe('what normalises to a live password', () => {
  const letters = 'abcdefghijklmnopqrstuvwxyzab';

  it('only its own 28 ASCII letters, in any case, with dashes or white space between', () => {
    fc.assert(
      fc.property(fc.string({ unit: 'binary', maxLength: 90 }), (typed) => {
        const normalized = normalizeAppPassword(typed);
        if (normalized === undefined) return;
        expect(normalized).toMatch(/^[a-z]{28}$/);
        const kept = typed.replace(/[-\s]/g, '');
        expect(kept).toMatch(/^[a-zA-Z]{28}$/);
        expect(kept.toLowerCase()).toBe(normalized);
      }),
      { numRuns: 2000 },
    );
  });

  it('no look-alike letter (full-width, dotless ı, Kelvin sign, long s, Cyrillic а) stands in for an ASCII one', () => {
    const lookAlikes: Record<string, string[]> = { a: ['ａ', 'а', 'ª'], i: ['ı', 'ｉ', 'і'], k: ['\u212a', 'ｋ'], s: ['ſ', 'ｓ'], e: ['е', 'ｅ'] };
    fc.assert(
      fc.property(fc.constantFrom(...Object.keys(lookAlikes)), fc.nat(27), fc.nat(2), (letter, at, which) => {
        const variants = lookAlikes[letter]!;
        const typed = letters.slice(0, at) + variants[which % variants.length]! + letters.slice(at + 1);
        expect(normalizeAppPassword(typed)).toBeUndefined();
      }),
    );
  });

  it('an extra or missing letter is not the password', async () => {
    const s = service();
    const { password } = await s.create({ user: ALICE, label: 'phone' });
    const plainLetters = password.replace(/-/g, '');
    for (const typed of [`${plainLetters}a`, plainLetters.slice(1), `a${plainLetters.slice(0, 27)}`, `${password}-`.replace(/-$/, '-x')]) {
      expect(await s.verify(ALICE, typed, 'imap', '192.0.2.1'), typed).toBeUndefined();
    }
  });
});

describe('revocation and expiry', () => {
  it('expires at the millisecond it says', async () => {
    const s = service();
    const expiresAt = new Date(clock.now + 86_400_000);
    const { password } = await s.create({ user: ALICE, label: 'day', expiresAt });
    clock.now = expiresAt.getTime() - 1;
    expect(await s.verify(ALICE, password, 'imap', '192.0.2.1')).toBeDefined();
    clock.now = expiresAt.getTime();
    expect(await s.verify(ALICE, password, 'imap', '192.0.2.1')).toBeUndefined();
    expect(await s.list(ALICE)).toEqual([]);
  });

  it('a last use written after the revocation does not bring the password back', async () => {
    const s = service();
    const { password, record } = await s.create({ user: ALICE, label: 'phone' });
    // The first use is written at once, the next ones wait for the throttle.
    expect(await s.verify(ALICE, password, 'imap', '192.0.2.1')).toBeDefined();
    clock.now += 1000;
    expect(await s.verify(ALICE, password, 'smtp', '192.0.2.2')).toBeDefined();
    expect(await s.revokeById(ALICE, record.id)).toBe(true);
    s.writePendingUses();
    expect(await s.verify(ALICE, password, 'imap', '192.0.2.1')).toBeUndefined();
    expect(s.history(ALICE)[0]).toMatchObject({ id: record.id, status: 'revoked' });
  });

  it('another process’s revocation counts at the next login, and serve’s pending uses written later leave it revoked', async () => {
    const serve = service({ lastUseWriteSeconds: 3600 });
    const cli = service({ flushTimer: false });
    const { password, record } = await cli.create({ user: ALICE, label: 'phone', createdBy: 'admin' });
    expect(await serve.verify(ALICE, password, 'imap', '192.0.2.1')).toBeDefined();
    clock.now += 5;
    expect(await serve.verify(ALICE, password, 'imap', '192.0.2.1')).toBeDefined();
    expect(await cli.revokeByLabel(ALICE, 'phone')).toBe(true);
    expect(await serve.verify(ALICE, password, 'imap', '192.0.2.1')).toBeUndefined();
    await serve.close();
    expect(cli.history(ALICE).find((r) => r.id === record.id)?.status).toBe('revoked');
    // A second revocation finds nothing live.
    expect(await cli.revokeByLabel(ALICE, 'phone')).toBe(false);
  });

  it('the directory’s revocation of every password leaves none of them working', async () => {
    const s = service();
    const created = await Promise.all(['a', 'b', 'c'].map((label) => s.create({ user: ALICE, label })));
    expect(await s.revokeAll('ALICE@example.test', 'directory')).toBe(3);
    for (const { password } of created) expect(await s.verify(ALICE, password, 'imap', '192.0.2.1')).toBeUndefined();
  });
});

describe('key files', () => {
  it('refuses a key file every local user can read, and accepts one kept from them', async () => {
    const keyFile = join(dir, '..', 'admin.key');
    writeFileSync(keyFile, Buffer.alloc(32, 3));
    chmodSync(keyFile, 0o644);
    expect(() => service({ keyFile })).toThrow(/accessible to every local user/);
    chmodSync(keyFile, 0o604);
    expect(() => service({ keyFile })).toThrow(/accessible to every local user/);
    chmodSync(keyFile, 0o640);
    expect(() => service({ keyFile })).not.toThrow();
  });

  it('refuses a generated key someone made world-readable, and a short key', async () => {
    await service().close();
    chmodSync(join(dir, KEY_FILE), 0o644);
    expect(() => service()).toThrow(/accessible to every local user/);
    const keyFile = join(dir, '..', 'short.key');
    writeFileSync(keyFile, Buffer.alloc(31, 3), { mode: 0o600 });
    expect(() => service({ keyFile })).toThrow(/holds 31 bytes/);
  });
});

describe('storage.dir', () => {
  it('is created 0700, and one every local user may write to is refused (they could swap the key or plant a -wal file)', async () => {
    await service().close();
    expect(statSync(dir).mode & 0o777).toBe(0o700);
    chmodSync(dir, 0o1777);
    expect(() => service()).toThrow(/writable by every local user/);
    chmodSync(dir, 0o755);
    expect(() => service()).not.toThrow();
  });
});

/**
 * Attacks on the app-password store of storage.dir: look-alike passwords, and key files and
 * directories others can read or write.
 */
import { chmodSync, mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { normalizeAppPassword } from '../../../src/auth/app-passwords-format.js';
import { KEY_FILE, openAppPasswordService, type SqliteAppPasswordOptions } from '../../../src/auth/app-passwords-sqlite.js';

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

// Spellings, expiry, revocation races and two processes on one store: test/support/app-password-contract.ts, for every store.

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

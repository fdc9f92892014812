import { mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { appPasswordContract } from '../../support/app-password-contract.js';
import { generateAppPassword, normalizeAppPassword } from '../../../src/auth/app-passwords-format.js';
import { DATABASE_FILE, openAppPasswordService, type SqliteAppPasswordOptions } from '../../../src/auth/app-passwords-sqlite.js';

let dir: string;
let clock: { now: number };
const open: Array<{ close(): Promise<void> }> = [];

function service(overrides: Partial<SqliteAppPasswordOptions> = {}) {
  const s = openAppPasswordService({
    dir,
    keyFile: undefined,
    defaultProtocols: ['imap', 'smtp', 'pop3', 'sieve'],
    maxPerUser: 3,
    lastUseWriteSeconds: 300,
    now: () => new Date(clock.now),
    ...overrides,
  });
  open.push(s);
  return s;
}

beforeEach(() => {
  dir = join(mkdtempSync(join(tmpdir(), 'sasl-gate-apppw-')), 'state');
  clock = { now: Date.parse('2026-05-01T10:00:00Z') };
});
afterEach(async () => {
  for (const s of open.splice(0)) await s.close();
  rmSync(join(dir, '..'), { recursive: true, force: true });
});

describe('the app-password format', () => {
  it('is seven groups of four lowercase letters', () => {
    for (let i = 0; i < 50; i += 1) expect(generateAppPassword()).toMatch(/^[a-z]{4}(-[a-z]{4}){6}$/);
  });

  it('draws every letter equally: bytes from 234 up are dropped, not folded onto a-v', () => {
    // A source that gives 255 (must be skipped) then 0..27: the letters are a..z, a, b.
    let call = 0;
    const random = (size: number) => (call++ === 0 ? Buffer.alloc(size, 255) : Buffer.from(Array.from({ length: size }, (_, i) => i)));
    expect(generateAppPassword(random).replace(/-/g, '')).toBe('abcdefghijklmnopqrstuvwxyzab');
  });

  it('accepts any case, dashes or spaces; nothing that is not 28 letters', () => {
    const letters = 'abcdefghijklmnopqrstuvwxyzab';
    expect(normalizeAppPassword('ABCD-efgh ijkl-mnop qrst-uvwx-yzab')).toBe(letters);
    expect(normalizeAppPassword(letters.slice(0, 27))).toBeUndefined();
    expect(normalizeAppPassword(`${letters}c`)).toBeUndefined();
    expect(normalizeAppPassword('abcdefghijklmnopqrstuvwxy1ab')).toBeUndefined();
    // The Kelvin sign lower-cases to an ASCII k: it must not count as one.
    expect(normalizeAppPassword(`\u212a${letters.slice(1)}`)).toBeUndefined();
  });
});

appPasswordContract('SQLite', {
  // The file's own beforeEach and afterEach make and remove a fresh storage.dir.
  setUp: async () => {},
  tearDown: async () => {},
  open: async ({ otherKey, ...options }) => {
    let keyFile: string | undefined;
    if (otherKey) {
      keyFile = join(dir, '..', 'other.key');
      writeFileSync(keyFile, Buffer.alloc(32, 1), { mode: 0o600 });
    }
    return openAppPasswordService({ dir, keyFile, defaultProtocols: ['imap', 'smtp', 'pop3', 'sieve'], ...options });
  },
  dump: async () => {
    const db = new DatabaseSync(join(dir, DATABASE_FILE));
    const rows = db.prepare('SELECT * FROM app_passwords').all();
    db.close();
    return JSON.stringify(rows, (_k, v: unknown) => (v instanceof Uint8Array ? Buffer.from(v).toString('hex') : v));
  },
  storedUse: async (id) => {
    const db = new DatabaseSync(join(dir, DATABASE_FILE));
    const row = db.prepare('SELECT last_used_at AS at, last_used_address AS address, last_used_protocol AS protocol FROM app_passwords WHERE id = ?').get(id);
    db.close();
    return { ...row } as { at: number | null; address: string | null; protocol: string | null };
  },
});

describe('SqliteAppPasswordService', () => {
  it('keeps the database and the generated key readable by its own user only', async () => {
    const s = service();
    await s.create({ user: 'alice@example.com', label: 'phone' });
    await s.close();
    expect(statSync(join(dir, DATABASE_FILE)).mode & 0o777).toBe(0o600);
    expect(statSync(join(dir, 'app-passwords.key')).mode & 0o777).toBe(0o600);
  });

  it('lets a matched login stand when its last use cannot be written, and writes it once it can', async () => {
    const s = service({ lastUseWriteSeconds: 0 });
    const { password, record } = await s.create({ user: 'alice@example.com', label: 'phone' });
    // Another process breaks the column the last use goes to, as a failing write would.
    const other = new DatabaseSync(join(dir, DATABASE_FILE));
    other.exec('ALTER TABLE app_passwords RENAME COLUMN last_used_address TO broken_address');
    expect((await s.verify('alice@example.com', password, 'imap', '192.0.2.1'))?.id).toBe(record.id);
    other.exec('ALTER TABLE app_passwords RENAME COLUMN broken_address TO last_used_address');
    other.close();
    clock.now += 1000;
    expect((await s.verify('alice@example.com', password, 'smtp', '192.0.2.2'))?.id).toBe(record.id);
    await s.close();
    const [listed] = await service().list('alice@example.com');
    expect(listed?.lastUse).toMatchObject({ address: '192.0.2.2', protocol: 'smtp' });
  });
});

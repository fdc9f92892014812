import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { AppPasswordError } from '../../../src/auth/app-passwords.js';
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

async function refusal(promise: Promise<unknown>): Promise<string> {
  try {
    await promise;
  } catch (err) {
    if (err instanceof AppPasswordError) return err.code;
    throw err;
  }
  return 'created';
}

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

describe('SqliteAppPasswordService', () => {
  it('creates a password that verifies for its user and protocols, in any spelling of both', async () => {
    const s = service();
    const { password, record } = await s.create({ user: 'Alice@Example.com', label: 'phone', protocols: ['imap', 'smtp'] });
    expect(record).toMatchObject({ user: 'Alice@Example.com', label: 'phone', protocols: ['imap', 'smtp'], expiresAt: undefined, lastUse: undefined });
    const verified = await s.verify('alice@example.COM', password.toUpperCase().replace(/-/g, ' '), 'imap', '192.0.2.7');
    expect(verified?.id).toBe(record.id);
    // The record names the user as created, whatever the client typed.
    expect(verified?.user).toBe('Alice@Example.com');
    expect(await s.verify('alice@example.com', password, 'pop3', '192.0.2.7')).toBeUndefined();
    expect(await s.verify('bob@example.com', password, 'imap', '192.0.2.7')).toBeUndefined();
    expect(await s.verify('alice@example.com', 'abcd-efgh-ijkl-mnop-qrst-uvwx-yzab', 'imap', '192.0.2.7')).toBeUndefined();
  });

  it('stores only a keyed hash: the database holds neither the password nor its plain SHA-256', async () => {
    const s = service();
    const { password } = await s.create({ user: 'alice@example.com', label: 'phone' });
    await s.close();
    const db = new DatabaseSync(join(dir, DATABASE_FILE));
    const rows = db.prepare('SELECT * FROM app_passwords').all();
    db.close();
    const dump = JSON.stringify(rows, (_k, v: unknown) => (v instanceof Uint8Array ? Buffer.from(v).toString('hex') : v));
    expect(dump).not.toContain(password);
    expect(dump).not.toContain(password.replace(/-/g, ''));
    const { createHash } = await import('node:crypto');
    expect(dump).not.toContain(createHash('sha256').update(password.replace(/-/g, '')).digest('hex'));
    expect(statSync(join(dir, DATABASE_FILE)).mode & 0o777).toBe(0o600);
    expect(statSync(join(dir, 'app-passwords.key')).mode & 0o777).toBe(0o600);
  });

  it('refuses a duplicate live label, too many passwords, bad labels and protocols', async () => {
    const s = service();
    await s.create({ user: 'alice@example.com', label: 'phone' });
    expect(await refusal(s.create({ user: 'ALICE@example.com', label: ' phone ' }))).toBe('duplicate_label');
    // Another user may use the same label.
    expect(await refusal(s.create({ user: 'bob@example.com', label: 'phone' }))).toBe('created');
    expect(await refusal(s.create({ user: 'alice@example.com', label: '' }))).toBe('bad_label');
    expect(await refusal(s.create({ user: 'alice@example.com', label: 'x'.repeat(65) }))).toBe('bad_label');
    expect(await refusal(s.create({ user: 'alice@example.com', label: 'tab\there' }))).toBe('bad_label');
    expect(await refusal(s.create({ user: 'alice@example.com', label: 'é'.repeat(64) }))).toBe('created');
    expect(await refusal(s.create({ user: 'alice@example.com', label: 'none', protocols: [] }))).toBe('bad_protocols');
    expect(await refusal(s.create({ user: 'alice@example.com', label: 'odd', protocols: ['imap', 'ftp' as 'imap'] }))).toBe('bad_protocols');
    expect(await refusal(s.create({ user: 'alice@example.com', label: 'laptop' }))).toBe('created');
    expect(await refusal(s.create({ user: 'alice@example.com', label: 'fourth' }))).toBe('too_many');
    // A revoked one frees its label and its place.
    expect(await s.revokeByLabel('alice@example.com', 'phone')).toBe(true);
    expect(await refusal(s.create({ user: 'alice@example.com', label: 'phone' }))).toBe('created');
  });

  it('lists live passwords newest first, per user or all; never a hash', async () => {
    const s = service();
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
    const s = service();
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
    const history = s.history('alice@example.com');
    expect(history.map((r) => [r.label, r.status, r.revokedBy])).toEqual([
      ['c', 'revoked', 'directory'],
      ['b', 'revoked', 'user'],
      ['a', 'revoked', 'user'],
    ]);
  });

  it('stops verifying at the expiry, by the injected clock', async () => {
    const s = service();
    const { password } = await s.create({ user: 'alice@example.com', label: 'week', expiresAt: new Date(clock.now + 7 * 86_400_000) });
    clock.now += 7 * 86_400_000 - 1;
    expect(await s.verify('alice@example.com', password, 'imap', '192.0.2.1')).toBeDefined();
    clock.now += 1;
    expect(await s.verify('alice@example.com', password, 'imap', '192.0.2.1')).toBeUndefined();
    expect(await s.list('alice@example.com')).toEqual([]);
    expect(s.history('alice@example.com')[0]?.status).toBe('expired');
    // Its label is free again.
    expect((await s.create({ user: 'alice@example.com', label: 'week' })).record.label).toBe('week');
    await expect(s.create({ user: 'alice@example.com', label: 'past', expiresAt: new Date(clock.now) })).rejects.toMatchObject({ code: 'bad_expiry' });
  });

  it('keeps the last use in memory and writes it at most every lastUseWriteSeconds, and at close', async () => {
    const s = service({ lastUseWriteSeconds: 60 });
    const { password, record } = await s.create({ user: 'alice@example.com', label: 'phone' });
    const stored = () => {
      const db = new DatabaseSync(join(dir, DATABASE_FILE));
      const row = db.prepare('SELECT last_used_at AS at, last_used_address AS address, last_used_protocol AS protocol FROM app_passwords WHERE id = ?').get(record.id);
      db.close();
      return { ...row };
    };
    const loggedInAt = clock.now;
    await s.verify('alice@example.com', password, 'imap', '192.0.2.1');
    // The first use is written at once.
    expect(stored()).toEqual({ at: loggedInAt, address: '192.0.2.1', protocol: 'imap' });
    clock.now += 30_000;
    await s.verify('alice@example.com', password, 'smtp', '192.0.2.2');
    expect(stored().address).toBe('192.0.2.1');
    // The list shows the newest use, from memory.
    expect((await s.list('alice@example.com'))[0]?.lastUse).toEqual({ at: new Date(clock.now), address: '192.0.2.2', protocol: 'smtp' });
    clock.now += 30_000;
    await s.verify('alice@example.com', password, 'pop3', '192.0.2.3');
    expect(stored()).toEqual({ at: clock.now, address: '192.0.2.3', protocol: 'pop3' });
    clock.now += 1000;
    await s.verify('alice@example.com', password, 'sieve', '192.0.2.4');
    expect(stored().protocol).toBe('pop3');
    await s.close();
    expect(stored()).toEqual({ at: clock.now, address: '192.0.2.4', protocol: 'sieve' });
  });

  it('sees another process’s changes at once: no list is cached', async () => {
    const serve = service();
    const cli = service();
    const { password } = await cli.create({ user: 'alice@example.com', label: 'phone', createdBy: 'admin' });
    expect(await serve.verify('alice@example.com', password, 'imap', '192.0.2.1')).toBeDefined();
    expect(await cli.revokeByLabel('alice@example.com', 'phone')).toBe(true);
    expect(await serve.verify('alice@example.com', password, 'imap', '192.0.2.1')).toBeUndefined();
  });

  it('a password hashed under another key does not verify', async () => {
    const s = service();
    const { password } = await s.create({ user: 'alice@example.com', label: 'phone' });
    await s.close();
    open.length = 0;
    const { writeFileSync } = await import('node:fs');
    const keyFile = join(dir, '..', 'other.key');
    writeFileSync(keyFile, Buffer.alloc(32, 1), { mode: 0o600 });
    const other = service({ keyFile });
    expect(await other.verify('alice@example.com', password, 'imap', '192.0.2.1')).toBeUndefined();
  });
});

import { mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { openDatabase, schemaVersion, StorageError } from '../../../src/storage/database.js';
import { loadOrCreateKey } from '../../../src/storage/key-file.js';

let root: string;
beforeEach(() => {
  root = mkdtempSync(join(tmpdir(), 'sasl-gate-storage-'));
});
afterEach(() => rmSync(root, { recursive: true, force: true }));

const mode = (path: string) => statSync(path).mode & 0o777;

describe('openDatabase', () => {
  it('creates storage.dir 0700 and the database 0600, in WAL mode', () => {
    const dir = join(root, 'state', 'sasl-gate');
    const db = openDatabase(dir, 'test.db', [{ version: 1, sql: 'CREATE TABLE t (x INTEGER)' }]);
    expect(mode(dir)).toBe(0o700);
    expect(mode(join(dir, 'test.db'))).toBe(0o600);
    expect(db.prepare('PRAGMA journal_mode').get()).toEqual({ journal_mode: 'wal' });
    db.prepare('INSERT INTO t VALUES (1)').run();
    db.close();
  });

  it('applies each migration once, in order, and records the version', () => {
    const v1 = { version: 1, sql: 'CREATE TABLE t (x INTEGER)' };
    const v2 = { version: 2, sql: 'ALTER TABLE t ADD COLUMN y TEXT' };
    openDatabase(root, 'm.db', [v1]).close();
    const db = openDatabase(root, 'm.db', [v2, v1]);
    expect(schemaVersion(db)).toBe(2);
    db.prepare("INSERT INTO t (x, y) VALUES (1, 'a')").run();
    db.close();
    // Opened again with the same steps: nothing is applied twice (ALTER would fail).
    const again = openDatabase(root, 'm.db', [v1, v2]);
    expect(schemaVersion(again)).toBe(2);
    expect(again.prepare('SELECT count(*) AS n FROM t').get()).toEqual({ n: 1 });
    again.close();
  });

  it('refuses a database newer than the migrations it knows', () => {
    openDatabase(root, 'n.db', [{ version: 1, sql: 'CREATE TABLE a (x)' }, { version: 2, sql: 'CREATE TABLE b (x)' }]).close();
    expect(() => openDatabase(root, 'n.db', [{ version: 1, sql: 'CREATE TABLE a (x)' }])).toThrow(/newer than this sasl-gate knows/);
  });

  it('rolls back a failing migration, leaving the version where it was', () => {
    expect(() => openDatabase(root, 'f.db', [{ version: 1, sql: 'CREATE TABLE a (x); CREATE TABLE a (x)' }])).toThrow(StorageError);
    const db = openDatabase(root, 'f.db', [{ version: 1, sql: 'CREATE TABLE a (x)' }]);
    expect(schemaVersion(db)).toBe(1);
    db.close();
  });

  it('says which directory it cannot create', () => {
    writeFileSync(join(root, 'file'), 'x');
    expect(() => openDatabase(join(root, 'file', 'sub'), 'x.db', [])).toThrow(/cannot create storage.dir/);
  });
});

describe('loadOrCreateKey', () => {
  it('generates 32 random bytes once, mode 0600, and reads the same key afterwards', () => {
    const first = loadOrCreateKey({ keyFile: undefined, dir: root, name: 'k.key', setting: 'appPasswords.keyFile' });
    expect(first.length).toBe(32);
    expect(mode(join(root, 'k.key'))).toBe(0o600);
    expect(loadOrCreateKey({ keyFile: undefined, dir: root, name: 'k.key', setting: 'appPasswords.keyFile' }).equals(first)).toBe(true);
  });

  it('reads the admin key file and refuses one shorter than 32 bytes', () => {
    const file = join(root, 'admin.key');
    writeFileSync(file, Buffer.alloc(48, 7), { mode: 0o600 });
    expect(loadOrCreateKey({ keyFile: file, dir: root, name: 'k.key', setting: 'appPasswords.keyFile' })).toEqual(Buffer.alloc(48, 7));
    writeFileSync(file, 'short');
    expect(() => loadOrCreateKey({ keyFile: file, dir: root, name: 'k.key', setting: 'appPasswords.keyFile' })).toThrow(/appPasswords.keyFile: .* holds 5 bytes/);
  });
});

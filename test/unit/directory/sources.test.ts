import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import {
  aliasesFrom,
  attributeValue,
  DirectorySourceError,
  isSelected,
  joinUrl,
  mailboxOf,
  matchesAttribute,
} from '../../../src/directory/sources/common.js';
import { createDirectorySource, type DirectorySourceConfig } from '../../../src/directory/sources/index.js';
import { StaticSource } from '../../../src/directory/sources/static.js';
import { ConfigError } from '../../../src/errors.js';

let dir: string;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'sasl-gate-static-'));
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

describe('source helpers', () => {
  it('reads aliases from a string, a list, or lists of comma-separated strings', () => {
    expect(aliasesFrom('a@x.org')).toEqual(['a@x.org']);
    expect(aliasesFrom('a@x.org, b@x.org;c@x.org  d@x.org')).toEqual(['a@x.org', 'b@x.org', 'c@x.org', 'd@x.org']);
    expect(aliasesFrom(['a@x.org', 'b@x.org,c@x.org'])).toEqual(['a@x.org', 'b@x.org', 'c@x.org']);
    expect(aliasesFrom(undefined)).toEqual([]);
    expect(aliasesFrom({ nested: 'a@x.org' })).toEqual([]);
    expect(aliasesFrom(['', '  '])).toEqual([]);
  });

  it('finds attributes by key, then by dotted path', () => {
    expect(attributeValue({ 'mail.aliases': 1, mail: { aliases: 2 } }, 'mail.aliases')).toBe(1);
    expect(attributeValue({ mail: { aliases: ['x@y.org'] } }, 'mail.aliases')).toEqual(['x@y.org']);
    expect(attributeValue({ mail: 'x' }, 'mail.aliases')).toBeUndefined();
    expect(attributeValue(null, 'x')).toBeUndefined();
    expect(attributeValue({}, '__proto__')).toBeUndefined();
  });

  it('matches a required attribute with or without a value', () => {
    expect(matchesAttribute({ mail: true }, { name: 'mail' })).toBe(true);
    expect(matchesAttribute({ mail: ['true'] }, { name: 'mail' })).toBe(true);
    expect(matchesAttribute({ mail: 'false' }, { name: 'mail' })).toBe(false);
    expect(matchesAttribute({ mail: false }, { name: 'mail' })).toBe(false);
    expect(matchesAttribute({ mail: [] }, { name: 'mail' })).toBe(false);
    expect(matchesAttribute({}, { name: 'mail' })).toBe(false);
    expect(matchesAttribute({ plan: ['basic', 'mail'] }, { name: 'plan', value: 'mail' })).toBe(true);
    expect(matchesAttribute({ plan: 'basic' }, { name: 'plan', value: 'mail' })).toBe(false);
  });

  it('selects by group and attribute together', () => {
    const sel = { group: 'mail-users', attribute: { name: 'mailbox', value: 'yes' } };
    expect(isSelected(undefined, { groups: [] })).toBe(true);
    expect(isSelected(sel, { groups: ['mail-users'], attributes: { mailbox: 'yes' } })).toBe(true);
    expect(isSelected(sel, { groups: ['mail-users'], attributes: {} })).toBe(false);
    expect(isSelected(sel, { groups: ['Mail-Users'], attributes: { mailbox: 'yes' } })).toBe(false);
  });

  it('takes the mailbox from the email or the user name', () => {
    expect(mailboxOf({ from: 'email' }, { email: ' Alice@Example.org ', username: 'alice' })).toBe('Alice@Example.org');
    expect(mailboxOf({ from: 'email' }, { email: '', username: 'alice' })).toBeUndefined();
    expect(mailboxOf({ from: 'username', domain: 'example.org' }, { username: 'alice' })).toBe('alice@example.org');
    expect(mailboxOf({ from: 'username', domain: 'example.org' }, { username: 'a@other.org' })).toBe('a@other.org');
  });

  it('builds URLs with encoded segments under a base path', () => {
    expect(joinUrl('https://sso.example.org/auth/', 'admin', 'realms', 'my realm').href).toBe(
      'https://sso.example.org/auth/admin/realms/my%20realm',
    );
    expect(joinUrl('https://a.example.org', 'api', 'v3', 'core', 'users', '').href).toBe('https://a.example.org/api/v3/core/users/');
  });
});

describe('StaticSource', () => {
  it('reads users from YAML with defaults, lower-casing addresses', async () => {
    const file = join(dir, 'users.yaml');
    writeFileSync(
      file,
      [
        'users:',
        '  - mailbox: Alice@Example.org',
        '    aliases: [Info@Example.org, alice@example.org]',
        '    groups: [mail-users]',
        '  - mailbox: bob@example.org',
        '    aliases: "b@example.org, bobby@example.org"',
        '    active: false',
        '    groups: Mail Users',
        '  - id: 7',
        '    mailbox: carol@example.org',
      ].join('\n'),
    );
    expect(await new StaticSource({ file }).fetchAll()).toEqual([
      { id: 'alice@example.org', mailbox: 'alice@example.org', aliases: ['info@example.org'], active: true, groups: ['mail-users'] },
      { id: 'bob@example.org', mailbox: 'bob@example.org', aliases: ['b@example.org', 'bobby@example.org'], active: false, groups: ['Mail Users'] },
      { id: '7', mailbox: 'carol@example.org', aliases: [], active: true, groups: [] },
    ]);
  });

  it('reads a JSON list and applies the selection', async () => {
    const file = join(dir, 'users.json');
    writeFileSync(
      file,
      JSON.stringify([
        { mailbox: 'a@example.org', groups: ['mail'], attributes: { quota: '1G' } },
        { mailbox: 'b@example.org', groups: ['staff'] },
      ]),
    );
    const users = await new StaticSource({ file, selection: { group: 'mail' } }).fetchAll();
    expect(users.map((u) => u.mailbox)).toEqual(['a@example.org']);
  });

  it('fails, rather than answer nothing, for a missing, broken or ambiguous file', async () => {
    await expect(new StaticSource({ file: join(dir, 'missing.yaml') }).fetchAll()).rejects.toBeInstanceOf(DirectorySourceError);
    const file = join(dir, 'users.yaml');
    writeFileSync(file, 'users: [ {mailbox: a@example.org');
    await expect(new StaticSource({ file }).fetchAll()).rejects.toThrow(/not valid YAML or JSON/);
    writeFileSync(file, 'users:\n  - mailbox: a@example.org\n    enabled: true\n');
    await expect(new StaticSource({ file }).fetchAll()).rejects.toThrow(/users.0/);
    writeFileSync(file, 'users:\n  - mailbox: a@example.org\n  - mailbox: A@example.org\n');
    await expect(new StaticSource({ file }).fetchAll()).rejects.toThrow(/listed twice/);
    writeFileSync(file, '');
    await expect(new StaticSource({ file }).fetchAll()).rejects.toThrow(/expected a list of users/);
  });

  it('answers an empty list for a file that says so', async () => {
    const file = join(dir, 'users.yaml');
    writeFileSync(file, 'users: []\n');
    expect(await new StaticSource({ file }).fetchAll()).toEqual([]);
  });
});

describe('createDirectorySource', () => {
  const base: DirectorySourceConfig = {
    source: 'static',
    requestTimeoutSeconds: 5,
    pageSize: 50,
    mailboxFrom: 'email',
    select: {},
  };

  it('builds the configured source, or none for SCIM', () => {
    expect(createDirectorySource({ ...base, static: { file: '/x.yaml' } })).toBeInstanceOf(StaticSource);
    expect(createDirectorySource({ ...base, source: 'scim' })).toBeUndefined();
    expect(createDirectorySource({ ...base, source: 'authentik', authentik: { url: 'https://a.example.org', token: 't0ken-value' } })?.name).toBe('authentik');
  });

  it('reads secrets from files and names the key when something is missing', () => {
    const secretFile = join(dir, 'secret');
    writeFileSync(secretFile, 's3cret-value\n');
    expect(
      createDirectorySource({
        ...base,
        source: 'keycloak',
        keycloak: { url: 'https://sso.example.org', realm: 'mail', clientId: 'sasl-gate', clientSecretFile: secretFile },
      })?.name,
    ).toBe('keycloak');
    expect(() => createDirectorySource({ ...base, source: 'static' })).toThrow(ConfigError);
    expect(() => createDirectorySource({ ...base, source: 'authentik', authentik: { url: 'https://a.example.org' } })).toThrow(
      /directory.authentik.token/,
    );
    writeFileSync(secretFile, '');
    expect(() =>
      createDirectorySource({ ...base, source: 'authentik', authentik: { url: 'https://a.example.org', tokenFile: secretFile } }),
    ).toThrow(/empty/);
  });
});

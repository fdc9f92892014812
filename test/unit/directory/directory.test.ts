import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { Directory, DirectoryInputError, normalizeAddress, type DirectoryEvent } from '../../../src/directory/directory.js';
import type { DirectorySnapshot, DirectoryUser } from '../../../src/directory/model.js';

const HOUR = 3_600_000;

function user(id: string, mailbox: string, extra: Partial<DirectoryUser> = {}): DirectoryUser {
  return { id, mailbox, aliases: [], active: true, groups: [], ...extra };
}

function snap(users: DirectoryUser[], source = 'test'): DirectorySnapshot {
  return { source, fetchedAt: '2024-05-01T00:00:00.000Z', users };
}

function setup(options: { graceSeconds?: number; maxRemovalShare?: number; maxRemovalsAlwaysAllowed?: number } = {}) {
  const clock = { now: 1_700_000_000_000 };
  const events: DirectoryEvent[] = [];
  const directory = new Directory({
    graceSeconds: options.graceSeconds ?? 24 * 3600,
    maxRemovalShare: options.maxRemovalShare ?? 0.2,
    ...(options.maxRemovalsAlwaysAllowed === undefined ? {} : { maxRemovalsAlwaysAllowed: options.maxRemovalsAlwaysAllowed }),
    now: () => clock.now,
    onEvent: (e) => events.push(e),
  });
  return { directory, clock, events };
}

const team = (n: number) => Array.from({ length: n }, (_, i) => user(`u${i}`, `user${i}@example.org`));

describe('Directory lookups', () => {
  it('answers mailbox, alias and unknown, without regard to case', () => {
    const { directory } = setup();
    directory.replace(snap([user('1', 'Alice@Example.org', { aliases: ['Info@Example.org', 'sales@example.org'] })]));
    expect(directory.lookup('alice@example.org')).toMatchObject({ kind: 'mailbox', user: { id: '1', mailbox: 'alice@example.org' } });
    expect(directory.lookup('ALICE@EXAMPLE.ORG')).toMatchObject({ kind: 'mailbox', user: { id: '1' } });
    expect(directory.lookup('  alice@example.org ')).toMatchObject({ kind: 'mailbox' });
    expect(directory.lookup('INFO@example.ORG')).toMatchObject({ kind: 'alias', user: { id: '1', mailbox: 'alice@example.org' } });
    expect(directory.lookup('sales@example.org')).toMatchObject({ kind: 'alias' });
    expect(directory.lookup('bob@example.org')).toEqual({ kind: 'unknown' });
    expect(directory.lookup('')).toEqual({ kind: 'unknown' });
  });

  it('never serves an address that would break a map protocol or a mail path', () => {
    const { directory } = setup();
    const result = directory.replace(
      snap([
        user('1', 'alice@example.org', { aliases: ['a b@example.org', 'x,y@example.org', 'ok@example.org', '../etc@example.org', 'nul\u0000@example.org'] }),
        user('2', 'bad\r\n@example.org'),
        user('3', ''),
        user('4', '@example.org'),
      ]),
    );
    expect(result).toMatchObject({ applied: true, total: 1, skippedUsers: 3, skippedAliases: 4 });
    expect(directory.get('1')?.aliases).toEqual(['ok@example.org']);
    expect(directory.lookup('x,y@example.org')).toEqual({ kind: 'unknown' });
    expect(normalizeAddress('user@')).toBeUndefined();
    expect(normalizeAddress('a'.repeat(250) + '@x.org')).toBeUndefined();
    expect(normalizeAddress('Jörg@Example.org')).toBe('jörg@example.org');
  });

  it('resolves an address two users claim the same way every time: mailbox first, then the lowest id', () => {
    const { directory } = setup();
    directory.replace(
      snap([
        user('b', 'bob@example.org', { aliases: ['alice@example.org', 'team@example.org'] }),
        user('a', 'alice@example.org', { aliases: ['team@example.org'] }),
        user('c', 'carol@example.org', { aliases: ['team@example.org'] }),
      ]),
    );
    expect(directory.lookup('alice@example.org')).toMatchObject({ kind: 'mailbox', user: { id: 'a' } });
    expect(directory.lookup('team@example.org')).toMatchObject({ kind: 'alias', user: { id: 'a' } });
    expect(directory.stats().conflicts).toBe(2);
  });

  it('is not loaded until a set arrives, so callers can answer "try later" instead of "unknown user"', () => {
    const { directory } = setup();
    expect(directory.isLoaded()).toBe(false);
    expect(directory.stats()).toMatchObject({ loaded: false, users: 0 });
    directory.replace(snap([]));
    expect(directory.isLoaded()).toBe(true);
  });

  it('hands out frozen users, so a consumer cannot corrupt the index', () => {
    const { directory } = setup();
    directory.replace(snap([user('1', 'alice@example.org', { aliases: ['a@example.org'] })]));
    const verdict = directory.lookup('alice@example.org');
    if (verdict.kind !== 'mailbox') throw new Error('expected a mailbox');
    expect(Object.isFrozen(verdict.user)).toBe(true);
    expect(() => (verdict.user.aliases as string[]).push('evil@example.org')).toThrow();
  });
});

describe('Directory: disabled and removed users', () => {
  it('keeps mail flowing to a disabled user for the grace period, but refuses the login at once', () => {
    const { directory, clock } = setup({ graceSeconds: 3600 });
    directory.replace(snap([user('1', 'alice@example.org', { aliases: ['info@example.org'] }), ...team(9)]));
    expect(directory.isLoginAllowed('alice@example.org')).toBe(true);

    clock.now += 1000;
    const disabledAt = clock.now;
    const result = directory.replace(snap([user('1', 'alice@example.org', { aliases: ['info@example.org'], active: false }), ...team(9)]));
    expect(result).toMatchObject({ applied: true, disabled: 1, removed: 0 });
    expect(directory.isLoginAllowed('alice@example.org')).toBe(false);
    expect(directory.isLoginAllowed('info@example.org')).toBe(false);
    expect(directory.lookup('alice@example.org')).toEqual({
      kind: 'grace',
      user: expect.objectContaining({ id: '1', active: false }),
      until: new Date(disabledAt + HOUR),
    });
    expect(directory.lookup('INFO@example.org')).toMatchObject({ kind: 'grace' });

    clock.now = disabledAt + HOUR - 1;
    expect(directory.lookup('alice@example.org').kind).toBe('grace');
    clock.now = disabledAt + HOUR;
    expect(directory.lookup('alice@example.org')).toEqual({ kind: 'unknown' });
  });

  it('does not restart the grace period when a still disabled user comes again in the next sync', () => {
    const { directory, clock } = setup({ graceSeconds: 3600 });
    const others = team(9);
    directory.replace(snap([user('1', 'alice@example.org'), ...others]));
    const disabledAt = clock.now;
    directory.replace(snap([user('1', 'alice@example.org', { active: false }), ...others]));
    clock.now += HOUR / 2;
    directory.replace(snap([user('1', 'alice@example.org', { active: false }), ...others]));
    expect(directory.lookup('alice@example.org')).toMatchObject({ kind: 'grace', until: new Date(disabledAt + HOUR) });
  });

  it('gives a removed user the same grace period, and a returning user everything back', () => {
    const { directory, clock } = setup({ graceSeconds: 600 });
    const others = team(9);
    directory.replace(snap([user('1', 'alice@example.org'), ...others]));
    expect(directory.replace(snap(others))).toMatchObject({ applied: true, removed: 1 });
    expect(directory.lookup('alice@example.org')).toMatchObject({ kind: 'grace', user: { id: '1' } });
    expect(directory.isLoginAllowed('alice@example.org')).toBe(false);
    expect(directory.stats()).toMatchObject({ inGrace: 1, users: 9 });

    clock.now += 60_000;
    expect(directory.replace(snap([user('1', 'alice@example.org'), ...others]))).toMatchObject({ added: 1 });
    expect(directory.lookup('alice@example.org')).toMatchObject({ kind: 'mailbox' });
    expect(directory.isLoginAllowed('alice@example.org')).toBe(true);
    expect(directory.stats().inGrace).toBe(0);
  });

  it('gives no grace to a user first seen disabled: nobody knows when that happened', () => {
    const { directory } = setup();
    directory.replace(snap([user('1', 'alice@example.org', { active: false })]));
    expect(directory.lookup('alice@example.org')).toEqual({ kind: 'unknown' });
    expect(directory.isLoginAllowed('alice@example.org')).toBe(false);
    expect(directory.stats()).toMatchObject({ users: 1, active: 0, inactive: 1 });
  });

  it('with no grace period refuses mail as soon as the user is disabled', () => {
    const { directory } = setup({ graceSeconds: 0 });
    directory.replace(snap([user('1', 'alice@example.org'), ...team(9)]));
    directory.replace(snap([user('1', 'alice@example.org', { active: false }), ...team(9)]));
    expect(directory.lookup('alice@example.org')).toEqual({ kind: 'unknown' });
  });

  it('lets an active user take over an address a departed user had', () => {
    const { directory } = setup();
    const others = team(9);
    directory.replace(snap([user('1', 'alice@example.org', { aliases: ['info@example.org'] }), ...others]));
    directory.replace(snap([user('2', 'bob@example.org', { aliases: ['info@example.org'] }), ...others]));
    expect(directory.lookup('info@example.org')).toMatchObject({ kind: 'alias', user: { id: '2' } });
    expect(directory.lookup('alice@example.org')).toMatchObject({ kind: 'grace', user: { id: '1' } });
  });

  it('finds a departed user in grace even when an expired departure claims the same address', () => {
    const { directory, clock } = setup({ graceSeconds: 60 });
    directory.upsert(user('a', 'alice@example.org', { aliases: ['team@example.org'] }));
    directory.remove('a');
    clock.now += 50_000;
    directory.upsert(user('b', 'bob@example.org', { aliases: ['team@example.org'] }));
    directory.remove('b');
    clock.now += 20_000; // a's grace is over, b's is not, and nothing has pruned a yet
    expect(directory.lookup('team@example.org')).toMatchObject({ kind: 'grace', user: { id: 'b' } });
    expect(directory.lookup('alice@example.org')).toEqual({ kind: 'unknown' });
  });

  it('lists active users and those in grace, and prunes expired departures', () => {
    const { directory, clock, events } = setup({ graceSeconds: 60 });
    directory.replace(snap([user('1', 'alice@example.org'), user('2', 'bob@example.org'), ...team(8)]));
    directory.replace(snap([user('2', 'bob@example.org'), ...team(8)]));
    expect(directory.entries().map((e) => [e.user.id, e.state])).toContainEqual(['1', 'grace']);
    expect(directory.entries()).toHaveLength(10);
    clock.now += 61_000;
    expect(directory.entries()).toHaveLength(9);
    expect(directory.prune()).toBe(1);
    expect(events.at(-1)).toEqual({ type: 'expired', count: 1 });
    expect(directory.prune()).toBe(0);
  });
});

describe('Directory: token logins', () => {
  it('allows active users by mailbox or alias, in any case, and nobody else', () => {
    const { directory } = setup();
    directory.replace(
      snap([user('1', 'alice@example.org', { aliases: ['a.smith@example.org'] }), user('2', 'bob@example.org', { active: false })]),
    );
    expect(directory.isLoginAllowed('alice@example.org')).toBe(true);
    expect(directory.isLoginAllowed('Alice@EXAMPLE.org')).toBe(true);
    expect(directory.isLoginAllowed('A.Smith@example.org')).toBe(true);
    expect(directory.isLoginAllowed('bob@example.org')).toBe(false);
    expect(directory.isLoginAllowed('carol@example.org')).toBe(false);
    expect(directory.isLoginAllowed('alice@example.org\r\n')).toBe(false);
    expect(directory.isLoginAllowed(' alice@example.org')).toBe(false);
    expect(directory.isLoginAllowed('alice@example.org\u0000')).toBe(false);
    expect(directory.isLoginAllowed('')).toBe(false);
  });

  it('tells a disabled or removed user from one it never knew', () => {
    const { directory, clock } = setup({ graceSeconds: 3600 });
    directory.replace(
      snap([
        user('1', 'alice@example.org', { aliases: ['info@example.org'] }),
        user('2', 'bob@example.org', { active: false, aliases: ['bobby@example.org'] }),
        user('3', 'carol@example.org'),
        ...team(9),
      ]),
    );
    expect(directory.loginVerdict('Alice@example.org')).toBe('allowed');
    expect(directory.loginVerdict('info@example.org')).toBe('allowed');
    // Listed as disabled (first seen so: no grace period), by mailbox and alias.
    expect(directory.loginVerdict('bob@example.org')).toBe('disabled');
    expect(directory.loginVerdict('BOBBY@example.org')).toBe('disabled');
    expect(directory.loginVerdict('mallory@example.org')).toBe('unknown');
    expect(directory.loginVerdict(' alice@example.org')).toBe('unknown');

    // Removed: disabled while in grace, unknown once the grace period is over.
    directory.replace(snap([user('1', 'alice@example.org', { aliases: ['info@example.org'] }), user('2', 'bob@example.org', { active: false }), ...team(9)]));
    expect(directory.loginVerdict('carol@example.org')).toBe('disabled');
    expect(directory.loginVerdict('bobby@example.org')).toBe('unknown');
    clock.now += 2 * HOUR;
    directory.prune();
    expect(directory.loginVerdict('carol@example.org')).toBe('unknown');

    // Incremental updates keep the verdicts in step.
    directory.upsert(user('2', 'bob@example.org'));
    expect(directory.loginVerdict('bob@example.org')).toBe('allowed');
    directory.upsert(user('4', 'dave@example.org', { active: false }));
    expect(directory.loginVerdict('dave@example.org')).toBe('disabled');
    directory.remove('4');
    expect(directory.loginVerdict('dave@example.org')).toBe('unknown');
  });
});

describe('Directory: mass-removal guard', () => {
  it('holds back a sync that would remove more than the allowed share, and says so', () => {
    const { directory, events } = setup({ maxRemovalShare: 0.2 });
    directory.replace(snap(team(10)));
    const result = directory.replace(snap(team(10).slice(3)));
    expect(result).toEqual({
      applied: false,
      reason: 'mass_removal',
      removals: 3,
      activeBefore: 10,
      share: 0.3,
      maxRemovalShare: 0.2,
      sample: ['user0@example.org', 'user1@example.org', 'user2@example.org'],
    });
    expect(events.at(-1)).toMatchObject({ type: 'held', source: 'test', removals: 3, activeBefore: 10 });
    // Nothing changed: all ten still receive mail and may log in.
    expect(directory.lookup('user0@example.org').kind).toBe('mailbox');
    expect(directory.isLoginAllowed('user2@example.org')).toBe(true);
    expect(directory.stats()).toMatchObject({ active: 10, held: { removals: 3, activeBefore: 10 } });
  });

  it('counts disabling like removing', () => {
    const { directory } = setup({ maxRemovalShare: 0.2 });
    directory.replace(snap(team(10)));
    const disabled = team(10).map((u, i) => (i < 3 ? { ...u, active: false } : u));
    expect(directory.replace(snap(disabled))).toMatchObject({ applied: false, removals: 3 });
    expect(directory.isLoginAllowed('user0@example.org')).toBe(true);
  });

  it('lets a sync within the share through, and the next held one is judged against the new set', () => {
    const { directory } = setup({ maxRemovalShare: 0.2 });
    directory.replace(snap(team(10)));
    expect(directory.replace(snap(team(10).slice(2)))).toMatchObject({ applied: true, removed: 2 });
    expect(directory.stats().held).toBeUndefined();
  });

  it('always lets a few removals through, so a small directory can lose one person', () => {
    const { directory } = setup({ maxRemovalShare: 0.2, maxRemovalsAlwaysAllowed: 2 });
    directory.replace(snap(team(3)));
    expect(directory.replace(snap(team(3).slice(1)))).toMatchObject({ applied: true, removed: 1 });
    expect(directory.replace(snap(team(3).slice(2)))).toMatchObject({ applied: true, removed: 1 });
  });

  it('never lets an empty answer wipe a non-empty directory', () => {
    const { directory } = setup({ maxRemovalShare: 0.5, maxRemovalsAlwaysAllowed: 5 });
    directory.replace(snap(team(2)));
    expect(directory.replace(snap([]))).toMatchObject({ applied: false, removals: 2, share: 1 });
    expect(directory.lookup('user1@example.org').kind).toBe('mailbox');
  });

  it('applies a held set when forced', () => {
    const { directory, events } = setup({ maxRemovalShare: 0.2 });
    directory.replace(snap(team(10)));
    expect(directory.replace(snap([]), { force: true })).toMatchObject({ applied: true, removed: 10 });
    expect(events.at(-1)).toMatchObject({ type: 'replaced', forced: true, removed: 10 });
    expect(directory.isLoginAllowed('user0@example.org')).toBe(false);
    expect(directory.lookup('user0@example.org').kind).toBe('grace');
  });

  it('is off with maxRemovalShare 1', () => {
    const { directory } = setup({ maxRemovalShare: 1 });
    directory.replace(snap(team(10)));
    expect(directory.replace(snap([]))).toMatchObject({ applied: true, removed: 10 });
  });

  it('does not count users who come back under new ids with the same mailboxes (a switched source)', () => {
    const { directory } = setup({ maxRemovalShare: 0.2 });
    directory.replace(snap(team(10), 'authentik'));
    const renumbered = team(10).map((u) => ({ ...u, id: `scim-${u.id}` }));
    expect(directory.replace(snap(renumbered, 'scim'))).toMatchObject({ applied: true, total: 10 });
    expect(directory.lookup('user4@example.org')).toMatchObject({ kind: 'mailbox', user: { id: 'scim-u4' } });
    expect(directory.isLoginAllowed('user4@example.org')).toBe(true);
  });

  it('does not count users that were already disabled', () => {
    const { directory } = setup({ maxRemovalShare: 0.2, maxRemovalsAlwaysAllowed: 0 });
    const users = team(10).map((u, i) => (i < 5 ? { ...u, active: false } : u));
    directory.replace(snap(users));
    expect(directory.replace(snap(users.slice(5)))).toMatchObject({ applied: true, removed: 0 });
  });
});

describe('Directory: incremental updates', () => {
  it('adds, changes, disables and removes single users', () => {
    const { directory, clock, events } = setup({ graceSeconds: 60 });
    directory.upsert(user('1', 'alice@example.org', { aliases: ['old@example.org'] }));
    expect(directory.isLoaded()).toBe(true);
    expect(events.at(-1)).toEqual({ type: 'upserted', id: '1', mailbox: 'alice@example.org', active: true, created: true });
    expect(directory.lookup('old@example.org').kind).toBe('alias');

    directory.upsert(user('1', 'alice@example.org', { aliases: ['new@example.org'] }));
    expect(events.at(-1)).toMatchObject({ type: 'upserted', created: false });
    expect(directory.lookup('old@example.org').kind).toBe('unknown');
    expect(directory.lookup('new@example.org').kind).toBe('alias');

    directory.upsert(user('1', 'alice@example.org', { aliases: ['new@example.org'], active: false }));
    expect(directory.isLoginAllowed('alice@example.org')).toBe(false);
    expect(directory.lookup('new@example.org')).toMatchObject({ kind: 'grace', until: new Date(clock.now + 60_000) });

    directory.upsert(user('1', 'alice@example.org', { aliases: ['new@example.org'] }));
    expect(directory.isLoginAllowed('alice@example.org')).toBe(true);
    expect(directory.lookup('new@example.org').kind).toBe('alias');

    directory.remove('1');
    expect(events.at(-1)).toEqual({ type: 'removed', id: '1', mailbox: 'alice@example.org' });
    expect(directory.isLoginAllowed('alice@example.org')).toBe(false);
    expect(directory.lookup('alice@example.org').kind).toBe('grace');
    const count = events.length;
    directory.remove('1');
    expect(events).toHaveLength(count);
    clock.now += 60_000;
    expect(directory.lookup('alice@example.org').kind).toBe('unknown');
  });

  it('keeps the original grace period when a disabled user is updated again', () => {
    const { directory, clock } = setup({ graceSeconds: 60 });
    directory.upsert(user('1', 'alice@example.org'));
    const disabledAt = clock.now;
    directory.upsert(user('1', 'alice@example.org', { active: false }));
    clock.now += 30_000;
    directory.upsert(user('1', 'alice@example.org', { active: false, aliases: ['x@example.org'] }));
    expect(directory.lookup('x@example.org')).toMatchObject({ kind: 'grace', until: new Date(disabledAt + 60_000) });
    directory.remove('1');
    expect(directory.lookup('alice@example.org')).toMatchObject({ kind: 'grace', until: new Date(disabledAt + 60_000) });
  });

  it('refuses a user without a usable mailbox or id, storing nothing', () => {
    const { directory } = setup();
    expect(() => directory.upsert(user('1', 'not an address'))).toThrow(DirectoryInputError);
    expect(() => directory.upsert(user('1', 'not an address'))).toThrow(/mailbox is not a usable address/);
    expect(() => directory.upsert(user(' ', 'alice@example.org'))).toThrow(/no id/);
    expect(directory.stats().users).toBe(0);
    expect(directory.isLoaded()).toBe(false);
  });

  it('lists the current set, active or not', () => {
    const { directory } = setup();
    directory.upsert(user('1', 'alice@example.org'));
    directory.upsert(user('2', 'bob@example.org', { active: false }));
    expect(directory.list().map((u) => [u.id, u.active])).toEqual([
      ['1', true],
      ['2', false],
    ]);
    expect(directory.isReady()).toBe(true);
  });

  it('handles a renamed mailbox: the new address works, the old one is gone', () => {
    const { directory } = setup();
    directory.upsert(user('1', 'alice@example.org'));
    directory.upsert(user('1', 'alice.smith@example.org'));
    expect(directory.lookup('alice.smith@example.org').kind).toBe('mailbox');
    expect(directory.lookup('alice@example.org').kind).toBe('unknown');
  });
});

describe('Directory: state', () => {
  it('exports and restores the set with its grace periods', () => {
    const { directory, clock } = setup({ graceSeconds: 3600 });
    directory.replace(snap([user('1', 'alice@example.org', { aliases: ['info@example.org'], groups: ['mail'] }), ...team(9)]));
    directory.replace(snap(team(9)));
    const state = JSON.parse(JSON.stringify(directory.exportState()));

    const restored = setup({ graceSeconds: 3600 });
    restored.clock.now = clock.now + 1000;
    restored.directory.restore(state);
    expect(restored.events.at(-1)).toEqual({ type: 'restored', source: 'test', users: 9 });
    expect(restored.directory.lookup('user3@example.org').kind).toBe('mailbox');
    expect(restored.directory.lookup('info@example.org')).toMatchObject({ kind: 'grace', until: new Date(clock.now + HOUR) });
    expect(restored.directory.isLoginAllowed('alice@example.org')).toBe(false);
    // The restored set is the base the guard judges the next sync against.
    expect(restored.directory.replace(snap([]))).toMatchObject({ applied: false, activeBefore: 9 });
  });

  it('reports what a sync changed', () => {
    const { directory } = setup({ maxRemovalShare: 1 });
    directory.replace(snap(team(4)));
    const next = [
      { ...team(4)[0]!, aliases: ['x@example.org'] },
      { ...team(4)[1]!, active: false },
      team(4)[2]!,
      user('new', 'new@example.org'),
    ];
    expect(directory.replace(snap(next))).toEqual({
      applied: true,
      added: 1,
      removed: 1,
      disabled: 1,
      changed: 1,
      total: 4,
      active: 3,
      skippedUsers: 0,
      skippedAliases: 0,
    });
  });
});

describe('Directory properties', () => {
  const local = fc.stringMatching(/^[a-zA-Z0-9._+-]{1,20}$/);
  const domain = fc.constantFrom('example.org', 'Example.COM', 'mail.test');
  const address = fc.tuple(local, domain).map(([l, d]) => `${l}@${d}`);
  const mixCase = (s: string, flips: boolean[]) =>
    [...s].map((c, i) => (flips[i % flips.length] ? c.toUpperCase() : c.toLowerCase())).join('');

  it('finds every active user by any casing of its mailbox, and logs in exactly the active ones', () => {
    fc.assert(
      fc.property(
        fc.uniqueArray(fc.record({ mailbox: address, active: fc.boolean() }), {
          minLength: 1,
          maxLength: 30,
          selector: (u) => u.mailbox.toLowerCase(),
        }),
        fc.array(fc.boolean(), { minLength: 1, maxLength: 8 }),
        (specs, flips) => {
          const { directory } = setup();
          directory.replace(snap(specs.map((s, i) => user(`id${i}`, s.mailbox, { active: s.active }))));
          specs.forEach((s, i) => {
            const asked = mixCase(s.mailbox, flips);
            expect(directory.isLoginAllowed(asked)).toBe(s.active);
            const verdict = directory.lookup(asked);
            if (s.active) expect(verdict).toMatchObject({ kind: 'mailbox', user: { id: `id${i}` } });
            else expect(verdict.kind).toBe('unknown');
          });
        },
      ),
    );
  });

  it('applies the same set twice with nothing to report the second time', () => {
    fc.assert(
      fc.property(
        fc.array(fc.record({ mailbox: address, aliases: fc.array(address, { maxLength: 3 }), active: fc.boolean() }), {
          maxLength: 20,
        }),
        (specs) => {
          const { directory } = setup({ maxRemovalShare: 1 });
          const users = specs.map((s, i) => user(`id${i}`, s.mailbox, { aliases: s.aliases, active: s.active }));
          directory.replace(snap(users));
          const again = directory.replace(snap(users));
          expect(again).toMatchObject({ applied: true, added: 0, removed: 0, disabled: 0, changed: 0 });
        },
      ),
    );
  });

  it('incremental updates end in the same answers as one full sync of the final set', () => {
    fc.assert(
      fc.property(
        fc.array(
          fc.record({ id: fc.constantFrom('a', 'b', 'c', 'd'), mailbox: address, alias: address, active: fc.boolean(), remove: fc.boolean() }),
          { maxLength: 25 },
        ),
        fc.array(address, { minLength: 1, maxLength: 10 }),
        (ops, probes) => {
          const incremental = setup({ graceSeconds: 0 });
          const final = new Map<string, DirectoryUser>();
          for (const op of ops) {
            if (op.remove) {
              incremental.directory.remove(op.id);
              final.delete(op.id);
            } else {
              const u = user(op.id, op.mailbox, { aliases: [op.alias], active: op.active });
              incremental.directory.upsert(u);
              final.set(op.id, u);
            }
          }
          const full = setup({ graceSeconds: 0, maxRemovalShare: 1 });
          full.directory.replace(snap([...final.values()]));
          const asked = [...probes, ...[...final.values()].flatMap((u) => [u.mailbox, ...u.aliases])];
          for (const a of asked) {
            expect(incremental.directory.lookup(a)).toEqual(full.directory.lookup(a));
            expect(incremental.directory.isLoginAllowed(a)).toBe(full.directory.isLoginAllowed(a));
          }
        },
      ),
    );
  });
});

/**
 * A small in-memory directory for tests of what serves the directory (SCIM, socketmap,
 * passwd-file): users by id, grace counted from when a user was disabled or removed, a clock
 * that tests move forward, and switches for "not ready yet" and "lookups fail".
 */
import type { AddressVerdict, DirectoryUser } from '../../src/directory/model.js';

export class MemoryDirectory {
  readonly users = new Map<string, DirectoryUser>();
  readonly removed = new Map<string, DirectoryUser>();
  readonly since = new Map<string, number>();
  /** Moves this directory's clock forward, to get past grace periods without waiting. */
  offsetMs = 0;
  ready = true;
  failing = false;

  constructor(readonly graceMs = 0) {}

  now(): number {
    return Date.now() + this.offsetMs;
  }

  isReady(): boolean {
    return this.ready;
  }

  lookup(address: string): AddressVerdict {
    if (this.failing) throw new Error('database down');
    for (const user of [...this.users.values(), ...this.removed.values()]) {
      const kind = user.mailbox === address ? 'mailbox' : user.aliases.includes(address) ? 'alias' : undefined;
      if (kind === undefined) continue;
      if (user.active && this.users.has(user.id)) return { kind, user };
      const until = (this.since.get(user.id) ?? 0) + this.graceMs;
      if (this.now() < until) return { kind: 'grace', user, until: new Date(until) };
    }
    return { kind: 'unknown' };
  }

  upsert(user: DirectoryUser): void {
    const before = this.users.get(user.id);
    if (!user.active && (before === undefined || before.active)) this.since.set(user.id, this.now());
    this.removed.delete(user.id);
    this.users.set(user.id, structuredClone(user));
  }

  remove(id: string): void {
    const user = this.users.get(id);
    if (user === undefined) return;
    this.users.delete(id);
    this.removed.set(id, user);
    if (user.active) this.since.set(id, this.now());
  }

  list(): DirectoryUser[] {
    return [...this.users.values()];
  }
}

/**
 * An in-memory AppPasswordService for tests of the self-service page: the same contract as the
 * real store (format of the password, refusals, revocation, expiry, verification), none of its
 * storage. Tests only.
 */
import { createHmac, randomBytes, randomInt, timingSafeEqual } from 'node:crypto';
import type {
  AppPasswordRecord,
  AppPasswordRefusal,
  AppPasswordService,
  CreatedAppPassword,
} from '../../src/auth/app-passwords.js';
import type { MailProtocol } from '../../src/config/schema.js';

/** A refusal as the service names it. */
export class MemoryAppPasswordError extends Error {
  readonly code: AppPasswordRefusal;
  constructor(readonly refusal: AppPasswordRefusal) {
    super(`app password not created: ${refusal}`);
    this.code = refusal;
  }
}

interface Stored {
  record: AppPasswordRecord;
  hash: Buffer;
  revoked: boolean;
}

const ALL: MailProtocol[] = ['imap', 'smtp', 'pop3', 'sieve'];

/** 28 lowercase letters in seven groups of four. */
function newPassword(): string {
  const letters = Array.from({ length: 28 }, () => String.fromCharCode(97 + randomInt(26))).join('');
  return letters.match(/.{4}/g)!.join('-');
}

function normalise(password: string): string | undefined {
  const letters = password.replace(/[-\s]/g, '').toLowerCase();
  return /^[a-z]{28}$/.test(letters) ? letters : undefined;
}

/** The in-memory service; `now` is injectable for expiry. */
export class MemoryAppPasswords implements AppPasswordService {
  private readonly key = randomBytes(32);
  private readonly stored: Stored[] = [];
  /** Every password created, so tests can register them as secrets. */
  readonly created: string[] = [];

  constructor(private readonly options: { maxPerUser?: number; now?: () => number } = {}) {}

  private now(): number {
    return (this.options.now ?? Date.now)();
  }

  private live(user?: string): Stored[] {
    return this.stored.filter(
      (s) => !s.revoked && (user === undefined || s.record.user === user) && (s.record.expiresAt === undefined || s.record.expiresAt.getTime() > this.now()),
    );
  }

  private hash(letters: string): Buffer {
    return createHmac('sha256', this.key).update(letters).digest();
  }

  async create(input: { user: string; label: string; protocols?: MailProtocol[]; expiresAt?: Date }): Promise<CreatedAppPassword> {
    const label = input.label.trim();
    if (label === '' || label.length > 64 || /[\p{Cc}]/u.test(label)) throw new MemoryAppPasswordError('bad_label');
    const protocols = input.protocols ?? ALL;
    if (protocols.length === 0 || protocols.some((p) => !ALL.includes(p))) throw new MemoryAppPasswordError('bad_protocols');
    const mine = this.live(input.user);
    if (mine.some((s) => s.record.label === label)) throw new MemoryAppPasswordError('duplicate_label');
    if (mine.length >= (this.options.maxPerUser ?? 50)) throw new MemoryAppPasswordError('too_many');
    const password = newPassword();
    const record: AppPasswordRecord = {
      id: randomBytes(9).toString('base64url'),
      user: input.user,
      label,
      protocols: [...protocols],
      createdAt: new Date(this.now()),
      expiresAt: input.expiresAt,
      lastUse: undefined,
    };
    this.stored.push({ record, hash: this.hash(normalise(password)!), revoked: false });
    this.created.push(password);
    return { password, record: { ...record } };
  }

  async list(user?: string): Promise<AppPasswordRecord[]> {
    return this.live(user)
      .map((s) => ({ ...s.record }))
      .sort((a, b) => b.createdAt.getTime() - a.createdAt.getTime());
  }

  async revokeById(user: string, id: string): Promise<boolean> {
    const found = this.live(user).find((s) => s.record.id === id);
    if (found) found.revoked = true;
    return found !== undefined;
  }

  async revokeByLabel(user: string, label: string): Promise<boolean> {
    const found = this.live(user).find((s) => s.record.label === label);
    if (found) found.revoked = true;
    return found !== undefined;
  }

  async revokeAll(user: string): Promise<number> {
    const mine = this.live(user);
    for (const s of mine) s.revoked = true;
    return mine.length;
  }

  async verify(user: string, password: string, protocol: MailProtocol, address: string): Promise<AppPasswordRecord | undefined> {
    const letters = normalise(password);
    if (letters === undefined) return undefined;
    const hash = this.hash(letters);
    const found = this.live(user).find((s) => s.record.protocols.includes(protocol) && timingSafeEqual(s.hash, hash));
    if (!found) return undefined;
    found.record.lastUse = { at: new Date(this.now()), address, protocol };
    return { ...found.record };
  }

  async close(): Promise<void> {}
}

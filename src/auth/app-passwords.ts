import type { MailProtocol } from '../config/schema.js';
import { GateError } from '../errors.js';

/** Where and how an app password was last used. */
export interface AppPasswordUse {
  at: Date;
  address: string;
  protocol: MailProtocol;
}

/** One app password as it may be shown: never the password, never its hash. */
export interface AppPasswordRecord {
  /** Stable, random, not secret: what a page or a script names it by. */
  id: string;
  /** The mail user it logs in as (the canonical address the provider names). */
  user: string;
  /** The user's name for it ("phone", "printer"); unique among the user's live passwords. */
  label: string;
  protocols: MailProtocol[];
  createdAt: Date;
  /** Unset: it does not expire. */
  expiresAt: Date | undefined;
  lastUse: AppPasswordUse | undefined;
}

/** What creating an app password gives back: the password itself, shown once and never stored. */
export interface CreatedAppPassword {
  password: string;
  record: AppPasswordRecord;
}

/** What a caller asks for when creating an app password. */
export interface AppPasswordRequest {
  user: string;
  label: string;
  protocols?: MailProtocol[];
  expiresAt?: Date;
  createdBy?: 'user' | 'admin';
}

/** Why an app password was not created. */
export type AppPasswordRefusal = 'duplicate_label' | 'too_many' | 'bad_label' | 'bad_protocols';

/**
 * App passwords: created after a sign-in (or by an admin), checked at password logins, revoked by
 * the user, the admin or the directory. Every method reads the shared store, so a change made by
 * another process (the admin command line) counts at once.
 */
export interface AppPasswordService {
  /** Creates a password for `user`; rejects with an `AppPasswordError` naming an {@link AppPasswordRefusal}. */
  create(input: AppPasswordRequest): Promise<CreatedAppPassword>;
  /** The live (unrevoked, unexpired) passwords of `user`, or of every user; newest first. */
  list(user?: string): Promise<AppPasswordRecord[]>;
  /** Revokes one of `user`'s passwords by id; false when `user` has no such live password. */
  revokeById(user: string, id: string): Promise<boolean>;
  /** Revokes one of `user`'s passwords by label; false when `user` has no such live password. */
  revokeByLabel(user: string, label: string): Promise<boolean>;
  /** Revokes every password of `user` (the directory disabled or removed them); returns how many. */
  revokeAll(user: string, reason: 'directory' | 'admin'): Promise<number>;
  /**
   * The live password of `user` that `password` is, if it is one and `protocol` is in its scope;
   * records the use (throttled). Compares keyed hashes in constant time.
   */
  verify(user: string, password: string, protocol: MailProtocol, address: string): Promise<AppPasswordRecord | undefined>;
  /** Writes pending last-use records and releases the store. */
  close(): Promise<void>;
}

/** An app password that was not created, and why (stable `code`, safe to show its creator). */
export class AppPasswordError extends GateError {
  declare readonly code: AppPasswordRefusal;
  constructor(code: AppPasswordRefusal, message: string) {
    super(code, message, { clientMessage: message });
    this.name = 'AppPasswordError';
  }
}

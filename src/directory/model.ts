/**
 * The mail-user directory fed by the OpenID provider: who may receive mail and log in, under
 * which addresses. Sources (the provider's API, SCIM pushes, a static file) produce users; the
 * directory keeps the last good set, and the mail server asks it through the interfaces it
 * already has (a Postfix socketmap, a Dovecot userdb).
 */

/** One user as a source knows them. */
export interface DirectoryUser {
  /** The source's stable id (Authentik pk/uuid, Keycloak id, SCIM id). */
  id: string;
  /** The mailbox name: the address mail is delivered to and the login name (lower case). */
  mailbox: string;
  /** Further addresses that deliver to the mailbox (lower case). */
  aliases: string[];
  /** False when the provider disabled the user. */
  active: boolean;
  /** Group names, for selecting who is a mail user. */
  groups: string[];
}

/** A complete set of users from one source at one time. */
export interface DirectorySnapshot {
  source: string;
  /** ISO time of the fetch. */
  fetchedAt: string;
  users: DirectoryUser[];
}

/** A place users come from. `fetchAll` rejects (never resolves empty) when the source is unreachable. */
export interface DirectorySource {
  readonly name: string;
  fetchAll(): Promise<DirectoryUser[]>;
}

/** What the directory says about an address. */
export type AddressVerdict =
  | { kind: 'mailbox'; user: DirectoryUser }
  | { kind: 'alias'; user: DirectoryUser }
  /** Disabled or removed, but still within the grace period for mail. */
  | { kind: 'grace'; user: DirectoryUser; until: Date }
  | { kind: 'unknown' };

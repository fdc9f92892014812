import type { SecureContext } from 'node:tls';
import type { Logger } from 'pino';
import type { AppPasswordService } from '../auth/app-passwords.js';
import type { TokenValidator } from '../auth/validator.js';
import type { LimitsConfig } from '../config/schema.js';
import type { Metrics } from '../observe/metrics.js';
import type { FailureStore } from './failures.js';

/** The directory's word on a token user: only active mail users may log in. */
export type DirectoryVerdict = (identity: string) => 'allowed' | 'disabled' | 'unknown' | 'not_loaded';

/**
 * What every protocol's client connection is given. Every field is required (`undefined` says
 * "none" out loud), so a context that forgets one, or a renamed field, does not compile.
 */
export interface SessionOptions {
  listener: string;
  limits: LimitsConfig;
  log: Logger;
  /** The client's real address when a trusted PROXY header named it; else the socket's peer. */
  clientAddress: { address: string; port: number } | undefined;
  /** On a STARTTLS listener: the certificate to upgrade with (looked up when the client asks). */
  starttls: (() => SecureContext) | undefined;
  /** Failed logins by address and user name, shared by all connections, for growing delays. */
  failures: FailureStore;
  metrics: Metrics;
  validator: TokenValidator;
  oauth: { issuer: string; scope: string };
  /** The Dovecot master user token users are logged in with; password logins may never reach it. */
  master: { user: string; password: string; separator: string };
  /** Unset when there is no directory. */
  directoryVerdict: DirectoryVerdict | undefined;
  /** With `appPasswords.enabled`: the store PLAIN and LOGIN passwords are checked against first. */
  appPasswords: AppPasswordService | undefined;
  /** `appPasswords.only`: a password that is not a live app password is refused, never forwarded. */
  appPasswordsOnly: boolean;
}

/** What a listener passes per connection; the rest of {@link SessionOptions} is shared. */
export type ConnectionParameters = Pick<SessionOptions, 'listener' | 'clientAddress' | 'starttls'>;

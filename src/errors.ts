/**
 * Typed errors. Each carries a stable `code` (also the reason code in logs), whether the failure
 * is temporary (provider or backend trouble: the client must not drop its credentials) and a
 * message that is safe to show the client. Protocol replies are chosen from these in one place
 * per protocol.
 */

/** Reason codes that end an authentication attempt. */
export type AuthFailureCode =
  | 'bad_token'
  | 'expired'
  | 'not_yet_valid'
  | 'wrong_issuer'
  | 'wrong_audience'
  | 'wrong_user'
  | 'bad_algorithm'
  | 'unknown_key'
  | 'no_identity'
  | 'bad_identity'
  | 'bad_sasl'
  | 'inactive'
  | 'insufficient_scope'
  | 'email_not_verified'
  | 'domain_not_allowed'
  | 'missing_claim'
  | 'user_disabled'
  | 'unknown_user'
  | 'wrong_token_type'
  | 'master_user_refused'
  | 'backend_refused'
  | 'provider_unavailable'
  | 'backend_unavailable';

/** Error with a stable code; `temporary` failures map to NO [UNAVAILABLE] / 454. */
export class GateError extends Error {
  readonly code: string;
  readonly temporary: boolean;
  /** Text that may be shown to the client; never contains secrets. */
  readonly clientMessage: string | undefined;

  constructor(
    code: string,
    message: string,
    options: { temporary?: boolean; clientMessage?: string; cause?: unknown } = {},
  ) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'GateError';
    this.code = code;
    this.temporary = options.temporary ?? false;
    this.clientMessage = options.clientMessage;
  }
}

/**
 * A failed authentication: a rejected credential, or a temporary failure of the provider.
 * Transport failures of a backend are BackendError (`backend_unavailable` stays in the code list
 * because outcomes and metrics name it as a reason).
 */
export class AuthError extends GateError {
  declare readonly code: AuthFailureCode;
  constructor(code: AuthFailureCode, message: string, options: { cause?: unknown } = {}) {
    super(code, message, {
      temporary: code === 'provider_unavailable' || code === 'backend_unavailable',
      cause: options.cause,
    });
    this.name = 'AuthError';
  }
}

/**
 * A backend (Dovecot, Postfix) that could not be reached or did not hold up its side of the
 * conversation: refused or timed-out connection, a connection closed midway, a reply that cannot
 * be parsed. Always temporary: it says nothing about the client's credentials.
 */
export class BackendError extends GateError {
  declare readonly code: 'backend_unavailable';
  constructor(message: string, options: { cause?: unknown } = {}) {
    super('backend_unavailable', message, { temporary: true, cause: options.cause });
    this.name = 'BackendError';
  }
}

/** A configuration problem, naming the offending key. */
export class ConfigError extends GateError {
  readonly key: string;
  constructor(key: string, message: string) {
    super('config_invalid', `${key}: ${message}`);
    this.name = 'ConfigError';
    this.key = key;
  }
}

/** Malformed SASL data from a client (bad base64, bad GS2 header, ...). */
export class SaslError extends GateError {
  constructor(message: string) {
    super('bad_sasl', message, { clientMessage: message });
    this.name = 'SaslError';
  }
}

/** A command line sasl-gate cannot run: an unknown option or argument, a bad value. */
export class UsageError extends GateError {
  constructor(message: string) {
    super('usage', message);
    this.name = 'UsageError';
  }
}

/** A broken invariant of sasl-gate's own code (never the client's doing): a bug to report. */
export class InternalError extends GateError {
  constructor(message: string) {
    super('internal', message);
    this.name = 'InternalError';
  }
}

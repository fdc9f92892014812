/**
 * Why a load-test transaction failed. The kinds are part of the harness's output contract
 * (`errors` in `--json`), so scripts can tell a refused credential from an overloaded server.
 */
import { GateError } from '../errors.js';

/** Every kind of failure, in the order reports list them. */
export const ERROR_KINDS = [
  /** TCP connect failed: refused, unreachable, reset before the connection stood. */
  'connect',
  /** TLS handshake failed: certificate not trusted, protocol or cipher mismatch. */
  'tls',
  /** The server greeted with a refusal (`* BYE`, `421`, `554`): a connection limit, usually. */
  'refused',
  /** Credentials refused: IMAP `NO` to AUTHENTICATE, SMTP `535`. */
  'auth_rejected',
  /** Temporary login failure: IMAP `NO [UNAVAILABLE]`, SMTP `454` (and other `4xx` to AUTH). */
  'auth_temporary',
  /** A command after login was refused (`NO`/`BAD`, SMTP `4xx`/`5xx` to MAIL, RCPT, DATA). */
  'command_failed',
  /** No answer within `--timeout`. */
  'timeout',
  /** The server closed the connection in the middle of an exchange. */
  'closed',
  /** A reply the harness could not make sense of. */
  'protocol',
] as const;

export type ErrorKind = (typeof ERROR_KINDS)[number];

/** A failed step of a transaction, with the kind it counts as. */
export class LoadError extends GateError {
  constructor(
    readonly kind: ErrorKind,
    message: string,
  ) {
    super(`load_${kind}`, message);
    this.name = 'LoadError';
  }
}

/** Turns anything thrown during a transaction into a {@link LoadError}. */
export function toLoadError(err: unknown): LoadError {
  if (err instanceof LoadError) return err;
  const message = err instanceof Error ? err.message : String(err);
  return new LoadError('protocol', message);
}

/** A server line for an error message: printable, bounded. */
export function quote(line: string, max = 160): string {
  const clean = line.replace(/[^\x20-\x7e]/g, '?');
  return clean.length > max ? `${clean.slice(0, max)}...` : clean;
}

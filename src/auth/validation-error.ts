import { AuthError } from '../errors.js';
import type { StrategyReport } from './chain.js';

/**
 * The decisive failure of a token validation, with what each strategy concluded up to it (for
 * `check-token`, `doctor` and logs). Code, message and `temporary` are those of the failure.
 */
export class ValidationError extends AuthError {
  readonly reports: readonly StrategyReport[];
  constructor(failure: AuthError, reports: readonly StrategyReport[]) {
    super(failure.code, failure.message, { cause: failure.cause });
    this.name = 'ValidationError';
    this.reports = reports;
  }
}

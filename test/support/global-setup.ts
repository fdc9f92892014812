/**
 * vitest globalSetup: makes sure the real programs the integration tests run against are present
 * before any test file starts (installing them once, not per worker).
 */
import { ensureDovecotInstalled } from '../../src/devstack/dovecot.js';
import { ensurePostfixInstalled } from '../../src/devstack/postfix.js';

/** Prepares the machine for the integration tests. */
export default async function setup(): Promise<void> {
  const steps: Array<() => Promise<void>> = [ensureDovecotInstalled, ensurePostfixInstalled];
  for (const step of steps) await step();
}

/**
 * vitest globalSetup: makes sure the real programs the integration tests run against are present
 * before any test file starts (installing them once, not per worker), and at the very end checks
 * that no secret any test used appears in any log sasl-gate wrote during the whole run.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ensureDovecotInstalled } from '../../tools/dovecot.js';
import { haproxyBin } from '../../tools/haproxy.js';
import { ensurePostfixInstalled } from '../../tools/postfix.js';
import { postgresBin } from '../../tools/postgres.js';
import { EVIDENCE_ENV, evidenceCounts, findLeaks } from './evidence.js';

/** Prepares the machine for the integration tests; the returned teardown runs the secret scan. */
export default async function setup(): Promise<() => void> {
  const steps: Array<() => Promise<unknown>> = [ensureDovecotInstalled, ensurePostfixInstalled, postgresBin, haproxyBin];
  for (const step of steps) await step();
  const evidence = mkdtempSync(join(tmpdir(), 'sasl-gate-evidence-'));
  process.env[EVIDENCE_ENV] = evidence;
  return () => {
    const counts = evidenceCounts(evidence);
    const leaks = findLeaks(evidence);
    if (leaks.length > 0) {
      const list = leaks.map((l) => `${l.kind} (${l.length} characters) in ${l.log}`).join('\n  ');
      throw new Error(`secrets found in sasl-gate's logs (evidence kept in ${evidence}):\n  ${list}`);
    }
    process.stdout.write(
      `no secret in any log: ${counts.secrets} secrets checked against ${counts.logs} logs (${counts.logBytes} bytes)\n`,
    );
    rmSync(evidence, { recursive: true, force: true });
  };
}

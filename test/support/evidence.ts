/**
 * Every secret the integration tests use (tokens, passwords, the master password, client
 * secrets, SASL messages) and every log line sasl-gate wrote, collected across all test files,
 * so one check at the end of the run can prove no secret ever reached a log.
 */
import { appendFileSync, mkdirSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

/** Where the evidence of this run is collected; set by the global setup for every worker (not
 * SASL_GATE_-prefixed: that prefix configures sasl-gate). */
export const EVIDENCE_ENV = 'SASLGATE_TEST_EVIDENCE_DIR';

/** Secrets shorter than this would match by chance (and none of the tests' secrets are). */
const MIN_SECRET_LENGTH = 8;

function dir(): string | undefined {
  const path = process.env[EVIDENCE_ENV];
  if (path) mkdirSync(path, { recursive: true });
  return path;
}

/** Remembers a secret a test used; returns it unchanged, so calls can wrap values. */
export function secret<T extends string>(value: T, kind: string): T {
  const target = dir();
  if (target && value.length >= MIN_SECRET_LENGTH) {
    appendFileSync(join(target, `secrets-${process.pid}.jsonl`), `${JSON.stringify({ kind, value })}\n`);
  }
  return value;
}

/** Keeps the log a sasl-gate instance wrote during a test. */
export function keepLog(text: string, name: string): void {
  const target = dir();
  if (target && text.length > 0) appendFileSync(join(target, `log-${process.pid}-${name}.log`), text);
}

/** Every secret that appears in a kept log: kind, log file and secret length, never the secret. */
export function findLeaks(path: string): Array<{ kind: string; log: string; length: number }> {
  const files = readdirSync(path);
  const secrets = new Map<string, string>();
  for (const f of files.filter((f) => f.startsWith('secrets-'))) {
    for (const line of readFileSync(join(path, f), 'utf8').split('\n')) {
      if (!line) continue;
      const { kind, value } = JSON.parse(line) as { kind: string; value: string };
      secrets.set(value, kind);
    }
  }
  const leaks: Array<{ kind: string; log: string; length: number }> = [];
  for (const f of files.filter((f) => f.startsWith('log-'))) {
    const text = readFileSync(join(path, f), 'utf8');
    for (const [value, kind] of secrets) if (text.includes(value)) leaks.push({ kind, log: f, length: value.length });
  }
  return leaks;
}

/** Number of secrets and logs collected, so the final check can tell it checked something. */
export function evidenceCounts(path: string): { secrets: number; logs: number; logBytes: number } {
  const files = readdirSync(path);
  const secrets = files
    .filter((f) => f.startsWith('secrets-'))
    .reduce((n, f) => n + readFileSync(join(path, f), 'utf8').split('\n').filter(Boolean).length, 0);
  const logs = files.filter((f) => f.startsWith('log-'));
  const logBytes = logs.reduce((n, f) => n + readFileSync(join(path, f)).length, 0);
  return { secrets, logs: logs.length, logBytes };
}

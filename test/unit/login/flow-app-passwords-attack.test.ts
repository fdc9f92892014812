/**
 * Keeping access after revocation: a session opened with an app password (an IMAP IDLE that lasts
 * for days) ends once the password is revoked, expires, or its user leaves the directory.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { openAppPasswordService, type SqliteAppPasswordService } from '../../../src/auth/app-passwords-sqlite.js';
import type { TokenValidator } from '../../../src/auth/validator.js';
import { AuthError } from '../../../src/errors.js';
import type { LoginRecord } from '../../../src/login/connection.js';
import { FailureTracker } from '../../../src/login/failures.js';
import { APP_PASSWORD_RECHECK_MS, LoginFlow, type BackendAnswer, type FlowClock } from '../../../src/login/flow.js';
import type { DirectoryVerdict } from '../../../src/login/options.js';
import type { LineFrame } from '../../../src/net/line-framer.js';
import { Metrics } from '../../../src/observe/metrics.js';

const ALICE = 'alice@example.test';
const MASTER = { user: 'gate-master', password: 'master-secret-pw', separator: '*' };
const plain = (authcid: string, password: string) => Buffer.from(`\0${authcid}\0${password}`, 'utf8').toString('base64');
const validator: TokenValidator = {
  async validate(): Promise<never> {
    throw new AuthError('expired', 'the token has expired');
  },
};

let dir: string;
let now: number;
let store: SqliteAppPasswordService;

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'sasl-gate-flow-apppw-attack-'));
  now = Date.parse('2026-05-01T10:00:00Z');
  store = openAppPasswordService({ dir, keyFile: undefined, defaultProtocols: ['imap', 'smtp'], maxPerUser: 10, lastUseWriteSeconds: 300, now: () => new Date(now) });
});
afterEach(async () => {
  await store.close();
  rmSync(dir, { recursive: true, force: true });
});

/** A timer the test fires by hand: `tick()` lets every pending wait elapse once. */
function manualClock() {
  const pending: Array<() => void> = [];
  const clock: FlowClock = {
    now: () => 0,
    after(ms) {
      expect(ms).toBe(APP_PASSWORD_RECHECK_MS);
      let resolve!: () => void;
      const elapsed = new Promise<void>((r) => (resolve = r));
      const entry = () => resolve();
      pending.push(entry);
      return {
        elapsed,
        cancel: () => {
          const at = pending.indexOf(entry);
          if (at >= 0) pending.splice(at, 1);
        },
      };
    },
  };
  return {
    clock,
    pending: () => pending.length,
    async tick() {
      for (const fire of pending.splice(0)) fire();
      // Let the check (a store read) and its follow-up run.
      for (let i = 0; i < 10; i++) await new Promise((r) => setImmediate(r));
    },
  };
}

async function logIn(password: string, verdict: { value: ReturnType<DirectoryVerdict> }) {
  const timer = manualClock();
  const backend = new Socket();
  const logLines: string[] = [];
  const record: LoginRecord = { mechanism: undefined, user: undefined };
  const immediate: FlowClock = { now: () => 0, after: () => ({ elapsed: Promise.resolve(), cancel: () => undefined }) };
  const flow = new LoginFlow<string, string>(
    {
      listener: 'test',
      protocol: 'imap',
      maxAuthFailures: 5,
      failures: new FailureTracker({ baseDelayMs: 0, maxDelayMs: 0, now: () => 0 }),
      metrics: new Metrics(),
      validator,
      oauth: { issuer: 'https://id.example.test', scope: 'openid email' },
      master: MASTER,
      directoryVerdict: () => verdict.value,
      appPasswords: store,
      appPasswordsOnly: false,
      log: pino({ level: 'debug' }, { write: (line: string) => void logLines.push(line) }),
      client: { address: '192.0.2.7' },
      record,
      clock: immediate,
      recheckClock: timer.clock,
    },
    {
      challenge: () => undefined,
      response: async (): Promise<LineFrame> => ({ type: 'line', line: Buffer.from('*') }),
      abandonResponse: () => false,
      isClosed: () => false,
      backendLogin: async (): Promise<BackendAnswer<string, string>> => ({ ok: true, socket: backend, rest: Buffer.alloc(0), extras: '' }),
    },
  );
  const outcome = await flow.attempt({ kind: 'sasl', mechanism: 'PLAIN', initialResponse: plain(ALICE, password) });
  expect(outcome).toMatchObject({ kind: 'success', user: ALICE });
  return { timer, backend, logLines };
}

describe('sessions of an app password end with it', () => {
  it('a revocation by another process ends the open session at the next check; until then it lives', async () => {
    const { password } = await store.create({ user: ALICE, label: 'phone' });
    const { timer, backend, logLines } = await logIn(password, { value: 'allowed' });
    await timer.tick();
    expect(backend.destroyed).toBe(false);
    expect(timer.pending()).toBe(1);
    const cli = openAppPasswordService({ dir, keyFile: undefined, defaultProtocols: ['imap'], maxPerUser: 10, lastUseWriteSeconds: 300 });
    expect(await cli.revokeByLabel(ALICE, 'phone')).toBe(true);
    await cli.close();
    await timer.tick();
    expect(backend.destroyed).toBe(true);
    expect(timer.pending()).toBe(0);
    expect(logLines.join('\n')).toContain('app_password_revoked');
    expect(logLines.join('\n')).not.toContain(password);
  });

  it('an expiry ends the session too', async () => {
    const { password } = await store.create({ user: ALICE, label: 'day', expiresAt: new Date(now + 60_000) });
    const { timer, backend } = await logIn(password, { value: 'allowed' });
    now += 60_000;
    await timer.tick();
    expect(backend.destroyed).toBe(true);
  });

  it('a user the directory disabled loses the session even before the revocation is written', async () => {
    const { password } = await store.create({ user: ALICE, label: 'phone' });
    const verdict: { value: ReturnType<DirectoryVerdict> } = { value: 'allowed' };
    const { timer, backend } = await logIn(password, verdict);
    verdict.value = 'disabled';
    await timer.tick();
    expect(backend.destroyed).toBe(true);
  });

  it('a session the client ends stops its checks; another password’s revocation ends nothing', async () => {
    const first = await store.create({ user: ALICE, label: 'phone' });
    await store.create({ user: ALICE, label: 'laptop' });
    const { timer, backend } = await logIn(first.password, { value: 'allowed' });
    expect(await store.revokeByLabel(ALICE, 'laptop')).toBe(true);
    await timer.tick();
    expect(backend.destroyed).toBe(false);
    backend.destroy();
    await new Promise((r) => setImmediate(r));
    expect(timer.pending()).toBe(0);
  });
});

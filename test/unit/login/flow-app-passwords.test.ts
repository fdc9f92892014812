import { mkdtempSync, rmSync } from 'node:fs';
import { Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { AppPasswordService } from '../../../src/auth/app-passwords.js';
import { openAppPasswordService, type SqliteAppPasswordService } from '../../../src/auth/app-passwords-sqlite.js';
import type { TokenValidator } from '../../../src/auth/validator.js';
import { AuthError } from '../../../src/errors.js';
import type { LoginRecord } from '../../../src/login/connection.js';
import { FailureTracker } from '../../../src/login/failures.js';
import { LoginFlow, type BackendAnswer, type BackendCredentials, type FlowClock, type LoginRequest } from '../../../src/login/flow.js';
import type { DirectoryVerdict } from '../../../src/login/options.js';
import type { LineFrame } from '../../../src/net/line-framer.js';
import { Metrics } from '../../../src/observe/metrics.js';

const MASTER = { user: 'gate-master', password: 'master-secret-pw', separator: '*' };
const b64 = (text: string) => Buffer.from(text, 'utf8').toString('base64');
const plain = (authzid: string, authcid: string, password: string) => b64(`${authzid}\0${authcid}\0${password}`);
const sasl = (mechanism: 'PLAIN' | 'LOGIN', initialResponse?: string): LoginRequest => ({ kind: 'sasl', mechanism, initialResponse });

const validator: TokenValidator = {
  async validate(): Promise<never> {
    throw new AuthError('expired', 'the token has expired');
  },
};

let dir: string;
let now: number;
let store: SqliteAppPasswordService;

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'sasl-gate-flow-apppw-'));
  now = Date.parse('2026-05-01T10:00:00Z');
  store = openAppPasswordService({ dir, keyFile: undefined, defaultProtocols: ['imap', 'smtp', 'pop3', 'sieve'], maxPerUser: 10, lastUseWriteSeconds: 300, now: () => new Date(now) });
});
afterEach(async () => {
  await store.close();
  rmSync(dir, { recursive: true, force: true });
});

function setup(options: { only?: boolean; protocol?: 'imap' | 'smtp' | 'pop3' | 'sieve'; lines?: string[]; directoryVerdict?: DirectoryVerdict; appPasswords?: AppPasswordService | undefined; backendRefuses?: boolean } = {}) {
  const logLines: string[] = [];
  const log = pino({ level: 'debug' }, { write: (line: string) => void logLines.push(line) });
  const waits: number[] = [];
  let t = 0;
  const clock: FlowClock = {
    now: () => t,
    after(ms) {
      waits.push(ms);
      t += ms;
      return { elapsed: Promise.resolve(), cancel: () => undefined };
    },
  };
  const metrics = new Metrics();
  const record: LoginRecord = { mechanism: undefined, user: undefined };
  const failures = new FailureTracker({ baseDelayMs: 100, maxDelayMs: 10_000, now: () => t });
  const logins: BackendCredentials[] = [];
  const lines = [...(options.lines ?? [])];
  const flow = new LoginFlow<string, string>(
    {
      listener: 'test',
      protocol: options.protocol ?? 'imap',
      maxAuthFailures: 5,
      failures,
      metrics,
      validator,
      oauth: { issuer: 'https://id.example.test', scope: 'openid email' },
      master: MASTER,
      directoryVerdict: options.directoryVerdict,
      appPasswords: 'appPasswords' in options ? options.appPasswords : store,
      appPasswordsOnly: options.only ?? false,
      log,
      client: { address: '192.0.2.7' },
      record,
      clock,
    },
    {
      challenge: () => undefined,
      response: async (): Promise<LineFrame> => ({ type: 'line', line: Buffer.from(lines.shift() ?? '*') }),
      abandonResponse: () => false,
      isClosed: () => false,
      backendLogin: async (credentials): Promise<BackendAnswer<string, string>> => {
        logins.push(credentials);
        return options.backendRefuses
          ? { ok: false, reply: 'NO [AUTHENTICATIONFAILED] Authentication failed.', summary: 'refused' }
          : { ok: true, socket: new Socket(), rest: Buffer.alloc(0), extras: 'welcome' };
      },
    },
  );
  const authentications = async () => (await metrics.authentications.get()).values.map((v) => ({ ...v.labels, value: v.value }));
  const logged = () => logLines.map((l) => JSON.parse(l) as Record<string, unknown>);
  return { flow, logins, waits, record, failures, authentications, logged, logLines };
}

describe('LoginFlow: app passwords', () => {
  it('PLAIN with an app password logs in with the master user as the stored user, not the typed spelling', async () => {
    const { password } = await store.create({ user: 'alice@example.test', label: 'phone' });
    const s = setup();
    const outcome = await s.flow.attempt(sasl('PLAIN', plain('', 'Alice@Example.TEST', password.toUpperCase())));
    expect(outcome).toMatchObject({ kind: 'success', user: 'alice@example.test' });
    expect(s.logins).toEqual([{ kind: 'token', user: 'alice@example.test' }]);
    expect(s.logged().find((l) => l['msg'] === 'authenticated')).toMatchObject({ mechanism: 'PLAIN', credential: 'app_password', user: 'alice@example.test' });
    expect(s.record.credential).toBe('app_password');
    expect(await s.authentications()).toContainEqual(expect.objectContaining({ mechanism: 'PLAIN', result: 'success', credential: 'app_password', value: 1 }));
    expect(s.logLines.join('\n')).not.toContain(password);
    expect((await store.list('alice@example.test'))[0]?.lastUse).toMatchObject({ address: '192.0.2.7', protocol: 'imap' });
  });

  it('the LOGIN mechanism and the LOGIN command take app passwords too, dashes or not', async () => {
    const { password } = await store.create({ user: 'alice@example.test', label: 'phone' });
    const s = setup({ lines: [b64(password.replace(/-/g, ''))] });
    expect(await s.flow.attempt(sasl('LOGIN', b64('alice@example.test')))).toMatchObject({ kind: 'success' });
    expect(await s.flow.attempt({ kind: 'password', user: Buffer.from('alice@example.test'), password: Buffer.from(password), literals: false })).toMatchObject({
      kind: 'success',
    });
    expect(s.logins).toEqual([
      { kind: 'token', user: 'alice@example.test' },
      { kind: 'token', user: 'alice@example.test' },
    ]);
    expect(s.logged().filter((l) => l['msg'] === 'authenticated').map((l) => [l['mechanism'], l['credential']])).toEqual([
      ['LOGIN', 'app_password'],
      ['LOGIN-COMMAND', 'app_password'],
    ]);
  });

  it('a password outside its protocols, another user’s, or any other password passes through to the backend', async () => {
    const { password } = await store.create({ user: 'alice@example.test', label: 'mail', protocols: ['imap'] });
    const smtp = setup({ protocol: 'smtp' });
    await smtp.flow.attempt(sasl('PLAIN', plain('', 'alice@example.test', password)));
    await smtp.flow.attempt(sasl('PLAIN', plain('', 'bob@example.test', 'dovecot-password')));
    expect(smtp.logins.map((c) => c.kind)).toEqual(['plain', 'plain']);
    const imap = setup();
    await imap.flow.attempt(sasl('PLAIN', plain('', 'bob@example.test', password)));
    expect(imap.logins.map((c) => c.kind)).toEqual(['plain']);
    expect(await imap.authentications()).toContainEqual(expect.objectContaining({ credential: 'password', result: 'success' }));
  });

  it('the master-user rules come first: an app password cannot be used with an authzid naming someone else', async () => {
    const { password } = await store.create({ user: 'alice@example.test', label: 'phone' });
    const s = setup();
    const outcomes = [
      await s.flow.attempt(sasl('PLAIN', plain('bob@example.test', 'alice@example.test', password))),
      await s.flow.attempt(sasl('PLAIN', plain('', 'alice@example.test*gate-master', password))),
    ];
    expect(outcomes.map((o) => o.kind === 'refused' && o.reason)).toEqual(['master_user_refused', 'master_user_refused']);
    expect(s.logins).toEqual([]);
  });

  it('with appPasswords.only any other password is refused by sasl-gate, never forwarded, with the failure delays', async () => {
    await store.create({ user: 'alice@example.test', label: 'phone', protocols: ['imap'] });
    const s = setup({ only: true });
    const outcomes = [
      await s.flow.attempt(sasl('PLAIN', plain('', 'alice@example.test', 'dovecot-password'))),
      await s.flow.attempt(sasl('PLAIN', plain('', 'alice@example.test', 'abcd-efgh-ijkl-mnop-qrst-uvwx-yzab'))),
      await s.flow.attempt({ kind: 'password', user: Buffer.from('alice@example.test'), password: Buffer.from([0xff]), literals: false }),
    ];
    expect(outcomes.map((o) => o.kind === 'refused' && [o.reason, o.refusal.by])).toEqual([
      ['not_app_password', 'policy'],
      ['not_app_password', 'policy'],
      ['not_app_password', 'policy'],
    ]);
    expect(s.logins).toEqual([]);
    expect(s.waits).toEqual([100, 200, 400]);
    expect(await s.authentications()).toContainEqual(expect.objectContaining({ mechanism: 'PLAIN', result: 'failure', reason: 'not_app_password', credential: 'password', value: 2 }));
  });

  it('the directory’s verdict refuses a disabled or unknown user, and is a temporary failure before it is loaded', async () => {
    const { password } = await store.create({ user: 'alice@example.test', label: 'phone' });
    const verdicts: ReturnType<DirectoryVerdict>[] = ['disabled', 'unknown', 'not_loaded', 'allowed'];
    const asked: string[] = [];
    const results = [];
    for (const verdict of verdicts) {
      const s = setup({ directoryVerdict: (identity) => (asked.push(identity), verdict) });
      const outcome = await s.flow.attempt(sasl('PLAIN', plain('', 'ALICE@example.test', password)));
      results.push(outcome.kind === 'refused' ? outcome.reason : outcome.kind);
      if (verdict !== 'allowed') expect(s.logins).toEqual([]);
    }
    expect(results).toEqual(['user_disabled', 'unknown_user', 'temporary', 'success']);
    expect(asked).toEqual(Array(4).fill('alice@example.test'));
  });

  it('a store that fails is a temporary failure, not a refusal and not a pass-through', async () => {
    const broken: AppPasswordService = { ...store, verify: async () => Promise.reject(new Error('database is locked')) } as unknown as AppPasswordService;
    const s = setup({ appPasswords: broken });
    expect(await s.flow.attempt(sasl('PLAIN', plain('', 'alice@example.test', 'whatever')))).toMatchObject({ kind: 'temporary' });
    expect(s.logins).toEqual([]);
  });

  it('a revoked or expired password no longer logs in', async () => {
    const phone = await store.create({ user: 'alice@example.test', label: 'phone' });
    const week = await store.create({ user: 'alice@example.test', label: 'week', expiresAt: new Date(now + 7 * 86_400_000) });
    await store.revokeByLabel('alice@example.test', 'phone');
    now += 7 * 86_400_000;
    const s = setup({ only: true });
    for (const { password } of [phone, week]) {
      expect(await s.flow.attempt(sasl('PLAIN', plain('', 'alice@example.test', password)))).toMatchObject({ kind: 'refused', reason: 'not_app_password' });
    }
    expect(s.logins).toEqual([]);
  });

  it('without app passwords a 28-letter password is just a password', async () => {
    const { password } = await store.create({ user: 'alice@example.test', label: 'phone' });
    const s = setup({ appPasswords: undefined });
    await s.flow.attempt(sasl('PLAIN', plain('', 'alice@example.test', password)));
    expect(s.logins.map((c) => c.kind)).toEqual(['plain']);
  });
});

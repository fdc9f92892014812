import { Socket } from 'node:net';
import { pino } from 'pino';
import { describe, expect, it } from 'vitest';
import type { TokenIdentity, TokenValidator } from '../../../src/auth/validator.js';
import { AuthError, BackendError } from '../../../src/errors.js';
import type { LoginRecord } from '../../../src/login/connection.js';
import { FailureTracker } from '../../../src/login/failures.js';
import {
  DUMMY_REPLY_WAIT_MS,
  LoginFlow,
  type BackendAnswer,
  type BackendCredentials,
  type DialectPort,
  type FlowClock,
  type LoginRequest,
} from '../../../src/login/flow.js';
import type { DirectoryVerdict } from '../../../src/login/options.js';
import type { LineFrame } from '../../../src/net/line-framer.js';
import { Metrics } from '../../../src/observe/metrics.js';

const MASTER = { user: 'gate-master', password: 'master-secret-pw', separator: '*' };
const b64 = (text: string) => Buffer.from(text, 'utf8').toString('base64');
const plain = (authzid: string, authcid: string, password: string) => b64(`${authzid}\0${authcid}\0${password}`);
const xoauth2 = (user: string, token: string) => b64(`user=${user}\x01auth=Bearer ${token}\x01\x01`);
const oauthbearer = (user: string, token: string) => b64(`n,a=${user},\x01auth=Bearer ${token}\x01\x01`);

/** A clock whose waits end at once, each recorded with its length. */
function instantClock(): FlowClock & { waits: number[] } {
  let t = 0;
  const waits: number[] = [];
  return {
    waits,
    now: () => t,
    after(ms) {
      waits.push(ms);
      t += ms;
      return { elapsed: Promise.resolve(), cancel: () => undefined };
    },
  };
}

/** A dialect that plays the client's lines in order; `null` is a client that never answers. */
function scriptedPort(lines: Array<string | null | 'too-long'>, backend: (c: BackendCredentials) => Promise<BackendAnswer<string, string>>) {
  const challenges: string[] = [];
  const logins: BackendCredentials[] = [];
  let abandoned = 0;
  let closed = false;
  const port: DialectPort<string, string> = {
    challenge: (text) => challenges.push(text),
    response(): Promise<LineFrame> {
      const next = lines.shift();
      if (next === undefined) throw new Error('the script has no more client lines');
      if (next === null) return new Promise(() => undefined);
      if (next === 'too-long') return Promise.resolve({ type: 'error', error: 'line_too_long' });
      return Promise.resolve({ type: 'line', line: Buffer.from(next, 'latin1') });
    },
    abandonResponse: () => {
      abandoned += 1;
      return false;
    },
    isClosed: () => closed,
    backendLogin: (credentials) => {
      logins.push(credentials);
      return backend(credentials);
    },
  };
  return {
    port,
    challenges,
    logins,
    get abandoned() {
      return abandoned;
    },
    close: () => (closed = true),
  };
}

const backendAccepts = async (): Promise<BackendAnswer<string, string>> => ({ ok: true, socket: new Socket(), rest: Buffer.alloc(0), extras: 'welcome' });
const backendRefuses = async (): Promise<BackendAnswer<string, string>> => ({ ok: false, reply: 'NO wrong password', summary: 'wrong password' });

/** A validator that knows a few tokens. */
const validator: TokenValidator = {
  async validate(token: string): Promise<TokenIdentity> {
    if (token === 'alice-token') return { identity: 'alice@example.test', claim: 'email', strategy: 'jwt', expiresAt: undefined, claims: {} };
    if (token === 'outage') throw new AuthError('provider_unavailable', 'provider did not answer');
    throw new AuthError('expired', 'the token has expired');
  },
};

interface Setup {
  lines?: Array<string | null | 'too-long'>;
  backend?: (c: BackendCredentials) => Promise<BackendAnswer<string, string>>;
  maxAuthFailures?: number;
  directoryVerdict?: DirectoryVerdict;
  failures?: FailureTracker;
}

function setup(options: Setup = {}) {
  const logLines: string[] = [];
  const log = pino({ level: 'debug' }, { write: (line: string) => void logLines.push(line) });
  const clock = instantClock();
  const metrics = new Metrics();
  const record: LoginRecord = { mechanism: undefined, user: undefined };
  const failures = options.failures ?? new FailureTracker({ baseDelayMs: 100, maxDelayMs: 10_000, now: () => clock.now() });
  const script = scriptedPort(options.lines ?? [], options.backend ?? backendAccepts);
  const flow = new LoginFlow<string, string>(
    {
      listener: 'imap-test',
      protocol: 'imap',
      maxAuthFailures: options.maxAuthFailures ?? 3,
      failures,
      metrics,
      validator,
      oauth: { issuer: 'https://id.example.test', scope: 'openid email' },
      master: MASTER,
      directoryVerdict: options.directoryVerdict,
      appPasswords: undefined,
      appPasswordsOnly: false,
      log,
      client: { address: '192.0.2.7' },
      record,
      clock,
    },
    script.port,
  );
  const authentications = async () => (await metrics.authentications.get()).values.map((v) => ({ ...v.labels, value: v.value }));
  return { flow, script, clock, record, failures, logLines, authentications };
}

const sasl = (mechanism: 'PLAIN' | 'LOGIN' | 'XOAUTH2' | 'OAUTHBEARER', initialResponse?: string): LoginRequest => ({
  kind: 'sasl',
  mechanism,
  initialResponse,
});

describe('LoginFlow: the SASL exchange of each mechanism', () => {
  it('PLAIN with an initial response passes the client’s own response to the backend', async () => {
    const s = setup();
    const response = plain('', 'bob', 'bob-password');
    const outcome = await s.flow.attempt(sasl('PLAIN', response));
    expect(outcome).toMatchObject({ kind: 'success', user: 'bob', extras: 'welcome' });
    expect(s.script.challenges).toEqual([]);
    expect(s.script.logins).toEqual([{ kind: 'plain', initialResponse: response }]);
    expect(s.record).toEqual({ mechanism: 'PLAIN', user: 'bob', credential: 'password' });
  });

  it('PLAIN without one asks with an empty challenge and reads the response line', async () => {
    const response = plain('', 'bob', 'bob-password');
    const s = setup({ lines: [response] });
    const outcome = await s.flow.attempt(sasl('PLAIN'));
    expect(outcome.kind).toBe('success');
    expect(s.script.challenges).toEqual(['']);
    expect(s.script.logins).toEqual([{ kind: 'plain', initialResponse: response }]);
  });

  it('LOGIN asks for the user name and the password, each with its prompt', async () => {
    const s = setup({ lines: [b64('bob'), b64('bob-password')] });
    const outcome = await s.flow.attempt(sasl('LOGIN'));
    expect(outcome.kind).toBe('success');
    expect(s.script.challenges).toEqual(['VXNlcm5hbWU6', 'UGFzc3dvcmQ6']);
    expect(s.script.logins).toEqual([{ kind: 'login-mechanism', userResponse: b64('bob'), passwordResponse: b64('bob-password') }]);
  });

  it('LOGIN with the user name as initial response asks only for the password', async () => {
    const s = setup({ lines: [b64('bob-password')] });
    const outcome = await s.flow.attempt(sasl('LOGIN', b64('bob')));
    expect(outcome.kind).toBe('success');
    expect(s.script.challenges).toEqual(['UGFzc3dvcmQ6']);
  });

  it('XOAUTH2 logs the token’s own identity in, never a name the client chose', async () => {
    const s = setup();
    const outcome = await s.flow.attempt(sasl('XOAUTH2', xoauth2('alice@example.test', 'alice-token')));
    expect(outcome).toMatchObject({ kind: 'success', user: 'alice@example.test' });
    expect(s.script.logins).toEqual([{ kind: 'token', user: 'alice@example.test' }]);
  });

  it('OAUTHBEARER as a continuation response, without a name: the token names the user', async () => {
    const t = setup({ lines: [b64('n,,\x01auth=Bearer alice-token\x01\x01')] });
    const outcome = await t.flow.attempt(sasl('OAUTHBEARER'));
    expect(outcome).toMatchObject({ kind: 'success', user: 'alice@example.test' });
    expect(t.script.challenges).toEqual(['']);
    expect(t.script.logins).toEqual([{ kind: 'token', user: 'alice@example.test' }]);
  });

  it('a token for alice presented as bob is refused and never reaches the backend', async () => {
    const s = setup({ lines: ['AQ=='] });
    const outcome = await s.flow.attempt(sasl('OAUTHBEARER', oauthbearer('bob@example.test', 'alice-token')));
    expect(outcome).toMatchObject({ kind: 'refused', reason: 'wrong_user', refusal: { by: 'token' } });
    expect(s.script.logins).toEqual([]);
  });

  it('`*` cancels the exchange without counting a failure', async () => {
    const s = setup({ lines: ['*'] });
    expect(await s.flow.attempt(sasl('PLAIN'))).toEqual({ kind: 'cancelled' });
    expect(s.failures.delayFor('192.0.2.7')).toBe(0);
    expect(s.script.logins).toEqual([]);
  });

  it('`*` at LOGIN’s password prompt cancels too', async () => {
    const s = setup({ lines: [b64('bob'), '*'] });
    expect(await s.flow.attempt(sasl('LOGIN'))).toEqual({ kind: 'cancelled' });
  });

  it('bad base64 and an over-long response are malformed, not failures', async () => {
    const s = setup({ lines: ['not base64!', 'too-long'] });
    expect(await s.flow.attempt(sasl('PLAIN'))).toEqual({ kind: 'malformed', what: 'base64' });
    expect(await s.flow.attempt(sasl('PLAIN'))).toEqual({ kind: 'malformed', what: 'too_long' });
    expect(await s.flow.attempt(sasl('XOAUTH2', '%%%'))).toEqual({ kind: 'malformed', what: 'base64' });
    expect(s.script.logins).toEqual([]);
  });

  it('an empty response is an empty message: PLAIN refuses it as bad SASL, with a failure delay', async () => {
    const s = setup({ lines: [''] });
    const outcome = await s.flow.attempt(sasl('PLAIN'));
    expect(outcome).toMatchObject({ kind: 'refused', reason: 'bad_sasl', refusal: { by: 'policy' } });
    expect(outcome.kind === 'refused' && outcome.refusal.by === 'policy' && outcome.refusal.clientText).toBeTruthy();
    expect(s.clock.waits).toEqual([100]);
  });

  it('an unreadable XOAUTH2 message is refused with its reason and a failure delay', async () => {
    const s = setup();
    const outcome = await s.flow.attempt(sasl('XOAUTH2', b64('user=alice')));
    expect(outcome).toMatchObject({ kind: 'refused', reason: 'bad_sasl', refusal: { by: 'token_message', mechanism: 'XOAUTH2' } });
    expect(s.clock.waits).toEqual([100]);
    expect(s.script.challenges).toEqual([]);
  });
});

describe('LoginFlow: the error challenge of a rejected token', () => {
  it('XOAUTH2: the JSON challenge, the dummy reply read, then the refusal', async () => {
    const s = setup({ lines: [''] });
    const outcome = await s.flow.attempt(sasl('XOAUTH2', xoauth2('alice@example.test', 'stale-token')));
    expect(outcome).toMatchObject({ kind: 'refused', reason: 'expired', refusal: { by: 'token' }, closing: false });
    expect(s.script.challenges).toHaveLength(1);
    expect(JSON.parse(Buffer.from(s.script.challenges[0]!, 'base64').toString())).toEqual({ status: '401', schemes: 'bearer', scope: 'openid email' });
    expect(s.script.abandoned).toBe(0);
    expect(s.script.logins).toEqual([]);
  });

  it('OAUTHBEARER: RFC 7628’s challenge names the provider’s discovery document', async () => {
    const s = setup({ lines: ['AQ=='] });
    await s.flow.attempt(sasl('OAUTHBEARER', oauthbearer('alice@example.test', 'stale-token')));
    expect(JSON.parse(Buffer.from(s.script.challenges[0]!, 'base64').toString())).toEqual({
      status: 'invalid_token',
      scope: 'openid email',
      'openid-configuration': 'https://id.example.test/.well-known/openid-configuration',
    });
  });

  it('a client that never answers the challenge gets the refusal after the 5 s wait, its read abandoned', async () => {
    const s = setup({ lines: [null] });
    const outcome = await s.flow.attempt(sasl('XOAUTH2', xoauth2('alice@example.test', 'stale-token')));
    expect(outcome).toMatchObject({ kind: 'refused', refusal: { by: 'token' } });
    expect(s.clock.waits[0]).toBe(DUMMY_REPLY_WAIT_MS);
    expect(s.script.abandoned).toBe(1);
  });

  it('a provider outage is a temporary failure: no challenge, no failure delay', async () => {
    const s = setup();
    expect(await s.flow.attempt(sasl('XOAUTH2', xoauth2('alice@example.test', 'outage')))).toEqual({ kind: 'temporary', which: 'provider' });
    expect(s.script.challenges).toEqual([]);
    expect(s.clock.waits).toEqual([]);
    expect(await s.authentications()).toContainEqual(expect.objectContaining({ result: 'temporary_failure', reason: 'provider_unavailable', value: 1 }));
  });
});

describe('LoginFlow: the directory’s verdict on a token user', () => {
  const token = xoauth2('alice@example.test', 'alice-token');
  it.each([
    ['disabled', 'user_disabled'],
    ['unknown', 'unknown_user'],
  ] as const)('%s: refused after the error challenge, never at the backend', async (verdict, reason) => {
    const s = setup({ lines: [''], directoryVerdict: () => verdict });
    expect(await s.flow.attempt(sasl('XOAUTH2', token))).toMatchObject({ kind: 'refused', reason, refusal: { by: 'token' } });
    expect(s.script.challenges).toHaveLength(1);
    expect(s.script.logins).toEqual([]);
  });

  it('not loaded yet: a temporary failure', async () => {
    const s = setup({ directoryVerdict: () => 'not_loaded' });
    expect(await s.flow.attempt(sasl('XOAUTH2', token))).toEqual({ kind: 'temporary', which: 'provider' });
    expect(s.script.logins).toEqual([]);
  });

  it('allowed: the directory is asked about the token’s identity and the login goes on', async () => {
    const asked: string[] = [];
    const s = setup({ directoryVerdict: (identity) => (asked.push(identity), 'allowed') });
    expect((await s.flow.attempt(sasl('XOAUTH2', token))).kind).toBe('success');
    expect(asked).toEqual(['alice@example.test']);
  });
});

describe('LoginFlow: the backend login', () => {
  it('the backend refusing a password user is the client’s failure, in the backend’s words', async () => {
    const s = setup({ backend: backendRefuses });
    const outcome = await s.flow.attempt(sasl('PLAIN', plain('', 'bob', 'wrong')));
    expect(outcome).toEqual({ kind: 'refused', reason: 'backend_refused', refusal: { by: 'backend', reply: 'NO wrong password' }, closing: false });
    expect(s.clock.waits).toEqual([100]);
  });

  it('the backend refusing a token user is sasl-gate’s problem: a temporary failure, no failure counted', async () => {
    const s = setup({ backend: backendRefuses });
    expect(await s.flow.attempt(sasl('XOAUTH2', xoauth2('alice@example.test', 'alice-token')))).toEqual({ kind: 'temporary', which: 'mailbox' });
    expect(s.failures.delayFor('192.0.2.7')).toBe(0);
    expect(s.logLines.join('')).toContain('backend refused the master login');
  });

  it('a backend that cannot be reached is a temporary failure for everyone', async () => {
    const s = setup({ backend: () => Promise.reject(new BackendError('connection refused')) });
    expect(await s.flow.attempt(sasl('PLAIN', plain('', 'bob', 'pw')))).toEqual({ kind: 'temporary', which: 'backend' });
    expect(await s.flow.attempt(sasl('XOAUTH2', xoauth2('alice@example.test', 'alice-token')))).toEqual({ kind: 'temporary', which: 'backend' });
    expect(s.clock.waits).toEqual([]);
  });

  it('a client gone while the backend logged in: the backend socket is closed, nothing is answered', async () => {
    const socket = new Socket();
    const s = setup({ backend: async () => (s.script.close(), { ok: true, socket, rest: Buffer.alloc(0), extras: '' }) });
    expect(await s.flow.attempt(sasl('PLAIN', plain('', 'bob', 'pw')))).toEqual({ kind: 'gone' });
    expect(socket.destroyed).toBe(true);
  });

  it('a PLAIN message that cannot be read counts against the address, not against an earlier attempt’s user', async () => {
    const s = setup({ backend: backendRefuses });
    await s.flow.attempt(sasl('PLAIN', plain('', 'bob', 'wrong')));
    const bobsDelay = s.failures.delayFor('198.51.100.1', 'bob');
    expect(bobsDelay).toBeGreaterThan(0);
    const outcome = await s.flow.attempt(sasl('PLAIN', Buffer.from('no separators').toString('base64')));
    expect(outcome).toMatchObject({ kind: 'refused', reason: 'bad_sasl' });
    expect(s.failures.delayFor('198.51.100.1', 'bob')).toBe(bobsDelay);
    expect(s.failures.delayFor('192.0.2.7')).toBeGreaterThan(bobsDelay);
  });

  it('a success clears the user name’s failure record', async () => {
    const s = setup({ backend: backendRefuses });
    await s.flow.attempt(sasl('PLAIN', plain('', 'bob', 'wrong')));
    expect(s.failures.delayFor('198.51.100.1', 'bob')).toBeGreaterThan(0);
    const t = setup({ failures: s.failures });
    await t.flow.attempt(sasl('PLAIN', plain('', 'bob', 'right')));
    expect(s.failures.delayFor('198.51.100.1', 'bob')).toBe(0);
  });
});

describe('LoginFlow: password policy', () => {
  it.each([
    ['PLAIN naming the master user', sasl('PLAIN', plain('', 'GATE-master', 'guess'))],
    ['PLAIN with the master separator', sasl('PLAIN', plain('', 'bob*gate-master', 'guess'))],
    ['PLAIN acting as another user', sasl('PLAIN', plain('alice', 'bob', 'bob-password'))],
    ['LOGIN naming the master user', sasl('LOGIN', b64('gate-master'))],
    ['the LOGIN command naming the master user', { kind: 'password', user: Buffer.from('gate-master'), password: Buffer.from('guess'), literals: false }],
  ] as Array<[string, LoginRequest]>)('%s: refused before the backend, with a failure delay', async (_name, request) => {
    const s = setup({ lines: [b64('guess')] });
    const outcome = await s.flow.attempt(request);
    expect(outcome).toMatchObject({ kind: 'refused', reason: 'master_user_refused', refusal: { by: 'policy' } });
    expect(s.script.logins).toEqual([]);
    expect(s.clock.waits).toEqual([100]);
  });

  it('the LOGIN command with a user name that is not UTF-8 is refused as such', async () => {
    const s = setup();
    const outcome = await s.flow.attempt({ kind: 'password', user: Buffer.from([0xff, 0xfe]), password: Buffer.from('pw'), literals: false });
    expect(outcome).toMatchObject({ kind: 'refused', reason: 'bad_sasl', refusal: { by: 'policy', clientText: 'Invalid user name' } });
  });

  it('the LOGIN command passes name and password through as sent', async () => {
    const s = setup();
    await s.flow.attempt({ kind: 'password', user: Buffer.from('bob'), password: Buffer.from('pw'), literals: true });
    expect(s.script.logins).toEqual([{ kind: 'password', user: Buffer.from('bob'), password: Buffer.from('pw'), literals: true }]);
  });
});

describe('LoginFlow: the failure policy', () => {
  it('delays grow with each failure, and the last allowed one says the connection is to close', async () => {
    const s = setup({ backend: backendRefuses, maxAuthFailures: 3 });
    const outcomes = [];
    for (let i = 0; i < 3; i++) outcomes.push(await s.flow.attempt(sasl('PLAIN', plain('', 'bob', `guess-${i}`))));
    expect(s.clock.waits).toEqual([100, 200, 400]);
    expect(outcomes.map((o) => o.kind === 'refused' && o.closing)).toEqual([false, false, true]);
    expect(await s.authentications()).toContainEqual(expect.objectContaining({ mechanism: 'PLAIN', result: 'failure', reason: 'backend_refused', value: 3 }));
  });

  it('every kind of failure counts toward the limit: bad message, rejected token, policy, backend', async () => {
    const s = setup({ lines: [''], backend: backendRefuses, maxAuthFailures: 4 });
    const results = [
      await s.flow.attempt(sasl('XOAUTH2', b64('garbage'))),
      await s.flow.attempt(sasl('XOAUTH2', xoauth2('alice@example.test', 'stale-token'))),
      await s.flow.attempt(sasl('PLAIN', plain('', 'gate-master', 'guess'))),
      await s.flow.attempt(sasl('PLAIN', plain('', 'bob', 'wrong'))),
    ];
    expect(results.map((o) => o.kind === 'refused' && o.closing)).toEqual([false, false, false, true]);
    expect(s.clock.waits.filter((ms) => ms !== DUMMY_REPLY_WAIT_MS)).toHaveLength(4);
    expect(s.clock.waits.filter((ms) => ms !== DUMMY_REPLY_WAIT_MS).every((ms) => ms > 0)).toBe(true);
  });

  it('logs neither tokens nor passwords', async () => {
    const s = setup({ lines: [''], backend: backendRefuses });
    await s.flow.attempt(sasl('XOAUTH2', xoauth2('alice@example.test', 'stale-token')));
    await s.flow.attempt(sasl('PLAIN', plain('', 'bob', 'hunter2-secret')));
    const logged = s.logLines.join('');
    expect(logged).toContain('authentication failed');
    for (const secret of ['stale-token', 'hunter2-secret', MASTER.password]) expect(logged).not.toContain(secret);
  });
});

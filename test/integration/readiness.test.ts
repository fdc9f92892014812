/**
 * /readyz against a real Dovecot that goes away and comes back: ready, then not ready with the
 * reason on the backend's own line while logins get a temporary failure, then ready again and
 * logins work, without restarting sasl-gate.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startStack, tokenLogin, USERS, type Stack } from '../support/stack.js';
import { waitFor } from '../support/wait.js';

const ALICE = USERS[0]!;
let stack: Stack;
let token: string;

beforeAll(async () => {
  stack = await startStack({ config: { admin: { bind: '127.0.0.1:0', readinessProbeSeconds: 1 } } });
  token = await stack.idp.mintAccessToken({ user: ALICE.name });
});

afterAll(async () => {
  await stack?.close();
});

async function get(path: string): Promise<{ status: number; body: string }> {
  const response = await fetch(`http://127.0.0.1:${stack.gate.admin!.port}${path}`);
  return { status: response.status, body: await response.text() };
}

/** Polls /readyz until it answers `status`, for at most `timeoutMs`. */
async function readyzUntil(status: number, timeoutMs = 10_000): Promise<{ status: number; body: string }> {
  let answer = await get('/readyz');
  // The last answer is returned either way: the caller's assertion shows what it was.
  await waitFor(async () => (answer = await get('/readyz')).status === status, { timeoutMs, intervalMs: 100 }).catch(() => undefined);
  return answer;
}

describe('readiness follows the backend', () => {
  it('goes 200 -> 503 -> 200 as Dovecot stops and starts again', async () => {
    const up = await readyzUntil(200);
    expect(up).toEqual({ status: 200, body: 'imap backend: ok\nopenid provider: ok\n' });
    expect((await tokenLogin(stack, ALICE.name, token)).tagged).toMatch(/^a1 OK/);

    await stack.dovecot.halt();
    const down = await readyzUntil(503);
    expect(down.status).toBe(503);
    const lines = down.body.trimEnd().split('\n');
    expect(lines).toHaveLength(2);
    expect(lines[0]).toMatch(new RegExp(`^imap backend: failing for \\d+ s: connect to 127\\.0\\.0\\.1:${stack.dovecot.imapPort} failed: .*ECONNREFUSED`));
    expect(lines[1]).toBe('openid provider: ok');
    // Liveness is not readiness: the process itself is fine.
    expect((await get('/healthz')).status).toBe(200);
    // A login meanwhile is a temporary failure, never a credential rejection.
    expect((await tokenLogin(stack, ALICE.name, token)).tagged).toMatch(/^a1 NO \[UNAVAILABLE\]/);

    await stack.dovecot.resume();
    const back = await readyzUntil(200);
    expect(back).toEqual({ status: 200, body: 'imap backend: ok\nopenid provider: ok\n' });
    expect((await tokenLogin(stack, ALICE.name, token)).tagged).toMatch(/^a1 OK/);
    // The login after the outage reached the restarted Dovecot.
    expect(await stack.dovecot.readLog()).toContain(`Login: user=<${ALICE.name}>`);
  }, 60_000);

  it('notices a failed login connection before the next probe', async () => {
    // The client's failed connection is enough; it does not wait for the next probe.
    await stack.dovecot.halt();
    try {
      expect((await tokenLogin(stack, ALICE.name, token)).tagged).toMatch(/^a1 NO \[UNAVAILABLE\]/);
      const answer = await get('/readyz');
      expect(answer.status).toBe(503);
      expect(answer.body).toMatch(/^imap backend: failing for \d+ s: connect to .* failed/);
    } finally {
      await stack.dovecot.resume();
    }
    expect((await readyzUntil(200)).status).toBe(200);
  }, 60_000);
});

describe('readiness follows the provider', () => {
  async function providerGone(oauth: Record<string, unknown>): Promise<{ status: number; body: string }> {
    const own = await startStack({ config: { admin: { bind: '127.0.0.1:0', readinessProbeSeconds: 1 } }, oauth });
    try {
      const url = `http://127.0.0.1:${own.gate.admin!.port}/readyz`;
      const read = async () => {
        const response = await fetch(url);
        return { status: response.status, body: await response.text() };
      };
      const deadline = Date.now() + 10_000;
      await waitFor(async () => (await read()).status === 200, { timeoutMs: 10_000, intervalMs: 100, what: 'readiness before the provider goes' });
      await own.idp.close();
      let answer = await read();
      // The last answer is returned either way: a gate that stays ready is what some tests expect.
      await waitFor(async () => /openid provider: failing/.test((answer = await read()).body), {
        timeoutMs: Math.max(0, deadline + 10_000 - Date.now()),
        intervalMs: 100,
      }).catch(() => undefined);
      return answer;
    } finally {
      await own.close();
    }
  }

  it('is not ready while introspection cannot reach the provider', async () => {
    const answer = await providerGone({ validation: ['jwt', 'introspection'] });
    expect(answer.status).toBe(503);
    expect(answer.body).toMatch(/^imap backend: ok\nopenid provider: failing for \d+ s: .+\n$/);
  }, 60_000);

  it('stays ready with jwt alone, saying the provider is down but not needed per login', async () => {
    const answer = await providerGone({ validation: ['jwt'] });
    expect(answer.status).toBe(200);
    expect(answer.body).toMatch(/^imap backend: ok\nopenid provider: failing for \d+ s: .+ \(not needed per login while the signing keys are cached\)\n$/);
  }, 60_000);
});

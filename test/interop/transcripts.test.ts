/**
 * Replays the recorded client transcripts in test/transcripts/ (clients that cannot run here:
 * Roundcube, Thunderbird, Thunderbird for Android / K-9, and NeoMutt's exact bytes) against
 * sasl-gate, byte for byte: with a good token each must end logged in with a working command
 * after the login; with another user's token and with an expired one each must get the
 * mechanism's error challenge, send its own answer to it, and see the failure.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { secret } from '../support/evidence.js';
import { startStack, TlsImap, type Stack } from '../support/stack.js';
import { ALICE, BOB, decodeChallenge, expectedChallenge, expiredToken, failedLine, sleep, authenticatedLine } from './support/clients.js';

type Step = { client: string } | { server: string } | { serverUntil: string } | { challenge: true };

interface Transcript {
  client: string;
  versions: string;
  source: string[];
  protocol: 'imap' | 'smtp';
  mechanism: 'XOAUTH2' | 'OAUTHBEARER';
  saslIr: boolean;
  token: 'jwt' | 'opaque';
  good: Step[];
  bad: Step[];
}

const DIR = join(import.meta.dirname, '..', 'transcripts');
const transcripts = readdirSync(DIR)
  .filter((f) => f.endsWith('.json'))
  .sort()
  .map((f) => ({ file: f, t: JSON.parse(readFileSync(join(DIR, f), 'utf8')) as Transcript }));

let stack: Stack;
const tokens = {} as Record<'aliceJwt' | 'aliceOpaque', string>;

beforeAll(async () => {
  stack = await startStack({ smtp: { login: 'xclient' }, oauth: { validation: ['jwt', 'introspection'] } });
  tokens.aliceJwt = await stack.idp.mintAccessToken({ user: ALICE.name });
  tokens.aliceOpaque = await stack.idp.mintAccessToken({ user: ALICE.name, format: 'opaque', audience: 'mail' });
});

afterAll(async () => {
  await stack?.close();
});

/** Fills the placeholders of a client step. */
function fill(template: string, values: { user: string; token: string; port: number }): string {
  const plain = template
    .replace(/\{\{user\}\}/g, values.user)
    .replace(/\{\{userLocal\}\}/g, values.user.split('@')[0]!)
    .replace(/\{\{token\}\}/g, values.token)
    .replace(/\{\{port\}\}/g, String(values.port));
  return plain.replace(/\{\{b64:([\s\S]*?)\}\}/g, (_m, text: string) =>
    secret(Buffer.from(text, 'utf8').toString('base64'), 'SASL message'),
  );
}

/** Plays one side of a transcript; returns the lines sasl-gate sent. */
async function replay(t: Transcript, steps: Step[], values: { user: string; token: string }) {
  const port = t.protocol === 'imap' ? stack.imapPort : stack.smtpPort;
  const c = await TlsImap.connect({ host: stack.host, imapPort: port, ca: stack.ca });
  const received: string[] = [c.greeting];
  let pending: string | undefined = c.greeting;
  const next = async () => {
    if (pending !== undefined) {
      const line = pending;
      pending = undefined;
      return line;
    }
    const line = await c.readLine(15_000);
    received.push(line);
    return line;
  };
  try {
    for (const step of steps) {
      if ('client' in step) c.write(Buffer.from(fill(step.client, { ...values, port }), 'utf8'));
      else if ('server' in step) expect(await next(), `transcript step ${JSON.stringify(step)}`).toMatch(new RegExp(step.server));
      else if ('serverUntil' in step) {
        const re = new RegExp(step.serverUntil);
        for (let line = await next(); !re.test(line); line = await next());
      } else {
        const line = await next();
        expect(line).toMatch(t.protocol === 'imap' ? /^\+ \S+$/ : /^334 \S+$/);
        expect(decodeChallenge(line)).toEqual(expectedChallenge(stack, t.mechanism));
      }
    }
  } finally {
    c.close();
  }
  return received;
}

describe.each(transcripts)('$file', ({ t }) => {
  const token = () => (t.token === 'opaque' ? tokens.aliceOpaque : tokens.aliceJwt);

  it(`${t.protocol.toUpperCase()} ${t.mechanism}${t.saslIr ? ' with initial response' : ''}: logs in and works`, async () => {
    expect(t.source.length).toBeGreaterThan(0);
    const from = stack.logs.length;
    await replay(t, t.good, { user: ALICE.name, token: token() });
    expect(await authenticatedLine(stack, from, ALICE.name)).toMatchObject({ mechanism: t.mechanism });
  });

  it("another user's token: error challenge, the client's answer, failure", async () => {
    const from = stack.logs.length;
    await replay(t, t.bad, { user: BOB.name, token: token() });
    expect(await failedLine(stack, from)).toMatchObject({ reason: 'wrong_user', mechanism: t.mechanism, user: BOB.name });
  });

  it('an expired token: error challenge, the client\'s answer, failure', async () => {
    let expired: string;
    if (t.token === 'opaque') {
      expired = await stack.idp.mintAccessToken({ user: ALICE.name, format: 'opaque', audience: 'mail', ttlSeconds: 1 });
      await sleep(2_100);
    } else {
      expired = await expiredToken(stack, ALICE.name);
    }
    const from = stack.logs.length;
    await replay(t, t.bad, { user: ALICE.name, token: expired });
    expect(await failedLine(stack, from)).toMatchObject({ reason: t.token === 'opaque' ? 'inactive' : 'expired', mechanism: t.mechanism });
  });
});

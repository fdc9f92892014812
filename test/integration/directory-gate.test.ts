/**
 * The user directory as `serve` runs it: configured in the YAML file, filled from a source,
 * refusing token logins of disabled users, answering Postfix's socketmap queries, taking SCIM
 * pushes, and surviving a restart from its state file.
 */
import { mkdtempSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { encodeNetstring, NetstringDecoder } from '../../src/directory/socketmap.js';
import { secret } from '../support/evidence.js';
import { startStack, TlsImap, tokenLogin, USERS, type Stack } from '../support/stack.js';
import { waitFor } from '../support/wait.js';

const [ALICE, BOB] = USERS as [(typeof USERS)[0], (typeof USERS)[0]];
const SCIM_TOKEN = secret('scim-token-0123456789abcdef0123456789', 'SCIM token');
/** A user the provider lists as disabled. */
const DAVE = 'dave@example.test';

/** Lines of Dovecot's log that show a login as `user`. */
async function dovecotLoginsAs(stack: Stack, user: string): Promise<string[]> {
  return (await stack.dovecot.readLog()).split('\n').filter((l) => l.includes(`user=<${user}>`) && /Login:/.test(l));
}

/** One socketmap query, as Postfix sends it. */
async function socketmap(port: number, query: string): Promise<string> {
  const socket = connect({ host: '127.0.0.1', port });
  const decoder = new NetstringDecoder(4096);
  return new Promise((resolve, reject) => {
    socket.on('data', (chunk: Buffer) => {
      const [answer] = decoder.push(chunk);
      if (answer) {
        socket.end();
        resolve(answer.toString('utf8'));
      }
    });
    socket.on('error', reject);
    socket.write(encodeNetstring(query));
  });
}

/** A SCIM POST /Users, as a provider pushes a user (HTTPS with sasl-gate's certificate). */
async function scimPost(stack: Stack, user: Record<string, unknown>): Promise<{ status: number; body: string }> {
  const { request } = await import('node:https');
  const scim = stack.gate.directory!.scim!;
  return new Promise((resolve, reject) => {
    const req = request(
      {
        host: '127.0.0.1',
        port: scim.port,
        path: '/scim/v2/Users',
        method: 'POST',
        ca: stack.ca,
        servername: 'localhost',
        headers: { authorization: `Bearer ${SCIM_TOKEN}`, 'content-type': 'application/scim+json' },
      },
      (res) => {
        let body = '';
        res.on('data', (c: Buffer) => (body += c.toString()));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      },
    );
    req.on('error', reject);
    req.end(JSON.stringify(user));
  });
}

describe('directory', () => {
  const dir = mkdtempSync(join(tmpdir(), 'sasl-gate-directory-'));
  const usersFile = join(dir, 'users.yaml');
  const stateFile = join(dir, 'state.json');
  let stack: Stack;

  beforeAll(async () => {
    writeFileSync(
      usersFile,
      `users:\n  - mailbox: ${ALICE.name}\n    aliases: [info@example.test]\n  - mailbox: ${DAVE}\n    active: false\n`,
    );
    stack = await startStack({
      config: {
        directory: {
          source: 'static',
          static: { file: usersFile },
          stateFile,
          graceSeconds: 0,
          socketmap: { bind: '127.0.0.1:0' },
          scim: { bind: '127.0.0.1:0', token: SCIM_TOKEN },
        },
      },
    });
    // The first sync runs in the background at start.
    await waitFor(() => stack.gate.directory?.directory.isLoaded(), { timeoutMs: 5_000, intervalMs: 100, what: 'the directory to load' });
  });
  afterAll(() => stack?.close());

  it('refuses token logins of a user disabled in the provider, with a valid token', async () => {
    const daveToken = await stack.idp.signToken({ ...stack.idp.claimsFor(ALICE.name), email: DAVE, sub: 'dave' });
    const refused = await tokenLogin(stack, DAVE, daveToken);
    expect(refused.tagged).toBe('a1 NO [AUTHENTICATIONFAILED] Authentication failed.');
    expect(stack.logs.filter((l) => l['msg'] === 'authentication failed').at(-1)).toMatchObject({ reason: 'user_disabled' });
    const aliceToken = await stack.idp.mintAccessToken({ user: ALICE.name });
    expect((await tokenLogin(stack, ALICE.name, aliceToken)).tagged).toMatch(/^a1 OK /);
  });

  it('refuses token logins of anyone the directory does not list, though the provider and Dovecot know them', async () => {
    const before = await dovecotLoginsAs(stack, BOB.name);
    const bobToken = await stack.idp.mintAccessToken({ user: BOB.name });
    for (const mechanism of ['XOAUTH2', 'OAUTHBEARER'] as const) {
      expect((await tokenLogin(stack, BOB.name, bobToken, mechanism)).tagged).toBe('a1 NO [AUTHENTICATIONFAILED] Authentication failed.');
      expect(stack.logs.filter((l) => l['msg'] === 'authentication failed').at(-1)).toMatchObject({ reason: 'unknown_user' });
    }
    expect(await dovecotLoginsAs(stack, BOB.name)).toEqual(before);
    // The password still decides for password logins: the directory is about token users.
    const c = await TlsImap.connect(stack);
    expect((await c.command(`LOGIN "${BOB.name}" "${BOB.password}"`)).tagged).toMatch(/^t1 OK/);
    c.close();
  });

  it('answers Postfix: mailboxes, aliases, and nothing for disabled or unknown users', async () => {
    const port = stack.gate.directory!.socketmap!.port;
    expect(await socketmap(port, `mailbox ${ALICE.name}`)).toBe('OK example.test/alice/');
    expect(await socketmap(port, 'alias info@example.test')).toBe(`OK ${ALICE.name}`);
    expect(await socketmap(port, `mailbox ${DAVE}`)).toMatch(/^NOTFOUND/);
    expect(await socketmap(port, `mailbox ${BOB.name}`)).toMatch(/^NOTFOUND/);
  });

  it('takes users a provider pushes over SCIM, and keeps them across a restart', async () => {
    const created = await scimPost(stack, {
      schemas: ['urn:ietf:params:scim:schemas:core:2.0:User'],
      userName: 'carol',
      active: true,
      emails: [{ value: 'carol@example.test', primary: true, type: 'work' }],
    });
    expect(created.status).toBe(201);
    const port = stack.gate.directory!.socketmap!.port;
    expect(await socketmap(port, 'mailbox carol@example.test')).toBe('OK example.test/carol/');
    await new Promise((r) => setTimeout(r, 300));

    // A restart with the provider gone: the saved directory is served.
    const again = await startStack({
      config: {
        directory: { source: 'scim', stateFile, graceSeconds: 0, socketmap: { bind: '127.0.0.1:0' }, scim: { bind: '127.0.0.1:0', token: SCIM_TOKEN } },
      },
    });
    try {
      const restarted = again.gate.directory!.socketmap!.port;
      expect(await socketmap(restarted, 'mailbox carol@example.test')).toBe('OK example.test/carol/');
      expect(await socketmap(restarted, `mailbox ${ALICE.name}`)).toBe('OK example.test/alice/');
    } finally {
      await again.close();
    }
  });

  it('fails token logins temporarily until a first set of users is known, then lets the pushed users in', async () => {
    const fresh = await startStack({
      config: {
        directory: { source: 'scim', stateFile: join(dir, 'never-saved.json'), scim: { bind: '127.0.0.1:0', token: SCIM_TOKEN } },
      },
    });
    try {
      const token = await fresh.idp.mintAccessToken({ user: ALICE.name });
      expect((await tokenLogin(fresh, ALICE.name, token)).tagged).toMatch(/^a1 NO \[UNAVAILABLE\] /);
      expect(fresh.logs.filter((l) => l['msg'] === 'authentication failed').at(-1)).toMatchObject({
        reason: 'provider_unavailable',
        detail: 'the user directory has not been loaded from the provider yet',
      });
      const pushed = await scimPost(fresh, { schemas: ['urn:ietf:params:scim:schemas:core:2.0:User'], userName: 'alice', active: true, emails: [{ value: ALICE.name, primary: true }] });
      expect(pushed.status).toBe(201);
      expect((await tokenLogin(fresh, ALICE.name, token)).tagged).toMatch(/^a1 OK /);
    } finally {
      await fresh.close();
    }
  });
});

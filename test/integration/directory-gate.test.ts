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
import { startStack, tokenLogin, USERS, type Stack } from '../support/stack.js';

const [ALICE, BOB] = USERS as [(typeof USERS)[0], (typeof USERS)[0]];
const SCIM_TOKEN = secret('scim-token-0123456789abcdef0123456789', 'SCIM token');

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

describe('directory', () => {
  const dir = mkdtempSync(join(tmpdir(), 'sasl-gate-directory-'));
  const usersFile = join(dir, 'users.yaml');
  const stateFile = join(dir, 'state.json');
  let stack: Stack;

  beforeAll(async () => {
    writeFileSync(
      usersFile,
      `users:\n  - mailbox: ${ALICE.name}\n    aliases: [info@example.test]\n  - mailbox: ${BOB.name}\n    active: false\n`,
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
    for (let i = 0; i < 50 && !stack.gate.directory?.directory.isLoaded(); i++) await new Promise((r) => setTimeout(r, 100));
  });
  afterAll(() => stack?.close());

  it('refuses token logins of a user disabled in the provider, with a valid token', async () => {
    const bobToken = await stack.idp.mintAccessToken({ user: BOB.name });
    const refused = await tokenLogin(stack, BOB.name, bobToken);
    expect(refused.tagged).toBe('a1 NO [AUTHENTICATIONFAILED] Authentication failed.');
    expect(stack.logs.filter((l) => l['msg'] === 'authentication failed').at(-1)).toMatchObject({ reason: 'user_disabled' });
    const aliceToken = await stack.idp.mintAccessToken({ user: ALICE.name });
    expect((await tokenLogin(stack, ALICE.name, aliceToken)).tagged).toMatch(/^a1 OK /);
  });

  it('answers Postfix: mailboxes, aliases, and nothing for disabled users', async () => {
    const port = stack.gate.directory!.socketmap!.port;
    expect(await socketmap(port, `mailbox ${ALICE.name}`)).toBe('OK example.test/alice/');
    expect(await socketmap(port, 'alias info@example.test')).toBe(`OK ${ALICE.name}`);
    expect(await socketmap(port, `mailbox ${BOB.name}`)).toMatch(/^NOTFOUND/);
  });

  it('takes users a provider pushes over SCIM, and keeps them across a restart', async () => {
    const scim = stack.gate.directory!.scim!;
    const created = await new Promise<{ status: number; body: string }>((resolve, reject) => {
      // The endpoint speaks HTTPS with sasl-gate's certificate.
      import('node:https').then(({ request }) => {
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
        req.end(
          JSON.stringify({
            schemas: ['urn:ietf:params:scim:schemas:core:2.0:User'],
            userName: 'carol',
            active: true,
            emails: [{ value: 'carol@example.test', primary: true, type: 'work' }],
          }),
        );
      }, reject);
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
});

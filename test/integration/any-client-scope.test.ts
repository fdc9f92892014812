/**
 * `oauth.anyClientWithScope` against what an attacker holds: real tokens of the development
 * provider's public client (authorization code with PKCE and a loopback redirect, as a mail app
 * or the token helper signs in), sent to a running sasl-gate in front of a real Dovecot. A token
 * of that client without the mail scope, its ID token, and, with the rule unset, its token with
 * the scope are all refused; Dovecot's own log shows no login for them, and the gate keeps
 * serving the token that is allowed.
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import * as client from 'openid-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MAIL_SCOPE } from '../../tools/idp.js';
import { secret } from '../support/evidence.js';
import { startStack, tokenLogin, USERS, xoauth2, type Stack } from '../support/stack.js';

const PUBLIC_CLIENT = 'mail-app';
const ALICE = USERS[0]!.name;

let withRule: Stack;
let withoutRule: Stack;
let redirectServer: Server;
let redirectUri: string;

beforeAll(async () => {
  redirectServer = createServer((_req, res) => res.writeHead(200, { 'content-type': 'text/plain' }).end('signed in\n'));
  await new Promise<void>((resolve) => redirectServer.listen({ host: '127.0.0.1', port: 0 }, resolve));
  redirectUri = `http://127.0.0.1:${(redirectServer.address() as AddressInfo).port}/callback`;
  const started = await Promise.allSettled([
    startStack({ idp: { publicClient: { clientId: PUBLIC_CLIENT } }, oauth: { anyClientWithScope: MAIL_SCOPE } }),
    startStack({ idp: { publicClient: { clientId: PUBLIC_CLIENT } } }),
  ]);
  const failed = started.find((s) => s.status === 'rejected');
  if (failed) {
    await Promise.all(started.map((s) => (s.status === 'fulfilled' ? s.value.close() : undefined)));
    throw failed.reason;
  }
  [withRule, withoutRule] = started.map((s) => (s as PromiseFulfilledResult<Stack>).value) as [Stack, Stack];
}, 120_000);

afterAll(async () => {
  await Promise.all([withRule?.close(), withoutRule?.close()]);
  await new Promise<void>((resolve) => redirectServer?.close(() => resolve()));
});

/** Signs `user` in as the public client with `scope`, the way a mail app does; the tokens registered as secrets. */
async function publicClientTokens(stack: Stack, scope: string, user = 'alice'): Promise<{ access: string; id: string | undefined }> {
  const config = await client.discovery(new URL(stack.idp.issuer), PUBLIC_CLIENT, undefined, client.None(), {
    ...(stack.idp.issuer.startsWith('http:') ? { execute: [client.allowInsecureRequests] } : {}),
  });
  const verifier = client.randomPKCECodeVerifier();
  const state = client.randomState();
  const authorize = client.buildAuthorizationUrl(config, {
    redirect_uri: redirectUri,
    scope,
    state,
    code_challenge: await client.calculatePKCECodeChallenge(verifier),
    code_challenge_method: 'S256',
  });
  const landed = await stack.idp.signInAt(authorize.href, user);
  const tokens = await client.authorizationCodeGrant(config, new URL(landed), { pkceCodeVerifier: verifier, expectedState: state });
  secret(tokens.access_token, 'access token');
  if (tokens.id_token) secret(tokens.id_token, 'ID token');
  if (tokens.refresh_token) secret(tokens.refresh_token, 'refresh token');
  for (const t of [tokens.access_token, tokens.id_token]) if (t) xoauth2(ALICE, t);
  return { access: tokens.access_token, id: tokens.id_token };
}

/** How many logins of `user` Dovecot itself logged. */
async function dovecotLogins(stack: Stack, user: string): Promise<number> {
  return ((await stack.dovecot.readLog()).match(new RegExp(`Login: user=<${user.replace(/\./g, '\\.')}>`, 'g')) ?? []).length;
}

function claimsOf(jwt: string): Record<string, unknown> {
  return JSON.parse(Buffer.from(jwt.split('.')[1]!, 'base64url').toString('utf8')) as Record<string, unknown>;
}

describe('oauth.anyClientWithScope with real tokens of a public client', () => {
  it('a token of the public client with the mail scope logs in (what the refusals below are measured against)', async () => {
    const { access } = await publicClientTokens(withRule, `openid email ${MAIL_SCOPE}`);
    expect([claimsOf(access)['aud']].flat()).toEqual([PUBLIC_CLIENT]);
    const before = await dovecotLogins(withRule, ALICE);
    expect((await tokenLogin(withRule, ALICE, access)).tagged).toMatch(/^a1 OK /);
    expect(await dovecotLogins(withRule, ALICE)).toBe(before + 1);
  });

  it('a token of the same client without the mail scope is refused; Dovecot sees no login', async () => {
    const { access } = await publicClientTokens(withRule, 'openid email');
    expect(String(claimsOf(access)['scope']).split(' ')).not.toContain(MAIL_SCOPE);
    const before = await dovecotLogins(withRule, ALICE);
    const refused = await tokenLogin(withRule, ALICE, access);
    expect(refused.tagged).toMatch(/^a1 NO /);
    expect(refused.challenge).toMatchObject({ status: '401' });
    expect(await dovecotLogins(withRule, ALICE)).toBe(before);
  });

  it('the public client\'s ID token, from a sign-in that asked for the mail scope, is refused; Dovecot sees no login', async () => {
    const { id } = await publicClientTokens(withRule, `openid email ${MAIL_SCOPE}`);
    expect(id).toBeDefined();
    // The provider's ID tokens carry no scope claim: that, not their type, is what the rule sees.
    expect(claimsOf(id!)['scope']).toBeUndefined();
    const before = await dovecotLogins(withRule, ALICE);
    expect((await tokenLogin(withRule, ALICE, id!)).tagged).toMatch(/^a1 NO /);
    expect(await dovecotLogins(withRule, ALICE)).toBe(before);
  });

  it('with the rule unset, the public client\'s token with the mail scope is refused; Dovecot sees no login', async () => {
    const { access } = await publicClientTokens(withoutRule, `openid email ${MAIL_SCOPE}`);
    const before = await dovecotLogins(withoutRule, ALICE);
    const refused = await tokenLogin(withoutRule, ALICE, access);
    expect(refused.tagged).toMatch(/^a1 NO /);
    expect(await dovecotLogins(withoutRule, ALICE)).toBe(before);
    // The listed audience still works on the same gate.
    const listed = await withoutRule.idp.mintAccessToken({ user: 'alice', scope: 'openid email' });
    expect((await tokenLogin(withoutRule, ALICE, listed)).tagged).toMatch(/^a1 OK /);
    expect(await dovecotLogins(withoutRule, ALICE)).toBe(before + 1);
  });
});

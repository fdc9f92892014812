/**
 * The self-service page in a real browser: chromium signs in through the development provider's
 * own login page, creates an app password and reads it off the page; curl then reads mail with it
 * over IMAPS from real Dovecot and sends over SMTPS through real Postfix, neither of which knows
 * it; the page revokes it and the next login fails. Cookie flags come from the browser's cookie
 * jar, and forms without the CSRF token or from another site are refused.
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { randomBytes } from 'node:crypto';
import { copyFileSync, mkdtempSync, writeFileSync } from 'node:fs';
import { connect as tlsConnect } from 'node:tls';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Browser, Page } from 'puppeteer-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ensureDevCertificate } from '../../src/tls/devcert.js';
import { freePort } from '../../tools/ports.js';
import { hasChromium, launchBrowser, screenshot, signInAtDevIdp } from '../support/browser.js';
import { curlImapList, curlSmtpSend } from '../support/curl-mail.js';
import { dovecotLogins } from '../support/dovecot-log.js';
import { secret } from '../support/evidence.js';
import { startStack, type Stack } from '../support/stack.js';

const PORTAL_CLIENT = 'mail-portal';

describe.skipIf(!hasChromium())('the self-service page in a browser', () => {
  let stack: Stack;
  let browser: Browser;
  let page: Page;
  let portalUrl: string;
  let foreign: Server;
  const ALICE = 'alice@example.test';
  /** Every app password the page showed, to prove none reached the log. */
  const passwords: string[] = [];
  const dir = mkdtempSync(join(tmpdir(), 'sasl-gate-portal-'));
  const cafile = join(dir, 'ca.pem');
  /** The real store the gate opened in storage.dir. */
  const store = () => stack.gate.appPasswords!;
  const imapList = (password: string) => curlImapList({ port: stack.imapPort, cafile, user: ALICE, password });
  const smtpSend = (password: string, subject: string) => curlSmtpSend({ port: stack.smtpPort, cafile, user: ALICE, password, to: ALICE, subject, dir });
  /** Dovecot's IMAP logins as alice, and Postfix's SASL logins as alice, so far. */
  const backendLogins = async () => ({
    dovecot: (await dovecotLogins(stack.dovecot, 'imap')).filter((l) => l.includes(`user=<${ALICE}>`)).length,
    postfix: (await stack.postfix!.readLog()).match(/sasl_method=PLAIN, sasl_username=alice@example\.test/g)?.length ?? 0,
  });
  /** Authorization codes the browser carried, to prove none reached the log. */
  const codes: string[] = [];

  beforeAll(async () => {
    const port = await freePort();
    portalUrl = `https://127.0.0.1:${port}`;
    const clientSecret = secret(randomBytes(24).toString('base64url'), 'portal client secret');
    [stack, browser] = await Promise.all([
      startStack({
        idp: { webClient: { clientId: PORTAL_CLIENT, clientSecret, redirectUris: [`${portalUrl}/callback`] } },
        config: {
          storage: { dir: join(dir, 'state') },
          appPasswords: { enabled: true },
          portal: { bind: `127.0.0.1:${port}`, publicUrl: portalUrl, clientId: PORTAL_CLIENT, clientSecret, providerName: 'Example ID', recentSignInSeconds: 120 },
          limits: { authFailureDelaySeconds: 0 },
        },
        smtp: { login: 'master' },
      }),
      launchBrowser(),
    ]);
    writeFileSync(cafile, stack.ca);
    page = await browser.newPage();
    await page.setViewport({ width: 420, height: 860, deviceScaleFactor: 1 });
    page.on('request', (request) => {
      const url = new URL(request.url());
      const code = url.pathname === '/callback' ? url.searchParams.get('code') : null;
      if (code) codes.push(secret(code, 'authorization code'));
    });
    // Another site, whose page posts a form to the portal.
    foreign = createServer((req, res) => {
      const target = new URL(req.url ?? '/', 'http://x').searchParams.get('csrf') ?? '';
      res.writeHead(200, { 'content-type': 'text/html' }).end(
        `<!doctype html><form method="post" action="${portalUrl}/create"><input name="csrf" value="${target}"><input name="label" value="stolen"><input name="protocols" value="imap"><button>go</button></form>`,
      );
    });
    await new Promise<void>((resolve) => foreign.listen(0, '127.0.0.1', resolve));
  }, 120_000);

  afterAll(async () => {
    await browser?.close();
    foreign?.close();
    await stack?.close();
  });

  const csrfOnPage = () => page.$eval('input[name="csrf"]', (input) => (input as HTMLInputElement).value);

  it('signs in through the provider, creates a password shown once with the settings to type in; mail is read and sent with it until the page revokes it', async () => {
    expect(stack.gate.portal?.port).toBe(Number(new URL(portalUrl).port));
    const first = await page.goto(`${portalUrl}/`);
    expect(first?.status()).toBe(200);
    expect(first?.headers()['cache-control']).toBe('no-store');
    expect(first?.headers()['content-security-policy']).toContain("frame-ancestors 'none'");
    await screenshot(page, 'portal-signed-out');
    await Promise.all([page.waitForNavigation(), page.click('a.button')]);
    expect(new URL(page.url()).origin).toBe(stack.idp.issuer);
    await signInAtDevIdp(page, 'alice', secret('any-dev-password-1', 'dev login password'));
    expect(page.url()).toBe(`${portalUrl}/`);
    expect(await page.$eval('header .who', (e) => e.textContent)).toBe('alice@example.test');
    expect(await page.$eval('#label', (e) => (e as HTMLInputElement).labels?.[0]?.textContent)).toContain('Label');

    // The session cookie, as the browser keeps it.
    const cookies = await browser.cookies();
    const session = cookies.find((c) => c.name === '__Host-sasl-gate-session');
    expect(session).toMatchObject({ secure: true, httpOnly: true, sameSite: 'Lax', path: '/', domain: '127.0.0.1' });
    expect(session!.expires).toBeGreaterThan(Date.now() / 1000 + 1700);
    secret(session!.value, 'portal session cookie');
    expect(await page.evaluate(() => document.cookie)).not.toContain('sasl-gate');
    expect(cookies.some((c) => c.name === '__Host-sasl-gate-signin')).toBe(false);

    await page.type('#label', 'phone');
    await page.type('#expires', '30');
    const created = await Promise.all([page.waitForNavigation(), page.click('#create button[type="submit"]')]).then(([r]) => r);
    expect(created?.status()).toBe(200);
    expect(created?.headers()['cache-control']).toBe('no-store');
    const password = secret((await page.$eval('#new-password', (e) => e.textContent ?? '')).trim(), 'app password');
    passwords.push(password);
    expect(password).toMatch(/^([a-z]{4}-){6}[a-z]{4}$/);
    // The copy button is shown by the page's script (progressive enhancement).
    expect(await page.$eval('button.copy', (b) => (b as HTMLButtonElement).hidden)).toBe(false);
    const settings = await page.$$eval('tbody tr', (rows) => rows.map((r) => [...r.children].map((c) => c.textContent)));
    const imap = stack.gate.listeners.find((l) => l.protocol === 'imap')!;
    const smtp = stack.gate.listeners.find((l) => l.protocol === 'smtp')!;
    expect(settings).toEqual([
      ['IMAP', '127.0.0.1', String(imap.port), 'SSL/TLS'],
      ['SMTP', '127.0.0.1', String(smtp.port), 'SSL/TLS'],
    ]);
    await screenshot(page, 'portal-created');

    // A mail app with it: Dovecot and Postfix know no such password; sasl-gate logs in as alice.
    const before = await backendLogins();
    const typed = password.toUpperCase().replace(/-/g, ' ');
    for (const attempt of [password, typed]) {
      const listed = await imapList(attempt);
      expect(listed.code, listed.stderr).toBe(0);
      expect(listed.stdout).toContain('INBOX');
    }
    const sent = await smtpSend(password, 'sent with the phone password');
    expect(sent.code, sent.stderr).toBe(0);
    const after = await backendLogins();
    expect(after.dovecot - before.dovecot).toBe(2);
    expect(after.postfix - before.postfix).toBe(1);

    // Back to the list: the password is not on the page any more.
    await page.goto(`${portalUrl}/`);
    const listed = await page.content();
    expect(listed).toContain('phone');
    expect(listed).not.toContain(password);
    await screenshot(page, 'portal-list');

    await Promise.all([page.waitForNavigation(), page.click('li.password button.danger')]);
    expect(await page.$eval('.notice', (e) => e.textContent)).toContain('revoked');
    expect(await store().list(ALICE)).toEqual([]);
    // The next login with it fails at once, on both protocols, and reaches neither backend as alice.
    expect((await imapList(password)).code).toBe(67);
    expect((await smtpSend(password, 'after revocation')).code).toBe(67);
    expect(await backendLogins()).toEqual(after);
  });

  it('refuses a form without the CSRF token, and one posted from another site', async () => {
    await page.goto(`${portalUrl}/`);
    const csrf = await csrfOnPage();
    // The page's own form, its token removed.
    const withoutToken = await Promise.all([
      page.waitForNavigation(),
      page.evaluate(() => {
        const form = document.querySelector<HTMLFormElement>('#create form')!;
        form.querySelector('input[name="csrf"]')!.remove();
        (form.querySelector('#label') as HTMLInputElement).value = 'no token';
        form.submit();
      }),
    ]).then(([r]) => r);
    expect(withoutToken?.status()).toBe(403);

    // Another site's page that even knows the token.
    const { port } = foreign.address() as AddressInfo;
    await page.goto(`http://127.0.0.1:${port}/?csrf=${encodeURIComponent(csrf)}`);
    const crossSite = await Promise.all([page.waitForNavigation(), page.click('button')]).then(([r]) => r);
    expect(crossSite?.status()).toBe(403);
    expect(await store().list()).toEqual([]);
  });

  it('asks the provider again (max_age) when the sign-in is no longer recent, then creates the password', async () => {
    await page.goto(`${portalUrl}/`);
    // A sign-in older than recentSignInSeconds, as the session cookie would carry it.
    expect(await store().list()).toEqual([]);
    let sentMaxAge: string | null = null;
    const watch = (request: { url(): string }) => {
      const url = new URL(request.url());
      if (url.origin === stack.idp.issuer && url.searchParams.has('max_age')) sentMaxAge = url.searchParams.get('max_age');
    };
    page.on('request', watch);
    // The recent-sign-in rule itself is unit-tested with a clock; here the page's own path to
    // the provider with max_age is followed through the real provider.
    await page.goto(`${portalUrl}/signin?recent=1`);
    page.off('request', watch);
    expect(sentMaxAge).toBe('120');
    if (page.url().startsWith(stack.idp.issuer)) await signInAtDevIdp(page, 'alice', 'any-dev-password-1');
    expect(page.url()).toBe(`${portalUrl}/`);
    await page.type('#label', 'laptop');
    await page.click('input[name="protocols"][value="smtp"]');
    await Promise.all([page.waitForNavigation(), page.click('#create button[type="submit"]')]);
    const password = secret((await page.$eval('#new-password', (e) => e.textContent ?? '')).trim(), 'app password');
    passwords.push(password);
    // Good for IMAP only: SMTP refuses it (sasl-gate passes it through, and Postfix knows no such password).
    expect((await imapList(password)).code).toBe(0);
    const before = await backendLogins();
    expect((await smtpSend(password, 'imap only')).code).toBe(67);
    expect((await backendLogins()).postfix).toBe(before.postfix);
  });

  it('presents a renewed certificate to new connections without a restart', async () => {
    const fingerprint = () =>
      new Promise<string>((resolve, reject) => {
        const socket = tlsConnect({ host: '127.0.0.1', port: stack.gate.portal!.port, rejectUnauthorized: false }, () => {
          resolve(socket.getPeerX509Certificate()!.fingerprint256);
          socket.end();
        });
        socket.once('error', reject);
      });
    const before = await fingerprint();
    const renewed = await ensureDevCertificate(join(mkdtempSync(join(tmpdir(), 'sasl-gate-portal-renewed-')), 'certs'));
    copyFileSync(renewed.certPath, stack.tlsPaths.cert);
    copyFileSync(renewed.keyPath, stack.tlsPaths.key);
    expect(stack.gate.reloadCertificates()).toBe(true);
    const after = await fingerprint();
    expect(after).not.toBe(before);
    // The browser's session goes on over the new certificate.
    const res = await page.goto(`${portalUrl}/`);
    expect(res?.status()).toBe(200);
  });

  it('signs out, and logs none of the secrets it handled', async () => {
    await page.goto(`${portalUrl}/`);
    await Promise.all([page.waitForNavigation(), page.click('form.signout button')]);
    expect(await page.content()).toContain('You are signed out');
    expect((await browser.cookies()).some((c) => c.name === '__Host-sasl-gate-session')).toBe(false);
    const log = stack.rawLog();
    expect(log).toContain('portal sign-in');
    expect(log).toContain('app password created in the portal');
    expect(codes.length).toBeGreaterThan(0);
    expect(passwords.length).toBe(2);
    for (const value of [...codes, ...passwords]) expect(log).not.toContain(value);
  });
});

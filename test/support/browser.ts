/**
 * A real headless browser for tests of the self-service page: Debian's chromium driven by
 * puppeteer-core (which downloads no browser of its own).
 */
import { existsSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import puppeteer, { type Browser, type Page } from 'puppeteer-core';

/** Where Debian's chromium package puts the browser. */
export const CHROMIUM = process.env['CHROMIUM_PATH'] ?? '/usr/bin/chromium';

/** Whether the browser is installed (the CI installs it; see .ci/run). */
export function hasChromium(): boolean {
  return existsSync(CHROMIUM);
}

/** Where screenshots of test runs go (gitignored). */
export const TEST_RESULTS = new URL('../../test-results', import.meta.url).pathname;

/**
 * Starts headless chromium. The gate's development certificate is signed by a development CA the
 * browser does not know, so certificate errors are accepted; the page is still HTTPS, so Secure
 * and `__Host-` cookies behave as they do for users.
 */
export async function launchBrowser(): Promise<Browser> {
  return puppeteer.launch({
    executablePath: CHROMIUM,
    headless: true,
    acceptInsecureCerts: true,
    // Root in a container has no user namespace to sandbox with.
    args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage', '--no-first-run', '--no-default-browser-check'],
  });
}

/** Saves a screenshot of the page as test-results/<name>.png and returns its path. */
export async function screenshot(page: Page, name: string): Promise<string> {
  mkdirSync(TEST_RESULTS, { recursive: true });
  const path = join(TEST_RESULTS, `${name}.png`);
  await page.screenshot({ path, fullPage: true });
  return path;
}

/**
 * Signs in on the development provider's own login page (oidc-provider's development
 * interactions: any password), and gives consent when it asks.
 */
export async function signInAtDevIdp(page: Page, login: string, password: string): Promise<void> {
  await page.waitForSelector('input[name="login"]');
  await page.type('input[name="login"]', login);
  await page.type('input[name="password"]', password);
  await Promise.all([page.waitForNavigation(), page.click('button[type="submit"]')]);
  // The consent page, the first time this client asks for this user.
  if (await page.$('input[name="prompt"][value="consent"]')) {
    await Promise.all([page.waitForNavigation(), page.click('button[type="submit"]')]);
  }
}

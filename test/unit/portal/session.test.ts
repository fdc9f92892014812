import { mkdtempSync, readFileSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { CookieSigner, loadCookieKey, openPendingSignIn, openSession, parseCookies, SESSION_COOKIE, SIGNIN_COOKIE } from '../../../src/portal/session.js';

describe('the page\u2019s cookies', () => {
  const signer = new CookieSigner(Buffer.alloc(32, 1));

  it('opens what it sealed, under the same name only, with the same key only', () => {
    const sealed = signer.seal(SESSION_COOKIE, { user: 'a@example.test', csrf: 'c', seen: 100 });
    expect(openSession(signer, sealed, 100, 60)).toEqual({ user: 'a@example.test', authTime: undefined, csrf: 'c', seen: 100 });
    expect(signer.open(SIGNIN_COOKIE, sealed)).toBeUndefined();
    expect(new CookieSigner(Buffer.alloc(32, 2)).open(SESSION_COOKIE, sealed)).toBeUndefined();
    for (const garbled of ['', '.', 'abc', `${sealed}x`, `x${sealed}`, sealed.replace('.', '')]) {
      expect(signer.open(SESSION_COOKIE, garbled)).toBeUndefined();
    }
  });

  it('ends a session idle for longer than allowed, and refuses one dated in the future', () => {
    const sealed = signer.seal(SESSION_COOKIE, { user: 'a@example.test', csrf: 'c', seen: 1000, authTime: 990 });
    expect(openSession(signer, sealed, 1060, 60)?.authTime).toBe(990);
    expect(openSession(signer, sealed, 1061, 60)).toBeUndefined();
    expect(openSession(signer, sealed, 900, 60)).toBeUndefined();
  });

  it('lets a sign-in in progress expire', () => {
    const sealed = signer.seal(SIGNIN_COOKIE, { state: 's', nonce: 'n', verifier: 'v', returnTo: '/', expires: 500 });
    expect(openPendingSignIn(signer, sealed, 500)?.state).toBe('s');
    expect(openPendingSignIn(signer, sealed, 501)).toBeUndefined();
  });

  it('refuses a key shorter than 32 bytes', () => {
    expect(() => new CookieSigner(Buffer.alloc(31))).toThrow(/32 bytes/);
  });

  it('makes the key once in the storage directory, mode 0600, and reads it back', () => {
    const dir = join(mkdtempSync(join(tmpdir(), 'portal-key-')), 'state');
    const key = loadCookieKey(dir);
    expect(key).toHaveLength(32);
    expect(statSync(join(dir, 'portal-cookie.key')).mode & 0o777).toBe(0o600);
    expect(statSync(dir).mode & 0o777).toBe(0o700);
    expect(loadCookieKey(dir).equals(key)).toBe(true);
    expect(readFileSync(join(dir, 'portal-cookie.key')).equals(key)).toBe(true);
  });

  it('reads cookies by name, the first of a repeated name', () => {
    expect([...parseCookies('a=1; b=x=y; a=2;; junk')]).toEqual([
      ['a', '1'],
      ['b', 'x=y'],
    ]);
  });
});

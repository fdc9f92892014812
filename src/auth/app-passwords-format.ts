/**
 * The app-password format: 28 lowercase letters drawn uniformly (131 bits), shown in seven groups
 * of four joined by `-`: typeable on a phone, no shift, no digits to confuse. Pure.
 */
import { createHmac, randomBytes } from 'node:crypto';

const LETTERS = 'abcdefghijklmnopqrstuvwxyz';
/** Letters in a password. */
export const PASSWORD_LETTERS = 28;
const GROUP = 4;
/** Bytes at or above this are dropped, so every letter is equally likely (234 = 9 * 26). */
const UNBIASED_LIMIT = 256 - (256 % LETTERS.length);

/** A new password in its shown form (`abcd-efgh-...`); `random` is injectable for tests. */
export function generateAppPassword(random: (size: number) => Buffer = randomBytes): string {
  let letters = '';
  while (letters.length < PASSWORD_LETTERS) {
    for (const byte of random(PASSWORD_LETTERS * 2)) {
      if (byte >= UNBIASED_LIMIT) continue;
      letters += LETTERS[byte % LETTERS.length];
      if (letters.length === PASSWORD_LETTERS) break;
    }
  }
  const groups: string[] = [];
  for (let i = 0; i < PASSWORD_LETTERS; i += GROUP) groups.push(letters.slice(i, i + GROUP));
  return groups.join('-');
}

/**
 * The 28 letters of `typed` when it is an app password in any accepted spelling (dashes or
 * spaces anywhere, any case); undefined when it cannot be one.
 */
export function normalizeAppPassword(typed: string): string | undefined {
  if (typed.length > PASSWORD_LETTERS * 3) return undefined;
  const letters = typed.replace(/[-\s]/g, '');
  // ASCII only: toLowerCase() would fold some non-ASCII letters (the Kelvin sign) into ASCII ones.
  if (!/^[a-zA-Z]+$/.test(letters) || letters.length !== PASSWORD_LETTERS) return undefined;
  return letters.toLowerCase();
}

/** The stored form of a normalised password: HMAC-SHA-256 under the server key. */
export function hashAppPassword(key: Buffer, normalized: string): Buffer {
  return createHmac('sha256', key).update(normalized, 'utf8').digest();
}

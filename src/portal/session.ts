import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { chmodSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { GateError } from '../errors.js';

/** The session cookie; `__Host-` makes browsers insist on Secure, Path=/ and no Domain. */
export const SESSION_COOKIE = '__Host-sasl-gate-session';
/** The short-lived cookie that carries a sign-in in progress (state, nonce, PKCE verifier). */
export const SIGNIN_COOKIE = '__Host-sasl-gate-signin';
/** How long a sign-in at the provider may take. */
export const SIGNIN_SECONDS = 600;

const KEY_BYTES = 32;

/** Signs values into cookie text and opens them again; a value signed for one cookie name opens under no other. */
export class CookieSigner {
  constructor(private readonly key: Buffer) {
    if (key.length < KEY_BYTES) throw new GateError('portal_key_short', `the portal's cookie key must be at least ${KEY_BYTES} bytes`);
  }

  private mac(name: string, payload: string): Buffer {
    return createHmac('sha256', this.key).update(`${name}\n${payload}`).digest();
  }

  /** `payload.mac`, both base64url. */
  seal(name: string, value: unknown): string {
    const payload = Buffer.from(JSON.stringify(value), 'utf8').toString('base64url');
    return `${payload}.${this.mac(name, payload).toString('base64url')}`;
  }

  /** The value sealed under `name`, or undefined for anything else (forged, altered, garbled). */
  open(name: string, text: string | undefined): unknown {
    if (!text) return undefined;
    const dot = text.indexOf('.');
    if (dot <= 0) return undefined;
    const payload = text.slice(0, dot);
    const given = Buffer.from(text.slice(dot + 1), 'base64url');
    const wanted = this.mac(name, payload);
    if (given.length !== wanted.length || !timingSafeEqual(given, wanted)) return undefined;
    try {
      return JSON.parse(Buffer.from(payload, 'base64url').toString('utf8')) as unknown;
    } catch {
      return undefined;
    }
  }
}

/** A signed-in visitor, as the cookie carries it: no token of the provider, ever. */
export interface PortalSession {
  user: string;
  /** When the user last proved themselves at the provider (the ID token's `auth_time`), seconds. */
  authTime: number | undefined;
  /** The token every form carries back. */
  csrf: string;
  /** The last request, seconds: the session ends `portal.sessionIdleSeconds` after it. */
  seen: number;
}

/** A sign-in on its way through the provider. */
export interface PendingSignIn {
  state: string;
  nonce: string;
  verifier: string;
  /** Set when the sign-in must be recent (`max_age`). */
  maxAge: number | undefined;
  /** Where to go afterwards: a path of this page. */
  returnTo: string;
  expires: number;
}

/** A new random token (CSRF, state, nonce). */
export function randomToken(): string {
  return randomBytes(32).toString('base64url');
}

/** The session in the cookie text, unless it is forged, malformed or idle for longer than `idleSeconds`. */
export function openSession(signer: CookieSigner, text: string | undefined, nowSeconds: number, idleSeconds: number): PortalSession | undefined {
  const value = signer.open(SESSION_COOKIE, text) as Partial<PortalSession> | undefined;
  if (!value || typeof value !== 'object') return undefined;
  const { user, authTime, csrf, seen } = value;
  if (typeof user !== 'string' || typeof csrf !== 'string' || typeof seen !== 'number') return undefined;
  if (authTime !== undefined && authTime !== null && typeof authTime !== 'number') return undefined;
  if (nowSeconds - seen > idleSeconds || seen > nowSeconds + 60) return undefined;
  return { user, authTime: authTime ?? undefined, csrf, seen };
}

/** The sign-in in progress in the cookie text, unless forged or expired. */
export function openPendingSignIn(signer: CookieSigner, text: string | undefined, nowSeconds: number): PendingSignIn | undefined {
  const value = signer.open(SIGNIN_COOKIE, text) as Partial<PendingSignIn> | undefined;
  if (!value || typeof value !== 'object') return undefined;
  const { state, nonce, verifier, maxAge, returnTo, expires } = value;
  if (typeof state !== 'string' || typeof nonce !== 'string' || typeof verifier !== 'string') return undefined;
  if (typeof returnTo !== 'string' || typeof expires !== 'number' || expires < nowSeconds) return undefined;
  return { state, nonce, verifier, maxAge: typeof maxAge === 'number' ? maxAge : undefined, returnTo, expires };
}

/** Whether the CSRF token a form sent is the session's. */
export function csrfMatches(session: PortalSession, sent: string | undefined): boolean {
  if (sent === undefined) return false;
  const a = Buffer.from(session.csrf);
  const b = Buffer.from(sent);
  return a.length === b.length && timingSafeEqual(a, b);
}

/** A `Set-Cookie` value with the flags every cookie of the page has. */
export function cookieHeader(name: string, value: string, maxAgeSeconds: number): string {
  return `${name}=${value}; Max-Age=${Math.max(0, Math.floor(maxAgeSeconds))}; Path=/; Secure; HttpOnly; SameSite=Lax`;
}

/** The cookies of a request by name (the first of a repeated name). */
export function parseCookies(header: string | undefined): Map<string, string> {
  const cookies = new Map<string, string>();
  for (const part of (header ?? '').split(';')) {
    const eq = part.indexOf('=');
    if (eq < 0) continue;
    const name = part.slice(0, eq).trim();
    if (name && !cookies.has(name)) cookies.set(name, part.slice(eq + 1).trim());
  }
  return cookies;
}

/**
 * The key the page's cookies are signed with: `<dir>/portal-cookie.key`, 32 random bytes made once
 * (mode 0600) so sessions survive a restart; without a storage directory, one for this process.
 */
export function loadCookieKey(dir: string | undefined): Buffer {
  if (dir === undefined) return randomBytes(KEY_BYTES);
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const path = join(dir, 'portal-cookie.key');
  try {
    writeFileSync(path, randomBytes(KEY_BYTES), { mode: 0o600, flag: 'wx' });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') {
      throw new GateError('portal_key_unwritable', `cannot write ${path}: ${(err as Error).message}`, { cause: err });
    }
  }
  chmodSync(path, 0o600);
  const key = readFileSync(path);
  if (key.length < KEY_BYTES) throw new GateError('portal_key_short', `${path} holds fewer than ${KEY_BYTES} bytes: remove it to have a new one made`);
  return key;
}

import type { Logger } from 'pino';
import type { AppPasswordRefusal, AppPasswordService } from '../auth/app-passwords.js';
import { checkRequirements } from '../auth/claims.js';
import { identityFromClaims, type IdentityRules } from '../auth/identity.js';
import { PROTOCOLS, type MailProtocol, type OAuthConfig } from '../config/schema.js';
import { GateError } from '../errors.js';
import type { DirectoryVerdict } from '../login/options.js';
import {
  createdPage,
  passwordsPage,
  problemPage,
  SCRIPT,
  signedOutPage,
  STYLESHEET,
  type CreateForm,
  type PageContext,
  type ServerSetting,
} from './html.js';
import {
  cookieHeader,
  csrfMatches,
  openPendingSignIn,
  openSession,
  parseCookies,
  randomToken,
  SESSION_COOKIE,
  SIGNIN_COOKIE,
  SIGNIN_SECONDS,
  type CookieSigner,
  type PendingSignIn,
  type PortalSession,
} from './session.js';
import type { SignInClient } from './signin.js';

/** A request as the page sees it: no socket. */
export interface PortalRequest {
  method: string;
  /** The request target (path and query). */
  url: string;
  headers: Record<string, string | string[] | undefined>;
  /** The body of a POST (a form), already read. */
  body: string;
}

/** A response to write. */
export interface PortalResponse {
  status: number;
  headers: Record<string, string | string[]>;
  body: string;
}

/** What the page is configured with. */
export interface PortalSettings {
  /** `portal.publicUrl`. */
  publicUrl: string;
  /** Shown on the sign-in button. */
  providerName: string;
  sessionIdleSeconds: number;
  recentSignInSeconds: number;
  /** Who a sign-in names: the same rules as a token's identity. */
  identity: IdentityRules;
  /** The admin's requirements on a token (a verified address, a group); scopes are an access token's, not checked here. */
  oauth: OAuthConfig;
  defaultProtocols: readonly MailProtocol[];
  /** The listeners a mail client can use, for the settings shown with a new password. */
  servers: readonly ServerSetting[];
}

/** The page's parts. */
export interface PortalDependencies {
  service: AppPasswordService;
  signIn: SignInClient;
  signer: CookieSigner;
  log: Logger;
  /** The directory's word on a user; only `allowed` may use the page when there is a directory. */
  directoryVerdict?: DirectoryVerdict | undefined;
  /** Milliseconds since the epoch; injected for tests. */
  now?: () => number;
}

/** The page's request handler. */
export interface PortalApp {
  handle(request: PortalRequest): Promise<PortalResponse>;
}

const MAX_LABEL_LENGTH = 64;
const MAX_EXPIRY_DAYS = 3650;
const REFUSALS: readonly AppPasswordRefusal[] = ['duplicate_label', 'too_many', 'bad_label', 'bad_protocols'];

/** Fixed notices a redirect may ask for; nothing from the query is ever shown as it came. */
const NOTICES: Record<string, string> = {
  revoked: 'The app password was revoked: apps using it can no longer sign in.',
  gone: 'That app password was already revoked or has expired.',
  signedout: 'You are signed out.',
  recent: 'You signed in again: you can create the password now.',
};

/** The refusal an error of the app-password service names, if it is one. */
export function refusalOf(err: unknown): AppPasswordRefusal | undefined {
  if (err === null || typeof err !== 'object') return undefined;
  const named = (err as { refusal?: unknown }).refusal ?? (err as { code?: unknown }).code;
  return REFUSALS.find((r) => r === named);
}

function refusalMessage(refusal: AppPasswordRefusal): string {
  switch (refusal) {
    case 'duplicate_label':
      return 'You already have an app password with this label: choose another one, or revoke the old one first.';
    case 'too_many':
      return 'You have as many app passwords as allowed: revoke one you no longer use first.';
    case 'bad_label':
      return 'This label cannot be used: choose a short name such as “phone” or “laptop”.';
    case 'bad_protocols':
      return 'Choose at least one service the password is for.';
  }
}

/** The security headers of every response. */
export function securityHeaders(formTargets: readonly string[]): Record<string, string> {
  return {
    'content-security-policy': `default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'none'; form-action 'self' ${formTargets.join(' ')}; frame-ancestors 'none'; base-uri 'none'`.replace(/ ;/g, ';'),
    // `same-origin`, not `no-referrer`: with no-referrer a browser sends `Origin: null` on the page's
    // own form posts (Fetch, "append a request Origin header"), so they could not be told from a
    // foreign site's; same-origin still tells no other site anything.
    'referrer-policy': 'same-origin',
    'cache-control': 'no-store',
    pragma: 'no-cache',
    'strict-transport-security': 'max-age=31536000',
    'x-content-type-options': 'nosniff',
    'x-frame-options': 'DENY',
    'cross-origin-opener-policy': 'same-origin',
    'cross-origin-resource-policy': 'same-origin',
  };
}

function header(request: PortalRequest, name: string): string | undefined {
  const value = request.headers[name];
  return Array.isArray(value) ? value[0] : value;
}

/** Whether a POST comes from the page itself: its Origin, or without one its Referer, is the page's origin. */
export function sameOrigin(request: PortalRequest, origin: string): boolean {
  const sent = header(request, 'origin');
  if (sent !== undefined) return sent === origin;
  const referer = header(request, 'referer');
  if (referer === undefined) return false;
  try {
    return new URL(referer).origin === origin;
  } catch {
    return false;
  }
}

/** Builds the page's request handler. */
export function createPortalApp(settings: PortalSettings, deps: PortalDependencies): PortalApp {
  const { service, signIn, signer, log } = deps;
  const now = deps.now ?? Date.now;
  const publicUrl = new URL(settings.publicUrl);
  const origin = publicUrl.origin;
  const base = publicUrl.pathname.replace(/\/+$/, '');
  const page: PageContext = { base, providerName: settings.providerName };
  const host = publicUrl.hostname.replace(/^\[|\]$/g, '');
  const offered = PROTOCOLS.filter((p) => settings.servers.some((s) => s.protocol === p));
  const offeredProtocols = offered.length > 0 ? offered : [...settings.defaultProtocols];
  const defaultChecked = settings.defaultProtocols.filter((p) => offeredProtocols.includes(p));
  const emptyForm = (): CreateForm => ({ label: '', protocols: defaultChecked.length > 0 ? defaultChecked : [...offeredProtocols], expiresDays: '' });
  const requirements: OAuthConfig = { ...settings.oauth, requiredScopes: [] };

  const respond = (status: number, body: string, extra: Record<string, string | string[]> = {}): PortalResponse => ({
    status,
    headers: { ...securityHeaders(signIn.origins()), 'content-type': 'text/html; charset=utf-8', ...extra },
    body,
  });
  const redirect = (location: string, cookies: string[] = []): PortalResponse =>
    respond(303, '', { location, ...(cookies.length > 0 ? { 'set-cookie': cookies } : {}) });
  const sessionCookie = (session: PortalSession): string =>
    cookieHeader(SESSION_COOKIE, signer.seal(SESSION_COOKIE, session), settings.sessionIdleSeconds);
  const clearSession = cookieHeader(SESSION_COOKIE, '', 0);
  const clearSignIn = cookieHeader(SIGNIN_COOKIE, '', 0);
  const nowSeconds = () => Math.floor(now() / 1000);

  const allowedByDirectory = (user: string): boolean => !deps.directoryVerdict || deps.directoryVerdict(user) === 'allowed';

  // A signed-out session's cookie stays valid text until it idles out: a copy of it (a shared
  // computer, a stolen cookie) must not reopen the page. Kept by CSRF token (one per session) until
  // the cookie could not open anyway.
  const signedOut = new Map<string, number>();
  const endSession = (session: PortalSession): void => {
    const at = nowSeconds();
    for (const [csrf, until] of signedOut) if (until < at) signedOut.delete(csrf);
    signedOut.set(session.csrf, at + settings.sessionIdleSeconds + 60);
  };

  const listPage = async (session: PortalSession, status: number, form: CreateForm, notice?: string, error?: string): Promise<PortalResponse> => {
    const passwords = await service.list(session.user);
    return respond(
      status,
      passwordsPage(page, { user: session.user, csrf: session.csrf, passwords, offered: offeredProtocols, form, ...(notice ? { notice } : {}), ...(error ? { error } : {}) }),
      { 'set-cookie': [sessionCookie(session)] },
    );
  };

  /** Sends the browser to the provider, remembering the checks in a signed cookie. */
  const startSignIn = async (maxAge: number | undefined, returnTo: string): Promise<PortalResponse> => {
    const pending: PendingSignIn = {
      state: randomToken(),
      nonce: randomToken(),
      verifier: randomToken(),
      maxAge,
      returnTo,
      expires: nowSeconds() + SIGNIN_SECONDS,
    };
    const url = await signIn.authorizationUrl(pending);
    return respond(302, '', { location: url.href, 'set-cookie': [cookieHeader(SIGNIN_COOKIE, signer.seal(SIGNIN_COOKIE, pending), SIGNIN_SECONDS)] });
  };

  const callback = async (request: PortalRequest, url: URL): Promise<PortalResponse> => {
    const pending = openPendingSignIn(signer, parseCookies(header(request, 'cookie')).get(SIGNIN_COOKIE), nowSeconds());
    if (!pending) {
      return respond(400, problemPage(page, 'Sign-in expired', 'This sign-in took too long or began in another browser. Please sign in again.'), { 'set-cookie': [clearSignIn] });
    }
    if (url.searchParams.has('error')) {
      log.info({ error: url.searchParams.get('error')?.slice(0, 64) }, 'portal sign-in ended at the provider');
      return respond(400, problemPage(page, 'Not signed in', `${settings.providerName} did not sign you in. Please try again.`), { 'set-cookie': [clearSignIn] });
    }
    let result;
    try {
      const callbackUrl = new URL(`${publicUrl.origin}${base}/callback${url.search}`);
      result = await signIn.complete(callbackUrl, pending);
    } catch (err) {
      const temporary = err instanceof GateError && err.temporary;
      log.warn({ err: (err as Error).message, code: (err as { code?: unknown }).code }, 'portal sign-in failed');
      return respond(
        temporary ? 503 : 400,
        problemPage(page, 'Not signed in', temporary ? `${settings.providerName} cannot be reached just now. Please try again in a minute.` : 'The sign-in could not be completed. Please sign in again.'),
        { 'set-cookie': [clearSignIn] },
      );
    }
    let user: string;
    try {
      checkRequirements(result.claims, requirements);
      user = identityFromClaims(result.claims, settings.identity).identity;
    } catch (err) {
      log.warn({ code: (err as { code?: unknown }).code, err: (err as Error).message }, 'portal sign-in names no mail user');
      return respond(403, problemPage(page, 'No mailbox', 'Your account has no mailbox on this server that app passwords could be made for.'), { 'set-cookie': [clearSignIn] });
    }
    if (!allowedByDirectory(user)) {
      log.warn({ user, verdict: deps.directoryVerdict?.(user) }, 'portal sign-in refused by the directory');
      return respond(403, problemPage(page, 'No mailbox', 'Your account has no active mailbox on this server.'), { 'set-cookie': [clearSignIn] });
    }
    const session: PortalSession = { user, authTime: result.authTime, csrf: randomToken(), seen: nowSeconds() };
    log.info({ user }, 'portal sign-in');
    const returnTo = pending.returnTo.startsWith('/') && !pending.returnTo.startsWith('//') ? pending.returnTo : '/';
    return redirect(`${base}${returnTo}`, [clearSignIn, sessionCookie(session)]);
  };

  const isRecent = (session: PortalSession): boolean =>
    session.authTime !== undefined && nowSeconds() - session.authTime <= settings.recentSignInSeconds;

  const readForm = (form: URLSearchParams): CreateForm => ({
    label: (form.get('label') ?? '').trim().slice(0, 200),
    protocols: PROTOCOLS.filter((p) => form.getAll('protocols').includes(p)),
    expiresDays: (form.get('expires') ?? '').trim().slice(0, 10),
  });

  const formProblem = (form: CreateForm): string | undefined => {
    if (form.label === '' || form.label.length > MAX_LABEL_LENGTH) return `Give the password a label of at most ${MAX_LABEL_LENGTH} characters.`;
    if (form.protocols.length === 0 || form.protocols.some((p) => !offeredProtocols.includes(p))) return refusalMessage('bad_protocols');
    if (form.expiresDays !== '') {
      const days = Number(form.expiresDays);
      if (!/^\d+$/.test(form.expiresDays) || days < 1 || days > MAX_EXPIRY_DAYS) return `The expiry is a number of days from 1 to ${MAX_EXPIRY_DAYS}, or empty for never.`;
    }
    return undefined;
  };

  const create = async (session: PortalSession, form: CreateForm): Promise<PortalResponse> => {
    const problem = formProblem(form);
    if (problem) return listPage(session, 400, form, undefined, problem);
    if (!isRecent(session)) {
      // Back through the provider with max_age, then back to this form, filled in as it was.
      const resume = new URLSearchParams({ resume: '1', label: form.label, expires: form.expiresDays });
      for (const p of form.protocols) resume.append('protocols', p);
      log.info({ user: session.user }, 'portal asks for a recent sign-in before creating an app password');
      return startSignIn(settings.recentSignInSeconds, `/?${resume.toString()}#create`);
    }
    const expiresAt = form.expiresDays === '' ? undefined : new Date(now() + Number(form.expiresDays) * 86_400_000);
    try {
      const created = await service.create({ user: session.user, label: form.label, protocols: form.protocols, ...(expiresAt ? { expiresAt } : {}), createdBy: 'user' });
      log.info({ user: session.user, id: created.record.id, label: created.record.label, protocols: created.record.protocols }, 'app password created in the portal');
      return respond(
        200,
        createdPage(page, { user: session.user, csrf: session.csrf, password: created.password, record: created.record, host, servers: [...settings.servers] }),
        { 'set-cookie': [sessionCookie(session)] },
      );
    } catch (err) {
      const refusal = refusalOf(err);
      if (refusal === undefined) throw err;
      log.info({ user: session.user, refusal }, 'app password not created');
      return listPage(session, 400, form, undefined, refusalMessage(refusal));
    }
  };

  const route = async (request: PortalRequest): Promise<PortalResponse> => {
    const url = new URL(request.url, origin);
    if (base !== '' && url.pathname !== base && !url.pathname.startsWith(`${base}/`)) return respond(404, problemPage(page, 'Not found', 'There is no such page.'));
    const path = url.pathname.slice(base.length) || '/';
    // HEAD is answered as GET; the server leaves the body out.
    const method = request.method.toUpperCase() === 'HEAD' ? 'GET' : request.method.toUpperCase();

    if (method === 'GET' && path === '/static/portal.css') {
      return respond(200, STYLESHEET, { 'content-type': 'text/css; charset=utf-8' });
    }
    if (method === 'GET' && path === '/static/portal.js') {
      return respond(200, SCRIPT, { 'content-type': 'text/javascript; charset=utf-8' });
    }
    if (method === 'GET' && path === '/callback') return callback(request, url);

    const cookies = parseCookies(header(request, 'cookie'));
    let session = openSession(signer, cookies.get(SESSION_COOKIE), nowSeconds(), settings.sessionIdleSeconds);
    // A user the directory disabled since signing in loses the page at once.
    if (session && !allowedByDirectory(session.user)) session = undefined;
    if (session && signedOut.has(session.csrf)) session = undefined;
    const ended = cookies.has(SESSION_COOKIE) && !session ? [clearSession] : [];
    if (session) session = { ...session, seen: nowSeconds() };

    if (method === 'GET' && path === '/signin') {
      const recent = url.searchParams.get('recent') === '1';
      return startSignIn(recent ? settings.recentSignInSeconds : undefined, '/');
    }
    if (method === 'GET' && path === '/') {
      if (!session) {
        const notice = NOTICES[url.searchParams.get('done') ?? ''];
        return respond(200, signedOutPage(page, notice), ended.length > 0 ? { 'set-cookie': ended } : {});
      }
      const resumed = url.searchParams.get('resume') === '1';
      const form = resumed ? readForm(url.searchParams) : emptyForm();
      const notice = resumed ? NOTICES['recent'] : NOTICES[url.searchParams.get('done') ?? ''];
      return listPage(session, 200, form, notice);
    }
    if (method === 'POST' && (path === '/create' || path === '/revoke' || path === '/signout')) {
      if (!sameOrigin(request, origin)) {
        log.warn({ path, origin: header(request, 'origin')?.slice(0, 100) }, 'portal refused a form from another origin');
        return respond(403, problemPage(page, 'Refused', 'This form did not come from this page. Please open the page again and retry.'));
      }
      if (!session) return redirect(`${base}/`, ended);
      const form = new URLSearchParams(request.body);
      if (!csrfMatches(session, form.get('csrf') ?? undefined)) {
        log.warn({ path, user: session.user }, 'portal refused a form without the right CSRF token');
        return respond(403, problemPage(page, 'Refused', 'This form is out of date. Please open the page again and retry.'));
      }
      if (path === '/signout') {
        log.info({ user: session.user }, 'portal sign-out');
        endSession(session);
        return redirect(`${base}/?done=signedout`, [clearSession]);
      }
      if (path === '/revoke') {
        const id = form.get('id') ?? '';
        const revoked = id !== '' && (await service.revokeById(session.user, id));
        if (revoked) log.info({ user: session.user, id }, 'app password revoked in the portal');
        return redirect(`${base}/?done=${revoked ? 'revoked' : 'gone'}`, [sessionCookie(session)]);
      }
      return create(session, readForm(form));
    }
    if (['/', '/signin', '/callback', '/create', '/revoke', '/signout'].includes(path)) {
      return respond(405, problemPage(page, 'Not allowed', 'This page does not take that kind of request.'), { allow: path === '/' || path === '/signin' || path === '/callback' ? 'GET' : 'POST' });
    }
    return respond(404, problemPage(page, 'Not found', 'There is no such page.'));
  };

  return {
    async handle(request) {
      try {
        return await route(request);
      } catch (err) {
        const temporary = err instanceof GateError && err.temporary;
        log.error({ err: (err as Error).message, code: (err as { code?: unknown }).code }, 'portal request failed');
        return respond(
          503,
          problemPage(page, 'Try again', temporary ? `${settings.providerName} cannot be reached just now. Please try again in a minute.` : 'Something went wrong on this server. Please try again in a minute.'),
        );
      }
    },
  };
}

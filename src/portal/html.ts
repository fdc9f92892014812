import type { AppPasswordRecord } from '../auth/app-passwords.js';
import type { MailProtocol } from '../config/schema.js';

/** Escapes text for HTML element content and quoted attribute values. */
export function escapeHtml(value: string): string {
  return value.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

/** A template literal whose interpolations are escaped, unless they are already {@link Html}. */
export class Html {
  constructor(readonly text: string) {}
  toString(): string {
    return this.text;
  }
}

type Fragment = Html | string | number | undefined | null | false | readonly Fragment[];

function render(value: Fragment): string {
  if (value === undefined || value === null || value === false) return '';
  if (value instanceof Html) return value.text;
  if (Array.isArray(value)) return value.map((v: Fragment) => render(v)).join('');
  return escapeHtml(String(value));
}

/** Builds HTML from a template: every interpolated value is escaped unless it is Html. */
export function html(strings: TemplateStringsArray, ...values: Fragment[]): Html {
  let out = strings[0]!;
  values.forEach((value, i) => {
    out += render(value) + strings[i + 1]!;
  });
  return new Html(out);
}

const PROTOCOL_NAMES: Record<MailProtocol, string> = { imap: 'IMAP', smtp: 'SMTP', pop3: 'POP3', sieve: 'ManageSieve' };

/** What a mail client needs to be told about one listener. */
export interface ServerSetting {
  protocol: MailProtocol;
  port: number;
  tls: 'implicit' | 'starttls';
}

/** What every page shows and needs. */
export interface PageContext {
  /** The path prefix of `portal.publicUrl` ('' at the root). */
  base: string;
  providerName: string;
}

/** The page frame: a phone-friendly layout with the stylesheet and script of this server only. */
export function layout(ctx: PageContext, title: string, body: Html, signedIn?: { user: string; csrf: string }): string {
  return `<!doctype html>${html`<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>${title} · Mail app passwords</title>
<link rel="stylesheet" href="${ctx.base}/static/portal.css">
<script src="${ctx.base}/static/portal.js" defer></script>
</head>
<body>
<header>
<p class="brand">Mail app passwords</p>
${
  signedIn
    ? html`<form method="post" action="${ctx.base}/signout" class="signout">
<input type="hidden" name="csrf" value="${signedIn.csrf}">
<span class="who">${signedIn.user}</span>
<button type="submit" class="link">Sign out</button>
</form>`
    : ''
}
</header>
<main>
${body}
</main>
</body>
</html>
`.text}`;
}

/** The page of a visitor who is not signed in. */
export function signedOutPage(ctx: PageContext, notice?: string): string {
  return layout(
    ctx,
    'Sign in',
    html`<h1>Passwords for mail apps</h1>
${notice ? html`<p class="notice" role="status">${notice}</p>` : ''}
<p>Mail apps that cannot sign in with ${ctx.providerName} (many phone and desktop mail apps, printers, scripts) use an
app password instead: one per device, each of which you can revoke on its own. Your ${ctx.providerName} password is
never given to them.</p>
<p><a class="button" href="${ctx.base}/signin">Sign in with ${ctx.providerName}</a></p>`,
  );
}

function formatDate(date: Date): string {
  return date.toISOString().replace('T', ' ').replace(/:\d\d\.\d+Z$/, ' UTC');
}

function protocolList(protocols: readonly MailProtocol[]): string {
  return protocols.map((p) => PROTOCOL_NAMES[p]).join(', ');
}

/** What the create form was filled in with, to show it again. */
export interface CreateForm {
  label: string;
  protocols: MailProtocol[];
  expiresDays: string;
}

/** The signed-in page: the user's passwords, each with a Revoke button, and the create form. */
export function passwordsPage(
  ctx: PageContext,
  view: {
    user: string;
    csrf: string;
    passwords: AppPasswordRecord[];
    offered: MailProtocol[];
    form: CreateForm;
    notice?: string;
    error?: string;
  },
): string {
  const rows = view.passwords.map(
    (p) => html`<li class="password">
<h3>${p.label}</h3>
<dl>
<dt>For</dt><dd>${protocolList(p.protocols)}</dd>
<dt>Created</dt><dd>${formatDate(p.createdAt)}</dd>
<dt>Last used</dt><dd>${p.lastUse ? `${formatDate(p.lastUse.at)} from ${p.lastUse.address} (${PROTOCOL_NAMES[p.lastUse.protocol]})` : 'never'}</dd>
<dt>Expires</dt><dd>${p.expiresAt ? formatDate(p.expiresAt) : 'never'}</dd>
</dl>
<form method="post" action="${ctx.base}/revoke">
<input type="hidden" name="csrf" value="${view.csrf}">
<input type="hidden" name="id" value="${p.id}">
<button type="submit" class="danger" aria-label="${`Revoke ${p.label}`}">Revoke</button>
</form>
</li>`,
  );
  return layout(
    ctx,
    'Your app passwords',
    html`<h1>Your app passwords</h1>
${view.notice ? html`<p class="notice" role="status">${view.notice}</p>` : ''}
${view.error ? html`<p class="error" role="alert">${view.error}</p>` : ''}
${rows.length > 0 ? html`<ul class="passwords">${rows}</ul>` : html`<p>You have no app passwords yet.</p>`}
<section id="create" aria-labelledby="create-title">
<h2 id="create-title">Create an app password</h2>
<form method="post" action="${ctx.base}/create">
<input type="hidden" name="csrf" value="${view.csrf}">
<label for="label">Label (the device or app it is for)</label>
<input id="label" name="label" required maxlength="64" autocomplete="off" placeholder="phone" value="${view.form.label}">
<fieldset>
<legend>Good for</legend>
${view.offered.map(
  (p) => html`<label class="check"><input type="checkbox" name="protocols" value="${p}"${view.form.protocols.includes(p) ? html` checked` : ''}> ${PROTOCOL_NAMES[p]}</label>`,
)}
</fieldset>
<label for="expires">Expires after (days, empty for never)</label>
<input id="expires" name="expires" type="number" inputmode="numeric" min="1" max="3650" value="${view.form.expiresDays}">
<button type="submit">Create</button>
</form>
</section>`,
    { user: view.user, csrf: view.csrf },
  );
}

/** The page showing a new password, once, with what to type into a mail client. */
export function createdPage(
  ctx: PageContext,
  view: { user: string; csrf: string; password: string; record: AppPasswordRecord; host: string; servers: ServerSetting[] },
): string {
  const servers = view.servers
    .filter((s) => view.record.protocols.includes(s.protocol))
    .map(
      (s) =>
        html`<tr><th scope="row">${PROTOCOL_NAMES[s.protocol]}</th><td>${view.host}</td><td>${s.port}</td><td>${s.tls === 'implicit' ? 'SSL/TLS' : 'STARTTLS'}</td></tr>`,
    );
  return layout(
    ctx,
    'New app password',
    html`<h1>Your new app password</h1>
<p class="notice" role="status">Type or paste it into the mail app now: it is shown only this once.</p>
<p><label for="new-password">App password for ${view.record.label}</label></p>
<output id="new-password" class="secret">${view.password}</output>
<button type="button" class="copy" data-copy="new-password" hidden>Copy</button>
<h2>Settings for your mail app</h2>
<p>User name: your address, <strong>${view.record.user}</strong></p>
<div class="scroll"><table>
<thead><tr><th scope="col">Service</th><th scope="col">Server</th><th scope="col">Port</th><th scope="col">Security</th></tr></thead>
<tbody>${servers}</tbody>
</table></div>
<p><a class="button" href="${ctx.base}/">Done</a></p>`,
    { user: view.user, csrf: view.csrf },
  );
}

/** A page saying what went wrong, with a way back. */
export function problemPage(ctx: PageContext, title: string, message: string): string {
  return layout(ctx, title, html`<h1>${title}</h1><p class="error" role="alert">${message}</p><p><a href="${ctx.base}/">Back to the start</a></p>`);
}

/** The stylesheet: readable on a phone, no framework. */
export const STYLESHEET = `*{box-sizing:border-box}
body{margin:0;font:16px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1b1f24;background:#f5f6f8}
header{display:flex;flex-wrap:wrap;justify-content:space-between;align-items:center;gap:.5rem;padding:.75rem 1rem;background:#20344f;color:#fff}
header .brand{margin:0;font-weight:600}
header .who{margin-right:.5rem;word-break:break-all}
main{max-width:40rem;margin:0 auto;padding:1rem}
h1{font-size:1.5rem}
h2{font-size:1.2rem;margin-top:2rem}
h3{margin:0 0 .25rem;font-size:1.05rem;word-break:break-all}
a.button,button{display:inline-block;min-height:2.75rem;padding:.6rem 1.1rem;border:0;border-radius:.4rem;background:#2458a6;color:#fff;font:inherit;text-decoration:none;cursor:pointer}
button.danger{background:#a62424}
button.link{min-height:auto;padding:0;background:none;color:#fff;text-decoration:underline}
button.copy{margin-top:.5rem}
label{display:block;margin:.75rem 0 .25rem;font-weight:600}
label.check{display:inline-flex;align-items:center;gap:.3rem;margin-right:1rem;font-weight:400}
input[type=checkbox]{width:1.2rem;height:1.2rem}
input:not([type]),input[type=number]{width:100%;padding:.55rem;border:1px solid #8a94a3;border-radius:.3rem;font:inherit}
fieldset{margin:1rem 0;border:1px solid #c7ccd4;border-radius:.3rem}
form button[type=submit]{margin-top:1rem}
ul.passwords{list-style:none;padding:0}
li.password{margin:0 0 1rem;padding:1rem;background:#fff;border-radius:.5rem;box-shadow:0 1px 2px rgba(0,0,0,.12)}
li.password form button{margin-top:.5rem}
dl{display:grid;grid-template-columns:max-content 1fr;gap:.1rem .75rem;margin:0}
dt{color:#566070}
dd{margin:0;word-break:break-word}
.secret{display:block;padding:.6rem .8rem;background:#fff;border:2px dashed #2458a6;border-radius:.4rem;font:1.25rem/1.4 ui-monospace,Menlo,Consolas,monospace;user-select:all;overflow-wrap:anywhere}
.notice{padding:.6rem .8rem;background:#e4effd;border-radius:.3rem}
.error{padding:.6rem .8rem;background:#fde4e4;border-radius:.3rem}
div.scroll{overflow-x:auto}
table{border-collapse:collapse;width:100%;background:#fff;font-size:.95rem}
th,td{padding:.4rem .35rem;border-bottom:1px solid #d8dce2;text-align:left}
`;

/** The only script: shows a Copy button beside the new password (without it the text is selectable). */
export const SCRIPT = `document.querySelectorAll('button[data-copy]').forEach(function (button) {
  var target = document.getElementById(button.getAttribute('data-copy'));
  if (!target || !navigator.clipboard) return;
  button.hidden = false;
  button.addEventListener('click', function () {
    navigator.clipboard.writeText(target.textContent.trim()).then(function () { button.textContent = 'Copied'; });
  });
});
`;

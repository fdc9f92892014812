/**
 * The directory served to Dovecot as a passwd-file userdb that sasl-gate replaces atomically
 * whenever the set of deliverable mailboxes changes:
 *
 * ```
 * userdb {
 *   driver = passwd-file
 *   args = /var/lib/sasl-gate/dovecot-users
 * }
 * ```
 *
 * One line per mailbox of an active user, or of one disabled or removed less than the grace
 * period ago (Postfix still accepts their mail, so LMTP must too):
 * `alice@example.com::5000:5000::/var/mail/example.com/alice/home::userdb_quota_rule=*:storage=1G`.
 * The password field is a locked `{CRYPT}!` that no password matches, so the file may also be
 * listed as a passdb, which lets the master user log in as a user who exists only here (a master
 * passdb with `pass = yes` needs the target user in a passdb) without letting anyone in by password.
 *
 * Dovecot 2.3 re-reads a passwd-file when its mtime (in whole seconds) or size changes, checked at
 * most once a second per process, so every new version gets an mtime at least one second after the
 * previous one: two versions written within a second, of equal size, are still told apart.
 */
import { randomBytes } from 'node:crypto';
import { chown, open, readFile, rename, rm, stat, utimes } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import type { Logger } from 'pino';
import { GateError } from '../errors.js';
import type { AddressVerdict, DirectoryUser } from './model.js';

/** What the writer needs from the directory (the `Directory` class offers it). */
export interface DirectoryListing {
  /** The verdict for an address; `mailbox` or `grace` for a user's own mailbox means "deliver". */
  lookup(address: string): AddressVerdict | Promise<AddressVerdict>;
  /** Every user the directory holds (active or not). */
  list(): Iterable<DirectoryUser> | Promise<Iterable<DirectoryUser>>;
  /** When present and false (nothing loaded yet), the file is left as it is. */
  isReady?(): boolean;
}

export interface PasswdFileOptions {
  /** The file Dovecot reads (`userdb { driver = passwd-file args = <path> }`); its directory must exist. */
  path: string;
  /** The uid field; unset, empty (Dovecot's `mail_uid` applies). */
  uid?: number;
  /** The gid field; unset, empty (Dovecot's `mail_gid` applies). */
  gid?: number;
  /**
   * The home field, with `{mailbox}`, `{local}` and `{domain}` replaced by the user's (lower-case)
   * address parts, e.g. `/var/mail/{domain}/{local}/home` (docker-mailserver's layout). Unset, empty
   * (Dovecot's `mail_home` applies).
   */
  home?: string;
  /**
   * Further userdb fields for every user, written as `userdb_<name>=<value>` (the same
   * placeholders apply), e.g. `{ mail: 'maildir:/var/mail/{domain}/{local}' }`. Dovecot expands
   * `%` variables in them.
   */
  fields?: Record<string, string>;
  /** File mode; `0o644` by default (the file holds addresses, no secret). */
  mode?: number;
  /** Owner and group to give the file (needs the right to chown); unset, the writer's own. */
  owner?: { uid?: number; gid?: number };
  /** How often the directory is checked for changes nobody announced (syncs, expiring grace); 30 s by default. */
  refreshIntervalMs?: number;
  /** Changes announced with {@link PasswdFileWriter.schedule} are written after this quiet time; 200 ms by default. */
  debounceMs?: number;
  log?: Pick<Logger, 'info' | 'warn' | 'error' | 'debug'>;
  /** Clock, for tests. */
  now?: () => number;
}

/** A dot-atom address whose parts are safe as a passwd-file field and as a path component. */
const LOCAL_RE = /^[a-z0-9!#$&'*+=?^_`{|}~-]+(?:\.[a-z0-9!#$&'*+=?^_`{|}~-]+)*$/;
const DOMAIN_RE = /^(?=.{1,253}$)[a-z0-9](?:[a-z0-9-]*[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]*[a-z0-9])?)*$/;
const FIELD_NAME_RE = /^[a-z][a-z0-9_]*$/i;
/** Field values: no whitespace (fields are space-separated), nothing that ends a line. */
const FIELD_VALUE_RE = /^[^\s]*$/;
const HOME_RE = /^\/[^\s:]*$/;
/** Never matches a password: crypt(3) gives no hash that equals "!". */
const LOCKED_PASSWORD = '{CRYPT}!';

/** The parts of an address that may become a passwd-file line, or undefined when it is not safe. */
export function safeAddress(address: string): { local: string; domain: string } | undefined {
  if (address.length > 254 || address !== address.toLowerCase()) return undefined;
  const at = address.lastIndexOf('@');
  if (at <= 0) return undefined;
  const local = address.slice(0, at);
  const domain = address.slice(at + 1);
  if (local.length > 64 || !LOCAL_RE.test(local) || !DOMAIN_RE.test(domain)) return undefined;
  return { local, domain };
}

function expand(template: string, mailbox: string, parts: { local: string; domain: string }): string {
  return template.replace(/\{(mailbox|local|domain)\}/g, (_, name: string) =>
    name === 'mailbox' ? mailbox : name === 'local' ? parts.local : parts.domain,
  );
}

/** A passwd-file option (uid, gid, home, extra fields) Dovecot would refuse or misread. */
export class PasswdFileOptionError extends GateError {
  constructor(message: string) {
    super('passwd_file_option_invalid', message);
    this.name = 'PasswdFileOptionError';
  }
}

/** Checks the options once, so a bad template fails at start rather than on the first write. */
function checkOptions(o: PasswdFileOptions): void {
  for (const [name, id] of [['uid', o.uid], ['gid', o.gid]] as const) {
    // Dovecot refuses uid/gid 0 in a userdb.
    if (id !== undefined && (!Number.isInteger(id) || id <= 0 || id > 0xfffffffe)) {
      throw new PasswdFileOptionError(`passwd-file ${name} must be a positive integer, got ${String(id)}`);
    }
  }
  const sample = { local: 'user', domain: 'example.com' };
  if (o.home !== undefined && !HOME_RE.test(expand(o.home, 'user@example.com', sample))) {
    throw new PasswdFileOptionError(`passwd-file home ${JSON.stringify(o.home)} must be an absolute path without spaces or ':'`);
  }
  for (const [name, value] of Object.entries(o.fields ?? {})) {
    if (!FIELD_NAME_RE.test(name)) throw new PasswdFileOptionError(`passwd-file field name ${JSON.stringify(name)} is not a Dovecot setting name`);
    if (!FIELD_VALUE_RE.test(value)) throw new PasswdFileOptionError(`passwd-file field ${name} must not contain whitespace`);
  }
}

/**
 * The file's text for these mailboxes (pure): sorted, one line each, unsafe addresses left out
 * (returned in `skipped`).
 */
export function renderPasswdFile(
  mailboxes: Iterable<string>,
  options: Pick<PasswdFileOptions, 'uid' | 'gid' | 'home' | 'fields'>,
): { text: string; count: number; skipped: string[] } {
  const lines: string[] = [];
  const skipped: string[] = [];
  const seen = new Set<string>();
  for (const mailbox of mailboxes) {
    if (seen.has(mailbox)) continue;
    seen.add(mailbox);
    const parts = safeAddress(mailbox);
    const home = parts === undefined || options.home === undefined ? '' : expand(options.home, mailbox, parts);
    if (parts === undefined || (options.home !== undefined && !HOME_RE.test(home))) {
      skipped.push(mailbox);
      continue;
    }
    const fields = Object.entries(options.fields ?? {}).map(([k, v]) => `userdb_${k}=${expand(v, mailbox, parts)}`);
    lines.push(
      [mailbox, LOCKED_PASSWORD, options.uid ?? '', options.gid ?? '', '', home, '', fields.join(' ')].join(':'),
    );
  }
  lines.sort();
  const header = '# Written by sasl-gate from its user directory; replaced whenever the directory changes. Do not edit.\n';
  return { text: header + lines.map((l) => `${l}\n`).join(''), count: lines.length, skipped };
}

/**
 * Keeps a passwd-file userdb in step with the directory. Call {@link start} once, then
 * {@link schedule} after every change you make to the directory (SCIM pushes, syncs); it also
 * re-checks on its own every `refreshIntervalMs` and when a grace period ends.
 */
export class PasswdFileWriter {
  private readonly options: PasswdFileOptions;
  private readonly now: () => number;
  /** Mailboxes in the file as last written: removed users in grace stay although list() may no longer show them. */
  private written = new Set<string>();
  private lastText: string | undefined;
  private lastMtimeSec = 0;
  private running: Promise<boolean> | undefined;
  private again = false;
  private debounceTimer: NodeJS.Timeout | undefined;
  private intervalTimer: NodeJS.Timeout | undefined;
  private graceTimer: NodeJS.Timeout | undefined;
  private stopped = false;

  constructor(
    private readonly directory: DirectoryListing,
    options: PasswdFileOptions,
  ) {
    checkOptions(options);
    this.options = options;
    this.now = options.now ?? Date.now;
  }

  get path(): string {
    return this.options.path;
  }

  /** Reads the file as it is (so an unchanged directory does not rewrite it), writes it if needed, and starts the periodic check. */
  async start(): Promise<void> {
    const existing = await readFile(this.options.path, 'utf8').catch(() => undefined);
    if (existing !== undefined) {
      this.lastText = existing;
      this.written = new Set(
        existing
          .split('\n')
          .filter((l) => l !== '' && !l.startsWith('#'))
          .map((l) => l.slice(0, l.indexOf(':'))),
      );
      this.lastMtimeSec = Math.floor((await stat(this.options.path)).mtimeMs / 1000);
    }
    await this.refresh();
    const every = this.options.refreshIntervalMs ?? 30_000;
    this.intervalTimer = setInterval(() => this.background(), every);
    this.intervalTimer.unref();
  }

  /** Announces a change: the file is rewritten (if its content changes) after `debounceMs` of quiet. */
  schedule(): void {
    if (this.stopped) return;
    if (this.debounceTimer !== undefined) clearTimeout(this.debounceTimer);
    this.debounceTimer = setTimeout(() => {
      this.debounceTimer = undefined;
      this.background();
    }, this.options.debounceMs ?? 200);
    this.debounceTimer.unref();
  }

  /**
   * Rewrites the file now if its content would change; resolves true when it wrote. Calls that
   * arrive while a write runs are folded into one more run after it.
   */
  refresh(): Promise<boolean> {
    if (this.running !== undefined) {
      this.again = true;
      return this.running;
    }
    const run = async (): Promise<boolean> => {
      let wrote = false;
      do {
        this.again = false;
        wrote = (await this.writeOnce()) || wrote;
      } while (this.again && !this.stopped);
      return wrote;
    };
    this.running = run().finally(() => {
      this.running = undefined;
    });
    return this.running;
  }

  /** A refresh nobody awaits: failures are logged (the file stays as it was) and retried on the next check. */
  private background(): void {
    this.refresh().catch((err: unknown) => {
      this.options.log?.error(
        { event: 'passwd_file_refresh_failed', path: this.options.path, err: err instanceof Error ? err.message : String(err) },
        'could not bring the Dovecot passwd-file up to date; retrying on the next check',
      );
    });
  }

  /** Stops the timers (the file stays). */
  async stop(): Promise<void> {
    this.stopped = true;
    for (const t of [this.debounceTimer, this.graceTimer]) if (t !== undefined) clearTimeout(t);
    if (this.intervalTimer !== undefined) clearInterval(this.intervalTimer);
    await this.running?.catch(() => undefined);
  }

  /** The mailboxes that should be in the file now, and the earliest end of a grace period among them. */
  private async deliverable(): Promise<{ mailboxes: string[]; nextGraceEnd: number | undefined }> {
    const mailboxes: string[] = [];
    let nextGraceEnd: number | undefined;
    const consider = async (mailbox: string, id: string | undefined): Promise<void> => {
      const verdict = await this.directory.lookup(mailbox);
      if (verdict.kind === 'unknown' || verdict.kind === 'alias') return;
      if (verdict.user.mailbox !== mailbox || (id !== undefined && verdict.user.id !== id)) return;
      if (verdict.kind === 'mailbox' && !verdict.user.active) return;
      if (verdict.kind === 'grace') {
        const end = verdict.until.getTime();
        nextGraceEnd = nextGraceEnd === undefined ? end : Math.min(nextGraceEnd, end);
      }
      mailboxes.push(mailbox);
    };
    const listed = new Set<string>();
    for (const user of await this.directory.list()) {
      const mailbox = user.mailbox.toLowerCase();
      if (listed.has(mailbox)) continue;
      listed.add(mailbox);
      await consider(mailbox, user.id);
    }
    // A removed user may be gone from list() while still in grace: ask about the ones written before.
    for (const mailbox of this.written) if (!listed.has(mailbox)) await consider(mailbox, undefined);
    return { mailboxes, nextGraceEnd };
  }

  private async writeOnce(): Promise<boolean> {
    if (this.stopped) return false;
    if (this.directory.isReady !== undefined && !this.directory.isReady()) {
      this.options.log?.debug({ event: 'passwd_file_skipped', reason: 'directory_not_ready' }, 'directory not loaded: passwd-file left as it is');
      return false;
    }
    const { mailboxes, nextGraceEnd } = await this.deliverable();
    this.armGraceTimer(nextGraceEnd);
    const { text, count, skipped } = renderPasswdFile(mailboxes, this.options);
    if (skipped.length > 0) {
      this.options.log?.warn(
        { event: 'passwd_file_skipped_users', count: skipped.length, users: skipped.slice(0, 10) },
        'mailboxes with characters a passwd-file or a path cannot hold were left out of the Dovecot userdb',
      );
    }
    if (text === this.lastText) return false;
    await this.replaceFile(text);
    this.lastText = text;
    this.written = new Set(mailboxes.filter((m) => !skipped.includes(m)));
    this.options.log?.info({ event: 'passwd_file_written', path: this.options.path, users: count }, 'Dovecot userdb passwd-file replaced');
    return true;
  }

  private armGraceTimer(end: number | undefined): void {
    if (this.graceTimer !== undefined) clearTimeout(this.graceTimer);
    this.graceTimer = undefined;
    if (end === undefined || this.stopped) return;
    // setTimeout holds at most 2^31-1 ms; the periodic check covers anything further out.
    const delay = Math.min(Math.max(end - this.now() + 1_000, 1_000), 0x7fffffff);
    this.graceTimer = setTimeout(() => this.background(), delay);
    this.graceTimer.unref();
  }

  /** Write to a temp file beside the target, flush, give it a fresh mtime, then rename over the target. */
  private async replaceFile(text: string): Promise<void> {
    const { path } = this.options;
    const tmp = join(dirname(path), `.${basename(path)}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`);
    const mode = this.options.mode ?? 0o644;
    try {
      const handle = await open(tmp, 'wx', mode);
      try {
        await handle.writeFile(text, 'utf8');
        await handle.chmod(mode);
        await handle.sync();
      } finally {
        await handle.close();
      }
      const owner = this.options.owner;
      if (owner !== undefined && (owner.uid !== undefined || owner.gid !== undefined)) {
        await chown(tmp, owner.uid ?? -1, owner.gid ?? -1);
      }
      const current = await stat(path).catch(() => undefined);
      const previous = Math.max(this.lastMtimeSec, current === undefined ? 0 : Math.floor(current.mtimeMs / 1000));
      const mtime = Math.max(Math.floor(this.now() / 1000), previous + 1);
      await utimes(tmp, mtime, mtime);
      await rename(tmp, path);
      this.lastMtimeSec = mtime;
    } catch (err) {
      await rm(tmp, { force: true }).catch(() => undefined);
      throw err;
    }
    // Make the rename itself durable.
    const dir = await open(dirname(path), 'r').catch(() => undefined);
    if (dir !== undefined) await dir.sync().catch(() => undefined).finally(() => dir.close());
  }
}

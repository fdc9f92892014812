/** `sasl-gate app-passwords create|list|revoke`: the admin's command line for app passwords. */
import { AppPasswordError, type AppPasswordRecord } from './auth/app-passwords.js';
import type { AppPasswordHistoryRecord } from './auth/app-password-rules.js';
import { appPasswordStoreConfigured, openAdminAppPasswords, type AdminAppPasswords } from './login/shared-state.js';
import { PROTOCOLS, type Config, type MailProtocol } from './config/schema.js';
import { GateError } from './errors.js';
import { checkUsername } from './sasl/username.js';

type Values = Record<string, string | boolean | Array<string | boolean> | undefined>;

const ACTIONS = ['create', 'list', 'revoke'] as const;
const DAY_MS = 86_400_000;
/** A hundred years: an expiry past it is a typo. */
const MAX_EXPIRY_DAYS = 36_500;

const out = (text: string) => process.stdout.write(text);
const err = (text: string) => process.stderr.write(text);

/** A usage error of `sasl-gate app-passwords`: exit status 2. */
function usage(text: string): number {
  err(`sasl-gate app-passwords: ${text}\n(sasl-gate app-passwords --help shows the options)\n`);
  return 2;
}

const text = (values: Values, name: string): string | undefined => (typeof values[name] === 'string' ? (values[name] as string) : undefined);

/** Runs one action; `config` loads the configuration (undefined after it reported its problems). */
export async function appPasswordsCommand(action: string | undefined, values: Values, config: () => Config | undefined): Promise<number> {
  if (action === undefined) return usage(`name an action: ${ACTIONS.join(', ')}`);
  if (!(ACTIONS as readonly string[]).includes(action)) return usage(`unknown action "${action.replace(/[^\x20-\x7e]/g, '?')}": ${ACTIONS.join(', ')}`);
  const user = text(values, 'user');
  const label = text(values, 'label');
  if (action !== 'list' && user === undefined) return usage(`${action} needs --user USER`);
  if (action !== 'list' && label === undefined) return usage(`${action} needs --label LABEL`);
  if (user !== undefined) {
    try {
      checkUsername(user.trim());
    } catch {
      return usage(`--user "${user.replace(/[^\x20-\x7e]/g, '?')}" is not a user name sasl-gate would pass to a backend`);
    }
  }
  for (const [option, only] of [
    ['protocols', 'create'],
    ['expires', 'create'],
    ['json', 'list'],
    ['all', 'list'],
  ] as const) {
    if (values[option] !== undefined && action !== only) return usage(`--${option} is an option of ${only}, not of ${action}`);
  }
  let protocols: MailProtocol[] | undefined;
  const protocolList = text(values, 'protocols');
  if (protocolList !== undefined) {
    const named = protocolList.split(',').map((p) => p.trim().toLowerCase()).filter((p) => p !== '');
    const unknown = named.filter((p) => !(PROTOCOLS as readonly string[]).includes(p));
    if (named.length === 0 || unknown.length > 0) return usage(`--protocols takes one or more of ${PROTOCOLS.join(', ')} (comma-separated)`);
    protocols = named as MailProtocol[];
  }
  let expiresDays: number | undefined;
  const expires = text(values, 'expires');
  if (expires !== undefined) {
    expiresDays = /^\d+$/.test(expires) ? Number(expires) : NaN;
    if (!Number.isInteger(expiresDays) || expiresDays < 1 || expiresDays > MAX_EXPIRY_DAYS) return usage(`--expires takes a number of days, 1 to ${MAX_EXPIRY_DAYS}`);
  }

  const loaded = config();
  if (!loaded) return 1;
  if (!appPasswordStoreConfigured(loaded.storage)) {
    err('sasl-gate app-passwords: app passwords are kept in a database: set storage.dir (or storage.postgres) in the configuration\n');
    return 1;
  }
  if (!loaded.appPasswords.enabled) err('warning: appPasswords.enabled is false: serve does not accept app passwords until it is true\n');
  let service: AdminAppPasswords;
  try {
    service = await openAdminAppPasswords(loaded);
  } catch (e) {
    err(`sasl-gate app-passwords: ${(e as Error).message}\n`);
    return 1;
  }
  try {
    switch (action) {
      case 'create':
        return await create(service, user!.trim(), label!, protocols, expiresDays);
      case 'revoke': {
        if (await service.revokeByLabel(user!.trim(), label!)) {
          out(`revoked the app password "${label!.trim()}" of ${user!.trim()}\n`);
          return 0;
        }
        err(`sasl-gate app-passwords: ${user!.trim()} has no live app password named "${label!.trim()}"\n`);
        return 1;
      }
      default:
        return list(service, user?.trim(), values['json'] === true, values['all'] === true);
    }
  } catch (e) {
    if (!(e instanceof GateError)) throw e;
    err(`sasl-gate app-passwords: ${e.message}\n`);
    return 1;
  } finally {
    await service.close();
  }
}

async function create(service: AdminAppPasswords, user: string, label: string, protocols: MailProtocol[] | undefined, days: number | undefined): Promise<number> {
  try {
    const { password, record } = await service.create({
      user,
      label,
      ...(protocols ? { protocols } : {}),
      ...(days === undefined ? {} : { expiresAt: new Date(Date.now() + days * DAY_MS) }),
      createdBy: 'admin',
    });
    const expiry = record.expiresAt ? `, until ${record.expiresAt.toISOString()}` : '';
    out(`created the app password "${record.label}" of ${record.user} for ${record.protocols.join(', ')}${expiry}\n`);
    out('it is shown only now; the password:\n');
    out(`${password}\n`);
    return 0;
  } catch (e) {
    if (!(e instanceof AppPasswordError)) throw e;
    err(`sasl-gate app-passwords: not created (${e.code}): ${e.message}\n`);
    return 1;
  }
}

/** A record as JSON: dates as ISO strings, never a hash (the records have none). */
function asJson(r: AppPasswordRecord | AppPasswordHistoryRecord): Record<string, unknown> {
  return {
    ...r,
    createdAt: r.createdAt.toISOString(),
    expiresAt: r.expiresAt?.toISOString() ?? null,
    lastUse: r.lastUse ? { ...r.lastUse, at: r.lastUse.at.toISOString() } : null,
    ...('revokedAt' in r ? { revokedAt: r.revokedAt?.toISOString() ?? null, revokedBy: r.revokedBy ?? null } : {}),
  };
}

async function list(service: AdminAppPasswords, user: string | undefined, json: boolean, all: boolean): Promise<number> {
  const records: Array<AppPasswordRecord | AppPasswordHistoryRecord> = all ? await service.history(user) : await service.list(user);
  if (json) {
    out(`${JSON.stringify(records.map(asJson), null, 2)}\n`);
    return 0;
  }
  if (records.length === 0) {
    err(all ? 'no app passwords\n' : 'no live app passwords\n');
    return 0;
  }
  const day = (d: Date | undefined) => (d ? d.toISOString().slice(0, 16).replace('T', ' ') : '-');
  const rows = records.map((r) => [
    r.user,
    r.label,
    r.protocols.join(','),
    day(r.createdAt),
    day(r.expiresAt),
    r.lastUse ? `${day(r.lastUse.at)} ${r.lastUse.protocol} ${r.lastUse.address}` : '-',
    ...(all && 'status' in r ? [r.status] : []),
  ]);
  const header = ['USER', 'LABEL', 'PROTOCOLS', 'CREATED', 'EXPIRES', 'LAST USED', ...(all ? ['STATUS'] : [])];
  const widths = header.map((h, i) => Math.max([...h].length, ...rows.map((row) => [...row[i]!].length)));
  const line = (cells: string[]) => cells.map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i]!))).join('  ').trimEnd();
  out(`${[header, ...rows].map(line).join('\n')}\n`);
  return 0;
}

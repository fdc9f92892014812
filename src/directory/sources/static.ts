/**
 * Users from a file the admin keeps (YAML or JSON), read again on every sync so edits take effect
 * without a restart:
 *
 *   users:
 *     - mailbox: alice@example.org
 *       aliases: [info@example.org, postmaster@example.org]
 *       groups: [mail-users]
 *     - mailbox: bob@example.org
 *       active: false
 *
 * A file that cannot be read or parsed, or that lists a mailbox twice, fails the sync: the
 * directory keeps serving what it had rather than guess.
 */
import { readFile } from 'node:fs/promises';
import { parse as parseYaml } from 'yaml';
import { z } from 'zod';
import type { DirectorySource, DirectoryUser } from '../model.js';
import { aliasesFrom, cleanAliases, DirectorySourceError, isSelected, reason, type MailUserSelection } from './common.js';

/** Options of {@link StaticSource}. */
export interface StaticSourceOptions {
  file: string;
  selection?: MailUserSelection;
  /** Default `static`. */
  name?: string;
}

const stringOrList = z.union([z.string(), z.array(z.string())]);

const userSchema = z.strictObject({
  /** Stable id; default the mailbox, so renaming a mailbox is a removal plus an addition. */
  id: z.union([z.string().min(1), z.number()]).optional(),
  mailbox: z.string().min(1),
  aliases: stringOrList.default([]),
  active: z.boolean().default(true),
  groups: stringOrList.default([]),
  attributes: z.record(z.string(), z.unknown()).optional(),
});

const fileSchema = z.union([z.array(userSchema), z.strictObject({ users: z.array(userSchema) })]);

/** A static user file as a directory source. */
export class StaticSource implements DirectorySource {
  readonly name: string;

  constructor(private readonly options: StaticSourceOptions) {
    this.name = options.name ?? 'static';
  }

  /** The users in the file; rejects when the file is missing, unparsable or inconsistent. */
  async fetchAll(): Promise<DirectoryUser[]> {
    let text: string;
    try {
      text = await readFile(this.options.file, 'utf8');
    } catch (err) {
      throw new DirectorySourceError(`cannot read ${this.options.file}: ${reason(err)}`, { cause: err });
    }
    let data: unknown;
    try {
      // YAML is a superset of JSON, so one parser reads both.
      data = parseYaml(text);
    } catch (err) {
      throw new DirectorySourceError(`${this.options.file} is not valid YAML or JSON: ${reason(err)}`, { cause: err });
    }
    const parsed = fileSchema.safeParse(data);
    if (!parsed.success) {
      const issue = parsed.error.issues[0];
      const where = issue?.path.length ? issue.path.join('.') : '(top level)';
      throw new DirectorySourceError(
        `${this.options.file}: ${where}: ${issue?.message ?? 'invalid'} (expected a list of users, or users: [...])`,
      );
    }
    const entries = Array.isArray(parsed.data) ? parsed.data : parsed.data.users;
    const out: DirectoryUser[] = [];
    const ids = new Set<string>();
    const mailboxes = new Set<string>();
    for (const [i, entry] of entries.entries()) {
      const mailbox = entry.mailbox.trim().toLowerCase();
      const id = entry.id === undefined ? mailbox : String(entry.id);
      if (ids.has(id) || mailboxes.has(mailbox)) {
        throw new DirectorySourceError(`${this.options.file}: users.${i}: ${mailbox} is listed twice`);
      }
      ids.add(id);
      mailboxes.add(mailbox);
      const groups = (typeof entry.groups === 'string' ? [entry.groups] : entry.groups).map((g) => g.trim());
      if (!isSelected(this.options.selection, { groups, attributes: entry.attributes })) continue;
      out.push({
        id,
        mailbox,
        aliases: cleanAliases(mailbox, aliasesFrom(entry.aliases)),
        active: entry.active,
        groups,
      });
    }
    return out;
  }
}

/**
 * Configuration problems as an admin reads them: every problem of one run, each with its key as
 * the documentation writes it (`listeners[0].bind`), the form the value must take, a "did you
 * mean" for unknown keys, and a hint when a file path can only exist inside a container.
 */
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import type { z } from 'zod';
import { ConfigError } from '../errors.js';
import { formatKey, pathToEnvName } from './env.js';
import { configKeys, type ConfigKeyDoc } from './reference.js';

/** One thing wrong with the configuration. */
export interface ConfigProblem {
  /** The key as the documentation writes it, `listeners[0].bind`; `--config` for the file itself. */
  key: string;
  message: string;
  /** What to do about it, when there is more to say than the message. */
  hint?: string;
}

/** Every problem found in one run; `key` and the first line name the first of them. */
export class InvalidConfigError extends ConfigError {
  readonly problems: readonly ConfigProblem[];
  constructor(problems: ConfigProblem[]) {
    const first = problems[0] ?? { key: '(config)', message: 'invalid' };
    super(first.key, first.message);
    this.name = 'InvalidConfigError';
    this.problems = problems;
    const count = problems.length === 1 ? '1 problem' : `${problems.length} problems`;
    this.message = `invalid configuration (${count}):\n${problems.map((p) => `  ${formatProblem(p)}`).join('\n')}`;
  }
}

/** `key: message (hint)` on one line. */
export function formatProblem(problem: ConfigProblem): string {
  return `${problem.key}: ${problem.message}${problem.hint ? `\n      ${problem.hint}` : ''}`;
}

// ---------------------------------------------------------------------------------------------
// What the schema says about a key

let keyDocs: ConfigKeyDoc[] | undefined;

function docs(): ConfigKeyDoc[] {
  keyDocs ??= configKeys();
  return keyDocs;
}

/** List positions as 0, the way the reference stores paths. */
function normalized(path: ReadonlyArray<PropertyKey>): Array<string | number> {
  return path.map((p) => (typeof p === 'number' ? 0 : String(p)));
}

function samePath(a: ReadonlyArray<string | number>, b: ReadonlyArray<string | number>): boolean {
  return a.length === b.length && a.every((part, i) => part === b[i]);
}

/** The reference entry of a key, if the schema has it. */
function docAt(path: ReadonlyArray<PropertyKey>): ConfigKeyDoc | undefined {
  const wanted = normalized(path);
  return docs().find((d) => samePath(d.path, wanted));
}

/** The names of the keys the schema allows directly under `path`. */
function childNames(path: ReadonlyArray<PropertyKey>): string[] {
  const parent = normalized(path);
  return docs()
    .filter((d) => d.path.length === parent.length + 1 && samePath(d.path.slice(0, parent.length), parent))
    .map((d) => String(d.path[parent.length]));
}

const plain = (markdown: string) => markdown.replace(/`/g, '');

/** The form a value must take, in words: `host:port, [IPv6]:port, ...`, `a whole number from 1 to 65535`. */
function expectedForm(doc: ConfigKeyDoc | undefined, zodExpected?: string): string {
  if (!doc) return zodExpected ? `a ${zodExpected}` : 'another value';
  if (doc.isSection) return doc.type === 'list of mappings' ? 'a list of mappings' : 'a mapping of keys';
  const accepts = doc.accepts ? plain(doc.accepts) : undefined;
  switch (doc.type) {
    case 'integer':
      if (!accepts) return 'a whole number';
      return /^-?\d+ to /.test(accepts) ? `a whole number from ${accepts}` : `a whole number, ${accepts}`;
    case 'number':
      return accepts ? `a number, ${accepts}` : 'a number';
    case 'boolean':
      return 'true or false';
    case 'string':
      return accepts ?? 'a text value';
    default:
      return doc.type.startsWith('list') ? `a list (YAML [a, b], or a,b)${accepts ? `; ${accepts}` : ''}` : (accepts ?? doc.type);
  }
}

const SECRET_KEY = /password|secret|token/i;

/** Whether a key holds a secret (not a file naming one), whose value must never be printed. */
export function isSecretKey(name: string): boolean {
  return SECRET_KEY.test(name) && !/File$/.test(name);
}

/** Keys holding a secret though their name does not say so: a database URL carries its password. */
const SECRET_PATHS = new Set(['storage.postgres.url']);

/** Whether the key at `path` holds a secret, by its name or as one of SECRET_PATHS. */
export function isSecretPath(path: ReadonlyArray<PropertyKey>): boolean {
  const last = path.at(-1);
  return (typeof last === 'string' && isSecretKey(last)) || SECRET_PATHS.has(path.filter((p) => typeof p === 'string').join('.'));
}

/** A value for a message: strings quoted and shortened, secrets never shown. */
function shown(value: unknown, path: ReadonlyArray<PropertyKey>): string {
  if (path.some((p) => typeof p === 'string' && isSecretKey(p)) || isSecretPath(path)) return 'a value of another type';
  if (typeof value === 'string') return JSON.stringify(value.length > 60 ? `${value.slice(0, 57)}...` : value);
  if (typeof value === 'number') return `the number ${value}`;
  if (typeof value === 'boolean') return `${value}`;
  if (value === null) return 'an empty value';
  if (Array.isArray(value)) return 'a list';
  return 'a mapping';
}

// ---------------------------------------------------------------------------------------------
// Did you mean

function editDistance(a: string, b: string): number {
  const row = Array.from({ length: b.length + 1 }, (_, i) => i);
  for (let i = 1; i <= a.length; i += 1) {
    let diagonal = row[0]!;
    row[0] = i;
    for (let j = 1; j <= b.length; j += 1) {
      const above = row[j]!;
      row[j] = Math.min(row[j]! + 1, row[j - 1]! + 1, diagonal + (a[i - 1] === b[j - 1] ? 0 : 1));
      diagonal = above;
    }
  }
  return row[b.length]!;
}

/** The closest of `candidates` to `word`, when close enough to be a typo. */
export function closest(word: string, candidates: readonly string[]): string | undefined {
  const lower = word.toLowerCase().replace(/[-_]/g, '');
  let best: { name: string; distance: number } | undefined;
  for (const name of candidates) {
    const other = name.toLowerCase();
    const distance = other === lower ? 0 : other.startsWith(lower) || lower.startsWith(other) ? 1 : editDistance(lower, other);
    if (!best || distance < best.distance) best = { name, distance };
  }
  if (!best) return undefined;
  return best.distance <= Math.max(2, Math.floor(word.length / 3)) ? best.name : undefined;
}

/** What to say about an unknown key: the sibling it resembles, or where a key of that name lives. */
function unknownKeyHint(parent: ReadonlyArray<PropertyKey>, name: string): string {
  const siblings = childNames(parent);
  const near = closest(name, siblings);
  if (near) return `did you mean ${formatKey([...parent, near])}?`;
  const elsewhere = docs().find((d) => d.path.at(-1) === name);
  if (elsewhere) return `did you mean ${elsewhere.key}?`;
  return siblings.length > 0 ? `the keys here are: ${siblings.join(', ')}` : 'this key takes no further keys';
}

// ---------------------------------------------------------------------------------------------
// Schema issues

function valueAt(root: unknown, path: ReadonlyArray<PropertyKey>): unknown {
  let node = root;
  for (const part of path) {
    if (node === null || typeof node !== 'object') return undefined;
    node = (node as Record<PropertyKey, unknown>)[part as string];
  }
  return node;
}

/** Turns the schema's issues into problems; `raw` is what was validated, `fromEnv` the keys set by variables. */
export function schemaProblems(
  issues: readonly z.core.$ZodIssue[],
  raw: unknown,
  fromEnv: ReadonlyMap<string, string>,
): ConfigProblem[] {
  const problems: ConfigProblem[] = [];
  const origin = (key: string) => {
    const variable = fromEnv.get(key);
    return variable ? ` (from ${variable})` : '';
  };
  for (const issue of issues) {
    if (issue.code === 'unrecognized_keys') {
      for (const name of issue.keys) {
        const key = formatKey([...issue.path, name]);
        problems.push({ key, message: `unknown key${origin(key)}`, hint: unknownKeyHint(issue.path, name) });
      }
      continue;
    }
    const key = formatKey(issue.path) || '(top level)';
    const doc = docAt(issue.path);
    const value = valueAt(raw, issue.path);
    const problem = describeIssue(issue, doc, value);
    problems.push({ key, ...problem, message: `${problem.message}${origin(key)}` });
  }
  return problems;
}

/** A value that is not one of `options`, with the nearest as a hint. */
function choiceProblem(options: string[], value: unknown, path: ReadonlyArray<PropertyKey>): Omit<ConfigProblem, 'key'> {
  const near = typeof value === 'string' ? closest(value, options) : undefined;
  return { message: `expected one of ${options.join(', ')}, got ${shown(value, path)}`, ...(near ? { hint: `did you mean ${near}?` } : {}) };
}

function describeIssue(issue: z.core.$ZodIssue, doc: ConfigKeyDoc | undefined, value: unknown): Omit<ConfigProblem, 'key'> {
  switch (issue.code) {
    case 'invalid_type': {
      const form = expectedForm(doc, issue.expected);
      // A key the schema asks for in its own words (`directory.source is static: set directory.static`).
      if (value === undefined && !issue.message.startsWith('Invalid input')) return { message: issue.message };
      if (value === undefined) {
        return { message: doc?.isSection ? `required, but missing (${form})` : `required, but not set; expected ${form}` };
      }
      const bindHint =
        typeof value === 'number' && doc?.accepts?.includes('host:port')
          ? { hint: `write the address and the port as one quoted value, e.g. "0.0.0.0:${value}" or ":${value}"` }
          : {};
      return { message: `expected ${form}, got ${shown(value, issue.path)}`, ...bindHint };
    }
    case 'invalid_union':
      // A discriminated union (`directory.source`) said which values it knows: as for an enum.
      if ('discriminator' in issue && Array.isArray((issue as { options?: unknown }).options)) {
        const options = (issue as unknown as { options: unknown[] }).options.map(String);
        if (value === undefined) return { message: `required, but not set; expected one of ${options.join(', ')}` };
        return choiceProblem(options, value, issue.path);
      }
      return { message: issue.message };
    case 'invalid_value':
      return choiceProblem(issue.values.map(String), value, issue.path);
    case 'too_small':
    case 'too_big': {
      if (Array.isArray(value)) return { message: issue.message.replace(/^Too (small|big): /, '') };
      if (typeof value === 'string' && doc?.type === 'string') {
        return { message: value.trim() === '' ? 'must not be empty' : `expected ${expectedForm(doc)}, got ${shown(value, issue.path)}` };
      }
      return { message: `expected ${expectedForm(doc)}, got ${shown(typeof value === 'string' ? Number(value) : value, issue.path)}` };
    }
    case 'invalid_format':
      return { message: `expected ${expectedForm(doc)}, got ${shown(value, issue.path)}` };
    default: {
      // A check's own words; add the expected form when they do not say it.
      const accepts = doc && !doc.isSection && doc.accepts ? plain(doc.accepts) : undefined;
      const form = accepts && !/expected|must be/.test(issue.message) ? `; expected ${accepts}` : '';
      return { message: `${issue.message}${form}` };
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Files

const ERRNO_TEXT: Record<string, string> = {
  ENOENT: 'no such file',
  EACCES: 'permission denied',
  EPERM: 'permission denied',
  EISDIR: 'a directory, not a file',
  ENOTDIR: 'a part of the path is not a directory',
  ELOOP: 'too many symbolic links',
};

/** Why a file could not be read, in words, without repeating its path. */
export function readFailure(err: unknown): string {
  const code = (err as NodeJS.ErrnoException).code;
  if (code && ERRNO_TEXT[code]) {
    const who = code === 'EACCES' && typeof process.getuid === 'function' ? ` for uid ${process.getuid()}` : '';
    return `${ERRNO_TEXT[code]}${who} (${code})`;
  }
  return code ?? (err as Error).message;
}

const COMPOSE_FILES = ['compose.yaml', 'compose.yml', 'docker-compose.yaml', 'docker-compose.yml'];

/**
 * When an unreadable path is most likely one that exists only inside a container, what to do;
 * undefined when nothing suggests so.
 */
export function containerPathHint(path: string, key: ReadonlyArray<string | number>, configFile: string | undefined): string | undefined {
  const override = `${pathToEnvName(key)}=/path/on/this/host`;
  const inside = 'docker compose run --rm --no-deps sasl-gate check-config --config /etc/sasl-gate/config.yaml';
  if (/^\/(tmp\/docker-mailserver|etc\/dms)(\/|$)/.test(path)) {
    return `${path} is a path inside the docker-mailserver container; sasl-gate cannot see it: mount the file into sasl-gate's own container (or host) and name that path`;
  }
  if (path.startsWith('/run/secrets/')) {
    return `${path} is a container secret: it exists only inside the container. Check there (${inside}), or here with ${override}`;
  }
  if (configFile !== undefined && path.startsWith('/')) {
    const dir = dirname(configFile);
    const compose = COMPOSE_FILES.find((name) => existsSync(join(dir, name)));
    if (compose) {
      return `the configuration sits next to ${compose}: ${path} is probably a path inside the container. Check there (${inside}), or here with ${override}`;
    }
  }
  return undefined;
}

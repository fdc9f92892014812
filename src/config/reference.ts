/**
 * The configuration reference (docs/configuration.md), rendered from the schema itself: every
 * key with its type, default, accepted values, description and environment variable.
 *
 * The zod definitions are walked directly. `z.toJSONSchema()` would be shorter, but it drops the
 * defaults of the coercing builders (a `.default()` around a `z.preprocess()` pipe), cannot say
 * what a transform accepts (`host:port`), and evaluates computed defaults such as `hostname`,
 * which would make the output depend on the machine it was rendered on.
 */
import { globalRegistry, z } from 'zod';
import { ENV_PREFIX, pathToEnvName } from './env.js';
import { configSchema } from './schema.js';

/** What the reference says about one key. */
export interface ConfigKeyDoc {
  /** The key as the reference writes it: `oauth.cache.maxTtlSeconds`, `listeners[].bind`. */
  key: string;
  /** The path as the environment mapping sees it, list positions as 0. */
  path: Array<string | number>;
  /** Top-level key it belongs to. */
  section: string;
  /** A mapping of further keys (a section), rather than a value. */
  isSection: boolean;
  type: string;
  /** Constraints and accepted values, in words and Markdown. */
  accepts: string | undefined;
  /** Default, in words and Markdown: a value, `unset`, or what makes it required. */
  default: string;
  /** The default value itself; undefined when there is none or it is computed at start. */
  defaultValue: unknown;
  description: string | undefined;
  /** The environment variable that sets it; undefined for sections. */
  env: string | undefined;
}

type AnySchema = z.core.$ZodType;

interface Unwrapped {
  /** The innermost schema that says what the value is. */
  core: AnySchema;
  optional: boolean;
  hasDefault: boolean;
  defaultValue: unknown;
  /** Metadata from every layer, the outermost winning. */
  meta: Record<string, unknown>;
}

function defOf(schema: AnySchema): Record<string, unknown> & { type: string } {
  return schema._zod.def as unknown as Record<string, unknown> & { type: string };
}

function metaOf(schema: AnySchema): Record<string, unknown> {
  return (globalRegistry.get(schema) as Record<string, unknown> | undefined) ?? {};
}

/**
 * Peels optional, default and pipe layers. `z.preprocess(fn, inner)` is a pipe from a transform
 * into `inner`; `inner.transform(fn)` is a pipe from `inner` into a transform: either way the
 * non-transform side describes the value.
 */
function unwrap(schema: AnySchema): Unwrapped {
  const result: Unwrapped = { core: schema, optional: false, hasDefault: false, defaultValue: undefined, meta: {} };
  let current = schema;
  for (;;) {
    result.meta = { ...metaOf(current), ...result.meta };
    const def = defOf(current);
    if (def.type === 'optional') {
      result.optional = true;
      current = def['innerType'] as AnySchema;
    } else if (def.type === 'default') {
      if (!result.hasDefault) {
        result.hasDefault = true;
        // A computed default (`defaultText`) is not evaluated: its value depends on the machine.
        result.defaultValue = result.meta['defaultText'] === undefined ? def['defaultValue'] : undefined;
      }
      current = def['innerType'] as AnySchema;
    } else if (def.type === 'pipe') {
      const input = def['in'] as AnySchema;
      const output = def['out'] as AnySchema;
      current = defOf(input).type === 'transform' ? output : input;
    } else {
      result.core = current;
      return result;
    }
  }
}

interface Checks {
  minLength?: number;
  maxLength?: number;
  exactLength?: number;
  /** Bounds of a number, in words: `at least 1`, `more than 0`. */
  lower?: string;
  upper?: string;
}

function checksOf(schema: AnySchema): Checks {
  const checks: Checks = {};
  const list = (defOf(schema)['checks'] as Array<{ _zod: { def: Record<string, unknown> } }> | undefined) ?? [];
  for (const check of list) {
    const def = check._zod.def;
    switch (def['check']) {
      case 'min_length':
        checks.minLength = def['minimum'] as number;
        break;
      case 'max_length':
        checks.maxLength = def['maximum'] as number;
        break;
      case 'length_equals':
        checks.exactLength = def['length'] as number;
        break;
      case 'greater_than':
        checks.lower = `${def['inclusive'] === false ? 'more than' : 'at least'} ${String(def['value'])}`;
        break;
      case 'less_than':
        checks.upper = `${def['inclusive'] === false ? 'less than' : 'at most'} ${String(def['value'])}`;
        break;
    }
  }
  return checks;
}

const code = (value: string | number | boolean) => `\`${String(value)}\``;

/** A value as the YAML file would write it, in code style. */
function yamlValue(value: unknown): string {
  if (Array.isArray(value)) return `\`[${value.map((v) => String(v)).join(', ')}]\``;
  if (typeof value === 'string') return code(value === '' ? '""' : value);
  if (typeof value === 'number' || typeof value === 'boolean') return code(value);
  return code(JSON.stringify(value));
}

function itemNoun(count: number): string {
  return count === 1 ? 'entry' : 'entries';
}

/** Type and accepted values of a value schema (not a mapping). */
function describeValue(core: AnySchema, meta: Record<string, unknown>): { type: string; accepts: string | undefined } {
  const def = defOf(core);
  const metaAccepts = typeof meta['accepts'] === 'string' ? meta['accepts'] : undefined;
  switch (def.type) {
    case 'string': {
      const checks = checksOf(core);
      if (metaAccepts) return { type: 'string', accepts: metaAccepts };
      const characters = (n: number) => `${n} character${n === 1 ? '' : 's'}`;
      if (checks.exactLength !== undefined) return { type: 'string', accepts: `exactly ${characters(checks.exactLength)}` };
      if (checks.maxLength !== undefined) {
        return { type: 'string', accepts: `${checks.minLength ? 'not empty, ' : ''}at most ${characters(checks.maxLength)}` };
      }
      return { type: 'string', accepts: checks.minLength ? 'not empty' : undefined };
    }
    case 'number': {
      const checks = checksOf(core);
      const integer = (core as unknown as { isInt?: boolean }).isInt === true;
      // `1 to 65535` when both bounds are inclusive, else the bounds in words.
      const lower = checks.lower?.replace(/^at least /, '');
      const upper = checks.upper?.replace(/^at most /, '');
      const range =
        checks.lower?.startsWith('at least') && checks.upper?.startsWith('at most')
          ? `${lower} to ${upper}`
          : [checks.lower, checks.upper].filter(Boolean).join(' and ') || undefined;
      return { type: integer ? 'integer' : 'number', accepts: metaAccepts ?? range };
    }
    case 'boolean':
      return { type: 'boolean', accepts: metaAccepts ?? '`true` or `false`' };
    case 'enum': {
      const options = Object.values(def['entries'] as Record<string, string>);
      return { type: 'string', accepts: metaAccepts ?? `one of ${options.map(code).join(', ')}` };
    }
    case 'array': {
      const element = unwrap(def['element'] as AnySchema);
      const checks = checksOf(core);
      const inner = defOf(element.core).type === 'object' ? { type: 'mapping', accepts: undefined } : describeValue(element.core, element.meta);
      const parts: string[] = [];
      if (checks.minLength) parts.push(`at least ${checks.minLength} ${itemNoun(checks.minLength)}`);
      if (inner.accepts) parts.push(`each ${inner.accepts}`);
      const type = inner.type === 'mapping' ? 'list of mappings' : `list of ${inner.type}s`;
      return { type, accepts: metaAccepts ?? (parts.length > 0 ? parts.join('; ') : undefined) };
    }
    default:
      return { type: def.type, accepts: metaAccepts };
  }
}

/** The default column: the default, `unset`, or when the key must be set (given its optional or list ancestor). */
function requirement(own: Unwrapped, optionalAncestor: string | undefined, listAncestor: string | undefined): string {
  if (own.hasDefault) {
    if (typeof own.meta['defaultText'] === 'string') return own.meta['defaultText'];
    return yamlValue(own.defaultValue);
  }
  // An optional key whose value, when unset, comes from elsewhere (a deprecated key) or is fixed later.
  if (own.optional) return typeof own.meta['defaultText'] === 'string' ? own.meta['defaultText'] : 'unset';
  if (optionalAncestor) return `required when \`${optionalAncestor}\` is set`;
  if (listAncestor) return `required in each entry of \`${listAncestor}\``;
  return 'required';
}

function displayKey(path: Array<string | number>): string {
  return path.reduce<string>((out, part) => (typeof part === 'number' ? `${out}[]` : out === '' ? part : `${out}.${part}`), '');
}

interface WalkContext {
  section: string;
  optionalAncestor: string | undefined;
  listAncestor: string | undefined;
}

/** Whether a schema is a union of mappings told apart by one key (`directory.source`). */
function isDiscriminated(def: Record<string, unknown>): boolean {
  return def['type'] === 'union' && typeof def['discriminator'] === 'string';
}

/**
 * The keys of a discriminated union of mappings, as one mapping: each key where it first appears,
 * the discriminator as the list of its values, and, for a key only some variants require, in
 * words when it is required.
 */
function walkVariants(def: Record<string, unknown>, path: Array<string | number>, context: WalkContext, out: ConfigKeyDoc[]): void {
  const discriminator = def['discriminator'] as string;
  const variants = (def['options'] as AnySchema[]).map((option) => defOf(option)['shape'] as Record<string, AnySchema>);
  const valueOf = (shape: Record<string, AnySchema>) => String((defOf(shape[discriminator]!)['values'] as unknown[])[0]);
  const values = variants.map(valueOf);
  const description = variants.map((shape) => metaOf(shape[discriminator]!)['description']).find((d) => typeof d === 'string');
  const names: string[] = [];
  for (const shape of variants) for (const name of Object.keys(shape)) if (!names.includes(name)) names.push(name);
  const discriminatorKey = `\`${displayKey([...path, discriminator])}\``;
  for (const name of names) {
    if (name === discriminator) {
      const choice = z.enum(values as [string, ...string[]]);
      walk(typeof description === 'string' ? choice.describe(description) : choice, [...path, name], context, out);
      continue;
    }
    const present = variants.filter((shape) => shape[name] !== undefined);
    const required = present.filter((shape) => {
      const own = unwrap(shape[name]!);
      return !own.optional && !own.hasDefault;
    });
    // Walked in a variant where it is optional, so that its own keys are "required when it is set".
    const optional = present.find((shape) => !required.includes(shape)) ?? present[0]!;
    const before = out.length;
    walk(optional[name]!, [...path, name], context, out);
    if (required.length > 0 && required.length < variants.length) {
      const when = required.map(valueOf);
      const others = values.filter((v) => !when.includes(v));
      out[before]!.default =
        when.length <= others.length
          ? `required when ${discriminatorKey} is ${when.map((v) => `\`${v}\``).join(' or ')}`
          : `required unless ${discriminatorKey} is ${others.map((v) => `\`${v}\``).join(' or ')}`;
    }
  }
}

function walk(schema: AnySchema, path: Array<string | number>, context: WalkContext, out: ConfigKeyDoc[]): void {
  const own = unwrap(schema);
  const key = displayKey(path);
  const coreDef = defOf(own.core);
  const isVariants = isDiscriminated(coreDef);
  const isMapping = coreDef.type === 'object' || isVariants;
  const isListOfMappings =
    coreDef.type === 'array' && defOf(unwrap(coreDef['element'] as AnySchema).core).type === 'object';
  const value = isMapping ? { type: 'mapping', accepts: undefined } : describeValue(own.core, own.meta);

  // The mapping inside a list (`listeners[]`) has no entry of its own: the list has one.
  if (typeof path[path.length - 1] !== 'number') {
    out.push({
      key,
      path,
      section: context.section,
      isSection: isMapping || isListOfMappings,
      type: value.type,
      accepts: value.accepts,
      default:
        isMapping && own.hasDefault
          ? "optional; its keys' defaults apply"
          : requirement(own, context.optionalAncestor, context.listAncestor),
      defaultValue: own.defaultValue,
      description: typeof own.meta['description'] === 'string' ? own.meta['description'] : undefined,
      // Only values can be set from the environment; a mapping is set key by key.
      env: isMapping || isListOfMappings ? undefined : pathToEnvName(path),
    });
  }

  if (isMapping) {
    // An optional mapping without a default makes its required keys conditional on it.
    const next = { ...context, optionalAncestor: own.optional && !own.hasDefault ? key : context.optionalAncestor };
    if (isVariants) {
      walkVariants(coreDef, path, next, out);
      return;
    }
    const shape = coreDef['shape'] as Record<string, AnySchema>;
    for (const [name, child] of Object.entries(shape)) walk(child, [...path, name], next, out);
  } else if (isListOfMappings) {
    walk(coreDef['element'] as AnySchema, [...path, 0], { ...context, listAncestor: key }, out);
  }
}

/** Every key of the configuration, in schema order, sections before their keys. */
export function configKeys(): ConfigKeyDoc[] {
  const out: ConfigKeyDoc[] = [];
  const shape = defOf(configSchema)['shape'] as Record<string, AnySchema>;
  for (const [name, child] of Object.entries(shape)) {
    walk(child, [name], { section: name, optionalAncestor: undefined, listAncestor: undefined }, out);
  }
  return out;
}

const INTRO = `# Configuration reference

<!-- Generated from src/config/schema.ts by \`npm run docs:config\`; edit the descriptions there. -->

sasl-gate reads one YAML file, named by \`--config FILE\` or by the \`SASL_GATE_CONFIG\`
environment variable, and validates it once at start: a value out of range, an unknown key or an
unreadable certificate or secret file stops start-up with a list of every problem, each naming its
key (\`listeners[0].bind\`) and the form the value must take.
\`sasl-gate check-config --config FILE\` does the same checks without starting anything and, when
all is well, prints the effective configuration as YAML: defaults filled in, secrets masked, the
files they were read from and the keys set from the environment named.

\`\`\`yaml
listeners:
  - { protocol: imap, bind: "0.0.0.0:993", tls: implicit }
  - { protocol: smtp, bind: "0.0.0.0:465", tls: implicit }
tls: { cert: /etc/sasl-gate/server.crt, key: /etc/sasl-gate/server.key }
backends:
  imap: { host: dovecot, port: 143 }
  smtp: { host: postfix, port: 10587, login: xclient }
master: { user: sasl-gate, passwordFile: /run/secrets/master }
oauth:
  issuer: https://idp.example.com/application/o/mail/
  clientId: mail
  audience: [mail]
  usernameClaims: [email, preferred_username]
admin: { bind: "127.0.0.1:9090" }
\`\`\`

Keys are written below as paths: \`oauth.cache.maxTtlSeconds\` is \`maxTtlSeconds\` inside
\`cache\` inside \`oauth\`, and \`listeners[].bind\` is \`bind\` in each entry of the
\`listeners\` list. Durations are in seconds, as their names say (\`...Seconds\`): whole numbers,
except where a key allows fractions. The two keys in milliseconds of older versions,
\`limits.authFailureDelayMs\` and \`limits.authFailureMaxDelayMs\`, are still accepted with a
warning; write \`limits.authFailureDelaySeconds\` and \`limits.authFailureMaxDelaySeconds\` instead.

## From the environment

Every key can also be set from the environment, which wins over the file. The variable is
\`${ENV_PREFIX}\` followed by the key's path: levels joined by \`__\`, each camelCase name written
in UPPER_SNAKE, list positions as numbers from \`0\`.

| variable | key |
|---|---|
| \`${pathToEnvName(['oauth', 'clientSecret'])}\` | \`oauth.clientSecret\` |
| \`${pathToEnvName(['oauth', 'cache', 'maxTtlSeconds'])}=60\` | \`oauth.cache.maxTtlSeconds\` |
| \`${pathToEnvName(['listeners', 0, 'bind'])}=0.0.0.0:993\` | \`bind\` of the first listener |
| \`${pathToEnvName(['oauth', 'usernameClaims'])}=email,preferred_username\` | \`oauth.usernameClaims\` |
| \`${ENV_PREFIX}CONFIG=/etc/sasl-gate/config.yaml\` | the file itself, instead of \`--config\` |

- Numbers are written as digits: \`30\`.
- Booleans accept \`true\`, \`yes\`, \`on\`, \`1\` and \`false\`, \`no\`, \`off\`, \`0\`, in any case.
- Lists accept \`a,b,c\` (spaces around the commas are dropped; an empty value is an empty list) or a
  JSON array such as \`["a","b"]\`.
- A list of mappings (\`listeners\`) is set one key at a time, by position:
  \`${pathToEnvName(['listeners', 1, 'protocol'])}=smtp\` together with \`${pathToEnvName(['listeners', 1, 'bind'])}=:465\` adds or changes
  the second listener.
- Secrets (\`master.password\`, \`oauth.clientSecret\`) are best set this way, or for the master
  password with \`master.passwordFile\`, so that the file holds none.
- A secret read from a file (\`master.passwordFile\`, \`oauth.clientSecretFile\`,
  \`admin.metricsTokenFile\`, the directory's \`tokenFile\` and \`clientSecretFile\`) is the file's
  text with one line end at its very end (\`\\n\` or \`\\r\\n\`) dropped; nothing else is trimmed,
  and an empty file is an error.
`;

/** GitHub's heading anchor: lower case, without punctuation, spaces as hyphens. */
function anchor(heading: string): string {
  return heading.toLowerCase().replace(/[^a-z0-9 _-]/g, '').replace(/ /g, '-');
}

function escapeCell(text: string): string {
  return text.replace(/\|/g, '\\|');
}

/** The facts of one key as a list under its heading. */
function facts(k: ConfigKeyDoc): string[] {
  const lines = [`- Type: ${k.type}`];
  if (k.accepts) lines.push(`- Accepts: ${k.accepts}`);
  lines.push(`- Default: ${k.default}`);
  if (k.env) lines.push(`- Environment: \`${k.env}\``);
  return lines;
}

/** The reference as Markdown: an introduction, then one part per top-level key. */
export function renderConfigReference(): string {
  const keys = configKeys();
  const sections: string[] = [];
  for (const key of keys) if (!sections.includes(key.section)) sections.push(key.section);

  const lines: string[] = [INTRO.trimEnd(), '', '## Sections', ''];
  for (const section of sections) {
    const head = keys.find((k) => k.key === section);
    lines.push(`- [\`${section}\`](#${anchor(section)}): ${head?.description ?? ''}`.trimEnd());
  }

  for (const section of sections) {
    const members = keys.filter((k) => k.section === section);
    const [head, ...rest] = members;
    if (!head) continue;
    lines.push('', `## ${section}`, '');
    if (head.description) lines.push(head.description, '');
    lines.push(...facts(head));
    if (rest.length === 0) continue;

    // An overview of the section's values, then each key in full.
    lines.push('', '| key | type | default |', '|---|---|---|');
    for (const k of rest) {
      if (!k.isSection) lines.push(`| [\`${k.key}\`](#${anchor(k.key)}) | ${escapeCell(k.type)} | ${escapeCell(k.default)} |`);
    }
    for (const k of rest) {
      lines.push('', `### ${k.key}`, '');
      if (k.description) lines.push(k.description, '');
      lines.push(...facts(k));
    }
  }
  return `${lines.join('\n')}\n`;
}

/**
 * The effective configuration as `check-config` prints it: YAML in the form the file is written
 * in (`bind: 0.0.0.0:993`, not a host/port mapping), every secret masked, the files secrets were
 * read from shown, and a comment on each key the environment set.
 */
import { Document, isMap, isScalar, isSeq, type Node } from 'yaml';
import { formatKey } from './env.js';
import type { GateConfig } from './load.js';
import { isSecretPath } from './problems.js';
import { configKeys } from './reference.js';

const MASK = '********';

/** Keys whose value is written `host:port` (the schema turns it into `{ host, port }`). */
function hostPortKeys(): Set<string> {
  return new Set(configKeys().filter((k) => k.accepts?.includes('host:port')).map((k) => k.key));
}

/** `listeners[0].bind` -> `listeners[].bind`, the reference's spelling. */
function referenceKey(path: ReadonlyArray<string | number>): string {
  return formatKey(path).replace(/\[\d+\]/g, '[]');
}

function hostPort(value: { host: string; port: number }): string {
  return `${value.host.includes(':') ? `[${value.host}]` : value.host}:${value.port}`;
}

/** The configuration with `host:port` values written back and secrets masked. */
export function writtenForm(config: GateConfig): unknown {
  const addresses = hostPortKeys();
  const visit = (value: unknown, path: Array<string | number>): unknown => {
    const last = path.at(-1);
    if (typeof last === 'string' && isSecretPath(path) && typeof value === 'string') return MASK;
    if (addresses.has(referenceKey(path)) && value !== null && typeof value === 'object') {
      return hostPort(value as { host: string; port: number });
    }
    if (Array.isArray(value)) return value.map((item, i) => visit(item, [...path, i]));
    if (value !== null && typeof value === 'object') {
      return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, visit(v, [...path, k])]));
    }
    return value;
  };
  return visit(config, []);
}

/** The sibling key a secret was read from: `password` -> `passwordFile`. */
function fileKeyOf(name: string): string {
  return `${name}File`;
}

/** Walks a YAML node tree, calling `at` for every value node with its path. */
function walk(node: Node | null, path: Array<string | number>, at: (node: Node, path: Array<string | number>) => void): void {
  if (!node) return;
  at(node, path);
  if (isMap(node)) {
    for (const pair of node.items) {
      const key = isScalar(pair.key) ? String(pair.key.value) : String(pair.key);
      walk(pair.value as Node | null, [...path, key], at);
    }
  } else if (isSeq(node)) {
    node.items.forEach((item, i) => walk(item as Node, [...path, i], at));
  }
}

/**
 * The effective configuration as YAML text. `fromEnv` maps keys (`listeners[0].bind`) to the
 * variables that set them, noted in comments.
 */
export function effectiveYaml(config: GateConfig, fromEnv: ReadonlyMap<string, string> = new Map()): string {
  const written = writtenForm(config) as Record<string, unknown>;
  const doc = new Document(written);
  walk(doc.contents as Node, [], (node, path) => {
    const last = path.at(-1);
    const notes: string[] = [];
    const variable = fromEnv.get(formatKey(path));
    if (variable) notes.push(`from ${variable}`);
    if (typeof last === 'string' && isSecretPath(path) && isScalar(node)) {
      const parent = path.slice(0, -1).reduce<unknown>((n, p) => (n as Record<string | number, unknown>)?.[p], written);
      const file = (parent as Record<string, unknown> | undefined)?.[fileKeyOf(last)];
      if (typeof file === 'string') notes.push(`read from ${file} (${formatKey([...path.slice(0, -1), fileKeyOf(last)])})`);
    }
    if (notes.length > 0 && isScalar(node)) node.comment = ` ${notes.join('; ')}`;
    // Lists of plain values on one line, as the documentation writes them: [jwt, introspection].
    if (isSeq(node) && node.items.every((item) => isScalar(item))) node.flow = true;
  });
  return doc.toString({ lineWidth: 0 });
}

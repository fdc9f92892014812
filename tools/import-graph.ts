/**
 * The import graph of `src/` by layer: files per layer, arrows between layers, and every arrow
 * that runs up. `npm run layers` prints it; test/unit/architecture.test.ts keeps the rules.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join, normalize, relative } from 'node:path';

/** Layers from the bottom up: a module may import only from lower layers (or from itself). */
export const LAYERS: readonly (readonly string[])[] = [
  ['errors.ts', 'version.ts'],
  ['config'],
  ['observe'],
  ['net', 'tls', 'sasl', 'storage'],
  ['auth', 'relay'],
  ['login', 'autoconfig'],
  ['imap', 'smtp', 'pop3', 'sieve', 'directory', 'load', 'portal', 'thunderbird', 'token-helper'],
  ['doctor.ts', 'gate.ts', 'app-passwords-cli.ts'],
  ['cluster'],
  ['cli.ts'],
];

/** One import statement between two files of `src/`. */
export interface ImportArrow {
  from: string;
  to: string;
  fromModule: string;
  toModule: string;
}

/** The whole graph of one source tree. */
export interface ImportGraph {
  files: string[];
  arrows: ImportArrow[];
  /** Bare package names imported (`node:` built-ins left out), with one importing file each. */
  packages: Map<string, string>;
}

const IMPORT = /(?:\bfrom\s*|\bimport\s*\(\s*|\bimport\s+)'([^']+)'/g;

/** The top-level module of a path inside `src/`: its first directory, or the file itself. */
export function moduleOf(path: string): string {
  return path.split('/')[0] ?? path;
}

/** Rank of a module in {@link LAYERS}; -1 when it is in none. */
export function layerOf(module: string): number {
  return LAYERS.findIndex((layer) => layer.includes(module));
}

function walk(dir: string, root: string, out: string[]): void {
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) walk(path, root, out);
    else if (entry.name.endsWith('.ts')) out.push(relative(root, path));
  }
}

/** Reads every `.ts` file under `root` and collects its imports. */
export function importGraph(root: string): ImportGraph {
  const files: string[] = [];
  walk(root, root, files);
  files.sort();
  const arrows: ImportArrow[] = [];
  const packages = new Map<string, string>();
  for (const file of files) {
    const text = readFileSync(join(root, file), 'utf8');
    for (const match of text.matchAll(IMPORT)) {
      const spec = match[1]!;
      if (spec.startsWith('.')) {
        const to = normalize(join(dirname(file), spec)).replace(/\.js$/, '.ts');
        arrows.push({ from: file, to, fromModule: moduleOf(file), toModule: moduleOf(to) });
      } else if (!spec.startsWith('node:')) {
        const name = spec.startsWith('@') ? spec.split('/').slice(0, 2).join('/') : spec.split('/')[0]!;
        if (!packages.has(name)) packages.set(name, file);
      }
    }
  }
  return { files, arrows, packages };
}

/** Arrows that leave `src/` or do not point down the layers. */
export function upwardArrows(graph: ImportGraph): ImportArrow[] {
  return graph.arrows.filter((arrow) => {
    if (arrow.fromModule === arrow.toModule) return false;
    if (arrow.to.startsWith('..')) return true;
    const from = layerOf(arrow.fromModule);
    const to = layerOf(arrow.toModule);
    return from < 0 || to < 0 || to >= from;
  });
}

/** The report `npm run layers` prints. */
export function describe(graph: ImportGraph): string {
  const lines: string[] = [];
  const filesPer = new Map<string, number>();
  for (const file of graph.files) filesPer.set(moduleOf(file), (filesPer.get(moduleOf(file)) ?? 0) + 1);
  lines.push('layer  module       files');
  LAYERS.forEach((layer, rank) => {
    for (const module of layer) lines.push(`${String(rank).padStart(5)}  ${module.padEnd(12)} ${filesPer.get(module) ?? 0}`);
  });
  const unplaced = [...filesPer.keys()].filter((m) => layerOf(m) < 0);
  for (const module of unplaced) lines.push(`    ?  ${module.padEnd(12)} ${filesPer.get(module)} (in no layer)`);
  const between = new Map<string, number>();
  for (const arrow of graph.arrows) {
    if (arrow.fromModule === arrow.toModule) continue;
    const key = `${arrow.fromModule} -> ${arrow.toModule}`;
    between.set(key, (between.get(key) ?? 0) + 1);
  }
  lines.push('', `arrows between modules: ${[...between.values()].reduce((a, b) => a + b, 0)} (${between.size} pairs)`);
  const up = upwardArrows(graph);
  lines.push(`arrows that run up or out: ${up.length}`);
  for (const arrow of up) lines.push(`  ${arrow.from} -> ${arrow.to}`);
  return lines.join('\n');
}

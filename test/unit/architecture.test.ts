/**
 * The product's shape: imports in src/ point down the layers (tools/import-graph.ts), nothing in
 * src/ reaches tools/, bench/ or test/, and src/ uses only production dependencies.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { importGraph, layerOf, upwardArrows } from '../../tools/import-graph.js';

const SRC = new URL('../../src', import.meta.url).pathname;
const graph = importGraph(SRC);
const manifest = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as {
  dependencies: Record<string, string>;
};

describe('the layers of src/', () => {
  it('places every top-level module in a layer', () => {
    const unplaced = [...new Set(graph.files.map((f) => f.split('/')[0]!))].filter((m) => layerOf(m) < 0);
    expect(unplaced).toEqual([]);
  });

  it('has no import that runs up a layer, sideways between modules, or out of src/', () => {
    expect(graph.arrows.length).toBeGreaterThan(100);
    expect(upwardArrows(graph).map((a) => `${a.from} -> ${a.to}`)).toEqual([]);
  });

  it('imports only production dependencies', () => {
    const foreign = [...graph.packages].filter(([name]) => !(name in manifest.dependencies)).map(([name, file]) => `${name} (${file})`);
    expect(foreign).toEqual([]);
  });
});

describe('the errors of src/', () => {
  const sources = graph.files.map((file) => ({ file, text: readFileSync(join(SRC, file), 'utf8') }));

  it('throws only typed errors with a stable code (no bare Error)', () => {
    const bare = sources.filter(({ text }) => /\bthrow new Error\(/.test(text)).map(({ file }) => file);
    expect(bare).toEqual([]);
  });

  it('derives every error class from GateError', () => {
    const outside = sources
      .flatMap(({ file, text }) => [...text.matchAll(/class (\w+) extends (?:Error|TypeError|RangeError)\b/g)].map((m) => `${m[1]} (${file})`))
      .filter((name) => name !== 'GateError (errors.ts)');
    expect(outside).toEqual([]);
  });
});

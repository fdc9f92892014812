/**
 * V8 heap snapshots of a child process (`node --heapsnapshot-signal=SIGUSR2`) and what grew
 * between two of them, by constructor: the JS side of a per-connection memory figure.
 */
import { readFileSync, readdirSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { sleep } from './common.js';

/** Signals the process and waits until the new snapshot file is complete; returns its path. */
export async function takeHeapSnapshot(pid: number, dir: string, timeoutMs = 120_000): Promise<string> {
  const existing = new Set(readdirSync(dir).filter((f) => f.endsWith('.heapsnapshot')));
  process.kill(pid, 'SIGUSR2');
  const deadline = Date.now() + timeoutMs;
  let last = -1;
  let stableSince = 0;
  for (;;) {
    if (Date.now() > deadline) throw new Error('no heap snapshot within the time limit');
    await sleep(250);
    const file = readdirSync(dir).find((f) => f.endsWith('.heapsnapshot') && !existing.has(f));
    if (!file) continue;
    const size = statSync(join(dir, file)).size;
    if (size > 0 && size === last) {
      if (Date.now() - stableSince > 1500) return join(dir, file);
    } else {
      last = size;
      stableSince = Date.now();
    }
  }
}

interface Snapshot {
  snapshot: { meta: { node_fields: string[]; node_types: [string[], ...unknown[]] } };
  nodes: number[];
  strings: string[];
}

/** Self size and count per `type:name` (objects by constructor name, the rest by type). */
export function heapCensus(file: string, removeAfter = true): Map<string, { count: number; bytes: number }> {
  const snap = JSON.parse(readFileSync(file, 'utf8')) as Snapshot;
  if (removeAfter) rmSync(file, { force: true });
  const fields = snap.snapshot.meta.node_fields;
  const types = snap.snapshot.meta.node_types[0];
  const width = fields.length;
  const typeAt = fields.indexOf('type');
  const nameAt = fields.indexOf('name');
  const sizeAt = fields.indexOf('self_size');
  const census = new Map<string, { count: number; bytes: number }>();
  for (let i = 0; i < snap.nodes.length; i += width) {
    const type = types[snap.nodes[i + typeAt]!]!;
    const name = snap.strings[snap.nodes[i + nameAt]!]!;
    const key =
      type === 'object' || type === 'native' || type === 'closure'
        ? `${type}:${name.length > 60 ? `${name.slice(0, 57)}...` : name}`
        : type;
    const entry = census.get(key) ?? { count: 0, bytes: 0 };
    entry.count += 1;
    entry.bytes += snap.nodes[i + sizeAt]!;
    census.set(key, entry);
  }
  return census;
}

export interface HeapGrowth {
  totalBytesPerConnection: number;
  top: Array<{ what: string; countPerConnection: number; bytesPerConnection: number }>;
}

export function heapGrowth(
  before: Map<string, { count: number; bytes: number }>,
  after: Map<string, { count: number; bytes: number }>,
  connections: number,
  topN = 20,
): HeapGrowth {
  const rows: HeapGrowth['top'] = [];
  let total = 0;
  for (const [what, a] of after) {
    const b = before.get(what) ?? { count: 0, bytes: 0 };
    const bytes = (a.bytes - b.bytes) / connections;
    total += bytes;
    rows.push({ what, countPerConnection: (a.count - b.count) / connections, bytesPerConnection: bytes });
  }
  for (const [what, b] of before) if (!after.has(what)) total -= b.bytes / connections;
  rows.sort((x, y) => y.bytesPerConnection - x.bytesPerConnection);
  return { totalBytesPerConnection: total, top: rows.slice(0, topN) };
}

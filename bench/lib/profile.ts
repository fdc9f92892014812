/**
 * Summaries of V8 CPU profiles (`node --cpu-prof`): self time by function and by where the code
 * lives (sasl-gate's own files, each dependency, Node's internals, native code, GC, idle).
 */
import { readFileSync } from 'node:fs';

interface CallFrame {
  functionName: string;
  url: string;
  lineNumber: number;
}

interface ProfileNode {
  id: number;
  callFrame: CallFrame;
  hitCount?: number;
  children?: number[];
}

interface CpuProfile {
  nodes: ProfileNode[];
  startTime: number;
  endTime: number;
  samples?: number[];
  timeDeltas?: number[];
}

export interface ProfileSummary {
  file: string;
  /** Wall time the profile covers, and the part of it the thread was busy (not `(idle)`). */
  totalMs: number;
  busyMs: number;
  /** Top functions by self time (busy time only). */
  top: Array<{ name: string; where: string; selfMs: number; percentOfBusy: number }>;
  /** Self time by area. */
  areas: Array<{ area: string; selfMs: number; percentOfBusy: number }>;
}

function where(frame: CallFrame): string {
  const url = frame.url;
  if (!url) return '';
  const clean = url.replace(/^file:\/\//, '');
  const nm = clean.lastIndexOf('/node_modules/');
  if (nm >= 0) return clean.slice(nm + '/node_modules/'.length) + `:${frame.lineNumber + 1}`;
  const dist = clean.lastIndexOf('/dist/');
  if (dist >= 0) return `src/${clean.slice(dist + '/dist/'.length).replace(/\.js$/, '.ts')}:${frame.lineNumber + 1}`;
  return `${clean}:${frame.lineNumber + 1}`;
}

function area(frame: CallFrame): string {
  const name = frame.functionName;
  const url = frame.url;
  if (name === '(idle)') return '(idle)';
  if (name === '(garbage collector)') return 'GC';
  if (name === '(program)') return '(program: V8/native outside JS)';
  if (!url) return `native (${name || 'anonymous'})`;
  if (url.startsWith('node:')) {
    const mod = url.slice(5).split('/')[1] ?? url.slice(5);
    return `node:${url.slice(5).startsWith('internal/') ? `internal/${mod}` : url.slice(5)}`;
  }
  const nm = url.lastIndexOf('/node_modules/');
  if (nm >= 0) {
    const rest = url.slice(nm + '/node_modules/'.length).split('/');
    return `dependency ${rest[0]!.startsWith('@') ? `${rest[0]}/${rest[1]}` : rest[0]}`;
  }
  const dist = url.lastIndexOf('/dist/');
  if (dist >= 0) return `sasl-gate src/${url.slice(dist + '/dist/'.length).split('/')[0]}`;
  return url;
}

export function summarizeProfile(file: string, topN = 15): ProfileSummary {
  const profile = JSON.parse(readFileSync(file, 'utf8')) as CpuProfile;
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const self = new Map<number, number>();
  if (profile.samples && profile.timeDeltas) {
    for (let i = 0; i < profile.samples.length; i++) {
      const id = profile.samples[i]!;
      // timeDeltas[i] is the time before sample i; attribute the next delta to this sample.
      const dt = profile.timeDeltas[i + 1] ?? 0;
      self.set(id, (self.get(id) ?? 0) + dt);
    }
  } else {
    const total = profile.endTime - profile.startTime;
    const hits = profile.nodes.reduce((a, n) => a + (n.hitCount ?? 0), 0) || 1;
    for (const n of profile.nodes) self.set(n.id, ((n.hitCount ?? 0) / hits) * total);
  }
  const totalUs = profile.endTime - profile.startTime;
  let idleUs = 0;
  const byFunction = new Map<string, { name: string; where: string; us: number }>();
  const byArea = new Map<string, number>();
  for (const [id, us] of self) {
    const frame = byId.get(id)!.callFrame;
    if (frame.functionName === '(idle)') {
      idleUs += us;
      continue;
    }
    const w = where(frame);
    const name = frame.functionName || '(anonymous)';
    const key = `${name}@${w}`;
    const entry = byFunction.get(key) ?? { name, where: w, us: 0 };
    entry.us += us;
    byFunction.set(key, entry);
    const a = area(frame);
    byArea.set(a, (byArea.get(a) ?? 0) + us);
  }
  const busyUs = Math.max(1, totalUs - idleUs);
  return {
    file,
    totalMs: totalUs / 1000,
    busyMs: busyUs / 1000,
    top: [...byFunction.values()]
      .sort((a, b) => b.us - a.us)
      .slice(0, topN)
      .map((f) => ({ name: f.name, where: f.where, selfMs: f.us / 1000, percentOfBusy: (100 * f.us) / busyUs })),
    areas: [...byArea.entries()]
      .sort((a, b) => b[1] - a[1])
      .slice(0, topN)
      .map(([a, us]) => ({ area: a, selfMs: us / 1000, percentOfBusy: (100 * us) / busyUs })),
  };
}

export function profileText(s: ProfileSummary): string[] {
  const out = [
    `CPU profile ${s.file}: ${(s.totalMs / 1000).toFixed(1)} s recorded, main thread busy ${(s.busyMs / 1000).toFixed(1)} s`,
    '  self time by area (% of busy):',
  ];
  for (const a of s.areas.slice(0, 12)) out.push(`    ${a.percentOfBusy.toFixed(1).padStart(5)}%  ${a.area}`);
  out.push('  top functions by self time (% of busy):');
  for (const f of s.top) out.push(`    ${f.percentOfBusy.toFixed(1).padStart(5)}%  ${f.name}  ${f.where}`);
  return out;
}

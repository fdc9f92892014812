/**
 * The demo (`npm run demo`: tools/demo.ts run from source) as a newcomer runs it: the token is printed once, as `export TOKEN=...`, the
 * printed commands work as pasted, and Ctrl+C leaves nothing running that the demo started.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { secret } from '../support/evidence.js';

const run = promisify(execFile);
const ROOT = join(import.meta.dirname, '..', '..');
// What `npm run demo` runs after building, started from a scratch directory so that the demo's
// .demo/ and certs/ land there rather than in the checkout.
const VITE_NODE = join(ROOT, 'node_modules', 'vite-node', 'vite-node.mjs');
const DEMO = join(ROOT, 'tools', 'demo.ts');

let dir: string;
let demo: ChildProcess;
let output = '';
let exited: Promise<number | null>;

function waitFor(pattern: RegExp, timeoutMs: number): Promise<RegExpExecArray> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no ${pattern} in the demo's output:\n${output}`)), timeoutMs);
    const check = () => {
      const match = pattern.exec(output);
      if (match) {
        clearTimeout(timer);
        demo.stdout?.off('data', check);
        resolve(match);
      }
    };
    demo.stdout?.on('data', check);
    void exited.then((code) => {
      clearTimeout(timer);
      reject(new Error(`the demo exited with ${code} before ${pattern}:\n${output}`));
    });
    check();
  });
}

/** Process groups of the processes whose command line mentions `text`, and every process in them. */
async function processesMentioning(texts: string[]): Promise<Array<{ pid: number; pgid: number; args: string }>> {
  const { stdout } = await run('ps', ['-eo', 'pid=,pgid=,args=']);
  const all = stdout
    .split('\n')
    .filter((line) => line.trim())
    .map((line) => {
      const [, pid, pgid, args] = /^\s*(\d+)\s+(\d+)\s+(.*)$/.exec(line)!;
      return { pid: Number(pid), pgid: Number(pgid), args: args! };
    });
  const groups = new Set(all.filter((p) => texts.some((t) => p.args.includes(t))).map((p) => p.pgid));
  return all.filter((p) => groups.has(p.pgid));
}

function refused(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect({ host: '127.0.0.1', port });
    socket.once('connect', () => {
      socket.destroy();
      resolve(false);
    });
    socket.once('error', () => resolve(true));
  });
}

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'sasl-gate-demo-test-'));
  demo = spawn(process.execPath, [VITE_NODE, '--root', ROOT, DEMO], { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] });
  exited = new Promise((resolve) => demo.once('exit', (code) => resolve(code)));
  demo.stdout!.on('data', (chunk: Buffer) => (output += chunk.toString('utf8')));
  demo.stderr!.on('data', (chunk: Buffer) => (output += chunk.toString('utf8')));
});

afterAll(() => {
  if (demo.exitCode === null) demo.kill('SIGKILL');
  rmSync(dir, { recursive: true, force: true });
});

describe('the demo', () => {
  it('prints the token once and commands that use "$TOKEN", which work as pasted; Ctrl+C stops everything', async () => {
    await waitFor(/Press Ctrl\+C to stop\./, 90_000);
    const exportLine = /^ {2}(export TOKEN='([A-Za-z0-9_.-]+)')$/m.exec(output);
    expect(exportLine).not.toBeNull();
    const token = secret(exportLine![2]!, 'access token');
    expect(output.split(token).length - 1).toBe(1);
    const commands = output.split('\n').filter((line) => line.includes('--oauth2-bearer'));
    expect(commands.length).toBeGreaterThanOrEqual(3);
    for (const command of commands) expect(command).toContain('--oauth2-bearer "$TOKEN"');

    // Pasted into a shell: the export, then the command that reads the welcome message.
    const read = commands.find((c) => c.includes('MAILINDEX=1'))!.trim();
    const pasted = await run('bash', ['-c', `${exportLine![1]}\n${read}`], { cwd: dir, timeout: 30_000 });
    expect(pasted.stdout).toContain('Subject: Welcome to sasl-gate');

    // The app-password lines, pasted: the command line makes one while the demo serves, curl lists with it.
    const appPassword = output.split('\n').filter((line) => /APP_PASSWORD/.test(line)).map((line) => line.trim());
    expect(appPassword).toHaveLength(2);
    const listed = await run('bash', ['-c', `${appPassword.join('\n')}\necho "app password: $APP_PASSWORD"`], { cwd: dir, timeout: 30_000 });
    const made = secret(/^app password: (.*)$/m.exec(listed.stdout)?.[1] ?? '', 'app password');
    expect(made).toMatch(/^([a-z]{4}-){6}[a-z]{4}$/);
    expect(listed.stdout).toContain('INBOX');

    // What it started: the private Dovecot and Postfix (by their directories) and its listeners.
    const dovecotDir = /Dovecot +127\.0\.0\.1:(\d+) \(private instance, log (\/\S+)\/[^/\s]+\)/.exec(output)!;
    const postfixDir = /Postfix +127\.0\.0\.1:(\d+) \(private instance, log (\/\S+)\/[^/\s]+\)/.exec(output)!;
    expect(dovecotDir).not.toBeNull();
    expect(postfixDir).not.toBeNull();
    const issuerPort = Number(/OpenID provider +https?:\/\/[^:/]+:(\d+)/.exec(output)![1]);
    const imapsPort = Number(/sasl-gate IMAPS +imaps:\/\/localhost:(\d+)/.exec(output)![1]);
    const smtpsPort = Number(/sasl-gate SMTPS +smtps:\/\/localhost:(\d+)/.exec(output)![1]);
    const ports = [Number(dovecotDir[1]), Number(postfixDir[1]), issuerPort, imapsPort, smtpsPort];
    const mentions = [dovecotDir[2]!, postfixDir[2]!];
    const before = await processesMentioning(mentions);
    expect(before.some((p) => /dovecot/.test(p.args))).toBe(true);
    expect(before.some((p) => /postfix|master/.test(p.args))).toBe(true);
    for (const port of ports) expect(await refused(port)).toBe(false);

    demo.kill('SIGINT');
    const code = await Promise.race([exited, new Promise<'hung'>((r) => setTimeout(() => r('hung'), 30_000))]);
    expect(code).toBe(0);
    expect(output).toMatch(/stopping \.\.\.\n(?:.*\n)*stopped\.\n$/);
    const pids = new Set(before.map((p) => p.pid));
    const survivors = (await run('ps', ['-eo', 'pid=,args='])).stdout
      .split('\n')
      .filter((line) => pids.has(Number(line.trim().split(/\s+/)[0])));
    expect(survivors).toEqual([]);
    for (const port of ports) expect(await refused(port)).toBe(true);
  }, 150_000);
});

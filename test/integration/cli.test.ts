/**
 * The command line as an admin meets it, through the built binary in its own process: each
 * command's own help (what it does, options, exit status, examples), usage errors that point at
 * that help, one clear line when no configuration is given, and the version.
 */
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';

const ROOT = join(import.meta.dirname, '..', '..');
const BIN = join(ROOT, 'bin', 'sasl-gate.js');

/** Runs the CLI with stdin closed and no SASL_GATE_* variable from the surrounding shell. */
function cli(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('SASL_GATE_')));
  return new Promise((resolve) => {
    const child = execFile(process.execPath, [BIN, ...args], { env, timeout: 20_000 }, (err, stdout, stderr) => {
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : 1) : 0, stdout, stderr });
    });
    child.stdin?.end();
  });
}

const COMMANDS = ['serve', 'check-config', 'check-token', 'doctor', 'thunderbird-addon', 'token', 'app-passwords'];

describe('help', () => {
  it('every command has its own, with what it does, options, exit status and an example', async () => {
    const top = await cli(['--help']);
    expect(top.code).toBe(0);
    const helps = await Promise.all(COMMANDS.map((c) => cli([c, '--help'])));
    helps.forEach((help, i) => {
      const command = COMMANDS[i]!;
      expect({ command, code: help.code, stderr: help.stderr }).toEqual({ command, code: 0, stderr: '' });
      expect(help.stdout).toMatch(new RegExp(`^Usage: sasl-gate ${command}\\b`));
      expect(help.stdout).not.toBe(top.stdout);
      expect(help.stdout).toMatch(/\nOptions:\n/);
      expect(help.stdout).toMatch(/\nExit status:\n\s+0 /);
      expect(help.stdout).toMatch(/\nExamples?:\n\s+(sudo )?sasl-gate /);
      expect(help.stdout.split('\n').every((line) => line.length <= 100), `${command}: lines fit a terminal`).toBe(true);
    });
    // `help COMMAND` is the same text, and the top-level help says where to find it.
    expect((await cli(['help', 'doctor'])).stdout).toBe(helps[3]!.stdout);
    expect(top.stdout).toContain('sasl-gate COMMAND --help');
  });

  it("doctor's help lists its checks, the token on stdin, --user and its exit codes", async () => {
    const { stdout } = await cli(['doctor', '-h']);
    for (const check of ['discovery', 'jwks', 'imap backend', 'imap master', 'smtp backend', 'smtp xclient', 'certificate', 'token']) {
      expect(stdout).toMatch(new RegExp(`^  ${check} `, 'm'));
    }
    expect(stdout).toMatch(/-u, --user NAME/);
    expect(stdout).toMatch(/piped in on standard input/);
    expect(stdout).toMatch(/^ {2}1 {3}a check failed/m);
  });

  it('check-token and check-config say what their exit codes mean', async () => {
    expect((await cli(['check-token', '--help'])).stdout).toMatch(/^ {2}3 {3}could not be decided: the provider was unreachable/m);
    const checkConfig = (await cli(['check-config', '--help'])).stdout;
    expect(checkConfig).toMatch(/every problem is listed in one run/i);
    expect(checkConfig).toMatch(/as YAML/);
  });

  it('load keeps its own help', async () => {
    const { code, stdout } = await cli(['load', '--help']);
    expect(code).toBe(0);
    expect(stdout).toMatch(/Exit status: 0 when every transaction succeeded/);
    expect((await cli(['help', 'load'])).stdout).toBe(stdout);
  });
});

describe('usage errors', () => {
  it('an unknown option names itself and the help to read, exit 2', async () => {
    const r = await cli(['doctor', '--config', 'x.yaml', '--usr', 'alice@example.test']);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/^sasl-gate doctor: Unknown option '--usr'.*\n\(sasl-gate doctor --help shows the options\)\n$/);
  });

  it('no configuration is one clear line, exit 2', async () => {
    for (const command of ['check-config', 'serve', 'doctor', 'check-token']) {
      const r = await cli([command]);
      expect(r.code).toBe(2);
      expect(r.stderr).toBe(
        `sasl-gate ${command}: no configuration given: pass --config FILE (or set SASL_GATE_CONFIG); see sasl-gate ${command} --help\n`,
      );
    }
  });

  it('an unknown command, and a user name no backend should see', async () => {
    const unknown = await cli(['chek-config']);
    expect(unknown.code).toBe(2);
    expect(unknown.stderr).toMatch(/^sasl-gate: unknown command "chek-config"/);
    const badUser = await cli(['doctor', '--config', 'x.yaml', '--user', 'alice\r\nA1 LOGOUT']);
    expect(badUser.code).toBe(2);
    expect(badUser.stderr).toMatch(/--user "alice\?\?A1 LOGOUT" is not a user name/);
  });

  it('demo is not in the installed command: it points at the source checkout', async () => {
    const top = await cli(['--help']);
    expect(top.stdout).not.toMatch(/sasl-gate demo/);
    for (const args of [['demo'], ['demo', '--help'], ['help', 'demo']]) {
      const r = await cli(args);
      expect({ args, code: r.code, stdout: r.stdout }).toEqual({ args, code: 2, stdout: '' });
      expect(r.stderr).toMatch(/not part of the installed package; it runs from a source checkout\n.*npm ci && npm run demo\n$/);
    }
  });

  it('load without --users is a usage error that names --users', async () => {
    const r = await cli(['load', 'imap-login', '--target', 'imaps://127.0.0.1:1']);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/^sasl-gate load: --users FILE is required/);
    expect((await cli(['load', '--help'])).stdout).toMatch(/--target URL --users FILE /);
  });

  it('--version is the package version', async () => {
    const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { version: string };
    expect(await cli(['--version'])).toMatchObject({ code: 0, stdout: `${pkg.version}\n` });
  });
});

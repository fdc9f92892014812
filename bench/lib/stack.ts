/**
 * The parts every benchmark stands on: one certificate for every TLS server (sasl-gate, Dovecot,
 * nginx, openssl s_server), a private Dovecot, the development OpenID provider, sasl-gate's
 * configuration for them, the load harness called in-process, and users files for it.
 */
import { createPublicKey, type JsonWebKey } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startDovecot, type DovecotInstance, type DovecotOptions } from '../../tools/dovecot.js';
import { startDevIdp, type DevIdp } from '../../tools/idp.js';
import { runLoad } from '../../src/load/cli.js';
import type { LoadReport } from '../../src/load/report.js';
import { ensureDevCertificate } from '../../src/tls/devcert.js';
import { onCleanup } from './common.js';

export const USERS = [
  { name: 'alice@example.test', password: 'alice-bench-Pa55' },
  { name: 'bob@example.test', password: 'bob-bench-Pa55' },
];
export const MASTER = { user: 'sasl-gate-master', password: 'master-bench-Pa55-7c1' };

/** A scratch directory removed at the end of the run. */
export function scratchDir(prefix: string): string {
  const dir = mkdtempSync(join(tmpdir(), `sasl-gate-bench-${prefix}-`));
  onCleanup(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

export interface Certificate {
  certPath: string;
  keyPath: string;
  caPath: string;
}

/** The development certificate (ECDSA P-256, signed by a development CA) for every TLS server in the run. */
export async function certificate(): Promise<Certificate> {
  const dir = scratchDir('certs');
  const c = await ensureDevCertificate(dir);
  return { certPath: c.certPath, keyPath: c.keyPath, caPath: c.caPath };
}

export async function startBenchDovecot(opts: Partial<DovecotOptions> = {}): Promise<DovecotInstance> {
  const dovecot = await startDovecot({ users: USERS, master: MASTER, authPenalty: false, ...opts });
  onCleanup(() => dovecot.stop());
  return dovecot;
}

export async function startBenchIdp(): Promise<DevIdp> {
  const idp = await startDevIdp({
    users: USERS.map((u) => ({ id: u.name.split('@')[0]!, email: u.name })),
    audience: 'mail',
  });
  onCleanup(() => idp.close());
  return idp;
}

/**
 * Access tokens for the users, signed with the provider's key over the provider's own claims.
 * `typ: JWT` in the header, as Keycloak and Authentik write it: Dovecot 2.3's local validation
 * refuses anything else (RFC 9068's `at+jwt`, which the provider's token endpoint writes,
 * fails with "Cannot find 'typ' field"); sasl-gate accepts both.
 */
export async function tokensFor(idp: DevIdp, perUser = 1): Promise<Array<{ user: string; token: string }>> {
  const out: Array<{ user: string; token: string }> = [];
  for (let i = 0; i < perUser; i++) {
    for (const u of USERS) {
      out.push({ user: u.name, token: await idp.signToken(idp.claimsFor(u.name.split('@')[0]!), { typ: 'JWT' }) });
    }
  }
  return out;
}

/** The provider's public keys as Dovecot's key dictionary wants them (PEM, under azp `default`: its tokens carry no azp). */
export async function dovecotKeys(idp: DevIdp): Promise<Array<{ azp: string; alg: string; kid: string; pem: string }>> {
  const jwks = (await (await fetch(idp.jwksUri)).json()) as { keys: Array<JsonWebKey & { kid: string; alg?: string }> };
  return jwks.keys.map((k) => ({
    azp: 'default',
    alg: k.alg ?? 'RS256',
    kid: k.kid,
    pem: createPublicKey({ key: k, format: 'jwk' }).export({ type: 'spki', format: 'pem' }) as string,
  }));
}

/** sasl-gate's configuration in front of `dovecot` (or any IMAP backend), trusting `idp`. */
export function gateConfig(
  cert: Certificate,
  backend: { host: string; port: number },
  issuer: { issuer: string; clientId: string; clientSecret: string },
  extra: { limits?: Record<string, unknown>; log?: Record<string, unknown> } = {},
): Record<string, unknown> {
  return {
    tls: { cert: cert.certPath, key: cert.keyPath },
    backends: { imap: { host: backend.host, port: backend.port } },
    master: MASTER,
    oauth: {
      issuer: issuer.issuer,
      audience: ['mail'],
      validation: ['jwt'],
      clientId: issuer.clientId,
      clientSecret: issuer.clientSecret,
      usernameClaims: ['email', 'preferred_username'],
    },
    limits: { authFailureDelaySeconds: 0, shutdownGraceSeconds: 0, ...extra.limits },
    log: { level: 'info', ...extra.log },
  };
}

/** A `user<TAB>secret` file for the harness. */
export function usersFile(dir: string, name: string, entries: Array<{ user: string; secret: string }>): string {
  const path = join(dir, name);
  writeFileSync(path, entries.map((e) => `${e.user}\t${e.secret}\n`).join(''), { mode: 0o600 });
  return path;
}

export function passwordsFile(dir: string): string {
  return usersFile(
    dir,
    'passwords.tsv',
    USERS.map((u) => ({ user: u.name, secret: u.password })),
  );
}

/** Runs `sasl-gate load ARGS --json --quiet` in this process and returns its report (whatever the exit status). */
export async function harness(argv: string[], signal?: AbortSignal): Promise<LoadReport & { exitCode: number }> {
  let out = '';
  let err = '';
  const code = await runLoad([...argv, '--json', '--quiet'], {
    stdout: { write: (t: string) => (out += t) },
    stderr: { write: (t: string) => (err += t) },
    // Without a signal of ours, runLoad would take over this process's Ctrl+C.
    signal: signal ?? new AbortController().signal,
  });
  if (code === 2 || !out.trim()) throw new Error(`sasl-gate load ${argv.join(' ')}: exit ${code}\n${err}`);
  return { ...(JSON.parse(out) as LoadReport), exitCode: code };
}

/** Readable summary of a harness report's errors, or '' when there were none. */
export function errorsOf(r: LoadReport): string {
  const kinds = Object.entries(r.errors).filter(([, n]) => n > 0);
  if (kinds.length === 0) return '';
  return kinds.map(([k, n]) => `${n} ${k} (${(r.errorSamples as Record<string, string>)[k] ?? ''})`).join('; ');
}

export function readText(path: string): string {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return '';
  }
}

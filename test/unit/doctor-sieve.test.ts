/**
 * `sasl-gate doctor` with a ManageSieve backend: a loopback stand-in that answers like Dovecot's
 * managesieve-login (trusting sasl-gate or not), so each verdict and its hint can be seen.
 */
import { mkdtempSync, writeFileSync } from 'node:fs';
import { createServer, type AddressInfo, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import { loadConfig } from '../../src/config/load.js';
import { runDoctor } from '../../src/doctor.js';
import { freePort } from '../../tools/ports.js';
import { secret } from '../support/evidence.js';

const MASTER = { user: 'sasl-gate-master', password: secret('doctor-sieve-master-Pw7', 'master password') };
const USER = 'alice@example.test';

interface StandIn {
  /** Offer PLAIN (Dovecot does on a plain connection only to trusted or secured clients). */
  plain: boolean;
  /** Offer XCLIENT (Dovecot does to login_trusted_networks). */
  xclient: boolean;
  /** Accept the master login. */
  accept: boolean;
}

const servers: Server[] = [];
const sockets: Socket[] = [];
afterEach(async () => {
  for (const socket of sockets.splice(0)) socket.destroy();
  await Promise.all(servers.splice(0).map((s) => new Promise((resolve) => s.close(resolve))));
});

/** A managesieve stand-in; `seen` collects each command line it received, per connection. */
async function managesieve(behaviour: StandIn): Promise<{ port: number; seen: string[][] }> {
  const seen: string[][] = [];
  const server = createServer((socket) => {
    sockets.push(socket);
    socket.on('error', () => undefined);
    const lines: string[] = [];
    seen.push(lines);
    const greeting = [
      '"IMPLEMENTATION" "Dovecot Pigeonhole"',
      '"SIEVE" "fileinto reject envelope vacation"',
      `"SASL" "${behaviour.plain ? 'PLAIN LOGIN' : ''}"`,
      '"STARTTLS"',
      '"VERSION" "1.0"',
      ...(behaviour.xclient ? ['"XCLIENT"'] : []),
      'OK "Dovecot ready."',
    ];
    socket.write(`${greeting.join('\r\n')}\r\n`);
    let buffer = '';
    socket.on('data', (chunk: Buffer) => {
      buffer += chunk.toString('latin1');
      for (let end = buffer.indexOf('\r\n'); end >= 0; end = buffer.indexOf('\r\n')) {
        const line = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        lines.push(line);
        const plain = /^AUTHENTICATE "PLAIN" "([^"]*)"$/.exec(line);
        if (line.startsWith('XCLIENT ')) socket.write('OK "Updated"\r\n');
        else if (plain) {
          const [authzid, authcid, password] = Buffer.from(plain[1]!, 'base64').toString('utf8').split('\0');
          const master = authzid === USER && authcid === MASTER.user && password === MASTER.password;
          socket.write(behaviour.accept && master ? 'OK "Logged in."\r\n' : 'NO "Authentication failed."\r\n');
        } else if (line === 'LOGOUT') socket.end('OK "Logout completed."\r\n');
        else socket.write('NO "Unknown command."\r\n');
      }
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  servers.push(server);
  return { port: (server.address() as AddressInfo).port, seen };
}

/** Runs the doctor against a ManageSieve backend on `port` (the provider is absent: only the sieve lines matter). */
async function doctor(port: number, options: { user?: string } = { user: USER }): Promise<string[]> {
  const dir = mkdtempSync(join(tmpdir(), 'sasl-gate-doctor-sieve-'));
  const path = join(dir, 'sasl-gate.yaml');
  writeFileSync(
    path,
    stringify({
      listeners: [{ protocol: 'sieve', bind: '127.0.0.1:0', tls: 'starttls' }],
      tls: { development: true, devCertDir: join(dir, 'certs') },
      backends: { sieve: { host: '127.0.0.1', port, connectTimeoutSeconds: 2, responseTimeoutSeconds: 2 } },
      master: MASTER,
      oauth: { issuer: `http://127.0.0.1:${await freePort()}`, audience: ['mail'], validation: ['jwt'], allowedEmailDomains: ['example.test'] },
    }),
  );
  const lines: string[] = [];
  await runDoctor(loadConfig({ file: path, env: {} }).config, { ...options, out: (line) => lines.push(line) });
  return lines;
}

const sieveLines = (lines: string[]) => lines.filter((l) => /^\w+ {2}sieve (backend|master)/.test(l));

describe('doctor: ManageSieve backend', () => {
  it('a Dovecot that trusts sasl-gate: PLAIN offered, master login accepted after XCLIENT; the master password never printed', async () => {
    const { port, seen } = await managesieve({ plain: true, xclient: true, accept: true });
    const lines = await doctor(port);
    expect(sieveLines(lines)).toEqual([
      expect.stringMatching(new RegExp(`^PASS  sieve backend +127\\.0\\.0\\.1:${port} answers; capabilities .*"SASL" "PLAIN LOGIN"`)),
      `PASS  sieve master   login as ${USER} (master user ${MASTER.user}) accepted, after XCLIENT with the client address`,
    ]);
    // The second connection is the login: XCLIENT with the doctor's address, then PLAIN with authzid = the user.
    const login = seen[1]!;
    expect(login[0]).toMatch(/^XCLIENT ADDR=127\.0\.0\.1 PORT=\d+/);
    expect(login[1]).toBe(`AUTHENTICATE "PLAIN" "${Buffer.from(`${USER}\0${MASTER.user}\0${MASTER.password}`).toString('base64')}"`);
    expect(lines.join('\n')).not.toContain(MASTER.password);
  });

  it('no PLAIN on the plain connection: a failure that names login_trusted_networks', async () => {
    const { port } = await managesieve({ plain: false, xclient: false, accept: true });
    const [backend] = sieveLines(await doctor(port));
    expect(backend).toMatch(/^FAIL  sieve backend +127\.0\.0\.1:\d+ answers, but offers no "SASL" "PLAIN" on this unencrypted connection; .* — add sasl-gate's address to Dovecot's login_trusted_networks/);
  });

  it('a login accepted without XCLIENT: a warning that clients would be logged under sasl-gate’s address, with the fix', async () => {
    const { port, seen } = await managesieve({ plain: true, xclient: false, accept: true });
    const [, master] = sieveLines(await doctor(port));
    expect(master).toMatch(/^WARN  sieve master +login as alice@example\.test .*accepted, but Dovecot did not offer XCLIENT.* — add sasl-gate's address to Dovecot's login_trusted_networks, or send a PROXY v2 header \(backends\.sieve\.proxyProtocol/);
    expect(seen[1]![0]).toMatch(/^AUTHENTICATE "PLAIN" /);
  });

  it('a refused master login fails with Dovecot’s words and what to check', async () => {
    const { port } = await managesieve({ plain: true, xclient: true, accept: false });
    const [, master] = sieveLines(await doctor(port));
    expect(master).toMatch(/^FAIL  sieve master +login as alice@example\.test \(master user sasl-gate-master\) refused: NO "Authentication failed\." — check master\.user \/ master\.password/);
  });

  it('without a user, the master login is not tried, and the doctor says how to try it', async () => {
    const { port, seen } = await managesieve({ plain: true, xclient: true, accept: true });
    const [backend, master] = sieveLines(await doctor(port, {}));
    expect(backend).toMatch(/^PASS  sieve backend/);
    expect(master).toMatch(/^WARN  sieve master +not tried: no user was named and no token given.* — name a mailbox \(sasl-gate doctor --config FILE --user NAME\)/);
    expect(seen).toHaveLength(1);
  });

  it('nothing listening: a failure naming the address and the key to check', async () => {
    const port = await freePort();
    const lines = sieveLines(await doctor(port));
    expect(lines).toEqual([
      expect.stringMatching(new RegExp(`^FAIL  sieve backend +127\\.0\\.0\\.1:${port}: .*ECONNREFUSED.* — nothing listens on 127\\.0\\.0\\.1:${port}: is Dovecot running, and is backends\\.sieve\\.host / \\.port right\\?`)),
      'WARN  sieve master   not tried: the backend does not answer',
    ]);
  });
});

/**
 * Real Dovecot 2.3 managesieve responses, captured by hand (fixtures/): the parser reads every
 * line the backend sent, the capability mirroring drops what is not the client's, and the backend
 * login reads those exact bytes when they are replayed.
 */
import { readFileSync } from 'node:fs';
import { createServer, type AddressInfo, type Server, type Socket } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { tcpConnector } from '../../../src/net/connector.js';
import { loginToSieveBackend, type SieveBackendCredentials } from '../../../src/sieve/backend-login.js';
import { advertisedCapabilities, probeSieveCapabilities } from '../../../src/sieve/capabilities.js';
import { SieveFramer } from '../../../src/sieve/framer.js';
import { parseCapability, parseResponse, parseStringLine, type SieveSegment } from '../../../src/sieve/parser.js';

interface Transcript {
  client: string;
  server: string;
}
const FIXTURE = JSON.parse(readFileSync(new URL('./fixtures/dovecot-2.3.19-managesieve.json', import.meta.url), 'utf8')) as {
  sessions: Record<string, Transcript>;
};
const sessions = FIXTURE.sessions;
const GREETING_END = 'OK "Dovecot (Debian) ready."\r\n';

/** Every line the server sent, framed as sasl-gate frames them. */
function serverLines(text: string): SieveSegment[][] {
  const framer = new SieveFramer({ maxLineLength: 8192, maxLiteralSize: 65536 });
  framer.push(Buffer.from(text, 'latin1'));
  const out: SieveSegment[][] = [];
  for (let frame = framer.readFrame(); frame !== null; frame = framer.readFrame()) {
    if (frame.type !== 'line') throw new Error(frame.error);
    out.push(frame.segments);
  }
  return out;
}

const servers: Server[] = [];
const sockets: Socket[] = [];
afterEach(async () => {
  sockets.splice(0).forEach((s) => s.destroy());
  await Promise.all(servers.splice(0).map((s) => new Promise((resolve) => s.close(resolve))));
});

/**
 * A backend that replays a recorded session: the greeting at once, then after each line the
 * client sends, the recorded server bytes up to the next response it recorded.
 */
async function replay(transcript: Transcript): Promise<{ port: number; received: string[] }> {
  const [greeting, after] = transcript.server.split(GREETING_END) as [string, string];
  const answers = after.split(/(?<=\r\n)(?=OK |NO |BYE |")/);
  const received: string[] = [];
  const server = createServer((socket) => {
    sockets.push(socket);
    socket.on('error', () => undefined);
    socket.write(greeting + GREETING_END);
    let buffer = '';
    socket.on('data', (chunk: Buffer) => {
      buffer += chunk.toString('latin1');
      for (let end = buffer.indexOf('\r\n'); end >= 0; end = buffer.indexOf('\r\n')) {
        const line = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        received.push(line);
        if (/^\{\d+\+?\}$/.test(line)) continue;
        const answer = answers.shift();
        if (answer !== undefined) socket.write(answer);
      }
    });
  });
  servers.push(server);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { port: (server.address() as AddressInfo).port, received };
}

const ORIGIN = { address: '192.0.2.7', port: 5555, localAddress: '127.0.0.1', localPort: 4190, sessionId: 'sgAbCdEf', tls: true };

async function login(transcript: Transcript, credentials: SieveBackendCredentials) {
  const { port, received } = await replay(transcript);
  const result = await loginToSieveBackend({ connect: tcpConnector('127.0.0.1', port, 2000), responseTimeoutMs: 2000, origin: ORIGIN, credentials });
  if (result.ok) sockets.push(result.socket);
  return { result, received };
}

describe('Dovecot 2.3 managesieve, as recorded', () => {
  it('every line it sent reads as a capability, a response or a SASL challenge', () => {
    for (const [name, transcript] of Object.entries(sessions)) {
      for (const segments of serverLines(transcript.server)) {
        const text = segments[0]!.text.toString('latin1');
        if (/^(OK|NO|BYE)\b/.test(text)) expect(() => parseResponse(segments), `${name}: ${text}`).not.toThrow();
        else if (/^"(?:[A-Za-z0-9+/]*=*)"$/.test(text) && !/^"[A-Z]+"$/.test(text)) expect(() => parseStringLine(segments), `${name}: ${text}`).not.toThrow();
        else expect(() => parseCapability(segments), `${name}: ${text}`).not.toThrow();
      }
    }
    const noop = serverLines(sessions.synchronizing_literal!.server).at(-1)!;
    expect(parseResponse(noop)).toMatchObject({ status: 'OK', code: [{ type: 'atom', value: 'TAG' }, { type: 'string', value: Buffer.from('abc') }] });
  });

  it('its greeting, mirrored: its own lines less XCLIENT, with sasl-gate’s mechanisms', async () => {
    const { port } = await replay(sessions.master_login!);
    const probed = await probeSieveCapabilities(tcpConnector('127.0.0.1', port, 2000), 2000);
    expect(probed.map((line) => parseCapability(serverLines(`${line}\r\n`)[0]!).name)).toEqual(['IMPLEMENTATION', 'SIEVE', 'NOTIFY', 'SASL', 'VERSION', 'XCLIENT']);
    expect(advertisedCapabilities(probed)).toEqual([
      '"IMPLEMENTATION" "Dovecot (Debian) Pigeonhole"',
      probed[1],
      '"NOTIFY" "mailto"',
      '"SASL" "XOAUTH2 OAUTHBEARER PLAIN LOGIN"',
      '"VERSION" "1.0"',
    ]);
  });

  it('the master login: XCLIENT with the client’s address, AUTHENTICATE "PLAIN", its OK line; no capabilities follow the OK', async () => {
    const { result, received } = await login(sessions.master_login!, {
      kind: 'master',
      user: 'alice@example.test',
      masterUser: 'gate-master',
      masterPassword: 'master-secret-pw',
    });
    // Recorded with TTL=5; sasl-gate sends no TTL.
    expect(received[0]).toBe('XCLIENT ADDR=192.0.2.7 PORT=5555 SESSION=sgAbCdEf');
    expect(received[1]).toBe(sessions.master_login!.client.split('\r\n')[1]);
    expect(result).toMatchObject({ ok: true, line: 'OK "Logged in."' });
    expect((result as { rest: Buffer }).rest.length).toBe(0);
  });

  it('a wrong password: its own NO line', async () => {
    const wrong = sessions.wrong_password!;
    const { result } = await login({ ...wrong, server: wrong.server.replace(GREETING_END, `${GREETING_END}OK "Updated"\r\n`) }, { kind: 'plain', initialResponse: Buffer.from('\0bob\0wrong').toString('base64') });
    expect(result).toEqual({ ok: false, line: 'NO "Authentication failed."' });
  });

  it('the LOGIN mechanism: its two challenges answered with the client’s responses', async () => {
    const recorded = sessions.login_mechanism!;
    const { result, received } = await login(
      { ...recorded, server: recorded.server.replace(GREETING_END, `${GREETING_END}OK "Updated"\r\n`) },
      { kind: 'login-mechanism', userResponse: Buffer.from('bob').toString('base64'), passwordResponse: Buffer.from('bob-pw').toString('base64') },
    );
    expect(received.slice(1)).toEqual(['AUTHENTICATE "LOGIN"', `"${Buffer.from('bob').toString('base64')}"`, `"${Buffer.from('bob-pw').toString('base64')}"`]);
    expect(result).toMatchObject({ ok: true, line: 'OK "Logged in."' });
  });
});

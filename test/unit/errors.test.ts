/**
 * The error hierarchy: every error the product raises is a GateError with a stable code, backend
 * transport failures are BackendError (temporary, never a credential verdict), and a failed token
 * validation carries what each strategy concluded in a typed `reports` field.
 */
import { createServer, type AddressInfo, type Server, type Socket } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { ChainValidator } from '../../src/auth/chain.js';
import { ValidationError } from '../../src/auth/validation-error.js';
import { configSchema } from '../../src/config/schema.js';
import { PasswdFileWriter } from '../../src/directory/dovecot.js';
import { ScimError } from '../../src/directory/scim.js';
import { NetstringDecoder, NetstringError } from '../../src/directory/socketmap.js';
import { DirectorySourceError, HttpStatusError } from '../../src/directory/sources/common.js';
import { AuthError, BackendError, ConfigError, GateError, SaslError } from '../../src/errors.js';
import { loginToBackend } from '../../src/imap/backend-login.js';
import { ImapSyntaxError, parseCommand } from '../../src/imap/parser.js';
import { tcpConnector } from '../../src/net/connector.js';
import { loginToSmtpBackend } from '../../src/smtp/backend-login.js';

const servers: Server[] = [];
const sockets = new Set<Socket>();
afterEach(async () => {
  for (const socket of sockets) socket.destroy();
  sockets.clear();
  await Promise.all(servers.splice(0).map((s) => new Promise((resolve) => s.close(resolve))));
});

/** A loopback server that answers each connection with `script`; resolves to its port. */
async function scriptedBackend(script: (socket: Socket) => void): Promise<number> {
  const server = createServer((socket) => {
    sockets.add(socket);
    socket.on('error', () => undefined);
    script(socket);
  });
  servers.push(server);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return (server.address() as AddressInfo).port;
}

/** A port nothing listens on (a server bound, then closed). */
async function closedPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  await new Promise((resolve) => server.close(resolve));
  return port;
}

const IMAP_ORIGIN = { address: '192.0.2.1', port: 1, localAddress: '127.0.0.1', localPort: 993, sessionId: 's', clientId: [], tls: true };
const MASTER = { kind: 'master', user: 'alice@example.org', masterUser: 'sasl-gate', masterPassword: 'pw' } as const;

/** A directory listing never read: the options are checked before. */
const NO_USERS = {} as ConstructorParameters<typeof PasswdFileWriter>[0];

function thrown(fn: () => unknown): unknown {
  try {
    fn();
  } catch (err) {
    return err;
  }
  throw new Error('nothing was thrown');
}

describe('every error class is a GateError with a stable code', () => {
  it.each([
    ['AuthError', () => new AuthError('expired', 'x'), 'expired', false],
    ['AuthError (provider down)', () => new AuthError('provider_unavailable', 'x'), 'provider_unavailable', true],
    ['BackendError', () => new BackendError('x'), 'backend_unavailable', true],
    ['ConfigError', () => new ConfigError('a.b', 'x'), 'config_invalid', false],
    ['SaslError', () => new SaslError('x'), 'bad_sasl', false],
    ['ImapSyntaxError', () => thrown(() => parseCommand([{ text: Buffer.from('a1 LOGIN "open') }])), 'imap_syntax', false],
    ['ScimError 409', () => new ScimError(409, 'taken', 'uniqueness'), 'scim_conflict', false],
    ['ScimError 413', () => new ScimError(413, 'too big'), 'scim_too_large', false],
    ['NetstringError', () => thrown(() => new NetstringDecoder(16).push(Buffer.from('x'))), 'netstring_syntax', false],
    ['NetstringError (too long)', () => thrown(() => new NetstringDecoder(16).push(Buffer.from('100:'))), 'netstring_too_long', false],
    ['DirectorySourceError', () => new DirectorySourceError('x'), 'directory_source_unavailable', true],
    ['HttpStatusError', () => new HttpStatusError(403, new URL('https://idp.example/api')), 'directory_source_unavailable', true],
    ['PasswdFileOptionError', () => thrown(() => new PasswdFileWriter(NO_USERS, { path: '/tmp/x', uid: 0 })), 'passwd_file_option_invalid', false],
  ])('%s', (_, make, code, temporary) => {
    const error = make();
    expect(error).toBeInstanceOf(GateError);
    expect(error).toMatchObject({ code, temporary });
  });

  it('keeps the messages clients and admins already see', () => {
    expect(new ScimError(409, 'the userName bob is taken', 'uniqueness').toJSON()).toEqual({
      schemas: ['urn:ietf:params:scim:api:messages:2.0:Error'],
      status: '409',
      scimType: 'uniqueness',
      detail: 'the userName bob is taken',
    });
    expect((thrown(() => new PasswdFileWriter(NO_USERS, { path: '/tmp/x', gid: -1 })) as Error).message).toBe('passwd-file gid must be a positive integer, got -1');
    expect(thrown(() => parseCommand([{ text: Buffer.from('a1 LOGIN "open') }]))).toBeInstanceOf(ImapSyntaxError);
    expect(thrown(() => new NetstringDecoder(16).push(Buffer.from('x')))).toBeInstanceOf(NetstringError);
  });
});

describe('backend transport failures are BackendError, never an AuthError', () => {
  it('a refused connection', async () => {
    const port = await closedPort();
    const error = await tcpConnector('127.0.0.1', port, 2000)().catch((err: unknown) => err);
    expect(error).toBeInstanceOf(BackendError);
    expect(error).not.toBeInstanceOf(AuthError);
    expect(error).toMatchObject({ code: 'backend_unavailable', temporary: true, message: expect.stringContaining('failed') });
  });

  it('an IMAP backend that closes the connection in the middle of the login', async () => {
    const port = await scriptedBackend((socket) => {
      socket.write('* OK [CAPABILITY IMAP4rev1 SASL-IR] ready\r\n');
      socket.once('data', () => socket.end());
    });
    const error = await loginToBackend({
      connect: tcpConnector('127.0.0.1', port, 2000),
      responseTimeoutMs: 2000,
      origin: IMAP_ORIGIN,
      credentials: MASTER,
    }).catch((err: unknown) => err);
    expect(error).toBeInstanceOf(BackendError);
    expect((error as BackendError).message).toBe('backend closed the connection');
  });

  it('an IMAP backend that greets with something other than * OK', async () => {
    const port = await scriptedBackend((socket) => socket.write('* BYE too busy\r\n'));
    const error = await loginToBackend({
      connect: tcpConnector('127.0.0.1', port, 2000),
      responseTimeoutMs: 2000,
      origin: IMAP_ORIGIN,
      credentials: MASTER,
    }).catch((err: unknown) => err);
    expect(error).toBeInstanceOf(BackendError);
    expect((error as Error).message).toMatch(/^unexpected backend greeting: \* BYE too busy/);
  });

  it('an SMTP backend whose reply cannot be parsed', async () => {
    const port = await scriptedBackend((socket) => socket.write('hello there\r\n'));
    const error = await loginToSmtpBackend({
      connect: tcpConnector('127.0.0.1', port, 2000),
      responseTimeoutMs: 2000,
      origin: { address: '192.0.2.1', port: 1, helo: 'client', local: { address: '127.0.0.1', port: 465 }, tls: true },
      credentials: { kind: 'xclient', user: 'alice@example.org' },
      localName: 'gate.example.org',
    }).catch((err: unknown) => err);
    expect(error).toBeInstanceOf(BackendError);
    expect((error as Error).message).toBe('malformed backend reply: hello there');
  });
});

describe('ValidationError', () => {
  const oauth = (validation: string[]) =>
    configSchema.parse({
      listeners: [{ protocol: 'imap', bind: '0.0.0.0:993' }],
      tls: { development: true },
      backends: { imap: { host: 'x' } },
      master: { user: 'm', password: 'p' },
      oauth: { issuer: 'https://idp.example', audience: ['mail'], validation, clientId: 'mail', clientSecret: 's' },
    }).oauth;

  it('carries the verdict of every strategy tried, and the decisive code', async () => {
    const validator = new ChainValidator(oauth(['jwt']), { masterSeparator: '*' });
    const error = await validator.explain('opaque-token').catch((err: unknown) => err);
    expect(error).toBeInstanceOf(ValidationError);
    expect(error).toBeInstanceOf(AuthError);
    const failure = error as ValidationError;
    expect(failure.code).toBe('bad_token');
    expect(failure.temporary).toBe(false);
    expect(failure.reports).toEqual([{ strategy: 'jwt', verdict: 'skipped', reason: 'not a JWT' }]);
  });

  it('is temporary when the provider cannot be reached, and says which strategy found out', async () => {
    const down = (() => Promise.reject(new TypeError('fetch failed'))) as unknown as typeof fetch;
    const validator = new ChainValidator(oauth(['jwt', 'introspection']), { masterSeparator: '*', fetch: down });
    const error = (await validator.explain('opaque-token').catch((err: unknown) => err)) as ValidationError;
    expect(error).toBeInstanceOf(ValidationError);
    expect(error).toMatchObject({ code: 'provider_unavailable', temporary: true });
    expect(error.reports.map((r) => [r.strategy, r.verdict])).toEqual([
      ['jwt', 'skipped'],
      ['introspection', 'unavailable'],
    ]);
    // The cache never remembers a temporary failure: the next call asks the provider again.
    await expect(validator.validate('opaque-token')).rejects.toMatchObject({ code: 'provider_unavailable' });
  });
});

/**
 * The directory sources against HTTP servers that answer the way Authentik's and Keycloak's APIs
 * are documented to: the same paths, query parameters, authentication, paging and field names.
 * Then the whole chain (source, directory, state file, schedule) through a provider that goes
 * down, and a restart while it is down.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { Directory } from '../../src/directory/directory.js';
import { AuthentikSource } from '../../src/directory/sources/authentik.js';
import { DirectorySourceError } from '../../src/directory/sources/common.js';
import { KeycloakSource } from '../../src/directory/sources/keycloak.js';
import { DirectoryStore } from '../../src/directory/store.js';
import { DirectorySync } from '../../src/directory/sync.js';
import { createLogger } from '../../src/observe/logger.js';
import { keepLog, secret } from '../support/evidence.js';

interface Recorded {
  method: string;
  path: string;
  query: URLSearchParams;
  headers: IncomingMessage['headers'];
  body: string;
}

interface TestServer {
  url: string;
  requests: Recorded[];
  /** Stops answering: listening socket and open connections closed (connection refused). */
  close(): Promise<void>;
}

type Handler = (req: Recorded, res: ServerResponse) => void;

async function startServer(handler: Handler, port = 0): Promise<TestServer> {
  const requests: Recorded[] = [];
  const server: Server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const url = new URL(req.url ?? '/', 'http://localhost');
      const recorded: Recorded = {
        method: req.method ?? '',
        path: url.pathname,
        query: url.searchParams,
        headers: req.headers,
        body: Buffer.concat(chunks).toString('utf8'),
      };
      requests.push(recorded);
      handler(recorded, res);
    });
  });
  await new Promise<void>((resolve) => server.listen(port, '127.0.0.1', resolve));
  const { port: bound } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${bound}`,
    requests,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

function json(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  res.writeHead(status, { 'content-type': 'application/json', ...headers });
  res.end(JSON.stringify(body));
}

function capturedLogger() {
  let text = '';
  const destination = new Writable({
    write(chunk: Buffer, _enc, done) {
      text += chunk.toString('utf8');
      done();
    },
  });
  const logger = createLogger({ level: 'info', destination });
  return {
    logger,
    lines: () =>
      text
        .split('\n')
        .filter(Boolean)
        .map((l) => JSON.parse(l) as Record<string, unknown>),
    text: () => text,
  };
}

let workDir: string;
beforeAll(() => {
  workDir = mkdtempSync(join(tmpdir(), 'sasl-gate-dirsrc-'));
});
afterAll(() => rmSync(workDir, { recursive: true, force: true }));

// ---------------------------------------------------------------------------------------------
// Authentik: GET /api/v3/core/users/ with `Authorization: Bearer <API token>`, Django REST
// framework page-number paging (`page`, `page_size`, capped by the server's max page size), the
// answer `{ pagination: { next, previous, count, current, total_pages, start_index, end_index },
// results: [User] }` where `next` is the next page number or 0 on the last page.

interface AkUser {
  pk: number;
  username: string;
  name: string;
  is_active: boolean;
  email: string;
  attributes: Record<string, unknown>;
  groups: string[];
  type: 'internal' | 'external' | 'service_account' | 'internal_service_account';
}

class FakeAuthentik {
  readonly token: string;
  readonly groupIds = new Map<string, string>([
    ['mail-users', randomUUID()],
    ['admins', randomUUID()],
  ]);
  users: AkUser[] = [];
  maxPageSize = 100;
  /** Called before each page is answered (to change the data mid-listing). */
  beforePage: ((page: number) => void) | undefined;
  server!: TestServer;
  private nextPk = 1;

  constructor(token?: string) {
    this.token = token ?? secret(`ak-api-${randomBytes(24).toString('hex')}`, 'authentik api token');
  }

  add(u: Partial<AkUser> & { username: string }): AkUser {
    const user: AkUser = {
      pk: this.nextPk++,
      name: u.username,
      is_active: true,
      email: `${u.username}@example.test`,
      attributes: {},
      groups: ['mail-users'],
      type: 'internal',
      ...u,
    };
    this.users.push(user);
    return user;
  }

  async start(port = 0): Promise<void> {
    this.server = await startServer((req, res) => this.handle(req, res), port);
  }

  private handle(req: Recorded, res: ServerResponse): void {
    if (req.headers.authorization !== `Bearer ${this.token}`) {
      json(res, 403, { detail: 'Authentication credentials were not provided.' });
      return;
    }
    if (req.method !== 'GET' || req.path !== '/api/v3/core/users/') {
      json(res, 404, { detail: 'Not found.' });
      return;
    }
    const page = Number(req.query.get('page') ?? '1');
    this.beforePage?.(page);
    const size = Math.min(Number(req.query.get('page_size') ?? '20'), this.maxPageSize);
    const includeGroups = req.query.get('include_groups') !== 'false';
    const sorted = [...this.users].sort((a, b) => a.username.localeCompare(b.username));
    const totalPages = Math.max(1, Math.ceil(sorted.length / size));
    if (!Number.isInteger(page) || page < 1 || page > totalPages) {
      json(res, 404, { detail: 'Invalid page.' });
      return;
    }
    const slice = sorted.slice((page - 1) * size, page * size);
    json(res, 200, {
      pagination: {
        next: page < totalPages ? page + 1 : 0,
        previous: page > 1 ? page - 1 : 0,
        count: sorted.length,
        current: page,
        total_pages: totalPages,
        start_index: slice.length ? (page - 1) * size + 1 : 0,
        end_index: (page - 1) * size + slice.length,
      },
      results: slice.map((u) => ({
        pk: u.pk,
        username: u.username,
        name: u.name,
        is_active: u.is_active,
        last_login: null,
        is_superuser: false,
        groups: u.groups.map((g) => this.groupIds.get(g)),
        groups_obj: includeGroups
          ? u.groups.map((g) => ({
              pk: this.groupIds.get(g),
              num_pk: 1000 + [...this.groupIds.keys()].indexOf(g),
              name: g,
              is_superuser: g === 'admins',
              parent: null,
              parent_name: null,
              attributes: {},
            }))
          : null,
        email: u.email,
        avatar: 'data:image/svg+xml;base64,',
        attributes: u.attributes,
        uid: randomBytes(32).toString('hex'),
        path: u.type.includes('service') ? 'goauthentik.io/service-accounts' : 'users',
        type: u.type,
        uuid: `00000000-0000-4000-8000-${String(u.pk).padStart(12, '0')}`,
      })),
    });
  }
}

describe('Authentik source', () => {
  let ak: FakeAuthentik;
  beforeAll(async () => {
    ak = new FakeAuthentik();
    ak.add({ username: 'alice', attributes: { mail_aliases: ['info@example.test', 'Sales@Example.test'] } });
    ak.add({ username: 'bob', is_active: false, attributes: { mail_aliases: 'bob.b@example.test, bobby@example.test' } });
    ak.add({ username: 'carol', groups: ['admins'] });
    ak.add({ username: 'dave', email: '' });
    ak.add({ username: 'ak-outpost-1234', type: 'internal_service_account', groups: ['mail-users'] });
    ak.add({ username: 'erin', email: 'Erin@Example.test', groups: ['mail-users', 'admins'], attributes: { mail: { aliases: ['e@example.test'] } } });
    await ak.start();
  });
  afterAll(() => ak.server.close());
  afterEach(() => {
    ak.server.requests.length = 0;
    ak.beforePage = undefined;
  });

  it('pages through /api/v3/core/users/ with the token and maps users, groups and aliases', async () => {
    const source = new AuthentikSource({
      url: ak.server.url,
      token: ak.token,
      pageSize: 2,
      timeoutMs: 5000,
      aliasAttribute: 'mail_aliases',
      selection: { group: 'mail-users' },
    });
    const users = await source.fetchAll();
    expect(users).toEqual([
      {
        id: '00000000-0000-4000-8000-000000000001',
        mailbox: 'alice@example.test',
        aliases: ['info@example.test', 'sales@example.test'],
        active: true,
        groups: ['mail-users'],
      },
      {
        id: '00000000-0000-4000-8000-000000000002',
        mailbox: 'bob@example.test',
        aliases: ['bob.b@example.test', 'bobby@example.test'],
        active: false,
        groups: ['mail-users'],
      },
      { id: '00000000-0000-4000-8000-000000000006', mailbox: 'erin@example.test', aliases: [], active: true, groups: ['mail-users', 'admins'] },
    ]);
    // Six users at two per page: pages 1, 2 and 3, each asked for the same way.
    expect(ak.server.requests.map((r) => [r.method, r.path, r.query.get('page'), r.query.get('page_size'), r.query.get('include_groups')])).toEqual([
      ['GET', '/api/v3/core/users/', '1', '2', 'true'],
      ['GET', '/api/v3/core/users/', '2', '2', 'true'],
      ['GET', '/api/v3/core/users/', '3', '2', 'true'],
    ]);
    for (const r of ak.server.requests) {
      expect(r.headers.authorization).toBe(`Bearer ${ak.token}`);
      expect(r.headers.accept).toBe('application/json');
    }
  });

  it('follows the server when it caps the page size, and reads aliases from a dotted attribute path', async () => {
    ak.maxPageSize = 4;
    try {
      const source = new AuthentikSource({ url: `${ak.server.url}/`, token: ak.token, pageSize: 500, timeoutMs: 5000, aliasAttribute: 'mail.aliases' });
      const users = await source.fetchAll();
      expect(ak.server.requests.map((r) => r.query.get('page'))).toEqual(['1', '2']);
      // No selection: everybody with a mailbox except the outpost's service account.
      expect(users.map((u) => u.mailbox)).toEqual(['alice@example.test', 'bob@example.test', 'carol@example.test', 'erin@example.test']);
      expect(users.find((u) => u.mailbox === 'erin@example.test')?.aliases).toEqual(['e@example.test']);
    } finally {
      ak.maxPageSize = 100;
    }
  });

  it('can take the mailbox from the user name, and select by attribute', async () => {
    ak.users.find((u) => u.username === 'carol')!.attributes = { mailbox: true };
    const source = new AuthentikSource({
      url: ak.server.url,
      token: ak.token,
      timeoutMs: 5000,
      mailbox: { from: 'username', domain: 'mail.example.test' },
      selection: { attribute: { name: 'mailbox' } },
    });
    expect(await source.fetchAll()).toEqual([
      { id: '00000000-0000-4000-8000-000000000003', mailbox: 'carol@mail.example.test', aliases: [], active: true, groups: ['admins'] },
    ]);
  });

  it('reads the list again when a user was deleted while it paged, so nobody is skipped', async () => {
    const outpost = ak.users.find((u) => u.username === 'ak-outpost-1234')!;
    let deleted = false;
    ak.beforePage = (page) => {
      if (page === 2 && !deleted) {
        deleted = true;
        // It sorted first: everybody moves up one place, and page 2 would start after bob.
        ak.users = ak.users.filter((u) => u !== outpost);
      }
    };
    try {
      const users = await new AuthentikSource({ url: ak.server.url, token: ak.token, pageSize: 2, timeoutMs: 5000 }).fetchAll();
      expect(users.map((u) => u.mailbox)).toEqual(['alice@example.test', 'bob@example.test', 'carol@example.test', 'erin@example.test']);
      // One pass of three pages that saw the count change, then a full second pass.
      expect(ak.server.requests.map((r) => r.query.get('page'))).toEqual(['1', '2', '3', '1', '2', '3']);
    } finally {
      ak.users.push(outpost);
    }
  });

  it('rejects, without the token in the message, when the token is refused', async () => {
    const source = new AuthentikSource({ url: ak.server.url, token: secret('ak-wrong-token-123456', 'authentik api token'), timeoutMs: 5000 });
    const err = await source.fetchAll().catch((e: unknown) => e);
    expect(err).toBeInstanceOf(DirectorySourceError);
    expect((err as Error).message).toMatch(/answered 403 \(refused: a wrong token, or an account without permission to view users\)/);
    expect((err as Error).message).not.toContain('ak-wrong-token');
  });

  it('rejects when the API is not there, not up, or hangs', async () => {
    const wrongPath = new AuthentikSource({ url: `${ak.server.url}/elsewhere`, token: ak.token, timeoutMs: 5000 });
    await expect(wrongPath.fetchAll()).rejects.toThrow(/answered 404/);

    const down = await startServer(() => undefined);
    await down.close();
    await expect(new AuthentikSource({ url: down.url, token: ak.token, timeoutMs: 5000 }).fetchAll()).rejects.toThrow(/failed: fetch failed: .*ECONNREFUSED/);

    const hanging = await startServer(() => undefined);
    const started = Date.now();
    await expect(new AuthentikSource({ url: hanging.url, token: ak.token, timeoutMs: 300 }).fetchAll()).rejects.toThrow(/timed out/);
    expect(Date.now() - started).toBeLessThan(3000);
    await hanging.close();

    const garbage = await startServer((_req, res) => json(res, 200, { detail: 'maintenance' }));
    await expect(new AuthentikSource({ url: garbage.url, token: ak.token, timeoutMs: 5000 }).fetchAll()).rejects.toThrow(/did not answer a page of users/);
    await garbage.close();
  });
});

// ---------------------------------------------------------------------------------------------
// Keycloak: the realm's OpenID configuration at /realms/{realm}/.well-known/openid-configuration,
// a client credentials grant at /realms/{realm}/protocol/openid-connect/token (client_secret_basic:
// HTTP Basic with the form-urlencoded id and secret), then the admin API under
// /admin/realms/{realm}/ with the access token: /users?first=&max=&briefRepresentation=false
// (a JSON list of UserRepresentation: id, username, email, enabled, attributes as a map of string
// lists, left out when empty), /users/count, /group-by-path/{path} and /groups/{id}/members.

interface KcUser {
  id: string;
  username: string;
  email?: string;
  enabled: boolean;
  attributes?: Record<string, string[]>;
  groups: string[];
}

class FakeKeycloak {
  readonly realm = 'mail';
  readonly clientId = 'sasl-gate-directory';
  readonly clientSecret = secret(`kc-${randomBytes(16).toString('hex')}`, 'keycloak client secret');
  readonly groups = new Map<string, string>([
    ['mail-users', randomUUID()],
    ['staff', randomUUID()],
  ]);
  users: KcUser[] = [];
  tokens = new Set<string>();
  tokenRequests = 0;
  expiresIn = 300;
  server!: TestServer;

  get issuer(): string {
    return `${this.server.url}/realms/${this.realm}`;
  }

  add(u: Partial<KcUser> & { username: string }): KcUser {
    const user: KcUser = { id: randomUUID(), email: `${u.username}@example.test`, enabled: true, groups: ['mail-users'], ...u };
    this.users.push(user);
    return user;
  }

  async start(port = 0): Promise<void> {
    this.server = await startServer((req, res) => this.handle(req, res), port);
  }

  private representation(u: KcUser) {
    return {
      id: u.id,
      username: u.username,
      firstName: u.username[0]!.toUpperCase() + u.username.slice(1),
      lastName: 'Test',
      ...(u.email === undefined ? {} : { email: u.email }),
      emailVerified: true,
      ...(u.attributes && Object.keys(u.attributes).length ? { attributes: u.attributes } : {}),
      createdTimestamp: 1714000000000,
      enabled: u.enabled,
      totp: false,
      disableableCredentialTypes: [],
      requiredActions: [],
      notBefore: 0,
      access: { manageGroupMembership: true, view: true, mapRoles: true, impersonate: false, manage: true },
    };
  }

  private page(req: Recorded, list: KcUser[]): unknown[] {
    const first = Number(req.query.get('first') ?? '0');
    const max = Number(req.query.get('max') ?? '100');
    return list
      .slice()
      .sort((a, b) => a.username.localeCompare(b.username))
      .slice(first, first + max)
      .map((u) => this.representation(u));
  }

  private handle(req: Recorded, res: ServerResponse): void {
    const realmBase = `/realms/${this.realm}`;
    const adminBase = `/admin/realms/${this.realm}`;
    if (req.method === 'GET' && req.path === `${realmBase}/.well-known/openid-configuration`) {
      json(res, 200, {
        issuer: this.issuer,
        authorization_endpoint: `${this.issuer}/protocol/openid-connect/auth`,
        token_endpoint: `${this.issuer}/protocol/openid-connect/token`,
        introspection_endpoint: `${this.issuer}/protocol/openid-connect/token/introspect`,
        userinfo_endpoint: `${this.issuer}/protocol/openid-connect/userinfo`,
        jwks_uri: `${this.issuer}/protocol/openid-connect/certs`,
        grant_types_supported: ['authorization_code', 'implicit', 'refresh_token', 'password', 'client_credentials'],
        token_endpoint_auth_methods_supported: ['private_key_jwt', 'client_secret_basic', 'client_secret_post', 'tls_client_auth', 'client_secret_jwt'],
        response_types_supported: ['code'],
        subject_types_supported: ['public', 'pairwise'],
        id_token_signing_alg_values_supported: ['RS256'],
      });
      return;
    }
    if (req.method === 'POST' && req.path === `${realmBase}/protocol/openid-connect/token`) {
      this.tokenRequests += 1;
      const form = new URLSearchParams(req.body);
      let id = form.get('client_id');
      let password = form.get('client_secret');
      const basic = /^Basic (.+)$/.exec(req.headers.authorization ?? '');
      if (basic) {
        const [u, p] = Buffer.from(basic[1]!, 'base64').toString('utf8').split(':');
        id = decodeURIComponent(u ?? '');
        password = decodeURIComponent(p ?? '');
      }
      if (!String(req.headers['content-type']).startsWith('application/x-www-form-urlencoded')) {
        json(res, 400, { error: 'invalid_request' });
      } else if (id !== this.clientId || password !== this.clientSecret) {
        json(res, 401, { error: 'unauthorized_client', error_description: 'Invalid client or Invalid client credentials' });
      } else if (form.get('grant_type') !== 'client_credentials') {
        json(res, 400, { error: 'unsupported_grant_type' });
      } else {
        const token = secret(`kc-at-${randomBytes(24).toString('hex')}`, 'keycloak access token');
        this.tokens.add(token);
        json(res, 200, {
          access_token: token,
          expires_in: this.expiresIn,
          refresh_expires_in: 0,
          token_type: 'Bearer',
          'not-before-policy': 0,
          scope: 'profile email',
        });
      }
      return;
    }
    if (req.path.startsWith(`${adminBase}/`)) {
      const bearer = /^Bearer (.+)$/.exec(req.headers.authorization ?? '');
      if (!bearer || !this.tokens.has(bearer[1]!)) {
        json(res, 401, { error: 'HTTP 401 Unauthorized' });
        return;
      }
      const rest = req.path.slice(adminBase.length);
      if (rest === '/users') return json(res, 200, this.page(req, this.users));
      if (rest === '/users/count') return json(res, 200, this.users.length);
      const byPath = /^\/group-by-path\/(.+)$/.exec(rest);
      if (byPath) {
        const name = decodeURIComponent(byPath[1]!);
        const id = this.groups.get(name);
        if (!id) return json(res, 404, { error: 'Group path does not exist' });
        return json(res, 200, { id, name, path: `/${name}`, subGroupCount: 0, subGroups: [], attributes: {}, realmRoles: [], clientRoles: {}, access: {} });
      }
      const members = /^\/groups\/([^/]+)\/members$/.exec(rest);
      if (members) {
        const name = [...this.groups].find(([, id]) => id === members[1])?.[0];
        if (!name) return json(res, 404, { error: 'Could not find group by id' });
        return json(res, 200, this.page(req, this.users.filter((u) => u.groups.includes(name))));
      }
    }
    json(res, 404, { error: 'RESTEASY003210: Could not find resource for full path' });
  }
}

describe('Keycloak source', () => {
  let kc: FakeKeycloak;
  beforeAll(async () => {
    kc = new FakeKeycloak();
    kc.add({ username: 'alice', attributes: { mailAliases: ['info@example.test', 'Sales@example.test'] } });
    kc.add({ username: 'bob', enabled: false, attributes: { mailAliases: ['bob.b@example.test,bobby@example.test'] } });
    kc.add({ username: 'carol', groups: ['staff'], attributes: { mailbox: ['true'] } });
    kc.add({ username: 'dave', email: undefined });
    kc.add({ username: 'erin', groups: ['mail-users', 'staff'] });
    await kc.start();
  });
  afterAll(() => kc.server.close());
  afterEach(() => {
    kc.server.requests.length = 0;
  });

  function source(extra: Partial<ConstructorParameters<typeof KeycloakSource>[0]> = {}) {
    return new KeycloakSource({
      url: kc.server.url,
      realm: kc.realm,
      clientId: kc.clientId,
      clientSecret: kc.clientSecret,
      timeoutMs: 5000,
      pageSize: 2,
      aliasAttribute: 'mailAliases',
      ...extra,
    });
  }

  it('gets a token by client credentials and pages through the realm users with it', async () => {
    const users = await source().fetchAll();
    expect(users.map((u) => [u.mailbox, u.active, u.aliases])).toEqual([
      ['alice@example.test', true, ['info@example.test', 'sales@example.test']],
      ['bob@example.test', false, ['bob.b@example.test', 'bobby@example.test']],
      ['carol@example.test', true, []],
      ['erin@example.test', true, []],
    ]);
    expect(users[0]!.id).toBe(kc.users[0]!.id);

    const [discovery, token, ...admin] = kc.server.requests;
    expect(discovery).toMatchObject({ method: 'GET', path: '/realms/mail/.well-known/openid-configuration' });
    expect(token).toMatchObject({ method: 'POST', path: '/realms/mail/protocol/openid-connect/token' });
    expect(new URLSearchParams(token!.body).get('grant_type')).toBe('client_credentials');
    expect(token!.headers.authorization).toMatch(/^Basic /);
    expect(admin.map((r) => [r.path, r.query.get('first'), r.query.get('max'), r.query.get('briefRepresentation')])).toEqual([
      ['/admin/realms/mail/users/count', null, null, null],
      ['/admin/realms/mail/users', '0', '2', 'false'],
      ['/admin/realms/mail/users', '2', '2', 'false'],
      ['/admin/realms/mail/users', '4', '2', 'false'],
      ['/admin/realms/mail/users/count', null, null, null],
    ]);
    const issued = [...kc.tokens].at(-1);
    for (const r of admin) expect(r.headers.authorization).toBe(`Bearer ${issued}`);
  });

  it('keeps its token until it nears expiry, and renews one the server no longer accepts', async () => {
    const s = source();
    const before = kc.tokenRequests;
    await s.fetchAll();
    await s.fetchAll();
    expect(kc.tokenRequests - before).toBe(1);
    kc.tokens.clear(); // revoked, or the realm's keys rotated
    expect(await s.fetchAll()).toHaveLength(4);
    expect(kc.tokenRequests - before).toBe(2);
  });

  it('selects mail users by group through the group members endpoint', async () => {
    const users = await source({ selection: { group: 'staff' } }).fetchAll();
    expect(users.map((u) => [u.mailbox, u.groups])).toEqual([
      ['carol@example.test', ['staff']],
      ['erin@example.test', ['staff']],
    ]);
    const admin = kc.server.requests.filter((r) => r.path.startsWith('/admin/'));
    expect(admin.map((r) => r.path)).toEqual([
      '/admin/realms/mail/group-by-path/staff',
      `/admin/realms/mail/groups/${kc.groups.get('staff')}/members`,
      `/admin/realms/mail/groups/${kc.groups.get('staff')}/members`,
    ]);
    expect(admin[1]!.query.get('briefRepresentation')).toBe('false');
  });

  it('selects by attribute, and by group and attribute together', async () => {
    expect((await source({ selection: { attribute: { name: 'mailbox', value: 'true' } } }).fetchAll()).map((u) => u.mailbox)).toEqual([
      'carol@example.test',
    ]);
    expect(
      (await source({ selection: { group: 'mail-users', attribute: { name: 'mailAliases' } } }).fetchAll()).map((u) => u.mailbox),
    ).toEqual(['alice@example.test', 'bob@example.test']);
  });

  it('fails for a group that does not exist, instead of answering nobody', async () => {
    await expect(source({ selection: { group: 'mail-userz' } }).fetchAll()).rejects.toThrow(/has no group mail-userz/);
  });

  it('works with client_secret_post too', async () => {
    expect(await source({ clientAuthMethod: 'client_secret_post' }).fetchAll()).toHaveLength(4);
    const token = kc.server.requests.find((r) => r.path.endsWith('/token'))!;
    expect(token.headers.authorization).toBeUndefined();
    expect(new URLSearchParams(token.body).get('client_id')).toBe(kc.clientId);
  });

  it('rejects, without the secret in the message, when the client is refused', async () => {
    const err = await source({ clientSecret: secret('kc-wrong-secret-98765', 'keycloak client secret') })
      .fetchAll()
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(DirectorySourceError);
    expect((err as Error).message).toMatch(/client credentials grant .* failed/);
    expect((err as Error).message).not.toContain('kc-wrong-secret');
  });

  it('rejects when the realm is wrong or Keycloak is down', async () => {
    await expect(source({ realm: 'nope' }).fetchAll()).rejects.toThrow(/OpenID discovery .* failed/);
    const down = await startServer(() => undefined);
    await down.close();
    await expect(source({ url: down.url }).fetchAll()).rejects.toBeInstanceOf(DirectorySourceError);
  });
});

// ---------------------------------------------------------------------------------------------

describe('the directory fed by a provider that goes down', () => {
  it('Authentik: serves the last good set while the provider is down, also after a restart', async () => {
    const ak = new FakeAuthentik();
    ak.add({ username: 'alice', attributes: { mail_aliases: ['info@example.test'] } });
    ak.add({ username: 'bob' });
    ak.add({ username: 'carol' });
    await ak.start();
    const port = Number(new URL(ak.server.url).port);
    const stateFile = join(workDir, 'authentik', 'directory.json');
    const log = capturedLogger();
    const clock = { offset: 0 };
    const make = () => {
      const directory = new Directory({ graceSeconds: 3600, maxRemovalShare: 0.2, now: () => Date.now() + clock.offset });
      const sync = new DirectorySync({
        directory,
        source: new AuthentikSource({ url: ak.server.url, token: ak.token, timeoutMs: 2000, aliasAttribute: 'mail_aliases', selection: { group: 'mail-users' } }),
        store: new DirectoryStore(stateFile),
        intervalSeconds: 3600,
        logger: log.logger,
      });
      return { directory, sync };
    };

    try {
      const first = make();
      expect(await first.sync.start()).toMatchObject({ ok: true, result: { applied: true, added: 3 } });
      expect(first.directory.lookup('info@example.test')).toMatchObject({ kind: 'alias', user: { mailbox: 'alice@example.test' } });

      // The admin disables bob, gives carol an alias, and creates dave, who never logged in.
      ak.users.find((u) => u.username === 'bob')!.is_active = false;
      ak.users.find((u) => u.username === 'carol')!.attributes = { mail_aliases: 'c@example.test' };
      ak.add({ username: 'dave' });
      expect(await first.sync.syncNow()).toMatchObject({ ok: true, result: { applied: true, added: 1, disabled: 1, changed: 1 } });
      expect(first.directory.isLoginAllowed('bob@example.test')).toBe(false);
      expect(first.directory.lookup('bob@example.test').kind).toBe('grace');
      expect(first.directory.lookup('c@example.test')).toMatchObject({ kind: 'alias', user: { mailbox: 'carol@example.test' } });
      expect(first.directory.lookup('dave@example.test').kind).toBe('mailbox');

      await ak.server.close();
      expect(await first.sync.syncNow()).toMatchObject({ ok: false, error: expect.stringMatching(/^GET .* failed: /) });
      expect(first.directory.lookup('dave@example.test').kind).toBe('mailbox');
      expect(first.directory.isLoginAllowed('alice@example.test')).toBe(true);
      first.sync.stop();

      // Restart with the provider still down: the saved set, grace period included.
      clock.offset = 60_000;
      const second = make();
      expect(await second.sync.start()).toMatchObject({ ok: false });
      second.sync.stop();
      for (const address of ['alice@example.test', 'info@example.test', 'c@example.test', 'dave@example.test', 'nobody@example.test']) {
        expect(second.directory.lookup(address)).toEqual(first.directory.lookup(address));
      }
      expect(second.directory.lookup('bob@example.test').kind).toBe('grace');
      expect(second.directory.isLoginAllowed('bob@example.test')).toBe(false);
      expect(second.directory.isLoginAllowed('c@example.test')).toBe(true);

      // The provider comes back, on the same address, answering an empty group by mistake: held.
      const emptied = new FakeAuthentik(ak.token);
      await emptied.start(port);
      try {
        expect(await second.sync.syncNow()).toMatchObject({ ok: true, result: { applied: false, removals: 3, activeBefore: 3 } });
        expect(second.directory.lookup('alice@example.test').kind).toBe('mailbox');
      } finally {
        await emptied.server.close();
      }

      const messages = log.lines().map((l) => l['msg']);
      expect(messages).toContain('directory sync failed; serving the last good set');
      expect(messages).toContain('directory loaded from the state file');
      expect(messages).toContain('directory sync held back: it would remove too many users; serving the previous set until a sync is forced');
      expect(log.text()).not.toContain(ak.token);
    } finally {
      keepLog(log.text(), 'directory-authentik');
      await ak.server.close().catch(() => undefined);
    }
  });

  it('Keycloak: serves the last good set while the provider is down, also after a restart', async () => {
    const kc = new FakeKeycloak();
    kc.add({ username: 'alice', attributes: { mailAliases: ['info@example.test'] } });
    kc.add({ username: 'bob' });
    await kc.start();
    const stateFile = join(workDir, 'keycloak', 'directory.json');
    const log = capturedLogger();
    const make = () => {
      const directory = new Directory({ graceSeconds: 0, maxRemovalShare: 0.2 });
      const sync = new DirectorySync({
        directory,
        source: new KeycloakSource({
          url: kc.server.url,
          realm: kc.realm,
          clientId: kc.clientId,
          clientSecret: kc.clientSecret,
          timeoutMs: 2000,
          aliasAttribute: 'mailAliases',
          selection: { group: 'mail-users' },
        }),
        store: new DirectoryStore(stateFile),
        intervalSeconds: 3600,
        logger: log.logger,
      });
      return { directory, sync };
    };
    try {
      const first = make();
      expect(await first.sync.start()).toMatchObject({ ok: true, result: { applied: true, added: 2 } });
      kc.users.find((u) => u.username === 'bob')!.enabled = false;
      kc.add({ username: 'carol' });
      await first.sync.syncNow();
      // No grace configured: bob's mail stops with his login.
      expect(first.directory.lookup('bob@example.test').kind).toBe('unknown');
      expect(first.directory.isLoginAllowed('bob@example.test')).toBe(false);
      expect(first.directory.lookup('carol@example.test').kind).toBe('mailbox');

      await kc.server.close();
      expect(await first.sync.syncNow()).toMatchObject({ ok: false });
      first.sync.stop();

      const second = make();
      expect(await second.sync.start()).toMatchObject({ ok: false });
      second.sync.stop();
      expect(second.directory.lookup('INFO@example.test')).toMatchObject({ kind: 'alias', user: { mailbox: 'alice@example.test' } });
      expect(second.directory.lookup('carol@example.test').kind).toBe('mailbox');
      expect(second.directory.lookup('bob@example.test').kind).toBe('unknown');
      expect(second.directory.isLoginAllowed('carol@example.test')).toBe(true);
      expect(log.text()).not.toContain(kc.clientSecret);
    } finally {
      keepLog(log.text(), 'directory-keycloak');
      await kc.server.close().catch(() => undefined);
    }
  });
});

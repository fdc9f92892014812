/**
 * The SCIM 2.0 endpoint, driven over real HTTP with the requests identity providers send:
 * Authentik's SCIM provider (ServiceProviderConfig, POST /Users, 409 then `filter=userName eq <name>`,
 * PUT /Users/{id}, DELETE, /Groups with PATCH member operations), and the PATCH forms of other
 * providers (Entra ID's capitalised ops and "False" strings, filtered email paths). Responses must
 * follow RFC 7643/7644: status codes, ListResponse, the error schema, Location, content type.
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { GateError } from '../../../src/errors.js';
import {
  createScimHandler,
  parsePatchPath,
  parseScimFilter,
  ScimError,
  scimUserId,
  SCIM_ERROR,
  SCIM_LIST_RESPONSE,
  SCIM_MAIL_EXTENSION,
  SCIM_PATCH_OP,
  SCIM_USER_SCHEMA,
  type ScimOptions,
} from '../../../src/directory/scim.js';
import { MemoryDirectory } from '../../support/memory-directory.js';


const TOKEN = 'scim-token-0123456789abcdef-please-keep-secret';

/** What Authentik's SCIM provider POSTs for a user with its default property mapping. */
function authentikUser(username: string, email: string, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    schemas: [SCIM_USER_SCHEMA],
    userName: username,
    name: { formatted: 'Carol Jones', givenName: 'Carol', familyName: 'Jones' },
    displayName: 'Carol Jones',
    photos: [],
    active: true,
    emails: [{ value: email, type: 'other', primary: true }],
    externalId: 'c7b1f8a0d2e94c1f9a3b5d7e9f1a2b3c',
    ...extra,
  };
}

interface Reply {
  status: number;
  headers: Headers;
  body: any; // eslint-disable-line @typescript-eslint/no-explicit-any
}

describe('SCIM endpoint', () => {
  let server: Server;
  let base: string;
  let directory: MemoryDirectory;
  let changes: string[][];
  let logs: unknown[];

  const start = async (options: Partial<ScimOptions> = {}): Promise<void> => {
    const record = (...args: unknown[]): void => {
      logs.push(args);
    };
    const handler = createScimHandler(directory, {
      token: TOKEN,
      domains: ['example.test'],
      onChange: (ids) => changes.push(ids),
      log: { info: record, warn: record, debug: record },
      ...options,
    });
    server = createServer(handler);
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    base = `http://127.0.0.1:${(server.address() as AddressInfo).port}/scim/v2`;
  };

  beforeEach(async () => {
    directory = new MemoryDirectory(3_600_000);
    changes = [];
    logs = [];
    await start();
  });

  afterEach(async () => {
    await new Promise<void>((resolve) => server.close(() => resolve()));
    // The token never reaches a log line.
    expect(JSON.stringify(logs)).not.toContain(TOKEN);
  });

  const call = async (method: string, path: string, body?: unknown, token: string | null = TOKEN, raw?: string): Promise<Reply> => {
    const headers: Record<string, string> = { accept: 'application/scim+json' };
    if (token !== null) headers.authorization = `Bearer ${token}`;
    if (body !== undefined || raw !== undefined) headers['content-type'] = 'application/scim+json';
    const res = await fetch(`${base}${path}`, {
      method,
      headers,
      ...(raw !== undefined ? { body: raw } : body === undefined ? {} : { body: JSON.stringify(body) }),
    });
    const text = await res.text();
    return { status: res.status, headers: res.headers, body: text === '' ? undefined : JSON.parse(text) };
  };

  const patch = (id: string, ...operations: unknown[]): Promise<Reply> =>
    call('PATCH', `/Users/${id}`, { schemas: [SCIM_PATCH_OP], Operations: operations });

  const expectError = (reply: Reply, status: number, scimType?: string): void => {
    expect(reply.status).toBe(status);
    expect(reply.headers.get('content-type')).toMatch(/^application\/scim\+json/);
    expect(reply.body.schemas).toEqual([SCIM_ERROR]);
    expect(reply.body.status).toBe(String(status));
    expect(typeof reply.body.detail).toBe('string');
    if (scimType !== undefined) expect(reply.body.scimType).toBe(scimType);
  };

  const create = async (username = 'carol', email = 'carol@example.test', extra: Record<string, unknown> = {}): Promise<string> => {
    const reply = await call('POST', '/Users', authentikUser(username, email, extra));
    expect(reply.status).toBe(201);
    return reply.body.id as string;
  };

  describe('discovery', () => {
    it('serves the ServiceProviderConfig Authentik reads first: PATCH and filters supported, no bulk', async () => {
      const reply = await call('GET', '/ServiceProviderConfig');
      expect(reply.status).toBe(200);
      expect(reply.headers.get('content-type')).toMatch(/^application\/scim\+json/);
      expect(reply.body).toMatchObject({
        schemas: ['urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig'],
        patch: { supported: true },
        bulk: { supported: false, maxOperations: 0 },
        filter: { supported: true, maxResults: 1000 },
        changePassword: { supported: false },
        sort: { supported: false },
        etag: { supported: false },
        authenticationSchemes: [{ type: 'oauthbearertoken', primary: true }],
      });
    });

    it('lists the User and Group resource types and the schemas, sasl-gate\'s extension included', async () => {
      const types = await call('GET', '/ResourceTypes');
      expect(types.body.schemas).toEqual([SCIM_LIST_RESPONSE]);
      expect(types.body.Resources.map((t: { id: string }) => t.id)).toEqual(['User', 'Group']);
      expect(types.body.Resources[0].schemaExtensions).toEqual([{ schema: SCIM_MAIL_EXTENSION, required: false }]);
      expect((await call('GET', '/ResourceTypes/User')).body.endpoint).toBe('/Users');
      const schemas = await call('GET', '/Schemas');
      expect(schemas.body.totalResults).toBe(3);
      const ext = await call('GET', `/Schemas/${SCIM_MAIL_EXTENSION}`);
      expect(ext.body.attributes[0].name).toBe('aliases');
      expectError(await call('GET', '/Schemas/urn:nope'), 404);
    });
  });

  describe('authentication', () => {
    it('refuses a missing, wrong or differently long token with 401, a WWW-Authenticate header and the error schema', async () => {
      for (const token of [null, 'wrong', `${TOKEN}x`, TOKEN.slice(0, -1), '']) {
        const reply = await call('GET', '/Users', undefined, token);
        expectError(reply, 401);
        expect(reply.headers.get('www-authenticate')).toMatch(/^Bearer /);
      }
      const basic = await fetch(`${base}/Users`, { headers: { authorization: `Basic ${Buffer.from(`x:${TOKEN}`).toString('base64')}` } });
      expect(basic.status).toBe(401);
      expect(directory.users.size).toBe(0);
      // The scheme name is case-insensitive.
      const lower = await fetch(`${base}/Users`, { headers: { authorization: `bearer ${TOKEN}` } });
      expect(lower.status).toBe(200);
    });

    it('refuses writes without the token', async () => {
      const reply = await call('POST', '/Users', authentikUser('carol', 'carol@example.test'), 'nope');
      expect(reply.status).toBe(401);
      expect(directory.users.size).toBe(0);
    });
  });

  describe('users, as Authentik pushes them', () => {
    it('creates a user: 201, Location, the resource back; mailbox from the primary email', async () => {
      const reply = await call('POST', '/Users', authentikUser('carol', 'Carol@Example.test'));
      expect(reply.status).toBe(201);
      expect(reply.headers.get('content-type')).toMatch(/^application\/scim\+json/);
      const id = reply.body.id as string;
      expect(id).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/);
      expect(reply.headers.get('location')).toBe(`${base}/Users/${id}`);
      expect(reply.body).toMatchObject({
        schemas: [SCIM_USER_SCHEMA, SCIM_MAIL_EXTENSION],
        id,
        externalId: 'c7b1f8a0d2e94c1f9a3b5d7e9f1a2b3c',
        userName: 'carol',
        name: { formatted: 'Carol Jones', givenName: 'Carol', familyName: 'Jones' },
        displayName: 'Carol Jones',
        active: true,
        emails: [{ value: 'carol@example.test', type: 'other', primary: true }],
        groups: [],
        meta: { resourceType: 'User', location: `${base}/Users/${id}` },
      });
      expect(Date.parse(reply.body.meta.created)).not.toBeNaN();
      expect(directory.users.get(id)).toEqual({ id, mailbox: 'carol@example.test', aliases: [], active: true, groups: [] });
      expect(changes).toEqual([[id]]);
      // GET returns the same resource.
      const got = await call('GET', `/Users/${id}`);
      expect(got.status).toBe(200);
      expect(got.body).toEqual(reply.body);
    });

    it('answers a second POST of the same userName 409, and the lookup Authentik then makes (unquoted filter) finds it', async () => {
      const id = await create();
      const again = await call('POST', '/Users', authentikUser('carol', 'carol@example.test'));
      expectError(again, 409, 'uniqueness');
      // Authentik builds this filter without quotes: `userName eq carol`.
      const found = await call('GET', `/Users?${new URLSearchParams({ filter: 'userName eq carol' })}`);
      expect(found.status).toBe(200);
      expect(found.body).toMatchObject({ schemas: [SCIM_LIST_RESPONSE], totalResults: 1, startIndex: 1, itemsPerPage: 1 });
      expect(found.body.Resources[0].id).toBe(id);
    });

    it('filters by userName (quoted, any case), externalId and email; an unknown name gives an empty list', async () => {
      const id = await create();
      await create('dave', 'dave@example.test', { externalId: 'ext-dave' });
      const q = async (filter: string): Promise<Reply> => call('GET', `/Users?${new URLSearchParams({ filter })}`);
      expect((await q('userName eq "CAROL"')).body.Resources.map((r: { id: string }) => r.id)).toEqual([id]);
      expect((await q('urn:ietf:params:scim:schemas:core:2.0:User:userName eq "carol"')).body.totalResults).toBe(1);
      expect((await q('externalId eq "ext-dave"')).body.Resources[0].userName).toBe('dave');
      expect((await q('emails.value eq "carol@example.test"')).body.Resources[0].id).toBe(id);
      const none = await q('userName eq "nobody"');
      expect(none.status).toBe(200);
      expect(none.body).toEqual({ schemas: [SCIM_LIST_RESPONSE], totalResults: 0, startIndex: 1, itemsPerPage: 0, Resources: [] });
      expectError(await q('userName co "car"'), 400, 'invalidFilter');
      expectError(await q('title eq "x"'), 400, 'invalidFilter');
      expectError(await q('userName eq "unterminated'), 400, 'invalidFilter');
    });

    it('pages with startIndex and count', async () => {
      for (const n of ['a', 'b', 'c']) await create(n, `${n}@example.test`);
      const page = await call('GET', '/Users?startIndex=2&count=1');
      expect(page.body).toMatchObject({ totalResults: 3, startIndex: 2, itemsPerPage: 1 });
      expect(page.body.Resources[0].userName).toBe('b');
      const counted = await call('GET', '/Users?count=0');
      expect(counted.body).toMatchObject({ totalResults: 3, itemsPerPage: 0, Resources: [] });
      const all = await call('GET', '/Users');
      expect(all.body.Resources).toHaveLength(3);
    });

    it('replaces a user with PUT: other emails become aliases, active=false disables, groups are kept', async () => {
      const id = await create();
      directory.upsert({ ...directory.users.get(id)!, groups: ['mail-users'] });
      const reply = await call(
        'PUT',
        `/Users/${id}`,
        authentikUser('carol', 'carol@example.test', {
          id,
          active: false,
          emails: [
            { value: 'carol@example.test', type: 'other', primary: true },
            { value: 'C.Jones@example.test', type: 'work' },
            { value: 'carol@elsewhere.example', type: 'home' },
          ],
        }),
      );
      expect(reply.status).toBe(200);
      expect(reply.body.active).toBe(false);
      expect(reply.body.groups).toEqual([expect.objectContaining({ display: 'mail-users' })]);
      expect(directory.users.get(id)).toEqual({
        id,
        mailbox: 'carol@example.test',
        // Addresses outside the mail domains are ignored.
        aliases: ['c.jones@example.test'],
        active: false,
        groups: ['mail-users'],
      });
      expectError(await call('PUT', '/Users/00000000-0000-0000-0000-000000000000', authentikUser('x', 'x@example.test')), 404);
    });

    it('deletes a user: 204, then 404 on GET and on a second DELETE', async () => {
      const id = await create();
      const reply = await call('DELETE', `/Users/${id}`);
      expect(reply.status).toBe(204);
      expect(reply.body).toBeUndefined();
      expect(directory.users.has(id)).toBe(false);
      expectError(await call('GET', `/Users/${id}`), 404);
      expectError(await call('DELETE', `/Users/${id}`), 404);
      expect(changes.at(-1)).toEqual([id]);
    });

    it('takes the userName as the mailbox when there is no email, and refuses a user without any usable address', async () => {
      const reply = await call('POST', '/Users', { schemas: [SCIM_USER_SCHEMA], userName: 'Erin@example.test' });
      expect(reply.status).toBe(201);
      expect(directory.users.get(reply.body.id)?.mailbox).toBe('erin@example.test');
      expect(reply.body.active).toBe(true);
      expectError(await call('POST', '/Users', { schemas: [SCIM_USER_SCHEMA], userName: 'frank' }), 400, 'invalidValue');
      expectError(await call('POST', '/Users', authentikUser('gina', 'gina@elsewhere.example')), 400, 'invalidValue');
      expectError(await call('POST', '/Users', authentikUser('hank', 'not an address')), 400, 'invalidValue');
      expectError(await call('POST', '/Users', authentikUser('ian', 'ian:x@example.test')), 400, 'invalidValue');
      expectError(await call('POST', '/Users', { schemas: [SCIM_USER_SCHEMA], emails: [{ value: 'x@example.test' }] }), 400, 'invalidValue');
      expectError(await call('POST', '/Users', { ...authentikUser('jo', 'jo@example.test'), active: 'maybe' }), 400, 'invalidValue');
    });

    it('answers 400 when the directory refuses the user as input, 500 when it fails', async () => {
      const upsert = directory.upsert.bind(directory);
      directory.upsert = () => {
        throw new GateError('directory_invalid_user', 'the mailbox is not a usable address', { clientMessage: 'the mailbox is not a usable address' });
      };
      const refused = await call('POST', '/Users', authentikUser('carol', 'carol@example.test'));
      expectError(refused, 400, 'invalidValue');
      expect(refused.body.detail).toBe('the mailbox is not a usable address');
      directory.upsert = () => {
        throw new Error('disk full at /var/lib/secret-path');
      };
      const failed = await call('POST', '/Users', authentikUser('carol', 'carol@example.test'));
      expectError(failed, 500);
      expect(failed.body.detail).toBe('internal error');
      directory.upsert = upsert;
      expect((await call('POST', '/Users', authentikUser('carol', 'carol@example.test'))).status).toBe(201);
    });

    it('refuses an address that belongs to another user with 409', async () => {
      await create();
      const reply = await call(
        'POST',
        '/Users',
        authentikUser('dave', 'dave@example.test', { emails: [{ value: 'dave@example.test', primary: true }, { value: 'carol@example.test' }] }),
      );
      expectError(reply, 409, 'uniqueness');
      expect([...directory.users.values()].map((u) => u.mailbox)).toEqual(['carol@example.test']);
    });

    it('refuses the addresses of a disabled user, but gives those of a removed one (still in grace) to a new user', async () => {
      const carol = await create();
      await patch(carol, { op: 'replace', path: 'active', value: false });
      expectError(await call('POST', '/Users', authentikUser('carol2', 'carol@example.test')), 409, 'uniqueness');
      expect((await call('DELETE', `/Users/${carol}`)).status).toBe(204);
      const reply = await call('POST', '/Users', authentikUser('carol2', 'carol@example.test'));
      expect(reply.status).toBe(201);
      expect(directory.users.get(reply.body.id)?.mailbox).toBe('carol@example.test');
    });

    it('reads aliases from sasl-gate\'s extension', async () => {
      const id = await create('carol', 'carol@example.test', { [SCIM_MAIL_EXTENSION]: { aliases: ['Info@example.test', 'sales@example.test'] } });
      expect(directory.users.get(id)?.aliases).toEqual(['info@example.test', 'sales@example.test']);
      const got = await call('GET', `/Users/${id}`);
      expect(got.body[SCIM_MAIL_EXTENSION]).toEqual({ aliases: ['info@example.test', 'sales@example.test'] });
    });

    it('takes group names from a groups attribute when a provider sends one', async () => {
      const id = await create('carol', 'carol@example.test', { groups: [{ value: 'g1', display: 'mail-users' }, { display: 'staff' }] });
      expect(directory.users.get(id)?.groups).toEqual(['mail-users', 'staff']);
    });

    it('refuses bad bodies: invalid JSON, not an object, too large', async () => {
      expectError(await call('POST', '/Users', undefined, TOKEN, '{"userName": '), 400, 'invalidSyntax');
      expectError(await call('POST', '/Users', ['x']), 400, 'invalidSyntax');
      await new Promise<void>((resolve) => server.close(() => resolve()));
      await start({ maxBodyBytes: 2_000 });
      const big = authentikUser('carol', 'carol@example.test', { displayName: 'x'.repeat(5_000) });
      const reply = await call('POST', '/Users', big);
      expectError(reply, 413);
      expect(directory.users.size).toBe(0);
    });

    it('answers 400 to a malformed percent escape in the path, and goes on serving', async () => {
      const id = await create();
      for (const path of ['/Users/%zz', '/Users/%', '/Users/%E0%A4', `/Users/${id}%ZZ`, '/%C0%AF/x']) {
        const reply = await call('GET', path);
        expectError(reply, 400, 'invalidSyntax');
        expect(reply.body.detail).toMatch(/percent-encoding/);
      }
      expect((await call('DELETE', '/Users/%E0%A4')).status).toBe(400);
      expect(directory.users.size).toBe(1);
      // A well-formed escape still decodes.
      expect((await call('GET', `/Users/${encodeURIComponent(id)}`)).status).toBe(200);
      expect(JSON.stringify(logs)).not.toMatch(/"status":500/);
    });

    it('refuses clients outside allowFrom with 403, whatever the token', async () => {
      await new Promise<void>((resolve) => server.close(() => resolve()));
      await start({ allowFrom: ['192.0.2.0/24', '2001:db8::/32'] });
      expectError(await call('GET', '/Users'), 403);
      expectError(await call('POST', '/Users', authentikUser('mallory', 'mallory@example.test')), 403);
      expect(directory.users.size).toBe(0);
      await new Promise<void>((resolve) => server.close(() => resolve()));
      await start({ allowFrom: ['127.0.0.0/8'] });
      expect((await call('GET', '/Users')).status).toBe(200);
      await create();
      expect(directory.users.size).toBe(1);
    });

    it('answers 404 for unknown resources and paths outside the base path, 405 and 501 where due', async () => {
      expectError(await call('GET', '/Users/nope'), 404);
      expectError(await call('GET', '/Widgets'), 404);
      const outside = await fetch(base.replace('/scim/v2', '/other'), { headers: { authorization: `Bearer ${TOKEN}` } });
      expect(outside.status).toBe(404);
      expectError(await call('DELETE', '/Users'), 405);
      expectError(await call('POST', '/Bulk', { schemas: ['urn:ietf:params:scim:api:messages:2.0:BulkRequest'], Operations: [] }), 501);
    });

    it('searches with POST /Users/.search', async () => {
      const id = await create();
      const reply = await call('POST', '/Users/.search', {
        schemas: ['urn:ietf:params:scim:api:messages:2.0:SearchRequest'],
        filter: 'userName eq "carol"',
        startIndex: 1,
        count: 10,
      });
      expect(reply.status).toBe(200);
      expect(reply.body.Resources[0].id).toBe(id);
    });
  });

  describe('PATCH', () => {
    it('disables and re-enables with path active (Authentik-style booleans and Entra-style "False")', async () => {
      const id = await create();
      const off = await patch(id, { op: 'replace', path: 'active', value: false });
      expect(off.status).toBe(200);
      expect(off.body.active).toBe(false);
      expect(directory.users.get(id)?.active).toBe(false);
      expect((await patch(id, { op: 'Replace', path: 'active', value: 'True' })).body.active).toBe(true);
      expect((await patch(id, { op: 'Replace', path: 'active', value: 'False' })).body.active).toBe(false);
      expect(directory.users.get(id)?.active).toBe(false);
      // Without a path, as Entra ID also sends it.
      expect((await patch(id, { op: 'replace', value: { active: true } })).body.active).toBe(true);
      expect(changes.length).toBe(5);
    });

    it('adds, replaces and removes emails, with and without value filters', async () => {
      const id = await create();
      await patch(id, { op: 'add', path: 'emails', value: [{ value: 'info@example.test', type: 'other' }] });
      expect(directory.users.get(id)?.aliases).toEqual(['info@example.test']);
      await patch(id, { op: 'add', path: 'emails', value: [{ value: 'sales@example.test' }] });
      expect(directory.users.get(id)?.aliases).toEqual(['info@example.test', 'sales@example.test']);
      await patch(id, { op: 'remove', path: 'emails[value eq "info@example.test"]' });
      expect(directory.users.get(id)?.aliases).toEqual(['sales@example.test']);
      // Entra ID's form: the work address set through a filtered path (created when missing).
      await patch(id, { op: 'replace', path: 'emails[type eq "work"].value', value: 'carol.jones@example.test' });
      expect(directory.users.get(id)?.aliases).toEqual(['carol.jones@example.test', 'sales@example.test']);
      // Replace the whole list: the new primary becomes the mailbox.
      const replaced = await patch(id, { op: 'replace', path: 'emails', value: [{ value: 'cj@example.test', primary: true }] });
      expect(replaced.status).toBe(200);
      expect(directory.users.get(id)).toMatchObject({ mailbox: 'cj@example.test', aliases: [] });
      expect(replaced.body.emails).toEqual([{ value: 'cj@example.test', primary: true }]);
      // Removing every address leaves no mailbox unless the userName is one.
      expectError(await patch(id, { op: 'remove', path: 'emails' }), 400, 'invalidValue');
      expect(directory.users.get(id)?.mailbox).toBe('cj@example.test');
    });

    it('adds and removes aliases of the extension, by path and by an object without a path', async () => {
      const id = await create();
      await patch(id, { op: 'add', path: `${SCIM_MAIL_EXTENSION}:aliases`, value: ['info@example.test'] });
      await patch(id, { op: 'add', value: { [SCIM_MAIL_EXTENSION]: { aliases: ['help@example.test'] } } });
      expect(directory.users.get(id)?.aliases).toEqual(['help@example.test', 'info@example.test']);
      await patch(id, { op: 'remove', path: `${SCIM_MAIL_EXTENSION}:aliases`, value: ['info@example.test'] });
      expect(directory.users.get(id)?.aliases).toEqual(['help@example.test']);
      await patch(id, { op: 'remove', path: `${SCIM_MAIL_EXTENSION}:aliases` });
      expect(directory.users.get(id)?.aliases).toEqual([]);
    });

    it('changes userName, name and displayName, keyed by paths inside a value object too', async () => {
      const id = await create();
      const reply = await patch(
        id,
        { op: 'replace', path: 'userName', value: 'cjones' },
        { op: 'replace', value: { 'name.givenName': 'Caroline', displayName: 'Caroline Jones' } },
        { op: 'add', path: 'title', value: 'Engineer' },
        { op: 'replace', path: 'urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department', value: 'R&D' },
      );
      expect(reply.status).toBe(200);
      expect(reply.body).toMatchObject({ userName: 'cjones', displayName: 'Caroline Jones', name: { givenName: 'Caroline', familyName: 'Jones' } });
      // The id stays; the new name finds it.
      const found = await call('GET', `/Users?${new URLSearchParams({ filter: 'userName eq "cjones"' })}`);
      expect(found.body.Resources[0].id).toBe(id);
      expectError(await patch(id, { op: 'remove', path: 'userName' }), 400, 'mutability');
    });

    it('refuses malformed PatchOp bodies', async () => {
      const id = await create();
      expectError(await call('PATCH', `/Users/${id}`, { schemas: [SCIM_PATCH_OP] }), 400, 'invalidSyntax');
      expectError(await call('PATCH', `/Users/${id}`, { schemas: [SCIM_USER_SCHEMA], Operations: [] }), 400, 'invalidSyntax');
      expectError(await patch(id, { op: 'move', path: 'active', value: false }), 400, 'invalidSyntax');
      expectError(await patch(id, { op: 'remove' }), 400, 'noTarget');
      expectError(await patch(id, { op: 'replace', path: 'emails[[x', value: 'y' }), 400, 'invalidPath');
      expectError(await patch(id, { op: 'replace', path: 'active', value: 'perhaps' }), 400, 'invalidValue');
      expectError(await patch('nope', { op: 'replace', path: 'active', value: false }), 404);
      // Nothing changed on failure.
      expect(directory.users.get(id)?.active).toBe(true);
    });
  });

  describe('groups, as Authentik pushes them with PATCH support', () => {
    it('creates a group, adds and removes members with PATCH, and reflects them in the users', async () => {
      const carol = await create();
      const dave = await create('dave', 'dave@example.test');
      // Authentik creates the group without members, then adds them with PATCH.
      const created = await call('POST', '/Groups', {
        schemas: ['urn:ietf:params:scim:schemas:core:2.0:Group'],
        displayName: 'mail-users',
        externalId: 'f0e1d2c3',
      });
      expect(created.status).toBe(201);
      const gid = created.body.id as string;
      expect(created.headers.get('location')).toBe(`${base}/Groups/${gid}`);
      // `members` is present even when empty: Authentik compares against it.
      expect(created.body).toMatchObject({ displayName: 'mail-users', externalId: 'f0e1d2c3', members: [] });

      const add = await call('PATCH', `/Groups/${gid}`, {
        schemas: [SCIM_PATCH_OP],
        Operations: [
          { op: 'add', path: 'members', value: [{ value: carol }] },
          { op: 'add', path: 'members', value: [{ value: dave }] },
        ],
      });
      expect(add.status).toBe(200);
      expect(add.body.members.map((m: { value: string }) => m.value).sort()).toEqual([carol, dave].sort());
      expect(directory.users.get(carol)?.groups).toEqual(['mail-users']);
      expect((await call('GET', `/Users/${carol}`)).body.groups).toEqual([
        { value: gid, display: 'mail-users', $ref: `${base}/Groups/${gid}` },
      ]);

      await call('PATCH', `/Groups/${gid}`, { schemas: [SCIM_PATCH_OP], Operations: [{ op: 'remove', path: 'members', value: [{ value: dave }] }] });
      expect(directory.users.get(dave)?.groups).toEqual([]);
      // Entra ID's form of the same.
      await call('PATCH', `/Groups/${gid}`, { schemas: [SCIM_PATCH_OP], Operations: [{ op: 'Remove', path: `members[value eq "${carol}"]` }] });
      expect(directory.users.get(carol)?.groups).toEqual([]);

      const got = await call('GET', `/Groups/${gid}`);
      expect(got.body.members).toEqual([]);
      const filtered = await call('GET', `/Groups?${new URLSearchParams({ filter: 'displayName eq "mail-users"' })}`);
      expect(filtered.body.Resources.map((g: { id: string }) => g.id)).toEqual([gid]);
    });

    it('takes Authentik\'s attribute update: PATCH replace without a path, the whole group as value', async () => {
      const carol = await create();
      const gid = (await call('POST', '/Groups', { displayName: 'staff', members: [{ value: carol }] })).body.id as string;
      const reply = await call('PATCH', `/Groups/${gid}`, {
        schemas: [SCIM_PATCH_OP],
        Operations: [
          {
            op: 'replace',
            value: { schemas: ['urn:ietf:params:scim:schemas:core:2.0:Group'], id: gid, displayName: 'mail-users', externalId: 'f0e1', $ref: 'x' },
          },
        ],
      });
      expect(reply.status).toBe(200);
      expect(reply.body).toMatchObject({ id: gid, displayName: 'mail-users', externalId: 'f0e1' });
      expect(reply.body.members.map((m: { value: string }) => m.value)).toEqual([carol]);
      expect(directory.users.get(carol)?.groups).toEqual(['mail-users']);
    });

    it('renames a group with PUT (setting members exactly) and deletes it', async () => {
      const carol = await create();
      const dave = await create('dave', 'dave@example.test');
      const gid = (await call('POST', '/Groups', { displayName: 'staff', members: [{ value: carol }] })).body.id as string;
      expect(directory.users.get(carol)?.groups).toEqual(['staff']);
      const put = await call('PUT', `/Groups/${gid}`, { displayName: 'mail-users', members: [{ value: dave }] });
      expect(put.status).toBe(200);
      expect(put.body.id).toBe(gid);
      expect(directory.users.get(carol)?.groups).toEqual([]);
      expect(directory.users.get(dave)?.groups).toEqual(['mail-users']);
      expect((await call('DELETE', `/Groups/${gid}`)).status).toBe(204);
      expect(directory.users.get(dave)?.groups).toEqual([]);
      expectError(await call('GET', `/Groups/${gid}`), 404);
    });
  });

  describe('after a restart (a new handler over the same directory)', () => {
    it('still finds users by id and by the userName they were created with', async () => {
      const id = await create('carol', 'carol@example.test', { emails: [{ value: 'carol@example.test', primary: true }, { value: 'info@example.test' }] });
      directory.upsert({ ...directory.users.get(id)!, groups: ['mail-users'] });
      await new Promise<void>((resolve) => server.close(() => resolve()));
      await start();
      const got = await call('GET', `/Users/${id}`);
      expect(got.status).toBe(200);
      expect(got.body).toMatchObject({ id, userName: 'carol@example.test', active: true });
      // The provider, unaware, creates again: 409, then finds it by its userName.
      expectError(await call('POST', '/Users', authentikUser('carol', 'carol@example.test')), 409, 'uniqueness');
      const found = await call('GET', `/Users?${new URLSearchParams({ filter: 'userName eq carol' })}`);
      expect(found.body.Resources.map((r: { id: string }) => r.id)).toEqual([id]);
      // Groups users carry are groups again.
      const groups = await call('GET', '/Groups');
      expect(groups.body.Resources.map((g: { displayName: string }) => g.displayName)).toEqual(['mail-users']);
      // A PUT without groups keeps them.
      await call('PUT', `/Users/${id}`, authentikUser('carol', 'carol@example.test'));
      expect(directory.users.get(id)).toMatchObject({ aliases: [], groups: ['mail-users'] });
    });
  });
});

describe('SCIM filters and paths', () => {
  it.each([
    ['userName eq "alice"', { attribute: 'username', value: 'alice' }],
    ['userName eq alice', { attribute: 'username', value: 'alice' }],
    ['userName eq alice@example.test', { attribute: 'username', value: 'alice@example.test' }],
    ['  USERNAME   EQ   "a \\"b\\""  ', { attribute: 'username', value: 'a "b"' }],
    ['active eq true', { attribute: 'active', value: true }],
    ['externalId eq null', { attribute: 'externalid', value: null }],
    ['emails.value eq "x@y.z"', { attribute: 'emails.value', value: 'x@y.z' }],
  ])('parses %j', (text, expected) => {
    expect(parseScimFilter(text)).toEqual(expected);
  });

  it.each(['userName', 'userName eq', 'userName sw "a"', 'userName eq "a" and active eq true' /* quoted then more */, '(userName eq "a")'])(
    'refuses %j',
    (text) => {
      expect(() => parseScimFilter(text)).toThrow(ScimError);
    },
  );

  it('parses PATCH paths with URN prefixes, value filters and sub-attributes', () => {
    expect(parsePatchPath('emails[type eq "work"].value')).toEqual({
      extension: false,
      foreign: false,
      attribute: 'emails',
      filter: { attribute: 'type', value: 'work' },
      sub: 'value',
    });
    expect(parsePatchPath(`${SCIM_MAIL_EXTENSION}:aliases`)).toMatchObject({ extension: true, attribute: 'aliases' });
    expect(parsePatchPath(`${SCIM_USER_SCHEMA}:name.givenName`)).toMatchObject({ attribute: 'name', sub: 'givenname' });
    expect(parsePatchPath('urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager')).toMatchObject({ foreign: true });
  });

  it('derives ids from the userName, ignoring case and spaces around it', () => {
    expect(scimUserId('Carol')).toBe(scimUserId(' carol '));
    expect(scimUserId('carol')).not.toBe(scimUserId('dave'));
  });
});

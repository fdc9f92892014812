import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { metricsAuthorizer } from '../../../src/observe/metrics-auth.js';

const TOKEN = 'metrics-token-0123456789';

describe('metricsAuthorizer', () => {
  it('lets everyone in when no token is configured', () => {
    const allowed = metricsAuthorizer({});
    expect(allowed(undefined)).toBe(true);
    expect(allowed('Bearer anything')).toBe(true);
  });

  it('wants exactly the configured bearer token', () => {
    const allowed = metricsAuthorizer({ metricsToken: TOKEN });
    expect(allowed(`Bearer ${TOKEN}`)).toBe(true);
    expect(allowed(`bearer  ${TOKEN}`)).toBe(true);
    for (const header of [undefined, '', 'Bearer', `Bearer ${TOKEN}x`, `Bearer ${TOKEN.slice(0, -1)}`, `Basic ${TOKEN}`, TOKEN, `Bearer ${TOKEN} extra`]) {
      expect(allowed(header), String(header)).toBe(false);
    }
  });

  it('reads the token from a file once, without its trailing newline, and names the key when it cannot', () => {
    const dir = mkdtempSync(join(tmpdir(), 'sasl-gate-metrics-'));
    const path = join(dir, 'token');
    writeFileSync(path, `${TOKEN}\n`);
    const allowed = metricsAuthorizer({ metricsTokenFile: path });
    writeFileSync(path, 'changed-afterwards-0123456789\n');
    expect(allowed(`Bearer ${TOKEN}`)).toBe(true);
    expect(() => metricsAuthorizer({ metricsTokenFile: join(dir, 'missing') })).toThrow(/admin\.metricsTokenFile: cannot read .*ENOENT/);
    writeFileSync(path, 'short\n');
    expect(() => metricsAuthorizer({ metricsTokenFile: path })).toThrow(/admin\.metricsTokenFile: the token must be at least 16 characters/);
  });
});

import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { findLeaks } from '../support/evidence.js';

describe('the end-of-run secret scan', () => {
  it('finds a secret that reached a log, and names its kind, never its value', () => {
    const dir = mkdtempSync(join(tmpdir(), 'sasl-gate-evidence-test-'));
    writeFileSync(join(dir, 'secrets-1.jsonl'), `${JSON.stringify({ kind: 'password', value: 'hunter2-long' })}\n${JSON.stringify({ kind: 'access token', value: 'eyJabc.def.ghi' })}\n`);
    writeFileSync(join(dir, 'log-1-a.log'), '{"msg":"authentication failed","detail":"password hunter2-long"}\n');
    writeFileSync(join(dir, 'log-1-b.log'), '{"msg":"connection closed"}\n');
    expect(findLeaks(dir)).toEqual([{ kind: 'password', log: 'log-1-a.log', length: 12 }]);
  });
});

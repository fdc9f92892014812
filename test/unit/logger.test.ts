import { Writable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { createLogger, REDACTED_FIELDS } from '../../src/observe/logger.js';

describe('the logger', () => {
  it('censors secret-looking fields logged by mistake', async () => {
    let out = '';
    const sink = new Writable({
      write(chunk: Buffer, _e, done) {
        out += chunk.toString();
        done();
      },
    });
    const log = createLogger({ level: 'info', destination: sink });
    const values = Object.fromEntries(REDACTED_FIELDS.map((f) => [f, `value-of-${f}-0123456789`]));
    log.info({ ...values, user: 'alice@example.test' }, 'oops');
    await new Promise((r) => setImmediate(r));
    const line = JSON.parse(out) as Record<string, unknown>;
    for (const field of REDACTED_FIELDS) expect(line[field]).toBe('[redacted]');
    expect(line['user']).toBe('alice@example.test');
    expect(out).not.toContain('value-of-');
  });
});

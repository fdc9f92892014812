import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { SmtpCommandGuard } from '../../../src/smtp/guard.js';

/** Runs client bytes through a guard, with backend replies arriving at given points. */
async function run(steps: Array<{ client?: string; backend?: string }>): Promise<string> {
  const guard = new SmtpCommandGuard();
  const out: Buffer[] = [];
  guard.on('data', (c: Buffer) => out.push(c));
  for (const step of steps) {
    if (step.client !== undefined) guard.write(Buffer.from(step.client, 'latin1'));
    await new Promise((r) => setImmediate(r));
    if (step.backend !== undefined) guard.observeReplies(Buffer.from(step.backend, 'latin1'));
  }
  guard.end();
  await new Promise((r) => guard.once('end', r).resume());
  return Buffer.concat(out).toString('latin1');
}

describe('SmtpCommandGuard', () => {
  it('refuses XCLIENT and XFORWARD from a logged-in client, in order, leaving other commands alone', async () => {
    const out = await run([{ client: 'NOOP\r\nXCLIENT LOGIN=bob@example.test\r\nxforward ADDR=1.2.3.4\r\nMAIL FROM:<a@b>\r\n' }]);
    expect(out).toBe('NOOP\r\nX-REFUSED-BY-SASL-GATE LOGIN=bob@example.test\r\nX-REFUSED-BY-SASL-GATE ADDR=1.2.3.4\r\nMAIL FROM:<a@b>\r\n');
  });

  it('passes message content untouched, even lines that look like XCLIENT', async () => {
    const body = 'Subject: x\r\n\r\nXCLIENT LOGIN=bob\r\n..leading dot\r\n.\r\n';
    const out = await run([
      { client: 'MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\n', backend: '250 ok\r\n250 ok\r\n354 go\r\n' },
      { client: body },
      { client: 'XCLIENT LOGIN=bob\r\n' },
    ]);
    expect(out).toBe(`MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\n${body}X-REFUSED-BY-SASL-GATE LOGIN=bob\r\n`);
  });

  it('treats what follows a refused DATA as commands again', async () => {
    const out = await run([
      { client: 'DATA\r\nXCLIENT LOGIN=bob\r\n' },
      { backend: '503 5.5.1 Error: need RCPT command\r\n' },
    ]);
    expect(out).toBe('DATA\r\nX-REFUSED-BY-SASL-GATE LOGIN=bob\r\n');
  });

  it('counts multi-line replies once', async () => {
    const out = await run([
      { client: 'EHLO x\r\nDATA\r\n', backend: '250-a\r\n250-b\r\n250 c\r\n354 go\r\n' },
      { client: 'XCLIENT in body\r\n.\r\nXCLIENT LOGIN=bob\r\n' },
    ]);
    expect(out).toBe('EHLO x\r\nDATA\r\nXCLIENT in body\r\n.\r\nX-REFUSED-BY-SASL-GATE LOGIN=bob\r\n');
  });

  it('skips BDAT chunks by their size', async () => {
    const out = await run([{ client: 'BDAT 19\r\nXCLIENT LOGIN=bob\r\nBDAT 0 LAST\r\nXCLIENT LOGIN=eve\r\n' }]);
    expect(out).toBe('BDAT 19\r\nXCLIENT LOGIN=bob\r\nBDAT 0 LAST\r\nX-REFUSED-BY-SASL-GATE LOGIN=eve\r\n');
  });

  it('gives the same output however the client bytes are split (property)', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(fc.nat(40), { maxLength: 8 }), async (cuts) => {
        const input = 'MAIL FROM:<a@b>\r\nDATA\r\nline\r\nXCLIENT x\r\n.\r\nXCLIENT LOGIN=bob\r\nBDAT 5\r\nXCLIE\r\nQUIT\r\n';
        const pieces: string[] = [];
        let at = 0;
        for (const cut of cuts) {
          pieces.push(input.slice(at, Math.min(input.length, at + cut)));
          at = Math.min(input.length, at + cut);
        }
        pieces.push(input.slice(at));
        // The replies come once the client has sent everything: what follows DATA waits for them.
        const steps = [...pieces.map((client) => ({ client })), { backend: '250 ok\r\n354 go\r\n' }];
        const out = await run(steps);
        expect(out).toBe('MAIL FROM:<a@b>\r\nDATA\r\nline\r\nXCLIENT x\r\n.\r\nX-REFUSED-BY-SASL-GATE LOGIN=bob\r\nBDAT 5\r\nXCLIE\r\nQUIT\r\n');
      }),
      { numRuns: 100 },
    );
  });
});

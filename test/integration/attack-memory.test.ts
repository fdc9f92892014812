/**
 * A logged-in client that pipelines commands and never reads a reply: sasl-gate must stop
 * reading it (bounded memory), not buffer every reply it owes.
 */
import { connect } from 'node:tls';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { startStack, USERS, xoauth2, type Stack } from '../support/stack.js';
import { waitFor } from '../support/wait.js';

let stack: Stack;
beforeAll(async () => {
  stack = await startStack({ smtp: { login: 'xclient' } });
}, 120_000);
afterAll(async () => {
  await stack?.close();
});

it.each([
  ['commands sasl-gate answers itself', 'PWNEDX\r\n'],
  ['commands Postfix answers', 'NOOP\r\n'],
])('a client that never reads, sending %s, can push only a bounded amount', async (_name, line) => {
  const token = await stack.idp.mintAccessToken({ user: USERS[0]!.name });
  const socket = connect({ host: stack.host, port: stack.smtpPort, ca: stack.ca, servername: 'localhost' });
  await new Promise((r, j) => socket.once('secureConnect', r).once('error', j));
  let seen = '';
  const onData = (d: Buffer) => (seen += d.toString('latin1'));
  socket.on('data', onData);
  const waitForReply = (re: RegExp) => waitFor(() => re.test(seen), { what: () => `${re} in ${JSON.stringify(seen.slice(-500))}` });
  await waitForReply(/^220 /m);
  socket.write('EHLO client.example\r\n');
  await waitForReply(/^250 /m);
  socket.write(`AUTH XOAUTH2 ${xoauth2(USERS[0]!.name, token)}\r\n`);
  await waitForReply(/^235 /m);
  // From now on, nothing is read.
  socket.off('data', onData);
  socket.pause();
  const block = Buffer.from(line.repeat(Math.floor(64 * 1024 / line.length)), 'latin1');
  let sent = 0;
  const deadline = Date.now() + 4000;
  while (Date.now() < deadline && sent < 64 * 1024 * 1024) {
    if (!socket.write(block)) {
      const drained = await Promise.race([
        new Promise<boolean>((r) => socket.once('drain', () => r(true))),
        new Promise<boolean>((r) => setTimeout(() => r(false), 1500)),
      ]);
      if (!drained) break;
    }
    sent += block.length;
  }
  socket.destroy();
  console.log(`${_name}: ${(sent / 1024 / 1024).toFixed(1)} MB accepted from a client that reads nothing`);
  // Socket buffers on both sides plus the relay's 64 KiB bounds: a few MB at most.
  expect(sent).toBeLessThan(16 * 1024 * 1024);
}, 30_000);

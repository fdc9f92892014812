/**
 * node's IPC `send` answers false once its write queue is long, yet the message still arrives. The
 * supervisor's connection counts must not take such an answer as dropped: a worker would hold a
 * connection the instance no longer counts, and a client could pass the per-address limit right
 * after a large message (a directory push) filled the queue.
 */
import { fork, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { workerChannel, type ClusterMessage } from '../../src/cluster/channel.js';
import { InstanceLimits } from '../../src/cluster/limits.js';

const dir = mkdtempSync(join(tmpdir(), 'sasl-gate-ipc-'));
let child: ChildProcess;
const received: unknown[] = [];

beforeAll(async () => {
  // A worker stand-in that reports every answer it is sent.
  const script = join(dir, 'worker.cjs');
  writeFileSync(script, "process.on('message', (m) => { if (m && m.saslGate === 'answer') process.send({ got: m }); });\n");
  child = fork(script, [], { stdio: 'ignore' });
  child.on('message', (m: unknown) => {
    if (typeof m === 'object' && m !== null && 'got' in m) received.push(m);
  });
  await new Promise((resolve) => child.once('spawn', resolve));
});
afterAll(() => {
  child?.kill('SIGKILL');
  rmSync(dir, { recursive: true, force: true });
});

describe('the supervisor side of the IPC channel', () => {
  it('counts an admission whose answer went out behind a long queue', async () => {
    const peer = {
      send: (message: ClusterMessage) => child.send(message),
      isConnected: () => child.connected,
      on: (event: 'message', listener: (message: unknown) => void) => child.on(event, listener),
      off: (event: 'message', listener: (message: unknown) => void) => child.off(event, listener),
    };
    const channel = workerChannel(peer);
    const limits = new InstanceLimits(100, 1);
    limits.serve('1', channel);
    // A large message (a directory of many users) fills node's queue: its send answers false.
    expect(child.send({ saslGate: 'directory', state: 'x'.repeat(4 << 20) })).toBe(false);
    child.emit('message', { saslGate: 'admit', id: 1, address: '192.0.2.7' });
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('the answer never arrived')), 10_000);
      const check = setInterval(() => {
        if (received.length === 0) return;
        clearInterval(check);
        clearTimeout(timer);
        resolve();
      }, 20);
    });
    // The worker was told "admitted" (null), so the instance must count that connection...
    expect(received).toEqual([{ got: { saslGate: 'answer', id: 1, value: null } }]);
    expect(limits.open).toBe(1);
    // ...and refuse a second one from the same address.
    expect(limits.admit('2', '192.0.2.7')).toBe('per_address');
  });
});

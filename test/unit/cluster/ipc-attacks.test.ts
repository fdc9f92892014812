/**
 * What a client (through a worker) or a confused worker could send the supervisor, and what a
 * supervisor in trouble could answer: releases of connections never admitted, malformed requests,
 * and answers that are not delays. Limits and delays must hold through all of them.
 */
import { describe, expect, it } from 'vitest';
import type { Channel, ClusterMessage } from '../../../src/cluster/channel.js';
import { answerFailures, IpcFailureStore } from '../../../src/cluster/failures.js';
import { InstanceLimits, IpcAdmission } from '../../../src/cluster/limits.js';
import { FailureTracker } from '../../../src/login/failures.js';

/** The supervisor's end of one worker's channel, with a hook to inject raw messages as that worker. */
function workerLink(limits: InstanceLimits, worker: string): { channel: Channel; inject(message: unknown): void; sent: unknown[] } {
  const listeners = new Set<(m: unknown) => void>();
  const sent: unknown[] = [];
  const channel: Channel = {
    send(message: ClusterMessage) {
      sent.push(JSON.parse(JSON.stringify(message)));
      return true;
    },
    onMessage(listener) {
      listeners.add(listener);
      return () => listeners.delete(listener);
    },
  };
  limits.serve(worker, channel);
  return { channel, sent, inject: (message) => listeners.forEach((l) => l(JSON.parse(JSON.stringify(message)))) };
}

describe('the supervisor’s connection counts under attack', () => {
  it('ignores releases of connections a worker never held, so counts never fall below what is open', () => {
    const limits = new InstanceLimits(3, 1);
    const a = workerLink(limits, '1');
    const b = workerLink(limits, '2');
    b.inject({ saslGate: 'admit', id: 1, address: '192.0.2.7' });
    expect(b.sent).toEqual([{ saslGate: 'answer', id: 1, value: null }]);
    // Worker 1 never admitted 192.0.2.7, and releases it again and again; worker 2 releases twice.
    for (let i = 0; i < 5; i++) a.inject({ saslGate: 'release', address: '192.0.2.7' });
    a.inject({ saslGate: 'release', address: '::ffff:192.0.2.7' });
    expect(limits.open).toBe(1);
    a.inject({ saslGate: 'admit', id: 2, address: '192.0.2.7' });
    expect(a.sent).toEqual([{ saslGate: 'answer', id: 2, value: 'per_address' }]);
    b.inject({ saslGate: 'release', address: '192.0.2.7' });
    b.inject({ saslGate: 'release', address: '192.0.2.7' });
    expect(limits.open).toBe(0);
    // The total still holds after the extra releases: three, then a refusal.
    for (const [id, address] of [[3, '198.51.100.1'], [4, '198.51.100.2'], [5, '198.51.100.3'], [6, '198.51.100.4']] as const) {
      a.inject({ saslGate: 'admit', id, address });
    }
    expect(a.sent.slice(1).map((m) => (m as { value: unknown }).value)).toEqual([null, null, null, 'total']);
    expect(limits.open).toBe(3);
  });

  it('survives malformed requests (a throw would end the supervisor) and still counts what it answered', () => {
    const limits = new InstanceLimits(10, 1);
    const a = workerLink(limits, '1');
    for (const message of [
      { saslGate: 'admit', id: 1, address: { toString: 'x' } },
      { saslGate: 'admit', id: 2 },
      { saslGate: 'release' },
      { saslGate: 'release', address: ['192.0.2.7'] },
      { saslGate: 'admit', id: 3, address: 'x'.repeat(1 << 20) },
      { saslGate: 'nonsense' },
      null,
      'admit',
    ]) {
      expect(() => a.inject(message)).not.toThrow();
    }
    // Only well-formed requests are answered; every "admitted" is counted: a second is refused.
    expect(a.sent.map((m) => (m as { id: number }).id)).toEqual([3]);
    const admitted = a.sent.filter((m) => (m as { value: unknown }).value === null).length;
    expect(limits.open).toBe(admitted);
    a.inject({ saslGate: 'admit', id: 4, address: 'x'.repeat(1 << 20) });
    expect(a.sent.at(-1)).toEqual({ saslGate: 'answer', id: 4, value: 'per_address' });
  });
});

describe('a worker’s failure delays when the supervisor answers nonsense', () => {
  it('takes only a finite delay of zero or more; anything else is the longest delay', async () => {
    for (const value of [-1, '0', null, Number.POSITIVE_INFINITY, Number.NaN, { delay: 0 }, [0]]) {
      const listeners = new Set<(m: unknown) => void>();
      const channel: Channel = {
        send(message: ClusterMessage) {
          if (message.saslGate === 'failed') queueMicrotask(() => listeners.forEach((l) => l({ saslGate: 'answer', id: message.id, value })));
          return true;
        },
        onMessage(listener) {
          listeners.add(listener);
          return () => listeners.delete(listener);
        },
      };
      expect({ value, delay: await new IpcFailureStore(channel, 15_000).failed('192.0.2.7', 'alice') }).toEqual({ value, delay: 15_000 });
    }
  });

  it('a worker restarted after a crash finds the instance’s counts where they were', async () => {
    const tracker = new FailureTracker({ baseDelayMs: 100, maxDelayMs: 10_000, now: () => 0 });
    const link = () => {
      const toSupervisor = new Set<(m: unknown) => void>();
      const toWorker = new Set<(m: unknown) => void>();
      let open = true;
      const end = (to: Set<(m: unknown) => void>, from: Set<(m: unknown) => void>): Channel => ({
        send(message: ClusterMessage) {
          if (!open) return false;
          const copy: unknown = JSON.parse(JSON.stringify(message));
          queueMicrotask(() => to.forEach((l) => l(copy)));
          return true;
        },
        onMessage(listener) {
          from.add(listener);
          return () => from.delete(listener);
        },
      });
      return { worker: end(toSupervisor, toWorker), supervisor: end(toWorker, toSupervisor), kill: () => (open = false) };
    };
    const first = link();
    const stop = answerFailures(first.supervisor, tracker);
    const before = new IpcFailureStore(first.worker, 10_000);
    expect([await before.failed('192.0.2.9', 'bob'), await before.failed('192.0.2.9', 'bob'), await before.failed('192.0.2.9', 'bob')]).toEqual([100, 200, 400]);
    first.kill();
    stop();
    const second = link();
    answerFailures(second.supervisor, tracker);
    expect(await new IpcFailureStore(second.worker, 10_000).failed('192.0.2.9', 'bob')).toBe(800);
    // A worker admitted nothing it does not hold: its admission store starts from the instance's counts too.
    const limits = new InstanceLimits(10, 1);
    limits.serve('w2', second.supervisor);
    expect(await new IpcAdmission(second.worker).admit('192.0.2.9')).toBeUndefined();
    expect(limits.open).toBe(1);
  });
});

describe('the supervisor’s failure counts under malformed requests', () => {
  it('drops them without throwing and still counts well-formed ones', async () => {
    const tracker = new FailureTracker({ baseDelayMs: 100, maxDelayMs: 10_000, now: () => 0 });
    const listeners = new Set<(m: unknown) => void>();
    const answers: unknown[] = [];
    answerFailures({ send: (m) => (answers.push(m), true), onMessage: (l) => (listeners.add(l), () => listeners.delete(l)) }, tracker);
    const inject = (message: unknown) => listeners.forEach((l) => l(JSON.parse(JSON.stringify(message))));
    expect(() => inject({ saslGate: 'failed', id: 1, address: { toString: 'x' } })).not.toThrow();
    expect(() => inject({ saslGate: 'succeeded', address: { valueOf: 1 } })).not.toThrow();
    inject({ saslGate: 'failed', id: 2, address: '192.0.2.7', user: { toString: 'x' } });
    await new Promise((resolve) => setImmediate(resolve));
    expect(answers).toEqual([{ saslGate: 'answer', id: 2, value: 100 }]);
  });
});

/**
 * The worker-side stores over an in-process fake of the IPC channel, answered by the supervisor's
 * side: failure delays and connection counts hold across workers, a silent or closed channel
 * fails safe, and a dead worker's connections are released.
 */
import { describe, expect, it } from 'vitest';
import type { Channel, ClusterMessage, StartTimer } from '../../../src/cluster/channel.js';
import { answerFailures, IpcFailureStore } from '../../../src/cluster/failures.js';
import { InstanceLimits, IpcAdmission } from '../../../src/cluster/limits.js';
import { FailureTracker } from '../../../src/login/failures.js';

/** Two ends of a channel; messages go through JSON, as node's IPC sends them, on a microtask. */
function pipe(): { worker: Channel; supervisor: Channel; close(): void; hold(on: boolean): void } {
  const listeners = { worker: new Set<(m: unknown) => void>(), supervisor: new Set<(m: unknown) => void>() };
  let open = true;
  let held = false;
  const end = (to: 'worker' | 'supervisor'): Channel => ({
    send(message: ClusterMessage) {
      if (!open) return false;
      const copy: unknown = JSON.parse(JSON.stringify(message));
      if (!held) queueMicrotask(() => listeners[to].forEach((l) => l(copy)));
      return true;
    },
    onMessage(listener) {
      const own = listeners[to === 'worker' ? 'supervisor' : 'worker'];
      own.add(listener);
      return () => own.delete(listener);
    },
  });
  return {
    worker: end('supervisor'),
    supervisor: end('worker'),
    close: () => (open = false),
    hold: (on) => (held = on),
  };
}

/** Timers fired by hand. */
function manualTimers(): { start: StartTimer; fireAll(): void } {
  const timers = new Set<() => void>();
  return {
    start: (callback) => {
      timers.add(callback);
      return () => timers.delete(callback);
    },
    fireAll() {
      const due = [...timers];
      timers.clear();
      due.forEach((f) => f());
    },
  };
}

describe('IpcFailureStore', () => {
  it('counts the failures of several workers in the supervisor\'s one tracker', async () => {
    const tracker = new FailureTracker({ baseDelayMs: 100, maxDelayMs: 10_000, now: () => 0 });
    const [a, b] = [pipe(), pipe()];
    answerFailures(a.supervisor, tracker);
    answerFailures(b.supervisor, tracker);
    const storeA = new IpcFailureStore(a.worker, 10_000);
    const storeB = new IpcFailureStore(b.worker, 10_000);
    expect(await storeA.failed('192.0.2.7', 'alice@example.test')).toBe(100);
    expect(await storeB.failed('192.0.2.7', 'mallory@example.test')).toBe(200);
    expect(await storeA.failed('192.0.2.7', 'bob@example.test')).toBe(400);
    // Another address, another user: no delay from the others' failures.
    expect(await storeB.failed('198.51.100.1', 'carol@example.test')).toBe(100);
    await storeB.succeeded('192.0.2.7', 'alice@example.test');
    expect(tracker.delayFor('192.0.2.7')).toBe(100); // 3 failures halved to 1
  });

  it('answers the longest delay when the supervisor is silent or gone, never a shorter one', async () => {
    const timers = manualTimers();
    const silent = pipe();
    silent.hold(true);
    const store = new IpcFailureStore(silent.worker, 15_000, { startTimer: timers.start });
    const pending = store.failed('192.0.2.7', 'alice@example.test');
    timers.fireAll();
    expect(await pending).toBe(15_000);
    const closed = pipe();
    closed.close();
    expect(await new IpcFailureStore(closed.worker, 15_000).failed('192.0.2.7')).toBe(15_000);
    await expect(new IpcFailureStore(closed.worker, 15_000).succeeded('192.0.2.7')).resolves.toBeUndefined();
  });
});

describe('IpcAdmission and InstanceLimits', () => {
  it('holds the total and per-address limits across workers, and releases', async () => {
    const limits = new InstanceLimits(3, 2);
    const [a, b] = [pipe(), pipe()];
    limits.serve('1', a.supervisor);
    limits.serve('2', b.supervisor);
    const wa = new IpcAdmission(a.worker);
    const wb = new IpcAdmission(b.worker);
    expect(await wa.admit('192.0.2.7')).toBeUndefined();
    expect(await wb.admit('192.0.2.7')).toBeUndefined();
    expect(await wa.admit('192.0.2.7')).toBe('per_address');
    expect(await wb.admit('198.51.100.1')).toBeUndefined();
    expect(await wa.admit('203.0.113.9')).toBe('total');
    wb.release('192.0.2.7');
    await Promise.resolve();
    expect(await wa.admit('192.0.2.7')).toBeUndefined();
    expect(limits.open).toBe(3);
  });

  it('releases everything a worker held when it dies', async () => {
    const limits = new InstanceLimits(10, 2);
    const [a, b] = [pipe(), pipe()];
    limits.serve('1', a.supervisor);
    limits.serve('2', b.supervisor);
    const wa = new IpcAdmission(a.worker);
    expect(await wa.admit('192.0.2.7')).toBeUndefined();
    expect(await wa.admit('192.0.2.7')).toBeUndefined();
    expect(await new IpcAdmission(b.worker).admit('192.0.2.7')).toBe('per_address');
    limits.forget('1');
    expect(limits.open).toBe(0);
    expect(await new IpcAdmission(b.worker).admit('192.0.2.7')).toBeUndefined();
    // A release for a connection the worker no longer holds does not free someone else's slot.
    limits.release('1', '192.0.2.7');
    expect(limits.open).toBe(1);
  });

  it('refuses when the supervisor does not answer in time, and gives back a late admission', async () => {
    const timers = manualTimers();
    const limits = new InstanceLimits(10, 10);
    const channel = pipe();
    limits.serve('1', channel.supervisor);
    channel.hold(true);
    const admission = new IpcAdmission(channel.worker, { startTimer: timers.start });
    const pending = admission.admit('192.0.2.7');
    timers.fireAll();
    expect(await pending).toBe('total');
    // The request was lost; nothing is counted.
    expect(limits.open).toBe(0);
    channel.hold(false);
    // A late "admitted" (the supervisor was slow, not gone) is released at once.
    const slow = new IpcAdmission(channel.worker, { startTimer: timers.start });
    const second = slow.admit('192.0.2.8');
    timers.fireAll();
    expect(await second).toBe('total');
    await new Promise((r) => setImmediate(r));
    expect(limits.open).toBe(0);
  });
});

describe('a worker with both stores on its one channel', () => {
  it('gets each answer to its own request: a login failure beside a new connection neither refuses it nor takes the longest delay', async () => {
    const channel = pipe();
    answerFailures(channel.supervisor, new FailureTracker({ baseDelayMs: 100, maxDelayMs: 10_000, now: () => 0 }));
    const limits = new InstanceLimits(10, 10);
    limits.serve('1', channel.supervisor);
    const failures = new IpcFailureStore(channel.worker, 10_000);
    const admission = new IpcAdmission(channel.worker);
    // Both orders: the first request of each store is in flight at the same time as the other's.
    const [verdict, delay] = await Promise.all([admission.admit('192.0.2.7'), failures.failed('198.51.100.1')]);
    expect(verdict).toBeUndefined();
    expect(delay).toBe(100);
    const [secondDelay, secondVerdict] = await Promise.all([failures.failed('198.51.100.1'), admission.admit('192.0.2.8')]);
    expect(secondDelay).toBe(200);
    expect(secondVerdict).toBeUndefined();
    expect(limits.open).toBe(2);
  });
});

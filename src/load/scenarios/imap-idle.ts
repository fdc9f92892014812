/**
 * `imap-idle`: opens `--concurrency` connections (at most `--ramp` being opened at once, and no
 * faster than `--rate` per second), each logged in, with the mailbox selected and in IDLE; holds
 * them for `--duration` seconds; then ends each IDLE and logs out. Reports how many were held to
 * the end, how many failed or were dropped, and memory: the harness's own and, with
 * `--target-pid`, the target process's (Linux).
 *
 * A transaction is one connection: its latency is the time to reach IDLE; it counts as ok when
 * it was still idling at the end of the hold, as failed when it could not be opened or the
 * server closed it meanwhile (kind `closed`).
 */
import { readFileSync } from 'node:fs';
import { performance } from 'node:perf_hooks';
import { pause, Pacer } from '../engine.js';
import { LoadError, toLoadError } from '../errors.js';
import type { ImapClient } from '../imap.js';
import { openImap, stepClock, type IdleResult, type MemorySample, type Scenario, type ScenarioContext } from './context.js';

interface Held {
  imap: ImapClient;
  tag: string;
  /** Closed by the server during the hold. */
  dropped: boolean;
  /** Being (or been) closed by the harness. */
  closing: boolean;
}

function memory(): MemorySample {
  const m = process.memoryUsage();
  return { rssBytes: m.rss, heapUsedBytes: m.heapUsed, externalBytes: m.external };
}

/** Resident memory of a local process from /proc, or null where that cannot be read. */
export function processRss(pid: number): number | null {
  try {
    const status = readFileSync(`/proc/${pid}/status`, 'utf8');
    const match = /^VmRSS:\s+(\d+)\s+kB/m.exec(status);
    return match ? Number(match[1]) * 1024 : null;
  } catch {
    return null;
  }
}

function perConnection(before: number | null, after: number | null, held: number): number | null {
  if (before === null || after === null || held === 0) return null;
  return Math.round((after - before) / held);
}

export const imapIdle: Scenario = {
  name: 'imap-idle',
  protocol: 'imap',
  async run(ctx) {
    const { recorder, plan, options } = ctx;
    const requested = plan.concurrency;
    const pid = options.targetPid;
    const harnessBefore = memory();
    const targetBefore = pid === undefined ? null : processRss(pid);
    const held: Held[] = [];
    let dropped = 0;
    let openFailures = 0;

    // Opening: a pacer over `requested` starts, worked by `ramp` openers.
    const pacer = new Pacer({ count: requested, rate: plan.rate });
    const opener = async (): Promise<void> => {
      for (;;) {
        if (plan.signal.aborted) return;
        const start = pacer.next();
        if (!start) return;
        await pause(start.dueAt - performance.now(), plan.signal);
        if (plan.signal.aborted) return;
        const began = performance.now();
        if (plan.rate) recorder.startLag.record(Math.max(0, began - start.dueAt));
        try {
          const entry = await openIdle(ctx, start.index);
          held.push(entry);
          recorder.active += 1;
          recorder.recordOk(performance.now() - began);
          const drop = (reason: string) => {
            if (entry.dropped || entry.closing) return;
            entry.dropped = true;
            dropped += 1;
            recorder.active -= 1;
            recorder.demote(new LoadError('closed', `held IDLE connection: ${reason}`));
          };
          if (entry.imap.wire.isClosed) drop('closed by the server');
          else entry.imap.wire.onUnexpectedClose(drop);
        } catch (err) {
          openFailures += 1;
          recorder.recordFailure(toLoadError(err), performance.now() - began);
        }
      }
    };
    await Promise.all(Array.from({ length: Math.max(1, Math.min(options.ramp, requested)) }, opener));

    const established = held.length;
    const holdStarted = performance.now();
    if (plan.durationMs !== undefined) await pause(plan.durationMs, plan.signal);
    const holdSeconds = (performance.now() - holdStarted) / 1000;
    const harnessHolding = memory();
    const targetHolding = pid === undefined ? null : processRss(pid);
    const stillHeld = held.filter((h) => !h.dropped).length;

    // Closing: DONE and LOGOUT on each, `ramp` at a time; failures here do not change the verdict.
    const queue = [...held];
    const closer = async (): Promise<void> => {
      for (let entry = queue.shift(); entry; entry = queue.shift()) {
        if (entry.dropped) continue;
        entry.closing = true;
        recorder.active -= 1;
        const lap = stepClock(recorder);
        try {
          await entry.imap.endIdle(entry.tag);
          lap('done');
          await entry.imap.logout();
          lap('logout');
        } catch {
          entry.imap.wire.close();
        }
      }
    };
    await Promise.all(Array.from({ length: Math.max(1, Math.min(options.ramp, held.length)) }, closer));

    const idle: IdleResult = {
      requested,
      established,
      held: stillHeld,
      failed: openFailures + dropped,
      dropped,
      holdSeconds: Math.round(holdSeconds * 1000) / 1000,
      harness: {
        before: harnessBefore,
        holding: harnessHolding,
        perConnectionBytes: perConnection(harnessBefore.rssBytes, harnessHolding.rssBytes, stillHeld),
      },
    };
    if (pid !== undefined) {
      idle.targetProcess = {
        pid,
        beforeRssBytes: targetBefore,
        holdingRssBytes: targetHolding,
        perConnectionBytes: perConnection(targetBefore, targetHolding, stillHeld),
      };
    }
    return { idle };
  },
};

/** One connection: logged in, mailbox selected, IDLE accepted. */
async function openIdle(ctx: ScenarioContext, index: number): Promise<Held> {
  const lap = stepClock(ctx.recorder);
  const imap = await openImap(ctx, ctx.credential(index), lap);
  try {
    await imap.select(ctx.options.mailbox);
    lap('select');
    const tag = await imap.startIdle();
    lap('idle');
    return { imap, tag, dropped: false, closing: false };
  } catch (err) {
    imap.wire.close();
    throw err;
  }
}

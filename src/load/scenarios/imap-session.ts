/**
 * `imap-session`: log in, SELECT, then the `--mix` of FETCH, SEARCH, IDLE and NOOP commands
 * interleaved (select=1,fetch=3,search=1,idle=1 gives SELECT FETCH SEARCH IDLE FETCH FETCH),
 * LOGOUT. The transaction is the whole session; each command is also timed on its own.
 */
import { performance } from 'node:perf_hooks';
import { pause, runTransactions } from '../engine.js';
import { LoadError } from '../errors.js';
import type { ImapClient } from '../imap.js';
import { MIX_COMMANDS, openImap, stepClock, type Mix, type MixCommand, type Scenario } from './context.js';

/** The commands of one session after login, in order. */
export function sessionPlan(mix: Mix): MixCommand[] {
  const left: Mix = { ...mix };
  const order: MixCommand[] = [];
  // The first SELECT opens the mailbox the others work on.
  if (left.select > 0) {
    order.push('select');
    left.select -= 1;
  }
  for (let more = true; more; ) {
    more = false;
    for (const command of MIX_COMMANDS) {
      if (left[command] > 0) {
        order.push(command);
        left[command] -= 1;
        more = true;
      }
    }
  }
  return order;
}

export const imapSession: Scenario = {
  name: 'imap-session',
  protocol: 'imap',
  async run(ctx) {
    const commands = sessionPlan(ctx.options.mix);
    const { mailbox, fetchLast, idleMs } = ctx.options;
    await runTransactions(ctx.plan, ctx.recorder, async (index) => {
      const lap = stepClock(ctx.recorder);
      const imap = await openImap(ctx, ctx.credential(index), lap);
      try {
        let exists = 0;
        for (const command of commands) {
          switch (command) {
            case 'select':
              exists = await imap.select(mailbox);
              break;
            case 'fetch':
              await imap.fetchLast(exists, fetchLast, '(UID FLAGS)');
              break;
            case 'search':
              await imap.searchAll();
              break;
            case 'noop':
              await imap.noop();
              break;
            case 'idle':
              lap.exclude(await idleBriefly(imap, idleMs, ctx.plan.signal));
              break;
          }
          lap(command);
        }
      } catch (err) {
        imap.wire.close();
        throw err;
      }
      await imap.logout();
      lap('logout');
    });
    return {};
  },
};

/** IDLE for `ms`, then DONE; resolves with the time spent waiting (not the server's time). */
async function idleBriefly(imap: ImapClient, ms: number, signal: AbortSignal): Promise<number> {
  const tag = await imap.startIdle();
  const began = performance.now();
  await pause(ms, signal);
  const waited = performance.now() - began;
  if (imap.wire.isClosed) throw new LoadError('closed', 'IDLE: the server closed the connection');
  await imap.endIdle(tag);
  return waited;
}
